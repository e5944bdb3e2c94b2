#!/usr/bin/env bash
# The GPU proof, in one call on a bare GPU machine (its own torch and nvcc, no network):
#   bash benchmarks/gpu_check.sh OUTDIR
# builds the extension for the card, runs the CUDA tests, runs compute-sanitizer (memcheck and
# racecheck) on a small case where it exists, runs the GPU benchmarks (recurrent layers and
# attention), and prints a short table
# last. Full logs go to OUTDIR. Budget: under 8 minutes on an H200.
set -uo pipefail
OUT="${1:?usage: gpu_check.sh OUTDIR}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
status=0
step() { echo "== $1 ($(date +%T))"; }

step "environment"
{ nvidia-smi; nvcc --version; python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"; git rev-parse HEAD; } \
  > "$OUT/env.txt" 2>&1
tail -n 3 "$OUT/env.txt"

step "build"
export MAX_JOBS="${MAX_JOBS:-16}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" RNNFUSED_CUDA=1
if ! python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1; then
  tail -n 40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1
fi
grep -E "spill" "$OUT/build.log" | sort | uniq -c > "$OUT/ptxas_spills.txt"
python3 -c "import rnnfused, torch; assert rnnfused.cuda_built() and torch.cuda.is_available(); print('cuda kernels registered')"

step "CUDA tests (every device-parametrised test, cuda cases only)"
python3 -m pytest -q tests -k "cuda" -p no:cacheprovider > "$OUT/tests_cuda.log" 2>&1 || status=1
tail -n 3 "$OUT/tests_cuda.log"

step "compute-sanitizer"
SMALL='import torch, rnnfused
from torch.nn.utils.rnn import pack_padded_sequence
m = rnnfused.LSTM(16, 32, num_layers=2, bidirectional=True, proj_size=8).cuda()
x = torch.randn(7, 5, 16, device="cuda", requires_grad=True)
out, (h, c) = m(x); (out.sum() + h.sum() + c.sum()).backward()
p = pack_padded_sequence(torch.randn(7, 5, 16, device="cuda"), torch.tensor([7, 6, 4, 2, 1]))
out, _ = m(p); out.data.sum().backward()
r = rnnfused.RNN(16, 32, nonlinearity="relu").cuda(); o, hn = r(x); (o.sum() + hn.sum()).backward()
torch.cuda.synchronize(); print("small case ok")'
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 9 python3 -c "$SMALL" > "$OUT/sanitizer_$tool.log" 2>&1 \
      && echo "$tool: clean" || { echo "$tool: FAILED (see $OUT/sanitizer_$tool.log)"; status=1; }
  done
else
  echo "compute-sanitizer not found: skipped"
fi

step "GPU benchmarks"
python3 benchmarks/bench_gpu.py --out "$OUT" > "$OUT/bench_gpu.log" 2>&1 || { status=1; tail -n 20 "$OUT/bench_gpu.log"; }
python3 benchmarks/bench_attention.py --device cuda --json "$OUT/bench_attention.json" > "$OUT/bench_attention.log" 2>&1 \
  || { status=1; tail -n 20 "$OUT/bench_attention.log"; }

echo
echo "== summary: tests $(tail -n 1 "$OUT/tests_cuda.log"); exit status $status"
grep "^|" "$OUT/bench_attention.log" 2>/dev/null
cat "$OUT/bench_gpu.md" 2>/dev/null
exit $status
