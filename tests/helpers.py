"""Parity machinery shared by the test files: run a torch.nn module and its rnnfused twin on the
same weights and inputs, and compare outputs and every gradient."""
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence


def twin(fused_cls, torch_cls, *args, device="cpu", dtype=torch.float64, **kwargs):
    """(torch module, rnnfused module) with identical weights."""
    reference = torch_cls(*args, **kwargs).to(device=device, dtype=dtype)
    fused = fused_cls(*args, **kwargs).to(device=device, dtype=dtype)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def _flatten(result):
    """All tensors of a module result, in order (PackedSequence -> its data)."""
    if isinstance(result, PackedSequence):
        return [result.data]
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for item in result for t in _flatten(item)]


def run_with_grads(module, make_inputs):
    """Runs module(*inputs) and backpropagates a random weighting of every output.

    make_inputs() -> (call_args, leaves): fresh leaf tensors requiring grad and the arguments
    built from them. Returns (outputs, grads of leaves, grads of parameters).
    """
    torch.manual_seed(2024)  # the same inputs (and dropout masks) for both modules
    call_args, leaves = make_inputs()
    outputs = _flatten(module(*call_args))
    gen = torch.Generator().manual_seed(1234)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o)).sum() for o in outputs)
    params = [p for p in module.parameters()]
    grads = torch.autograd.grad(loss, leaves + params, allow_unused=True)
    return outputs, grads[: len(leaves)], grads[len(leaves):]


def assert_parity(reference, fused, make_inputs, atol, rtol, reference_context=None):
    """Same outputs and the same gradients of every input leaf and parameter."""
    import contextlib

    with reference_context or contextlib.nullcontext():
        ref_out, ref_leaf_grads, ref_param_grads = run_with_grads(reference, make_inputs)
    out, leaf_grads, param_grads = run_with_grads(fused, make_inputs)
    assert len(out) == len(ref_out)
    for i, (a, b) in enumerate(zip(out, ref_out)):
        assert a.shape == b.shape, f"output {i}: shape {tuple(a.shape)} vs torch {tuple(b.shape)}"
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m: f"output {i}: {m}")
    for i, (a, b) in enumerate(zip(leaf_grads, ref_leaf_grads)):
        assert (a is None) == (b is None), f"input grad {i} presence differs"
        if a is not None:
            torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m: f"input grad {i}: {m}")
    names = [n for n, _ in fused.named_parameters()]
    for name, a, b in zip(names, param_grads, ref_param_grads):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m: f"grad of {name}: {m}")


def make_packed_inputs(lengths, input_size, enforce_sorted, device, dtype, batch_first=False):
    """A function returning a fresh padded leaf and the PackedSequence built from it."""
    T, B = max(lengths), len(lengths)

    def make():
        shape = (B, T, input_size) if batch_first else (T, B, input_size)
        padded = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
        packed = pack_padded_sequence(padded, torch.tensor(lengths), batch_first=batch_first,
                                      enforce_sorted=enforce_sorted)
        return (packed,), [padded]

    return make
