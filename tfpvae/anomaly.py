"""Anomaly scores from a VAE's likelihoods, and a scikit-learn style detector calibrated on normal data.

Every score follows scikit-learn's convention for `score_samples`: higher means more normal.

* `log_prob`: IWAE estimate of log p(x). Anomalies that are more complex than the data.
* `elbo`: the ELBO, a cheaper lower bound on log p(x). As log_prob, on a budget.
* `rate`: -KL(q(z|x) || p(z)). Anomalies that need unusual codes.
* `distortion`: E_q[log p(x|z)], minus the reconstruction NLL. Anomalies that reconstruct badly.
* `typicality`: -abs(-log p(x) - typical NLL of normal data). Anomalies that may be *too*
  likely as well as too unlikely (Nalisnick et al., 2019).
* `complexity`: log2 p(x) + L(x), the NLL in bits corrected by the image's lossless
  compressed length L(x) in bits (Serra et al., ICLR 2020): how many bits the model saves
  over a generic compressor. Out-of-distribution data that is simpler than the training
  data, where raw likelihood fails.

Raw likelihood fails on simpler foreign images: a model of Fashion-MNIST gives MNIST digits
(mostly black background) *higher* likelihood than its own data. The likelihood mixes "how
typical is this for my data" with "how compressible is this image at all"; `complexity`
subtracts the second part with a generic compressor (an adaptive context-model coder of
the binary image, `context_code_length`), which works as a likelihood ratio against a
universal background model. Use `complexity` for dataset shift between image domains,
`log_prob`/`elbo` for defects within one domain, and look at several scores with
`evaluate` before choosing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfpvae._validation import check_bool, check_choice, check_float, check_images, check_int, check_seed
from tfpvae.compression import COMPRESSORS, CONTEXT_TEMPLATE, compressed_bits, context_code_length
from tfpvae.scoring import SCORES

__all__ = [
    "COMPRESSORS",
    "CONTEXT_TEMPLATE",
    "SCORES",
    "AnomalyDetector",
    "available_scores",
    "compressed_bits",
    "compute_scores",
    "context_code_length",
    "evaluate",
]
THRESHOLDS = ("fpr", "contamination")


def available_scores(estimator: Any) -> tuple[str, ...]:
    """The `SCORES` an estimator can give: all of them, or for a model without a likelihood
    (a plain autoencoder, `LikelihoodEstimator.defines_likelihood` False) only "distortion"."""
    return SCORES if getattr(estimator, "defines_likelihood", True) else ("distortion",)


def compute_scores(
    estimator: Any,
    x: np.ndarray,
    scores: str | tuple[str, ...] | None = None,
    *,
    num_samples: int = 100,
    typical_nll: float | None = None,
    seed: int | None = 0,
    binarize_seed: int | None = None,
    ids: Sequence[Any] | None = None,
    index_offset: int = 0,
    progress: bool | None = None,
    compressor: str = "context",
    stderr: bool = False,
) -> dict[str, np.ndarray]:
    """Computes the named scores of every image from one set of posterior draws.

    Every score comes from the same k draws per image (`tfpvae.scoring.score_images`), keyed
    by each image's id and the seed, so a row does not depend on the batch, order or shard
    it is scored in.

    Args:
      estimator: a `tfpvae.likelihood.LikelihoodEstimator`.
      x: images (n, H, W, C) in [0, 1].
      scores: names from `SCORES` (or one name). Default None: every score the estimator
        gives (`available_scores`), with "typicality" only when `typical_nll` is given.
      num_samples: importance samples k per image, shared by every score. Default 100.
      typical_nll: mean -log p(x) of normal data; required by "typicality".
      seed: seed for reproducible scores, in [0, 2^31 - 1]. Default 0.
      binarize_seed: score a fixed binarisation of grey images drawn with this seed
        (`tfpvae.likelihood.binarize`). Default None (score the grey values; the
        "complexity" score still uses a fixed binarisation drawn with `seed`, because its
        compressed length is that of one binary image).
      ids: one id per image (str or int), which keys its draws. Default None: the row
        index plus `index_offset`.
      index_offset: with the default ids, the position of x[0] in a larger set. Default 0.
      progress: show a progress bar. Default None (automatic).
      compressor: the code length L(x) of "complexity": "context" (default, computed in
        the scoring graph) or "zlib"; see `compressed_bits`.
      stderr: also return "log_prob_stderr" (and "elbo_stderr") beside "log_prob" (and
        "elbo"), the Monte Carlo standard errors. Default False.

    Returns:
      dict name -> float64 array (n,), higher = more normal (the standard errors are
      spreads, not scores).
    """
    from tfpvae.likelihood import binarize, check_ids

    if scores is None:
        scores = tuple(s for s in available_scores(estimator) if s != "typicality" or typical_nll is not None)
    scores = (scores,) if isinstance(scores, str) else tuple(scores)
    for name in scores:
        check_choice(name, "score", SCORES)
    check_int(num_samples, "num_samples")
    check_choice(compressor, "compressor", COMPRESSORS)
    check_bool(stderr, "stderr")
    unavailable = [name for name in scores if name not in available_scores(estimator)]
    if unavailable:
        estimator.require_likelihood(unavailable[0])
    if "typicality" in scores and typical_nll is None:
        raise ValueError(
            "The 'typicality' score needs `typical_nll`, the mean -log p(x) of held-out normal images "
            "(AnomalyDetector(score='typicality').fit computes it as `typical_nll_`)."
        )
    x = check_images(x, "x", getattr(estimator, "image_shape", None))
    ids = check_ids(ids, len(x), check_int(index_offset, "index_offset", minimum=0))
    outputs = [name for name in scores if not (name == "complexity" and compressor == "zlib")]
    if stderr:
        outputs += [f"{name}_stderr" for name in ("log_prob", "elbo") if name in scores]
    if "complexity" in scores and compressor == "zlib":
        outputs.append("log_prob")
    # The graph's scores are log-likelihoods and KLs; anomaly scores are higher = more normal.
    out = estimator.scores(
        x,
        tuple(dict.fromkeys(outputs)),
        num_samples,
        ids=ids,
        seed=seed,
        binarize_seed=binarize_seed,
        typical_nll=typical_nll,
        progress=progress,
    )
    if "rate" in out:
        out["rate"] = -out["rate"]
    if "distortion" in out:
        out["distortion"] = -out["distortion"]
    if "complexity" in scores and compressor == "zlib":
        xb = x if binarize_seed is None else binarize(x, binarize_seed, ids=ids)
        grey = ~np.all((xb == 0) | (xb == 1), axis=(1, 2, 3))
        if grey.any():
            # As the graph does: a grey image is scored as its fixed binarisation keyed by id and seed.
            xb = xb.copy()
            xb[grey] = binarize(xb[grey], 0 if seed is None else seed, ids=ids[grey])
            log_pb = estimator.log_prob(xb, num_samples, ids=ids, seed=seed, progress=progress)
        else:
            log_pb = out["log_prob"]
        out["complexity"] = log_pb / math.log(2) + compressed_bits(xb, compressor="zlib")
    names = list(scores) + [name for name in outputs if name.endswith("_stderr")]
    return {name: np.asarray(out[name], np.float64) for name in names}


def evaluate(scores_normal: Any, scores_anomalous: Any) -> dict[str, float]:
    """Detection metrics for scores where higher means more normal.

    Args:
      scores_normal: array (n,) of scores of normal images.
      scores_anomalous: array (m,) of scores of anomalous images.

    Returns:
      dict with "auroc" and "auprc" (anomalies as the positive class) and "fpr_at_95_tpr"
      (fraction of normal images flagged when 95% of anomalies are caught).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    normal, anomalous = np.asarray(scores_normal, np.float64), np.asarray(scores_anomalous, np.float64)
    for name, arr in (("scores_normal", normal), ("scores_anomalous", anomalous)):
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


class AnomalyDetector:
    """Flags images a trained VAE finds abnormal; scikit-learn's method names and sign conventions.

    Not a full scikit-learn estimator: it holds a Keras model, so `sklearn.base.clone`,
    pipelines and grid searches do not take it.

    `fit` takes normal images the model was *not* trained on; their scores set the threshold
    and the conformal p-values. For "typicality" it first splits them into a reference part
    (the typical NLL) and the calibration part, since the calibration scores must not come
    from the images that defined the typical NLL.

    Args:
      model: a trained `tfpvae.VAE`, or any object `LikelihoodEstimator.from_model` accepts;
        or pass `estimator` instead.
      score: one of `SCORES`. Default "log_prob".
      num_samples: importance samples per image. Default 100.
      threshold: "fpr" (flag the `target_fpr` lowest-scoring fraction of normal data) or
        "contamination" (flag the `contamination` fraction). Default "fpr".
      target_fpr: false-positive rate on normal data for threshold="fpr", in (0, 1).
        Default 0.05.
      contamination: expected outlier fraction for threshold="contamination". Default 0.1.
      calibration_fraction: for "typicality", the share of the fit data used for
        calibration; the rest is the reference. Other scores calibrate on all of it.
        Default 0.5.
      seed: seed for the split and for the Monte Carlo scores. Default 0.
      binarize_seed: score a fixed binarisation of grey images. Default None.
      compressor: L(x) of the "complexity" score, "context" (default) or "zlib".
      progress: show progress bars while `fit` and `score_samples` score images. Default
        None (automatic: on for long runs in a terminal).
      estimator: a ready `LikelihoodEstimator` (then `model` may be None). Default None.

    Attributes:
      threshold_: score below which `predict` returns -1.
      calibration_scores_: sorted scores of the calibration images.
      typical_nll_: mean -log p(x) of the reference images (for "typicality").

    Example:
      >>> detector = AnomalyDetector(model, score="complexity").fit(x_normal_heldout)
      >>> detector.predict(x_new)       # +1 inlier, -1 outlier
      >>> detector.p_values(x_new)      # small = unlike the normal data
    """

    def __init__(
        self,
        model: Any = None,
        score: str = "log_prob",
        num_samples: int = 100,
        threshold: str = "fpr",
        target_fpr: float = 0.05,
        contamination: float = 0.1,
        calibration_fraction: float = 0.5,
        seed: int | None = 0,
        binarize_seed: int | None = None,
        compressor: str = "context",
        progress: bool | None = None,
        estimator: Any = None,
    ) -> None:
        from tfpvae.likelihood import LikelihoodEstimator

        self.score = check_choice(score, "score", SCORES)
        self.num_samples = check_int(num_samples, "num_samples")
        self.threshold = check_choice(threshold, "threshold", THRESHOLDS)
        # Open at both ends, as `tfpvae detect --target-fpr`: 0 flags nothing, 1 flags everything.
        self.target_fpr = check_float(
            target_fpr, "target_fpr", minimum=0.0, maximum=1.0, min_inclusive=False, max_inclusive=False
        )
        self.contamination = check_float(contamination, "contamination", minimum=0.0, maximum=0.5, min_inclusive=False)
        self.calibration_fraction = check_float(
            calibration_fraction, "calibration_fraction", minimum=0.0, maximum=1.0, min_inclusive=False
        )
        self.seed, self.binarize_seed = check_seed(seed, "seed"), check_seed(binarize_seed, "binarize_seed")
        self.compressor = check_choice(compressor, "compressor", COMPRESSORS)
        self.progress = check_bool(progress, "progress", allow_none=True)
        if estimator is None:
            if model is None:
                raise ValueError("Pass a trained `model` or an `estimator`.")
            estimator = LikelihoodEstimator.from_model(model)
        if self.score not in available_scores(estimator):
            estimator.require_likelihood(self.score)  # a plain autoencoder: only "distortion"
        self.model, self.estimator = model, estimator

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise RuntimeError("This AnomalyDetector is not fitted yet: call fit(x_normal) first.")

    def _images(self, x: Any) -> np.ndarray:
        shape = getattr(getattr(self.model, "config", None), "input_shape", None)
        return check_images(x, "x", shape)

    def _scores(self, x: np.ndarray) -> np.ndarray:
        return compute_scores(
            self.estimator,
            x,
            (self.score,),
            num_samples=self.num_samples,
            typical_nll=getattr(self, "typical_nll_", None),
            seed=self.seed,
            binarize_seed=self.binarize_seed,
            progress=self.progress,
            compressor=self.compressor,
        )[self.score]

    def fit(self, x: Any, y: Any = None) -> AnomalyDetector:
        """Calibrates on normal images held out from the model's training data.

        Args:
          x: normal images (n, H, W, C), n >= 4.
          y: ignored (scikit-learn compatibility).

        Returns:
          self.
        """
        x = self._images(x)
        if len(x) < 4:
            raise ValueError(f"`x` must hold at least 4 normal images to calibrate; got {len(x)}.")
        calibration = x
        if self.score == "typicality":
            order = np.random.default_rng(self.seed).permutation(len(x))
            n_cal = min(len(x) - 1, max(1, int(round(self.calibration_fraction * len(x)))))
            calibration, reference = x[order[:n_cal]], x[order[n_cal:]]
            log_p = self.estimator.log_prob(
                reference,
                num_samples=self.num_samples,
                seed=self.seed,
                binarize_seed=self.binarize_seed,
                progress=self.progress,
            )
            self.typical_nll_ = float(-np.mean(log_p))
        self.calibration_scores_ = np.sort(self._scores(calibration))
        q = self.target_fpr if self.threshold == "fpr" else self.contamination
        self.threshold_ = float(np.quantile(self.calibration_scores_, q))
        return self

    def score_samples(self, x: Any) -> np.ndarray:
        """Per-image score, array (n,); higher = more normal."""
        self._check_fitted()
        return self._scores(self._images(x))

    def decision_function(self, x: Any) -> np.ndarray:
        """score_samples(x) - threshold_: negative for outliers."""
        return self.score_samples(x) - self.threshold_

    def predict(self, x: Any) -> np.ndarray:
        """+1 for inliers, -1 for outliers, array (n,) of int."""
        return np.where(self.decision_function(x) < 0, -1, 1)

    def p_values(self, x: Any) -> np.ndarray:
        """Split-conformal p-values: (1 + #{calibration scores <= s(x)}) / (n_cal + 1).

        Under exchangeability with the calibration data, P(p <= a) <= a for normal images,
        so flagging p <= a controls the false-positive rate at a.
        """
        s = self.score_samples(x)
        counts = np.searchsorted(self.calibration_scores_, s, side="right")
        return (1.0 + counts) / (len(self.calibration_scores_) + 1.0)
