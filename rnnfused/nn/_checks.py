"""Checks that torch.nn leaves to ATen kernels, reproduced with ATen's messages so that the
drop-ins raise what torch raises before any fused op runs."""
from __future__ import annotations

import torch
from torch import Tensor

# ATen's names of the dtypes, as its "mat1 and mat2" message prints them.
_ATEN_DTYPE_NAMES = {torch.float64: "Double", torch.float32: "Float", torch.float16: "Half",
                     torch.bfloat16: "BFloat16"}


def _aten_name(dtype: torch.dtype) -> str:
    return _ATEN_DTYPE_NAMES.get(dtype, str(dtype))


def check_matmul_dtype(a: Tensor, weight: Tensor) -> None:
    """ATen's error for a matmul of a tensor with a weight of another dtype. Under autocast
    there is none: the ops cast both to the autocast dtype (as torch.nn's check_input skips its
    dtype check under autocast)."""
    if a.dtype != weight.dtype and not torch.is_autocast_enabled(a.device.type):
        raise RuntimeError("mat1 and mat2 must have the same dtype, but got "
                           f"{_aten_name(a.dtype)} and {_aten_name(weight.dtype)}")


def check_cell_inputs(input: Tensor, hidden: tuple[Tensor, ...], w_ih: Tensor, hidden_size: int) -> None:
    """ATen's checks of a cell's input (B, I) and hidden states (B, H)."""
    dtype = w_ih.dtype
    for tensor in (input, *hidden):
        if tensor.dtype != dtype:
            check_matmul_dtype(tensor, w_ih)
    if input.size(1) != w_ih.size(1):
        raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {w_ih.size(1)}")
    batch = input.size(0)
    for index, h in enumerate(hidden):
        if batch != h.size(0):
            raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden{index} batch size {h.size(0)}")
        if h.size(1) != hidden_size:
            raise RuntimeError(f"hidden{index} has inconsistent hidden_size: got {h.size(1)}, expected {hidden_size}")
