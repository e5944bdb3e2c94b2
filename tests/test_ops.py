"""The ops themselves: gradcheck (float64), torch.library.opcheck (schema, fake kernel, autograd
registration, AOT dispatch) for every op, the pure-PyTorch reference as a second oracle, and
torch.compile(fullgraph=True) parity."""
import pytest
import torch
from torch import nn

import rnnfused
from rnnfused import ops, reference

I, H, P, B = 3, 4, 2, 3
BATCH_SIZES = torch.tensor([3, 3, 2, 1])  # packed lengths 4, 3, 2
N = int(BATCH_SIZES.sum())


def rand(*shape, device="cpu", dtype=torch.float64, grad=True):
    return torch.randn(*shape, device=device, dtype=dtype, requires_grad=grad)


def lstm_args(device, packed, proj, bias, reverse, training=True, grad=True):
    x = rand(N, I, device=device, grad=grad) if packed else rand(4, B, I, device=device, grad=grad)
    state = P if proj else H
    return (x, rand(4 * H, I, device=device, grad=grad), rand(4 * H, state, device=device, grad=grad),
            rand(4 * H, device=device, grad=grad) if bias else None,
            rand(4 * H, device=device, grad=grad) if bias else None,
            rand(P, H, device=device, grad=grad) if proj else None,
            rand(B, state, device=device, grad=grad), rand(B, H, device=device, grad=grad),
            BATCH_SIZES if packed else None, reverse, training)


def rnn_args(device, packed, bias, reverse, nonlinearity, grad=True):
    x = rand(N, I, device=device, grad=grad) if packed else rand(4, B, I, device=device, grad=grad)
    return (x, rand(H, I, device=device, grad=grad), rand(H, H, device=device, grad=grad),
            rand(H, device=device, grad=grad) if bias else None,
            rand(H, device=device, grad=grad) if bias else None,
            rand(B, H, device=device, grad=grad), BATCH_SIZES if packed else None, reverse, nonlinearity)


LSTM_VARIANTS = [  # (packed, proj, bias, reverse)
    (False, False, True, False),
    (False, True, False, True),
    (True, False, True, True),
    (True, True, True, False),
]
RNN_VARIANTS = [  # (packed, bias, reverse, nonlinearity)
    (False, True, False, "tanh"),
    (True, False, True, "relu"),
    (True, True, False, "tanh"),
]


@pytest.mark.parametrize("packed,proj,bias,reverse", LSTM_VARIANTS)
def test_lstm_layer_gradcheck_and_reference(device, packed, proj, bias, reverse):
    args = lstm_args(device, packed, proj, bias, reverse)
    assert torch.autograd.gradcheck(lambda *a: ops.lstm_layer(*a), args, eps=1e-6, atol=1e-7)
    for fused, ref in zip(ops.lstm_layer(*args), reference.lstm_layer(*args)):
        torch.testing.assert_close(fused, ref, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("packed,bias,reverse,nonlinearity", RNN_VARIANTS)
def test_rnn_layer_gradcheck_and_reference(device, packed, bias, reverse, nonlinearity):
    args = rnn_args(device, packed, bias, reverse, nonlinearity)
    if nonlinearity == "relu":  # keep pre-activations away from relu's kink for finite differences
        with torch.no_grad():
            args[1].abs_(), args[2].mul_(0.1), args[0].abs_()
    assert torch.autograd.gradcheck(lambda *a: ops.rnn_layer(*a), args, eps=1e-6, atol=1e-7)
    for fused, ref in zip(ops.rnn_layer(*args), reference.rnn_layer(*args)):
        torch.testing.assert_close(fused, ref, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("bias", [True, False])
def test_cell_ops_gradcheck_and_reference(device, bias):
    x, hx, cx = rand(B, I, device=device), rand(B, H, device=device), rand(B, H, device=device)
    w = [rand(4 * H, I, device=device), rand(4 * H, H, device=device)]
    b = [rand(4 * H, device=device), rand(4 * H, device=device)] if bias else [None, None]
    args = (x, hx, cx, *w, *b)
    assert torch.autograd.gradcheck(lambda *a: ops.lstm_cell(*a), args, eps=1e-6, atol=1e-7)
    for fused, ref in zip(ops.lstm_cell(*args), reference.lstm_cell(*args)):
        torch.testing.assert_close(fused, ref)
    w = [rand(H, I, device=device), rand(H, H, device=device)]
    b = [rand(H, device=device), rand(H, device=device)] if bias else [None, None]
    args = (x, hx, *w, *b)
    assert torch.autograd.gradcheck(lambda *a: ops.rnn_cell(*a), args, eps=1e-6, atol=1e-7)
    torch.testing.assert_close(ops.rnn_cell(*args), reference.rnn_cell(*args))


# --- opcheck -----------------------------------------------------------------------------------

def _no_grad(args):
    return tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)


@pytest.mark.parametrize("packed,proj,bias,reverse", LSTM_VARIANTS)
def test_opcheck_lstm_layer(device, packed, proj, bias, reverse):
    args = lstm_args(device, packed, proj, bias, reverse)
    torch.library.opcheck(torch.ops.rnnfused.lstm_layer_forward.default, args)
    inference = lstm_args(device, packed, proj, bias, reverse, training=False, grad=False)
    torch.library.opcheck(torch.ops.rnnfused.lstm_layer_forward.default, inference)
    x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, batch_sizes, reverse, _ = _no_grad(args)
    out, h_n, c_n, ws = torch.ops.rnnfused.lstm_layer_forward(*_no_grad(args))
    backward_args = (torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(c_n), x, w_ih,
                     w_hh, w_hr, h0, c0, out, ws, batch_sizes, reverse)
    torch.library.opcheck(torch.ops.rnnfused.lstm_layer_backward.default, backward_args)


@pytest.mark.parametrize("packed,bias,reverse,nonlinearity", RNN_VARIANTS)
def test_opcheck_rnn_layer(device, packed, bias, reverse, nonlinearity):
    args = rnn_args(device, packed, bias, reverse, nonlinearity)
    torch.library.opcheck(torch.ops.rnnfused.rnn_layer_forward.default, args)
    x, w_ih, w_hh, b_ih, b_hh, h0, batch_sizes, reverse, nonlinearity = _no_grad(args)
    out, h_n = torch.ops.rnnfused.rnn_layer_forward(*_no_grad(args))
    backward_args = (torch.randn_like(out), torch.randn_like(h_n), x, w_ih, w_hh, h0, out,
                     batch_sizes, reverse, nonlinearity)
    torch.library.opcheck(torch.ops.rnnfused.rnn_layer_backward.default, backward_args)


def test_opcheck_cells(device):
    x, hx, cx = rand(B, I, device=device), rand(B, H, device=device), rand(B, H, device=device)
    w_ih, w_hh, b_ih, b_hh = (rand(4 * H, I, device=device), rand(4 * H, H, device=device),
                              rand(4 * H, device=device), rand(4 * H, device=device))
    torch.library.opcheck(torch.ops.rnnfused.lstm_cell_forward.default, (x, hx, cx, w_ih, w_hh, b_ih, b_hh, True))
    args = _no_grad((x, hx, cx, w_ih, w_hh, b_ih, b_hh))
    hy, cy, ws = torch.ops.rnnfused.lstm_cell_forward(*args, True)
    torch.library.opcheck(torch.ops.rnnfused.lstm_cell_backward.default,
                          (torch.randn_like(hy), torch.randn_like(cy), *args[:5], ws))
    w_ih, w_hh, b_ih, b_hh = (rand(H, I, device=device), rand(H, H, device=device),
                              rand(H, device=device), rand(H, device=device))
    torch.library.opcheck(torch.ops.rnnfused.rnn_cell_forward.default, (x, hx, w_ih, w_hh, b_ih, b_hh, "tanh"))
    args = _no_grad((x, hx, w_ih, w_hh, b_ih, b_hh))
    hy = torch.ops.rnnfused.rnn_cell_forward(*args, "relu")
    torch.library.opcheck(torch.ops.rnnfused.rnn_cell_backward.default,
                          (torch.randn_like(hy), *args[:4], hy, "relu"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_opcheck_16bit(device, dtype):
    """16-bit calls (on CPUs without 16-bit kernels: computed in float32, rounded on the way out)
    keep the dtype and shapes the fake kernels state, forward and backward."""
    cast = lambda args: tuple(a.detach().to(dtype).requires_grad_() if isinstance(a, torch.Tensor)  # noqa: E731
                              and a.is_floating_point() else a for a in args)
    args = cast(lstm_args(device, True, True, True, False))
    torch.library.opcheck(torch.ops.rnnfused.lstm_layer_forward.default, args)
    x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, batch_sizes, reverse, _ = _no_grad(args)
    out, h_n, c_n, ws = torch.ops.rnnfused.lstm_layer_forward(*_no_grad(args))
    assert {t.dtype for t in (out, h_n, c_n, ws)} == {dtype}
    torch.library.opcheck(torch.ops.rnnfused.lstm_layer_backward.default,
                          (torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(c_n), x, w_ih, w_hh,
                           w_hr, h0, c0, out, ws, batch_sizes, reverse))
    args = cast(rnn_args(device, False, True, False, "tanh"))
    torch.library.opcheck(torch.ops.rnnfused.rnn_layer_forward.default, args)
    x, hx, cx = (rand(B, n, device=device, dtype=dtype) for n in (I, H, H))
    w_ih, w_hh = rand(4 * H, I, device=device, dtype=dtype), rand(4 * H, H, device=device, dtype=dtype)
    torch.library.opcheck(torch.ops.rnnfused.lstm_cell_forward.default, (x, hx, cx, w_ih, w_hh, None, None, True))


def test_every_op_is_covered_by_opcheck():
    """A new op in registration.cpp must get an opcheck (and a gradcheck) here."""
    covered = {"lstm_layer_forward", "lstm_layer_backward", "rnn_layer_forward", "rnn_layer_backward",
               "lstm_cell_forward", "lstm_cell_backward", "rnn_cell_forward", "rnn_cell_backward",
               # tests/test_gated_candidate_op.py
               "gated_candidate_lstm_layer_forward", "gated_candidate_lstm_layer_backward",
               # tests/test_attention.py::test_opcheck, ::test_gradcheck
               "additive_attention_forward", "additive_attention_backward",
               "dot_attention_forward", "dot_attention_backward"}
    registered = {name.split("::")[1] for name in torch._C._dispatch_get_all_op_names()
                  if name.startswith("rnnfused::")}
    assert registered == covered


def test_backward_needs_a_training_workspace():
    args = lstm_args("cpu", False, False, True, False, training=False)
    output, h_n, c_n = ops.lstm_layer(*args)
    with pytest.raises(RuntimeError, match="training=True"):
        output.sum().backward()


# --- torch.compile -----------------------------------------------------------------------------

class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = rnnfused.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * H, 3)

    def forward(self, x):
        out, (h_n, c_n) = self.lstm(x)
        return self.head(out).sum() + h_n.sum() + c_n.sum()


@torch._dynamo.config.patch(allow_rnn=True)
def test_torch_compile_fullgraph_matches_eager():
    """Dynamo refuses every nn.LSTM / nn.RNN subclass unless allow_rnn is set; with it, the
    rnnfused modules trace into one graph of rnnfused ops (README: torch.compile)."""
    torch._dynamo.reset()
    model = Tagger().double()
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 5, I, dtype=torch.float64, requires_grad=True)
    eager = model(x)
    (eager_grad,) = torch.autograd.grad(eager, [x])
    result = compiled(x)
    (compiled_grad,) = torch.autograd.grad(result, [x])
    torch.testing.assert_close(result, eager)
    torch.testing.assert_close(compiled_grad, eager_grad)
