"""rnnfused.convert: swap torch.nn's recurrent modules for rnnfused's (or back) anywhere in a model.

    model = rnnfused.convert(model)               # nn.LSTM / nn.RNN / nn.LSTMCell / nn.RNNCell -> rnnfused
    model = rnnfused.convert(model, to="torch")   # and back

Only modules whose type is exactly one of the four torch classes (or, with ``to="torch"``,
exactly one of the four rnnfused classes) are replaced; subclasses are left alone, since they
may override forward. A replacement is built with the same constructor options, then takes
over the original's Parameter objects themselves: weights, device, dtype and requires_grad
come along unchanged, and so does any tying of those parameters to other modules. A module
that appears several times in the model (shared) is replaced by one new module everywhere.
"""
from __future__ import annotations

import copy
import warnings

from torch import nn

from .nn import LSTM, RNN, LSTMCell, RNNCell

_TO_RNNFUSED = {nn.LSTM: LSTM, nn.RNN: RNN, nn.LSTMCell: LSTMCell, nn.RNNCell: RNNCell}
_TO_TORCH = {fused: plain for plain, fused in _TO_RNNFUSED.items()}
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _constructor_options(module: nn.Module) -> dict:
    """The keyword arguments that rebuild ``module``'s class with the same configuration."""
    options = dict(input_size=module.input_size, hidden_size=module.hidden_size, bias=module.bias)
    if isinstance(module, nn.RNNBase):
        options.update(num_layers=module.num_layers, batch_first=module.batch_first,
                       dropout=module.dropout, bidirectional=module.bidirectional)
        if isinstance(module, nn.LSTM):
            options["proj_size"] = module.proj_size
    if isinstance(module, (nn.RNN, nn.RNNCell)):
        options["nonlinearity"] = module.nonlinearity
    return options


def _swap(module: nn.Module, target: type) -> nn.Module:
    """A ``target`` module configured like ``module`` that owns ``module``'s parameters."""
    if any(getattr(module, name) for name in _HOOK_DICTS):
        warnings.warn(f"rnnfused.convert: hooks registered on a {type(module).__name__} are not carried over "
                      "to its replacement; register them again on the converted model", stacklevel=3)
    # Built on the meta device: its own (random) parameters are replaced right away.
    new = target(**_constructor_options(module), device="meta")
    for name, param in module.named_parameters(recurse=False):
        setattr(new, name, param)  # RNNBase.__setattr__ keeps its flat weight list in step
    new.train(module.training)
    if isinstance(new, nn.RNNBase):
        new.flatten_parameters()  # cuDNN's contiguous weight buffer when on a GPU; no-op elsewhere
    return new


def convert(model: nn.Module, inplace: bool = False, to: str = "rnnfused") -> nn.Module:
    """Replaces every nn.LSTM, nn.RNN, nn.LSTMCell and nn.RNNCell in ``model`` (nested at any
    depth, ``model`` itself included) with its rnnfused twin, or the reverse with ``to="torch"``.

    Args:
        model: any nn.Module.
        inplace: modify ``model`` and return it; otherwise a deep copy is converted and
            ``model`` is left untouched.
        to: ``"rnnfused"`` or ``"torch"``.

    Returns:
        The converted model (``model`` itself when inplace, or when ``model`` is a recurrent
        module being replaced, the replacement). Parameters keep their identity in the converted
        model (inplace=True: an optimizer built on ``model`` keeps working). Hooks registered on
        a replaced module are not carried over (a warning says so).
    """
    if to not in ("rnnfused", "torch"):
        raise ValueError(f"rnnfused.convert: to must be 'rnnfused' or 'torch', got {to!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"rnnfused.convert: expected an nn.Module, got {type(model).__name__}")
    mapping = _TO_RNNFUSED if to == "rnnfused" else _TO_TORCH
    if not inplace:
        model = copy.deepcopy(model)
    replacements: dict[int, nn.Module] = {}  # id(old module) -> its replacement, for shared modules

    def replacement(module: nn.Module) -> nn.Module:
        if id(module) not in replacements:
            replacements[id(module)] = _swap(module, mapping[type(module)])
        return replacements[id(module)]

    if type(model) in mapping:
        return replacement(model)
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and type(child) in mapping:
                parent._modules[name] = replacement(child)
    return model
