"""Ready-made models on rnnfused's fused recurrent ops (docs/models.md).

Token inputs everywhere: batch-first ids (B, T) with optional lengths (B,), or a PackedSequence
of ids (rnnfused/models/_sequences.py).

- SequenceClassifier, SequenceTagger, LanguageModel: embeddings + rnnfused.LSTM / RNN.
- AttentionDocumentClassifier, HierarchicalAttentionClassifier: Yang et al. (2016) attention
  pooling on bidirectional rnnfused.LSTMs.
- UniformLayerMTL, CoupledLayerMTL, SharedLayerMTL: the multi-task RNNs of Liu, Qiu & Huang
  (IJCAI 2016).
- GatedCandidateLSTM, WordAttentionPooling: their building blocks.
"""
from .attention import AttentionDocumentClassifier, HierarchicalAttentionClassifier
from .layers import GatedCandidateLSTM, WordAttentionPooling
from .multitask import CoupledLayerMTL, SharedLayerMTL, UniformLayerMTL
from .sequence import LanguageModel, SequenceClassifier, SequenceTagger

__all__ = ["SequenceClassifier", "SequenceTagger", "LanguageModel", "AttentionDocumentClassifier",
           "HierarchicalAttentionClassifier", "UniformLayerMTL", "CoupledLayerMTL", "SharedLayerMTL",
           "GatedCandidateLSTM", "WordAttentionPooling"]
