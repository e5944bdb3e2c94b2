"""Attention document classifiers (Yang et al., NAACL 2016, "Hierarchical Attention Networks for
Document Classification") on rnnfused bidirectional LSTMs.

The attention pooling is plain PyTorch (WordAttentionPooling); the recurrent encoders are the
fused rnnfused.LSTM.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from ._sequences import Tokens, check_lengths, embed_sequence, padding_mask, unpack
from .layers import WordAttentionPooling


class _AttentiveEncoder(nn.Module):
    """Bidirectional rnnfused.LSTM over vectors, then attention pooling over the real steps."""

    def __init__(self, input_size: int, hidden_size: int, attention_size: int, num_layers: int, dropout: float):
        from .. import LSTM

        super().__init__()
        self.rnn = LSTM(input_size, hidden_size, num_layers=num_layers, bidirectional=True, batch_first=True,
                        dropout=dropout if num_layers > 1 else 0.0)
        self.attention = WordAttentionPooling(2 * hidden_size, attention_size)

    def forward(self, rnn_input, steps: int):
        """rnn_input: (B, T, E) or PackedSequence -> (pooled (B, 2H), alpha (B, T))."""
        output, _ = self.rnn(rnn_input)
        output, lengths = unpack(output, steps)
        return self.attention(output, padding_mask(lengths, steps, output.device))


class AttentionDocumentClassifier(nn.Module):
    """Embeddings -> BiLSTM -> word attention pooling (Yang et al. 2016 eqs. 5-7) -> linear.

    forward(tokens (B, T) | PackedSequence, lengths (B,) | None, return_attention=False)
        -> logits (B, num_classes), and alpha (B, T) (attention weights, 0 at padding) when
        return_attention.
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_classes: int,
                 attention_size: int | None = None, num_layers: int = 1, dropout: float = 0.0,
                 padding_idx: int | None = 0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout)
        self.encoder = _AttentiveEncoder(embed_dim, hidden_size, attention_size or 2 * hidden_size, num_layers,
                                         dropout)
        self.head = nn.Linear(2 * hidden_size, num_classes)

    def forward(self, tokens: Tokens, lengths=None, return_attention: bool = False):
        rnn_input, steps = embed_sequence(lambda ids: self.dropout(self.embedding(ids)), tokens, lengths)
        pooled, alpha = self.encoder(rnn_input, steps)
        logits = self.head(self.dropout(pooled))
        return (logits, alpha) if return_attention else logits


class HierarchicalAttentionClassifier(nn.Module):
    """Yang et al. 2016's hierarchical network: a word-level BiLSTM with attention pooling makes
    one vector per sentence; a sentence-level BiLSTM with attention pooling makes one vector per
    document; a linear layer classifies it.

    forward(tokens (B, S, W), sentence_lengths (B, S), return_attention=False):
        tokens: documents of up to S sentences of up to W words.
        sentence_lengths: words in each sentence; 0 marks a padding sentence. Each document has
            at least one sentence and its real sentences come first.
        -> logits (B, num_classes), and (word_alpha (B, S, W), sentence_alpha (B, S)) when
        return_attention (zeros at padding).
    Padding sentences are never run through the word encoder.
    """

    def __init__(self, vocab_size: int, embed_dim: int, word_hidden_size: int, sentence_hidden_size: int,
                 num_classes: int, attention_size: int | None = None, dropout: float = 0.0,
                 padding_idx: int | None = 0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout)
        self.words = _AttentiveEncoder(embed_dim, word_hidden_size, attention_size or 2 * word_hidden_size, 1, 0.0)
        self.sentences = _AttentiveEncoder(2 * word_hidden_size, sentence_hidden_size,
                                           attention_size or 2 * sentence_hidden_size, 1, 0.0)
        self.head = nn.Linear(2 * sentence_hidden_size, num_classes)

    def forward(self, tokens: Tensor, sentence_lengths: Tensor, return_attention: bool = False):
        if not isinstance(tokens, Tensor) or tokens.dim() != 3:
            raise ValueError(f"tokens must be (B, S, W) token ids, got {getattr(tokens, 'shape', type(tokens))}")
        B, S, W = tokens.shape
        if tuple(sentence_lengths.shape) != (B, S):
            raise ValueError(f"sentence_lengths must have shape {(B, S)}, got {tuple(sentence_lengths.shape)}")
        sentence_lengths = sentence_lengths.to("cpu", torch.int64)
        real = sentence_lengths > 0
        num_sentences = real.sum(dim=1)
        if bool((num_sentences == 0).any()) or not torch.equal(real, padding_mask(num_sentences, S, "cpu")):
            raise ValueError("every document needs at least one sentence, and its real sentences must come first "
                             "(sentence_lengths > 0 for a prefix of the S sentences)")
        flat = real.flatten()
        words = tokens.reshape(B * S, W)[flat.to(tokens.device)]
        word_lengths = check_lengths(sentence_lengths.flatten()[flat], int(flat.sum()), W)
        rnn_input, _ = embed_sequence(lambda ids: self.dropout(self.embedding(ids)), words, word_lengths)
        sentence_vectors, word_alpha = self.words(rnn_input, W)  # (n_real, 2Hw), (n_real, W)

        index = flat.nonzero().squeeze(1).to(tokens.device)
        doc = sentence_vectors.new_zeros(B * S, sentence_vectors.shape[-1]).index_copy(0, index, sentence_vectors)
        doc_input = pack_padded_sequence(doc.view(B, S, -1), num_sentences, batch_first=True, enforce_sorted=False)
        pooled, sentence_alpha = self.sentences(doc_input, S)
        logits = self.head(self.dropout(pooled))
        if not return_attention:
            return logits
        word_alpha_full = word_alpha.new_zeros(B * S, W).index_copy(0, index, word_alpha).view(B, S, W)
        return logits, (word_alpha_full, sentence_alpha)
