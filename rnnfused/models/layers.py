"""Building blocks of rnnfused.models that torch.nn does not have:

- GatedCandidateLSTM: the recurrent layer of Liu, Qiu & Huang (IJCAI 2016)'s Coupled-Layer and
  Shared-Layer multi-task models, on the fused op ``rnnfused.ops.gated_candidate_lstm_layer``.
- WordAttentionPooling: the attention pooling of Yang et al. (NAACL 2016), plain PyTorch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .. import ops


class GatedCandidateLSTM(nn.Module):
    r"""M LSTM streams over one input sequence whose candidate cells read every stream's previous
    hidden state through gates (one layer, one direction; one fused op call per forward).

    For stream m (Liu et al. 2016, eqs. 10-11 with M task streams; eqs. 15-16 with M = 1 and a
    context sequence):

    .. math::
        i, f, o &= \sigma(W_{i,f,o}^{(m)} x_t + U_{i,f,o}^{(m)} h_{t-1}^{(m)} + b_{i,f,o}^{(m)}) \\
        g^{(s\to m)} &= \sigma(W_g^{(m)} x_t + b_g^{(m)} + U_g^{(s\to m)} h_{t-1}^{(s)})
            \quad\text{for every stream } s \\
        g^{(ctx\to m)} &= \sigma(W_g^{(m)} x_t + b_g^{(m)} + V_g^{(m)} ctx_t)
            \quad\text{(only with a context)} \\
        \tilde c_t^{(m)} &= \tanh\big(W_c^{(m)} x_t + b_c^{(m)}
            + \textstyle\sum_s g^{(s\to m)} \odot U_c^{(s\to m)} h_{t-1}^{(s)}
            + g^{(ctx\to m)} \odot V_c^{(m)} ctx_t\big) \\
        c_t^{(m)} &= f \odot c_{t-1}^{(m)} + i \odot \tilde c_t^{(m)}, \qquad
        h_t^{(m)} = o \odot \tanh(c_t^{(m)})

    The time loop is a sequence-level fused op (C++ on the CPU, one kernel per step on CUDA):
    the x-side and context terms of every step are computed before it in one GEMM each, since
    they do not depend on the recurrence.

    Parameters (H = hidden_size, M = num_streams, I = input_size, C = context_size):
        weight_ih (M*5H, I), bias (M*5H): per stream the rows of W_i, W_f, W_o, W_c, W_g.
        weight_hh (M, (3+2M)H, H): weight_hh[s] = [U_i; U_f; U_o of stream s;
            U_g^(s->0..M-1); U_c^(s->0..M-1)].
        weight_ch (M*2H, C), only when context_size > 0: per stream the rows of V_g, V_c.

    Args:
        batch_first: input / context / output are (B, T, ...) instead of (T, B, ...).

    Shapes:
        input: (T, B, I), (B, T, I) with batch_first, or a PackedSequence with data (N, I).
        context: like input with C features (a PackedSequence packed from the same lengths);
            required exactly when context_size > 0.
        hx: optional (h0, c0), each (M, B, H); zeros when None.
        returns output (T, B, M, H) / (B, T, M, H) / PackedSequence with data (N, M, H), and
        (h_n, c_n) each (M, B, H): the state of every stream after its sequence's last step.
    """

    def __init__(self, input_size: int, hidden_size: int, num_streams: int = 1, context_size: int = 0,
                 batch_first: bool = False, device=None, dtype=None):
        super().__init__()
        for name, value, low in (("input_size", input_size, 1), ("hidden_size", hidden_size, 1),
                                 ("num_streams", num_streams, 1), ("context_size", context_size, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_streams, self.context_size, self.batch_first = num_streams, context_size, batch_first
        M, H = num_streams, hidden_size
        factory = dict(device=device, dtype=dtype)
        self.weight_ih = nn.Parameter(torch.empty(M * 5 * H, input_size, **factory))
        self.bias = nn.Parameter(torch.empty(M * 5 * H, **factory))
        self.weight_hh = nn.Parameter(torch.empty(M, (3 + 2 * M) * H, H, **factory))
        self.weight_ch = nn.Parameter(torch.empty(M * 2 * H, context_size, **factory)) if context_size else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every weight, as torch.nn.LSTM initialises."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        extra = f", context_size={self.context_size}" if self.context_size else ""
        return (f"{self.input_size}, {self.hidden_size}, num_streams={self.num_streams}{extra}"
                + (", batch_first=True" if self.batch_first else ""))

    def _time_major(self, x: Tensor, name: str, features: int) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != features:
            raise ValueError(f"GatedCandidateLSTM: {name} must be 3-D with {features} features "
                             f"({'B, T' if self.batch_first else 'T, B'}, {features}), got shape {tuple(x.shape)}")
        return x.transpose(0, 1) if self.batch_first else x

    def forward(self, input: Tensor | PackedSequence, hx: tuple[Tensor, Tensor] | None = None,
                context: Tensor | PackedSequence | None = None):
        M, H = self.num_streams, self.hidden_size
        packed = isinstance(input, PackedSequence)
        if packed:
            x, batch_sizes, sorted_indices, unsorted_indices = input
            if x.dim() != 2 or x.shape[-1] != self.input_size:
                raise ValueError(f"GatedCandidateLSTM: packed input must have data (N, {self.input_size}), "
                                 f"got {tuple(x.shape)}")
            batch = int(batch_sizes[0])
        else:
            x = self._time_major(input, "input", self.input_size)
            batch_sizes = sorted_indices = unsorted_indices = None
            batch = x.shape[1]
        lead = x.shape[:-1]  # (N,) or (T, B)

        x_proj = F.linear(x, self.weight_ih, self.bias).view(*lead, M, 5, H)
        if (context is None) != (self.context_size == 0):
            raise ValueError("GatedCandidateLSTM: context is required exactly when context_size > 0 "
                             f"(context_size={self.context_size}, context {'missing' if context is None else 'given'})")
        if context is not None:
            ctx = self._context_rows(context, packed, batch_sizes, sorted_indices, x)
            ctx = F.linear(ctx, self.weight_ch).view(*lead, M, 2, H)
            gate = torch.sigmoid(x_proj[..., 4, :] + ctx[..., 0, :])  # shares W_g x + b_g with the own gate
            candidate = x_proj[..., 3, :] + gate * ctx[..., 1, :]
            x_proj = torch.cat([x_proj[..., :3, :], candidate.unsqueeze(-2), x_proj[..., 4:, :]], dim=-2)
        x_proj = x_proj.reshape(*lead, M, 5 * H)

        if hx is None:
            h0 = c0 = x_proj.new_zeros(batch, M, H)
        else:
            h0, c0 = (self._check_state(s, name, batch).transpose(0, 1) for s, name in zip(hx, ("h0", "c0")))
            if sorted_indices is not None:
                h0, c0 = h0.index_select(0, sorted_indices), c0.index_select(0, sorted_indices)
        training = ops.needs_grad((x_proj, h0, c0, self.weight_hh))
        output, h_n, c_n = ops.gated_candidate_lstm_layer(x_proj, self.weight_hh, h0.contiguous(), c0.contiguous(),
                                                          batch_sizes, False, training)
        if unsorted_indices is not None:
            h_n, c_n = h_n.index_select(0, unsorted_indices), c_n.index_select(0, unsorted_indices)
        state = (h_n.transpose(0, 1), c_n.transpose(0, 1))
        if packed:
            return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), state
        return (output.transpose(0, 1) if self.batch_first else output), state

    def _context_rows(self, context, packed: bool, batch_sizes, sorted_indices, x: Tensor) -> Tensor:
        """The context as rows aligned with the input's: (N, C) packed, (T, B, C) dense."""
        if packed != isinstance(context, PackedSequence):
            raise ValueError("GatedCandidateLSTM: input and context must both be PackedSequences or both tensors")
        if not packed:
            ctx = self._time_major(context, "context", self.context_size)
            if ctx.shape[:2] != x.shape[:2]:
                raise ValueError(f"GatedCandidateLSTM: context has {tuple(ctx.shape[:2])} time steps x batch, "
                                 f"input has {tuple(x.shape[:2])}")
            return ctx
        same_order = (sorted_indices is None) == (context.sorted_indices is None) and (
            sorted_indices is None or torch.equal(sorted_indices, context.sorted_indices))
        if not torch.equal(context.batch_sizes, batch_sizes) or not same_order:
            raise ValueError("GatedCandidateLSTM: the packed context must be packed from the same lengths as the input")
        if context.data.dim() != 2 or context.data.shape[-1] != self.context_size:
            raise ValueError(f"GatedCandidateLSTM: packed context must have data (N, {self.context_size}), "
                             f"got {tuple(context.data.shape)}")
        return context.data

    def _check_state(self, state: Tensor, name: str, batch: int) -> Tensor:
        expected = (self.num_streams, batch, self.hidden_size)
        if tuple(state.shape) != expected:
            raise ValueError(f"GatedCandidateLSTM: {name} must have shape {expected} (streams, B, H), "
                             f"got {tuple(state.shape)}")
        return state


class WordAttentionPooling(nn.Module):
    r"""Attention pooling of Yang et al. (NAACL 2016, "Hierarchical Attention Networks for
    Document Classification", eqs. 5-7):

    .. math::
        u_t = \tanh(W h_t + b), \qquad
        \alpha_t = \frac{\exp(u_t^\top u_w)}{\sum_{t'} \exp(u_{t'}^\top u_w)}, \qquad
        s = \sum_t \alpha_t h_t

    where the sums run over real (unpadded) positions only and u_w is a learned context vector.

    Shapes: h (B, T, D), mask (B, T) bool (True at real tokens; every row needs one) ->
    (s (B, D), alpha (B, T)) with alpha exactly 0 at padding.
    """

    def __init__(self, input_size: int, attention_size: int):
        super().__init__()
        self.proj = nn.Linear(input_size, attention_size)
        self.context = nn.Parameter(torch.empty(attention_size).uniform_(-0.1, 0.1))

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if mask.shape != h.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape {tuple(h.shape[:2])}, got "
                             f"{mask.dtype} {tuple(mask.shape)}")
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every sequence needs at least one unmasked position to attend to")
        scores = torch.tanh(self.proj(h)) @ self.context.to(h.dtype)
        alpha = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        return (alpha.unsqueeze(-1) * h).sum(dim=1), alpha
