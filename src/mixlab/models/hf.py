"""Stages of a HuggingFace ``transformers`` BERT-family encoder, in the text-model convention of
:mod:`mixlab.models.text` (used by :class:`~mixlab.models.minilm.MiniLM` and by the staging adapter on a user's
``*ForSequenceClassification`` model).

* :class:`HFEmbedding`: token ids ``(B, L)`` -> the encoder's embedding output (word + position + segment,
  LayerNorm, dropout) with the mask channel appended, ``(B, L, D + 1)``. Mixing here is WordMixup.
* :class:`HFEncoder`: ``(B, L, D + 1)`` -> the sentence vector ``(B, D)``: the encoder layers under the attention
  mask read from the mask channel (a mixed pair attends over the union of both sentences' tokens), then the
  model's pooler (``[CLS]`` + dense + tanh), the ``[CLS]`` state, or masked mean pooling. Mixing its output is
  SentMixup.

Nothing is copied: both hold the encoder's own sub-modules. ``transformers`` is imported only here, on use.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .text import split_mask

POOLINGS = ("pooler", "cls", "mean")


def attention_mask(config, x: Tensor, mask: Tensor):
    """The 4-D attention mask the encoder's layers expect for a ``(B, L)`` boolean token mask, built as the
    model's own ``forward`` builds it (``transformers.masking_utils``; an additive mask where that is absent)."""
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError:  # older transformers: the classic additive (B, 1, 1, L) mask
        return torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(
            ~mask, torch.finfo(x.dtype).min)[:, None, None, :]
    return create_bidirectional_mask(config=config, inputs_embeds=x, attention_mask=mask.long())


class HFEmbedding(nn.Module):
    """ids ``(B, L)`` -> embeddings with the mask channel ``(B, L, D + 1)`` (1 at tokens, 0 at padding)."""

    def __init__(self, embeddings: nn.Module, pad_id: int = 0):
        super().__init__()
        self.embeddings = embeddings
        self.pad_id = int(pad_id)

    def forward(self, ids: Tensor) -> Tensor:
        if ids.is_floating_point():
            raise TypeError("a transformers text model takes token ids (LongTensor); mix text at the embedding "
                            "with wordmixup")
        h = self.embeddings(input_ids=ids)
        mask = (ids != self.pad_id).to(h.dtype)
        return torch.cat([h, mask[..., None]], dim=-1)


class HFEncoder(nn.Module):
    """``(B, L, D + 1)`` -> sentence vector ``(B, D)``: encoder layers, then ``pooling`` (see the module docstring)."""

    def __init__(self, encoder: nn.Module, config, pooling: str = "pooler", pooler: nn.Module | None = None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if pooling == "pooler" and pooler is None:
            raise ValueError("pooling='pooler' needs the model's pooler module (the model has none: use 'cls')")
        self.encoder, self.pooler, self.pooling = encoder, pooler, pooling
        self.config = config

    def forward(self, h: Tensor) -> Tensor:
        x, mask = split_mask(h)
        out = self.encoder(x, attention_mask=attention_mask(self.config, x, mask))
        seq = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        if self.pooling == "pooler":
            return self.pooler(seq)
        if self.pooling == "cls":
            return seq[:, 0]
        m = mask.to(seq.dtype)[..., None]
        return (seq * m).sum(1) / m.sum(1).clamp_min(1.0)
