r"""The three multi-task RNN text classifiers of Liu, Qiu & Huang, "Recurrent Neural Network for
Text Classification with Multi-Task Learning" (IJCAI 2016, arXiv:1605.05101), on rnnfused's
fused recurrent ops.

All three take a batch of one task's texts and that task's index, and return that task's
logits from a per-task output layer on the final hidden state, :math:`\hat y^{(m)} =
\mathrm{softmax}(W^{(m)} h_T^{(m)} + b^{(m)})`. Training is the paper's joint objective
:math:`\sum_m \lambda_m L(\hat y^{(m)}, y^{(m)})`, with batches drawn from the tasks in turn
(see examples/multitask_rotten_tomatoes.py).

- UniformLayerMTL (Model-I): one LSTM shared by every task, reading the concatenation of a
  task-specific and a shared word embedding, :math:`\hat x_t^{(m)} = x_t^{(m)} \oplus x_t^{(s)}`.
- CoupledLayerMTL (Model-II): one LSTM per task; each task's candidate cell reads every task's
  previous hidden state through a gate (eqs. 10-11),
  :math:`\tilde c_t^{(m)} = \tanh(W_c^{(m)} x_t + \sum_{i} g^{(i\to m)} \odot U_c^{(i\to m)} h_{t-1}^{(i)})`,
  :math:`g^{(i\to m)} = \sigma(W_g^{(m)} x_t + U_g^{(i\to m)} h_{t-1}^{(i)})`.
  All task LSTMs run on every batch, coupled step by step, in ONE sequence-level fused op call
  (GatedCandidateLSTM with one stream per task): the cross-task recurrence needs no Python loop.
- SharedLayerMTL (Model-III): a bidirectional LSTM shared by every task; its states
  :math:`h_t^{(s)} = \overrightarrow{h}_t \oplus \overleftarrow{h}_t` enter each task's LSTM
  through a gate (eqs. 12-16):
  :math:`\tilde c_t^{(m)} = \tanh(W_c^{(m)} x_t + g^{(m)} \odot U_c^{(m)} h_{t-1}^{(m)} + g^{(s\to m)} \odot U^{(s)} h_t^{(s)})`,
  :math:`g^{(m)} = \sigma(W_g^{(m)} x_t + U_g^{(m)} h_{t-1}^{(m)})`,
  :math:`g^{(s\to m)} = \sigma(W_g^{(m)} x_t + U_g^{(s\to m)} h_t^{(s)})`.
  Each task LSTM is one sequence-level fused op call (GatedCandidateLSTM, one stream, the
  shared states as its context: their gated term is computed for all steps at once).

Where these models differ from the paper (equation numbers as in the arXiv version; check them
against your copy):

- No peepholes. The paper's LSTM (Sec. 2, eqs. 1-3) lets the input, forget and output gates
  read the cell, :math:`V_i c_{t-1}`, :math:`V_f c_{t-1}`, :math:`V_o c_t`. rnnfused's LSTMs
  have none (as torch.nn.LSTM and cuDNN), and neither does the gated-candidate op; they are
  not offered.
- Biases are added to every gate and to the candidate; the paper's equations omit them.
- Gates are vectors (one value per hidden unit, applied with ⊙). Where the paper writes the
  recurrent gate weight as :math:`U_g^{(i)}` (one per source task), each (source, target) pair
  has its own :math:`U_g^{(i\to m)}` here, which contains the shared case.
  :math:`W_g^{(m)} x_t` is shared by all gates into task m, as in the paper.
- The paper initialises embeddings with pre-trained word vectors, pre-trains the shared layer
  with a language model and fine-tunes each task at the end; none of that is built in (load
  pre-trained vectors into ``embedding.weight`` yourself if you have them).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ._sequences import Tokens, embed_sequence
from .layers import GatedCandidateLSTM


class _MultiTaskClassifier(nn.Module):
    """Per-task output layers on a (B, feature_size) representation; subclasses define
    features(tokens, lengths, task)."""

    def __init__(self, num_classes: Sequence[int], feature_size: int, dropout: float):
        super().__init__()
        num_classes = list(num_classes)
        if not num_classes or any(not isinstance(c, int) or c < 1 for c in num_classes):
            raise ValueError(f"num_classes must list the number of classes of each task (ints >= 1), got {num_classes}")
        self.num_tasks = len(num_classes)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleList(nn.Linear(feature_size, c) for c in num_classes)

    def forward(self, tokens: Tokens, lengths=None, task: int = 0) -> Tensor:
        """tokens (B, T) ids | PackedSequence, lengths (B,) | None, task index -> logits (B, num_classes[task])."""
        if not isinstance(task, int) or not 0 <= task < self.num_tasks:
            raise ValueError(f"task must be an int in [0, {self.num_tasks}), got {task!r}")
        return self.heads[task](self.dropout(self.features(tokens, lengths, task)))

    def features(self, tokens: Tokens, lengths, task: int) -> Tensor:
        raise NotImplementedError


class UniformLayerMTL(_MultiTaskClassifier):
    """Model-I: a shared LSTM over [task embedding; shared embedding] of each word."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_classes: Sequence[int],
                 dropout: float = 0.0, padding_idx: int | None = 0):
        from .. import LSTM

        super().__init__(num_classes, hidden_size, dropout)
        self.shared_embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.task_embeddings = nn.ModuleList(nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
                                             for _ in range(self.num_tasks))
        self.lstm = LSTM(2 * embed_dim, hidden_size, batch_first=True)

    def features(self, tokens, lengths, task):
        def embed(ids):
            return self.dropout(torch.cat([self.task_embeddings[task](ids), self.shared_embedding(ids)], dim=-1))

        rnn_input, _ = embed_sequence(embed, tokens, lengths)
        _, (h_n, _) = self.lstm(rnn_input)
        return h_n[-1]


class CoupledLayerMTL(_MultiTaskClassifier):
    """Model-II: one LSTM per task, coupled through gated candidate cells (one fused op call)."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_classes: Sequence[int],
                 dropout: float = 0.0, padding_idx: int | None = 0):
        super().__init__(num_classes, hidden_size, dropout)
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.lstm = GatedCandidateLSTM(embed_dim, hidden_size, num_streams=self.num_tasks, batch_first=True)

    def features(self, tokens, lengths, task):
        rnn_input, _ = embed_sequence(lambda ids: self.dropout(self.embedding(ids)), tokens, lengths)
        _, (h_n, _) = self.lstm(rnn_input)  # every task's stream runs; task m reads its own
        return h_n[task]


class SharedLayerMTL(_MultiTaskClassifier):
    """Model-III: a shared bidirectional LSTM whose states enter each task's LSTM through a gate."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_classes: Sequence[int],
                 shared_hidden_size: int | None = None, dropout: float = 0.0, padding_idx: int | None = 0):
        from .. import LSTM

        super().__init__(num_classes, hidden_size, dropout)
        shared_hidden_size = shared_hidden_size or hidden_size
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.shared = LSTM(embed_dim, shared_hidden_size, bidirectional=True, batch_first=True)
        self.task_lstms = nn.ModuleList(
            GatedCandidateLSTM(embed_dim, hidden_size, num_streams=1, context_size=2 * shared_hidden_size,
                               batch_first=True)
            for _ in range(self.num_tasks))

    def features(self, tokens, lengths, task):
        rnn_input, _ = embed_sequence(lambda ids: self.dropout(self.embedding(ids)), tokens, lengths)
        shared_states, _ = self.shared(rnn_input)  # h_t^(s), packed like the input when it is packed
        _, (h_n, _) = self.task_lstms[task](rnn_input, context=shared_states)
        return h_n[0]
