"""torch.nn drop-ins that run the fused ops."""
from .cells import LSTMCell, RNNCell
from .rnn import LSTM, RNN

__all__ = ["LSTM", "RNN", "LSTMCell", "RNNCell"]
