"""rnnfused.LSTMCell / RNNCell against torch.nn's cells: outputs and every gradient."""
import pytest
import torch
from torch import nn

import rnnfused
from conftest import TOLERANCES, native_torch
from helpers import assert_parity, twin

I, H, B = 5, 7, 4


def cell_inputs(num_states, batched, with_hx, device, dtype):
    def make():
        x = torch.randn(*((B,) if batched else ()), I, device=device, dtype=dtype, requires_grad=True)
        if not with_hx:
            return (x,), [x]
        states = [torch.randn(*((B,) if batched else ()), H, device=device, dtype=dtype, requires_grad=True)
                  for _ in range(num_states)]
        hx = tuple(states) if num_states == 2 else states[0]
        return (x, hx), [x, *states]

    return make


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [True, False])
def test_lstm_cell(device, dtype, bias, batched, with_hx):
    ref, fused = twin(rnnfused.LSTMCell, nn.LSTMCell, I, H, bias=bias, device=device, dtype=dtype)
    assert_parity(ref, fused, cell_inputs(2, batched, with_hx, device, dtype), **TOLERANCES[dtype],
                  reference_context=native_torch(device))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [True, False])
def test_rnn_cell(device, dtype, nonlinearity, bias, batched, with_hx):
    ref, fused = twin(rnnfused.RNNCell, nn.RNNCell, I, H, bias=bias, nonlinearity=nonlinearity,
                      device=device, dtype=dtype)
    assert_parity(ref, fused, cell_inputs(1, batched, with_hx, device, dtype), **TOLERANCES[dtype],
                  reference_context=native_torch(device))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("kind", ["LSTMCell", "RNNCell"])
@pytest.mark.parametrize("batch", [1, 2, 3, 5, 9, 40])
def test_wide_cells(device, dtype, kind, batch):
    """Every path of the CPU's few-rows GEMM: dot products for batches up to 4 (19 inputs: whole
    vectors plus a tail of k), then A^T packed in chunks of up to 16 floats (one AVX-512 or two
    AVX2 vectors; AVX2 packs a chunk of up to 8 rows into one: 40 = 16 + 16 + 8); 37 units (gate
    rows in tiles of 16 (AVX-512), 6 (AVX2) or 4 / 2 (dot products) plus a remainder)."""
    classes = (rnnfused.LSTMCell, nn.LSTMCell) if kind == "LSTMCell" else (rnnfused.RNNCell, nn.RNNCell)
    ref, fused = twin(*classes, 19, 37, device=device, dtype=dtype)
    states = 2 if kind == "LSTMCell" else 1

    def make():
        x = torch.randn(batch, 19, device=device, dtype=dtype, requires_grad=True)
        hs = [torch.randn(batch, 37, device=device, dtype=dtype, requires_grad=True) for _ in range(states)]
        return (x, tuple(hs) if states == 2 else hs[0]), [x, *hs]

    assert_parity(ref, fused, make, **TOLERANCES[dtype], reference_context=native_torch(device))


def test_lstm_cell_step_loop_matches_layer(device):
    """Unrolling the cell over a sequence gives the layer's result (same weights)."""
    cell = rnnfused.LSTMCell(I, H).to(device, torch.float64)
    layer = rnnfused.LSTM(I, H).to(device, torch.float64)
    with torch.no_grad():
        layer.weight_ih_l0.copy_(cell.weight_ih), layer.weight_hh_l0.copy_(cell.weight_hh)
        layer.bias_ih_l0.copy_(cell.bias_ih), layer.bias_hh_l0.copy_(cell.bias_hh)
    x = torch.randn(6, B, I, device=device, dtype=torch.float64)
    h = c = torch.zeros(B, H, device=device, dtype=torch.float64)
    outs = []
    for t in range(6):
        h, c = cell(x[t], (h, c))
        outs.append(h)
    out, (h_n, c_n) = layer(x)
    torch.testing.assert_close(torch.stack(outs), out)
    torch.testing.assert_close(c, c_n[0])


def test_batch_of_zero(device):
    for fused_cls, torch_cls in [(rnnfused.LSTMCell, nn.LSTMCell), (rnnfused.RNNCell, nn.RNNCell)]:
        ref, fused = twin(fused_cls, torch_cls, I, H, device=device)
        x = torch.randn(0, I, device=device, dtype=torch.float64)
        a, b = ref(x), fused(x)
        for ta, tb in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert ta.shape == tb.shape
