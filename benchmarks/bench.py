"""CPU benchmark: rnnfused against torch.nn (oneDNN on) and torch's native kernels (oneDNN off).

    python benchmarks/bench.py [--quick] [--out DIR] [--rows NAME,...]

Every row builds one torch.nn module, copies its weights into the rnnfused twin
(load_state_dict), and times three contenders in this one process on the same inputs:

    rnnfused       the rnnfused module, default torch settings
    torch.nn       the torch.nn module, default torch settings (oneDNN RNN kernels where torch
                   picks them: dense float32 / bfloat16 LSTM and RNN; proj_size, packed input,
                   float64 and the cells take torch's native path anyway)
    native         the same torch.nn module under torch.backends.mkldnn.flags(enabled=False)

Two modes per row: "fwd" (forward under torch.no_grad(), so rnnfused keeps no workspace) and
"fwd+bwd" (loss = output.sum() + h_n.sum(), backward into the input and every parameter).
Each contender is warmed up, then the contenders' repeats are interleaved round-robin so that
machine noise hits all of them alike, each round in an order that lets every contender follow
every contender equally often (see balanced_orders); the median is reported. Ratios > 1 mean
rnnfused is faster.

Outputs: a markdown table on stdout (printed last), and bench_cpu.{md,json,png} under --out.
Never collected by pytest (no test_ prefix, lives outside tests/).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnfused

# torch.backends.mkldnn.flags() warns about TF32 on Intel GPUs every time it is entered, and
# torch.nn.LSTM warns that proj_size has no oneDNN kernel (that row's torch.nn is native anyway).
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")

REPO = Path(__file__).resolve().parent.parent
DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16"}
DTYPE_BY_NAME = {name: dtype for dtype, name in DTYPE_NAMES.items()}


# ---------------------------------------------------------------------------------------------
# What to run.

@dataclass(frozen=True)
class Row:
    """One benchmark case. Sizes follow torch.nn: T steps, B batch, I input, H hidden."""
    name: str
    kind: str                      # "lstm" | "rnn" | "lstm_cell"
    T: int = 100
    B: int = 16
    H: int = 256
    I: int | None = None           # None: I = H
    proj_size: int = 0
    num_layers: int = 1
    bidirectional: bool = False
    packed: bool = False           # lengths uniform in [T // 10, T], fixed seed, unsorted
    dtype: torch.dtype = torch.float32
    label: str = ""

    @property
    def input_size(self) -> int:
        return self.I if self.I is not None else self.H


ROWS = [
    Row("lstm_stream", "lstm", B=1, H=128, label="LSTM streaming B=1 H=128"),
    Row("lstm_b16", "lstm", B=16, H=256, label="LSTM B=16 H=256"),
    Row("lstm_b64", "lstm", B=64, H=512, label="LSTM B=64 H=512"),
    Row("lstm_packed", "lstm", B=16, H=256, packed=True, label="LSTM packed B=16 H=256"),
    Row("lstm_proj", "lstm", B=16, H=256, proj_size=128, label="LSTM proj=128 B=16 H=256"),
    Row("lstm_f64", "lstm", B=16, H=256, dtype=torch.float64, label="LSTM float64 B=16 H=256"),
    Row("lstm_cell", "lstm_cell", B=16, H=256, label="LSTMCell loop B=16 H=256"),
    Row("rnn_bi2", "rnn", B=16, H=256, num_layers=2, bidirectional=True,
        label="RNN tanh 2L bidir B=16 H=256"),
    Row("lstm_bf16", "lstm", B=16, H=256, dtype=torch.bfloat16, label="LSTM bfloat16 B=16 H=256"),
    # A hidden size that is no multiple of the SIMD width or of the weight panels: masked vectors.
    Row("lstm_h37", "lstm", B=16, H=37, label="LSTM B=16 H=37"),
]

MODES = ("fwd", "fwd+bwd")


@dataclass(frozen=True)
class Settings:
    """How hard to time: warm-up calls, repeat bounds, and the seconds spent per row and mode."""
    T: int | None        # None: each row's own T
    warmup: int
    min_repeats: int
    max_repeats: int
    budget_s: float


FULL = Settings(T=None, warmup=2, min_repeats=5, max_repeats=50, budget_s=14.0)
QUICK = Settings(T=20, warmup=1, min_repeats=3, max_repeats=10, budget_s=0.8)


# ---------------------------------------------------------------------------------------------
# FLOPs, counted analytically (GEMMs only; the pointwise gate math is ignored).
#
# Per layer and direction, with N = T*B rows (or sum(lengths) when packed), G gates (4 for the
# LSTM, 1 for the vanilla RNN), input width I_l (I for layer 0, D*P above it), state width P
# (proj_size when set, else H):
#     forward  = 2 * N * G*H * (I_l + P)        input and recurrent GEMMs
#              + 2 * N * H * P                  the projection h_t = W_hr h_t, when proj_size > 0
#     backward ~ 2 * forward                    (grad w.r.t. activations + grad w.r.t. weights)
# so fwd+bwd ~ 3 * forward. The LSTMCell loop is one layer-direction with N = T*B.

def forward_flops(row: Row, rows_n: int) -> float:
    gates = 4 if row.kind in ("lstm", "lstm_cell") else 1
    state = row.proj_size or row.H
    directions = 2 if row.bidirectional else 1
    total = 0.0
    for layer in range(row.num_layers):
        width_in = row.input_size if layer == 0 else directions * state
        per_direction = 2.0 * rows_n * gates * row.H * (width_in + state)
        if row.proj_size:
            per_direction += 2.0 * rows_n * row.H * row.proj_size
        total += directions * per_direction
    return total


def mode_flops(row: Row, rows_n: int, mode: str) -> float:
    return forward_flops(row, rows_n) * (1 if mode == "fwd" else 3)


# ---------------------------------------------------------------------------------------------
# Contenders and inputs.

@dataclass
class Contender:
    name: str
    module: nn.Module
    onednn: bool              # False: run under torch.backends.mkldnn.flags(enabled=False)

    def context(self):
        return contextlib.nullcontext() if self.onednn else torch.backends.mkldnn.flags(enabled=False)


def build_modules(row: Row) -> tuple[nn.Module, nn.Module]:
    """(torch.nn module, rnnfused module) with identical weights, in row.dtype."""
    if row.kind == "lstm":
        kwargs = dict(input_size=row.input_size, hidden_size=row.H, num_layers=row.num_layers,
                      bidirectional=row.bidirectional, proj_size=row.proj_size)
        torch_cls, fused_cls = nn.LSTM, rnnfused.LSTM
    elif row.kind == "rnn":
        kwargs = dict(input_size=row.input_size, hidden_size=row.H, num_layers=row.num_layers,
                      bidirectional=row.bidirectional, nonlinearity="tanh")
        torch_cls, fused_cls = nn.RNN, rnnfused.RNN
    elif row.kind == "lstm_cell":
        kwargs = dict(input_size=row.input_size, hidden_size=row.H)
        torch_cls, fused_cls = nn.LSTMCell, rnnfused.LSTMCell
    else:
        raise ValueError(f"unknown row kind {row.kind!r}")
    torch.manual_seed(0)
    reference = torch_cls(**kwargs).to(row.dtype)
    fused = fused_cls(**kwargs).to(row.dtype)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def build_contenders(row: Row) -> list[Contender]:
    reference, fused = build_modules(row)
    return [Contender("rnnfused", fused, onednn=True),
            Contender("torch.nn", reference, onednn=True),
            Contender("native", reference, onednn=False)]


def make_input(row: Row, requires_grad: bool) -> tuple[Tensor | PackedSequence, Tensor, int]:
    """(module input, the leaf tensor gradients flow into, number of rows N for FLOPs).

    A packed input is packed once, then its data is re-wrapped as a fresh leaf so that every
    timed backward ends at the packed data (the pack itself is not part of the work timed).
    """
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(row.T, row.B, row.input_size, generator=generator).to(row.dtype)
    if not row.packed:
        return x.requires_grad_(requires_grad), x, row.T * row.B
    lengths = torch.randint(max(1, row.T // 10), row.T + 1, (row.B,), generator=generator)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    data = packed.data.detach().requires_grad_(requires_grad)
    rewrapped = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    return rewrapped, data, int(lengths.sum())


def run_module(row: Row, module: nn.Module, x) -> tuple[Tensor, Tensor]:
    """One forward pass -> (output, h_n) as plain tensors."""
    if row.kind == "lstm_cell":
        # The cell API is one step per call, so every contender loops over steps in Python.
        h = torch.zeros(row.B, row.H, dtype=row.dtype)
        c = torch.zeros_like(h)
        outputs = []
        for t in range(x.shape[0]):
            h, c = module(x[t], (h, c))
            outputs.append(h)
        return torch.stack(outputs), h
    output, h_n = module(x)
    if isinstance(h_n, tuple):
        h_n = h_n[0]
    if isinstance(output, PackedSequence):
        output = output.data
    return output, h_n


def make_step(row: Row, contender: Contender, mode: str, x, leaf: Tensor) -> Callable[[], None]:
    """The zero-argument call that is timed for one contender and mode."""
    module = contender.module
    params = list(module.parameters())

    if mode == "fwd":
        def step():
            with torch.no_grad():
                run_module(row, module, x)
    else:
        def step():
            leaf.grad = None
            for p in params:
                p.grad = None
            output, h_n = run_module(row, module, x)
            (output.sum() + h_n.sum()).backward()
    return step


# ---------------------------------------------------------------------------------------------
# Timing and memory.

def time_call(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def warm_up(contenders: list[Contender], steps: dict[str, Callable], settings: Settings) -> dict[str, float]:
    """settings.warmup calls each (one only when a call takes over a second); last call's time."""
    last = {}
    for contender in contenders:
        with contender.context():
            for _ in range(settings.warmup):
                last[contender.name] = time_call(steps[contender.name])
                if last[contender.name] > 1.0:
                    break
    return last


def balanced_orders(n: int, rounds: int) -> list[tuple[int, ...]]:
    """An order of n contenders for each of `rounds` rounds, such that every contender follows
    every contender (itself included, across rounds) about equally often.

    What ran just before a call changes its time: its caches, its idle cores. Measured on a
    2-core Xeon, a bfloat16 LSTM after torch's native bfloat16 LSTM: rnnfused +1.2 ms (2.2 ->
    3.4), oneDNN +0.5. A fixed rotation let one contender follow the slowest one in 2 rounds of
    3 and another in 1 of 3. Greedy: each round takes the order whose transitions (from the
    previous round's last contender on) have occurred least so far."""
    counts: dict[tuple[int, int], int] = {}
    previous: int | None = None
    orders = []
    for _ in range(rounds):
        def transitions(order: tuple[int, ...]) -> list[tuple[int, int]]:
            sequence = ((previous,) if previous is not None else ()) + order
            return list(zip(sequence[:-1], sequence[1:]))
        order = min(itertools.permutations(range(n)),
                    key=lambda o: sum(counts.get(t, 0) for t in transitions(o)))
        for t in transitions(order):
            counts[t] = counts.get(t, 0) + 1
        previous = order[-1]
        orders.append(order)
    return orders


def time_round_robin(contenders: list[Contender], steps: dict[str, Callable], repeats: int) -> dict[str, list[float]]:
    """repeats rounds; each round times every contender once, in balanced_orders."""
    times = {c.name: [] for c in contenders}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for order in balanced_orders(len(contenders), repeats):
            for index in order:
                contender = contenders[index]
                with contender.context():
                    times[contender.name].append(time_call(steps[contender.name]))
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def choose_repeats(warm_times: dict[str, float], settings: Settings) -> int:
    per_round = sum(warm_times.values()) or 1e-9
    return max(settings.min_repeats, min(settings.max_repeats, int(settings.budget_s / per_round)))


def saved_activation_bytes(contender: Contender, step: Callable[[], None], exclude: list[Tensor]) -> int:
    """Bytes of the tensors autograd keeps for backward during one fwd+bwd call.

    Counted with torch.autograd.graph.saved_tensors_hooks: every distinct storage saved for
    backward, leaving out the parameters and the input (they exist anyway). This is the memory
    that training adds per sequence (workspaces, gate activations, hidden states); it is not the
    process's peak RSS, which includes transient buffers, allocator caching and everything else.
    """
    seen = set()
    for t in exclude:
        seen.add(t.untyped_storage().data_ptr())
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        try:
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):      # opaque tensors without a storage
            key, size = id(t), t.numel() * t.element_size()
        if key not in seen:
            seen.add(key)
            total += size
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), contender.context():
        step()
    return total


def gemm_peak_gflops(dtype: torch.dtype, n: int = 1024, repeats: int = 7) -> float:
    """The machine's GEMM rate: the faster of an n x n x n torch.mm (ATen's BLAS: MKL, which runs a
    slow path on AMD CPUs) and oneDNN's matmul (torch._C._nn.mkldnn_linear on oneDNN tensors;
    float32 / bfloat16), median time of each. bfloat16 also counts the float32 rate: on a CPU
    without bfloat16 arithmetic (no AVX512-BF16 / AMX) a bfloat16 GEMM can at best be widened and
    run at the float32 rate, while torch.mm's bfloat16 path there is a slow emulation."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    calls = [lambda: torch.mm(a, b)]
    if dtype == torch.bfloat16:
        a32, b32 = a.float(), b.float()
        calls.append(lambda: torch.mm(a32, b32))
    if dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available():
        a_dnn, b_dnn = a.to_mkldnn(), b.to_mkldnn()
        calls.append(lambda: torch._C._nn.mkldnn_linear(a_dnn, b_dnn, None))
    best = 0.0
    for call in calls:
        try:
            call()
        except RuntimeError:     # oneDNN refuses bfloat16 on CPUs without AVX-512 / AVX-NE-CONVERT
            continue
        call()
        seconds = statistics.median(time_call(call) for _ in range(repeats))
        best = max(best, 2.0 * n ** 3 / seconds / 1e9)
    return best


def max_abs_diff_vs_torch(row: Row, contenders: list[Contender], x) -> float:
    """Sanity check that the contenders compute the same thing: max |rnnfused - torch.nn|."""
    with torch.no_grad():
        fused, reference = contenders[0].module, contenders[1].module
        out_f, h_f = run_module(row, fused, x)
        out_r, h_r = run_module(row, reference, x)
        return max((out_f - out_r).abs().max().item(), (h_f - h_r).abs().max().item())


# ---------------------------------------------------------------------------------------------
# One row.

def bench_row(row: Row, settings: Settings, log: Callable[[str], None]) -> list[dict]:
    contenders = build_contenders(row)
    results = []
    for mode in MODES:
        x, leaf, rows_n = make_input(row, requires_grad=(mode == "fwd+bwd"))
        steps = {c.name: make_step(row, c, mode, x, leaf) for c in contenders}
        result = dict(row=row.name, label=row.label, mode=mode, dtype=DTYPE_NAMES[row.dtype],
                      T=row.T, B=row.B, H=row.H, I=row.input_size, rows_N=rows_n,
                      flops=mode_flops(row, rows_n, mode), median_ms={}, errors={})
        live = []
        for contender in contenders:          # a contender that raises is reported, not timed
            try:
                with contender.context():
                    steps[contender.name]()
                live.append(contender)
            except Exception as exc:          # noqa: BLE001 - report whatever the module raised
                result["errors"][contender.name] = f"{type(exc).__name__}: {exc}"
                log(f"  {contender.name} raised on {row.name} {mode}:\n" + traceback.format_exc())
        if live:
            warm = warm_up(live, steps, settings)
            repeats = choose_repeats(warm, settings)
            times = time_round_robin(live, steps, repeats)
            result["repeats"] = repeats
            result["median_ms"] = {name: 1e3 * statistics.median(ts) for name, ts in times.items()}
            result["min_max_ms"] = {name: [1e3 * min(ts), 1e3 * max(ts)] for name, ts in times.items()}
        if mode == "fwd+bwd":
            result["saved_mib"] = {
                c.name: saved_activation_bytes(c, steps[c.name], [leaf, *c.module.parameters()]) / 2**20
                for c in live}
        elif "rnnfused" not in result["errors"] and "torch.nn" not in result["errors"]:
            result["max_abs_diff_vs_torch_nn"] = max_abs_diff_vs_torch(row, contenders, x)
        results.append(result)
        log(f"  {mode:8s} " + "  ".join(f"{k} {v:.2f} ms" for k, v in result["median_ms"].items())
            + f"  ({result.get('repeats', 0)} repeats)")
    return results


def fill_derived(result: dict, peaks: dict[str, float]) -> None:
    """Ratios (torch time / rnnfused time), rnnfused GFLOP/s and its fraction of the GEMM peak."""
    ms = result["median_ms"]
    fused = ms.get("rnnfused")
    result["ratio_vs_torch_nn"] = ms["torch.nn"] / fused if fused and "torch.nn" in ms else None
    result["ratio_vs_native"] = ms["native"] / fused if fused and "native" in ms else None
    # The same ratio from the fastest repeats: far from the median ratio means a noisy row.
    best = {name: low for name, (low, _) in result.get("min_max_ms", {}).items()}
    result["ratio_vs_torch_nn_of_min"] = (best["torch.nn"] / best["rnnfused"]
                                          if "rnnfused" in best and "torch.nn" in best else None)
    result["gflops"] = result["flops"] / (fused * 1e-3) / 1e9 if fused else None
    peak = peaks.get(result["dtype"])
    result["peak_fraction"] = result["gflops"] / peak if result["gflops"] and peak else None


# ---------------------------------------------------------------------------------------------
# Machine description and reports.

def machine_info() -> dict:
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # The model name alone can hide the generation ("AMD EPYC" on both Zen 1 and Zen 5 hosts).
    cpu_model += f" ({torch.backends.cpu.get_cpu_capability()})"
    return dict(cpu_model=cpu_model, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                torch_version=torch.__version__, python=platform.python_version(),
                git_commit=git_commit(), platform=platform.platform())


def cpu_seconds() -> tuple[float | None, float]:
    """(CPU seconds the whole machine has been busy, incl. steal; CPU seconds of this process)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    own = usage.ru_utime + usage.ru_stime
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        # user nice system idle iowait irq softirq steal ...
        busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]
        return busy / os.sysconf("SC_CLK_TCK"), own
    except (OSError, ValueError, IndexError):
        return None, own


def other_cpu_seconds(start: tuple[float | None, float], end: tuple[float | None, float]) -> float | None:
    """CPU seconds that something other than this benchmark used during the run: the noise."""
    if start[0] is None or end[0] is None:
        return None
    return max(0.0, (end[0] - start[0]) - (end[1] - start[1]))


def git_commit() -> str:
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                  check=True, timeout=10).stdout.strip()
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def markdown_report(meta: dict, results: list[dict]) -> str:
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in meta["gemm_peak_gflops"].items())
    samples = meta["gemm_peak_samples_gflops"].values()
    other_cores = fmt(meta["other_cpu_s"] and meta["other_cpu_s"] / meta["wall_s"], ".2f", "?")
    lines = [
        f"rnnfused CPU benchmark — {meta['cpu_model']}, {meta['cpu_count']} cores "
        f"({meta['torch_threads']} torch threads), torch {meta['torch_version']}, "
        f"commit {meta['git_commit']}, {'quick' if meta['quick'] else 'full'} run",
        f"GEMM peak (GFLOP/s, 1024³, faster of torch.mm and oneDNN matmul (bfloat16: or float32 torch.mm), best of {len(next(iter(samples)))} samples): {peaks}",
        f"Run took {meta['wall_s']:.0f} s; other processes used {fmt(meta['other_cpu_s'], '.0f', '?')} "
        f"CPU-seconds meanwhile (noise: {other_cores} of {meta['cpu_count']} cores on average)",
        "",
        "| row | mode | rnnfused ms | torch.nn ms | native ms | × torch.nn | × native "
        "| × torch.nn of min | GFLOP/s | % peak | saved MiB rf / nn / native |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ms = r["median_ms"]
        saved = r.get("saved_mib")
        saved_text = (" / ".join(fmt(saved.get(k), ".1f") for k in ("rnnfused", "torch.nn", "native"))
                      if saved else "-")
        lines.append(
            f"| {r['label']} (T={r['T']}) | {r['mode']} "
            f"| {fmt(ms.get('rnnfused'), '.2f', 'error')} | {fmt(ms.get('torch.nn'), '.2f', 'error')} "
            f"| {fmt(ms.get('native'), '.2f', 'error')} "
            f"| {fmt(r['ratio_vs_torch_nn'], '.2f')} | {fmt(r['ratio_vs_native'], '.2f')} "
            f"| {fmt(r['ratio_vs_torch_nn_of_min'], '.2f')} "
            f"| {fmt(r['gflops'], '.1f')} | {fmt(r['peak_fraction'] and 100 * r['peak_fraction'], '.1f')} "
            f"| {saved_text} |")
    lines += [
        "",
        "ms: median wall time of one call. × torch.nn / × native: that contender's time divided "
        "by rnnfused's (> 1: rnnfused faster); × torch.nn of min: the same from the fastest "
        "repeats (far from × torch.nn: a noisy row). GFLOP/s and % peak: rnnfused's GEMM FLOPs "
        "(formula in bench.py) per second, against the GEMM peak of the row's dtype. "
        "saved MiB: tensors autograd keeps for backward in one fwd+bwd (inputs and parameters "
        "excluded), not process peak RSS.",
    ]
    errors = [(r["row"], r["mode"], name, msg) for r in results for name, msg in r["errors"].items()]
    if errors:
        lines += ["", "Errors:"] + [f"- {row} {mode} {name}: {msg}" for row, mode, name, msg in errors]
    return "\n".join(lines)


def plot_ratios(results: list[dict], path: Path) -> str:
    """Grouped bars of the two ratios per row and mode; returns a note for the log."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no PNG written"
    labels = [f"{r['row']}\n{r['mode']}" for r in results]
    positions = range(len(results))
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(8, 0.8 * len(results)), 4.5))
    for offset, key, name in ((-width / 2, "ratio_vs_torch_nn", "torch.nn (oneDNN on) / rnnfused"),
                              (width / 2, "ratio_vs_native", "native (oneDNN off) / rnnfused")):
        ax.bar([p + offset for p in positions], [r[key] or 0 for r in results], width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(positions), labels, fontsize=7, rotation=90)
    ax.set_ylabel("time ratio (> 1: rnnfused faster)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"wrote {path}"


# ---------------------------------------------------------------------------------------------
# Entry point.

def select_rows(names: str | None, settings: Settings) -> list[Row]:
    rows = ROWS
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        known = {r.name for r in ROWS}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            sys.exit(f"unknown row(s) {', '.join(unknown)}; known: {', '.join(r.name for r in ROWS)}")
        rows = [r for r in ROWS if r.name in wanted]
    if settings.T is not None:
        rows = [dataclasses.replace(r, T=settings.T) for r in rows]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=20 and few repeats: a smoke run")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out", help="output directory")
    parser.add_argument("--rows", help="comma-separated row names: " + ",".join(r.name for r in ROWS))
    args = parser.parse_args(argv)

    settings = QUICK if args.quick else FULL
    rows = select_rows(args.rows, settings)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    cpu_start = cpu_seconds()
    meta = machine_info()
    meta["quick"] = args.quick
    dtypes = [DTYPE_NAMES[d] for d in DTYPE_NAMES if any(r.dtype == d for r in rows)]
    peak_samples: dict[str, list[float]] = {d: [] for d in dtypes}

    def sample_peaks() -> None:
        for name in dtypes:
            peak_samples[name].append(gemm_peak_gflops(DTYPE_BY_NAME[name]))

    results = []
    for index, row in enumerate(rows, 1):
        log(f"[{index}/{len(rows)}] {row.name}: {row.label}, T={row.T} "
            f"({time.perf_counter() - started:.0f} s elapsed)")
        sample_peaks()
        results.extend(bench_row(row, settings, log))
    sample_peaks()

    # The GEMM peak is sampled before every row and once at the end, and the best sample is the
    # ceiling: a busy moment can only make a measurement slower, never faster.
    meta["gemm_peak_samples_gflops"] = peak_samples
    meta["gemm_peak_gflops"] = {name: max(samples) for name, samples in peak_samples.items()}
    for result in results:
        fill_derived(result, meta["gemm_peak_gflops"])

    meta["wall_s"] = time.perf_counter() - started
    meta["other_cpu_s"] = other_cpu_seconds(cpu_start, cpu_seconds())
    # Whole-process high-water mark (Linux: KiB): one number for the run, not per contender.
    meta["process_max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.mkdir(parents=True, exist_ok=True)
    report = markdown_report(meta, results)
    (args.out / "bench_cpu.json").write_text(json.dumps(dict(meta=meta, results=results), indent=2) + "\n")
    (args.out / "bench_cpu.md").write_text(report + "\n")
    log(plot_ratios(results, args.out / "bench_cpu.png"))
    log(f"wrote {args.out / 'bench_cpu.json'} and {args.out / 'bench_cpu.md'} "
        f"in {meta['wall_s']:.0f} s")
    print(report)


if __name__ == "__main__":
    main()
