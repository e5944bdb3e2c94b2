"""Embedding + rnnfused recurrent encoder models: a sequence classifier, a sequence tagger and a
language model. Token conventions: rnnfused/models/_sequences.py (batch-first ids (B, T) with
optional lengths (B,), or a PackedSequence of ids)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._sequences import Tokens, embed_sequence, final_hidden, last_step, recurrent_layer, unpack


class _Encoder(nn.Module):
    """Embedding -> dropout -> batch-first rnnfused LSTM / RNN. Shared by the models below."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int, bidirectional: bool,
                 rnn: str, dropout: float, padding_idx: int | None):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout)
        self.rnn = recurrent_layer(rnn, embed_dim, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                                   dropout=dropout if num_layers > 1 else 0.0)
        self.num_directions = 2 if bidirectional else 1
        self.output_size = self.num_directions * hidden_size

    def forward(self, tokens: Tokens, lengths=None, state=None):
        """-> (output (B, T, D*H) zero past each length, lengths (B,), final state of the rnn)."""
        rnn_input, steps = embed_sequence(lambda ids: self.dropout(self.embedding(ids)), tokens, lengths)
        output, state = self.rnn(rnn_input, state)
        output, lengths = unpack(output, steps)
        return output, lengths, state


class SequenceClassifier(nn.Module):
    """Embeddings -> rnnfused LSTM / RNN -> one vector per sequence -> linear layer -> logits.

    pooling:
        ``"last"``  the output at each sequence's last real step (the classic last-step
                    classifier; bidirectional: forward and backward outputs at that step).
        ``"final"`` the final hidden state of the last layer, both directions concatenated
                    when bidirectional (the backward direction's final state has read the whole
                    sequence, unlike its output at the last step). Same as "last" when
                    unidirectional.
    rnn: ``"lstm"``, ``"rnn_tanh"`` or ``"rnn_relu"`` (rnnfused.LSTM / rnnfused.RNN).

    forward(tokens (B, T) | PackedSequence, lengths (B,) | None) -> logits (B, num_classes).
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_classes: int, num_layers: int = 1,
                 bidirectional: bool = False, pooling: str = "last", rnn: str = "lstm", dropout: float = 0.0,
                 padding_idx: int | None = 0):
        super().__init__()
        if pooling not in ("last", "final"):
            raise ValueError(f"pooling must be 'last' or 'final', got {pooling!r}")
        self.pooling = pooling
        self.encoder = _Encoder(vocab_size, embed_dim, hidden_size, num_layers, bidirectional, rnn, dropout,
                                padding_idx)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.encoder.output_size, num_classes))

    def forward(self, tokens: Tokens, lengths=None) -> Tensor:
        output, lengths, state = self.encoder(tokens, lengths)
        if self.pooling == "last":
            features = last_step(output, lengths)
        else:
            features = final_hidden(state, self.encoder.num_directions)
        return self.head(features)


class SequenceTagger(nn.Module):
    """Embeddings -> (bidirectional by default) rnnfused LSTM / RNN -> per-step linear layer.

    forward(tokens (B, T) | PackedSequence, lengths (B,) | None) -> logits (B, T, num_tags).
    Positions past a sequence's length are padding: their logits are the head's bias alone and
    must be left out of the loss (e.g. cross_entropy with ignore_index on padded targets).
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_tags: int, num_layers: int = 1,
                 bidirectional: bool = True, rnn: str = "lstm", dropout: float = 0.0, padding_idx: int | None = 0):
        super().__init__()
        self.encoder = _Encoder(vocab_size, embed_dim, hidden_size, num_layers, bidirectional, rnn, dropout,
                                padding_idx)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.encoder.output_size, num_tags))

    def forward(self, tokens: Tokens, lengths=None) -> Tensor:
        return self.head(self.encoder(tokens, lengths)[0])


class LanguageModel(nn.Module):
    """Next-token language model: embeddings -> unidirectional rnnfused LSTM / RNN -> vocabulary logits.

    forward(tokens (B, T) | PackedSequence, lengths (B,) | None, state=None)
        -> (logits (B, T, vocab_size), state): logits[:, t] predict tokens[:, t + 1]; ``state``
        is the recurrent module's final state ((h_n, c_n) for the LSTM), to continue from.
    tie_weights: share the embedding matrix with the output layer (needs embed_dim == hidden_size).
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int = 1, rnn: str = "lstm",
                 dropout: float = 0.0, tie_weights: bool = False, padding_idx: int | None = None):
        super().__init__()
        self.encoder = _Encoder(vocab_size, embed_dim, hidden_size, num_layers, False, rnn, dropout, padding_idx)
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            if embed_dim != hidden_size:
                raise ValueError(f"tie_weights needs embed_dim == hidden_size, got {embed_dim} and {hidden_size}")
            self.decoder.weight = self.encoder.embedding.weight
        self.vocab_size = vocab_size

    def forward(self, tokens: Tokens, lengths=None, state=None):
        output, _, state = self.encoder(tokens, lengths, state)
        return self.decoder(self.dropout(output)), state

    @torch.no_grad()
    def generate(self, prefix: Tensor, steps: int, temperature: float = 1.0, greedy: bool = False,
                 generator: torch.Generator | None = None) -> Tensor:
        """Continues ``prefix`` by ``steps`` tokens.

        prefix: (B, P) or (P,) token ids, P >= 1. greedy: take the most likely token each step;
        otherwise sample from softmax(logits / temperature) (temperature > 0), with ``generator``
        if given. Returns the prefix followed by the new tokens, (B, P + steps) (or (P + steps,)).
        Runs in eval mode (no dropout) and restores the module's mode afterwards.
        """
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an int >= 0, got {steps!r}")
        if not greedy and not temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature!r}")
        unbatched = prefix.dim() == 1
        tokens = prefix.unsqueeze(0) if unbatched else prefix
        if tokens.dim() != 2 or tokens.shape[1] == 0:
            raise ValueError(f"prefix must be (B, P) or (P,) token ids with P >= 1, got shape {tuple(prefix.shape)}")
        was_training = self.training
        self.eval()
        try:
            logits, state = self(tokens)
            pieces = [tokens]
            for _ in range(steps):
                last = logits[:, -1].float()
                if greedy:
                    token = last.argmax(dim=-1, keepdim=True)
                else:
                    token = torch.multinomial(torch.softmax(last / temperature, dim=-1), 1, generator=generator)
                pieces.append(token)
                logits, state = self(token, state=state)
        finally:
            self.train(was_training)
        result = torch.cat(pieces, dim=1)
        return result.squeeze(0) if unbatched else result
