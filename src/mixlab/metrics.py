"""Metrics on model outputs: top-k error, calibration, ranking (AUROC / average precision), multi-label mAP,
embedding alignment and uniformity. Pure tensor functions, vectorised, no Python loop over samples.

Conventions: ``probs`` are ``(N, C)`` probabilities (softmax or sigmoid), ``labels`` ``(N,)`` integers or
``(N, C)`` multi-hot; scores for ranking are "higher = more positive". Ranking metrics are scikit-learn's
(``sklearn.metrics``), with NaN where a class is absent.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def topk_correct(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> Tensor:
    """How many rows have their label among the ``k`` largest logits, for each ``k`` (``k`` capped at ``C``):
    a ``(len(ks),)`` integer tensor on the logits' device, so batches can be summed without a host sync."""
    kmax = min(max(ks), logits.shape[1])
    hit = logits.topk(kmax, dim=1).indices == labels.reshape(-1, 1)
    return torch.stack([hit[:, :k].any(1).sum() for k in ks])


def topk_error(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float | None]:
    """Top-k error in percent for each ``k`` (``None`` where ``k >= C``, where it is always 0)."""
    c, n = logits.shape[1], logits.shape[0]
    correct = topk_correct(logits, labels, ks).tolist()
    return {f"top{k}_error": None if k >= c and k > 1 else 100.0 * (1 - hits / n) for k, hits in zip(ks, correct)}


# --------------------------------------------------------------------------------------------- calibration
def calibration_bins(probs: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, Tensor]:
    """Equal-width confidence bins on ``(0, 1]`` (Guo et al. 2017): count, mean confidence, accuracy per bin.

    Confidence is the top probability; a sample with confidence ``p`` falls in bin ``ceil(p * n_bins) - 1``
    (bins are right-closed, as in Guo et al.'s code), so ``p = 1`` lies in the last bin.
    """
    conf, pred = probs.float().max(1)
    correct = (pred == labels).float()
    b = (conf * n_bins).ceil().long().clamp(1, n_bins) - 1
    count = torch.bincount(b, minlength=n_bins).float()
    conf_sum = torch.bincount(b, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(b, weights=correct, minlength=n_bins)
    safe = count.clamp_min(1)
    return {"count": count, "confidence": conf_sum / safe, "accuracy": acc_sum / safe,
            "edges": torch.linspace(0, 1, n_bins + 1)}


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)| over equal-width bins (Guo et al. 2017, eq. 3)."""
    bins = calibration_bins(probs, labels, n_bins)
    n = bins["count"].sum()
    return float((bins["count"] / n * (bins["accuracy"] - bins["confidence"]).abs()).sum())


def reliability_diagram(probs: Tensor, labels: Tensor, path, n_bins: int = 15, title: str = ""):
    """PNG of accuracy per confidence bin against the diagonal (perfect calibration), with the ECE."""
    from .viz import _plt, save_figure

    plt = _plt()
    bins = calibration_bins(probs, labels, n_bins)
    ece = expected_calibration_error(probs, labels, n_bins)
    edges = bins["edges"].numpy()
    width = edges[1] - edges[0]
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    has = bins["count"].numpy() > 0
    ax.bar(edges[:-1][has], bins["accuracy"].numpy()[has], width=width, align="edge", edgecolor="k",
           color="tab:blue", label="accuracy")
    ax.bar(edges[:-1][has], (bins["confidence"] - bins["accuracy"]).numpy()[has], bottom=bins["accuracy"].numpy()[has],
           width=width, align="edge", edgecolor="tab:red", color="tab:red", alpha=0.3, label="gap")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("confidence"), ax.set_ylabel("accuracy")
    ax.set_title((title + "\n" if title else "") + f"ECE = {100 * ece:.2f} %", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------------- ranking
def _binary(scores: Tensor, positive: Tensor):
    """Scores and boolean labels as flat NumPy arrays for scikit-learn."""
    s, pos = scores.detach().reshape(-1).double().cpu().numpy(), positive.detach().reshape(-1).bool().cpu().numpy()
    if s.shape != pos.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {pos.size}")
    return s, pos


def auroc(scores: Tensor, positive: Tensor) -> float:
    """Area under the ROC curve, ``sklearn.metrics.roc_auc_score(positive, scores)`` (ties count one half).
    NaN if either class is absent."""
    from sklearn.metrics import roc_auc_score

    s, pos = _binary(scores, positive)
    if pos.all() or not pos.any():
        return math.nan
    return float(roc_auc_score(pos, s))


def average_precision(scores: Tensor, positive: Tensor) -> float:
    """Average precision ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds, no interpolation:
    ``sklearn.metrics.average_precision_score(positive, scores)``. NaN if there is no positive."""
    from sklearn.metrics import average_precision_score

    s, pos = _binary(scores, positive)
    if not pos.any():
        return math.nan
    return float(average_precision_score(pos, s))


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """Multi-label mAP: the mean over labels of :func:`average_precision` of each label's column.

    ``targets`` ``(N, C)`` multi-hot (values >= 0.5 count as positive); labels without any positive are left
    out of the mean (as ``sklearn``'s ``average_precision_score(average="macro")`` would give NaN). The AutoMix
    paper computes mAP "in a similar way to mAP in object detection" without further detail: per-label AP,
    averaged over labels, is that reading.
    """
    pos = targets >= 0.5
    aps = [average_precision(scores[:, c], pos[:, c]) for c in range(scores.shape[1])]  # loop over labels only
    aps = [a for a in aps if not math.isnan(a)]
    return float(sum(aps) / len(aps)) if aps else math.nan


def ood_scores(in_scores: Tensor, out_scores: Tensor) -> dict[str, float]:
    """OOD detection from a score that should be higher in distribution (e.g. max softmax, Hendrycks and
    Gimpel 2017). ``auroc`` and ``aupr_in`` take in-distribution as positive; ``aupr_out`` takes
    out-of-distribution as positive with the negated score. All in percent."""
    s = torch.cat([in_scores.reshape(-1), out_scores.reshape(-1)]).double()
    is_in = torch.cat([torch.ones(in_scores.numel()), torch.zeros(out_scores.numel())]).bool()
    return {"auroc": 100 * auroc(s, is_in), "aupr_in": 100 * average_precision(s, is_in),
            "aupr_out": 100 * average_precision(-s, ~is_in)}


# -------------------------------------------------------------------------------------- embedding geometry
def alignment(z: Tensor, z_pos: Tensor, alpha: float = 2.0) -> float:
    """Alignment (Wang and Isola 2020): ``E ||f(x) - f(x+)||_2^alpha`` over positive pairs, on l2-normalised
    embeddings (rows of ``z`` and ``z_pos`` are the two views of each example). Lower is better."""
    z, z_pos = F.normalize(z.double(), dim=1), F.normalize(z_pos.double(), dim=1)
    return float((z - z_pos).norm(dim=1).pow(alpha).mean())


def uniformity(z: Tensor, t: float = 2.0) -> float:
    """Uniformity (Wang and Isola 2020): ``log E_{i<j} exp(-t ||f(x_i) - f(x_j)||^2)`` over all pairs of
    distinct examples, on l2-normalised embeddings. Lower (more negative) is more uniform."""
    z = F.normalize(z.double(), dim=1)
    sq = torch.pdist(z).pow(2)
    return float(torch.logsumexp(-t * sq, 0) - math.log(sq.numel()))
