"""rnnfused: fused C++ / CUDA LSTM and vanilla RNN kernels behind torch.nn drop-ins.

    import rnnfused
    lstm = rnnfused.LSTM(256, 512, num_layers=2, bidirectional=True)   # same args as nn.LSTM
    lstm.load_state_dict(nn_lstm.state_dict())                         # same parameter names
"""
import torch

from . import ops, reference
from .attention import (AttentionLSTMCell, AttentionMemory, BahdanauAttention, GlobalAttention,
                        LuongAttention)
from .nn import LSTM, RNN, LSTMCell, RNNCell
from .convert import convert

__all__ = ["LSTM", "RNN", "LSTMCell", "RNNCell", "ops", "reference", "cuda_built", "convert",
           "BahdanauAttention", "LuongAttention", "GlobalAttention", "AttentionLSTMCell",
           "AttentionMemory"]
__version__ = "0.1.0"


def cuda_built() -> bool:
    """True when this build of the extension registered CUDA kernels (needs no GPU to answer)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("rnnfused::lstm_layer_forward", "CUDA")
