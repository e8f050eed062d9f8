"""OptTransMix (Zhu, Shi, Yan, Zha. AutoMix, ECCV 2020, section 2.2) and its Table 4 combinations.

A pair of images, seen as 2-D histograms, is replaced by their entropic Wasserstein barycenter
``x^ = argmin_x lam W(x1, x) + (1 - lam) W(x2, x)`` (eq. 6; convolutional solver of Solomon et al. 2015, see
:func:`mixlab.ot.convolutional_barycenter`). The ratio is drawn from ``U([0.1, 0.3] U [0.7, 0.9])`` (no samples
near 0.5) and the label is the hard label of the heavier image. ``reg`` is the smoothing parameter (sigma).

Images -> histograms: each channel is shifted by its minimum (so normalised inputs work too) and divided by its
mass; the barycenter is mapped back linearly so that its range is the ``lam``-weighted range of the two inputs
(minimum -> weighted minimum, peak -> weighted peak). Channels are transported separately.

Training (paper: barycenters are generated "before the training stage" and used as an augmented training set):
each step appends ``extra x B`` barycenter samples (default ``extra = 1``) to the batch of real images. By
default they come from a cache built once for the training set (``mode="cache"``: ``per_image`` random partners
per image, stored under ``<out>/cache/opttransmix/<key>/``, key = hash of the images, labels and settings;
``mixlab opttrans build`` builds it ahead of time), and go through the same augmentation as real images;
``mode="online"`` computes them per batch from the batch itself. ``OptTransMix + Mixup`` and ``+ BC`` (Table 4)
apply Mixup / BC to that enlarged stream (real + barycenter samples).

Cache format (``mixlab-opttrans-cache/1``): a folder with ``part-00000.pt`` ... (torch files, each a dict of
``x`` uint8 ``(n, C, H, W)`` barycenters on the 0..255 scale, ``i``, ``j`` int64 indices of the pair in the
training set, ``lam`` float ratio of ``i``) and ``meta.json`` (format, settings, count, image shape, data hash;
written last, so a folder without it is unfinished and resumes part by part).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor

from ..locks import file_lock
from ..ot import convolutional_barycenter
from .base import InputMixer, MixInfo, soft_cross_entropy

CACHE_FORMAT = "mixlab-opttrans-cache/1"


def sample_ratios(n: int, generator: torch.Generator, ranges=((0.1, 0.3), (0.7, 0.9))) -> Tensor:
    """``n`` ratios uniform on the union of ``ranges`` (length-weighted)."""
    lo = torch.tensor([r[0] for r in ranges], dtype=torch.float64)
    width = torch.tensor([r[1] - r[0] for r in ranges], dtype=torch.float64)
    u = torch.rand(n, generator=generator, dtype=torch.float64) * width.sum()
    edges = width.cumsum(0)
    k = torch.searchsorted(edges, u, right=True).clamp_max(len(ranges) - 1)
    return (lo[k] + u - (edges[k] - width[k])).float()


def barycenter_images(x1: Tensor, x2: Tensor, lam: Tensor, reg: float, **solver) -> Tensor:
    """Entropic Wasserstein barycenters of image pairs ``(B, C, H, W)`` with weight ``lam`` (B,) on ``x1``,
    returned in the inputs' intensity range (see the module docstring)."""
    b, c, h, w = x1.shape
    pair = torch.stack([x1, x2], 1).float().reshape(b, 2, c, h * w)
    lo = pair.amin(-1, keepdim=True)
    hist = pair - lo
    span = hist.amax(-1, keepdim=True)
    mass = hist.sum(-1, keepdim=True)
    hist = torch.where(mass > 0, hist / mass.clamp_min(1e-12), torch.full_like(hist, 1.0 / (h * w)))
    weights = torch.stack([lam, 1 - lam], 1).to(hist)  # (B, 2)
    images = hist.transpose(1, 2).reshape(b * c, 2, h, w)
    bar = convolutional_barycenter(images, weights.repeat_interleave(c, 0), reg, **solver).reshape(b, c, h * w)
    lw = weights[:, :, None, None]
    peak, floor = (lw * span).sum(1), (lw * lo).sum(1)  # (B, C, 1)
    out = bar / bar.amax(-1, keepdim=True).clamp_min(1e-30) * peak + floor
    return out.reshape(b, c, h, w).to(x1.dtype)


class OptTransMix(InputMixer):
    """OptTransMix: Wasserstein-barycenter samples with hard labels, added to the training stream.

    Args:
        reg: entropic regularisation / smoothing parameter, POT's meaning (0.004: 28 px digits).
        ranges: ratio intervals (``[0.1, 0.3]`` and ``[0.7, 0.9]``).
        extra: barycenter samples appended per real sample in each training batch (1.0: each step trains on
            ``2 B`` examples, half of them barycenters).
        share: instead of ``extra``, the share of barycenter samples in each training batch (``extra = share /
            (1 - share)``; 0.5 is ``extra = 1``, 0.2 is ``extra = 0.25``).
        mode: ``cache`` (precomputed for the training set, as the paper) or ``online``.
        per_image: cached barycenters per training image (10; cache mode).
        max_iter, tol: barycenter solver budget and tolerance.
        cache_dir: cache root (default ``<trainer out>/cache/opttransmix``); cache_seed: seed of the pair draw.
        inner: ``None``, ``"mixup"`` or ``"bc"``: mix the enlarged stream with that method (Table 4 combos);
        inner_kwargs: its options.
    Called directly (``mixer(x, y)``) it returns barycenters of ``x`` with random partners and hard labels.
    """

    name = "opttransmix"

    def __init__(self, reg: float = 0.004, ranges=((0.1, 0.3), (0.7, 0.9)), extra: float = 1.0,
                 share: float | None = None, mode: str = "cache", per_image: int = 10, max_iter: int = 1000, tol: float = 1e-4,
                 cache_dir: str | None = None, cache_seed: int = 0, chunk: int = 512, inner: str | None = None,
                 inner_kwargs: dict | None = None, num_classes=None, seed=0, check_inputs=True):
        super().__init__(num_classes, seed, check_inputs)
        if mode not in ("cache", "online"):
            raise ValueError(f"mode must be 'cache' or 'online', got {mode!r}")
        if not reg > 0:
            raise ValueError(f"reg must be > 0, got {reg}")
        self.ranges = tuple((float(a), float(b)) for a, b in ranges)
        if any(not 0 <= a < b <= 1 for a, b in self.ranges):
            raise ValueError(f"ranges must be intervals inside [0, 1], got {ranges}")
        if share is not None:
            if float(extra) != 1.0:
                raise ValueError(f"give extra or share (the share of barycenter samples in a batch), not both; got "
                                 f"extra={extra}, share={share}")
            if not 0.0 <= float(share) < 1.0:
                raise ValueError(f"share (of barycenter samples in a batch) must be in [0, 1), got {share}")
            extra = float(share) / (1.0 - float(share))
        if not float(extra) >= 0:
            raise ValueError(f"extra (barycenter samples per real sample) must be >= 0, got {extra}")
        self.reg, self.extra, self.mode, self.per_image = float(reg), float(extra), mode, int(per_image)
        self.max_iter, self.tol, self.chunk = int(max_iter), float(tol), int(chunk)
        self.cache_dir, self.cache_seed = cache_dir, int(cache_seed)
        self.inner = None
        if inner is not None:
            from ..registry import METHODS

            self.inner = METHODS.create(inner, num_classes=num_classes, seed=seed, check_inputs=check_inputs,
                                        **(inner_kwargs or {}))
            if not isinstance(self.inner, InputMixer):
                raise ValueError(f"inner must be an input-space mixer (mixup, bc, ...), got {inner!r}")
        self.cache_x: Tensor | None = None
        self.cache_t: Tensor | None = None
        self.augment = None

    def reseed(self, seed: int) -> None:
        super().reseed(seed)
        if self.inner is not None:
            self.inner.reseed(seed + 1)

    def settings(self) -> dict:
        """What determines the cached barycenters (part of the cache key). The method's ``revision`` (bumped when
        the barycenter solver's numbers change, which also changes the run ids) is in it once not 0, so a run of
        the new code never reads barycenters the old solver made."""
        settings = {"reg": self.reg, "ranges": self.ranges, "per_image": self.per_image, "max_iter": self.max_iter,
                    "tol": self.tol, "cache_seed": self.cache_seed}
        return {**settings, "revision": self.revision} if self.revision else settings

    def barycenters(self, x1: Tensor, x2: Tensor, lam: Tensor) -> Tensor:
        return barycenter_images(x1, x2, lam, self.reg, max_iter=self.max_iter, tol=self.tol)

    def mix(self, x: Tensor, t: Tensor):
        perm = torch.randperm(x.shape[0], generator=self.generator)
        lam = sample_ratios(x.shape[0], self.generator, self.ranges)
        self.last = MixInfo(lam, perm)
        perm_d, lam_d = perm.to(x.device, non_blocking=True), lam.to(x.device, non_blocking=True)
        heavier = (lam_d >= 0.5)[:, None]
        return self.barycenters(x, x[perm_d], lam_d), torch.where(heavier, t, t[perm_d])

    # ------------------------------------------------------------------------------------------ engine
    def setup(self, context) -> None:
        """Build or load the barycenter cache of the training set (cache mode); ``context``: a
        :class:`~mixlab.methods.base.SetupContext` (the cache goes to ``cache_dir/cache/opttransmix``)."""
        self.augment = context.augment
        if self.mode != "cache":
            return
        root = Path(self.cache_dir) if self.cache_dir else Path(context.cache_dir) / "cache" / "opttransmix"
        cache = load_or_build_cache(self, context.data.x, context.data.y, root, progress=context.progress)
        heavier = torch.where(cache["lam"] >= 0.5, cache["i"], cache["j"])
        self.cache_x = cache["x"].to(context.device)
        self.cache_t = context.targets[heavier.to(context.device)]

    def num_extra(self, batch_size: int) -> int:
        """Barycenter samples added to a training batch of ``batch_size`` real ones."""
        return int(round(self.extra * batch_size))

    def samples_per_step(self, batch_size: int) -> int:
        """Examples one training step feeds the model (what its step time is per-sample against)."""
        return batch_size + self.num_extra(batch_size)

    def extra_samples(self, x: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        n = self.num_extra(x.shape[0])
        if self.cache_x is not None:
            idx = torch.randint(self.cache_x.shape[0], (n,), generator=self.generator).to(x.device, non_blocking=True)
            return self.augment(self.cache_x[idx], self.generator), self.cache_t[idx]
        reps = -(-n // x.shape[0])
        x_bar, t_bar = self.mix(x.repeat(reps, 1, 1, 1)[:n] if reps > 1 else x[:n], (targets.repeat(reps, 1)[:n]
                                if reps > 1 else targets[:n]))
        return x_bar, t_bar

    def training_loss(self, model, x, targets, loss_fn=soft_cross_entropy):
        targets = self.loss_targets(x, targets)
        if self.extra > 0:
            with torch.no_grad():
                x_bar, t_bar = self.extra_samples(x, targets)
            x, targets = torch.cat([x, x_bar.to(x.dtype)]), torch.cat([targets, t_bar.to(targets.dtype)])
        if self.inner is not None:
            x, targets = self.inner.mix(x, targets)
        return loss_fn(model(x), targets)


def _forward_to_opttransmix(cls):
    """Subclasses that pass ``**kwargs`` on to OptTransMix take its options (mixlab.registry.signature_options)."""
    from ..registry import signature_options

    cls.forwards_options = staticmethod(lambda: signature_options(OptTransMix))
    return cls


@_forward_to_opttransmix
class OptTransMixMixup(OptTransMix):
    """OptTransMix + Mixup (AutoMix paper Table 4): Mixup over real + barycenter samples."""

    name = "opttransmix+mixup"

    def __init__(self, inner: str = "mixup", **kwargs):
        super().__init__(inner=inner, **kwargs)


@_forward_to_opttransmix
class OptTransMixBC(OptTransMix):
    """OptTransMix + BC (AutoMix paper Table 4): Between-Class learning over real + barycenter samples."""

    name = "opttransmix+bc"

    def __init__(self, inner: str = "bc", **kwargs):
        super().__init__(inner=inner, **kwargs)


# ----------------------------------------------------------------------------------------------- cache
def cache_key(x_u8: Tensor, y: Tensor, settings: dict) -> str:
    h = hashlib.sha1()
    h.update(x_u8.contiguous().cpu().numpy().tobytes())
    h.update(y.contiguous().cpu().numpy().tobytes())
    h.update(json.dumps({**settings, "format": CACHE_FORMAT}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def cache_pairs(n: int, per_image: int, seed: int, ranges) -> tuple[Tensor, Tensor, Tensor]:
    """Deterministic pairs: each image ``i`` with ``per_image`` random partners ``j != i`` and ratios."""
    g = torch.Generator().manual_seed(seed)
    i = torch.arange(n).repeat_interleave(per_image)
    j = (i + 1 + torch.randint(max(n - 1, 1), (n * per_image,), generator=g)) % n
    return i, j, sample_ratios(n * per_image, g, ranges)


def load_or_build_cache(method: OptTransMix, x_u8: Tensor, y: Tensor, root: str | Path, progress=None) -> dict:
    """Load the cache for these images and settings from ``root``, building missing parts first (resumable)."""
    from tqdm.auto import tqdm

    if x_u8.dtype != torch.uint8:
        raise TypeError(f"the cache is built from uint8 images, got {x_u8.dtype}")
    settings = method.settings()
    folder = Path(root) / cache_key(x_u8, y, settings)
    folder.mkdir(parents=True, exist_ok=True)
    i, j, lam = cache_pairs(x_u8.shape[0], method.per_image, method.cache_seed, method.ranges)
    starts = range(0, len(i), method.chunk)
    meta_path = folder / "meta.json"
    with file_lock(folder / "build.lock"):  # runs trained side by side on the same images: one builds, others wait
        if not meta_path.exists():
            todo = [k for k, s in enumerate(starts) if not (folder / f"part-{k:05d}.pt").exists()]
            bar = tqdm(total=len(starts), initial=len(starts) - len(todo), desc="opttrans barycenters", unit="part",
                       disable=None if progress is None else not progress, leave=False, dynamic_ncols=True)
            x01 = x_u8.float() / 255.0
            for k in todo:
                s = slice(starts[k], starts[k] + method.chunk)
                bar_img = method.barycenters(x01[i[s]], x01[j[s]], lam[s])
                part = {"x": (bar_img * 255.0).round().clamp(0, 255).to(torch.uint8), "i": i[s], "j": j[s],
                        "lam": lam[s]}
                tmp = folder / f"part-{k:05d}.pt.tmp"
                torch.save(part, tmp)
                tmp.replace(folder / f"part-{k:05d}.pt")
                bar.update(1)
            bar.close()
            meta = {"format": CACHE_FORMAT, "settings": settings, "count": len(i), "parts": len(starts),
                    "image_shape": list(x_u8.shape[1:]), "data_sha1": folder.name, "method": method.name}
            tmp = folder / "meta.json.tmp"
            tmp.write_text(json.dumps(meta, indent=1))
            tmp.replace(meta_path)
    parts = [torch.load(folder / f"part-{k:05d}.pt", weights_only=True) for k in range(len(starts))]
    out = {key: torch.cat([p[key] for p in parts]) for key in ("x", "i", "j", "lam")}
    out["folder"] = folder
    return out
