"""rnnfused.convert: every torch.nn recurrent module, nested anywhere, becomes its rnnfused twin
(and back) with the same weights, options, device, dtype and mode; outputs do not change."""
import pytest
import torch
from torch import nn

import rnnfused

I, H, T, B = 5, 6, 4, 3
PLAIN = (nn.LSTM, nn.RNN, nn.LSTMCell, nn.RNNCell)
FUSED = (rnnfused.LSTM, rnnfused.RNN, rnnfused.LSTMCell, rnnfused.RNNCell)


class Nested(nn.Module):
    """Recurrent modules in a Sequential, a ModuleList (one of them twice), a ModuleDict and a
    plain attribute; forward uses all of them."""

    def __init__(self):
        super().__init__()
        shared = nn.LSTM(I, H, batch_first=True)
        self.encoder = nn.Sequential(nn.Linear(I, I), nn.Tanh())
        self.stack = nn.ModuleList([shared, nn.GRU(H, H, batch_first=True), shared])
        self.heads = nn.ModuleDict({
            "proj": nn.LSTM(H, H, num_layers=2, bidirectional=True, proj_size=3, dropout=0.25),
            "relu": nn.RNN(6, H, nonlinearity="relu", bias=False, bidirectional=True),
        })
        self.cells = nn.Sequential(nn.Sequential(nn.LSTMCell(H, H)), nn.RNNCell(H, H, nonlinearity="relu"))

    def forward(self, x):  # x (B, T, I)
        y = self.encoder(x)
        y, _ = self.stack[0](y)
        y, _ = self.stack[1](y)
        _, (h, _) = self.stack[2](self.encoder(x))
        z, _ = self.heads["proj"](y.transpose(0, 1))
        r, _ = self.heads["relu"](z)
        hx, cx = self.cells[0][0](r[-1, :, :H])
        return torch.cat([r.sum(0), self.cells[1](hx, h[0]), cx], dim=-1)


def recurrent_types(model):
    return [type(m) for m in model.modules() if isinstance(m, PLAIN)]


def test_every_recurrent_module_is_swapped_and_back():
    model = Nested().double().eval()  # eval: no dropout masks to match
    x = torch.randn(B, T, I, dtype=torch.float64)
    expected = model(x)

    fused = rnnfused.convert(model)
    assert all(t in FUSED for t in recurrent_types(fused)), recurrent_types(fused)
    assert all(t in PLAIN for t in recurrent_types(model)), "inplace=False must leave the original alone"
    assert type(fused.stack[1]) is nn.GRU  # no rnnfused twin: untouched
    assert fused.stack[0] is fused.stack[2], "a shared module stays shared"
    torch.testing.assert_close(fused(x), expected, atol=1e-12, rtol=1e-10)

    back = rnnfused.convert(fused, to="torch")
    assert all(t in PLAIN for t in recurrent_types(back))
    assert back.stack[0] is back.stack[2]
    torch.testing.assert_close(back(x), expected, atol=0, rtol=0)


def test_options_weights_and_modes_are_carried():
    model = Nested()
    model.heads["proj"].eval()
    model.stack[0].weight_hh_l0.requires_grad_(False)
    fused = rnnfused.convert(model)
    for (name, old), new in zip(model.named_modules(), fused.modules()):
        if not isinstance(old, PLAIN):
            continue
        assert type(new) is FUSED[PLAIN.index(type(old))], name
        assert repr(new) == repr(old), name  # torch's repr lists every constructor option
        assert new.training == old.training, name
        for (pname, p), q in zip(old.named_parameters(), new.parameters()):
            assert q.dtype == p.dtype and q.device == p.device and q.requires_grad == p.requires_grad, pname
            assert torch.equal(p, q), pname
    assert model.state_dict().keys() == fused.state_dict().keys()


def test_inplace_keeps_parameter_identity_so_an_optimizer_keeps_working():
    model = nn.Sequential(nn.LSTM(I, H))
    params = list(model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert rnnfused.convert(model, inplace=True) is model
    assert type(model[0]) is rnnfused.LSTM
    assert all(p is q for p, q in zip(params, model.parameters()))
    before = [p.detach().clone() for p in params]
    out, _ = model(torch.randn(T, B, I))
    out.sum().backward()
    optimizer.step()
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), before))


@pytest.mark.parametrize("cls", PLAIN)
def test_a_bare_recurrent_module_is_converted_itself(cls):
    module = cls(I, H).double()
    fused = rnnfused.convert(module)
    assert type(fused) is FUSED[PLAIN.index(cls)]
    x = torch.randn(B, I, dtype=torch.float64) if "Cell" in cls.__name__ else torch.randn(T, B, I, dtype=torch.float64)
    for a, b in zip(torch.utils._pytree.tree_leaves(fused(x)), torch.utils._pytree.tree_leaves(module(x))):
        torch.testing.assert_close(a, b)


def test_subclasses_are_left_alone():
    class MyLSTM(nn.LSTM):
        pass

    model = nn.Sequential(MyLSTM(I, H))
    assert type(rnnfused.convert(model)[0]) is MyLSTM
    # rnnfused's classes subclass torch's: converting twice is a no-op.
    fused = rnnfused.convert(nn.Sequential(nn.LSTM(I, H)))
    assert type(rnnfused.convert(fused)[0]) is rnnfused.LSTM


def test_device_follows(device):
    model = nn.Sequential(nn.LSTM(I, H)).to(device)
    fused = rnnfused.convert(model)
    assert next(fused.parameters()).device.type == device.type
    x = torch.randn(T, B, I, device=device)
    torch.testing.assert_close(fused(x)[0], model(x)[0], atol=2e-5, rtol=1e-4)


def test_hooks_on_a_replaced_module_warn():
    model = nn.Sequential(nn.LSTM(I, H))
    model[0].register_forward_hook(lambda *args: None)
    with pytest.warns(UserWarning, match="hooks registered on a LSTM are not carried over"):
        rnnfused.convert(model)


def test_bad_arguments():
    with pytest.raises(ValueError, match="to must be 'rnnfused' or 'torch'"):
        rnnfused.convert(nn.LSTM(I, H), to="cudnn")
    with pytest.raises(TypeError, match="expected an nn.Module"):
        rnnfused.convert(torch.randn(3))
