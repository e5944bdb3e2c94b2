"""rnnfused.LSTM and rnnfused.RNN: subclasses of torch.nn.LSTM / nn.RNN whose forward runs the
fused layer ops, one op call per layer and direction.

The constructor, parameters, state_dict, repr and argument checks are torch's own (inherited);
forward follows torch's control flow step for step (PackedSequence, batch_first, unbatched
input, hx given or None) so that outputs and error messages are the same. The recurrence itself
goes to ``rnnfused.ops``; dropout between layers is applied here exactly as torch's native path
applies it (``F.dropout`` on each layer's output except the last, in training mode).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .. import ops
from ._checks import check_matmul_dtype


class _FusedStack:
    """Shared by LSTM and RNN: runs every layer and direction over a time-major sequence."""

    def _layer_weights(self, weights: dict[str, Tensor], layer: int, direction: int) -> list[Tensor | None]:
        """[w_ih, w_hh, b_ih, b_hh, w_hr] of one layer-direction (None where absent), from
        ``weights``: name -> tensor (_weights())."""
        suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"]
        return [weights.get(name + suffix) for name in names]

    def _weights(self) -> dict[str, Tensor]:
        """name -> tensor for every name in _flat_weights_names: what the attribute of that name
        gives, read from _parameters (where torch.func.functional_call swaps weights in, too)
        rather than through torch's _update_flat_weights pass over every weight on every call."""
        params = self._parameters
        try:
            return {name: params[name] for name in self._flat_weights_names}
        except KeyError:  # a weight replaced by a plain attribute or a parametrization
            return {name: getattr(self, name) for name in self._flat_weights_names}

    def _run_stack(self, x: Tensor, batch_sizes: Tensor | None, states: list[Tensor], weights: dict[str, Tensor],
                   run_layer):
        """x: (T, B, I) or packed (N, I); states: tensors of shape (L*D, B, ·); weights: _weights().

        run_layer(input, weights, layer_states, reverse) -> (output, *final_states).
        Returns the last layer's output and the stacked final states.
        """
        num_directions = 2 if self.bidirectional else 1
        finals: list[list[Tensor]] = [[] for _ in states]
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(num_directions):
                index = layer * num_directions + direction
                output, *layer_finals = run_layer(
                    layer_input, self._layer_weights(weights, layer, direction),
                    [s[index] for s in states], direction == 1)
                outputs.append(output)
                for acc, final in zip(finals, layer_finals):
                    acc.append(final)
            layer_input = outputs[0] if num_directions == 1 else torch.cat(outputs, dim=-1)
            if self.dropout != 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        # (L*D, B, ·); a single layer-direction's fresh state tensor is viewed, not copied.
        return layer_input, [f[0].unsqueeze(0) if len(f) == 1 else torch.stack(f, 0) for f in finals]

    def _time_major(self, input: Tensor) -> Tensor:
        return input.transpose(0, 1) if self.batch_first else input

    def _batch_major(self, output: Tensor) -> Tensor:
        return output.transpose(0, 1) if self.batch_first else output


class LSTM(_FusedStack, nn.LSTM):
    """Drop-in for torch.nn.LSTM (same constructor, parameters, state_dict, outputs, errors)."""

    def forward(self, input, hx=None):
        num_directions = 2 if self.bidirectional else 1
        real_hidden_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        orig_input = input
        batch_sizes = None
        sorted_indices = unsorted_indices = None
        is_batched, batch_dim = True, (0 if self.batch_first else 1)
        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = input
            max_batch_size = int(batch_sizes[0])
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
            is_batched = input.dim() == 3
            if not is_batched:
                input = input.unsqueeze(batch_dim)
            max_batch_size = input.size(0) if self.batch_first else input.size(1)
        if hx is None:
            zeros = dict(dtype=input.dtype, device=input.device)
            hx = (torch.zeros(self.num_layers * num_directions, max_batch_size, real_hidden_size, **zeros),
                  torch.zeros(self.num_layers * num_directions, max_batch_size, self.hidden_size, **zeros))
        elif batch_sizes is None:
            if is_batched and (hx[0].dim() != 3 or hx[1].dim() != 3):
                raise RuntimeError("For batched 3-D input, hx and cx should also be 3-D but got "
                                   f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
            if not is_batched:
                if hx[0].dim() != 2 or hx[1].dim() != 2:
                    raise RuntimeError("For unbatched 2-D input, hx and cx should also be 2-D but got "
                                       f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        else:
            hx = self.permute_hidden(hx, sorted_indices)
        if batch_sizes is not None:
            # torch.nn.LSTM checks a packed input only inside its kernel: a dtype mismatch is
            # ATen's matmul error there; shape errors get the usual, clearer messages here.
            check_matmul_dtype(input, self.weight_ih_l0)
        self.check_forward_args(input, hx, batch_sizes)
        if batch_sizes is None and self.batch_first:
            input = self._time_major(input)

        weights = self._weights()
        training = ops.needs_grad([input, *hx, *weights.values()])

        def run_layer(layer_input, layer_weights, states, reverse):
            w_ih, w_hh, b_ih, b_hh, w_hr = layer_weights
            h0, c0 = states
            return ops.lstm_layer(layer_input, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0,
                                  batch_sizes, reverse, training)

        output, (h_n, c_n) = self._run_stack(input, batch_sizes, list(hx), weights, run_layer)
        if isinstance(orig_input, PackedSequence):
            packed = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            return packed, self.permute_hidden((h_n, c_n), unsorted_indices)
        output = self._batch_major(output)
        if not is_batched:
            return output.squeeze(batch_dim), (h_n.squeeze(1), c_n.squeeze(1))
        return output, (h_n, c_n)


class RNN(_FusedStack, nn.RNN):
    """Drop-in for torch.nn.RNN (tanh or relu), same contract as torch.nn.RNN."""

    def forward(self, input, hx=None):
        num_directions = 2 if self.bidirectional else 1
        orig_input = input
        batch_sizes = None
        sorted_indices = unsorted_indices = None
        is_batched, batch_dim = True, (0 if self.batch_first else 1)
        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = input
            max_batch_size = int(batch_sizes[0])
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
            is_batched = input.dim() == 3
            if not is_batched:
                input = input.unsqueeze(batch_dim)
                if hx is not None:
                    if hx.dim() != 2:
                        raise RuntimeError(
                            f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor")
                    hx = hx.unsqueeze(1)
            elif hx is not None and hx.dim() != 3:
                raise RuntimeError(
                    f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
            max_batch_size = input.size(0) if self.batch_first else input.size(1)
        if hx is None:
            hx = torch.zeros(self.num_layers * num_directions, max_batch_size, self.hidden_size,
                             dtype=input.dtype, device=input.device)
        else:
            hx = self.permute_hidden(hx, sorted_indices)
        self.check_forward_args(input, hx, batch_sizes)
        if batch_sizes is None and self.batch_first:
            input = self._time_major(input)
        nonlinearity = "tanh" if self.mode == "RNN_TANH" else "relu"

        def run_layer(layer_input, layer_weights, states, reverse):
            w_ih, w_hh, b_ih, b_hh, _ = layer_weights
            return ops.rnn_layer(layer_input, w_ih, w_hh, b_ih, b_hh, states[0], batch_sizes,
                                 reverse, nonlinearity)

        output, (h_n,) = self._run_stack(input, batch_sizes, [hx], self._weights(), run_layer)
        if isinstance(orig_input, PackedSequence):
            packed = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            return packed, self.permute_hidden(h_n, unsorted_indices)
        output = self._batch_major(output)
        if not is_batched:
            return output.squeeze(batch_dim), h_n.squeeze(1)
        return output, h_n
