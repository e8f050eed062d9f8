"""TransformMix: learned transformations and mixing masks under a teacher's CAMs (ICLR submission, paper 002).

Two stages. **Search**: a mixing module (a spatial transformer ``f_s`` and a mask prediction network ``f_m``) is
trained so that a frozen, pre-trained teacher ``f_t`` classifies its mixed images as their mixed labels:

    theta_1..k = f_s(s_1..k, Lambda, z),     Lambda ~ Dir(alpha), z ~ N(0, I)                  (Eq. 2)
    m_1..k     = softmax_k(o / tau),  o = f_m(phi(s_1; theta_1) .. phi(s_k; theta_k), Lambda)   (Eq. 3)
    x' = sum_i m_i * phi(x_i; theta_i),   y' = sum_i lambda_i y_i                               (Eq. 4)
    L  = CE(f_t(x'), y')                                                                        (Alg. 1)

where ``s_i`` is the teacher's CAM of ``x_i`` for its label, normalised to ``[0, 1]`` and resized to the image.
**Task training**: a new network is trained from scratch on ``(x', y')`` made by the frozen module (no gradient
into it, the teacher never updated). A module searched on one dataset mixes another: CAMs are resized to the
module's input size; affine parameters are in normalised coordinates and masks are resized back, so any image
size and channel count can be mixed.

Choices the paper leaves open (stated here):

* ``f_s``: Jaderberg et al.'s localisation net (conv 7x7 -> 8, pool, ReLU, conv 5x5 -> 10, pool, ReLU, FC 32,
  FC 6k), with "same" padding and a 3x3 adaptive pool so it takes any size; last layer zero, bias = identity.
  Inputs: k CAMs, k - 1 lambda maps (the last weight is implied), one noise map: the paper's 4 channels at k = 2.
* ``f_m``: three 3x3 convs of 32 channels with ReLU, a 1x1 conv to k; inputs k transformed CAMs and k - 1
  lambda maps (the paper's 3 channels at k = 2); ``tau = exp(log_tau)``, learnable, 1 at initialisation.
* Warps use bilinear sampling with zero padding in ``[0, 1]`` pixel space (black outside the image).
* ``alpha = 1`` (the paper finds it insensitive, Fig. 7d); the search optimiser is SGD with momentum 0.9
  (the paper: SGD, lr 5e-4, weight decay 0.01, 100 epochs, batch 128); the teacher runs in eval mode; the
  search uses the training set with the task's augmentation.
* Ablations (Table 4): ``stn-only`` (f_s, masks by softmax over the transformed CAMs), ``mpn-only`` (identity
  transforms, f_m), ``softmax-cam`` (neither). For masks without ``f_m`` we use
  ``m_i = softmax_i(s_i / tau + log lambda_i)`` so the masks follow the label weights (the paper does not say
  how lambda enters there).
* Every sample of a task batch is mixed (Algorithm 1).
* The search loss divides the teacher's logits by a temperature ``T`` fitted once, before the search, on
  input-mixup images of the training set (``teacher_temperature="auto"``; the paper's loss is ``T = 1``). A
  teacher trained on the same images is over-confident on mixtures, and at ``T = 1`` the search lowered its
  loss by warping every image the same way (a vertical squeeze and shift) until the teacher was unsure: task
  networks trained on those mixes erred on 13.0 % of MNIST-sub test images against 7.8 % for ERM (quick protocol).
  With the fitted ``T`` (about 3.5 there) the warps stay near the identity and the masks follow ``lambda``.
* ``f_m``'s logits get ``log lambda_i`` added (``lambda_prior=True``), so the search starts from input mixup's
  masks ``m_i = lambda_i`` rather than ``1 / k``: Eq. 3 only says ``f_m`` sees ``lambda``. With the paper's
  search budget on 500 images (400 steps) ``f_m`` did not learn to follow ``lambda`` on Fashion-MNIST (search
  loss 1.98 -> 1.94) and the task network trained on mixes that disagree with their labels. Chosen on a
  validation holdout (100 training images per class outside the 500, seeds 0-2): Fashion-MNIST-sub 27.6 % without
  the prior, 21.1 % with it (ERM 21.6 %); MNIST-sub 6.0 % without, 6.3 % with (ERM 6.3 %).
* ``f_m``'s last layer starts at zero (``zero_mask_head=True``), so the search starts exactly at input mixup, as
  ``f_s`` starts exactly at the identity; a randomly initialised last layer added CAM-dependent offsets that made
  the masks disagree with the labels. Validation (as above): MNIST-sub 5.2 % (6.3 % without), Fashion-MNIST-sub
  21.1 % (21.1 % without; ERM 21.6 %).
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check, nonneg_float, positive_float, positive_int
from ..locks import file_lock
from ..seeding import derive_seed
from .base import MixInfo, check_alpha, sample_dirichlet, soft_cross_entropy
from .learned import PixelSpaceMixer, count_parameters

ABLATIONS = ("none", "stn-only", "mpn-only", "softmax-cam")
MASK_DEFAULTS = {"mask_layers": 3, "mask_channels": 32, "mask_kernel": 3}  # the paper's mask network
ARTEFACT_FORMAT = "mixlab-transformmix-module/1"


# ----------------------------------------------------------------------------------------------- saliency
def class_activation_maps(teacher: nn.Module, x: Tensor, classes: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """CAMs ``(B, H, W)`` of ``teacher`` (a StagedNet) for ``classes``, resized to ``size`` (default: the image's)
    and min-max normalised to ``[0, 1]`` per image (a constant map becomes all ones). No gradient flows out."""
    with torch.no_grad():
        fmap = teacher.forward_features(x)
    cam = teacher.cam(fmap, classes)
    cam = F.interpolate(cam[:, None].float(), size=size or x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    low = cam.amin((1, 2), keepdim=True)
    span = cam.amax((1, 2), keepdim=True) - low
    # a constant map (e.g. an all-zero Grad-CAM) carries no saliency: it becomes uniform, all ones
    return torch.where(span > 1e-8, (cam - low) / span.clamp_min(1e-8), torch.ones_like(cam)).detach()


def draw_groups(batch_size: int, k: int, alpha: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``lam`` (B, k) ~ Dir(alpha) and partner indices (k, B), row 0 the batch itself, the others permutations."""
    lam = sample_dirichlet(torch.full((batch_size, k), float(alpha)), generator)
    index = torch.stack([torch.arange(batch_size)] +
                        [torch.randperm(batch_size, generator=generator) for _ in range(k - 1)])
    return lam, index


def fit_mixup_temperature(teacher: nn.Module, x: Tensor, targets: Tensor, alpha: float, k: int,
                          generator: torch.Generator, grid: Tensor | None = None, chunk: int = 512) -> float:
    """The temperature ``T`` with which ``softmax(teacher(x~) / T)`` best matches ``y~`` (least cross-entropy) on
    input-mixup images ``x~ = sum_i lambda_i x_i``, ``lambda ~ Dir(alpha)``, one mix per row of ``x``.

    A teacher trained on the same images is over-confident on mixtures: at ``T = 1`` the search can lower its
    loss by distorting images until the teacher is unsure, rather than by keeping what identifies each image.
    ``x`` (N, C, H, W) model inputs (a convex mix of normalised images is the normalised mix), ``targets`` (N, c).
    ``grid``: candidate temperatures (default ``logspace(-1, 2, 121)``). Chosen on the grid; one teacher pass.
    """
    n = x.shape[0]
    lam, index = draw_groups(n, k, alpha, generator)
    lam, index = lam.to(x.device, x.dtype), index.to(x.device)
    with torch.no_grad():
        logits = torch.cat([teacher(torch.einsum("bk,kbchw->bchw", lam[i:i + chunk], x[index[:, i:i + chunk]]))
                            for i in range(0, n, chunk)]).float()
    t_mix = torch.einsum("bk,kbc->bc", lam.float(), targets[index].float())
    grid = torch.logspace(-1, 2, 121) if grid is None else grid
    grid = grid.to(logits.device)
    ce = -(t_mix * (logits[None] / grid[:, None, None]).log_softmax(-1)).sum(-1).mean(1)  # (len(grid),)
    return float(grid[ce.argmin()])


# ----------------------------------------------------------------------------------------------- networks
class SpatialTransformer(nn.Module):
    """``f_s``: (k CAMs, k - 1 lambda maps, noise) ``(B, 2k, S, S)`` -> affine matrices ``(B, k, 2, 3)``.

    Identity transform at initialisation (last layer zero, bias the identity)."""

    def __init__(self, k: int = 2, hidden: int = 32):
        super().__init__()
        self.k = k
        self.localization = nn.Sequential(
            nn.Conv2d(2 * k, 8, 7, padding=3), nn.MaxPool2d(2, ceil_mode=True), nn.ReLU(inplace=True),
            nn.Conv2d(8, 10, 5, padding=2), nn.MaxPool2d(2, ceil_mode=True), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(3))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(90, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 6 * k))
        nn.init.zeros_(self.fc[-1].weight)
        with torch.no_grad():
            self.fc[-1].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]).repeat(k))

    def forward(self, inputs: Tensor) -> Tensor:
        return self.fc(self.localization(inputs)).reshape(-1, self.k, 2, 3)


class MaskNet(nn.Module):
    """``f_m``: (k transformed CAMs, k - 1 lambda maps) ``(B, 2k - 1, S, S)`` -> mask logits ``o`` ``(B, k, S, S)``.

    ``layers`` convs of ``channels`` with ReLU ("same" padding), then a 1x1 conv to k (paper: 3, 32, 3x3)."""

    def __init__(self, k: int = 2, layers: int = 3, channels: int = 32, kernel: int = 3):
        super().__init__()
        mods, c = [], 2 * k - 1
        for _ in range(layers):
            mods += [nn.Conv2d(c, channels, kernel, padding=kernel // 2), nn.ReLU(inplace=True)]
            c = channels
        mods.append(nn.Conv2d(c, k, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.net(inputs)


@dataclass
class MixOutput:
    """Everything one pass of the mixing module computed (for pictures and tests)."""

    x_mix: Tensor        # (B, C, H, W)
    theta: Tensor        # (B, k, 2, 3)
    x_warped: Tensor     # (B, k, C, H, W)  phi(x_i; theta_i)
    cams_warped: Tensor  # (B, k, S, S)     phi(s_i; theta_i) at the module's size
    masks: Tensor        # (B, k, H, W)     sum to one over k


def warp(images: Tensor, theta: Tensor, size: tuple[int, int]) -> Tensor:
    """``phi(images; theta)``: images ``(B, k, C, h, w)``, theta ``(B, k, 2, 3)`` -> ``(B, k, C, *size)``."""
    b, k, c = images.shape[:3]
    flat_theta = theta.reshape(b * k, 2, 3).to(images.dtype)
    grid = F.affine_grid(flat_theta, [b * k, c, *size], align_corners=False)
    out = F.grid_sample(images.reshape(b * k, c, *images.shape[-2:]), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.reshape(b, k, c, *size)


class MixingModule(nn.Module):
    """The TransformMix mixing module (``f_s`` + ``f_m`` + temperature), for ``k`` images.

    Args:
        k: images per mixed sample.
        image_size: the module's input size ``S`` (CAMs are resized to it).
        ablation: ``none`` (full), ``stn-only``, ``mpn-only`` or ``softmax-cam`` (Table 4).
        stn_hidden, mask_layers, mask_channels, mask_kernel: network sizes.
        lambda_prior: add ``log lambda_i`` to ``f_m``'s mask logits (default), so that an untrained ``f_m`` (outputs
            near 0) gives the masks ``m_i = lambda_i`` of input mixup instead of ``1 / k`` whatever ``lambda``.
            ``False`` is the paper's literal Eq. 3 (and what module files without the key were made with).
        zero_mask_head: zero ``f_m``'s last layer (default), so that with the prior the module starts exactly at
            input mixup (as ``f_s`` starts exactly at the identity). Only the initialisation: loaded files keep
            their weights.
    ``forward(x, cams, lam, z)``: ``x`` (B, k, C, H, W) in [0, 1]; ``cams`` (B, k, h, w) in [0, 1]; ``lam`` (B, k)
    rows summing to one; ``z`` (B, 1, S, S) noise. Returns a :class:`MixOutput`.
    """

    def __init__(self, k: int = 2, image_size: int = 32, ablation: str = "none", stn_hidden: int = 32,
                 mask_layers: int = 3, mask_channels: int = 32, mask_kernel: int = 3, lambda_prior: bool = True,
                 zero_mask_head: bool = True):
        super().__init__()
        if int(k) < 2:
            raise ValueError(f"k (images per mixed sample) must be >= 2, got {k}")
        if ablation not in ABLATIONS:
            raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
        self.k, self.image_size, self.ablation = int(k), int(image_size), ablation
        self.sizes = dict(stn_hidden=stn_hidden, mask_layers=mask_layers, mask_channels=mask_channels,
                          mask_kernel=mask_kernel)
        self.lambda_prior, self.zero_mask_head = bool(lambda_prior), bool(zero_mask_head)
        self.stn = SpatialTransformer(self.k, stn_hidden) if ablation in ("none", "stn-only") else None
        self.mask_net = MaskNet(self.k, mask_layers, mask_channels, mask_kernel) if ablation in ("none", "mpn-only") else None
        self.log_tau = nn.Parameter(torch.zeros(()))
        if self.zero_mask_head and self.mask_net is not None:
            nn.init.zeros_(self.mask_net.net[-1].weight)
            nn.init.zeros_(self.mask_net.net[-1].bias)

    @property
    def tau(self) -> Tensor:
        return self.log_tau.exp()

    def config(self) -> dict:
        return {"k": self.k, "image_size": self.image_size, "ablation": self.ablation, **self.sizes,
                "lambda_prior": self.lambda_prior, "zero_mask_head": self.zero_mask_head}

    def forward(self, x: Tensor, cams: Tensor, lam: Tensor, z: Tensor) -> MixOutput:
        b, k = x.shape[:2]
        if k != self.k or cams.shape[:2] != (b, k) or lam.shape != (b, k):
            raise ValueError(f"module mixes k={self.k} images: expected x (B, {self.k}, C, H, W), cams (B, {self.k}, "
                             f"h, w), lam (B, {self.k}); got {tuple(x.shape)}, {tuple(cams.shape)}, {tuple(lam.shape)}")
        s = (self.image_size, self.image_size)
        cams = F.interpolate(cams.to(x.dtype), size=s, mode="bilinear", align_corners=False)
        lam = lam.to(x.dtype)
        lam_maps = lam[:, :k - 1, None, None].expand(b, k - 1, *s)
        if self.stn is not None:
            theta = self.stn(torch.cat([cams, lam_maps, z.to(x.dtype)], 1))                 # Eq. 2
        else:
            theta = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], device=x.device, dtype=x.dtype).expand(b, k, 2, 3)
        x_warped = warp(x, theta, x.shape[-2:])
        cams_warped = warp(cams[:, :, None], theta, s)[:, :, 0]
        if self.mask_net is not None:
            logits = self.mask_net(torch.cat([cams_warped, lam_maps], 1)) / self.tau    # Eq. 3
            if self.lambda_prior:  # start from masks m_i = lambda_i (input mixup), see the module docstring
                logits = logits + lam.clamp_min(1e-6).log()[:, :, None, None]
        else:
            logits = cams_warped / self.tau + lam.clamp_min(1e-6).log()[:, :, None, None]
        masks = logits.softmax(1)
        if masks.shape[-2:] != x.shape[-2:]:
            masks = F.interpolate(masks, size=x.shape[-2:], mode="bilinear", align_corners=False)
        x_mix = (masks[:, :, None] * x_warped).sum(1)                                    # Eq. 4
        return MixOutput(x_mix, theta, x_warped, cams_warped, masks)

    # -------------------------------------------------------------------------------------------- artefact
    def save(self, path: str | Path, meta: dict | None = None, teacher: dict | None = None) -> Path:
        """Write the module with its config (and optionally its teacher) as one ``torch.save`` file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {"format": ARTEFACT_FORMAT, "config": self.config(), "state_dict": self.state_dict(),
                "meta": meta or {}, "teacher": teacher}
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(blob, tmp)
        tmp.replace(path)
        return path

    @staticmethod
    def read(path: str | Path) -> dict:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no TransformMix module at {path} (make one with `mixlab transformmix search`)")
        blob = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(blob, dict) or blob.get("format") != ARTEFACT_FORMAT:
            raise ValueError(f"{path} is not a TransformMix module file (format {ARTEFACT_FORMAT})")
        return blob

    @classmethod
    def load(cls, path: str | Path) -> "MixingModule":
        blob = cls.read(path)
        module = cls(**{"lambda_prior": False, "zero_mask_head": False, **blob["config"]})  # older files
        module.load_state_dict(blob["state_dict"])
        return module


# ----------------------------------------------------------------------------------------------- teacher
def build_teacher(record: dict) -> nn.Module:
    from ..registry import MODELS

    model = MODELS.create(record["model"], num_classes=record["num_classes"], in_channels=record["in_channels"],
                          image_size=record["image_size"], **record["model_kwargs"])
    model.load_state_dict(record["state_dict"])
    return model


# ----------------------------------------------------------------------------------------------- method
class TransformMix(PixelSpaceMixer):
    """TransformMix: mix ``k`` images with a frozen, searched mixing module guided by a teacher's CAMs.

    Args:
        k: images per mixed sample (2 in the paper's main tables; 3 in its appendix B).
        alpha: Dirichlet (Beta for k = 2) concentration of the mixing weights (default 1).
        ablation: ``none``, ``stn-only``, ``mpn-only`` or ``softmax-cam`` (Table 4).
        mixer_from: a module file from ``mixlab transformmix search`` (direct or transfer). Without it,
            ``setup(context)`` asks the context for a teacher and a search stage on the training data (cached
            under ``<out>/transformmix``, keyed by dataset, subset, seed and configuration).
        teacher_from: a module file whose teacher to use for CAMs; default: the module file's teacher when it
            was trained on the same data (dataset, subset, seed), else the context's teacher (trained on this data).
        teacher_epochs: epochs of that teacher (default: the task schedule's).
        search_epochs, search_lr, search_weight_decay, search_momentum, search_batch_size: the search stage
            (paper: 100, 5e-4, 0.01, -, 128).
        teacher_temperature: the search loss is ``CE(softmax(f_t(x') / T), y')``. ``1`` is the paper's loss;
            ``"auto"`` (default) fits ``T`` once before the search (:func:`fit_mixup_temperature`) so that the
            teacher's predictions on *input-mixup* images of the training set best match their mixed labels.
        lambda_prior: start the mask network from the masks of input mixup (:class:`MixingModule`; default).
        zero_mask_head: zero the mask network's last layer at initialisation (:class:`MixingModule`; default).
        mask_layers, mask_channels, mask_kernel: the mask prediction network's size (paper: 3 layers of 32
            channels, 3x3 kernels; its sensitivity study, appendix F / Fig. 7a-c, tries {2, 3, 4}, {8, 16, 32, 64}
            and {3, 5, 7}).
        image_size: the module's input size when searching (default: the data's).
    Users call ``attach(teacher, module)`` and then ``mixer(x, y)``; ``x`` in [0, 1] unless
    ``set_normalization`` was called.
    """

    name = "transformmix"
    needs_setup = True  # a searched module and a teacher: setup(context), mixer_from, or attach()
    revision = 3  # 1: teacher_temperature="auto" by default (was the paper's 1); 2: lambda_prior=True;
    # 3: zero_mask_head=True

    def __init__(self, k: int = 2, alpha: float = 1.0, ablation: str = "none", mixer_from: str | None = None,
                 teacher_from: str | None = None, teacher_epochs: int | None = None, search_epochs: int = 100,
                 search_lr: float = 5e-4, search_weight_decay: float = 0.01, search_momentum: float = 0.9,
                 search_batch_size: int = 128, teacher_temperature: float | str = "auto", lambda_prior: bool = True,
                 zero_mask_head: bool = True, mask_layers: int = 3, mask_channels: int = 32, mask_kernel: int = 3,
                 image_size: int | None = None, num_classes=None, seed=0, check_inputs=True):
        super().__init__(num_classes, seed, check_inputs)
        if int(k) < 2:
            raise ValueError(f"k (images per mixed sample) must be >= 2, got {k}")
        if ablation not in ABLATIONS:
            raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
        self.k, self.alpha, self.ablation = int(k), check_alpha(alpha), ablation
        self.mixer_from, self.teacher_from, self.teacher_epochs = mixer_from, teacher_from, teacher_epochs
        positive_int("teacher_epochs", teacher_epochs, none="the task schedule's epochs")
        positive_int("image_size", image_size, none="the data's")
        positive_int("search_epochs", search_epochs), positive_int("search_batch_size", search_batch_size)
        positive_float("search_lr", search_lr), nonneg_float("search_weight_decay", search_weight_decay)
        check("search_momentum", search_momentum, 0, 1, hi_open=True)
        if teacher_temperature != "auto" and not float(teacher_temperature) > 0:
            raise ValueError(f"teacher_temperature must be > 0 or 'auto', got {teacher_temperature!r}")
        self.search = dict(epochs=int(search_epochs), lr=float(search_lr), weight_decay=float(search_weight_decay),
                           momentum=float(search_momentum), batch_size=int(search_batch_size))
        if teacher_temperature != 1.0:  # left out at the paper's loss, so earlier search keys stay valid
            self.search["teacher_temperature"] = (teacher_temperature if teacher_temperature == "auto"
                                                  else float(teacher_temperature))
        self.lambda_prior, self.zero_mask_head = bool(lambda_prior), bool(zero_mask_head)
        self.mask_size = {"mask_layers": int(mask_layers), "mask_channels": int(mask_channels),
                          "mask_kernel": int(mask_kernel)}
        if min(self.mask_size.values()) < 1 or self.mask_size["mask_kernel"] % 2 == 0:
            raise ValueError(f"mask network size must be positive with an odd kernel (the masks keep the image "
                             f"size), got {self.mask_size}")
        self.image_size = image_size
        self.teacher: nn.Module | None = None
        self.module: MixingModule | None = None
        self.last_output: MixOutput | None = None
        self.fitted_temperature: float | None = None
        self.module_source: Path | None = None  # the module file set-up loaded, reused or wrote

    # ------------------------------------------------------------------------------------------ plumbing
    def attach(self, teacher: nn.Module, module: MixingModule, frozen: bool = True) -> "TransformMix":
        """Use ``teacher`` (frozen, eval mode, never updated) and ``module`` (frozen unless ``frozen=False``)."""
        if module.k != self.k:
            raise ValueError(f"the module mixes k={module.k} images but this TransformMix has k={self.k}")
        self.teacher = teacher.requires_grad_(False).eval()
        self.module = module.requires_grad_(not frozen)
        self.module.train(not frozen)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # BN statistics of the teacher never change
        if self.module is not None and not any(p.requires_grad for p in self.module.parameters()):
            self.module.eval()
        return self

    def sample(self, batch_size: int, device=None) -> tuple[Tensor, Tensor, Tensor]:
        """``lam`` (B, k) ~ Dir(alpha), partner indices (k, B) (row 0 the batch itself), noise (B, 1, S, S); drawn
        on the CPU, then moved to ``device`` (None: left there)."""
        lam, index = draw_groups(batch_size, self.k, self.alpha, self.generator)
        s = self.module.image_size
        z = torch.randn(batch_size, 1, s, s, generator=self.generator)
        return tuple(v if device is None else v.to(device, non_blocking=True) for v in (lam, index, z))

    def cams(self, x: Tensor, t: Tensor) -> Tensor:
        """Teacher CAMs ``(B, H, W)`` of normalised-space images ``x`` for their (top) labels."""
        return class_activation_maps(self.teacher, x, t.argmax(1))

    def mix_with_output(self, x: Tensor, t: Tensor, grad: bool = False,
                        index: Tensor | None = None) -> tuple[Tensor, Tensor, MixOutput]:
        """Mix a batch; ``grad=True`` keeps the graph into the module (the search stage); ``index`` (k, B)
        fixes the groups (row 0 must be the batch itself) instead of drawing them."""
        if self.module is None or self.teacher is None:
            raise RuntimeError("transformmix has no mixing module yet: pass mixer_from=PATH, train it through the "
                               "engine (setup(context)), or call attach(teacher, module)")
        b = x.shape[0]
        lam_cpu, drawn, z = self.sample(b)  # kept on the CPU for self.last: no copy back from the device
        index_cpu = drawn if index is None else index.cpu()
        lam, index, z = (v.to(x.device, non_blocking=True) for v in (lam_cpu, index_cpu, z))
        cams = self.cams(x, t)
        x01 = self.to_pixels(x)
        with torch.set_grad_enabled(grad):
            out = self.module(x01[index].transpose(0, 1), cams[index].transpose(0, 1), lam, z)
        t_mix = torch.einsum("bk,kbc->bc", lam.to(t.dtype), t[index])                      # y' = sum lambda_i y_i
        self.last = MixInfo(lam_cpu[:, 0], index_cpu[1]) if self.k == 2 else MixInfo(lam_cpu, index_cpu)
        self.last_output = out
        return self.from_pixels(out.x_mix), t_mix, out

    def mix(self, x: Tensor, t: Tensor):
        x_mix, t_mix, _ = self.mix_with_output(x, t)
        return x_mix, t_mix

    # ---------------------------------------------------------------------------------------- search
    def begin_search(self, module: MixingModule, x_uint8: Tensor, targets: Tensor, augment, seed: int = 0) -> None:
        """Before the search stage (:func:`mixlab.search.search_module`): attach ``module`` unfrozen and fix the
        teacher's temperature (fitted on input-mixup images of at most 8,192 training images when ``"auto"``)."""
        self.attach(self.teacher, module, frozen=False)
        temperature = self.search.get("teacher_temperature", 1.0)
        if temperature == "auto":
            n = x_uint8.shape[0]
            gen = torch.Generator().manual_seed(derive_seed(seed, "temperature"))
            rows = torch.randperm(n, generator=gen)[:8192].to(x_uint8.device) if n > 8192 else slice(None)
            temperature = fit_mixup_temperature(self.teacher, augment(x_uint8[rows], gen), targets[rows], self.alpha,
                                                self.k, gen)  # one teacher pass
        self.fitted_temperature = float(temperature)

    def search_loss(self, x: Tensor, t: Tensor) -> Tensor:
        """The search loss of one batch (Alg. 1, SEARCH): the frozen teacher's CE on the module's mixes,
        ``CE(softmax(f_t(x') / T), y')``; the graph reaches the module only."""
        x_mix, t_mix, _ = self.mix_with_output(x, t, grad=True)
        return soft_cross_entropy(self.teacher(x_mix) / self.fitted_temperature, t_mix)

    def end_search(self, module: MixingModule) -> None:
        self.attach(self.teacher, module, frozen=True)

    def search_key(self, context) -> str:
        """The cache folder name of the module searched for this data, teacher and configuration."""
        d = context.data_id
        ident = {"teacher": context.teacher_identity(self.teacher_epochs),
                 "module": self.module_config(context), "search": self.search, "alpha": self.alpha}
        digest = hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:10]
        sub = f"sub{d['subset_per_class']}" if d.get("subset_per_class") else "full"
        return f"{d['dataset']}-{sub}-s{d['seed']}-k{self.k}-{self.ablation}-{digest}"

    def module_config(self, context) -> dict:
        config = {"k": self.k, "image_size": int(self.image_size or context.x.shape[-1]),
                  "ablation": self.ablation, "lambda_prior": self.lambda_prior}
        if self.zero_mask_head:  # left out when off, so earlier search keys stay valid
            config["zero_mask_head"] = True
        config.update({k: v for k, v in self.mask_size.items() if v != MASK_DEFAULTS[k]})  # likewise at defaults
        return config

    # ------------------------------------------------------------------------------------------ set-up hook
    def setup(self, context) -> None:
        """Obtain the teacher and the (frozen) module (:class:`~mixlab.methods.base.SetupContext`): from the
        files given, else a teacher and a search stage asked of the context (both cached: the teacher is the
        ``erm`` run of the same data, the module goes to ``cache_dir/transformmix/modules/<search_key>``)."""
        self.set_normalization(context.augment.mean, context.augment.std)
        dev = context.device
        blob = MixingModule.read(self.mixer_from) if self.mixer_from else None
        teacher_blob = MixingModule.read(self.teacher_from) if self.teacher_from else blob
        record = teacher_blob.get("teacher") if teacher_blob else None
        same_data = record is not None and all(record.get(key) == context.data_id.get(key) for key in
                                               ("dataset", "subset_per_class", "seed"))
        if record is None or not (same_data or self.teacher_from):
            record = context.teacher(self.teacher_epochs)
        teacher = build_teacher(record).to(dev)
        if blob is not None:
            module = MixingModule.load(self.mixer_from)
            self.module_source = Path(self.mixer_from)
            origin = f"loaded from {self.mixer_from} (searched on {blob['meta'].get('dataset', '?')})"
        else:
            folder = Path(context.cache_dir) / "transformmix" / "modules" / self.search_key(context)
            path = self.module_source = folder / "module.pt"
            with file_lock(folder / "search.lock"):  # runs side by side with the same search: one searches
                if path.exists():
                    module = MixingModule.load(path)
                    origin = f"reused {path}"
                else:
                    module = MixingModule(**self.module_config(context)).to(dev)
                    self.teacher = teacher.requires_grad_(False).eval()
                    losses = context.search(self, module, folder / "search-checkpoint.pt")
                    meta = {**{k: context.data_id.get(k) for k in ("dataset", "subset_per_class", "seed")},
                            "search": self.search, "alpha": self.alpha, "losses": losses,
                            "teacher_temperature": self.fitted_temperature}
                    module.save(path, meta, teacher={k: v for k, v in record.items()})
                    origin = (f"searched, saved to {path} (teacher loss {losses[0]:.3f} -> {losses[-1]:.3f} at "
                              f"temperature {self.fitted_temperature:.3g})")
        self.attach(teacher, module.to(dev), frozen=True)
        if context.channels_last:  # the frozen networks in the run's memory format: faster convolutions
            teacher.to(memory_format=torch.channels_last)
            module.to(memory_format=torch.channels_last)
        print(f"transformmix: module k={module.k} ({module.ablation}, {count_parameters(module)} parameters, "
              f"tau {float(module.tau):.3f}) {origin}", file=sys.stderr)

    # ------------------------------------------------------------------------------------------ picture
    def show(self, x01: Tensor, targets: Tensor, classes, path, context):
        """The paper's Figure 3 / 8 panels: inputs, CAMs, transformed images, masks, mixed result."""
        from ..viz import image_table, label_text

        if self.mixer_from is None:
            raise ValueError("transformmix show needs a searched module: --method-arg mixer_from=PATH "
                             "(from `mixlab transformmix search`)")
        blob = MixingModule.read(self.teacher_from or self.mixer_from)
        if blob.get("teacher") is None:
            raise ValueError(f"{self.teacher_from or self.mixer_from} holds no teacher to compute CAMs with")
        self.attach(build_teacher(blob["teacher"]), MixingModule.load(self.mixer_from))
        self.set_normalization(blob["teacher"]["mean"], blob["teacher"]["std"])
        n = max(1, x01.shape[0] // self.k)
        x = self.from_pixels(x01[:n * self.k])
        t = targets[:n * self.k]
        groups = torch.arange(n * self.k).reshape(self.k, n)  # sample i is mixed with i + n, i + 2n, ...
        index = torch.stack([torch.arange(n * self.k).roll(-j * n) for j in range(self.k)])
        with torch.no_grad():
            x_mix, t_mix, out = self.mix_with_output(x, t, index=index)
        cams = class_activation_maps(self.teacher, x, t.argmax(1))
        cols = [(f"x{i + 1}", x01[groups[i]]) for i in range(self.k)]
        cols += [(f"CAM x{i + 1}", cams[groups[i]]) for i in range(self.k)]
        cols += [(f"phi(x{i + 1})", out.x_warped[:n, i]) for i in range(self.k)]
        cols += [(f"mask {i + 1}", out.masks[:n, i]) for i in range(self.k)]
        cols.append(("mixed", self.to_pixels(x_mix[:n]).clamp(0, 1)))
        rows = [label_text(t_mix[i], classes, self.k) for i in range(n)]
        src = MixingModule.read(self.mixer_from)["meta"].get("dataset", "?")
        return image_table(cols, path, row_labels=rows, maps=tuple(h for h, _ in cols if h.startswith("mask")),
                           title=f"transformmix (module searched on {src}, tau={float(self.module.tau):.2f})")

    def extra_repr(self) -> str:
        return (f"k={self.k}, alpha={self.alpha}, ablation={self.ablation}, mixer_from={self.mixer_from}, "
                + ", ".join(f"{k}={v}" for k, v in self.mask_size.items()))

