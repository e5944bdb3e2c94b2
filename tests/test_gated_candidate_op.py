"""The gated-candidate LSTM layer op (Liu et al. 2016 coupled / shared-layer recurrence):
gradcheck in float64, the pure-PyTorch reference as oracle, torch.library.opcheck of the forward
and backward ops, 16-bit accuracy, autocast, and clear errors for malformed input."""
import pytest
import torch

from rnnfused import ops, reference

H, T, B = 3, 4, 3
BATCH_SIZES = torch.tensor([3, 3, 2, 1])  # packed lengths 4, 3, 2
N = int(BATCH_SIZES.sum())
_op = torch.ops.rnnfused.gated_candidate_lstm_layer_forward
_backward_op = torch.ops.rnnfused.gated_candidate_lstm_layer_backward


def gated_args(streams, packed, reverse, device="cpu", dtype=torch.float64, grad=True, training=True):
    """(x_proj, w_hh, h0, c0, batch_sizes, reverse, training) with fresh random values."""
    def rand(*shape):
        return torch.randn(*shape, device=device, dtype=dtype, requires_grad=grad)

    x_proj = rand(N, streams, 5 * H) if packed else rand(T, B, streams, 5 * H)
    return (x_proj, rand(streams, (3 + 2 * streams) * H, H), rand(B, streams, H), rand(B, streams, H),
            BATCH_SIZES if packed else None, reverse, training)


VARIANTS = [  # (streams, packed, reverse)
    (1, False, False),
    (2, False, True),
    (2, True, False),
    (3, True, True),
]


@pytest.mark.parametrize("streams,packed,reverse", VARIANTS)
def test_gradcheck_and_reference(device, streams, packed, reverse):
    args = gated_args(streams, packed, reverse, device=device)
    # The full Jacobian for the small cases; a random projection of it (fast_mode) for the rest.
    fast = streams > 1
    assert torch.autograd.gradcheck(lambda *a: ops.gated_candidate_lstm_layer(*a), args[:6], eps=1e-6, atol=1e-7,
                                    fast_mode=fast)
    for fused, ref in zip(ops.gated_candidate_lstm_layer(*args), reference.gated_candidate_lstm_layer(*args)):
        torch.testing.assert_close(fused, ref, atol=1e-12, rtol=1e-10)


def test_inference_matches_training(device):
    train = gated_args(2, True, False, device=device, grad=False)
    infer = train[:-1] + (False,)
    for a, b in zip(ops.gated_candidate_lstm_layer(*train), ops.gated_candidate_lstm_layer(*infer)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert _op(*infer)[3].numel() == 0


def test_only_the_gated_sum_reaches_the_candidate():
    """With every gate shut (q -> -inf) the streams decouple: each is a plain LSTM whose
    candidate is tanh(x_z). Pins the layout: which w_hh rows feed which stream."""
    x_proj, w_hh, h0, c0, *_ = gated_args(2, False, False, grad=False)
    x_proj[..., 4 * H:] = -1e4
    out, h_n, c_n = ops.gated_candidate_lstm_layer(x_proj, w_hh, h0, c0)
    for m in range(2):
        h, c = h0[:, m], c0[:, m]
        for t in range(T):
            rec = h @ w_hh[m, :3 * H].T
            i, f, o = (torch.sigmoid(x_proj[t, :, m, k * H:(k + 1) * H] + rec[:, k * H:(k + 1) * H]) for k in range(3))
            c = f * c + i * torch.tanh(x_proj[t, :, m, 3 * H:4 * H])
            h = o * torch.tanh(c)
            torch.testing.assert_close(out[t, :, m], h)
        torch.testing.assert_close(c_n[:, m], c)


@pytest.mark.parametrize("streams,packed,reverse", VARIANTS[2:3])
def test_opcheck(device, streams, packed, reverse):
    args = gated_args(streams, packed, reverse, device=device)
    torch.library.opcheck(_op.default, args)
    torch.library.opcheck(_op.default, gated_args(streams, packed, reverse, device=device, grad=False, training=False))
    plain = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    out, h_n, c_n, ws = _op(*plain)
    x_proj, w_hh, h0, c0, batch_sizes, reverse, _ = plain
    torch.library.opcheck(_backward_op.default, (torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(c_n),
                                                 x_proj, w_hh, h0, c0, out, ws, batch_sizes, reverse))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_16_bit_close_to_float64(device, dtype):
    """Arithmetic in float: the 16-bit result is within a few roundings of the float64 truth."""
    args = gated_args(2, True, False, device=device, grad=False)
    scaled = (args[0] * 0.5, args[1] * 0.3, *args[2:])
    truth = ops.gated_candidate_lstm_layer(*scaled)
    low = ops.gated_candidate_lstm_layer(*(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point()
                                           else a for a in scaled))
    for a, b in zip(low, truth):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), b, atol=8 * torch.finfo(dtype).eps, rtol=0)


def test_autocast_runs_in_the_autocast_dtype_and_grads_reach_float32():
    x_proj, w_hh, h0, c0, *_ = gated_args(2, False, False, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n, c_n = ops.gated_candidate_lstm_layer(x_proj, w_hh, h0, c0)
    assert out.dtype == h_n.dtype == c_n.dtype == torch.bfloat16
    expected = ops.gated_candidate_lstm_layer(x_proj, w_hh, h0, c0)[0]
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.05)
    out.float().sum().backward()
    assert w_hh.grad.dtype == torch.float32 and torch.isfinite(w_hh.grad).all()


def test_backward_needs_a_training_workspace():
    args = gated_args(2, False, False, training=False)
    output, _, _ = ops.gated_candidate_lstm_layer(*args)
    with pytest.raises(RuntimeError, match="training=True"):
        output.sum().backward()


def _replace(args, index, value):
    return args[:index] + (value,) + args[index + 1:]


@pytest.mark.parametrize("index,value,message", [
    (1, torch.randn(2, 7 * H, H + 1, dtype=torch.float64), r"w_hh must have shape"),
    (1, torch.randn(7 * H, H, dtype=torch.float64), r"w_hh must be 3-D"),
    (0, torch.randn(T, B, 2, 4 * H, dtype=torch.float64), r"x_proj must end in \(2, 15\)"),
    (0, torch.randn(T * B, 2, 5 * H, dtype=torch.float64), r"x_proj must be 4-D"),
    (2, torch.randn(B + 1, 2, H, dtype=torch.float64), r"h0 must have shape"),
    (3, torch.randn(B, 2, H, dtype=torch.float32), r"c0 has dtype Float but input has dtype Double"),
    (0, torch.randint(0, 3, (T, B, 2, 5 * H)), r"expected a float32, float64, float16 or bfloat16 input"),
])
def test_bad_input_is_a_clear_error(index, value, message):
    args = gated_args(2, False, False, grad=False)
    with pytest.raises(RuntimeError, match=message):
        ops.gated_candidate_lstm_layer(*_replace(args, index, value))


def test_bad_batch_sizes_are_clear_errors():
    args = gated_args(2, True, False, grad=False)
    with pytest.raises(RuntimeError, match="non-increasing"):
        ops.gated_candidate_lstm_layer(*_replace(args, 4, torch.tensor([3, 2, 3, 1])))
    with pytest.raises(RuntimeError, match="batch_sizes sums to"):
        ops.gated_candidate_lstm_layer(*_replace(args, 4, torch.tensor([3, 3, 2])))
