"""The attention ops and modules: parity with the from-formula references (rnnfused.reference and
restatements of the papers' / OpenNMT-py's equations in this file) in float64, outputs and every
gradient; gradcheck and opcheck of every attention op; masks (all-masked rows, length-1 rows);
16-bit error against torch's own; torch.compile; every CPU capability; bad input."""
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnnfused
from conftest import available_devices
from rnnfused import ops, reference

# Odd sizes on purpose: A and Tk are not multiples of any vector width (tails), and exceed 16
# (full vectors too).
B, TQ, TK, A, DV = 3, 4, 21, 19, 6
MASKS = ["none", "random", "all_masked_row", "length_one_row"]


def rand(*shape, device="cpu", dtype=torch.float64, grad=True):
    return torch.randn(*shape, device=device, dtype=dtype, requires_grad=grad)


def make_mask(kind, batch=B, key_len=TK, device="cpu"):
    """(B, Tk) bool, True = attend."""
    if kind == "none":
        return None
    mask = torch.rand(batch, key_len, device=device) > 0.4
    mask[:, 0] = True
    if kind == "all_masked_row":
        mask[1] = False
    if kind == "length_one_row":
        mask[1] = False
        mask[1, 0] = True
    return mask


def additive_args(device, mask_kind, tq=TQ, tk=TK, dtype=torch.float64, grad=True):
    return (rand(B, tq, A, device=device, dtype=dtype, grad=grad), rand(B, tk, A, device=device, dtype=dtype, grad=grad),
            rand(A, device=device, dtype=dtype, grad=grad), rand(B, tk, DV, device=device, dtype=dtype, grad=grad),
            make_mask(mask_kind, key_len=tk, device=device))


def dot_args(device, mask_kind, tq=TQ, tk=TK, dtype=torch.float64, grad=True):
    return (rand(B, tq, A, device=device, dtype=dtype, grad=grad), rand(B, tk, A, device=device, dtype=dtype, grad=grad),
            rand(B, tk, DV, device=device, dtype=dtype, grad=grad), make_mask(mask_kind, key_len=tk, device=device))


def outputs_and_grads(fn, args):
    """fn(*args) and the gradients of a random weighting of its outputs w.r.t. every float
    tensor argument that requires grad."""
    outputs = fn(*args)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    gen = torch.Generator().manual_seed(7)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o)).sum() for o in outputs)
    return list(outputs), list(torch.autograd.grad(loss, leaves))


def assert_all_close(got, expected, **tol):
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape, f"tensor {i}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"tensor {i}: {m}")


# --- the ops against the references, float64 ---------------------------------------------------

@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("tq,tk", [(TQ, TK), (1, TK), (TQ, 1)], ids=["block", "one_query", "one_key"])
def test_additive_matches_reference(device, mask_kind, tq, tk):
    args = additive_args(device, mask_kind, tq, tk)
    fused = outputs_and_grads(ops.additive_attention, args)
    ref = outputs_and_grads(reference.additive_attention, args)
    assert_all_close(fused[0] + fused[1], ref[0] + ref[1], atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("tq,tk", [(TQ, TK), (1, TK), (TQ, 1)], ids=["block", "one_query", "one_key"])
def test_dot_matches_reference(device, mask_kind, tq, tk):
    args = dot_args(device, mask_kind, tq, tk)
    scale = 0.37
    fused = outputs_and_grads(lambda *a: ops.dot_attention(*a, scale=scale), args)
    ref = outputs_and_grads(lambda *a: reference.dot_attention(*a, scale=scale), args)
    assert_all_close(fused[0] + fused[1], ref[0] + ref[1], atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("shape", [(0, 2, 3, 4), (2, 0, 3, 4), (2, 2, 0, 4), (2, 2, 3, 0)],
                         ids=["no_batch", "no_query", "no_key", "no_unit"])
def test_empty_sizes(device, shape):
    """Zero-sized dimensions: empty outputs, zero context without keys, zero gradients."""
    batch, tq, tk, units = shape
    args = (rand(batch, tq, units, device=device), rand(batch, tk, units, device=device),
            rand(units, device=device), rand(batch, tk, DV, device=device))
    for fused, ref, call_args in [(ops.additive_attention, reference.additive_attention, args),
                                  (ops.dot_attention, reference.dot_attention, (args[0], args[1], args[3]))]:
        got = outputs_and_grads(fused, call_args)
        expected = outputs_and_grads(ref, call_args)
        assert_all_close(got[0] + got[1], expected[0] + expected[1])


@pytest.mark.parametrize("op", ["additive", "dot"])
def test_float32_close_to_float64(device, op):
    """float32 (the CPU's rational tanh and fast exp included) against the float64 truth."""
    args = additive_args("cpu", "random", tq=5, tk=40) if op == "additive" else dot_args("cpu", "random", tq=5, tk=40)
    fused, ref = (ops.additive_attention, reference.additive_attention) if op == "additive" else (ops.dot_attention, reference.dot_attention)
    truth = outputs_and_grads(ref, args)
    args32 = [a.detach().to(device, torch.float32).requires_grad_() if a.is_floating_point() else a.to(device)
              for a in args[:-1]] + [args[-1].to(device)]
    got = outputs_and_grads(fused, args32)
    for a, b in zip(got[0] + got[1], truth[0] + truth[1]):
        torch.testing.assert_close(a.double().cpu(), b, atol=2e-5, rtol=2e-5)


def test_reference_formulas():
    """The references themselves against explicit per-element loops (one small case)."""
    q, k, v, values, _ = additive_args("cpu", "none", tq=2, tk=3, grad=False)
    mask = torch.tensor([[True, False, True], [True, True, True], [False, False, False]])
    context, weights = reference.additive_attention(q, k, v, values, mask)
    for b in range(B):
        for i in range(2):
            scores = [float((v * torch.tanh(q[b, i] + k[b, j])).sum()) for j in range(3)]
            valid = [j for j in range(3) if mask[b, j]]
            total = sum(math.exp(scores[j]) for j in valid)
            for j in range(3):
                expected = math.exp(scores[j]) / total if j in valid else 0.0
                assert abs(float(weights[b, i, j]) - expected) < 1e-12
            expected_context = sum((weights[b, i, j] * values[b, j] for j in range(3)), torch.zeros(DV, dtype=q.dtype))
            torch.testing.assert_close(context[b, i], expected_context)


@pytest.mark.parametrize("op", ["additive", "dot"])
def test_all_masked_rows_are_zero_not_nan(device, op):
    """A fully masked query gets zero weights, zero context and zero gradients (no NaN)."""
    if op == "additive":
        args = additive_args(device, "all_masked_row")
        fn = ops.additive_attention
    else:
        args = dot_args(device, "all_masked_row")
        fn = ops.dot_attention
    (context, weights), grads = outputs_and_grads(fn, args)
    assert torch.all(weights[1] == 0) and torch.all(context[1] == 0)
    for g in grads:
        assert torch.isfinite(g).all()
    grad_query, grad_keys = grads[0], grads[1]
    assert torch.all(grad_query[1] == 0) and torch.all(grad_keys[1] == 0)
    mask = args[-1]
    assert torch.all(weights.masked_select(~mask[:, None, :].expand_as(weights)) == 0)


# --- gradcheck and opcheck -----------------------------------------------------------------------

@pytest.mark.parametrize("mask_kind", ["none", "all_masked_row"])
def test_gradcheck(device, mask_kind):
    q, k, v, values = rand(B, 2, 5, device=device), rand(B, 3, 5, device=device), rand(5, device=device), rand(B, 3, 2, device=device)
    mask = make_mask(mask_kind, key_len=3, device=device)
    assert torch.autograd.gradcheck(lambda *a: ops.additive_attention(*a, mask), (q, k, v, values), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(lambda *a: ops.dot_attention(*a, mask, 0.7), (q, k, values), eps=1e-6, atol=1e-7)


def _no_grad(args):
    return tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)


@pytest.mark.parametrize("mask_kind", ["none", "random"])
def test_opcheck(device, mask_kind):
    args = additive_args(device, mask_kind, tq=2, tk=5)
    torch.library.opcheck(torch.ops.rnnfused.additive_attention_forward.default, args)
    q, k, v, values, mask = _no_grad(args)
    context, weights = torch.ops.rnnfused.additive_attention_forward(q, k, v, values, mask)
    for grads in [(torch.randn_like(context), torch.randn_like(weights)), (torch.randn_like(context), None),
                  (None, torch.randn_like(weights))]:
        torch.library.opcheck(torch.ops.rnnfused.additive_attention_backward.default,
                              (*grads, q, k, v, values, weights))

    args = dot_args(device, mask_kind, tq=2, tk=5)
    torch.library.opcheck(torch.ops.rnnfused.dot_attention_forward.default, (*args, 0.5))
    q, k, values, mask = _no_grad(args)
    context, weights = torch.ops.rnnfused.dot_attention_forward(q, k, values, mask, 0.5)
    for grads in [(torch.randn_like(context), torch.randn_like(weights)), (None, torch.randn_like(weights))]:
        torch.library.opcheck(torch.ops.rnnfused.dot_attention_backward.default,
                              (*grads, q, k, values, weights, 0.5))


# --- 16-bit ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("op", ["additive", "dot"])
def test_16bit_error_within_twice_torchs(device, dtype, op):
    """Against the float64 truth, the fused result in 16-bit is no worse than twice the
    composite's (the reference run in the same dtype), outputs and gradients."""
    make, fused_fn, ref_fn = {"additive": (additive_args, ops.additive_attention, reference.additive_attention),
                              "dot": (dot_args, ops.dot_attention, reference.dot_attention)}[op]
    truth_args = make("cpu", "random", tq=6, tk=40, grad=False)

    def run(fn, dtype, device):
        args = [a.to(device=device, dtype=dtype).requires_grad_() if a.is_floating_point() else a.to(device)
                for a in truth_args[:-1]] + [truth_args[-1].to(device)]
        outputs, grads = outputs_and_grads(fn, args)
        return [t.double().cpu() for t in outputs + grads]

    truth = run(ref_fn, torch.float64, "cpu")
    torch_error = [(a - t).abs().max().item() for a, t in zip(run(ref_fn, dtype, device), truth)]
    fused_error = [(a - t).abs().max().item() for a, t in zip(run(fused_fn, dtype, device), truth)]
    floor = torch.finfo(dtype).eps
    for i, (f, t) in enumerate(zip(fused_error, torch_error)):
        assert f <= 2 * t + floor, f"tensor {i}: fused error {f:.3g} vs torch's {t:.3g}"


# --- every CPU capability ----------------------------------------------------------------------

CAPABILITY_CHECK = """
import torch
from rnnfused import ops, reference
torch.manual_seed(0)
assert torch.backends.cpu.get_cpu_capability() == {expected!r}, torch.backends.cpu.get_cpu_capability()
for dtype, tol in [(torch.float64, 1e-12), (torch.float32, 2e-5)]:
    for tq, tk, a in [(3, 37, 41), (1, 5, 3)]:
        q, k, v = torch.randn(2, tq, a, dtype=dtype), torch.randn(2, tk, a, dtype=dtype), torch.randn(a, dtype=dtype)
        values = torch.randn(2, tk, 5, dtype=dtype)
        mask = torch.rand(2, tk) > 0.3
        mask[1] = False
        for t in (q, k, v, values):
            t.requires_grad_()
        for fused, ref, args in [(ops.additive_attention, reference.additive_attention, (q, k, v, values, mask)),
                                 (ops.dot_attention, reference.dot_attention, (q, k, values, mask))]:
            out, ref_out = fused(*args), ref(*args)
            leaves = [t for t in args if t.requires_grad]
            grads = torch.autograd.grad(out[0].sum() + out[1].square().sum(), leaves)
            ref_grads = torch.autograd.grad(ref_out[0].sum() + ref_out[1].square().sum(), leaves)
            for x, y in zip([*out, *grads], [*ref_out, *ref_grads]):
                torch.testing.assert_close(x, y, atol=tol, rtol=tol)
print("ok")
"""


def _capabilities_below_this_cpu():
    order = ["DEFAULT", "AVX2", "AVX512"]
    current = torch.backends.cpu.get_cpu_capability()
    return order[:order.index(current)] if current in order else []


@pytest.mark.parametrize("capability", ["DEFAULT", "AVX2"])
def test_cpu_capability_kernels(capability):
    """The kernels of the lower capabilities (attention_kernels{,_avx2}.cpp) are what other CPUs
    run: check them in a process where ATen is told to use them. (This machine's own capability
    runs in every other test.)"""
    if capability not in _capabilities_below_this_cpu():
        pytest.skip(f"this CPU runs {torch.backends.cpu.get_cpu_capability()}")
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability.lower(),
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(rnnfused.__file__)),
                                           os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", CAPABILITY_CHECK.format(expected=capability)],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


# --- modules -----------------------------------------------------------------------------------

@pytest.mark.parametrize("one_step", [True, False], ids=["step", "block"])
@pytest.mark.parametrize("use_lengths", [True, False], ids=["lengths", "mask"])
def test_bahdanau_module(device, one_step, use_lengths):
    attn = rnnfused.BahdanauAttention(7, 5, 6).to(device=device, dtype=torch.float64)
    query = rand(B, 7, device=device) if one_step else rand(B, TQ, 7, device=device)
    keys, values = rand(B, TK, 5, device=device), rand(B, TK, DV, device=device)
    lengths = torch.tensor([TK, 3, 0])
    mask = torch.arange(TK)[None, :] < lengths[:, None]
    kwargs = dict(lengths=lengths) if use_lengths else dict(mask=mask.to(device))

    def fused(query, keys, values):
        return attn(query, keys, values, **kwargs)

    def formula(query, keys, values):
        q = query.unsqueeze(1) if one_step else query
        scores = torch.tanh(attn.query_proj(q)[:, :, None] + attn.key_proj(keys)[:, None]) @ attn.v
        weights = reference.masked_softmax(scores, mask.to(device))
        context = weights @ values
        return (context.squeeze(1), weights.squeeze(1)) if one_step else (context, weights)

    args = (query, keys, values)
    got = outputs_and_grads(fused, args)
    expected = outputs_and_grads(formula, args)
    assert_all_close(got[0] + got[1], expected[0] + expected[1], atol=1e-12, rtol=1e-10)
    shape = (B,) if one_step else (B, TQ)
    assert got[0][0].shape == (*shape, DV) and got[0][1].shape == (*shape, TK)
    # Parameter gradients too, and precomputed keys give the same result.
    params = list(attn.parameters())
    loss = sum(o.sum() for o in fused(*args))
    memory = attn.precompute_keys(keys, values, **kwargs)
    loss_memory = sum(o.sum() for o in attn(query, memory))
    torch.testing.assert_close(loss_memory, loss)
    loss_formula = sum(o.sum() for o in formula(*args))
    for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(loss_formula, params)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("score", ["dot", "general", "concat"])
def test_luong_module(device, score):
    query_size = 5 if score == "dot" else 7
    attn = rnnfused.LuongAttention(query_size, 5, score=score).to(device=device, dtype=torch.float64)
    query, keys = rand(B, TQ, query_size, device=device), rand(B, TK, 5, device=device)
    mask = make_mask("all_masked_row", device=device)

    def formula(query, keys):
        if score == "dot":
            scores = query @ keys.transpose(1, 2)
        elif score == "general":  # h_t^T W_a h_s
            scores = query @ attn.linear_in.weight.t() @ keys.transpose(1, 2)
        else:  # v . tanh(W_a [h_t; h_s]) for every pair, materialised
            pairs = torch.cat([query[:, :, None].expand(-1, -1, TK, -1),
                               keys[:, None].expand(-1, TQ, -1, -1)], dim=-1)
            scores = torch.tanh(pairs @ attn.linear.weight.t()) @ attn.v
        weights = reference.masked_softmax(scores, mask)
        return weights @ keys, weights

    params = list(attn.parameters())
    got = outputs_and_grads(lambda q, k, *p: attn(q, k, mask=mask), (query, keys, *params))
    expected = outputs_and_grads(lambda q, k, *p: formula(q, k), (query, keys, *params))
    assert_all_close(got[0] + got[1], expected[0] + expected[1], atol=1e-12, rtol=1e-10)


def onmt_global_attention(module, source, memory_bank, src_len):
    """OpenNMT-py's GlobalAttention.forward (softmax, no coverage), restated from its equations
    with module's parameters: score, sequence mask, softmax, c = align @ H, linear_out([c; q]),
    tanh for dot / general; one-step queries squeezed, multi-step ones batch-major."""
    one_step = source.dim() == 2
    h_t = source.unsqueeze(1) if one_step else source
    h_s = memory_bank
    if module.attn_type == "dot":
        align = h_t @ h_s.transpose(1, 2)
    elif module.attn_type == "general":
        align = F.linear(h_t, module.linear_in.weight) @ h_s.transpose(1, 2)
    else:
        wq = F.linear(h_t, module.linear_query.weight, module.linear_query.bias)[:, :, None, :]
        uh = F.linear(h_s, module.linear_context.weight)[:, None, :, :]
        align = F.linear(torch.tanh(wq + uh), module.v.weight).squeeze(-1)
    if src_len is not None:
        valid = torch.arange(h_s.shape[1], device=h_s.device)[None, :] < src_len.to(h_s.device)[:, None]
        align = align.masked_fill(~valid[:, None, :], float("-inf"))
    align_vectors = torch.softmax(align, dim=-1)
    c = align_vectors @ h_s
    attn_h = F.linear(torch.cat([c, h_t], dim=-1), module.linear_out.weight, module.linear_out.bias)
    if module.attn_type in ("dot", "general"):
        attn_h = torch.tanh(attn_h)
    if one_step:
        return attn_h.squeeze(1), align_vectors.squeeze(1)
    return attn_h, align_vectors


ONMT_PARAMETERS = {
    "dot": ["linear_out.weight"],
    "general": ["linear_in.weight", "linear_out.weight"],
    "mlp": ["linear_context.weight", "linear_query.weight", "linear_query.bias", "v.weight",
            "linear_out.weight", "linear_out.bias"],
}


@pytest.mark.parametrize("attn_type", ["dot", "general", "mlp"])
@pytest.mark.parametrize("one_step", [True, False], ids=["step", "block"])
def test_global_attention_matches_opennmt(device, attn_type, one_step):
    dim = 6
    module = rnnfused.GlobalAttention(dim, attn_type=attn_type).to(device=device, dtype=torch.float64)
    assert sorted(module.state_dict()) == sorted(ONMT_PARAMETERS[attn_type])
    source = rand(B, dim, device=device) if one_step else rand(B, TQ, dim, device=device)
    memory_bank = rand(B, TK, dim, device=device)
    src_len = torch.tensor([TK, 5, 1], device=device)
    params = list(module.parameters())
    got = outputs_and_grads(lambda s, m, *p: module(s, m, src_len), (source, memory_bank, *params))
    expected = outputs_and_grads(lambda s, m, *p: onmt_global_attention(module, s, m, src_len),
                                 (source, memory_bank, *params))
    assert_all_close(got[0] + got[1], expected[0] + expected[1], atol=1e-12, rtol=1e-10)


def test_global_attention_rejects_what_it_does_not_implement():
    with pytest.raises(ValueError, match="coverage"):
        rnnfused.GlobalAttention(4, coverage=True)
    with pytest.raises(ValueError, match="sparsemax"):
        rnnfused.GlobalAttention(4, attn_func="sparsemax")
    with pytest.raises(ValueError, match="attn_type"):
        rnnfused.GlobalAttention(4, attn_type="bilinear")


@pytest.mark.parametrize("score", ["general", "additive"])
def test_attention_lstm_cell_matches_composite_loop(device, score):
    """Five decoder steps against nn.LSTMCell + attention + W_c written from the formulas."""
    input_size, hidden, memory_size, steps = 4, 6, 5, 5
    cell = rnnfused.AttentionLSTMCell(input_size, hidden, memory_size, score=score).to(
        device=device, dtype=torch.float64)
    lstm = nn.LSTMCell(input_size + hidden, hidden).to(device=device, dtype=torch.float64)
    lstm.load_state_dict(cell.lstm.state_dict())
    attn = cell.attention
    xs, memory = rand(steps, B, input_size, device=device), rand(B, TK, memory_size, device=device)
    lengths = torch.tensor([TK, 4, 1])
    mask = (torch.arange(TK)[None, :] < lengths[:, None]).to(device)

    def composite(xs, memory, *params):
        h = c = feed = torch.zeros(B, hidden, device=device, dtype=torch.float64)
        outputs = []
        for x in xs:
            h, c = lstm(torch.cat([x, feed], 1), (h, c))
            if score == "general":
                scores = (attn.linear_in(h)[:, None, :] @ memory.transpose(1, 2)).squeeze(1)
            else:
                scores = torch.tanh(attn.query_proj(h)[:, None] + attn.key_proj(memory)) @ attn.v
            weights = reference.masked_softmax(scores[:, None], mask).squeeze(1)
            context = (weights[:, None] @ memory).squeeze(1)
            feed = torch.tanh(cell.linear_out(torch.cat([context, h], 1)))
            outputs += [feed, weights]
        return outputs + [h, c]

    def fused(xs, memory, *params):
        prepared = cell.precompute_memory(memory, lengths=lengths)
        hx, attn_h, outputs = None, None, []
        for x in xs:
            attn_h, hx, weights = cell(x, prepared, hx, attn_h)
            outputs += [attn_h, weights]
        return outputs + list(hx)

    own = [p for n, p in cell.named_parameters() if not n.startswith("lstm.")]
    got = outputs_and_grads(fused, (xs, memory, *cell.lstm.parameters(), *own))
    expected = outputs_and_grads(composite, (xs, memory, *lstm.parameters(), *own))
    assert_all_close(got[0] + got[1], expected[0] + expected[1], atol=1e-12, rtol=1e-10)


def test_module_bad_input():
    attn = rnnfused.BahdanauAttention(4, 3, 5)
    keys = torch.randn(2, 6, 3)
    with pytest.raises(ValueError, match="either mask or lengths"):
        attn(torch.randn(2, 4), keys, mask=torch.ones(2, 6, dtype=torch.bool), lengths=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="query_size=4"):
        attn(torch.randn(2, 5), keys)
    with pytest.raises(ValueError, match="key_size=3"):
        attn(torch.randn(2, 4), torch.randn(2, 6, 4))
    with pytest.raises(ValueError, match="mask must be a bool"):
        attn(torch.randn(2, 4), keys, mask=torch.ones(2, 6))
    with pytest.raises(ValueError, match="lengths must have shape"):
        attn(torch.randn(2, 4), keys, lengths=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="values must have shape"):
        attn(torch.randn(2, 4), keys, torch.randn(2, 5, 3))
    memory = attn.precompute_keys(keys)
    with pytest.raises(ValueError, match="precompute_keys"):
        attn(torch.randn(2, 4), memory, lengths=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="needs query_size == key_size"):
        rnnfused.LuongAttention(4, 3, score="dot")
    with pytest.raises(ValueError, match="score must be"):
        rnnfused.LuongAttention(4, 3, score="bilinear")


OP_ERRORS = {  # (argument index to replace, replacement, message)
    "query_proj 2-D": (0, torch.randn(2, 4), "query_proj must be 3-D"),
    "integer query_proj": (0, torch.ones(2, 3, 4, dtype=torch.long), "query_proj must be float32"),
    "key_proj batch": (1, torch.randn(3, 5, 4), "key_proj has batch size 3"),
    "key_proj attn_size": (1, torch.randn(2, 5, 6), "key_proj has feature size 6"),
    "key_proj dtype": (1, torch.randn(2, 5, 4, dtype=torch.float64), "key_proj has dtype Double"),
    "v size": (2, torch.randn(5), "v has attn_size 5"),
    "v 2-D": (2, torch.randn(4, 1), "v must be 1-D"),
    "values length": (3, torch.randn(2, 6, 7), "values has length 6"),
    "mask dtype": (4, torch.ones(2, 5), "mask must be a bool tensor"),
    "mask shape": (4, torch.ones(2, 6, dtype=torch.bool), r"mask must have shape \(B, Tk\)"),
}


@pytest.mark.parametrize("case", list(OP_ERRORS))
def test_op_bad_input_names_the_argument(case):
    args = [torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(4), torch.randn(2, 5, 7),
            torch.ones(2, 5, dtype=torch.bool)]
    index, replacement, message = OP_ERRORS[case]
    args[index] = replacement
    with pytest.raises(RuntimeError, match=message):
        ops.additive_attention(*args)


def test_dot_op_bad_input_names_the_argument():
    with pytest.raises(RuntimeError, match="keys has feature size 5"):
        ops.dot_attention(torch.randn(2, 3, 4), torch.randn(2, 6, 5), torch.randn(2, 6, 7))
    with pytest.raises(RuntimeError, match="grad_context must have shape"):
        torch.ops.rnnfused.dot_attention_backward(torch.randn(2, 3, 6), None, torch.randn(2, 3, 4),
                                                  torch.randn(2, 6, 4), torch.randn(2, 6, 7),
                                                  torch.rand(2, 3, 6), 1.0)


# --- torch.compile -----------------------------------------------------------------------------

class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.bahdanau = rnnfused.BahdanauAttention(5, 4, 6)
        self.luong = rnnfused.LuongAttention(5, 4, score="general")

    def forward(self, query, keys, lengths):
        c1, w1 = self.bahdanau(query, keys, lengths=lengths)
        c2, w2 = self.luong(query, keys, lengths=lengths)
        return (c1 * c2).sum() + (w1 * w2).sum()


def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    model = Decoder().double()
    compiled = torch.compile(model, fullgraph=True)
    query, keys = rand(2, 3, 5), rand(2, 7, 4)
    lengths = torch.tensor([7, 0])
    eager = model(query, keys, lengths)
    eager_grads = torch.autograd.grad(eager, [query, keys, *model.parameters()])
    result = compiled(query, keys, lengths)
    compiled_grads = torch.autograd.grad(result, [query, keys, *model.parameters()])
    torch.testing.assert_close(result, eager)
    assert_all_close(list(compiled_grads), list(eager_grads))


# --- CUDA only ---------------------------------------------------------------------------------

needs_gpu = pytest.mark.skipif("cuda" not in available_devices(), reason="needs a GPU and a CUDA build of rnnfused")


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_cuda_against_float64_cpu(dtype):
    """Bigger shapes than the parity tests (several warps per row, A > block size)."""
    q, k, v, values = (torch.randn(5, 9, 300, dtype=torch.float64), torch.randn(5, 70, 300, dtype=torch.float64),
                       torch.randn(300, dtype=torch.float64) / 10, torch.randn(5, 70, 33, dtype=torch.float64))
    mask = torch.rand(5, 70) > 0.3
    mask[2] = False
    tol = {torch.float32: 1e-4, torch.bfloat16: 1e-1, torch.float16: 2e-2}[dtype]
    for fn, args in [(ops.additive_attention, (q, k, v, values, mask)), (ops.dot_attention, (q / 10, k, values, mask))]:
        truth = outputs_and_grads(fn, [a.requires_grad_() if a.is_floating_point() else a for a in args])
        cuda_args = [a.detach().to("cuda", dtype).requires_grad_() if a.is_floating_point() else a.cuda() for a in args]
        got = outputs_and_grads(fn, cuda_args)
        for a, b in zip(got[0] + got[1], truth[0] + truth[1]):
            torch.testing.assert_close(a.double().cpu(), b, atol=tol, rtol=tol)


@needs_gpu
def test_cuda_no_host_synchronisation():
    attn = rnnfused.BahdanauAttention(16, 8, 32).cuda()
    luong = rnnfused.LuongAttention(16, 8, score="general").cuda()
    query, keys = torch.randn(4, 5, 16, device="cuda", requires_grad=True), torch.randn(4, 11, 8, device="cuda")
    lengths = torch.tensor([11, 3, 0, 1], device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for module in (attn, luong):
            context, weights = module(query, keys, lengths=lengths)
            (context.sum() + weights.sum()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
