"""Every CPU pointwise kernel (scalar element bodies, AVX2, AVX-512) gives torch.nn's numbers.

The kernel is chosen once per process (RNNFUSED_CPU_KERNEL), so each runs in a subprocess.
Hidden sizes cover whole SIMD vectors plus a scalar tail (H = 37), and all-tail (H = 5);
float32 and float64 against torch.nn, float16 and bfloat16 against float64."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

CHECK = textwrap.dedent("""
    import torch, rnnfused
    from torch import nn
    torch.manual_seed(0)
    for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 1e-4)]:
        for H in (5, 37):
            for fused_cls, torch_cls, kw in [(rnnfused.LSTM, nn.LSTM, dict(bidirectional=True)),
                                             (rnnfused.RNN, nn.RNN, dict(nonlinearity="tanh")),
                                             (rnnfused.RNN, nn.RNN, dict(nonlinearity="relu"))]:
                ref = torch_cls(4, H, **kw).to(dtype)
                fused = fused_cls(4, H, **kw).to(dtype)
                fused.load_state_dict(ref.state_dict())
                x = torch.randn(6, 3, 4, dtype=dtype)
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
    # 16-bit storage (float arithmetic): against the float64 result of the same weights.
    for dtype in (torch.bfloat16, torch.float16):
        ref = nn.LSTM(4, 37, bidirectional=True).double()
        fused = rnnfused.LSTM(4, 37, bidirectional=True).to(dtype)
        fused.load_state_dict(ref.state_dict())
        x = torch.randn(6, 3, 4, dtype=torch.float64)
        torch.testing.assert_close(fused(x.to(dtype))[0].double(), ref(x)[0], atol=3e-2, rtol=3e-2)
    print("ok")
""")

def kernels():
    found = ["scalar"]
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "AVX512"):
        found.append("avx2")
    if capability == "AVX512":
        found.append("avx512")
    return found

@pytest.mark.parametrize("kernel", kernels())
def test_kernel_matches_torch(kernel):
    env = {"RNNFUSED_CPU_KERNEL": kernel}

    result = subprocess.run([sys.executable, "-c", CHECK], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]

def test_unknown_kernel_name_is_an_error():

    script = "import torch, rnnfused; rnnfused.LSTM(2, 3)(torch.randn(2, 1, 2))"
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "RNNFUSED_CPU_KERNEL": "sse9"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "RNNFUSED_CPU_KERNEL must be" in result.stderr
