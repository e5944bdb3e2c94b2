"""What the build produced, told truthfully at run time."""
import os

import pytest
import torch

import rnnfused

EXPECTED_OPS = ["lstm_layer_forward", "lstm_layer_backward", "rnn_layer_forward", "rnn_layer_backward",
                "lstm_cell_forward", "lstm_cell_backward", "rnn_cell_forward", "rnn_cell_backward",
                "gated_candidate_lstm_layer_forward", "gated_candidate_lstm_layer_backward",
                "additive_attention_forward", "additive_attention_backward",
                "dot_attention_forward", "dot_attention_backward"]


def has_kernel(op, key):
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"rnnfused::{op}", key)


@pytest.mark.parametrize("op", EXPECTED_OPS)
def test_cpu_kernels_registered(op):
    assert has_kernel(op, "CPU")


@pytest.mark.skipif(os.environ.get("RNNFUSED_EXPECT_CUDA_BUILD") != "1",
                    reason="only where the build was asked for CUDA (CI: RNNFUSED_CUDA=1)")
@pytest.mark.parametrize("op", EXPECTED_OPS)
def test_cuda_kernels_registered(op):
    """CI builds with RNNFUSED_CUDA=1: the CUDA kernels must be in the extension, GPU or not."""
    assert rnnfused.cuda_built()
    assert has_kernel(op, "CUDA")


def test_cuda_built_matches_registrations():
    assert rnnfused.cuda_built() == all(has_kernel(op, "CUDA") for op in EXPECTED_OPS)
