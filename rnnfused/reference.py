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
