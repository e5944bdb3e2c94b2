"""Builds the one extension module rnnfused._C with torch's BuildExtension (ninja).

Environment:
  RNNFUSED_CUDA=auto|0|1   auto (default): compile the CUDA sources when torch is a CUDA build
                           and nvcc is found; 1: require them; 0: CPU only.
                           Never decided by torch.cuda.is_available(): build machines have no GPU.
  TORCH_CUDA_ARCH_LIST     honoured; when unset and no GPU is visible, "8.0;9.0+PTX".
  MAX_JOBS                 honoured by ninja (torch's BuildExtension).
  CUDA_HOME                where the CUDA toolkit lives; found from nvcc when unset.
"""
import glob
import os
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"


def find_cuda_home():
    """The toolkit directory that holds bin/nvcc and include/cuda_runtime.h, or None."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for home in candidates:
        if home and os.path.isfile(os.path.join(home, "include", "cuda_runtime.h")) and (
            os.path.isfile(os.path.join(home, "bin", "nvcc"))
        ):
            return home
    return None


def missing_toolkit_header_dirs(cuda_home):
    """Header dirs of torch's pip CUDA libraries (cuSPARSE, cuSOLVER, ...) when the toolkit
    lacks them: ATen's CUDA headers include them. Searched after the toolkit's own headers."""
    if os.path.isfile(os.path.join(cuda_home, "include", "cusparse.h")):
        return []
    try:
        import nvidia
    except ImportError:
        return []
    found = []
    for root in nvidia.__path__:
        for include in sorted(glob.glob(os.path.join(root, "*", "include"))):
            if os.path.isfile(os.path.join(include, "cusparse.h")):
                found.append(include)
    return found


def want_cuda():
    import torch

    mode = os.environ.get("RNNFUSED_CUDA", "auto").lower()
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"RNNFUSED_CUDA must be auto, 0 or 1, got {mode!r}")
    if mode == "0":
        return False
    home = find_cuda_home()
    ok = torch.version.cuda is not None and home is not None
    if mode == "1" and not ok:
        raise SystemExit(
            "RNNFUSED_CUDA=1 but "
            + ("torch is a CPU-only build" if torch.version.cuda is None else "nvcc was not found")
        )
    if ok:
        # torch.utils.cpp_extension reads CUDA_HOME when it is first imported.
        os.environ["CUDA_HOME"] = home
    return ok


def openmp_flags_needed():
    """at::parallel_for is inline OpenMP in ATen's headers when torch is built with OpenMP (the
    Linux wheels are): without -fopenmp it compiles to a serial loop. The extension then links
    the libgomp.so.1 that torch has already loaded."""
    import sys

    import torch

    return sys.platform.startswith("linux") and torch.backends.openmp.is_available()


def extensions():
    build_cuda = want_cuda()
    if build_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        import torch

        if not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCH_LIST

    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    cxx_flags = ["-O3"]
    link_flags = []
    if openmp_flags_needed():
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    if not build_cuda:
        return [CppExtension("rnnfused._C", sources, include_dirs=include_dirs,
                             extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags)]
    sources += sorted(glob.glob("csrc/cuda/*.cu"))
    system_includes = []
    for include in missing_toolkit_header_dirs(os.environ["CUDA_HOME"]):
        system_includes += ["-isystem", include]
    cxx_flags += system_includes
    nvcc_flags = system_includes + [
        "-O3",
        "--expt-relaxed-constexpr",
        # ptxas prints registers / spills of every kernel: keep them visible in the build log.
        "-Xptxas=-v",
    ]
    return [CUDAExtension("rnnfused._C", sources, include_dirs=include_dirs,
                          define_macros=[("RNNFUSED_WITH_CUDA", "1")],
                          extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
                          extra_link_args=link_flags)]


def cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension.with_options(use_ninja=True)}


setup(
    name="rnnfused",
    version="0.1.0",
    description="Fused C++/CUDA LSTM, RNN and RNN-attention kernels as torch.nn drop-ins",
    packages=find_packages(include=["rnnfused", "rnnfused.*"]),
    ext_modules=extensions(),
    cmdclass=cmdclass(),
    python_requires=">=3.10",
    zip_safe=False,
)
