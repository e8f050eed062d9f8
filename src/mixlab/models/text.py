"""Staged text classifiers: Kim CNN and BiLSTM with attention (AMP paper backbones, CNN-rand / RNN-rand).

Every text model is a :class:`~mixlab.models.StagedNet` with two stages, so the mixers of the AMP paper are
"mix at stage k":

* ``stages[0]``: token ids ``(B, L)`` (0 = padding) -> word embeddings with a mask channel ``(B, L, D + 1)``.
  The last channel is 1 at real tokens and 0 at padding; mixing it gives a non-zero value wherever either
  sentence has a token, so models read ``mask = h[..., -1] != 0`` and a mixed pair attends over the union of
  both sentences' tokens. Mixing at stage 1 is **WordMixup** (Guo et al. 2019).
* ``stages[1]``: embeddings -> the sentence vector ``(B, D_s)`` (Kim CNN: concatenated max-pooled filter
  outputs; BiLSTM: the attention-pooled state). Mixing the output of both stages is **SentMixup**.
* ``pool`` is the identity; ``head`` is dropout (and ReLU for the BiLSTM, as in the AMP code) + linear.

``mix_stages = (1,)``: Manifold Mixup on a text model mixes word embeddings (integer ids cannot be mixed).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .staged import StagedNet


class TokenEmbedding(nn.Module):
    """ids ``(B, L)`` -> ``(B, L, D + 1)``: embeddings (padding row fixed at zero) plus the mask channel."""

    def __init__(self, vocab_size: int, dim: int, pad_id: int = 0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.pad_id = pad_id

    def forward(self, ids: Tensor) -> Tensor:
        if ids.is_floating_point():
            raise TypeError("text models take token ids (LongTensor); mix text at the embedding with wordmixup")
        mask = (ids != self.pad_id).to(self.embedding.weight.dtype)
        return torch.cat([self.embedding(ids), mask[..., None]], dim=-1)


def split_mask(h: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, L, D + 1)`` -> embeddings ``(B, L, D)`` and boolean token mask ``(B, L)``."""
    return h[..., :-1], h[..., -1] != 0


class TextNet(StagedNet):
    """Base of the staged text models (see the module docstring)."""

    gap_linear_head = False
    mix_stages = (1,)
    #: shortest padded length the encoder accepts (Kim CNN: its widest filter)
    min_length = 1
    #: True when the model brings its own tokeniser (pre-trained encoders); else Kim's tokeniser + vocabulary
    pretrained_tokenizer = False

    def pool(self, h: Tensor) -> Tensor:
        return h


class KimConv(nn.Module):
    def __init__(self, dim: int, filter_sizes: tuple[int, ...], num_filters: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(dim, num_filters, k) for k in filter_sizes)

    def forward(self, h: Tensor) -> Tensor:
        emb, _ = split_mask(h)  # Kim's CNN max-pools over padded positions too (zero embeddings)
        emb = emb.transpose(1, 2)  # (B, D, L)
        return torch.cat([F.relu(conv(emb)).amax(dim=2) for conv in self.convs], dim=1)


class KimCNN(TextNet):
    """Kim (2014) CNN-rand: 300-d random embeddings, filters 3/4/5 x 100, ReLU, max over time, dropout 0.5.

    Sentence vector: the 300 concatenated max-pooled features (SentMixup mixes it). Padding is pooled over as in
    Kim's code; batches are padded to at least the widest filter.
    Kim. Convolutional Neural Networks for Sentence Classification. EMNLP 2014.
    """

    def __init__(self, num_classes: int, vocab_size: int, embed_dim: int = 300, filter_sizes=(3, 4, 5),
                 num_filters: int = 100, dropout: float = 0.5):
        super().__init__()
        self.stages = nn.ModuleList([TokenEmbedding(vocab_size, embed_dim),
                                     KimConv(embed_dim, tuple(filter_sizes), num_filters)])
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_filters * len(filter_sizes), num_classes))
        self._embedding_dim = num_filters * len(filter_sizes)
        self.min_length = max(filter_sizes)


class AttentionLSTM(nn.Module):
    """BiLSTM, then attention over time: ``alpha = softmax_t(tanh(H_t) . w)``, sentence ``sum_t alpha_t H_t``.

    Padding is masked out of the softmax (the AMP code did not mask; it padded every sentence to the longest in
    the corpus). Sequences are not packed: the backward direction reads right-padding first, as in that code.
    """

    def __init__(self, dim: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, layers, batch_first=True, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.w = nn.Parameter(torch.zeros(2 * hidden))  # zero init: uniform attention at the start (AMP code)

    def forward(self, h: Tensor) -> Tensor:
        emb, mask = split_mask(h)
        H, _ = self.lstm(emb)
        scores = torch.tanh(H) @ self.w
        alpha = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        return (alpha.unsqueeze(-1) * H).sum(1)


class BiLSTMAttention(TextNet):
    """BiLSTM with attention (Wang et al. 2016 / the AMP code's RNN): 300-d random embeddings, 2 bidirectional
    layers of hidden 512, attention pooling; head = ReLU, dropout 0.5, linear (the AMP code applies ReLU after
    the pooled vector, i.e. after SentMixup's mixing point).
    """

    def __init__(self, num_classes: int, vocab_size: int, embed_dim: int = 300, hidden: int = 512, layers: int = 2,
                 dropout: float = 0.5):
        super().__init__()
        self.stages = nn.ModuleList([TokenEmbedding(vocab_size, embed_dim),
                                     AttentionLSTM(embed_dim, hidden, layers, dropout)])
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * hidden, num_classes))
        self._embedding_dim = 2 * hidden
