"""AutoMix of Zhu, Shi, Yan, Zha (ECCV 2020): a barycenter generator trained jointly with the classifier.

Not the "AutoMix" of Liu et al. 2022 (OpenMixup); registry name ``automix-zhu``.

A U-Net ``G`` with a Squeeze-and-Excitation block before each down-sampling reads two images; at each of its five
scales the SE-weighted feature maps of the two images are combined as ``[f_l(x1) * lam] (+) [f_l(x2) * (1 - lam)]``
(channel concatenation) and fed to the decoder's skip connection. The generated barycenter
``x^ = G(x1, x2, lam)``, ``lam ~ U(0, 1)``, is classified by ``D`` (the task network) and both minimise (Eq. 10)

    L = lam KL(y1 || D(x^)) + (1 - lam) KL(y2 || D(x^))                       (Eq. 8, cooperative loss)
        + alpha * (lam |x1 - x^|_1 + (1 - lam) |x2 - x^|_1),    alpha = 1.5     (Eq. 9, reconstruction)

Choices the paper leaves open (stated here, options where cheap):

* Widths 16-32-64-128-128, DoubleConv = 2 x (conv3x3, BN, LeakyReLU 0.2), SE reduction 16 (SPEC, from a probable
  author repository). The deepest pair is fused by a DoubleConv; the decoder mirrors the encoder (bilinear
  up-sampling to the skip's size, concat, DoubleConv); a 1x1 conv, then the output mapping of the data's range:
  a sigmoid for images in ``[0, 1]`` (the paper's), the identity (an affine 1x1 head) for data outside it, such
  as MIML's standardised bag features (about half negative, range about +-6), which a sigmoid cannot produce.
  ``output="auto"`` (default) picks it from the training data in ``setup`` (or from the first batch mixed).
  1.87 M parameters (paper: ~1.96 M; the paper does not give the decoder widths).
* One ``lam`` per sample (the generator takes a per-sample ratio). KL is computed as soft cross-entropy against
  the ``lam``-weighted target (same gradients: they differ by the target's entropy, a constant).
* ``|.|_1`` is the mean absolute error per pixel (a sum over pixels would dwarf the KL term), in ``[0, 1]`` pixel
  space; the generator sees ``[0, 1]`` images (see :mod:`mixlab.methods.learned`).
* Half of each batch is mixed, the other half is classified clean (``clean_fraction=0.5``, the repository's split).
  The paper's ``D*`` (section 2.3: ``D*(x) = y`` for a real image, ``D(x)`` for a generated one) has the
  discriminator see real images too; Eq. 10 alone, on mixed images only, is ``clean_fraction=0``. Measured on
  MNIST-sub (quick protocol, seed 0): 17.6 % test error with 0, 9.95 % with 0.5.
* Fusion of the two images' features (``fusion``): ``lambda`` weights them by ``lam`` and ``1 - lam`` (the
  paper's); ``channel-mask`` (the repository's later variant, SPEC) keeps a random ``round(C lam)`` of the ``C``
  channels of ``x1``'s features at each scale and the other channels of ``x2``'s, unweighted.
* Label strategies (Table 6): ``lambda`` (d, the paper's), ``first`` (a), ``half`` (b), ``multilabel`` (c: the two
  targets added and clipped to 1, trained with sigmoid cross-entropy as a multi-label task).
* Pairs (Table 6, "label conflict"): ``random`` (the paper's), ``same`` class, ``different`` class.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import MixInfo, check_alpha, choose_partners, interpolate, multilabel_bce, sample_beta, soft_cross_entropy
from .learned import PixelSpaceMixer, count_parameters

OUTPUTS = ("sigmoid", "linear")
FUSIONS = ("lambda", "channel-mask")
LABEL_STRATEGIES = {"lambda": "lambda", "d": "lambda", "first": "first", "a": "first", "half": "half", "b": "half",
                    "multilabel": "multilabel", "c": "multilabel"}


class SEBlock(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018): ``x * sigmoid(W2 relu(W1 avgpool(x))))`` per channel."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels),
                                nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    """2 x (conv 3x3, BatchNorm, LeakyReLU 0.2), the U-Net block."""
    layers = []
    for a, b in ((c_in, c_out), (c_out, c_out)):
        layers += [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, inplace=True)]
    return nn.Sequential(*layers)


class BarycenterUNet(nn.Module):
    """The barycenter generator ``G(x1, x2, lam) -> x^`` (Fig. 4 of the paper).

    Args:
        in_channels: image channels (output has the same).
        widths: channels of the five encoder scales.
        se_reduction: SE bottleneck ratio.
        output: ``"sigmoid"`` (images in ``[0, 1]``) or ``"linear"`` (unbounded data, e.g. standardised features).
        fusion: ``"lambda"`` (the paper's weighting) or ``"channel-mask"`` (see the module docstring).
    Shapes: ``x1, x2`` (B, C, H, W); ``lam`` (B,) or 0-d; output (B, C, H, W), in ``(0, 1)`` with ``sigmoid``.
    Any ``H, W`` works (down-sampling floors, up-sampling returns to each skip's size).
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (16, 32, 64, 128, 128), se_reduction: int = 16,
                 output: str = "sigmoid", fusion: str = "lambda"):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.output, self.fusion = output, fusion
        widths = tuple(int(w) for w in widths)
        self.in_channels, self.widths = in_channels, widths
        ins = (in_channels,) + widths[:-1]
        self.encoder = nn.ModuleList(double_conv(a, b) for a, b in zip(ins, widths))
        self.se = nn.ModuleList(SEBlock(w, se_reduction) for w in widths)
        # the deepest pair is fused by one DoubleConv; then decoder level l: up-sampled state (+) the pair of
        # skips at scale l -> widths[l]
        self.bottleneck = double_conv(2 * widths[-1], widths[-1])
        self.decoder = nn.ModuleList()
        state = widths[-1]
        for w in reversed(widths[:-1]):
            self.decoder.insert(0, double_conv(state + 2 * w, w))
            state = w
        self.out = nn.Conv2d(widths[0], in_channels, 1)

    def features(self, x: Tensor) -> list[Tensor]:
        """SE-weighted feature maps at the five scales (SE before each down-sampling)."""
        feats = []
        for level, (block, se) in enumerate(zip(self.encoder, self.se)):
            if level:
                x = F.max_pool2d(x, 2) if min(x.shape[-2:]) >= 2 else x
            x = se(block(x))
            feats.append(x)
        return feats

    def fuse(self, f1: Tensor, f2: Tensor, lam: Tensor, generator: torch.Generator | None) -> Tensor:
        """One scale's pair of feature maps, fused for the decoder: ``[f1 * lam] (+) [f2 * (1 - lam)]``, or with
        ``channel-mask`` a random ``round(C lam)`` channels of ``f1`` and the rest of ``f2`` (per sample)."""
        if self.fusion == "lambda":
            return torch.cat([f1 * lam, f2 * (1 - lam)], 1)
        b, c = f1.shape[:2]
        rank = torch.rand(b, c, generator=generator).argsort(1).argsort(1).to(f1.device, non_blocking=True)
        keep = (rank < torch.round(lam.reshape(-1, 1) * c)).to(f1.dtype)[:, :, None, None]
        return torch.cat([f1 * keep, f2 * (1 - keep)], 1)

    def forward(self, x1: Tensor, x2: Tensor, lam: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b = x1.shape[0]
        feats = self.features(torch.cat([x1, x2]))  # one pass of the shared encoder over both images
        lam = lam.to(x1).reshape(-1, 1, 1, 1).expand(b, 1, 1, 1)
        skips = [self.fuse(f[:b], f[b:], lam, generator) for f in feats]
        h = self.bottleneck(skips[-1])
        for skip, block in zip(reversed(skips[:-1]), reversed(self.decoder)):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], 1))
        out = self.out(h)
        return torch.sigmoid(out) if self.output == "sigmoid" else out

    def get_extra_state(self) -> dict:  # the output mapping travels with the weights
        return {"output": self.output, "fusion": self.fusion}

    def set_extra_state(self, state: dict) -> None:
        self.output, self.fusion = state["output"], state.get("fusion", "lambda")


def reconstruction_per_sample(x1: Tensor, x2: Tensor, x_hat: Tensor, lam: Tensor) -> Tensor:
    """Eq. 9 per sample: ``lam |x1 - x^|_1 + (1 - lam) |x2 - x^|_1`` with ``|.|_1`` the per-pixel mean: ``(B,)``."""
    dims = tuple(range(1, x1.dim()))
    d1 = (x1 - x_hat).abs().mean(dims)
    d2 = (x2 - x_hat).abs().mean(dims)
    return interpolate(d1, d2, lam)


def reconstruction_loss(x1: Tensor, x2: Tensor, x_hat: Tensor, lam: Tensor) -> Tensor:
    """Eq. 9, the batch mean of :func:`reconstruction_per_sample`."""
    return reconstruction_per_sample(x1, x2, x_hat, lam).mean()


class AutoMixZhu(PixelSpaceMixer):
    """AutoMix (Zhu et al. 2020): the barycenter generator, trained jointly with the classifier.

    Args:
        recon_weight: ``alpha`` of Eq. 10, the weight of the L1 reconstruction loss (1.5 in the paper).
        label_strategy: ``lambda`` (d, default), ``first`` (a), ``half`` (b) or ``multilabel`` (c).
        pairs: ``random`` (default), ``same`` or ``different`` class partners.
        clean_fraction: fraction of each batch left unmixed (0.5: the repository's split; 0: Eq. 10 alone).
        in_channels: image channels; built by ``setup(context)`` when the engine trains it, else needed here
            (or built on first use, which is too late for an optimiser made beforehand).
        widths, se_reduction: generator size (see :class:`BarycenterUNet`).
        output: the generator's output mapping, ``"sigmoid"``, ``"linear"`` or ``"auto"`` (sigmoid when the
            training data lie in ``[0, 1]``, else linear; chosen in ``setup`` or on the first batch).
        checkpoint: a ``mixlab train`` checkpoint to load the trained generator from (for ``mixlab show``).
        alpha: ``lam ~ Beta(alpha, alpha)`` per sample; 1 (default) is the paper's ``U(0, 1)``.
        generator_lr_scale: the generator learns at this multiple of the run's learning rate (1: the paper's one
            optimiser for both networks).
        fusion: ``"lambda"`` (default, the paper's) or ``"channel-mask"`` (the repository's; module docstring).
    ``mixer(x, y)`` returns the generated barycenters and their targets; the engine calls ``training_loss``.
    Zhu, Shi, Yan, Zha. AutoMix: Mixup Networks for Sample Interpolation via Cooperative Barycenter Learning.
    ECCV 2020.
    """

    name = "automix-zhu"

    def __init__(self, recon_weight: float = 1.5, label_strategy: str = "lambda", pairs: str = "random",
                 clean_fraction: float = 0.5, in_channels: int | None = None,
                 widths: tuple[int, ...] = (16, 32, 64, 128, 128), se_reduction: int = 16,
                 output: str = "auto", checkpoint: str | None = None, alpha: float = 1.0,
                 generator_lr_scale: float = 1.0, fusion: str = "lambda", num_classes=None, seed=0,
                 check_inputs=True):
        super().__init__(num_classes, seed, check_inputs)
        if label_strategy not in LABEL_STRATEGIES:
            raise ValueError(f"label_strategy must be one of {sorted(LABEL_STRATEGIES)}, got {label_strategy!r}")
        if not 0.0 <= clean_fraction < 1.0:
            raise ValueError(f"clean_fraction must lie in [0, 1), got {clean_fraction}")
        if recon_weight < 0:
            raise ValueError(f"recon_weight must be >= 0, got {recon_weight}")
        choose_partners(torch.zeros(2, 1), torch.Generator(), pairs)  # validates the mode
        if output not in OUTPUTS + ("auto",):
            raise ValueError(f"output must be one of {OUTPUTS + ('auto',)}, got {output!r}")
        if not generator_lr_scale > 0:
            raise ValueError(f"generator_lr_scale must be > 0, got {generator_lr_scale}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.alpha, self.lr_scale, self.fusion = check_alpha(alpha), float(generator_lr_scale), fusion
        self.output = output
        self._output_chosen = output != "auto"
        self.recon_weight = float(recon_weight)
        self.label_strategy = LABEL_STRATEGIES[label_strategy]
        self.pairs = pairs
        self.clean_fraction = float(clean_fraction)
        self.widths, self.se_reduction = tuple(widths), int(se_reduction)
        self.generator_net: BarycenterUNet | None = None
        self.checkpoint = checkpoint
        if in_channels is not None:
            self.build(int(in_channels))
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)

    def build(self, in_channels: int) -> BarycenterUNet:
        output = "sigmoid" if self.output == "auto" else self.output  # "auto": settled by choose_output
        self.generator_net = BarycenterUNet(in_channels, self.widths, self.se_reduction, output, self.fusion)
        self._output_chosen = self.output != "auto"
        return self.generator_net

    def choose_output(self, x01: Tensor) -> str:
        """Settle ``output="auto"`` from data in pixel space: sigmoid for uint8 images or when every value lies in
        ``[0, 1]``, else linear (one host sync, once). Returns the generator's output mapping."""
        if self.generator_net is None:
            self.build(x01.shape[1]).to(x01.device)
        if not self._output_chosen:
            inside = x01.dtype == torch.uint8 or bool(((x01 >= 0) & (x01 <= 1)).all())  # uint8: images
            self.generator_net.output = "sigmoid" if inside else "linear"
            self._output_chosen = True
        return self.generator_net.output

    def load_checkpoint(self, path: str) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        state = state.get("method", state)
        weight = state.get("generator_net.out.weight")
        if weight is None:
            raise ValueError(f"{path} holds no AutoMix (Zhu) generator (no 'generator_net.*' weights)")
        state = {"generator_net._extra_state": {"output": "sigmoid"}, **state}  # saved before the option existed
        self.fusion = state["generator_net._extra_state"].get("fusion", "lambda")
        self.build(weight.shape[0])
        self._output_chosen = True
        self.load_state_dict(state)

    def setup(self, context) -> None:
        """Set-up hook (:class:`~mixlab.methods.base.SetupContext`): build the generator for the data's channels
        and learn the normalisation."""
        self.set_normalization(context.augment.mean, context.augment.std)
        if self.generator_net is None:
            self.build(context.x.shape[1]).to(context.device)
        self.choose_output(context.x)  # the engine keeps its inputs unnormalised: uint8 images or features
        import sys

        print(f"automix-zhu: barycenter generator with {count_parameters(self.generator_net) / 1e6:.2f} M "
              f"parameters, {self.generator_net.output} output (paper: ~1.96 M beside ResNet-18, images in "
              f"[0, 1])", file=sys.stderr)

    # ------------------------------------------------------------------------------------------------ pieces
    def sample(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``lam ~ U(0, 1)`` (or ``Beta(alpha, alpha)``) per sample (CPU) and partner indices (on ``t``'s
        device)."""
        n = t.shape[0]
        lam = torch.rand(n, generator=self.generator) if self.alpha == 1.0 else sample_beta(self.alpha,
                                                                                              self.generator, (n,))
        return lam, choose_partners(t, self.generator, self.pairs)

    def mixed_targets(self, t: Tensor, index: Tensor, lam: Tensor) -> Tensor:
        """Targets of the generated samples under ``label_strategy``."""
        t2 = t[index]
        if self.label_strategy == "lambda":
            return interpolate(t, t2, lam)
        if self.label_strategy == "first":
            return t.clone()
        if self.label_strategy == "half":
            return 0.5 * (t + t2)
        return (t + t2).clamp(max=1.0)

    def generate(self, x01: Tensor, index: Tensor, lam: Tensor) -> Tensor:
        if self.generator_net is None or not self._output_chosen:
            self.choose_output(x01)
        return self.generator_net(x01, x01[index], lam.to(x01.device, non_blocking=True), self.generator)

    # ---------------------------------------------------------------------------------------------- contract
    def mix(self, x: Tensor, t: Tensor):
        lam, index = self.sample(t)
        self.last = MixInfo(lam, index)
        x_hat = self.generate(self.to_pixels(x), index, lam)
        return self.from_pixels(x_hat), self.mixed_targets(t, index, lam.to(t.device))

    def training_loss(self, model, x, targets, loss_fn=soft_cross_entropy):
        targets = self.loss_targets(x, targets)
        b = x.shape[0]
        n_mix = max(2, b - int(round(b * self.clean_fraction)))
        xm, tm = x[:n_mix], targets[:n_mix]
        lam, index = self.sample(tm)
        self.last = MixInfo(lam, index)
        x01 = self.to_pixels(xm)
        x_hat = self.generate(x01, index, lam)
        lam_d = lam.to(x.device, non_blocking=True)
        rec = reconstruction_loss(x01, x01[index], x_hat, lam_d)                      # Eq. 9
        logits = model(torch.cat([self.from_pixels(x_hat), x[n_mix:]]))
        t_mix = torch.cat([self.mixed_targets(tm, index, lam_d), targets[n_mix:]])
        cls_loss = multilabel_bce if self.label_strategy == "multilabel" else loss_fn
        return cls_loss(logits, t_mix) + self.recon_weight * rec                      # Eq. 10

    # ------------------------------------------------------------------------------------------------ picture
    def show(self, x01: Tensor, targets: Tensor, classes, path, context):
        """Rows of (x1, x2, Mixup at lam, AutoMix barycenter at lam), lam = 0.2 .. 0.8."""
        from ..viz import image_table

        n = max(1, x01.shape[0] // 2)
        x1, x2 = x01[:n], x01[n:2 * n]
        lam = torch.linspace(0.2, 0.8, n) if n > 1 else torch.full((1,), 0.5)
        if self.generator_net is None:
            self.build(x01.shape[1])
        self.eval()
        with torch.no_grad():
            x_hat = self.generator_net(x1, x2, lam, self.generator)
        trained = (f"generator of {Path(self.checkpoint).parent.name}" if self.checkpoint
                   else "untrained generator: pass checkpoint=RUN/checkpoint.pt")
        rows = [f"lam={v:.2f}" for v in lam.tolist()]
        return image_table([("x1", x1), ("x2", x2), ("mixup", interpolate(x1, x2, lam)), ("automix", x_hat)],
                           path, row_labels=rows, title=f"automix-zhu ({trained})")

    def extra_repr(self) -> str:
        return (f"recon_weight={self.recon_weight}, label_strategy={self.label_strategy}, pairs={self.pairs}, "
                f"clean_fraction={self.clean_fraction}, output={self.output}, alpha={self.alpha}, "
                f"generator_lr_scale={self.lr_scale}, fusion={self.fusion}")
