"""The mask-based baselines (SaliencyMix, ResizeMix, FMix, GridMix): masks, label weights, and each one's own rule.

The properties every input mixer shares (targets sum to one, inputs untouched, dtypes, seeds, bad inputs) run on
these too in tests/test_mixers.py, which picks its mixers from the registry.
"""
import json

import pytest
import torch
import torch.nn.functional as F

import mixlab
from mixlab.methods.base import Method, soft_cross_entropy
from mixlab.methods.fmix import fourier_noise, top_fraction_mask
from mixlab.methods.saliencymix import saliency_peaks, spectral_residual_saliency
from mixlab.registry import METHODS

MASK_MIXERS = ["saliencymix", "resizemix", "fmix", "gridmix"]
#: (name, options): each per-batch / per-sample variant
VARIANTS = [("saliencymix", {}), ("saliencymix", {"per_sample": False}), ("resizemix", {}),
            ("resizemix", {"mode": "bilinear"}), ("fmix", {}), ("fmix", {"per_sample": True}), ("gridmix", {}),
            ("gridmix", {"per_sample": True})]
SHAPES = [(1, 28, 20), (3, 32, 24), (3, 17, 31)]


def batch(shape, b=12, num_classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, *shape, generator=g), torch.randint(num_classes, (b,), generator=g)


def box_of(mask):
    """Rows and columns ``[y0, y1) x [x0, x1)`` where a ``(H, W)`` mask is 0 (the partner's box)."""
    rows, cols = torch.nonzero(mask == 0, as_tuple=True)
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name,options", VARIANTS)
def test_mask_mean_is_the_label_weight_and_the_mask_mixed_the_images(name, options, shape):
    x, y = batch(shape)
    for seed in range(3):
        mixer = mixlab.create(name, num_classes=5, seed=seed, **options)
        x_mix, t_mix = mixer(x, y)
        info = mixer.last
        mask = info.mask.expand(x.shape[0], 1, *shape[1:])
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        lam = info.lam
        assert lam.shape == (x.shape[0],)
        assert torch.equal(mask.float().mean((1, 2, 3)), lam), "label weight is not the mask's mean"
        t = F.one_hot(y, 5).float()
        torch.testing.assert_close(t_mix, lam[:, None] * t + (1 - lam[:, None]) * t[info.index], rtol=0, atol=1e-6)
        keep = mask.bool().expand_as(x)
        assert torch.equal(x_mix[keep], x[keep]), "a kept pixel is not the batch's own"
        if name != "resizemix":
            assert torch.equal(x_mix[~keep], x[info.index][~keep]), "a taken pixel is not the partner's"
        if not options.get("per_sample", name == "saliencymix"):
            assert info.mask.shape[0] == 1 or name == "resizemix"


def test_resizemix_patch_is_the_whole_partner_shrunk_inside_the_image():
    x, y = batch((3, 32, 24), b=16)
    for seed in range(5):
        for mode in ("nearest", "bilinear"):
            mixer = mixlab.create("resizemix", num_classes=5, seed=seed, mode=mode)
            x_mix, _ = mixer(x, y)
            info = mixer.last
            sizes = set()
            for i in range(16):
                if bool(info.mask[i].all()):  # an empty patch (tau * side < 1) cannot happen at 32 x 24
                    raise AssertionError("empty patch")
                y0, y1, x0, x1 = box_of(info.mask[i, 0])
                assert int((info.mask[i, 0] == 0).sum()) == (y1 - y0) * (x1 - x0), "the patch is not one box"
                sizes.add((y1 - y0, x1 - x0))
                small = F.interpolate(x[info.index[i]][None], size=(y1 - y0, x1 - x0), mode=mode)[0]
                torch.testing.assert_close(x_mix[i, :, y0:y1, x0:x1], small, rtol=0, atol=1e-6)
            (h, w), = sizes  # one scale tau for the batch: h = int(32 tau), w = int(24 tau), tau in [0.1, 0.8)
            assert max(h / 32, w / 24, 0.1) < min((h + 1) / 32, (w + 1) / 24, 0.8)


def test_resizemix_scale_follows_the_authors_uniform_range():
    x, y = batch((1, 50, 50), b=2)
    taus = []
    for seed in range(40):
        mixer = mixlab.create("resizemix", num_classes=5, seed=seed)
        mixer(x, y)
        taus.append(1 - float(mixer.last.lam[0]))  # patch area / image area = tau^2 (up to int rounding)
    sides = torch.tensor(taus).sqrt()
    assert float(sides.min()) >= 0.1 - 0.02 and float(sides.max()) <= 0.8
    assert float(sides.max()) > 0.6 and float(sides.min()) < 0.3  # spread over the range, not stuck


def spot_images(centres, size=32, channels=3):
    """Dark images with low noise, each with one bright 3 x 3 square centred at ``centres[i]``."""
    g = torch.Generator().manual_seed(1)
    x = 0.05 * torch.rand(len(centres), channels, size, size, generator=g)
    for i, (r, c) in enumerate(centres):
        x[i, :, r - 1:r + 2, c - 1:c + 2] = 1.0
    return x


def test_spectral_residual_peaks_at_a_single_bright_spot():
    centres = [(5, 7), (16, 16), (25, 9), (10, 27), (28, 28), (3, 20)]
    for channels in (1, 3):
        sal = spectral_residual_saliency(spot_images(centres, channels=channels))
        assert sal.shape == (6, 32, 32) and float(sal.min()) >= 0 and bool((sal.amax((1, 2)) <= 1).all())
        rows, cols = saliency_peaks(spot_images(centres, channels=channels))
        for (r, c), pr, pc in zip(centres, rows.tolist(), cols.tolist()):
            assert abs(pr - r) <= 1 and abs(pc - c) <= 1, f"peak at {(pr, pc)}, spot at {(r, c)}"


@pytest.mark.parametrize("per_sample", [True, False])
def test_saliencymix_box_is_centred_on_the_partners_bright_spot(per_sample):
    centres = [(26, 28), (32, 32), (38, 30), (30, 38), (36, 36), (28, 34), (34, 26), (31, 29)]
    x = spot_images(centres, size=64)
    y = torch.arange(8) % 5
    centred = 0
    for seed in range(12 if per_sample else 24):
        mixer = mixlab.create("saliencymix", num_classes=5, seed=seed, per_sample=per_sample)
        mixer(x, y)
        info = mixer.last
        for i in range(8 if per_sample else 1):
            if bool(info.mask[i].all()):
                continue  # a box of zero size (lam0 close to 1)
            r, c = centres[int(info.index[i])]
            y0, y1, x0, x1 = box_of(info.mask[i, 0])
            assert y0 <= r < y1 and x0 <= c < x1, "the box misses the partner's salient spot"
            if 0 < y0 and y1 < 64 and 0 < x0 and x1 < 64:  # not clipped: centred on the spot (peak within 1 px)
                assert abs((y0 + y1) / 2 - r) <= 1 and abs((x0 + x1) / 2 - c) <= 1
                centred += 1
    assert centred >= (30 if per_sample else 8), centred


def low_frequency_share(masks, cutoff=0.1):
    """Share of each mask's spectral energy (mean removed) below ``cutoff`` cycles per pixel."""
    m = masks.float() - masks.float().mean((-2, -1), keepdim=True)
    power = torch.fft.fft2(m).abs() ** 2
    h, w = m.shape[-2:]
    freq = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.fftfreq(w)[None, :] ** 2)
    return (power * (freq < cutoff)).sum((-2, -1)) / power.sum((-2, -1))


def test_fmix_masks_are_low_frequency_and_random_masks_are_not():
    x, y = batch((1, 32, 32), b=64)
    mixer = mixlab.create("fmix", num_classes=5, per_sample=True, seed=0)
    mixer(x, y)
    masks = mixer.last.mask[:, 0]
    mixed = (masks.mean((1, 2)) > 0.02) & (masks.mean((1, 2)) < 0.98)
    share = low_frequency_share(masks[mixed])
    g = torch.Generator().manual_seed(0)
    white = (torch.rand(masks.shape, generator=g) < masks.mean((1, 2), keepdim=True))[mixed]
    white_share = low_frequency_share(white)
    assert float(share.mean()) > 0.7 and float(white_share.mean()) < 0.1, (share.mean(), white_share.mean())
    # a steeper decay gives smoother masks
    smooth = mixlab.create("fmix", num_classes=5, per_sample=True, seed=0, decay_power=5.0)
    smooth(x, y)
    assert float(low_frequency_share(smooth.last.mask[:, 0][mixed]).mean()) > float(share.mean())


def test_fmix_noise_spectrum_decays_as_a_power_of_frequency():
    g = torch.Generator().manual_seed(0)
    noise = fourier_noise(256, 32, 32, 3.0, g)
    power = (torch.fft.fft2(noise).abs() ** 2).mean(0)
    freq = torch.sqrt(torch.fft.fftfreq(32)[:, None] ** 2 + torch.fft.fftfreq(32)[None, :] ** 2)
    low, high = power[(freq > 0.05) & (freq < 0.07)].mean(), power[(freq > 0.2) & (freq < 0.28)].mean()
    ratio = float(low / high)  # 1/f^3 amplitude -> 1/f^6 power: (0.24 / 0.06)^6 ~ 4000
    assert 1000 < ratio < 20000, ratio


def test_fmix_mask_keeps_exactly_the_largest_noise_values():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(6, 9, 7, generator=g)
    counts = torch.tensor([0, 1, 20, 31, 62, 63])
    mask = top_fraction_mask(noise, counts)
    assert mask.shape == (6, 1, 9, 7) and torch.equal(mask.sum((1, 2, 3)), counts)
    for i in range(1, 5):
        kept, dropped = noise[i][mask[i, 0]], noise[i][~mask[i, 0]]
        assert float(kept.min()) > float(dropped.max())


def test_gridmix_mask_is_constant_on_the_cells_of_one_grid():
    x, y = batch((3, 28, 20), b=10)
    for seed in range(8):
        mixer = mixlab.create("gridmix", num_classes=5, seed=seed, per_sample=True)
        mixer(x, y)
        mask = mixer.last.mask[:, 0]
        fits = []
        for n in range(2, 9):
            rows, cols = torch.arange(28) * n // 28, torch.arange(20) * n // 20
            cells = torch.zeros(10, n, n)
            cells[:, rows[:, None], cols[None, :]] = mask  # last write wins; the check below compares back
            fits.append(torch.equal(cells[:, rows][:, :, cols], mask))
        assert any(fits), "the mask is not made of grid cells of one size in [2, 8]"
    # cells from the partner occur with probability 1 - lam: over many masks the kept share tracks lam
    big = mixlab.create("gridmix", num_classes=5, seed=0, per_sample=True, grid=(8, 8))
    xb, yb = batch((1, 32, 32), b=400)
    big(xb, yb)
    assert float(big.last.lam.mean()) == pytest.approx(0.5, abs=0.05)  # E[lam] = 1/2 for Beta(1, 1)


@pytest.mark.parametrize("name", MASK_MIXERS)
def test_seeds_repeat_and_differ(name):
    x, y = batch((3, 32, 32))
    a = mixlab.create(name, num_classes=5, seed=4)(x, y)
    b = mixlab.create(name, num_classes=5, seed=4)(x, y)
    c = mixlab.create(name, num_classes=5, seed=5)(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    # the engine's reseed restarts the stream
    m = mixlab.create(name, num_classes=5, seed=0)
    m.reseed(4)
    assert torch.equal(m(x, y)[0], a[0])


@pytest.mark.parametrize("name", MASK_MIXERS)
def test_images_must_have_a_channel_axis(name):
    x, y = batch((32, 32))
    with pytest.raises(ValueError, match=r"mixes images \(B, C, H, W\).*unsqueeze"):
        mixlab.create(name, num_classes=5)(x, y)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="scale must satisfy"):
        mixlab.create("resizemix", scale=[0.5, 0.2])
    with pytest.raises(TypeError, match=r"option scale of method 'resizemix' must be tuple\[float, float\]"):
        mixlab.create("resizemix", scale=0.5)
    with pytest.raises(ValueError, match="mode must be one of"):
        mixlab.create("resizemix", mode="lanczos")
    with pytest.raises(ValueError, match="grid must satisfy"):
        mixlab.create("gridmix", grid=[0, 4])
    with pytest.raises(ValueError, match="decay_power must be > 0"):
        mixlab.create("fmix", decay_power=0)
    with pytest.raises(TypeError, match="option per_sample of method .fmix. must be bool"):
        mixlab.create("fmix", per_sample="yes")
    with pytest.raises(ValueError, match="alpha must be > 0"):
        mixlab.create("saliencymix", alpha=0)


@pytest.mark.parametrize("name", MASK_MIXERS)
def test_show_draws_a_grid_on_mnist(name, data_root, tmp_path):
    from mixlab.cli import main

    path = tmp_path / f"{name}.png"
    assert main(["show", "--method", name, "--dataset", "mnist", "--pairs", "3", "--data-dir", str(data_root),
                 "--out", str(path)]) == 0
    assert path.stat().st_size > 1000


class _GradientSaliencyStandIn(Method):
    """Stands in for PuzzleMix while it is not registered: mixes inside its loss after one forward-backward."""

    name = "puzzlemix"

    def training_loss(self, model, x, targets, loss_fn=soft_cross_entropy):
        targets = self.loss_targets(x, targets)
        with torch.enable_grad():
            x_req = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_fn(model(x_req), targets), x_req)
        saliency = grad.abs().sum(1, keepdim=True)
        keep = saliency >= saliency.flatten(1).median(1).values[:, None, None, None]  # the salient half stays
        perm = torch.randperm(x.shape[0], generator=self.generator)
        lam = keep.float().mean((1, 2, 3))
        return loss_fn(model(torch.where(keep, x, x[perm])), lam[:, None] * targets + (1 - lam[:, None]) * targets[perm])


def test_bench_mixers_times_registered_mixers_and_sets_transformmix_against_puzzlemix(capsys):
    from mixlab.cli import main

    stand_in = "puzzlemix" not in METHODS
    if stand_in:
        METHODS["puzzlemix"] = _GradientSaliencyStandIn
    try:
        assert main(["bench-mixers", "--methods", "fmix,saliencymix,manifold,puzzlemix,transformmix,not-a-method",
                     "--batch-size", "4", "--shapes", "1x8", "--repeats", "1", "--model-arg", "width=0.125",
                     "--json"]) == 0
    finally:
        if stand_in:
            del METHODS["puzzlemix"]
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    rows = {r["method"]: r for r in report["rows"]}
    assert {"erm", "mixup", "fmix", "saliencymix", "manifold", "puzzlemix", "transformmix"} <= set(rows)
    assert rows["fmix"]["mix_kind"] == "mix()" and rows["puzzlemix"]["mix_kind"] == "loss fwd - ERM's"
    assert all(r["loss_vs_erm"] > 0 for r in report["rows"] if "loss_vs_erm" in r)
    assert "skipping not-a-method" in out
    (ratio,) = report["paper_ratios"]
    assert ratio["ratio"] == "transformmix / puzzlemix" and ratio["paper"] == pytest.approx(0.045 / 0.163)
    a, b = rows["transformmix"]["mix_s"], rows["puzzlemix"]["mix_s"]
    if min(a, b) > 0:
        assert ratio["ours"] == pytest.approx(a / b)
    else:  # a paired excess at or below zero is timing noise on this tiny batch: no ratio claimed
        assert ratio["ours"] is None and "not measurable" in out
    assert "transformmix / puzzlemix (1x8x8): ours" in out and "paper 0.045 / 0.163 = 0.28" in out


def test_reproduce_rows_naming_these_methods_resolve():
    from mixlab.reproduce import REPRODUCTIONS, resolve

    found = []
    for name in REPRODUCTIONS.names():
        for table in REPRODUCTIONS.get(name).tables:
            for row in table.rows:
                if row.method in MASK_MIXERS:
                    for quick in (True, False):
                        for col in table.columns:
                            cell = resolve(row, col, quick, None, None, lambda dataset: True)
                            assert cell.unavailable is None, (name, row.label, col.label, cell.unavailable)
                    found.append((name, row.method))
    assert ("multimix-ood", "saliencymix") in found  # the MultiMix paper's OOD table has a SaliencyMix row


@pytest.mark.parametrize("name,options", VARIANTS)
def test_mixing_stays_on_the_inputs_device_and_never_reads_it_back(name, options):
    """On "meta" tensors (no data) any device -> host read fails, and so does a tensor left on the CPU meeting one
    on the device: the GPU path's two mistakes, checked without a GPU."""
    x, t = torch.empty(6, 3, 32, 24, device="meta"), torch.empty(6, 5, device="meta")
    mixer = mixlab.create(name, num_classes=5, seed=0, **options)
    x_mix, t_mix = mixer.mix(x, t)
    assert x_mix.device.type == t_mix.device.type == mixer.last.mask.device.type == "meta"
    assert x_mix.shape == x.shape and t_mix.shape == t.shape
