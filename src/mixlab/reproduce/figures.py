"""The figures of a reproduction's report: bars against the paper's numbers, open-set and noise curves."""
from __future__ import annotations

import math
from pathlib import Path

from ..results.store import mean_std
from .spec import Table, paper_cell


def make_figure(t: Table, rows, numbers: dict, path: Path, out) -> Path | None:
    if t.figure == "bars":
        return bars_figure(t, rows, numbers, path)
    if t.figure in ("openset", "noise"):
        return curves_figure(t, rows, path, out)
    raise ValueError(f"unknown figure kind {t.figure!r}")


def bars_figure(t: Table, rows, numbers: dict, path: Path) -> Path | None:
    """One panel per column: ours (mean ± std) beside the paper's number for each row that has ours."""
    from ..viz import _plt, save_figure

    cols = [(j, c) for j, c in enumerate(t.columns) if any(rows[i][j].values for i in range(len(t.rows)))]
    if not cols:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols) + 1, 3.4), squeeze=False)
    for ax, (j, c) in zip(axes[0], cols):
        labels, ours, errs, paper = [], [], [], []
        for i, r in enumerate(t.rows):
            cell = rows[i][j]
            if not cell.values:
                continue
            mean, std = mean_std(cell.values)
            p = paper_cell(numbers, t, r, c)
            labels.append(r.label)
            ours.append(mean), errs.append(std), paper.append(p[0] if p else math.nan)
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], ours, 0.4, yerr=errs, capsize=3, label="ours")
        if t.paper_key:
            ax.bar([x + 0.2 for x in xs], paper, 0.4, label="paper", color="tab:gray")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(c.label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(t.title, fontsize=9)
    return save_figure(fig, path)


def curves_figure(t: Table, rows, path: Path, out) -> Path | None:
    """Mean curves over seeds per row, one figure per distinct protocol of the table (stacked vertically)."""
    from ..eval.common import stored_eval
    from ..eval.noise import plot_noise
    from ..eval.openset import plot_openset

    kind = t.figure
    by_protocol: dict[str, dict] = {}
    for i, r in enumerate(t.rows):
        for j, c in enumerate(t.columns):
            cell = rows[i][j]
            if cell.unavailable or not cell.run_ids or r.label in by_protocol.get(cell.protocol, {}):
                continue
            evs = [stored_eval(out, rid, kind) for rid in cell.run_ids]
            evs = [e for e in evs if e]
            if not evs:
                continue
            keys = ("acc_a", "acc_b") if kind == "openset" else ("accuracy", "relative_drop")
            mean = {k: [sum(v) / len(v) for v in zip(*(e[k] for e in evs))] for k in keys}
            x = "thresholds" if kind == "openset" else "levels"
            curve = {x: evs[0][x], **mean}
            if kind == "openset":
                curve["auc_a"] = sum(e["auc_a"] for e in evs) / len(evs)
                curve["auc_b"] = sum(e["auc_b"] for e in evs) / len(evs)
            by_protocol.setdefault(cell.protocol, {})[f"{r.label} (n={len(evs)})"] = curve
    if not by_protocol:
        return None
    parts = []
    for k, (protocol, curves) in enumerate(by_protocol.items()):
        p = path.with_name(f"{path.stem}-{protocol}.png")
        plot = plot_openset if kind == "openset" else plot_noise
        parts.append(plot(curves, p, f"{t.title}: {protocol} (mean over seeds)"))
    return parts[0] if len(parts) == 1 else _stack(parts, path)


def _stack(paths: list[Path], path: Path) -> Path:
    from ..viz import _plt, save_figure

    plt = _plt()
    imgs = [plt.imread(p) for p in paths]
    fig, axes = plt.subplots(len(imgs), 1, figsize=(9, 3.6 * len(imgs)))
    for ax, img in zip(axes, imgs):
        ax.imshow(img), ax.axis("off")
    save_figure(fig, path)
    for p in paths:
        p.unlink()
    return path
