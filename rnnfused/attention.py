"""Attention modules on the fused attention ops: Bahdanau (additive), Luong (dot / general /
concat), an OpenNMT-py compatible GlobalAttention, and a fused Luong decoder step
(AttentionLSTMCell).

Call convention of BahdanauAttention and LuongAttention::

    context, weights = attn(query, keys, values=None, mask=None, lengths=None)

- query (B, Dq) for one decoder step, or (B, Tq, Dq) for many; keys (B, Tk, Dk) batch-first;
  values (B, Tk, Dv), default keys. context is (B, Dv) or (B, Tq, Dv), weights (B, Tk) or
  (B, Tq, Tk): the query's leading shape.
- mask (B, Tk) bool, True = attend to the key, False = padding (the opposite polarity of
  nn.MultiheadAttention's key_padding_mask); or lengths (B,) int: keys [0, length) attend.
- A query whose keys are all masked (length 0) gets all-zero weights and a zero context (and
  zero gradients), never NaN.
- Step-by-step decoding: ``memory = attn.precompute_keys(keys, values, mask=..., lengths=...)``
  projects the keys once per source sequence; then ``attn(query_t, memory)`` per step.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops
from .nn import LSTMCell

__all__ = ["AttentionMemory", "BahdanauAttention", "LuongAttention", "GlobalAttention",
           "AttentionLSTMCell"]


class AttentionMemory(NamedTuple):
    """What an attention module reads from the source side, prepared once per source sequence
    by ``precompute_keys``: the keys as the score needs them (projected for additive scores),
    the values and the (B, Tk) bool mask (True = attend) or None."""

    keys: Tensor
    values: Tensor
    mask: Tensor | None


def _key_mask(keys: Tensor, mask: Tensor | None, lengths: Tensor | None) -> Tensor | None:
    """The (B, Tk) bool mask (True = attend) from either a mask or lengths, or None."""
    if mask is not None and lengths is not None:
        raise ValueError("give either mask or lengths, not both")
    batch, key_len = keys.shape[0], keys.shape[1]
    if lengths is not None:
        if lengths.dim() != 1 or lengths.shape[0] != batch:
            raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
        if lengths.is_floating_point() or lengths.is_complex():
            raise ValueError(f"lengths must be an integer tensor, got {lengths.dtype}")
        positions = torch.arange(key_len, device=keys.device)
        return positions[None, :] < lengths.to(keys.device)[:, None]
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor (True = attend), got {mask.dtype}")
        if mask.shape != (batch, key_len):
            raise ValueError(f"mask must have shape (B, Tk) = ({batch}, {key_len}), "
                             f"got {tuple(mask.shape)}")
    return mask


class _Attention(nn.Module):
    """The call convention shared by the attention modules (see the module docstring).
    Subclasses define how keys are prepared (``_prepare_keys``) and scored (``_attend``)."""

    query_size: int
    key_size: int

    def _prepare_keys(self, keys: Tensor) -> Tensor:
        return keys

    def _attend(self, query: Tensor, memory: AttentionMemory) -> tuple[Tensor, Tensor]:
        """query (B, Tq, Dq) -> context (B, Tq, Dv), weights (B, Tq, Tk)."""
        raise NotImplementedError

    def precompute_keys(self, keys: Tensor, values: Tensor | None = None, *,
                        mask: Tensor | None = None, lengths: Tensor | None = None) -> AttentionMemory:
        """Prepares keys (B, Tk, Dk) once per source sequence (projects them where the score
        needs it), with values (default: keys) and the mask; pass the result as ``keys``."""
        if keys.dim() != 3:
            raise ValueError(f"keys must be 3-D (B, Tk, key_size), got shape {tuple(keys.shape)}")
        if keys.shape[-1] != self.key_size:
            raise ValueError(f"keys have {keys.shape[-1]} features, expected key_size={self.key_size}")
        values = keys if values is None else values
        if values.dim() != 3 or values.shape[:2] != keys.shape[:2]:
            raise ValueError(f"values must have shape (B, Tk, Dv) with (B, Tk) = "
                             f"{tuple(keys.shape[:2])}, got {tuple(values.shape)}")
        return AttentionMemory(self._prepare_keys(keys), values, _key_mask(keys, mask, lengths))

    def forward(self, query: Tensor, keys: Tensor | AttentionMemory, values: Tensor | None = None,
                mask: Tensor | None = None, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if isinstance(keys, AttentionMemory):
            if values is not None or mask is not None or lengths is not None:
                raise ValueError("values, mask and lengths belong in precompute_keys when keys "
                                 "is an AttentionMemory")
            memory = keys
        else:
            memory = self.precompute_keys(keys, values, mask=mask, lengths=lengths)
        if query.dim() not in (2, 3) or query.shape[-1] != self.query_size:
            raise ValueError(f"query must have shape (B, query_size) or (B, Tq, query_size) with "
                             f"query_size={self.query_size}, got {tuple(query.shape)}")
        one_step = query.dim() == 2
        context, weights = self._attend(query.unsqueeze(1) if one_step else query, memory)
        if one_step:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights


def _init_score_vector(v: Tensor) -> None:
    """v like the weight of nn.Linear(attn_size, 1): uniform(+-1/sqrt(attn_size))."""
    bound = 1.0 / math.sqrt(v.shape[0])
    nn.init.uniform_(v, -bound, bound)


class BahdanauAttention(_Attention):
    """Additive attention (Bahdanau et al., 2015):
    ``score(q, k) = v . tanh(query_proj(q) + key_proj(k))`` with query_proj = W_q q + b
    (nn.Linear with bias), key_proj = W_k k (nn.Linear without bias) and v (attn_size,).
    The (B, Tq, Tk, attn_size) tanh tensor is never stored (forward or backward)."""

    def __init__(self, query_size: int, key_size: int, attn_size: int, device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.query_size, self.key_size, self.attn_size = query_size, key_size, attn_size
        self.query_proj = nn.Linear(query_size, attn_size, bias=True, **factory)
        self.key_proj = nn.Linear(key_size, attn_size, bias=False, **factory)
        self.v = nn.Parameter(torch.empty(attn_size, **factory))
        _init_score_vector(self.v)

    def _prepare_keys(self, keys: Tensor) -> Tensor:
        return self.key_proj(keys)

    def _attend(self, query, memory):
        return ops.additive_attention(self.query_proj(query), memory.keys, self.v, memory.values,
                                      memory.mask)

    def extra_repr(self) -> str:
        return f"query_size={self.query_size}, key_size={self.key_size}, attn_size={self.attn_size}"


class LuongAttention(_Attention):
    """Multiplicative / concat attention (Luong et al., 2015):

    - ``"dot"``:     score(q, k) = q . k                  (query_size == key_size)
    - ``"general"``: score(q, k) = (W_a q) . k            W_a = linear_in (key_size x query_size)
    - ``"concat"``:  score(q, k) = v . tanh(W_a [q; k])   W_a = linear (attn_size x (query_size +
      key_size), no bias), computed as v . tanh(W_q q + W_k k): the fused additive op.
    """

    def __init__(self, query_size: int, key_size: int, score: str = "general",
                 attn_size: int | None = None, device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        if score not in ("dot", "general", "concat"):
            raise ValueError(f"score must be 'dot', 'general' or 'concat', got {score!r}")
        if score == "dot" and query_size != key_size:
            raise ValueError(f"score='dot' needs query_size == key_size, got {query_size} and {key_size}")
        self.query_size, self.key_size, self.score = query_size, key_size, score
        if score == "general":
            self.linear_in = nn.Linear(query_size, key_size, bias=False, **factory)
        elif score == "concat":
            self.attn_size = attn_size if attn_size is not None else query_size
            self.linear = nn.Linear(query_size + key_size, self.attn_size, bias=False, **factory)
            self.v = nn.Parameter(torch.empty(self.attn_size, **factory))
            _init_score_vector(self.v)

    def _prepare_keys(self, keys: Tensor) -> Tensor:
        if self.score == "concat":  # W_k k: the key columns of W_a
            return F.linear(keys, self.linear.weight[:, self.query_size:])
        return keys

    def _attend(self, query, memory):
        if self.score == "concat":
            query_proj = F.linear(query, self.linear.weight[:, :self.query_size])
            return ops.additive_attention(query_proj, memory.keys, self.v, memory.values, memory.mask)
        if self.score == "general":
            query = self.linear_in(query)
        return ops.dot_attention(query, memory.keys, memory.values, memory.mask)

    def extra_repr(self) -> str:
        return f"query_size={self.query_size}, key_size={self.key_size}, score={self.score!r}"


class GlobalAttention(_Attention):
    """Drop-in for OpenNMT-py's ``onmt.modules.GlobalAttention`` (softmax, no coverage): the
    same constructor, parameter names (so its state_dict loads unchanged), formulas and outputs.

    - ``"dot"``:     score = h_s . h_t
    - ``"general"``: score = h_s . linear_in(h_t)            linear_in: no bias
    - ``"mlp"``:     score = v . tanh(linear_query(h_t) + linear_context(h_s))
                     linear_query with bias, linear_context and v (nn.Linear(dim, 1)) without
    - c = sum_s align_s h_s, then attn_h = linear_out([c; h_t]) (bias only for mlp), followed by
      tanh for dot and general (OpenNMT applies no tanh for mlp).

    ``forward(source, memory_bank, src_len=None)``: source (B, dim) or (B, Tq, dim),
    memory_bank (B, Tk, dim) (or an AttentionMemory from ``precompute_keys``), src_len (B,)
    lengths. Returns (attn_h, align): (B, dim), (B, Tk) for a one-step query, and batch-major
    (B, Tq, dim), (B, Tq, Tk) for a multi-step one, as current OpenNMT-py does. (OpenNMT-py 1.x /
    2.x returned those two tgt-major, (Tq, B, ·): ``.transpose(0, 1)`` them for old code.)
    Unlike OpenNMT, a source of length 0 gives zero weights instead of NaN.
    """

    def __init__(self, dim: int, coverage: bool = False, attn_type: str = "dot",
                 attn_func: str = "softmax", device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        if attn_type not in ("dot", "general", "mlp"):
            raise ValueError(f"attn_type must be 'dot', 'general' or 'mlp', got {attn_type!r}")
        if coverage:
            raise ValueError("coverage attention is not supported by rnnfused.GlobalAttention")
        if attn_func != "softmax":
            raise ValueError(f"attn_func must be 'softmax' (got {attn_func!r}): sparsemax is not supported")
        self.dim, self.attn_type, self.attn_func = dim, attn_type, attn_func
        self.query_size = self.key_size = dim
        if attn_type == "general":
            self.linear_in = nn.Linear(dim, dim, bias=False, **factory)
        elif attn_type == "mlp":
            self.linear_context = nn.Linear(dim, dim, bias=False, **factory)
            self.linear_query = nn.Linear(dim, dim, bias=True, **factory)
            self.v = nn.Linear(dim, 1, bias=False, **factory)
        self.linear_out = nn.Linear(dim * 2, dim, bias=attn_type == "mlp", **factory)

    def _prepare_keys(self, keys: Tensor) -> Tensor:
        return self.linear_context(keys) if self.attn_type == "mlp" else keys

    def _attend(self, query, memory):
        if self.attn_type == "mlp":
            return ops.additive_attention(self.linear_query(query), memory.keys,
                                          self.v.weight.view(-1), memory.values, memory.mask)
        if self.attn_type == "general":
            query = self.linear_in(query)
        return ops.dot_attention(query, memory.keys, memory.values, memory.mask)

    def forward(self, source: Tensor, memory_bank: Tensor | AttentionMemory,
                src_len: Tensor | None = None) -> tuple[Tensor, Tensor]:
        context, align = super().forward(source, memory_bank, lengths=src_len)
        attn_h = self.linear_out(torch.cat([context, source], dim=-1))
        if self.attn_type in ("dot", "general"):
            attn_h = torch.tanh(attn_h)
        return attn_h, align

    def extra_repr(self) -> str:
        return f"dim={self.dim}, attn_type={self.attn_type!r}"


class AttentionLSTMCell(nn.Module):
    """One step of a Luong attentional LSTM decoder with input feeding:

        h, c   = LSTMCell([input; prev_attn_h], (h, c))      (fused lstm_cell op)
        ctx, w = attention(h, memory)                         (fused attention op)
        attn_h = tanh(linear_out([ctx; h]))                   (one GEMM, no bias: Luong's W_c)

    score: "dot", "general" or "concat" (LuongAttention) or "additive" (BahdanauAttention with
    attn_size, default hidden_size). ``forward(input, memory, hx=None, prev_attn_h=None)``:
    input (B, input_size), memory (B, Tk, memory_size) or an AttentionMemory from
    ``precompute_memory`` (do that once per source sequence), hx = (h, c) (B, hidden_size) each,
    prev_attn_h (B, hidden_size) the previous step's attn_h; None = zeros. Returns
    ``(attn_h, (h, c), weights)`` with weights (B, Tk).
    """

    def __init__(self, input_size: int, hidden_size: int, memory_size: int, score: str = "general",
                 attn_size: int | None = None, device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.input_size, self.hidden_size, self.memory_size = input_size, hidden_size, memory_size
        self.lstm = LSTMCell(input_size + hidden_size, hidden_size, **factory)
        if score == "additive":
            self.attention = BahdanauAttention(hidden_size, memory_size,
                                               attn_size if attn_size is not None else hidden_size,
                                               **factory)
        else:
            self.attention = LuongAttention(hidden_size, memory_size, score, attn_size, **factory)
        self.linear_out = nn.Linear(memory_size + hidden_size, hidden_size, bias=False, **factory)

    def precompute_memory(self, memory: Tensor, *, mask: Tensor | None = None,
                          lengths: Tensor | None = None) -> AttentionMemory:
        """The encoder outputs (B, Tk, memory_size) prepared once per source sequence."""
        return self.attention.precompute_keys(memory, mask=mask, lengths=lengths)

    def forward(self, input: Tensor, memory: Tensor | AttentionMemory,
                hx: tuple[Tensor, Tensor] | None = None,
                prev_attn_h: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor]:
        if input.dim() != 2 or input.shape[1] != self.input_size:
            raise ValueError(f"input must have shape (B, input_size={self.input_size}), "
                             f"got {tuple(input.shape)}")
        batch = input.shape[0]
        zeros = input.new_zeros(batch, self.hidden_size)
        h, c = hx if hx is not None else (zeros, zeros)
        feed = prev_attn_h if prev_attn_h is not None else zeros
        lstm = self.lstm
        training = ops.needs_grad((input, h, c, feed, lstm.weight_ih, lstm.weight_hh))
        h, c = ops.lstm_cell(torch.cat([input, feed], dim=1), h, c, lstm.weight_ih, lstm.weight_hh,
                             lstm.bias_ih, lstm.bias_hh, training)
        context, weights = self.attention(h, memory)
        attn_h = torch.tanh(self.linear_out(torch.cat([context, h], dim=1)))
        return attn_h, (h, c), weights
