"""AMP's step on a trained run (``mixlab eval amp-step``): how far lambda moves, how much the loss moves, and how
often MinOp keeps the second pass, with the two passes' dropout masks drawn independently (the authors' code),
shared (``shared_dropout=True``) and with dropout off (eval mode).

With independent masks above the mixing point the loss gap ``L' - L`` is mostly dropout noise, and MinOp keeps
the worse of two dropout draws for about half the samples; with shared masks it is lambda's effect alone.
"""
from __future__ import annotations

from pathlib import Path

import torch

#: (label, shared_dropout, model in train mode)
SETTINGS = (("independent dropout", False, True), ("shared dropout", True, True), ("dropout off", False, False))


def run_amp_step(trainer, out_dir: Path, inner: str | None = None, epsilon: float = 0.002, batches: int = 20,
                 batch_size: int = 50, seed: int = 0) -> dict:
    """Per setting: mean ``|lam' - lam|``, median ``|L' - L|``, the share of samples whose second pass is kept,
    the share whose loss moved at all, and the kept share among those; over ``batches`` training batches.

    ``inner``: the mixer AMP wraps (default: the run's own if it is ``amp+X`` or a text mixer, else
    ``wordmixup`` on text and ``mixup`` on images). No parameter is updated.
    """
    from ..methods.amp import AMP

    method = trainer.config.method
    if inner is None:
        if method.startswith("amp+"):
            inner = method.removeprefix("amp+")
        elif method in ("wordmixup", "sentmixup", "mixup", "manifold"):
            inner = method
        else:  # token ids: text; uint8 or float: images or features
            text = not (trainer.x_train.is_floating_point() or trainer.x_train.dtype == torch.uint8)
            inner = "wordmixup" if text else "mixup"
    model, n = trainer.model, trainer.t_train.shape[0]
    g = torch.Generator().manual_seed(seed)
    batches = min(batches, n // batch_size)
    if batches < 1:
        raise ValueError(f"amp-step needs at least one batch of {batch_size} training examples; the run has {n}")
    order = torch.randperm(n, generator=g)[:batches * batch_size].reshape(batches, batch_size)
    out = {"inner": inner, "epsilon": epsilon, "batches": int(order.shape[0]), "batch_size": batch_size}
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: leave the caller's stream alone
        for label, shared, train_mode in SETTINGS:
            amp = AMP(inner, epsilon=epsilon, num_classes=trainer.num_classes, seed=seed, shared_dropout=shared)
            model.train(train_mode)
            torch.manual_seed(seed)
            rows = []
            for idx in order:
                x = trainer.train_batch(idx, torch.Generator().manual_seed(seed))
                amp.training_loss(model, x, trainer.t_train[idx.to(trainer.t_train.device)])
                s = amp.last_step
                gap = (s["loss_cur"] - s["loss_pre"]).float()
                moved = (gap != 0).float()
                rows.append(torch.stack([(s["lam_adv"] - s["lam"]).abs().mean(), gap.abs().median(),
                                         s["mask"].float().mean(), moved.mean(),
                                         (s["mask"].float() * moved).sum() / moved.sum().clamp_min(1)]).cpu())
            m = torch.stack(rows)
            out[label] = {"lambda_step": float(m[:, 0].mean()), "median_loss_gap": float(m[:, 1].median()),
                          "second_pass_kept": float(m[:, 2].mean()), "loss_moved": float(m[:, 3].mean()),
                          "kept_among_moved": float(m[:, 4].mean())}
    model.eval()
    return out
