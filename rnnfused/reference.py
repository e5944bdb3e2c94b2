"""Pure-PyTorch implementation of every op: the test oracle and the readable specification.

Same arguments and layouts as the functional API in ``rnnfused.ops`` (see
csrc/registration.cpp), written step by step with ordinary autograd. Never the fast path.

Packed sequences: rows of step t are the first batch_sizes[t] rows of the (B, ·) state; rows
past them keep their state untouched, which is exactly their final state (forward direction) or
still their initial state (reverse direction, where sequences start at their own last step).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _steps(input: Tensor, batch_sizes: Tensor | None):
    """(time steps, rows of each step, 2-D view of the input)."""
    if batch_sizes is None:
        T, B = input.shape[0], input.shape[1]
        return T, [B] * T, input.reshape(T * B, input.shape[-1])
    sizes = [int(b) for b in batch_sizes]
    return len(sizes), sizes, input


def _run(cell, input, states, batch_sizes, reverse, out_size):
    """Runs cell(x_rows, *state_rows) -> (out_rows, *new_state_rows) over the sequence."""
    T, sizes, x = _steps(input, batch_sizes)
    offsets = [sum(sizes[:t]) for t in range(T)]
    outputs = [None] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        rows = sizes[t]
        result = cell(x[offsets[t]:offsets[t] + rows], *(s[:rows] for s in states))
        outputs[t] = result[0]
        states = [torch.cat([new, old[rows:]]) for new, old in zip(result[1:], states)]
    output = torch.cat(outputs)
    if batch_sizes is None:
        output = output.view(T, input.shape[1], out_size)
    return output, states


def lstm_cell(input, hx, cx, w_ih, w_hh, b_ih=None, b_hh=None):
    """torch.nn.LSTMCell: gates i|f|g|o = input @ w_ih^T + b_ih + hx @ w_hh^T + b_hh."""
    gates = F.linear(input, w_ih, b_ih) + F.linear(hx, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    cy = torch.sigmoid(f) * cx + torch.sigmoid(i) * torch.tanh(g)
    hy = torch.sigmoid(o) * torch.tanh(cy)
    return hy, cy


def rnn_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """torch.nn.RNNCell: hy = act(input @ w_ih^T + b_ih + hx @ w_hh^T + b_hh)."""
    pre = F.linear(input, w_ih, b_ih) + F.linear(hx, w_hh, b_hh)
    if nonlinearity == "tanh":
        return torch.tanh(pre)
    if nonlinearity == "relu":
        return torch.relu(pre)
    raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def lstm_layer(input, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, batch_sizes=None, reverse=False,
               training=True):
    """One LSTM layer-direction: (output, h_n, c_n); proj_size via w_hr (h_t = w_hr @ h_t)."""

    def step(x, h, c):
        hy, cy = lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
        if w_hr is not None:
            hy = F.linear(hy, w_hr)
        return hy, hy, cy

    out_size = w_hr.shape[0] if w_hr is not None else w_hh.shape[1]
    output, (h_n, c_n) = _run(step, input, [h0, c0], batch_sizes, reverse, out_size)
    return output, h_n, c_n


def rnn_layer(input, w_ih, w_hh, b_ih, b_hh, h0, batch_sizes=None, reverse=False,
              nonlinearity="tanh"):
    """One vanilla RNN layer-direction: (output, h_n)."""

    def step(x, h):
        hy = rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
        return hy, hy

    output, (h_n,) = _run(step, input, [h0], batch_sizes, reverse, w_hh.shape[1])
    return output, h_n


def gated_candidate_lstm_layer(x_proj, w_hh, h0, c0, batch_sizes=None, reverse=False, training=True):
    """M gated-candidate LSTM streams (layouts: csrc/include/rnnfused/gated_candidate_math.h).

    For stream m, with h^(s) = h_{t-1} of stream s and x_proj rows i | f | o | z | q:
        i, f, o = sigmoid(x_i + U_i^(m) h^(m)), ...        (own state only)
        g^(s->m) = sigmoid(x_q + U_g^(s->m) h^(s))          u^(s->m) = U_c^(s->m) h^(s)
        c_t = f c_{t-1} + i tanh(x_z + sum_s g^(s->m) u^(s->m))      h_t = o tanh(c_t)
    Returns (output, h_n, c_n) shaped like the op's.
    """
    M, _, H = w_hh.shape
    packed = batch_sizes is not None
    x_rows = x_proj.reshape(*x_proj.shape[: (1 if packed else 2)], M * 5 * H)

    def step(x, h, c):
        rows = x.shape[0]
        x, h, c = x.view(rows, M, 5 * H), h.view(rows, M, H), c.view(rows, M, H)
        rec = torch.einsum("rsh,skh->rsk", h, w_hh)  # (rows, source s, (3 + 2M)H)
        i, f, o = (torch.sigmoid(x[..., k * H:(k + 1) * H] + rec[..., k * H:(k + 1) * H]) for k in range(3))
        gate_rec = rec[..., 3 * H:(3 + M) * H].reshape(rows, M, M, H)  # [row, s, m]: U_g^(s->m) h^(s)
        u = rec[..., (3 + M) * H:].reshape(rows, M, M, H)              # [row, s, m]: U_c^(s->m) h^(s)
        g = torch.sigmoid(x[..., 4 * H:].unsqueeze(1) + gate_rec)
        z = torch.tanh(x[..., 3 * H:4 * H] + (g * u).sum(1))
        c = f * c + i * z
        h = o * torch.tanh(c)
        return h.reshape(rows, M * H), h.reshape(rows, M * H), c.reshape(rows, M * H)

    B = h0.shape[0]
    output, (h_n, c_n) = _run(step, x_rows, [h0.reshape(B, M * H), c0.reshape(B, M * H)], batch_sizes,
                              reverse, M * H)
    return output.view(*x_proj.shape[:-1], H), h_n.view(B, M, H), c_n.view(B, M, H)

# ---------------------------------------------------------------------------------------------
# Attention: the formulas of csrc/registration.cpp, materialising everything.

def masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax over the last dim of (B, Tq, Tk) scores; mask (B, Tk) bool, True = attend.
    Masked keys get weight 0; a row with every key masked gets all-zero weights (not NaN)."""
    if mask is None:
        return torch.softmax(scores, dim=-1)
    keep = mask[:, None, :]
    weights = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
    # masked_fill (not a product) so that the NaN of an all-masked row neither survives forward
    # nor reaches the gradient.
    return weights.masked_fill(~keep, 0.0)


def additive_attention(query_proj, key_proj, v, values, mask=None):
    """score[b,q,k] = v . tanh(query_proj[b,q] + key_proj[b,k]) -> (context, weights)."""
    scores = torch.tanh(query_proj[:, :, None, :] + key_proj[:, None, :, :]) @ v  # (B, Tq, Tk)
    weights = masked_softmax(scores, mask)
    return weights @ values, weights


def dot_attention(query, keys, values, mask=None, scale=1.0):
    """score[b,q,k] = scale * query[b,q] . keys[b,k] -> (context, weights)."""
    weights = masked_softmax(scale * (query @ keys.transpose(1, 2)), mask)
    return weights @ values, weights
