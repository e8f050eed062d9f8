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


def mix_text(a: list[str], b: list[str], t: Tensor, t2: Tensor, lam: Tensor, t_mix: Tensor, classes: list[str],
             title: str = "") -> str:
    """Text mixes as text: per pair the two sentences with their labels, ``lam`` (on the first) and the soft
    label; ``lam`` (n,)."""
    lines = [title, ""] if title else []
    for i in range(len(a)):
        lines += [f"pair {i + 1}: lam = {float(lam[i]):.3f} on A, {1 - float(lam[i]):.3f} on B",
                  f"  A [{label_text(t[i], classes, 1)}] {a[i]}", f"  B [{label_text(t2[i], classes, 1)}] {b[i]}",
                  f"  soft label: {label_text(t_mix[i], classes)}", ""]
    return "\n".join(lines)


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
    return save_figure(fig, path, dpi=110)


def image_table(columns: list[tuple[str, Tensor]], path: str | Path, row_labels: list[str] | None = None,
                title: str = "", maps: tuple[str, ...] = ()) -> Path:
    """A grid with one column per ``(heading, images)``; images ``(n, C, H, W)`` in [0, 1], or ``(n, H, W)``
    maps (drawn with a colour map, as are columns whose heading is in ``maps``)."""
    plt = _plt()
    n = columns[0][1].shape[0]
    # constrained layout keeps the suptitle clear of the column headings (tight_layout lets them overlap)
    fig, axes = plt.subplots(n, len(columns), figsize=(1.5 * len(columns) + 0.6, 1.5 * n + 0.4), squeeze=False,
                             layout="constrained")
    for j, (head, images) in enumerate(columns):
        for i in range(n):
            ax = axes[i, j]
            img = images[i]
            if img.dim() == 2 or head in maps:
                ax.imshow(img.reshape(img.shape[-2:]).detach().float().cpu().numpy(), cmap="jet", vmin=0, vmax=1)
            else:
                ax.imshow(to_image(img), cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(head, fontsize=8)
            if j == 0 and row_labels:
                ax.set_ylabel(row_labels[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=100)


def alignment_figure(x1: Tensor, x2: Tensor, r: Tensor, grid: tuple[int, int], path: str | Path,
                     title: str = "") -> Path:
    """Two images side by side with a line from each feature position of the first to its best match in the
    second (line opacity = assignment weight), and the assignment matrix ``R`` (r x r) as a heat map."""
    plt = _plt()
    h, w = int(grid[0]), int(grid[1])
    img_h, img_w = x1.shape[-2], x1.shape[-1]
    fig, (ax, axr) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    cmap = "gray" if x1.shape[0] == 1 else None
    both = torch.cat([x1, x2], -1)
    ax.imshow(to_image(both), cmap=cmap, vmin=0, vmax=1)
    cy = (torch.arange(h, dtype=torch.float32) + 0.5) * img_h / h - 0.5
    cx = (torch.arange(w, dtype=torch.float32) + 0.5) * img_w / w - 0.5
    ys, xs = torch.meshgrid(cy, cx, indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    r = r.detach().float().cpu()
    best = r.argmax(1)
    for i in range(r.shape[0]):
        j = int(best[i])
        ax.plot([xs[i], xs[j] + img_w], [ys[i], ys[j]], color="tab:red", lw=1.2, alpha=float(r[i, j].clamp(0.15, 1)))
    ax.scatter(xs, ys, s=8, c="tab:blue")
    ax.scatter(xs + img_w, ys, s=8, c="tab:green")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title("positions of image 1 -> best match in image 2", fontsize=9)
    im = axr.imshow(r.numpy(), cmap="viridis", vmin=0, vmax=1)
    axr.set_xlabel("position j (image 2)"), axr.set_ylabel("position i (image 1)")
    axr.set_title("R = r P*", fontsize=9)
    fig.colorbar(im, ax=axr, fraction=0.046)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=100)


def weights_figure(lam: Tensor, t_mix: Tensor, classes: list[str], path: str | Path, title: str = "",
                   columns: int = 40) -> Path:
    """Mixing weights (examples x mixed examples) and the mixed targets (classes x mixed examples)."""
    plt = _plt()
    lam, t_mix = lam[:, :columns].float().cpu(), t_mix[:columns].float().cpu()
    fig, (a0, a1) = plt.subplots(2, 1, figsize=(8, 6))
    a0.imshow(lam.numpy(), aspect="auto", cmap="magma")
    a0.set_ylabel("batch example"), a0.set_title("weights Lambda (columns sum to 1)", fontsize=9)
    a1.imshow(t_mix.t().numpy(), aspect="auto", cmap="magma")
    a1.set_yticks(range(len(classes)), classes, fontsize=7)
    a1.set_xlabel("mixed example"), a1.set_title("mixed targets Y Lambda", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=100)


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """``tight_layout`` (unless the figure has its own layout engine), write ``path`` (folders created) and close
    the figure."""
    plt = _plt()
    if fig.get_layout_engine() is None:
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
