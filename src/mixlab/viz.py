"""Pictures: grids of mixed samples, curves. Uses matplotlib's non-interactive Agg backend."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_image(x: Tensor):
    """(C, H, W) float in [0, 1] -> array for imshow."""
    x = x.detach().float().clamp(0, 1).cpu()
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def label_text(t: Tensor, classes: list[str], top: int = 2) -> str:
    values, index = t.float().topk(min(top, t.numel()))
    return ", ".join(f"{classes[i]}:{v:.2f}" for v, i in zip(values.tolist(), index.tolist()) if v > 0.005)


def mix_grid(x: Tensor, x2: Tensor, x_mix: Tensor, t: Tensor, t2: Tensor, t_mix: Tensor, classes: list[str],
             path: str | Path, title: str = "") -> Path:
    """Rows of (input, partner, mixed) images with their (soft) labels; images as float (B, C, H, W) in [0, 1]."""
    plt = _plt()
    n = x.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n), squeeze=False)
    cmap = "gray" if x.shape[1] == 1 else None
    for i in range(n):
        for j, (img, lab, head) in enumerate(((x[i], t[i], "input x"), (x2[i], t2[i], "partner"),
                                              (x_mix[i], t_mix[i], "mixed"))):
            ax = axes[i, j]
            ax.imshow(to_image(img), cmap=cmap, vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel(label_text(lab, classes), fontsize=8)
            if i == 0:
                ax.set_title(head, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=100)


def line_plot(series: dict[str, tuple[list[float], list[float]]], path: str | Path, xlabel: str, ylabel: str,
              title: str = "") -> Path:
    """One line per name: ``{name: (xs, ys)}``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", ms=3, label=name)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """``tight_layout``, write ``path`` (folders created) and close the figure."""
    plt = _plt()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def two_panel_plot(panels: list[tuple[dict[str, tuple[list, list]], str, str]], path: str | Path, xlabel: str,
                   title: str = "", marker: str | None = None) -> Path:
    """Side-by-side line plots: each panel ``({name: (xs, ys)}, ylabel, panel title)``."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (series, ylabel, head) in zip(axes[0], panels):
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, marker=marker, ms=3, label=name)
        ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
        if head:
            ax.set_title(head, fontsize=9)
        ax.grid(alpha=0.3), ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
