"""Token batches in and out of the recurrent encoders: input checks, embedding into a padded or
packed sequence, unpacking, masks and final states. Shared by every model of rnnfused.models.

Conventions of rnnfused.models: token ids are a batch-first LongTensor (B, T) with optional
``lengths`` (B,) (each in [1, T]; positions past a sequence's length are padding), or a
PackedSequence of token ids (as ``pack_padded_sequence(ids, lengths, batch_first=True,
enforce_sorted=False)`` makes it), whose lengths are implied.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

Tokens = Tensor | PackedSequence


def check_lengths(lengths, batch: int, steps: int) -> Tensor:
    """lengths as an int64 CPU tensor (B,), each in [1, steps]; clear errors otherwise."""
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.numel() != batch:
        raise ValueError(f"lengths must have shape ({batch},) for a batch of {batch}, got {tuple(lengths.shape)}")
    if lengths.is_floating_point() or lengths.is_complex():
        raise TypeError(f"lengths must be integers, got {lengths.dtype}")
    lengths = lengths.to("cpu", torch.int64)
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ValueError(f"lengths must lie in [1, {steps}] (the padded length), got {lengths.tolist()}")
    return lengths


def _check_ids(ids: Tensor, name: str = "tokens") -> None:
    if ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must hold integer token ids (int64), got {ids.dtype}")


def embed_sequence(embed: Callable[[Tensor], Tensor], tokens: Tokens, lengths=None) -> tuple[Tensor | PackedSequence, int]:
    """Embeds token ids for a batch-first recurrent module.

    embed: maps ids (any shape) to vectors (same shape + (E,)).
    Returns (rnn input, T): a PackedSequence when ``tokens`` is packed or ``lengths`` is given,
    else the dense (B, T, E) embeddings; T is the padded length the outputs unpack to.
    """
    if isinstance(tokens, PackedSequence):
        if lengths is not None:
            raise ValueError("pass lengths only with padded (B, T) tokens: a PackedSequence carries its own")
        _check_ids(tokens.data)
        return tokens._replace(data=embed(tokens.data)), int(tokens.batch_sizes.numel())
    if not isinstance(tokens, Tensor) or tokens.dim() != 2:
        raise ValueError("tokens must be a (B, T) tensor of token ids or a PackedSequence of them, got "
                         + (f"shape {tuple(tokens.shape)}" if isinstance(tokens, Tensor) else type(tokens).__name__))
    _check_ids(tokens)
    batch, steps = tokens.shape
    if steps == 0:
        raise ValueError("tokens must have at least one time step")
    embedded = embed(tokens)
    if lengths is None:
        return embedded, steps
    lengths = check_lengths(lengths, batch, steps)
    return pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False), steps


def unpack(output: Tensor | PackedSequence, steps: int) -> tuple[Tensor, Tensor]:
    """(padded batch-first output (B, T, ...) with zeros past each length, lengths (B,) int64 CPU)."""
    if isinstance(output, PackedSequence):
        return pad_packed_sequence(output, batch_first=True, total_length=steps)
    return output, torch.full((output.shape[0],), output.shape[1], dtype=torch.int64)


def padding_mask(lengths: Tensor, steps: int, device) -> Tensor:
    """(B, T) bool: True at real tokens, False at padding."""
    return torch.arange(steps, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)


def last_step(output: Tensor, lengths: Tensor) -> Tensor:
    """output[b, lengths[b] - 1] for every b: (B, T, D) -> (B, D)."""
    index = (lengths.to(output.device) - 1).view(-1, 1, 1).expand(-1, 1, output.shape[-1])
    return output.gather(1, index).squeeze(1)


def final_hidden(state, num_directions: int) -> Tensor:
    """The last layer's final hidden state of every direction, concatenated: (B, D * H).
    ``state`` is an LSTM's (h_n, c_n) or an RNN's h_n, each (layers * D, B, H)."""
    h_n = state[0] if isinstance(state, tuple) else state
    return torch.cat(list(h_n[-num_directions:]), dim=-1)


def recurrent_layer(kind: str, input_size: int, hidden_size: int, **kwargs) -> nn.Module:
    """A batch-first rnnfused.LSTM (kind 'lstm') or rnnfused.RNN (kind 'rnn_tanh' / 'rnn_relu')."""
    from .. import LSTM, RNN

    if kind == "lstm":
        return LSTM(input_size, hidden_size, batch_first=True, **kwargs)
    if kind in ("rnn_tanh", "rnn_relu"):
        return RNN(input_size, hidden_size, batch_first=True, nonlinearity=kind[4:], **kwargs)
    raise ValueError(f"rnn must be 'lstm', 'rnn_tanh' or 'rnn_relu', got {kind!r}")
