"""Every CPU kernel (scalar element bodies, AVX2, AVX-512) gives torch.nn's numbers.

The kernel follows ATen's CPU capability, chosen once per process (ATEN_CPU_CAPABILITY lowers
it), so each runs in a subprocess.
Hidden sizes cover whole SIMD vectors plus a masked partial vector (H = 37), and a partial
vector only (H = 5);
sequences of 18 rows (the per-step path of short calls) and 72 (the fused, panel-packed loops);
float32 and float64 against torch.nn, float16 and bfloat16 against float64 (bfloat16 also with
an even H, for the AMX kernel). The vector tanh and sigmoid are checked against float64 over the
whole float range, and in float64 against torch's own over [-800, 800], with inf and NaN."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

# The start of every subprocess check: imports, and match_torch(torch_cls, fused_cls, kw, x, tol),
# which compares a torch.nn module (oneDNN off) with rnnfused's on x: outputs, final states and
# every gradient.
PRELUDE = textwrap.dedent("""
    import torch, rnnfused
    from torch import nn
    torch.manual_seed(0)

    def match_torch(torch_cls, fused_cls, kw, x, tol):
        ref = torch_cls(**kw).to(x.dtype)
        fused = fused_cls(**kw).to(x.dtype)
        fused.load_state_dict(ref.state_dict())
        results = []
        for module in (ref, fused):
            xi = x.clone().requires_grad_()
            with torch.backends.mkldnn.flags(enabled=False):
                out, hidden = module(xi)
            hidden = hidden if isinstance(hidden, tuple) else (hidden,)
            (out.sum() + sum(h.square().sum() for h in hidden)).backward()
            results.append([out, *hidden, xi.grad, *(p.grad for p in module.parameters())])
        for a, b in zip(*results):
            torch.testing.assert_close(b, a, atol=tol, rtol=tol)
""")

CHECK = PRELUDE + textwrap.dedent("""
    for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 1e-4)]:
        for H, T in [(5, 6), (37, 6), (37, 24)]:
            for fused_cls, torch_cls, kw in [(rnnfused.LSTM, nn.LSTM, dict(bidirectional=True)),
                                             (rnnfused.RNN, nn.RNN, dict(nonlinearity="tanh")),
                                             (rnnfused.RNN, nn.RNN, dict(nonlinearity="relu"))]:
                match_torch(torch_cls, fused_cls, dict(input_size=4, hidden_size=H, **kw),
                            torch.randn(T, 3, 4, dtype=dtype), tol)
    # 16-bit storage (float arithmetic): against the float64 result of the same weights.
    # H = 48: an even K, which the AMX kernel takes (one 32-wide K block and a tail of 16).
    for dtype, H in [(torch.bfloat16, 37), (torch.bfloat16, 48), (torch.float16, 37)]:
        ref = nn.LSTM(4, H, bidirectional=True).double()
        fused = rnnfused.LSTM(4, H, bidirectional=True).to(dtype)
        fused.load_state_dict(ref.state_dict())
        x = torch.randn(24, 3, 4, dtype=torch.float64)
        torch.testing.assert_close(fused(x.to(dtype))[0].double(), ref(x)[0], atol=3e-2, rtol=3e-2)

    # Activations, float32: a one-step layer whose pre-activations are exactly its bias.
    x = torch.cat([torch.linspace(-20, 20, 100001), torch.logspace(-30, 1.5, 3000),
                   -torch.logspace(-30, 1.5, 3000)])
    special = torch.tensor([0.0, float("inf"), -float("inf"), float("nan"), 88.0, 100.0, -100.0])
    x = torch.cat([x, special])
    eps = torch.finfo(torch.float32).eps
    zero = lambda *shape: torch.zeros(*shape)
    outs = []
    for chunk in x.split(4096):
        h = chunk.numel()
        outs.append(torch.ops.rnnfused.rnn_layer_forward(zero(1, 1, 1), zero(h, 1), zero(h, h), chunk, None,
                                                         zero(1, h), None, False, "tanh")[0].reshape(-1))
    got, want = torch.cat(outs).double(), torch.tanh(x.double())
    finite = torch.isfinite(x) & (want != 0)
    assert ((got - want).abs() / want.abs())[finite].max() <= 2 * eps
    assert got[-7:].tolist()[:3] == [0.0, 1.0, -1.0] and got[-4].isnan() and got[-3:].tolist() == [1.0, 1.0, -1.0]
    # sigmoid: c_1 = sigmoid(i) * tanh(g) with g = 30 (tanh = 1 in float32), c_0 = 0.
    outs = []
    for chunk in x.split(4096):
        h = chunk.numel()
        bias = torch.cat([chunk, zero(h), torch.full((h,), 30.0), zero(h)])
        outs.append(torch.ops.rnnfused.lstm_layer_forward(zero(1, 1, 1), zero(4 * h, 1), zero(4 * h, h), bias, None,
                                                          None, zero(1, h), zero(1, h), None, False, False)[2].reshape(-1))
    got, want = torch.cat(outs).double(), torch.sigmoid(x.double())
    normal = torch.isfinite(x) & (want > torch.finfo(torch.float32).tiny)
    assert ((got - want).abs() / want)[normal].max() <= 2 * eps
    assert got[-7:-4].tolist() == [0.5, 1.0, 0.0] and got[-4].isnan()

    # The same in float64, against torch's float64 tanh / sigmoid (each within about 1 ulp).
    f64 = dict(dtype=torch.float64)
    x = torch.cat([torch.linspace(-800, 800, 100001, **f64), torch.linspace(-2, 2, 40001, **f64),
                   torch.logspace(-300, 1.5, 3000, **f64), -torch.logspace(-300, 1.5, 3000, **f64),
                   special.double()])
    eps = torch.finfo(torch.float64).eps
    zero = lambda *shape: torch.zeros(*shape, **f64)
    tanh_out, sigmoid_out = [], []
    for chunk in x.split(4096):
        h = chunk.numel()
        tanh_out.append(torch.ops.rnnfused.rnn_layer_forward(zero(1, 1, 1), zero(h, 1), zero(h, h), chunk, None,
                                                             zero(1, h), None, False, "tanh")[0].reshape(-1))
        bias = torch.cat([chunk, zero(h), torch.full((h,), 30.0, **f64), zero(h)])
        sigmoid_out.append(torch.ops.rnnfused.lstm_layer_forward(zero(1, 1, 1), zero(4 * h, 1), zero(4 * h, h), bias,
                                                                 None, None, zero(1, h), zero(1, h), None, False,
                                                                 False)[2].reshape(-1))
    for got, want in [(torch.cat(tanh_out), torch.tanh(x)), (torch.cat(sigmoid_out), torch.sigmoid(x))]:
        normal = torch.isfinite(x) & (want.abs() > 1e-300)
        assert ((got - want).abs() / want.abs())[normal].max() <= 4 * eps
        assert got[-7:-4].tolist() == want[-7:-4].tolist() and got[-4].isnan()
    print("ok")
""")

def capabilities():
    """Every capability this CPU can run: ATen's own, and each one below it; AVX-512 also with
    the AMX bfloat16 kernel turned off, so that CPUs with AMX check the AVX512-BF16 one too."""
    order = ["default", "avx2", "avx512"]
    highest = torch.backends.cpu.get_cpu_capability().lower()
    found = order[: order.index(highest) + 1] if highest in order else ["default"]
    return found + (["avx512-no-amx"] if "avx512" in found else [])


@pytest.mark.parametrize("capability", capabilities())
def test_kernel_matches_torch(capability):
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability.removesuffix("-no-amx")}
    if capability.endswith("-no-amx"):
        env["RNNFUSED_CPU_AMX"] = "0"
    result = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


# The GEMMs run once per call over many rows (input projection, input and weight gradients), on
# the panel kernels (AVX2 and AVX-512) or through ATen's BLAS (RNNFUSED_CPU_GEMM; by default the
# CPU decides):
# 600 rows (weight gradients reduce over more than one 512-row block of K), input sizes 300 and
# 37 (tail panels), the team splitting B's panels (4H = 256) or A's rows (400 rows: 192 + 8 float
# rows a thread, 96 + 96 + 8 double, the 8 in a tall tile), proj_size, a vanilla RNN.
GEMM_CHECK = PRELUDE + textwrap.dedent("""
    cases = [(nn.LSTM, rnnfused.LSTM, dict(input_size=300, hidden_size=64, bidirectional=True), (100, 6)),
             (nn.LSTM, rnnfused.LSTM, dict(input_size=37, hidden_size=20, proj_size=7), (200, 2)),
             (nn.RNN, rnnfused.RNN, dict(input_size=37, hidden_size=70, nonlinearity="relu"), (100, 3))]
    for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 1e-4)]:
        for torch_cls, fused_cls, kw, (T, B) in cases:
            match_torch(torch_cls, fused_cls, kw, torch.randn(T, B, kw["input_size"], dtype=dtype), tol)
    print("ok")
""")


@pytest.mark.parametrize("gemm, capability",
                         [("blas", "default-capability")] +
                         [("panels", c) for c in capabilities() if c in ("avx2", "avx512")])
def test_one_off_gemms_match_torch(gemm, capability):
    env = {**os.environ, "RNNFUSED_CPU_GEMM": gemm}
    if capability != "default-capability":
        env["ATEN_CPU_CAPABILITY"] = capability
    result = subprocess.run([sys.executable, "-c", GEMM_CHECK], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
