"""Methods are set up through a SetupContext, never the Trainer: same numbers as before, and usable by hand."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mixlab.data.augment import BatchAugment
from mixlab.methods.base import SetupContext
from mixlab.models.cnn11 import CNN11
from mixlab.registry import METHODS
from setup_losses import setup_losses

REFERENCE = Path(__file__).parent / "data" / "setup_losses.json"


def test_setup_keeps_the_numbers(tmp_path):
    """Losses and gradients on a fixed batch after set-up (OptTransMix's cache, AutoMix's generator, TransformMix's
    teacher, fitted temperature and search) equal those of the code that passed the Trainer to ``setup``."""
    want = json.loads(REFERENCE.read_text())
    got = setup_losses(str(tmp_path))
    assert got.keys() == want.keys()
    for method, values in want.items():
        for key, value in values.items():
            assert got[method][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (method, key)
    # the search key (and so every cached module) is unchanged too
    assert [p.name for p in (tmp_path / "transformmix" / "modules").iterdir()] == ["digits-sub20-s0-k2-none-dce1e1a4ad"]


def context(provider=None, n=12, channels=1, size=8, tmp=Path("unused")):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, channels, size, size, generator=g) * 255).to(torch.uint8)
    y = torch.arange(n) % 4
    data = type("Data", (), {"x": x, "y": y, "num_classes": 4})()
    return SetupContext(data=data, x=x, targets=F.one_hot(y, 4).float(), model=CNN11(4, channels, size, width=0.125),
                        device=torch.device("cpu"), seed=3, cache_dir=tmp, augment=BatchAugment((0.5,), (0.25,)),
                        progress=False, data_id={"dataset": "toy", "subset_per_class": None, "seed": 3},
                        provider=provider)


def test_a_hand_made_context_sets_up_methods_without_an_engine(tmp_path):
    ctx = context(tmp=tmp_path)
    automix = METHODS.create("automix-zhu", num_classes=4, widths=[4, 4, 4, 4, 4])
    automix.setup(ctx)
    assert automix.generator_net is not None and automix.mean is not None
    ot = METHODS.create("opttransmix", num_classes=4, per_image=1, max_iter=20)
    ot.setup(ctx)
    assert ot.cache_x.shape == (12, 1, 8, 8) and ot.cache_t.shape == (12, 4)
    assert (tmp_path / "cache" / "opttransmix").is_dir()


class RecordingProvider:
    """A provider that hands out an untrained teacher and records what the method asked for."""

    def __init__(self):
        self.asked = []

    def teacher_identity(self, epochs=None):
        self.asked.append(("teacher_identity", epochs))
        return {"model": "cnn11", "epochs": epochs}

    def teacher(self, epochs=None):
        self.asked.append(("teacher", epochs))
        torch.manual_seed(0)
        model = CNN11(4, 1, 8, width=0.125)
        return {"model": "cnn11", "model_kwargs": {"width": 0.125}, "num_classes": 4, "in_channels": 1,
                "image_size": 8, "mean": [0.5], "std": [0.25], "state_dict": model.state_dict(),
                "dataset": "toy", "subset_per_class": None, "seed": 3}

    def search(self, ctx, method, module, checkpoint=None):
        from mixlab.search import search_module

        self.asked.append(("search", checkpoint.name))
        return search_module(method, module, ctx.x, ctx.targets, ctx.augment, ctx.seed, checkpoint, ctx.progress)


def test_transformmix_asks_the_context_for_teacher_and_search(tmp_path):
    provider = RecordingProvider()
    m = METHODS.create("transformmix", num_classes=4, teacher_epochs=2, search_epochs=1, search_batch_size=6)
    m.setup(context(provider, tmp=tmp_path))
    assert provider.asked == [("teacher", 2), ("teacher_identity", 2), ("search", "search-checkpoint.pt")]
    assert m.module_source.exists() and m.module_source.parent.parent == tmp_path / "transformmix" / "modules"
    assert not any(p.requires_grad for p in m.parameters())  # frozen after the search
    x_mix, t_mix = m(torch.rand(6, 1, 8, 8), torch.arange(6) % 4)
    assert x_mix.shape == (6, 1, 8, 8)
    # a second set-up reuses the searched module: no new search
    again = RecordingProvider()
    METHODS.create("transformmix", num_classes=4, teacher_epochs=2, search_epochs=1,
                   search_batch_size=6).setup(context(again, tmp=tmp_path))
    assert ("search", "search-checkpoint.pt") not in again.asked


def test_without_a_provider_the_error_says_what_to_do():
    m = METHODS.create("transformmix", num_classes=4)
    with pytest.raises(RuntimeError, match="provider"):
        m.setup(context())
