"""Named, documented training protocols (``mixlab bench --protocol NAME``).

A protocol fixes the dataset, model, schedule and trials of a paper's table; ``-quick`` variants are scaled to
finish in minutes on 2 CPU cores and say how they were scaled. The protocols are data: ``mixlab/data/protocols.json``
(each with its source; groups of them with notes on where their settings come from), read on import. The
measurements behind the CPU-sized variants are in docs/notes/protocols.md.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

from .config import TrainConfig
from .registry import Registry


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    config: dict  # TrainConfig fields
    methods: tuple[str, ...]
    trials: int
    #: per-method extra method_kwargs
    method_kwargs: dict = field(default_factory=dict)
    scaling: str = ""  # for -quick variants: what was scaled and why
    source: str = ""
    #: cross-validation, for datasets without a test split (SUBJ, MR): ``cv_folds`` folds (the loader's ``fold=``);
    #: trial ``s`` trains one run on each of its ``folds_per_trial`` folds (default all: a whole cross-validation
    #: per seed; 1: trial ``s`` is fold ``s``), and its error is the mean over them (:meth:`train_configs`)
    cv_folds: int = 0
    folds_per_trial: int = 0
    #: where the settings come from (the notes of its group in protocols.json)
    notes: str = ""

    def train_config(self, method: str, seed: int, **overrides) -> TrainConfig:
        fields = {**self.config, **overrides}
        kwargs = {**self.method_kwargs.get(method, {}), **fields.pop("method_kwargs", {})}
        return TrainConfig(method=method, seed=seed, protocol=self.name, method_kwargs=kwargs, **fields)

    def trial_folds(self, seed: int) -> list[int]:
        """The test folds of trial ``seed``: ``seed * k + j`` (mod ``cv_folds``), ``j < k = folds_per_trial``."""
        if not self.cv_folds:
            return []
        k = self.folds_per_trial or self.cv_folds
        return [(seed * k + j) % self.cv_folds for j in range(k)]

    def train_configs(self, method: str, seed: int, **overrides) -> list[TrainConfig]:
        """The runs of one trial: one config, or with ``cv_folds`` one per fold of :meth:`trial_folds` (same
        seed); the trial's number is the mean over them (:func:`mixlab.results.store.combine_folds`)."""
        if not self.cv_folds:
            return [self.train_config(method, seed, **overrides)]
        data = {**self.config.get("data_kwargs", {}), **overrides.pop("data_kwargs", {})}
        if self.cv_folds != 10:  # the loaders' default
            data["folds"] = self.cv_folds
        return [self.train_config(method, seed, data_kwargs={**data, "fold": fold}, **overrides)
                for fold in self.trial_folds(seed)]


PROTOCOLS = Registry("protocol")


def get_protocol(name: str) -> Protocol:
    return PROTOCOLS.get(name)


def lowres_protocol(pct: int, quick: bool = False) -> str:
    """The protocol of AMP Table 3's row for ``pct`` % of each TREC class (3 % is ``amp-trec-lowres``)."""
    if quick:
        return "amp-trec-lowres-quick" if pct == 10 else f"amp-trec-lowres-{pct}-quick"
    return "amp-trec-lowres" if pct == 3 else f"amp-trec-lowres-{pct}"


def _tuples(config: dict) -> dict:
    """JSON lists back to the tuples TrainConfig holds (``milestones``, ``train_classes``)."""
    return {k: tuple(v) if k in ("milestones", "train_classes") and v is not None else v for k, v in config.items()}


def load_protocols(text: str | None = None) -> list[Protocol]:
    """The protocols of ``mixlab/data/protocols.json`` (or of the JSON ``text``)."""
    data = json.loads(text if text is not None else
                      resources.files("mixlab").joinpath("data/protocols.json").read_text())
    return [Protocol(**{**entry, "config": _tuples(entry["config"]), "methods": tuple(entry["methods"]),
                        "notes": group["notes"]})
            for group in data["groups"] for entry in group["protocols"]]


for _protocol in load_protocols():
    PROTOCOLS.register(_protocol.name, _protocol, _protocol.description)
