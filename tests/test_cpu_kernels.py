"""Every CPU pointwise kernel (scalar element bodies, AVX2, AVX-512) gives torch.nn's numbers.

The kernel follows ATen's CPU capability, chosen once per process (ATEN_CPU_CAPABILITY lowers
it), so each runs in a subprocess.
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

def capabilities():
    """Every capability this CPU can run: ATen's own, and each one below it."""
    order = ["default", "avx2", "avx512"]
    highest = torch.backends.cpu.get_cpu_capability().lower()
    return order[: order.index(highest) + 1] if highest in order else ["default"]


@pytest.mark.parametrize("capability", capabilities())
def test_kernel_matches_torch(capability):
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    result = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
