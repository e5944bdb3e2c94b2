"""Attention benchmark: rnnfused against the composite eager PyTorch a user would write, and that
composite under torch.compile, in one process, on the CPU (or the GPU with --device cuda).

    python benchmarks/bench_attention.py [--quick] [--device cpu|cuda] [--threads N] [--json PATH]
                                         [--no-compile]

Cases (float32, B=32, Tk=200, A = D = 256, a quarter of the keys padding):
- Bahdanau: score = v . tanh(W_q q + b + W_k k); Luong dot: q . k; Luong general: (W_a q) . k.
  Tq = 1 (one decoder step) and Tq = 50 (teacher forcing). The keys are projected beforehand on
  both sides (rnnfused.AttentionMemory from precompute_keys / a cached W_k k), as a decoder does
  once per source sequence: the rows time the attention itself, query projection included.
- Decoder: 50 steps of a Luong input-feeding decoder (LSTMCell over [x; h~], attention, h~ =
  tanh(W_c [c; h])), rnnfused.AttentionLSTMCell against nn.LSTMCell + composite attention,
  memory preparation included.
- pass: "fwd" (no grad) and "fwd+bwd" (forward, then gradients of every input and parameter).

Times are medians over repeats after warm-up, the rivals taking turns call by call; ratios are
eager / rnnfused and compiled / rnnfused (> 1 = rnnfused faster). Memory, measured for rnnfused and eager (not compiled):
- "peak MB": the peak of tensor memory allocated during the call above what was allocated when
  it started: on the CPU from torch.profiler's allocation records (profile_memory=True: every
  allocation and free of the CPU allocator, with its running total), on the GPU from
  torch.cuda.max_memory_allocated.
- "saved MB": bytes of the tensors autograd saves for backward (saved_tensors_hooks), not
  counting inputs and parameters, which exist anyway.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rnnfused  # noqa: E402
from rnnfused import AttentionMemory  # noqa: E402

B, TK, SIZE, PAD = 32, 200, 256, 50


# ---------------------------------------------------------------------------------------------
# Composite eager implementations (what one writes without rnnfused), on the same parameters.

def masked_softmax(scores, mask):
    return torch.softmax(scores.masked_fill(~mask[:, None, :], float("-inf")), dim=-1)


def composite_bahdanau(attn: rnnfused.BahdanauAttention, query, key_proj, values, mask):
    scores = torch.tanh(attn.query_proj(query)[:, :, None, :] + key_proj[:, None, :, :]) @ attn.v
    weights = masked_softmax(scores, mask)
    return weights @ values, weights


def composite_luong(attn: rnnfused.LuongAttention, query, keys, values, mask):
    if attn.score == "general":
        query = attn.linear_in(query)
    weights = masked_softmax(query @ keys.transpose(1, 2), mask)
    return weights @ values, weights


def fused_attention(attn, query, keys, values, mask):
    return attn(query, AttentionMemory(keys, values, mask))


class CompositeDecoder(nn.Module):
    """nn.LSTMCell + composite attention + W_c, with AttentionLSTMCell's parameters."""

    def __init__(self, cell: rnnfused.AttentionLSTMCell):
        super().__init__()
        self.cell = cell
        self.lstm = nn.LSTMCell(cell.input_size + cell.hidden_size, cell.hidden_size).to(
            cell.linear_out.weight.device)
        self.lstm.load_state_dict(cell.lstm.state_dict())

    def forward(self, xs, memory, mask):
        attn = self.cell.attention
        keys = attn.key_proj(memory) if isinstance(attn, rnnfused.BahdanauAttention) else memory
        h = c = feed = xs.new_zeros(xs.shape[1], self.cell.hidden_size)
        outputs = []
        for x in xs:
            h, c = self.lstm(torch.cat([x, feed], 1), (h, c))
            if isinstance(attn, rnnfused.BahdanauAttention):
                context, _ = composite_bahdanau(attn, h[:, None], keys, memory, mask)
            else:
                context, _ = composite_luong(attn, h[:, None], keys, memory, mask)
            feed = torch.tanh(self.cell.linear_out(torch.cat([context[:, 0], h], 1)))
            outputs.append(feed)
        return torch.stack(outputs)


def fused_decoder(cell, xs, memory, mask):
    prepared = cell.precompute_memory(memory, mask=mask)
    hx = feed = None
    outputs = []
    for x in xs:
        feed, hx, _ = cell(x, prepared, hx, feed)
        outputs.append(feed)
    return torch.stack(outputs)


# ---------------------------------------------------------------------------------------------
# Measurement.

def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_ms(fns, device, repeats, warmup=2):
    """Median milliseconds of each function in fns. The functions take turns, call by call, so
    that a machine whose load changes (other jobs on a shared host) slows them alike and their
    ratios stay meaningful."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    synchronize(device)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, samples in zip(fns, times):
            start = time.perf_counter()
            fn()
            synchronize(device)
            samples.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(samples) for samples in times]


def _allocation_records(prof):
    """The profiler's raw allocation records (alloc_size < 0 for frees, total_allocated the
    running total), in time order."""
    records, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if type(event.extra_fields).__name__ == "_ExtraFields_Allocation":
            records.append((event.start_time_ns, event.extra_fields))
    return [fields for _, fields in sorted(records, key=lambda r: r[0])]


def peak_mb(fn, device):
    """Peak memory of one call above what was allocated when it started (see the docstring)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    try:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        records = _allocation_records(prof)
    except Exception:  # noqa: BLE001  (an experimental profiler API: report "—" if it moved)
        return float("nan")
    if not records:
        return 0.0
    start = records[0].total_allocated - records[0].alloc_size
    return max(0, max(r.total_allocated for r in records) - start) / 2**20


def saved_mb(fn, exclude):
    """MB of the distinct storages autograd saves while fn() runs, except those of `exclude`."""
    known = {t.untyped_storage().data_ptr() for t in exclude}
    saved = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in known:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(saved.values()) / 2**20


def no_grad_call(fn):
    """An inference call: fn() without autograd."""
    def run():
        with torch.no_grad():
            return fn()
    return run


def forward_backward(fn, leaves):
    """A training step's work: fn(), then the gradients of every leaf."""
    def run():
        outputs = fn()
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        loss = sum(o.float().square().mean() for o in outputs)
        torch.autograd.grad(loss, leaves, allow_unused=True)  # e.g. key_proj: keys come projected
    return run


def runner(mode, leaves):
    """The call that a pass times: no_grad_call for "fwd", forward_backward for "fwd+bwd"."""
    return no_grad_call if mode == "fwd" else (lambda fn: forward_backward(fn, leaves))


def try_compile(fn, wrap, enabled):
    """(wrap(torch.compile(fn)) compiled and warmed up, note), or (None, why not)."""
    if not enabled:
        return None, "compile skipped"
    try:
        torch._dynamo.reset()  # a fresh cache per rival: the rows reuse one code object
        compiled = wrap(torch.compile(fn, dynamic=False))
        compiled()  # compiles
        return compiled, ""
    except Exception as error:  # noqa: BLE001  (report and go on: compile is an optional rival)
        return None, f"compile failed: {type(error).__name__}"


def measure(row, fused, eager, fused_leaves, eager_leaves, device, repeats, compile_enabled):
    """Fills row with the times and memory of one pass (row["mode"])."""
    fused_run, eager_run = runner(row["mode"], fused_leaves)(fused), runner(row["mode"], eager_leaves)(eager)
    compiled_run, row["note"] = try_compile(eager, runner(row["mode"], eager_leaves), compile_enabled)
    rivals = [fused_run, eager_run] + ([compiled_run] if compiled_run is not None else [])
    times = median_ms(rivals, device, repeats)
    row["fused_ms"], row["eager_ms"] = times[0], times[1]
    row["compiled_ms"] = times[2] if compiled_run is not None else float("nan")
    row["fused_peak_mb"] = peak_mb(fused_run, device)
    row["eager_peak_mb"] = peak_mb(eager_run, device)
    if row["mode"] == "fwd+bwd":
        row["fused_saved_mb"] = saved_mb(fused, fused_leaves)
        row["eager_saved_mb"] = saved_mb(eager, eager_leaves)
    print(format_row(row), flush=True)
    return row


# ---------------------------------------------------------------------------------------------

def attention_rows(device, repeats, compile_enabled, query_lens):
    rows = []
    gen = torch.Generator().manual_seed(0)
    mask = torch.ones(B, TK, dtype=torch.bool)
    mask[:, TK - PAD:] = False  # the last quarter is padding
    mask = mask.to(device)
    cases = [
        ("Bahdanau", rnnfused.BahdanauAttention(SIZE, SIZE, SIZE), composite_bahdanau),
        ("Luong dot", rnnfused.LuongAttention(SIZE, SIZE, score="dot"), composite_luong),
        ("Luong general", rnnfused.LuongAttention(SIZE, SIZE, score="general"), composite_luong),
    ]
    for name, attn, composite in cases:
        attn = attn.to(device)
        for tq in query_lens:
            query = torch.randn(B, tq, SIZE, generator=gen).to(device).requires_grad_()
            keys = torch.randn(B, TK, SIZE, generator=gen).to(device).requires_grad_()  # projected keys
            values = torch.randn(B, TK, SIZE, generator=gen).to(device).requires_grad_()
            leaves = [query, keys, values, *attn.parameters()]
            args = (attn, query, keys, values, mask)
            fused = lambda: fused_attention(*args)  # noqa: E731
            eager = lambda: composite(*args)  # noqa: E731
            for mode in ("fwd", "fwd+bwd"):
                rows.append(measure(dict(case=name, tq=tq, mode=mode), fused, eager, leaves, leaves,
                                    device, repeats, compile_enabled))
    return rows


def decoder_rows(device, repeats, compile_enabled, steps):
    rows = []
    gen = torch.Generator().manual_seed(1)
    mask = torch.ones(B, TK, dtype=torch.bool)
    mask[:, TK - PAD:] = False
    mask = mask.to(device)
    for score in ("general", "additive"):
        cell = rnnfused.AttentionLSTMCell(SIZE, SIZE, SIZE, score=score).to(device)
        composite = CompositeDecoder(cell)
        xs = torch.randn(steps, B, SIZE, generator=gen).to(device).requires_grad_()
        memory = torch.randn(B, TK, SIZE, generator=gen).to(device).requires_grad_()
        leaves = [xs, memory, *cell.parameters()]
        composite_leaves = [xs, memory, *composite.lstm.parameters(),
                            *(p for n, p in cell.named_parameters() if not n.startswith("lstm."))]
        fused = lambda: fused_decoder(cell, xs, memory, mask)  # noqa: E731
        eager = lambda: composite(xs, memory, mask)  # noqa: E731
        for mode in ("fwd", "fwd+bwd"):
            row = dict(case=f"Decoder, {steps} steps ({score})", tq=1, mode=mode)
            # Compiling a 50-step Python loop would time the compiler's unrolling, not a rival.
            rows.append(measure(row, fused, eager, leaves, composite_leaves, device, repeats, False))
            row["note"] = "decoder rows: no compiled rival"
    return rows


def fmt(x, digits=2):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def ratio(a, b):
    return float("nan") if not b or math.isnan(a) or math.isnan(b) else a / b


HEADER = ("| case | Tq | pass | rnnfused ms | eager ms | compiled ms | × eager | × compiled "
          "| peak MB fused / eager | saved MB fused / eager |")


def format_row(r):
    saved = (f"{fmt(r['fused_saved_mb'], 1)} / {fmt(r['eager_saved_mb'], 1)}"
             if "fused_saved_mb" in r else "")
    return (f"| {r['case']} | {r['tq']} | {r['mode']} | {fmt(r['fused_ms'])} | {fmt(r['eager_ms'])} "
            f"| {fmt(r['compiled_ms'])} | {fmt(ratio(r['eager_ms'], r['fused_ms']))} "
            f"| {fmt(ratio(r['compiled_ms'], r['fused_ms']))} "
            f"| {fmt(r['fused_peak_mb'], 1)} / {fmt(r['eager_peak_mb'], 1)} | {saved} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, Tq=50 only, 10 decoder steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rival")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = 5 if args.quick else 11
    query_lens = [50] if args.quick else [1, 50]
    steps = 10 if args.quick else 50

    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    print(f"torch {torch.__version__}, {device}, threads {torch.get_num_threads()}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, rnnfused CUDA {rnnfused.cuda_built()}"
          + (f", {malloc}" if malloc else ""))
    print(HEADER, flush=True)
    rows = attention_rows(device, repeats, not args.no_compile, query_lens)
    rows += decoder_rows(device, repeats, not args.no_compile, steps)

    notes = sorted({r["note"] for r in rows if r["note"]})
    print("\n" + HEADER)
    print("|---" * (HEADER.count("|") - 1) + "|")
    for r in rows:
        print(format_row(r))
    if notes:
        print("\n" + "; ".join(notes))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)


if __name__ == "__main__":
    main()
