"""GPU-only properties of the CUDA kernels. Parity with cuDNN runs through the device-parametrised
tests in the other files; these add what only a GPU can show. All skip without a GPU."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnfused
from conftest import available_devices

pytestmark = pytest.mark.skipif("cuda" not in available_devices(),
                                reason="needs a GPU and a CUDA build of rnnfused")


def _pair(cls_fused, cls_torch, *args, **kwargs):
    ref = cls_torch(*args, **kwargs).double()
    fused = cls_fused(*args, **kwargs).cuda()
    fused.load_state_dict(ref.state_dict())
    return ref, fused


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("packed", [False, True])
def test_cuda_against_float64_cpu(dtype, packed):
    ref, fused = _pair(rnnfused.LSTM, nn.LSTM, 32, 48, num_layers=2, bidirectional=True, proj_size=16)
    fused = fused.to(dtype)
    x = torch.randn(15, 6, 32, dtype=torch.float64)
    lengths = torch.tensor([15, 11, 11, 7, 2, 1])
    def call(module, inp):
        inp = inp.requires_grad_()
        arg = pack_padded_sequence(inp, lengths) if packed else inp
        out, (h, c) = module(arg)
        out = out.data if packed else out
        (out.double().sum() + h.double().square().sum() + c.double().sum()).backward()
        return [out, h, c, inp.grad, *(p.grad for p in module.parameters())]
    truth = call(ref, x.clone())
    got = call(fused, x.clone().to("cuda", dtype))
    tol = {torch.float32: 1e-4, torch.bfloat16: 1e-1, torch.float16: 2e-2}[dtype]
    for a, b in zip(got, truth):
        torch.testing.assert_close(a.double().cpu(), b, atol=tol, rtol=tol)


def test_no_host_synchronisation():
    """Forward and backward never wait for the GPU (dense and packed input)."""
    lstm = rnnfused.LSTM(32, 64, num_layers=2, bidirectional=True).cuda()
    x = torch.randn(20, 8, 32, device="cuda", requires_grad=True)
    packed = pack_padded_sequence(torch.randn(20, 8, 32, device="cuda"), torch.tensor([20] * 4 + [9] * 4))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, (h, c) = lstm(x)
        (out.sum() + h.sum() + c.sum()).backward()
        out, _ = lstm(packed)
        out.data.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_cuda_graph_capture_and_replay():
    lstm = rnnfused.LSTM(32, 64, num_layers=2).cuda()
    cell = rnnfused.LSTMCell(32, 64).cuda()
    static_x = torch.randn(10, 4, 32, device="cuda")
    # Warm up on a side stream, as CUDA graphs require.
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(2):
            lstm(static_x), cell(static_x[0])
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_out, (static_h, _) = lstm(static_x)
        static_hy, _ = cell(static_x[0])
    for _ in range(2):
        static_x.copy_(torch.randn_like(static_x))
        graph.replay()
        with torch.no_grad():
            out, (h, _) = lstm(static_x)
            hy, _ = cell(static_x[0])
        torch.testing.assert_close(static_out, out)
        torch.testing.assert_close(static_h, h)
        torch.testing.assert_close(static_hy, hy)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_gpu():
    """The device guard: kernels launch on the input's device, not the current one."""
    lstm = rnnfused.LSTM(8, 16).to("cuda:1")
    ref = nn.LSTM(8, 16).to("cuda:1")
    ref.load_state_dict(lstm.state_dict())
    x = torch.randn(5, 3, 8, device="cuda:1")
    with torch.backends.cudnn.flags(enabled=False):
        torch.testing.assert_close(lstm(x)[0], ref(x)[0])


def test_mixed_devices_are_rejected():
    lstm = rnnfused.LSTM(8, 16).cuda()
    with pytest.raises(RuntimeError):
        lstm(torch.randn(5, 3, 8), (torch.zeros(1, 3, 16, device="cuda"), torch.zeros(1, 3, 16, device="cuda")))
    with pytest.raises(RuntimeError, match="h0 is on"):
        rnnfused.ops.lstm_layer(torch.randn(5, 3, 8, device="cuda"), lstm.weight_ih_l0, lstm.weight_hh_l0,
                                None, None, None, torch.zeros(3, 16), torch.zeros(3, 16, device="cuda"))
