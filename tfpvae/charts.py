"""Charts of numbers rather than images: training curves, score histograms and ROC curves.

Every function takes numpy arrays or dicts of them and returns a matplotlib Figure; none
shows itself or imports TensorFlow. All three are also importable from `tfpvae.plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from tfpvae._validation import check_int


def training_curves(history: dict[str, Sequence[float]], title: str | None = None) -> Figure:
    """Loss, nll, kl and elbo per epoch, training and validation.

    Args:
      history: dict of metric name -> per-epoch values (`VAE.training_history`).
      title: figure title.
    """
    metrics = [m for m in ("loss", "nll", "kl", "elbo") if m in history]
    if not metrics:
        raise ValueError(f"`history` has none of loss/nll/kl/elbo; got keys {sorted(history)}.")
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 2.8), squeeze=False, layout="constrained")
    for ax, name in zip(axes[0], metrics):
        epochs = np.arange(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker="o", ms=3, label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker="o", ms=3, label="validation")
        ax.set_title(name + (" (nats)" if name != "loss" else ""))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------- scores
def _as_scores(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"`{name}` must hold at least one score; got none.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains NaN or Inf scores.")
    return arr


def _histogram_range(groups: Sequence[np.ndarray]) -> tuple[float, float]:
    """A range that shows the bulk of every group, unless extreme scores would squash it.

    From the lowest 5th to the highest 95th percentile of the groups, widened by that
    width on each side (never past the data). Percentiles per group, not of the pooled
    scores: anomalies often have a heavy tail, which would otherwise set the range and
    squeeze the normal scores into a bin or two.
    """
    q = np.array([np.percentile(g, [5, 95]) for g in groups])
    pooled = np.concatenate(groups)
    q5, q95 = q[:, 0].min(), q[:, 1].max()
    width = q95 - q5
    lo, hi = max(pooled.min(), q5 - width), min(pooled.max(), q95 + width)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return float(lo), float(hi)


def score_histograms(
    scores: Mapping[str, Any] | Mapping[str, Mapping[str, Any]],
    bins: int | None = None,
    xlabel: str = "score",
    title: str | None = None,
    threshold: float | None = None,
) -> Figure:
    """Overlaid, normalised histograms of scores per group (e.g. normal vs anomalous).

    Args:
      scores: group name -> scores (1-D), e.g. {"MNIST (normal)": s1, "Fashion (anomalous)": s2},
        for one panel; or score name -> {group name -> scores} for one panel per score.
      bins: number of bins shared by all groups of a panel. None: sqrt of the
        number of scores, between 10 and 60. The bins span all scores unless some lie far
        out (beyond the groups' 5-95 percentiles by more than their width); those are
        counted in the edge bins and reported in the legend as "k beyond axis".
      xlabel: x-axis label for a single panel (panels use their score names).
      title: figure title.
      threshold: draw a vertical dashed line at this score.

    Returns:
      the matplotlib figure, to show or to save with `savefig`.
    """
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("`scores` must be a non-empty dict: group -> scores, or score name -> {group -> scores}.")
    if bins is not None:
        bins = check_int(bins, "bins")
    nested = all(isinstance(v, Mapping) for v in scores.values())
    panels = dict(scores) if nested else {xlabel: scores}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False, layout="constrained")
    colors = plt.get_cmap("tab10")
    for ax, (panel, groups) in zip(axes[0], panels.items()):
        if not groups:
            raise ValueError(f"`scores[{panel!r}]` has no groups.")
        data = {g: _as_scores(v, f"scores[{g!r}]") for g, v in groups.items()}
        lo, hi = _histogram_range(list(data.values()))
        num_bins = bins or int(np.clip(np.sqrt(sum(len(v) for v in data.values())), 10, 60))
        edges = np.linspace(lo, hi, num_bins + 1)
        for k, (group, values) in enumerate(data.items()):
            beyond = int(np.count_nonzero((values < lo) | (values > hi)))
            label = f"{group} (n={len(values)}" + (f", {beyond} beyond axis)" if beyond else ")")
            clipped = np.clip(values, lo, hi)
            ax.hist(clipped, bins=edges, density=True, alpha=0.35, color=colors(k % 10))
            ax.hist(clipped, bins=edges, density=True, histtype="step", lw=1.3, color=colors(k % 10), label=label)
        if threshold is not None:
            ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3g}")
        ax.set_xlabel(panel)
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.25)
    if title:
        fig.suptitle(title)
    return fig


def roc_curves(
    normal: Any,
    anomalous: Any,
    higher_is_anomalous: bool = True,
    title: str | None = None,
) -> Figure:
    """ROC curves of anomaly scores, with the AUROC of each in the legend.

    Args:
      normal: scores of normal images (1-D), or score name -> scores for several curves.
      anomalous: scores of anomalous images, the same kind as `normal` (same keys).
      higher_is_anomalous: True if a larger score means more anomalous (e.g.
        -log p(x)); False to flip, e.g. for log-likelihoods.
      title: axes title.

    Returns:
      The Figure. Legend entries read "name (AUROC 0.953)".
    """
    from sklearn.metrics import auc, roc_curve

    if isinstance(normal, Mapping) != isinstance(anomalous, Mapping):
        raise TypeError("`normal` and `anomalous` must both be arrays or both be dicts of score name -> scores.")
    if isinstance(normal, Mapping):
        if set(normal) != set(anomalous) or not normal:
            raise ValueError(
                "`normal` and `anomalous` must have the same score names; "
                f"got {sorted(normal)} and {sorted(anomalous)}."
            )
        pairs = {name: (normal[name], anomalous[name]) for name in normal}
    else:
        pairs = {"score": (normal, anomalous)}
    fig, ax = plt.subplots(figsize=(4.6, 4.4), layout="constrained")
    sign = 1.0 if higher_is_anomalous else -1.0
    for name, (s_norm, s_anom) in pairs.items():
        s_norm, s_anom = _as_scores(s_norm, f"normal[{name!r}]"), _as_scores(s_anom, f"anomalous[{name!r}]")
        truth = np.r_[np.zeros(len(s_norm)), np.ones(len(s_anom))]
        fpr, tpr, _ = roc_curve(truth, sign * np.r_[s_norm, s_anom])
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUROC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="chance (AUROC 0.500)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (normal flagged)")
    ax.set_ylabel("true positive rate (anomalies found)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.25)
    if title:
        ax.set_title(title)
    return fig
