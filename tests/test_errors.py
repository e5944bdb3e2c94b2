"""Malformed input gets the exception torch.nn raises, with the same message.

Where torch's own message comes from deep inside a kernel (a broadcast or matmul failure on a
packed input's hx, a hidden state in another dtype), rnnfused raises the same exception type
with a message that names the offending argument instead; those cases are listed separately."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnfused

I, H = 4, 5


def packed(input_size=I, dtype=torch.float32):
    return pack_padded_sequence(torch.randn(3, 2, input_size, dtype=dtype), [3, 2])


def raised(fn):
    with pytest.raises(Exception) as info:
        fn()
    return type(info.value), str(info.value)


LSTM_CASES = {
    "4-D input": lambda m: m(torch.randn(2, 3, 4, 1)),
    "1-D input": lambda m: m(torch.randn(4)),
    "wrong input_size": lambda m: m(torch.randn(2, 3, 6)),
    "wrong input_size unbatched": lambda m: m(torch.randn(2, 6)),
    "dtype mismatch": lambda m: m(torch.randn(2, 3, 4, dtype=torch.float64)),
    "integer input": lambda m: m(torch.ones(2, 3, 4, dtype=torch.long)),
    "empty sequence": lambda m: m(torch.randn(0, 3, 4)),
    "empty unbatched sequence": lambda m: m(torch.randn(0, 4)),
    "h0 batch": lambda m: m(torch.randn(2, 3, 4), (torch.randn(1, 2, 5), torch.randn(1, 3, 5))),
    "c0 size": lambda m: m(torch.randn(2, 3, 4), (torch.randn(1, 3, 5), torch.randn(1, 3, 6))),
    "h0 layers": lambda m: m(torch.randn(2, 3, 4), (torch.randn(2, 3, 5), torch.randn(2, 3, 5))),
    "hx 2-D for batched": lambda m: m(torch.randn(2, 3, 4), (torch.randn(3, 5), torch.randn(3, 5))),
    "hx 3-D for unbatched": lambda m: m(torch.randn(2, 4), (torch.randn(1, 1, 5), torch.randn(1, 1, 5))),
    "packed wrong input_size": lambda m: m(packed(6)),
    "packed dtype mismatch": lambda m: m(packed(dtype=torch.float64)),
}

RNN_CASES = {
    "4-D input": lambda m: m(torch.randn(2, 3, 4, 1)),
    "wrong input_size": lambda m: m(torch.randn(2, 3, 6)),
    "dtype mismatch": lambda m: m(torch.randn(2, 3, 4, dtype=torch.float64)),
    "empty sequence": lambda m: m(torch.randn(0, 3, 4)),
    "h0 batch": lambda m: m(torch.randn(2, 3, 4), torch.randn(1, 2, 5)),
    "hx 2-D for batched": lambda m: m(torch.randn(2, 3, 4), torch.randn(3, 5)),
    "hx 3-D for unbatched": lambda m: m(torch.randn(2, 4), torch.randn(1, 1, 5)),
    "packed h0 batch": lambda m: m(packed(), torch.randn(1, 3, 5)),
}

CELL_CASES = {
    "LSTMCell": {
        "3-D input": lambda m: m(torch.randn(2, 3, 4)),
        "wrong input_size": lambda m: m(torch.randn(3, 6)),
        "dtype mismatch": lambda m: m(torch.randn(3, 4, dtype=torch.float64)),
        "hx batch": lambda m: m(torch.randn(3, 4), (torch.randn(2, 5), torch.randn(3, 5))),
        "hx size": lambda m: m(torch.randn(3, 4), (torch.randn(3, 6), torch.randn(3, 5))),
        "cx size": lambda m: m(torch.randn(3, 4), (torch.randn(3, 5), torch.randn(3, 6))),
        "hx 3-D": lambda m: m(torch.randn(3, 4), (torch.randn(1, 3, 5), torch.randn(3, 5))),
        "hx dtype": lambda m: m(torch.randn(3, 4), (torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5))),
        "unbatched with 2-D hx": lambda m: m(torch.randn(4), (torch.randn(3, 5), torch.randn(3, 5))),
    },
    "RNNCell": {
        "3-D input": lambda m: m(torch.randn(2, 3, 4)),
        "wrong input_size": lambda m: m(torch.randn(3, 6)),
        "dtype mismatch": lambda m: m(torch.randn(3, 4, dtype=torch.float64)),
        "hx batch": lambda m: m(torch.randn(3, 4), torch.randn(2, 5)),
        "hx size": lambda m: m(torch.randn(3, 4), torch.randn(3, 6)),
        "hx 3-D": lambda m: m(torch.randn(3, 4), torch.randn(1, 3, 5)),
        "hx dtype": lambda m: m(torch.randn(3, 4), torch.randn(3, 5, dtype=torch.float64)),
    },
}

# torch's message comes from inside a kernel here; rnnfused names the argument instead.
SAME_TYPE_ONLY = {"packed wrong input_size", "packed dtype mismatch"}


def compare(make_pair, case_name, case):
    ref, fused = make_pair()
    with torch.backends.mkldnn.flags(enabled=False):
        ref_type, ref_msg = raised(lambda: case(ref))
    fused_type, fused_msg = raised(lambda: case(fused))
    assert fused_type is ref_type, f"{case_name}: {fused_type.__name__}({fused_msg}) vs torch {ref_type.__name__}({ref_msg})"
    if case_name not in SAME_TYPE_ONLY:
        assert fused_msg == ref_msg


@pytest.mark.parametrize("case_name", list(LSTM_CASES))
def test_lstm_errors(case_name):
    compare(lambda: (nn.LSTM(I, H), rnnfused.LSTM(I, H)), case_name, LSTM_CASES[case_name])


@pytest.mark.parametrize("case_name", list(RNN_CASES))
def test_rnn_errors(case_name):
    compare(lambda: (nn.RNN(I, H), rnnfused.RNN(I, H)), case_name, RNN_CASES[case_name])


@pytest.mark.parametrize("cell,case_name", [(c, n) for c, cases in CELL_CASES.items() for n in cases])
def test_cell_errors(cell, case_name):
    make = lambda: (getattr(nn, cell)(I, H), getattr(rnnfused, cell)(I, H))  # noqa: E731
    compare(make, case_name, CELL_CASES[cell][case_name])


def test_packed_hx_of_wrong_batch_is_a_clear_runtime_error():
    """torch fails here with a broadcast message from inside its kernel; rnnfused says which
    hidden state has the wrong size."""
    lstm = rnnfused.LSTM(I, H)
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(1, 2, 5\), got \[1, 3, 5\]"):
        lstm(packed(), (torch.randn(1, 3, 5), torch.randn(1, 2, 5)))


def test_constructor_errors_are_torchs():
    for kwargs in [dict(proj_size=5), dict(num_layers=0), dict(dropout=1.5), dict(proj_size=-1)]:
        ref_type, ref_msg = raised(lambda: nn.LSTM(I, H, **kwargs))
        fused_type, fused_msg = raised(lambda: rnnfused.LSTM(I, H, **kwargs))
        assert (fused_type, fused_msg) == (ref_type, ref_msg)


def test_op_level_checks_name_the_argument():
    """The ops check their own contract: device, dtype and shape errors name the argument."""
    x = torch.randn(3, 2, I)
    w_ih, w_hh = torch.randn(4 * H, I), torch.randn(4 * H, H)
    h0, c0 = torch.zeros(2, H), torch.zeros(2, H)
    with pytest.raises(RuntimeError, match="w_hh must have shape"):
        rnnfused.ops.lstm_layer(x, w_ih, torch.randn(4 * H, H + 1), None, None, None, h0, c0)
    with pytest.raises(RuntimeError, match="c0 has dtype Double but input has dtype Float"):
        rnnfused.ops.lstm_layer(x, w_ih, w_hh, None, None, None, h0, c0.double())
    # 16-bit calls run in float32 on most CPUs: a mismatch must still be reported as it is.
    with pytest.raises(RuntimeError, match="w_hh has dtype Float but input has dtype BFloat16"):
        rnnfused.ops.lstm_layer(x.bfloat16(), w_ih.bfloat16(), w_hh, None, None, None, h0.bfloat16(), c0.bfloat16())
    with pytest.raises(RuntimeError, match="h0 has dtype Half but input has dtype BFloat16"):
        rnnfused.ops.rnn_layer(x.bfloat16(), torch.randn(H, I).bfloat16(), torch.randn(H, H).bfloat16(), None, None,
                               h0.half(), None, False, "tanh")
    with pytest.raises(RuntimeError, match="h0 must have shape"):
        rnnfused.ops.lstm_layer(x, w_ih, w_hh, None, None, None, torch.zeros(3, H), c0)
    with pytest.raises(RuntimeError, match="batch_sizes must be non-increasing"):
        rnnfused.ops.lstm_layer(torch.randn(5, I), w_ih, w_hh, None, None, None, h0, c0,
                                torch.tensor([2, 3]))
    with pytest.raises(RuntimeError, match="batch_sizes sums to"):
        rnnfused.ops.lstm_layer(torch.randn(6, I), w_ih, w_hh, None, None, None, h0, c0,
                                torch.tensor([2, 2]))
    with pytest.raises(RuntimeError, match="nonlinearity must be 'tanh' or 'relu'"):
        rnnfused.ops.rnn_layer(x, torch.randn(H, I), torch.randn(H, H), None, None, h0, None, False, "gelu")
