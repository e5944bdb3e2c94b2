"""rnnfused.LSTM / rnnfused.RNN against torch.nn.LSTM / nn.RNN on the same weights: outputs,
h_n, c_n and the gradients of input, h0, c0 and every parameter, over a grid of options."""
import itertools

import pytest
import torch
from torch import nn

import rnnfused
from conftest import TOLERANCES, native_torch
from helpers import assert_parity, make_packed_inputs, twin

I, H = 5, 6
DTYPES = [torch.float64, torch.float32]


def dense_inputs(T, B, num_states, state_shapes, batch_first, unbatched, with_hx, device, dtype):
    """make_inputs for dense (or unbatched) input, hx given as leaves when with_hx."""

    def make():
        if unbatched:
            x = torch.randn(T, I, device=device, dtype=dtype, requires_grad=True)
        else:
            shape = (B, T, I) if batch_first else (T, B, I)
            x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
        leaves = [x]
        if not with_hx:
            return (x,), leaves
        states = []
        for shape in state_shapes:
            if unbatched:
                shape = (shape[0], shape[2])
            states.append(torch.randn(shape, device=device, dtype=dtype, requires_grad=True))
        leaves += states
        hx = tuple(states) if num_states == 2 else states[0]
        return (x, hx), leaves

    return make


LSTM_GRID = [
    # (num_layers, bidirectional, batch_first, bias, proj_size, T)
    (1, False, False, True, 0, 1),
    (1, False, False, True, 0, 7),
    (1, True, True, True, 0, 7),
    (2, False, True, False, 0, 4),
    (2, True, False, True, 3, 5),
    (3, True, False, True, 0, 3),
    (3, False, True, True, 4, 6),
    (2, True, True, False, 2, 1),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layers,bidir,batch_first,bias,proj,T", LSTM_GRID)
@pytest.mark.parametrize("with_hx", [False, True], ids=["hx_none", "hx_given"])
def test_lstm_dense(device, dtype, layers, bidir, batch_first, bias, proj, T, with_hx):
    ref, fused = twin(rnnfused.LSTM, nn.LSTM, I, H, num_layers=layers, bias=bias,
                      batch_first=batch_first, bidirectional=bidir, proj_size=proj,
                      device=device, dtype=dtype)
    D, B, P = 2 if bidir else 1, 3, proj or H
    make = dense_inputs(T, B, 2, [(layers * D, B, P), (layers * D, B, H)], batch_first, False,
                        with_hx, device, dtype)
    assert_parity(ref, fused, make, **TOLERANCES[dtype], reference_context=native_torch(device))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layers,bidir,proj", [(1, False, 0), (2, True, 3)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_lstm_unbatched(device, dtype, layers, bidir, proj, batch_first):
    ref, fused = twin(rnnfused.LSTM, nn.LSTM, I, H, num_layers=layers, bidirectional=bidir,
                      proj_size=proj, batch_first=batch_first, device=device, dtype=dtype)
    D, P = 2 if bidir else 1, proj or H
    for with_hx in (False, True):
        make = dense_inputs(4, 1, 2, [(layers * D, 1, P), (layers * D, 1, H)], batch_first, True,
                            with_hx, device, dtype)
        assert_parity(ref, fused, make, **TOLERANCES[dtype], reference_context=native_torch(device))


PACKED_LENGTHS = {
    "sorted": ([6, 4, 4, 1], True),
    "unsorted": ([3, 7, 1, 5, 7], False),
    "all_one": ([1, 1, 1], False),
    "single": ([5], True),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lengths_name", list(PACKED_LENGTHS))
@pytest.mark.parametrize("layers,bidir,proj", [(1, False, 0), (2, True, 0), (2, True, 3), (3, False, 2)])
def test_lstm_packed(device, dtype, lengths_name, layers, bidir, proj):
    lengths, enforce_sorted = PACKED_LENGTHS[lengths_name]
    ref, fused = twin(rnnfused.LSTM, nn.LSTM, I, H, num_layers=layers, bidirectional=bidir,
                      proj_size=proj, device=device, dtype=dtype)
    make = make_packed_inputs(lengths, I, enforce_sorted, device, dtype)
    assert_parity(ref, fused, make, **TOLERANCES[dtype], reference_context=native_torch(device))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_lstm_packed_with_hx(device, dtype):
    """hx given with an unsorted PackedSequence: hx is permuted in and h_n / c_n back out."""
    lengths = [3, 7, 1, 5]
    ref, fused = twin(rnnfused.LSTM, nn.LSTM, I, H, num_layers=2, bidirectional=True,
                      proj_size=2, device=device, dtype=dtype)
    packed_make = make_packed_inputs(lengths, I, False, device, dtype)

    def make():
        (packed,), leaves = packed_make()
        h0 = torch.randn(4, 4, 2, device=device, dtype=dtype, requires_grad=True)
        c0 = torch.randn(4, 4, H, device=device, dtype=dtype, requires_grad=True)
        return (packed, (h0, c0)), leaves + [h0, c0]

    assert_parity(ref, fused, make, **TOLERANCES[dtype], reference_context=native_torch(device))


RNN_GRID = [
    # (nonlinearity, num_layers, bidirectional, batch_first, bias, T)
    ("tanh", 1, False, False, True, 1),
    ("tanh", 2, True, True, True, 6),
    ("relu", 1, True, False, False, 5),
    ("relu", 3, False, True, True, 4),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("nonlinearity,layers,bidir,batch_first,bias,T", RNN_GRID)
@pytest.mark.parametrize("with_hx", [False, True], ids=["hx_none", "hx_given"])
def test_rnn_dense(device, dtype, nonlinearity, layers, bidir, batch_first, bias, T, with_hx):
    ref, fused = twin(rnnfused.RNN, nn.RNN, I, H, num_layers=layers, nonlinearity=nonlinearity,
                      bias=bias, batch_first=batch_first, bidirectional=bidir, device=device, dtype=dtype)
    D, B = 2 if bidir else 1, 3
    make = dense_inputs(T, B, 1, [(layers * D, B, H)], batch_first, False, with_hx, device, dtype)
    assert_parity(ref, fused, make, **TOLERANCES[dtype], reference_context=native_torch(device))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_unbatched(device, dtype, nonlinearity):
    ref, fused = twin(rnnfused.RNN, nn.RNN, I, H, num_layers=2, bidirectional=True,
                      nonlinearity=nonlinearity, device=device, dtype=dtype)
    for with_hx in (False, True):
        make = dense_inputs(4, 1, 1, [(4, 1, H)], False, True, with_hx, device, dtype)
        assert_parity(ref, fused, make, **TOLERANCES[dtype], reference_context=native_torch(device))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lengths_name", list(PACKED_LENGTHS))
@pytest.mark.parametrize("nonlinearity,layers,bidir", [("tanh", 2, True), ("relu", 1, False)])
def test_rnn_packed(device, dtype, lengths_name, nonlinearity, layers, bidir):
    lengths, enforce_sorted = PACKED_LENGTHS[lengths_name]
    ref, fused = twin(rnnfused.RNN, nn.RNN, I, H, num_layers=layers, bidirectional=bidir,
                      nonlinearity=nonlinearity, device=device, dtype=dtype)
    make = make_packed_inputs(lengths, I, enforce_sorted, device, dtype)
    assert_parity(ref, fused, make, **TOLERANCES[dtype], reference_context=native_torch(device))


# Wide enough for the CPU's fused loops to share the work of a step across a thread team, in
# several panels with a partial last one (100 = 64 + 36 float / 3 x 32 + 4 double columns; proj
# 40). With weights this small a team splits the batch rows where each thread gets 2 or more
# (13 sequences: two 6-row tiles of the micro-kernel + 1, or 6 + 7 for two threads), else the
# hidden units (3 sequences). Each batch has 64 rows or more over all its steps.
WIDE_H, WIDE_PROJ = 100, 40
WIDE_LENGTHS = {"rows": [9, 3, 12, 1, 7, 12, 5, 2, 10, 8, 4, 11, 6], "units": [24, 19, 23]}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind,proj", [("LSTM", 0), ("LSTM", WIDE_PROJ), ("RNN", 0), ("RNN-relu", 0)])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("steps", [None, 4], ids=["panels", "few-rows"])
@pytest.mark.parametrize("split", list(WIDE_LENGTHS))
def test_wide_layers_split_across_threads(device, dtype, kind, proj, packed, steps, split):
    """All steps: enough rows for the CPU to pack the weights; 4 steps: 52 / 46 rows (13
    sequences) or 12 (3), read as they lie by the few-rows kernels."""
    classes = (rnnfused.LSTM, nn.LSTM) if kind == "LSTM" else (rnnfused.RNN, nn.RNN)
    extra = dict(proj_size=proj) if kind == "LSTM" else dict(nonlinearity="relu" if kind == "RNN-relu" else "tanh")
    ref, fused = twin(*classes, I, WIDE_H, num_layers=2, bidirectional=True, device=device, dtype=dtype, **extra)
    lengths = WIDE_LENGTHS[split]
    steps = steps or max(lengths)
    if packed:
        make = make_packed_inputs([min(n, steps) for n in lengths], I, False, device, dtype)
    else:
        B, P = len(lengths), proj or WIDE_H
        shapes = [(4, B, P), (4, B, WIDE_H)] if kind == "LSTM" else [(4, B, WIDE_H)]
        make = dense_inputs(steps, B, len(shapes), shapes, False, False, True, device, dtype)
    assert_parity(ref, fused, make, **TOLERANCES[dtype], reference_context=native_torch(device))


@pytest.mark.parametrize("kind,proj", [("LSTM", 0), ("LSTM", WIDE_PROJ), ("RNN", 0)])
@pytest.mark.parametrize("split", list(WIDE_LENGTHS))
def test_wide_layers_with_more_threads_than_cores(kind, proj, split):
    """Teams of 5 threads on the CPU (more than this machine's cores; splitting the units, some
    with none of their own): the threads' waits on each other still end, and the results are
    torch's."""
    classes = (rnnfused.LSTM, nn.LSTM) if kind == "LSTM" else (rnnfused.RNN, nn.RNN)
    extra = dict(proj_size=proj) if kind == "LSTM" else {}
    ref, fused = twin(*classes, I, WIDE_H, num_layers=2, bidirectional=True, dtype=torch.float32, **extra)
    make = make_packed_inputs(WIDE_LENGTHS[split], I, False, "cpu", torch.float32)
    previous = torch.get_num_threads()
    torch.set_num_threads(5)
    try:
        assert_parity(ref, fused, make, **TOLERANCES[torch.float32], reference_context=native_torch("cpu"))
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("cls_pair", [(rnnfused.LSTM, nn.LSTM), (rnnfused.RNN, nn.RNN)], ids=["LSTM", "RNN"])
def test_batch_of_zero_sequences(device, cls_pair):
    """torch.nn returns empty outputs for B=0; so must rnnfused."""
    ref, fused = twin(*cls_pair, I, H, num_layers=2, device=device)
    x = torch.randn(4, 0, I, device=device, dtype=torch.float64)
    for a, b in zip(_tensors(ref(x)), _tensors(fused(x))):
        assert a.shape == b.shape


def _tensors(result):
    out, hidden = result
    return [out, *(hidden if isinstance(hidden, tuple) else (hidden,))]


@pytest.mark.parametrize("layers,bidir", [(2, False), (3, True)])
def test_dropout_matches_torch_native(device, layers, bidir):
    """In training mode with dropout, the same seed gives the same masks as torch's native path."""
    ref, fused = twin(rnnfused.LSTM, nn.LSTM, I, H, num_layers=layers, bidirectional=bidir,
                      dropout=0.4, device=device)
    ref.train(), fused.train()
    make = dense_inputs(5, 3, 2, [], False, False, False, device, torch.float64)
    assert_parity(ref, fused, make, **TOLERANCES[torch.float64], reference_context=native_torch(device))
    # eval mode: dropout off.
    ref.eval(), fused.eval()
    assert_parity(ref, fused, make, **TOLERANCES[torch.float64], reference_context=native_torch(device))


def test_long_sequence_and_state_dict_round_trip():
    """T = 2000 in float64; weights move both ways through state_dict unchanged."""
    fused = rnnfused.LSTM(I, 8, num_layers=1)
    ref = nn.LSTM(I, 8, num_layers=1)
    ref.load_state_dict(fused.double().state_dict())
    ref.double()
    assert list(fused.state_dict()) == list(ref.state_dict())
    make = dense_inputs(2000, 2, 2, [(1, 2, 8), (1, 2, 8)], False, False, True, "cpu", torch.float64)
    assert_parity(ref, fused, make, atol=1e-9, rtol=1e-8, reference_context=native_torch("cpu"))


def test_parameters_and_repr_are_torchs():
    fused = rnnfused.LSTM(3, 4, num_layers=2, proj_size=2, bidirectional=True, batch_first=True)
    ref = nn.LSTM(3, 4, num_layers=2, proj_size=2, bidirectional=True, batch_first=True)
    assert [(n, p.shape) for n, p in fused.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    assert repr(fused) == repr(ref)
    assert isinstance(fused, nn.LSTM) and isinstance(rnnfused.RNN(2, 3), nn.RNN)


@pytest.mark.parametrize("cls_pair", [(rnnfused.LSTM, nn.LSTM), (rnnfused.RNN, nn.RNN)], ids=["LSTM", "RNN"])
def test_swapped_weights_are_used(cls_pair):
    """Weights swapped in after construction (torch.func.functional_call, assigning a new
    Parameter) are the ones the forward runs, as in torch.nn."""
    fused, ref = (cls(3, 4, num_layers=2).double() for cls in cls_pair)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    params = {name: torch.randn_like(p) for name, p in ref.named_parameters()}
    want = torch.func.functional_call(ref, params, (x,))[0]
    torch.testing.assert_close(torch.func.functional_call(fused, params, (x,))[0], want)
    for module in (ref, fused):
        module.weight_hh_l1 = nn.Parameter(params["weight_hh_l1"].flip(0))
        module.load_state_dict({**params, "weight_hh_l1": module.weight_hh_l1}, strict=True)
    torch.testing.assert_close(fused(x)[0], ref(x)[0])


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("cls_pair", [(rnnfused.LSTM, nn.LSTM), (rnnfused.RNN, nn.RNN)], ids=["LSTM", "RNN"])
def test_float32_shapes_on_the_packed_weight_gemm_path(device, packed, cls_pair):
    """Enough rows (T*B >= 64) for the CPU to pack weights for its fused loops, and big enough
    GEMMs to split across threads (the small grid above stays on the per-step path)."""
    T, B, I2, H2 = 30, 16, 48, 64
    ref, fused = twin(*cls_pair, I2, H2, num_layers=2, bidirectional=True, device=device, dtype=torch.float32)
    if packed:
        lengths = [30] * 4 + [23] * 6 + [9] * 5 + [1]
        make = make_packed_inputs(lengths, I2, False, device, torch.float32)
    else:
        def make():
            x = torch.randn(T, B, I2, device=device, requires_grad=True)
            return (x,), [x]
    assert_parity(ref, fused, make, atol=1e-4, rtol=1e-4, reference_context=native_torch(device))


def test_concurrent_calls_from_python_threads():
    """Python threads calling the same module at once (the CPU's thread teams, scratch pool)
    get the single-threaded result, and so does a process limited to one thread."""
    import threading

    torch.manual_seed(0)
    module = rnnfused.LSTM(I, WIDE_H, num_layers=2, bidirectional=True)
    x = torch.randn(12, 13, I)

    def run():
        xi = x.clone().requires_grad_()
        out, (h, _) = module(xi)
        (out.sum() + h.sum()).backward()
        return out.detach(), xi.grad

    expected = run()
    mismatches = []

    def worker():
        for _ in range(5):
            got = run()
            if not all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, expected)):
                mismatches.append(got)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not mismatches
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(run(), expected))
    finally:
        torch.set_num_threads(previous)
