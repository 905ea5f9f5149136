"""How well anomaly scores separate normal from anomalous images: AUROC, AUPRC, FPR at 95% TPR.

Scores follow scikit-learn's `score_samples` convention (higher = more normal); anomalies
are the positive class. `tfpvae.anomaly` re-exports these names.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["detection_metrics"]  # `evaluate`, deprecated, is kept for `tfpvae.anomaly.evaluate`


def detection_metrics(normal_scores: Any, anomalous_scores: Any) -> dict[str, float]:
    """Detection metrics for scores where higher means more normal.

    Args:
      normal_scores: array (n,) of scores of normal images.
      anomalous_scores: array (m,) of scores of anomalous images.

    Returns:
      dict with "auroc" and "auprc" (anomalies as the positive class) and "fpr_at_95_tpr"
      (fraction of normal images flagged when 95% of anomalies are caught).

    Raises:
      ValueError: an argument that is not a non-empty 1-D array without NaN.

    Examples:
      >>> # 5 of the 6 (normal, anomalous) pairs are ranked right
      >>> detection_metrics([3.0, 2.0, 1.0], [0.0, 1.5])["auroc"]
      0.8333333333333334
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    normal, anomalous = np.asarray(normal_scores, np.float64), np.asarray(anomalous_scores, np.float64)
    for name, arr in (("normal_scores", normal), ("anomalous_scores", anomalous)):
        if arr.ndim != 1 or len(arr) == 0 or np.any(np.isnan(arr)):
            nans = int(np.isnan(arr).sum()) if arr.ndim == 1 else 0
            raise ValueError(
                f"`{name}` must be a non-empty 1-D array of scores without NaN; got shape {arr.shape}, {nans} NaN."
            )
    # -inf (an image the model calls impossible) is the most anomalous score there is: rank
    # infinities beyond every finite score, since scikit-learn's metrics refuse them.
    pooled = np.r_[normal, anomalous]
    finite = pooled[np.isfinite(pooled)]
    low, high = (finite.min() - 1.0, finite.max() + 1.0) if finite.size else (-1.0, 1.0)
    normal, anomalous = (np.clip(np.nan_to_num(a, posinf=high, neginf=low), low, high) for a in (normal, anomalous))
    labels = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    anomaly_score = -np.r_[normal, anomalous]
    fpr, tpr, _ = roc_curve(labels, anomaly_score)
    return {
        "auroc": float(roc_auc_score(labels, anomaly_score)),
        "auprc": float(average_precision_score(labels, anomaly_score)),
        "fpr_at_95_tpr": float(fpr[np.searchsorted(tpr, 0.95, side="left")]),
    }


def evaluate(scores_normal: Any, scores_anomalous: Any) -> dict[str, float]:
    """Deprecated alias of `detection_metrics`, removed in tfpvae 0.3.

    The name clashed with `VAE.evaluate` and `tfpvae evaluate`, which give the NLL.

    Args:
      scores_normal: array (n,) of scores of normal images.
      scores_anomalous: array (m,) of scores of anomalous images.

    Returns:
      `detection_metrics(scores_normal, scores_anomalous)`.
    """
    warnings.warn(
        "`tfpvae.anomaly.evaluate` is deprecated and will be removed in tfpvae 0.3; "
        "use `tfpvae.anomaly.detection_metrics(normal_scores, anomalous_scores)` instead (the same metrics).",
        FutureWarning,
        stacklevel=2,
    )
    return detection_metrics(scores_normal, scores_anomalous)
