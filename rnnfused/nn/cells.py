"""rnnfused.LSTMCell and rnnfused.RNNCell: subclasses of the torch.nn cells whose forward runs
one fused cell op per step. Checks and messages follow torch's (Python and ATen alike)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import ops
from ._checks import check_cell_inputs


def _cell_weights(cell: nn.RNNCellBase) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """(weight_ih, weight_hh, bias_ih, bias_hh), what the attributes of that name give, read
    from the module's _parameters (where torch.func.functional_call swaps weights in, too)
    without four passes through nn.Module.__getattr__: ~10 us of a step on a slow CPU."""
    params = cell._parameters
    try:
        return params["weight_ih"], params["weight_hh"], params["bias_ih"], params["bias_hh"]
    except KeyError:  # a weight deleted and replaced by a plain attribute
        return cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh


class LSTMCell(nn.LSTMCell):
    """Drop-in for torch.nn.LSTMCell."""

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for idx, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(f"LSTMCell: Expected hx[{idx}] to be 1D or 2D, got {value.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
            hx = (zeros, zeros)
        elif not is_batched:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        weights = _cell_weights(self)
        check_cell_inputs(input, hx, weights[0], self.hidden_size)
        training = ops.needs_grad((input, *hx, *weights))
        hy, cy = ops.lstm_cell(input, hx[0], hx[1], *weights, training)
        if not is_batched:
            return hy.squeeze(0), cy.squeeze(0)
        return hy, cy


class RNNCell(nn.RNNCell):
    """Drop-in for torch.nn.RNNCell (tanh or relu)."""

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        if input.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            hx = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
        elif not is_batched:
            hx = hx.unsqueeze(0)
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        weights = _cell_weights(self)
        check_cell_inputs(input, (hx,), weights[0], self.hidden_size)
        hy = ops.rnn_cell(input, hx, *weights, self.nonlinearity)
        return hy.squeeze(0) if not is_batched else hy
