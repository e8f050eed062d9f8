"""Properties every input-space mixer must have, and the classic mixers' own closed forms.

The methods under test come from the registry, so a new method is checked here without editing this file."""
import copy
import inspect

import pytest
import torch

import mixlab
from mixlab.methods.base import InputMixer, choose_partners
from mixlab.methods.cutmix import rand_box
from mixlab.methods.textmix import StageMixup
from mixlab.registry import METHODS

#: mixers that build their network on the first call with torch's default initialisation, which draws from the
#: global RNG (so they fail the seed, global-RNG and float64 checks here): tested in tests/test_learned_mixers.py
LAZY_NETWORKS = {"automix-zhu"}
#: every registered input-space mixer that can mix without a set-up, so a newly registered one is held to the same
#: properties (TransformMix needs a searched module first: ``needs_setup``)
INPUT_MIXERS = [n for n, cls in METHODS.items() if isinstance(cls, type) and issubclass(cls, InputMixer)
                and not cls.needs_setup and n not in LAZY_NETWORKS]
#: the ones that mix (ERM, the baseline, passes its batch through and takes a batch of one)
MIXERS = [n for n in INPUT_MIXERS if n != "erm"]


def batch(b=16, c=3, h=8, w=8, num_classes=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g, dtype=dtype), torch.randint(num_classes, (b,), generator=g)


@pytest.mark.parametrize("name", INPUT_MIXERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_targets_sum_to_one_and_inputs_untouched(name, dtype):
    x, y = batch(dtype=dtype)
    x0, y0 = x.clone(), y.clone()
    mixer = mixlab.create(name, num_classes=5)
    x_mix, y_mix = mixer(x, y)
    assert torch.equal(x, x0) and torch.equal(y, y0), "mixer modified its input"
    assert x_mix.shape == x.shape and x_mix.dtype == dtype
    assert y_mix.shape == (16, 5)
    torch.testing.assert_close(y_mix.float().sum(1), torch.ones(16), atol=1e-2 if dtype == torch.bfloat16 else 1e-5,
                               rtol=0)
    assert bool((y_mix >= 0).all())


def test_mixup_is_convex_combination_of_the_pair():
    x, y = batch()
    mixer = mixlab.create("mixup", alpha=1.0, num_classes=5, seed=3)
    x_mix, y_mix = mixer(x, y)
    lam, perm = mixer.last.lam, mixer.last.index
    assert 0 <= float(lam) <= 1
    torch.testing.assert_close(x_mix, lam * x + (1 - lam) * x[perm])
    t = torch.nn.functional.one_hot(y, 5).float()
    torch.testing.assert_close(y_mix, lam * t + (1 - lam) * t[perm])
    assert sorted(perm.tolist()) == list(range(16))


def test_mixup_per_sample_lambda():
    x, y = batch()
    mixer = mixlab.create("mixup", per_sample=True, num_classes=5)
    x_mix, _ = mixer(x, y)
    lam = mixer.last.lam
    assert lam.shape == (16,) and len(set(lam.tolist())) > 1
    torch.testing.assert_close(x_mix, lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[mixer.last.index])


def test_cutmix_box_area_equals_one_minus_lambda():
    x, y = batch(h=32, w=32)
    for seed in range(20):
        mixer = mixlab.create("cutmix", num_classes=5, seed=seed)
        x_mix, y_mix = mixer(x, y)
        perm, lam = mixer.last.index, float(mixer.last.lam)
        from_partner = (x_mix == x[perm]).all(1) & (x_mix != x).any(1)  # pixels taken from the partner
        frac = from_partner.float().mean((1, 2))
        differs = (x != x[perm]).any(1).float().mean((1, 2)) > 0
        assert torch.allclose(frac[differs], torch.full_like(frac[differs], 1 - lam), atol=1e-6)
        t = torch.nn.functional.one_hot(y, 5).float()
        torch.testing.assert_close(y_mix, lam * t + (1 - lam) * t[perm])


def test_rand_box_clipped_inside_image():
    g = torch.Generator().manual_seed(0)
    for lam in torch.linspace(0, 1, 11).tolist():
        y0, y1, x0, x1 = rand_box(20, 30, lam, g)
        assert 0 <= y0 <= y1 <= 20 and 0 <= x0 <= x1 <= 30


def test_bc_pairs_are_of_different_classes():
    x, y = batch(b=64)
    mixer = mixlab.create("bc", num_classes=5, seed=1)
    x_mix, y_mix = mixer(x, y)
    idx, r = mixer.last.index, mixer.last.lam
    assert bool((y[idx] != y).all())
    torch.testing.assert_close(x_mix, r[:, None, None, None] * x + (1 - r[:, None, None, None]) * x[idx])


def test_bc_partner_fallback_when_one_class():
    t = torch.nn.functional.one_hot(torch.zeros(8, dtype=torch.long), 3).float()
    idx = choose_partners(t, torch.Generator().manual_seed(0), "different")
    assert bool((idx != torch.arange(8)).all())


def test_bc_plus_zero_mean_and_label_ratio():
    x, y = batch(b=32)
    mixer = mixlab.create("bc", plus=True, num_classes=5)
    x_mix, y_mix = mixer(x, y)
    assert torch.allclose(x_mix.mean((1, 2, 3)), torch.zeros(32), atol=1e-5)
    t = torch.nn.functional.one_hot(y, 5).float()
    r = mixer.last.lam
    torch.testing.assert_close(y_mix, r[:, None] * t + (1 - r[:, None]) * t[mixer.last.index])


def test_soft_and_multihot_targets_accepted():
    x, _ = batch()
    multi = (torch.rand(16, 5, generator=torch.Generator().manual_seed(1)) > 0.6).float()
    for name in INPUT_MIXERS:
        _, y_mix = mixlab.create(name, seed=2)(x, multi)
        assert y_mix.shape == (16, 5)
        assert float(y_mix.max()) <= 1 + 1e-6 and float(y_mix.min()) >= 0


def test_same_seed_same_numbers():
    x, y = batch()
    for name in INPUT_MIXERS:
        a = mixlab.create(name, num_classes=5, seed=7)(x, y)
        b = mixlab.create(name, num_classes=5, seed=7)(x, y)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_global_rng_untouched():
    x, y = batch()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for name in INPUT_MIXERS:
        mixlab.create(name, num_classes=5)(x, y)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", MIXERS)
def test_bad_inputs(name):
    x, y = batch()
    mixer = mixlab.create(name, num_classes=5)
    with pytest.raises(ValueError, match="labels must lie in"):
        mixer(x, torch.full((16,), 5))
    with pytest.raises(ValueError, match="labels must lie in"):
        mixer(x, torch.full((16,), -1))
    with pytest.raises(ValueError, match="too small to mix"):
        mixer(x[:1], y[:1])
    with pytest.raises(ValueError, match="batch size"):
        mixer(x, y[:8])
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        mixer(bad, y)
    with pytest.raises(ValueError, match="num_classes"):
        mixlab.create(name)(x, y)
    with pytest.raises(ValueError, match="batched"):
        mixer(x[0, 0, 0], y[:1])
    with pytest.raises(TypeError, match="floating-point"):
        mixer((x * 255).to(torch.uint8), y)
    with pytest.raises(ValueError, match="columns"):
        mixer(x, torch.rand(16, 4))


@pytest.mark.parametrize("name", [n for n in METHODS.names()
                                  if "alpha" in inspect.signature(METHODS.get(n)).parameters])
def test_alpha_must_be_positive(name):
    for alpha in (0, -1.0):
        with pytest.raises(ValueError, match="alpha must be > 0"):
            mixlab.create(name, alpha=alpha)


def test_unknown_names_are_clear():
    with pytest.raises(KeyError, match="unknown method 'mixpu'.*Did you mean mixup"):
        mixlab.create("mixpu")
    with pytest.raises(KeyError, match="unknown model"):
        mixlab.create_model("resnet19")
    from mixlab.data import load_dataset
    with pytest.raises(KeyError, match="unknown dataset"):
        load_dataset("mnits")


def test_registry_lists_methods():
    assert {"erm", "mixup", "cutmix", "bc", "manifold"} <= set(mixlab.list_methods())


def test_registry_lists_the_input_mixers():
    assert {"erm", "mixup", "cutmix", "bc"} <= set(INPUT_MIXERS)
    assert not {"manifold", "transformmix", "multimix"} & set(INPUT_MIXERS)


def test_a_model_holding_a_mixer_can_apply_an_init_function():
    """``nn.Module.apply(fn)`` visits every submodule; no method may shadow it (Mixup once did)."""
    for name in METHODS.names():
        method = METHODS.create(name, num_classes=5)
        assert type(method).apply is torch.nn.Module.apply, f"{name} overrides nn.Module.apply"
    holder = torch.nn.Sequential(torch.nn.Linear(3, 3), METHODS.create("mixup", num_classes=5))
    seen = []
    holder.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Linear", "Mixup", "Sequential"]
    holder.apply(lambda m: torch.nn.init.zeros_(m.weight) if isinstance(m, torch.nn.Linear) else None)
    assert not holder[0].weight.any()


@pytest.mark.parametrize("name", [n for n in METHODS.names() if not METHODS.create(n).needs_setup])
def test_training_loss_takes_integer_labels_like_one_hot_targets_and_rejects_bad_ones(name):
    method = METHODS.create(name)
    text = isinstance(getattr(method, "inner", method), StageMixup)  # mixes word / sentence states: a text model
    model = (mixlab.create_model("kim-cnn", num_classes=4, vocab_size=50) if text else
             mixlab.create_model("cnn11", num_classes=4, in_channels=1, image_size=28, width=0.25))
    x = torch.randint(1, 50, (6, 12)) if text else torch.rand(6, 1, 28, 28)
    y = torch.arange(6) % 4
    losses = []
    for targets in (y, torch.nn.functional.one_hot(y, 4).float()):
        torch.manual_seed(0)  # dropout
        net = copy.deepcopy(model)  # each call on the same BatchNorm statistics (PuzzleMix's saliency reads them)
        losses.append(mixlab.create(name, num_classes=4, seed=3).training_loss(net, x, targets).detach())
    torch.testing.assert_close(losses[0], losses[1])
    method = mixlab.create(name, num_classes=4, seed=3)
    for bad in (y[:5], torch.ones(6, 3), y.float()):
        with pytest.raises(ValueError, match="training_loss takes"):
            method.training_loss(model, x, bad)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        method.training_loss(model, x, y + 1)
