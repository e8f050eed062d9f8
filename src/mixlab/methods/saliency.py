"""What PuzzleMix and Co-Mixup share: the input-gradient saliency, block pooling, and a model for pictures
(their image check is :func:`mixlab.methods.masks.check_images`, shared with the mask-based mixers)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def input_saliency(model: nn.Module, x: Tensor, targets: Tensor, loss_fn, eval_mode: bool = True,
                   keep_loss: bool = False) -> tuple[Tensor, Tensor | None]:
    """Saliency ``sqrt(mean_c (d loss / d x)^2)`` ``(B, H, W)`` of images ``x`` (B, C, H, W): the channel-wise l2 norm
    of the input gradient of the mean training loss (up to the factor ``sqrt(C)``, which block normalisation
    removes), as in the PuzzleMix and Co-Mixup code.

    ``eval_mode``: run the forward in eval mode (BatchNorm's running statistics, no dropout) and restore the
    model's mode afterwards (PuzzleMix). ``keep_loss``: return the clean loss with its graph, to be added to the
    training loss (Co-Mixup's clean-input term); otherwise ``None`` and no gradient reaches the parameters.
    The saliency carries no gradient; the caller's ``x`` is not modified.
    """
    was_training = model.training
    if eval_mode:
        model.eval()
    try:
        with torch.enable_grad():
            x_req = x.detach().requires_grad_(True)
            loss = loss_fn(model(x_req), targets)
            (grad,) = torch.autograd.grad(loss, x_req, retain_graph=keep_loss)
    finally:
        model.train(was_training)
    saliency = grad.detach().float().pow(2).mean(1).sqrt()
    return saliency, (loss if keep_loss else None)


def block_saliency(saliency: Tensor, blocks: tuple[int, int]) -> Tensor:
    """``(B, H, W)`` saliency averaged over an ``n_h x n_w`` grid of blocks and normalised to sum one per sample
    ``(B, n_h, n_w)`` (an all-zero map becomes uniform)."""
    b, h, w = saliency.shape
    pooled = F.avg_pool2d(saliency[:, None], (h // blocks[0], w // blocks[1]))[:, 0]
    total = pooled.sum((1, 2), keepdim=True)
    uniform = torch.full_like(pooled, 1.0 / pooled[0].numel())
    return torch.where(total > 0, pooled / total.clamp_min(torch.finfo(pooled.dtype).tiny), uniform)


def largest_divisor(n: int, at_most: int) -> int:
    """The largest divisor of ``n`` that is at most ``at_most`` (at least 1)."""
    return max(d for d in range(1, max(1, min(n, at_most)) + 1) if n % d == 0)


def picture_model(x01: Tensor, targets: Tensor, context: dict, steps: int = 80, seed: int = 0) -> nn.Module:
    """A model to take saliency from in ``mixlab show``: ``context['model']`` if given, else a small cnn11 fitted
    for ``steps`` SGD steps on the shown dataset's training split (or on the shown images when it has none)."""
    if context.get("model") is not None:
        return context["model"]
    from ..data import load_dataset
    from ..data.augment import to_float
    from ..models import MODELS

    data = context.get("dataset")
    x_train, y_train = x01, targets.argmax(1)
    if data is not None:
        try:
            train = load_dataset(data.name, "train", context.get("data_dir"))
            keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:5000]
            x_train, y_train = to_float(train.x[keep]), train.y[keep]
        except Exception:  # no training split at hand: the shown images will do for a picture
            pass
    with torch.random.fork_rng():  # seed the picture's network without touching the caller's RNG
        torch.manual_seed(seed)
        model = MODELS.create("cnn11", num_classes=targets.shape[1], in_channels=x01.shape[1],
                              image_size=x01.shape[-1], width=0.25, dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x_train), (64,), generator=g)
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
