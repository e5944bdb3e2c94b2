"""The functional API: thin wrappers over ``torch.ops.rnnfused.*``, with the fake (shape-only)
kernels and the autograd formulas of every op. Schemas and layouts: csrc/registration.cpp.

Each ``*_forward`` op has a ``*_backward`` twin; autograd of the forward op calls the backward op,
so gradients run in the same fused kernels. The backward ops are not differentiable themselves
(no double backward).
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import _C  # noqa: F401  (loading the extension registers the ops)

_ops = torch.ops.rnnfused


# ---------------------------------------------------------------------------------------------
# Public functional wrappers.

def needs_grad(tensors) -> bool:
    """The ``training`` argument of an op called on ``tensors`` now: whether autograd will want
    its gradients (None entries, absent optional tensors, are skipped)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _call(op, *args):
    """op(*args). When none of its tensor arguments needs a gradient, the call skips the autograd
    kernel that register_autograd installs (below): all that Python kernel does then is
    redispatch below autograd, at ~8 us a call (an LSTMCell step at B=1 H=16: 19 -> 11 us).
    torch.compile traces the plain call."""
    if needs_grad(a for a in args if isinstance(a, Tensor)) or torch.compiler.is_compiling():
        return op(*args)
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)


def lstm_layer(
    input: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    w_hr: Tensor | None,
    h0: Tensor,
    c0: Tensor,
    batch_sizes: Tensor | None = None,
    reverse: bool = False,
    training: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer in one direction over a whole sequence.

    input: (T, B, I) time-major, or (N, I) PackedSequence data with ``batch_sizes``.
    h0: (B, P), c0: (B, H). Returns output (T, B, P) or (N, P), h_n (B, P), c_n (B, H), where
    P = w_hr.size(0) with a projection, else H. ``training=False`` keeps nothing for backward.
    """
    output, h_n, c_n, _ = _call(_ops.lstm_layer_forward, input, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, batch_sizes,
                                reverse, training)
    return output, h_n, c_n


def rnn_layer(
    input: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    h0: Tensor,
    batch_sizes: Tensor | None = None,
    reverse: bool = False,
    nonlinearity: str = "tanh",
) -> tuple[Tensor, Tensor]:
    """One vanilla RNN layer (tanh or relu) in one direction; layouts as :func:`lstm_layer`."""
    return _call(_ops.rnn_layer_forward, input, w_ih, w_hh, b_ih, b_hh, h0, batch_sizes, reverse, nonlinearity)


def lstm_cell(input, hx, cx, w_ih, w_hh, b_ih=None, b_hh=None, training: bool = True):
    """One LSTMCell step: input (B, I), hx (B, H), cx (B, H) -> (hy, cy)."""
    hy, cy, _ = _call(_ops.lstm_cell_forward, input, hx, cx, w_ih, w_hh, b_ih, b_hh, training)
    return hy, cy


def rnn_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity: str = "tanh"):
    """One RNNCell step: input (B, I), hx (B, H) -> hy (B, H)."""
    return _call(_ops.rnn_cell_forward, input, hx, w_ih, w_hh, b_ih, b_hh, nonlinearity)


# ---------------------------------------------------------------------------------------------
# Fake kernels: shapes, dtypes and devices only (torch.compile, meta tensors, opcheck).

def _like(t: Tensor) -> Tensor:
    """A contiguous tensor of t's shape: the kernels return contiguous results whatever the
    strides of their inputs (a batch_first input arrives as a transposed view)."""
    return t.new_empty(t.shape)


def _rows(input: Tensor):
    return input.shape[0] if input.dim() == 2 else input.shape[0] * input.shape[1]


def _lstm_workspace_cols(hidden_size: int, has_proj: bool) -> int:
    return (6 if has_proj else 5) * hidden_size  # gates 4H | c_t H | (proj) h_t H


@torch.library.register_fake("rnnfused::lstm_layer_forward")
def _(input, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, batch_sizes, reverse, training):
    hidden_size = w_ih.shape[0] // 4
    state_size = w_hr.shape[0] if w_hr is not None else hidden_size
    output = input.new_empty((*input.shape[:-1], state_size))
    if training:
        workspace = input.new_empty((_rows(input), _lstm_workspace_cols(hidden_size, w_hr is not None)))
    else:
        workspace = input.new_empty((0,))
    return output, h0.new_empty(h0.shape), c0.new_empty(c0.shape), workspace


@torch.library.register_fake("rnnfused::lstm_layer_backward")
def _(grad_output, grad_h_n, grad_c_n, input, w_ih, w_hh, w_hr, h0, c0, output, workspace,
      batch_sizes, reverse):
    grad_w_hr = _like(w_hr) if w_hr is not None else input.new_empty((0,))
    return (_like(input), _like(w_ih), _like(w_hh),
            input.new_empty((w_ih.shape[0],)), grad_w_hr, _like(h0), _like(c0))


@torch.library.register_fake("rnnfused::rnn_layer_forward")
def _(input, w_ih, w_hh, b_ih, b_hh, h0, batch_sizes, reverse, nonlinearity):
    return input.new_empty((*input.shape[:-1], w_ih.shape[0])), h0.new_empty(h0.shape)


@torch.library.register_fake("rnnfused::rnn_layer_backward")
def _(grad_output, grad_h_n, input, w_ih, w_hh, h0, output, batch_sizes, reverse, nonlinearity):
    return (_like(input), _like(w_ih), _like(w_hh),
            input.new_empty((w_ih.shape[0],)), _like(h0))


@torch.library.register_fake("rnnfused::lstm_cell_forward")
def _(input, hx, cx, w_ih, w_hh, b_ih, b_hh, training):
    hidden_size = w_ih.shape[0] // 4
    workspace = (input.new_empty((input.shape[0], _lstm_workspace_cols(hidden_size, False)))
                 if training else input.new_empty((0,)))
    return hx.new_empty(hx.shape), cx.new_empty(cx.shape), workspace


@torch.library.register_fake("rnnfused::lstm_cell_backward")
def _(grad_hy, grad_cy, input, hx, cx, w_ih, w_hh, workspace):
    return (_like(input), _like(w_ih), _like(w_hh),
            input.new_empty((w_ih.shape[0],)), _like(hx), _like(cx))


@torch.library.register_fake("rnnfused::rnn_cell_forward")
def _(input, hx, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    return hx.new_empty(hx.shape)


@torch.library.register_fake("rnnfused::rnn_cell_backward")
def _(grad_hy, input, hx, w_ih, w_hh, hy, nonlinearity):
    return (_like(input), _like(w_ih), _like(w_hh),
            input.new_empty((w_ih.shape[0],)), _like(hx))


# ---------------------------------------------------------------------------------------------
# Autograd: forward ops save what their backward op reads; the bias gradient is shared by b_ih
# and b_hh (they are summed), and returned only for the biases that exist. Gradients of outputs
# that nothing used arrive as None, not as materialized zeros (set_materialize_grads(False)):
# the workspace's would be N x 5H zeros per call, and a state's zeros are made only where the
# backward op needs a tensor.

def _zeros_if_none(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


def _bias_grads(grad_bias: Tensor, b_ih: bool, b_hh: bool):
    # Two distinct tensors: autograd may keep a gradient as .grad and accumulate into it in place.
    return (grad_bias if b_ih else None), ((grad_bias.clone() if b_ih else grad_bias) if b_hh else None)


def _lstm_layer_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)
    input, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, batch_sizes, reverse, training = inputs
    out, h_n, c_n, workspace = output
    ctx.save_for_backward(input, w_ih, w_hh, w_hr, h0, c0, out, workspace, batch_sizes, h_n, c_n)
    ctx.reverse = reverse
    ctx.has_bias = (b_ih is not None, b_hh is not None)


def _lstm_layer_backward(ctx, grad_output, grad_h_n, grad_c_n, _grad_workspace):
    input, w_ih, w_hh, w_hr, h0, c0, out, workspace, batch_sizes, h_n, c_n = ctx.saved_tensors
    grads = _ops.lstm_layer_backward(
        _zeros_if_none(grad_output, out), _zeros_if_none(grad_h_n, h_n), _zeros_if_none(grad_c_n, c_n),
        input, w_ih, w_hh, w_hr, h0, c0, out, workspace, batch_sizes, ctx.reverse)
    grad_input, grad_w_ih, grad_w_hh, grad_bias, grad_w_hr, grad_h0, grad_c0 = grads
    return (grad_input, grad_w_ih, grad_w_hh, *_bias_grads(grad_bias, *ctx.has_bias),
            grad_w_hr if w_hr is not None else None, grad_h0, grad_c0, None, None, None)


torch.library.register_autograd(
    "rnnfused::lstm_layer_forward", _lstm_layer_backward, setup_context=_lstm_layer_setup)


def _rnn_layer_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)
    input, w_ih, w_hh, b_ih, b_hh, h0, batch_sizes, reverse, nonlinearity = inputs
    out, h_n = output
    ctx.save_for_backward(input, w_ih, w_hh, h0, out, batch_sizes, h_n)
    ctx.reverse = reverse
    ctx.nonlinearity = nonlinearity
    ctx.has_bias = (b_ih is not None, b_hh is not None)


def _rnn_layer_backward(ctx, grad_output, grad_h_n):
    input, w_ih, w_hh, h0, out, batch_sizes, h_n = ctx.saved_tensors
    grad_input, grad_w_ih, grad_w_hh, grad_bias, grad_h0 = _ops.rnn_layer_backward(
        _zeros_if_none(grad_output, out), _zeros_if_none(grad_h_n, h_n), input, w_ih, w_hh, h0,
        out, batch_sizes, ctx.reverse, ctx.nonlinearity)
    return (grad_input, grad_w_ih, grad_w_hh, *_bias_grads(grad_bias, *ctx.has_bias), grad_h0,
            None, None, None)


torch.library.register_autograd(
    "rnnfused::rnn_layer_forward", _rnn_layer_backward, setup_context=_rnn_layer_setup)


def _lstm_cell_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)
    input, hx, cx, w_ih, w_hh, b_ih, b_hh, training = inputs
    hy, cy, workspace = output
    ctx.save_for_backward(input, hx, cx, w_ih, w_hh, workspace, hy, cy)
    ctx.has_bias = (b_ih is not None, b_hh is not None)


def _lstm_cell_backward(ctx, grad_hy, grad_cy, _grad_workspace):
    input, hx, cx, w_ih, w_hh, workspace, hy, cy = ctx.saved_tensors
    grad_input, grad_w_ih, grad_w_hh, grad_bias, grad_hx, grad_cx = _ops.lstm_cell_backward(
        _zeros_if_none(grad_hy, hy), _zeros_if_none(grad_cy, cy), input, hx, cx, w_ih, w_hh, workspace)
    return (grad_input, grad_hx, grad_cx, grad_w_ih, grad_w_hh,
            *_bias_grads(grad_bias, *ctx.has_bias), None)


torch.library.register_autograd(
    "rnnfused::lstm_cell_forward", _lstm_cell_backward, setup_context=_lstm_cell_setup)


def _rnn_cell_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)
    input, hx, w_ih, w_hh, b_ih, b_hh, nonlinearity = inputs
    ctx.save_for_backward(input, hx, w_ih, w_hh, output)
    ctx.nonlinearity = nonlinearity
    ctx.has_bias = (b_ih is not None, b_hh is not None)


def _rnn_cell_backward(ctx, grad_hy):
    input, hx, w_ih, w_hh, hy = ctx.saved_tensors
    grad_input, grad_w_ih, grad_w_hh, grad_bias, grad_hx = _ops.rnn_cell_backward(
        _zeros_if_none(grad_hy, hy), input, hx, w_ih, w_hh, hy, ctx.nonlinearity)
    return (grad_input, grad_hx, grad_w_ih, grad_w_hh, *_bias_grads(grad_bias, *ctx.has_bias), None)


torch.library.register_autograd(
    "rnnfused::rnn_cell_forward", _rnn_cell_backward, setup_context=_rnn_cell_setup)


# ---------------------------------------------------------------------------------------------
# Gated-candidate LSTM layer (Liu, Qiu & Huang 2016, Coupled-Layer / Shared-Layer models).
# Math and layouts: csrc/include/rnnfused/gated_candidate_math.h; schema: registration.cpp.

def gated_candidate_lstm_layer(
    x_proj: Tensor,
    w_hh: Tensor,
    h0: Tensor,
    c0: Tensor,
    batch_sizes: Tensor | None = None,
    reverse: bool = False,
    training: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """M gated-candidate LSTM streams over one sequence, one direction, one op call.

    x_proj: (T, B, M, 5H) dense, or (N, M, 5H) PackedSequence rows with ``batch_sizes``: the
    x-side pre-activations ``i | f | o | z | q`` of every stream and step (z: the candidate cell,
    q: the x-side part of every gate into the stream's candidate).
    w_hh: (M, (3 + 2M)H, H): w_hh[s] @ h_{t-1}^(s) gives stream s's own ``i | f | o`` rows, then
    its gate pre-activations into streams 0..M-1, then its candidate contributions to them.
    h0, c0: (B, M, H). Returns output (T, B, M, H) or (N, M, H), h_n (B, M, H), c_n (B, M, H).
    The time loop runs in C++ (CPU) or as one kernel per step (CUDA); ``training=False`` keeps
    nothing for backward.
    """
    output, h_n, c_n, _ = _call(_ops.gated_candidate_lstm_layer_forward, x_proj, w_hh, h0, c0, batch_sizes, reverse,
                                training)
    return output, h_n, c_n


@torch.library.register_fake("rnnfused::gated_candidate_lstm_layer_forward")
def _(x_proj, w_hh, h0, c0, batch_sizes, reverse, training):
    streams, _, hidden_size = w_hh.shape
    output = x_proj.new_empty((*x_proj.shape[:-1], hidden_size))
    rows = x_proj.shape[0] if x_proj.dim() == 3 else x_proj.shape[0] * x_proj.shape[1]
    workspace = (x_proj.new_empty((rows, streams, (5 + 2 * streams) * hidden_size)) if training
                 else x_proj.new_empty((0,)))
    return output, h0.new_empty(h0.shape), c0.new_empty(c0.shape), workspace


@torch.library.register_fake("rnnfused::gated_candidate_lstm_layer_backward")
def _(grad_output, grad_h_n, grad_c_n, x_proj, w_hh, h0, c0, output, workspace, batch_sizes, reverse):
    return _like(x_proj), _like(w_hh), _like(h0), _like(c0)


def _gated_layer_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)
    x_proj, w_hh, h0, c0, batch_sizes, reverse, training = inputs
    out, h_n, c_n, workspace = output
    ctx.save_for_backward(x_proj, w_hh, h0, c0, out, workspace, batch_sizes, h_n, c_n)
    ctx.reverse = reverse


def _gated_layer_backward(ctx, grad_output, grad_h_n, grad_c_n, _grad_workspace):
    x_proj, w_hh, h0, c0, out, workspace, batch_sizes, h_n, c_n = ctx.saved_tensors
    grad_x_proj, grad_w_hh, grad_h0, grad_c0 = _ops.gated_candidate_lstm_layer_backward(
        _zeros_if_none(grad_output, out), _zeros_if_none(grad_h_n, h_n), _zeros_if_none(grad_c_n, c_n),
        x_proj, w_hh, h0, c0, out, workspace, batch_sizes, ctx.reverse)
    return grad_x_proj, grad_w_hh, grad_h0, grad_c0, None, None, None


torch.library.register_autograd(
    "rnnfused::gated_candidate_lstm_layer_forward", _gated_layer_backward, setup_context=_gated_layer_setup)


# ---------------------------------------------------------------------------------------------
# Autocast. Policy: under torch.autocast every forward op runs in the autocast dtype of the
# input's device (read when the op is called, so float16 and bfloat16 both work): its floating
# inputs (input, weights, states) are cast, the op runs with autocast off, and every result is
# in that dtype. That is what torch.nn.LSTM does on its main paths (oneDNN on the CPU, cuDNN on
# the GPU). Where torch.nn itself falls back to float32 under CPU autocast (packed LSTM input,
# LSTMCell, c_n with proj_size, oneDNN disabled) rnnfused still returns the autocast dtype.
# float64 tensors are left alone, as ATen's autocast leaves them. The casts are ordinary
# differentiable ops, so gradients reach float32 parameters as float32.
# torch.library.register_autocast would fix the dtype at registration time; this kernel does
# the same thing with the dtype of the active autocast context.

_AUTOCAST_OPS = ["lstm_layer_forward", "rnn_layer_forward", "lstm_cell_forward", "rnn_cell_forward",
                 "gated_candidate_lstm_layer_forward"]
_autocast_lib = torch.library.Library("rnnfused", "IMPL")


def _autocast_eligible(a, device_type: str) -> bool:
    """What autocast casts: floating tensors of its device, except float64 (as ATen's autocast)."""
    return (isinstance(a, Tensor) and a.is_floating_point() and a.dtype != torch.float64
            and a.device.type == device_type)


def _autocast_kernel(op, device_type: str):
    def kernel(_keyset, *args):
        dtype = torch.get_autocast_dtype(device_type)
        cast = tuple(a.to(dtype) if _autocast_eligible(a, device_type) else a for a in args)
        with torch.autocast(device_type, enabled=False):
            return op(*cast)

    return kernel


for _name in _AUTOCAST_OPS:
    for _device_type in ("cpu", "cuda"):
        _autocast_lib.impl(_name, _autocast_kernel(getattr(_ops, _name).default, _device_type),
                           "Autocast" + torch._C._dispatch_key_for_device(_device_type), with_keyset=True)


# ---------------------------------------------------------------------------------------------
# Attention: fused scores + masked softmax + context (schemas and the mask / all-masked contract
# in csrc/registration.cpp). Batch-first: query (B, Tq, ·), keys (B, Tk, ·), values (B, Tk, Dv)
# -> context (B, Tq, Dv), weights (B, Tq, Tk). mask (B, Tk) bool: True = attend.

def additive_attention(query_proj: Tensor, key_proj: Tensor, v: Tensor, values: Tensor,
                       mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Bahdanau (additive) attention on projected inputs:
    ``score[b, q, k] = v . tanh(query_proj[b, q] + key_proj[b, k])``; returns (context, weights).

    query_proj (B, Tq, A) with the bias folded in, key_proj (B, Tk, A), v (A,), values (B, Tk, Dv),
    mask (B, Tk) bool or None. The (B, Tq, Tk, A) tanh tensor is never materialised.
    """
    return _call(_ops.additive_attention_forward, query_proj, key_proj, v, values, mask)


def dot_attention(query: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None,
                  scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Dot-product (Luong) attention: ``score[b, q, k] = scale * query[b, q] . keys[b, k]``;
    returns (context, weights). query (B, Tq, D), keys (B, Tk, D), values (B, Tk, Dv)."""
    return _call(_ops.dot_attention_forward, query, keys, values, mask, scale)


def _attention_outputs(query: Tensor, keys: Tensor, values: Tensor):
    batch, query_len, key_len = query.shape[0], query.shape[1], keys.shape[1]
    return (query.new_empty((batch, query_len, values.shape[2])),
            query.new_empty((batch, query_len, key_len)))


@torch.library.register_fake("rnnfused::additive_attention_forward")
def _(query_proj, key_proj, v, values, mask):
    return _attention_outputs(query_proj, key_proj, values)


@torch.library.register_fake("rnnfused::additive_attention_backward")
def _(grad_context, grad_weights, query_proj, key_proj, v, values, weights):
    return _like(query_proj), _like(key_proj), _like(v), _like(values)


@torch.library.register_fake("rnnfused::dot_attention_forward")
def _(query, keys, values, mask, scale):
    return _attention_outputs(query, keys, values)


@torch.library.register_fake("rnnfused::dot_attention_backward")
def _(grad_context, grad_weights, query, keys, values, weights, scale):
    return _like(query), _like(keys), _like(values)


# Backward reads the forward's weights (masked keys have weight 0), never the mask; gradients the
# caller did not ask for stay None (set_materialize_grads(False)) for the kernels, which treat
# them as zero.

def _additive_attention_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)
    query_proj, key_proj, v, values, mask = inputs
    ctx.save_for_backward(query_proj, key_proj, v, values, output[1])


def _additive_attention_backward(ctx, grad_context, grad_weights):
    query_proj, key_proj, v, values, weights = ctx.saved_tensors
    grads = _ops.additive_attention_backward(grad_context, grad_weights, query_proj, key_proj, v,
                                             values, weights)
    return (*grads, None)


torch.library.register_autograd(
    "rnnfused::additive_attention_forward", _additive_attention_backward,
    setup_context=_additive_attention_setup)


def _dot_attention_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)
    query, keys, values, mask, scale = inputs
    ctx.save_for_backward(query, keys, values, output[1])
    ctx.scale = scale


def _dot_attention_backward(ctx, grad_context, grad_weights):
    query, keys, values, weights = ctx.saved_tensors
    grads = _ops.dot_attention_backward(grad_context, grad_weights, query, keys, values, weights,
                                        ctx.scale)
    return (*grads, None, None)


torch.library.register_autograd(
    "rnnfused::dot_attention_forward", _dot_attention_backward, setup_context=_dot_attention_setup)
