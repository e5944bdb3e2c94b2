"""torch.autocast: every rnnfused forward op runs in the autocast dtype of its device (policy:
rnnfused/ops.py, "Autocast"). Compared with torch.nn under the same autocast where torch.nn
itself runs in the autocast dtype, and with torch.nn in float32 where it does not."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnfused
from helpers import twin

I, H, T, B = 8, 16, 7, 4
LENGTHS = [7, 5, 5, 2]


def autocast_dtypes(device):
    return [torch.bfloat16] if device.type == "cpu" else [torch.float16, torch.bfloat16]


def _tensors(result):
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, nn.utils.rnn.PackedSequence):
        return [result.data]
    return [t for item in result for t in _tensors(item)]


def _close(fused, expected, dtype):
    atol = 0.03 if dtype == torch.bfloat16 else 0.005
    for a, b in zip(_tensors(fused), _tensors(expected)):
        assert a.dtype == dtype, f"got {a.dtype} under autocast({dtype})"
        torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=0.05)


def _reference_under_autocast(reference, x, dtype):
    """torch.nn's result under autocast(dtype). On a CPU where oneDNN has no 16-bit RNN kernel
    (no AVX-512), torch.nn raises under CPU autocast ("could not create a primitive
    descriptor"); what autocast asks for is then computed directly: the module and input cast to
    dtype, on torch's native kernels."""
    try:
        with torch.autocast(x.device.type, dtype=dtype):
            return reference(x)
    except RuntimeError as error:
        if x.device.type != "cpu" or "primitive descriptor" not in str(error):
            raise
    with torch.backends.mkldnn.flags(enabled=False):
        return copy.deepcopy(reference).to(dtype)(x.to(dtype))


@pytest.mark.parametrize("case", ["lstm", "lstm_proj", "rnn_tanh", "rnn_relu"])
def test_layers_match_torch_under_the_same_autocast(device, case):
    """Dense input: torch.nn runs in the autocast dtype too (oneDNN / cuDNN); same dtype, close values."""
    fused_cls, torch_cls, kwargs = {
        "lstm": (rnnfused.LSTM, nn.LSTM, dict(num_layers=2, bidirectional=True)),
        "lstm_proj": (rnnfused.LSTM, nn.LSTM, dict(proj_size=8, batch_first=True)),
        "rnn_tanh": (rnnfused.RNN, nn.RNN, dict(num_layers=2)),
        "rnn_relu": (rnnfused.RNN, nn.RNN, dict(nonlinearity="relu", bidirectional=True)),
    }[case]
    reference, fused = twin(fused_cls, torch_cls, I, H, device=device, dtype=torch.float32, **kwargs)
    x = torch.randn(T, B, I, device=device)
    for dtype in autocast_dtypes(device):
        with torch.autocast(device.type, dtype=dtype):
            out, state = fused(x)
        ref_out, ref_state = _reference_under_autocast(reference, x, dtype)
        assert out.dtype == ref_out.dtype == dtype
        _close(out, ref_out, dtype)
        # h_n (and c_n): always the autocast dtype in rnnfused; torch's proj_size c_n is float32 on CPU.
        _close(state, ref_state, dtype)


def test_gradients_reach_float32_parameters(device):
    reference, fused = twin(rnnfused.LSTM, nn.LSTM, I, H, bidirectional=True, device=device, dtype=torch.float32)
    x = torch.randn(T, B, I, device=device)
    dtype = autocast_dtypes(device)[0]
    with torch.autocast(device.type, dtype=dtype):
        out, _ = fused(x)
    out.float().square().sum().backward()
    try:
        with torch.autocast(device.type, dtype=dtype):
            out, _ = reference(x)
    except RuntimeError as error:  # no 16-bit oneDNN RNN on this CPU: torch.nn's float32 kernels
        if device.type != "cpu" or "primitive descriptor" not in str(error):
            raise
        with torch.autocast(device.type, dtype=dtype), torch.backends.mkldnn.flags(enabled=False):
            out, _ = reference(x)
    out.float().square().sum().backward()
    for (name, p), q in zip(fused.named_parameters(), reference.parameters()):
        assert p.grad.dtype == torch.float32, name
        torch.testing.assert_close(p.grad, q.grad, atol=0.05, rtol=0.05, msg=lambda m: f"{name}: {m}")


def test_packed_input_and_cells_run_in_the_autocast_dtype(device):
    """torch.nn stays in float32 for these on the CPU; rnnfused follows its policy (the autocast
    dtype) and stays close to the float32 result."""
    dtype = autocast_dtypes(device)[0]
    x = torch.randn(T, B, I, device=device)
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS))
    cases = [
        (twin(rnnfused.LSTM, nn.LSTM, I, H, device=device, dtype=torch.float32), (packed,)),
        (twin(rnnfused.RNN, nn.RNN, I, H, device=device, dtype=torch.float32), (packed,)),
        (twin(rnnfused.LSTMCell, nn.LSTMCell, I, H, device=device, dtype=torch.float32), (x[0],)),
        (twin(rnnfused.RNNCell, nn.RNNCell, I, H, device=device, dtype=torch.float32), (x[0],)),
    ]
    for (reference, fused), args in cases:
        with torch.autocast(device.type, dtype=dtype):
            result = fused(*args)
        _close(result, reference(*args), dtype)


def test_low_precision_input_with_float32_weights_is_accepted_under_autocast(device):
    """As in torch.nn, autocast lifts the input-vs-weight dtype check (the op casts both)."""
    dtype = autocast_dtypes(device)[0]
    x = torch.randn(T, B, I, device=device).to(dtype)
    lstm, cell = rnnfused.LSTM(I, H).to(device), rnnfused.LSTMCell(I, H).to(device)
    with torch.autocast(device.type, dtype=dtype):
        assert lstm(pack_padded_sequence(x, torch.tensor(LENGTHS)))[0].data.dtype == dtype
        assert cell(x[0])[0].dtype == dtype
    with pytest.raises(RuntimeError, match="mat1 and mat2 must have the same dtype"):
        cell(x[0])


def test_cpu_float16_autocast_uses_the_context_dtype():
    """The dtype is read from the active autocast context, not fixed at registration."""
    fused = rnnfused.LSTM(I, H)
    x = torch.randn(T, B, I)
    with torch.autocast("cpu", dtype=torch.float16):
        out, (h_n, c_n) = fused(x)
    assert out.dtype == h_n.dtype == c_n.dtype == torch.float16
    torch.testing.assert_close(out.float(), fused(x)[0], atol=0.01, rtol=0.01)


def test_float64_is_left_alone_as_torch_does():
    """Autocast never casts float64 tensors (ATen's rule); a float64 module stays float64."""
    reference, fused = twin(rnnfused.LSTM, nn.LSTM, I, H)
    x = torch.randn(T, B, I, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = fused(x)
        ref_out, _ = reference(x)
    assert out.dtype == ref_out.dtype == torch.float64
    torch.testing.assert_close(out, ref_out)
