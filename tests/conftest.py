"""Shared fixtures. Collects on a CPU-only machine: nothing here touches CUDA at import."""
import contextlib

import pytest
import torch

import rnnfused


def available_devices():
    devices = ["cpu"]
    if rnnfused.cuda_built() and torch.cuda.is_available():
        devices.append("cuda")
    return devices


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """'cpu' always; 'cuda' when the CUDA kernels are built and a GPU is present (else skipped)."""
    if request.param not in available_devices():
        pytest.skip("needs a GPU and a CUDA build of rnnfused")
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@contextlib.contextmanager
def native_torch(device):
    """torch.nn without vendor libraries where exactness matters: oneDNN off on the CPU,
    TF32 off for cuDNN on the GPU."""
    if torch.device(device).type == "cuda":
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            old = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
            try:
                yield
            finally:
                torch.backends.cuda.matmul.allow_tf32 = old
    else:
        with torch.backends.mkldnn.flags(enabled=False):
            yield


# Tolerances of a fused result against torch.nn run in the same dtype.
TOLERANCES = {
    torch.float64: dict(atol=1e-10, rtol=1e-9),
    torch.float32: dict(atol=2e-5, rtol=1e-4),
}
