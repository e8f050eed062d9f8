"""Named, documented training protocols (``mixlab bench --protocol NAME``).

A protocol fixes the dataset, model, schedule and trials of a paper's table; ``-quick`` variants are scaled to
finish in minutes on 2 CPU cores and say how they were scaled.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .train.engine import TrainConfig


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

    def train_config(self, method: str, seed: int, **overrides) -> TrainConfig:
        fields = {**self.config, **overrides}
        kwargs = {**self.method_kwargs.get(method, {}), **fields.pop("method_kwargs", {})}
        return TrainConfig(method=method, seed=seed, protocol=self.name, method_kwargs=kwargs, **fields)


PROTOCOLS: dict[str, Protocol] = {}


def register(p: Protocol) -> Protocol:
    PROTOCOLS[p.name] = p
    return p


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise KeyError(f"unknown protocol {name!r}. Available: {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name]


TABLE4_METHODS = ("erm", "bc", "mixup", "manifold")
# AutoMix paper (Zhu et al. 2020) Table 4 "sub": 50 images per class, 11-layer CNN, 100 epochs, SGD lr 0.1
# momentum 0.9, lr / 10 at epochs 50 and 75, official 10,000 test images, 10 trials; random crop, flip and
# normalisation (section 3). Batch size and weight decay are not given in the paper: 50 and 5e-4 are ours.
_TABLE4 = dict(model="cnn11", subset_per_class=50, epochs=100, batch_size=50, lr=0.1, momentum=0.9,
               weight_decay=5e-4, schedule="multistep", milestones=(50, 75), crop_padding=2, flip=True)
# The quick variant: channel widths x 0.25 (about 16x fewer FLOPs), 30 epochs with decay at 15 and 23, the
# first 2,000 official test images; same data, optimiser and learning rate. About 2 minutes per method per
# trial on 2 CPU cores.
_QUICK = dict(_TABLE4, epochs=30, milestones=(15, 23), model_kwargs={"width": 0.25}, test_limit=2000)
_QUICK_NOTE = ("11-layer CNN at width x0.25, 30 epochs (decay at 15, 23) instead of 100 (50, 75), first 2,000 "
               "official test images instead of 10,000; data, optimiser and learning rate as the paper")

# TransformMix's search on 500 images: 4 steps per epoch instead of the paper's ~390, so 30 epochs at 10x the
# paper's learning rate (5e-3; 5e-4 for 100 epochs reaches a higher teacher loss on mixed images).
_QUICK_TRANSFORMMIX = {"search_epochs": 30, "search_lr": 5e-3}

for ds, tag in (("mnist", "mnist"), ("fashion-mnist", "fmnist")):
    register(Protocol(f"automix-{tag}-sub", f"AutoMix paper Table 4, {ds} (sub): 500 training images",
                      dict(_TABLE4, dataset=ds), TABLE4_METHODS, trials=10,
                      source="Zhu et al. 2020, Table 4 / Table 3"))
    register(Protocol(f"automix-{tag}-sub-quick", f"CPU-sized variant of automix-{tag}-sub",
                      dict(_QUICK, dataset=ds), TABLE4_METHODS, trials=3, scaling=_QUICK_NOTE,
                      method_kwargs={"transformmix": _QUICK_TRANSFORMMIX},
                      source="Zhu et al. 2020, Table 4 (scaled)"))
    register(Protocol(f"automix-{tag}-full", f"AutoMix paper Table 4, {ds} (full): 60,000 training images",
                      dict(_TABLE4, dataset=ds, subset_per_class=None, batch_size=128), TABLE4_METHODS,
                      trials=10, source="Zhu et al. 2020, Table 4"))

register(Protocol("digits-quick", "scikit-learn digits, 11-layer CNN at width x0.25, 15 epochs (the README demo)",
                  dict(dataset="digits", model="cnn11", epochs=15, batch_size=64, lr=0.05, milestones=(8, 12),
                       model_kwargs={"width": 0.25}),
                  ("erm", "mixup", "cutmix", "bc", "manifold"), trials=1,
                  scaling="a demo that needs no download; not a paper protocol"))
