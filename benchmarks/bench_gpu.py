"""GPU benchmark: rnnfused against torch.nn (cuDNN) and the pure-PyTorch reference, on one CUDA
device. (FlashRNN is not compared: the lent GPU machines have no package registry to install it
from, and its pip package needs its own CUDA build.)

    python benchmarks/bench_gpu.py [--quick] [--out DIR] [--device cuda|cpu]

Timing: CUDA events around each call, warm-up first, median of repeats, contenders interleaved
round-robin. cuDNN runs with TF32 off (rnnfused's float32 GEMMs are exact float32 too), and
torch.nn's row is marked so. The card's two ceilings are measured in the same run: device-to-
device copy bandwidth (bytes read + written) and the GEMM rate of torch.mm in each dtype; every
row reports rnnfused's achieved GEMM FLOP/s as a fraction of that rate.
FLOPs per layer-direction: forward 2*N*4H*(I+H) (input and recurrent GEMMs, N = T*B rows, or
sum(lengths) packed); fwd+bwd counted as 3x forward.
`--device cpu` runs the same code on the CPU (a smoke test of this script where no GPU is).
Prints a markdown table last; writes bench_gpu.{md,json} under --out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnfused
from rnnfused import reference

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Row:
    T: int
    B: int
    H: int
    dtype: torch.dtype = torch.float32
    packed: bool = False

    @property
    def label(self) -> str:
        kind = "packed " if self.packed else ""
        return f"LSTM {kind}T={self.T} B={self.B} H={self.H} {str(self.dtype)[6:]}"


def rows(quick: bool) -> list[Row]:
    if quick:
        return [Row(20, 16, 256), Row(20, 16, 256, packed=True), Row(32, 16, 256, torch.bfloat16)]
    grid = [Row(100, B, H) for B in (1, 16, 64) for H in (256, 512, 1024)]
    return grid + [Row(100, 64, 512, packed=True), Row(1024, 16, 768, torch.bfloat16)]


# ---------------------------------------------------------------------------------------------
# Timing.

class Timer:
    """Median milliseconds of a call: CUDA events on a GPU, the host clock on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def once(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def time_round_robin(timer: Timer, calls: dict, warmup: int, repeats: int) -> dict[str, float]:
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in calls}
    names = list(calls)
    for r in range(repeats):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            samples[name].append(timer.once(calls[name]))
    return {name: statistics.median(v) for name, v in samples.items()}


def ceilings(device: torch.device, timer: Timer) -> dict[str, float]:
    """The card's copy bandwidth (GB/s, read + write) and GEMM rates (TFLOP/s) per dtype."""
    n_bytes = (1 << 30) if device.type == "cuda" else (1 << 26)
    src = torch.randn(n_bytes // 4, device=device)
    dst = torch.empty_like(src)
    ms = time_round_robin(timer, {"copy": lambda: dst.copy_(src)}, 3, 10)["copy"]
    result = {"copy_GBps": 2 * n_bytes / ms / 1e6}
    n = 8192 if device.type == "cuda" else 1024
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        ms = time_round_robin(timer, {"mm": lambda: torch.mm(a, b)}, 3, 10)["mm"]
        result[f"gemm_{str(dtype)[6:]}_TFLOPs"] = 2 * n ** 3 / ms / 1e9
    return result


# ---------------------------------------------------------------------------------------------
# Contenders.

def make_input(row: Row, device, requires_grad: bool):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(row.T, row.B, row.H, generator=g).to(device=device, dtype=row.dtype)
    if not row.packed:
        return x.requires_grad_(requires_grad), x, row.T * row.B
    lengths = torch.randint(max(1, row.T // 10), row.T + 1, (row.B,), generator=g)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    data = packed.data.detach().requires_grad_(requires_grad)
    return PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices), data, int(lengths.sum())


def output_of(result):
    out, (h, _) = result
    return (out.data if isinstance(out, PackedSequence) else out), h


def bench_row(row: Row, device, timer: Timer, quick: bool) -> dict:
    torch.manual_seed(0)
    ref = nn.LSTM(row.H, row.H).to(device=device, dtype=row.dtype)
    fused = rnnfused.LSTM(row.H, row.H).to(device=device, dtype=row.dtype)
    fused.load_state_dict(ref.state_dict())
    weights = [p.detach() for p in ref.parameters()]
    modules = {"rnnfused": fused, "torch.nn": ref}

    def reference_module(x):
        data = x.data if isinstance(x, PackedSequence) else x
        h0 = torch.zeros(row.B, row.H, device=device, dtype=row.dtype)
        out, h, c = reference.lstm_layer(data, *weights, None, h0, torch.zeros_like(h0),
                                         x.batch_sizes if isinstance(x, PackedSequence) else None)
        return out, (h, c)

    x_fwd, _, n_rows = make_input(row, device, requires_grad=False)
    x_bwd, leaf, _ = make_input(row, device, requires_grad=True)
    calls = {}
    for name, module in modules.items():
        def fwd(module=module):
            with torch.no_grad():
                module(x_fwd)

        def fwd_bwd(module=module):
            out, h = output_of(module(x_bwd))
            (out.float().sum() + h.float().sum()).backward()
        calls[name] = (fwd, fwd_bwd)
    if quick or row.T * row.B <= 6400:  # the step-by-step reference is slow: small rows only
        calls["reference"] = (lambda: reference_module(x_fwd),
                              lambda: sum(t.float().sum() for t in output_of(reference_module(x_bwd))).backward())

    flops_fwd = 2.0 * n_rows * 4 * row.H * (row.H + row.H)
    result = {"row": row.label, "N": n_rows, **asdict(row), "dtype": str(row.dtype)[6:]}
    warmup, repeats = (1, 3) if quick else (3, 15)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        for mode, index, flops in (("fwd", 0, flops_fwd), ("fwd+bwd", 1, 3 * flops_fwd)):
            times = time_round_robin(timer, {k: v[index] for k, v in calls.items()}, warmup, repeats)
            result[mode] = {"ms": times, "rnnfused_TFLOPs": flops / times["rnnfused"] / 1e9,
                            "x_torch": times["torch.nn"] / times["rnnfused"]}
    return result


def markdown(results: list[dict], ceil: dict, device_name: str, commit: str) -> str:
    lines = [f"rnnfused GPU benchmark — {device_name}, torch {torch.__version__}, commit {commit}",
             "ceilings: " + ", ".join(f"{k} {v:.1f}" for k, v in ceil.items()), "",
             "| row | mode | rnnfused ms | torch.nn (cuDNN, no TF32) ms | reference ms | × torch.nn | TFLOP/s | % GEMM peak |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        peak = ceil["gemm_float32_TFLOPs" if r["dtype"] == "float32" else "gemm_bfloat16_TFLOPs"]
        for mode in ("fwd", "fwd+bwd"):
            m = r[mode]
            ref_ms = m["ms"].get("reference")
            lines.append(f"| {r['row']} | {mode} | {m['ms']['rnnfused']:.3f} | {m['ms']['torch.nn']:.3f} | "
                         f"{'-' if ref_ms is None else f'{ref_ms:.2f}'} | {m['x_torch']:.2f} | "
                         f"{m['rnnfused_TFLOPs']:.2f} | {100 * m['rnnfused_TFLOPs'] / peak:.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not (torch.cuda.is_available() and rnnfused.cuda_built()):
        raise SystemExit("bench_gpu.py needs a GPU and a CUDA build of rnnfused (or --device cpu)")
    timer = Timer(device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    ceil = ceilings(device, timer)
    results = []
    for row in rows(args.quick):
        print(f"[bench_gpu] {row.label}", flush=True)
        results.append(bench_row(row, device, timer, args.quick))
    table = markdown(results, ceil, device_name, commit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gpu.md").write_text(table + "\n")
    (out / "bench_gpu.json").write_text(json.dumps({"device": device_name, "commit": commit,
                                                     "ceilings": ceil, "rows": results}, indent=1))
    print(table)


if __name__ == "__main__":
    main()
