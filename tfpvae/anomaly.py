"""Anomaly scores from a VAE's likelihoods, and a scikit-learn outlier detector calibrated on normal data.

Every score follows scikit-learn's convention for `score_samples`: higher means more normal.
`compute_scores` gives the scores, `detection_metrics` compares them on normal and anomalous
images, and `AnomalyDetector` (a scikit-learn estimator) turns one into a calibrated detector;
`fit_detectors`, `score_all` and `detection_report` do that for several scores from one
pass of importance draws per image set.

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
* `combined` (the detector's default): a density of several of these statistics and three
  image statistics, joined with a pose test, `complexity` and the peak of the image's
  anomaly map by Fisher's method (`tfpvae.combined`). Any shift; it needs fitting, so
  `compute_scores` does not give it.

Raw likelihood fails on simpler foreign images: a model of Fashion-MNIST gives MNIST digits
(mostly black background) *higher* likelihood than its own data. The likelihood mixes "how
typical is this for my data" with "how compressible is this image at all"; `complexity`
subtracts the second part with a generic compressor (an adaptive context-model coder of
the binary image, `context_code_length`), which works as a likelihood ratio against a
universal background model. `combined` holds against the most kinds of shift
(docs/anomaly-benchmarks.md); compare the scores on your own shift with `detection_report`.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, clone

from tfpvae._validation import check_bool, check_choice, check_float, check_images, check_int, check_seed
from tfpvae.anomaly_scores import DETECTOR_SCORES, available_scores, compute_scores
from tfpvae.combined import combined_statistics
from tfpvae.compression import COMPRESSORS, CONTEXT_TEMPLATE, compressed_bits, context_code_length
from tfpvae.config import PRECISIONS
from tfpvae.metrics import detection_metrics, evaluate
from tfpvae.scoring import SCORES

__all__ = [
    "COMPRESSORS",
    "CONTEXT_TEMPLATE",
    "DETECTOR_SCORES",
    "SCORES",
    "AnomalyDetector",
    "FlagsNothingWarning",
    "available_scores",
    "combined_statistics",
    "compressed_bits",
    "compute_scores",
    "context_code_length",
    "detection_metrics",
    "detection_report",
    "evaluate",
    "fit_detectors",
    "score_all",
]
THRESHOLDS = ("fpr", "contamination")
# Parameters that `sklearn.base.clone` passes on by reference: a Keras model (which cannot be
# deep-copied) and its likelihood estimator (whose traced `tf.function` is worth sharing).
_SHARED_PARAMS = ("model", "estimator")
# The parameters that fix how images are scored, and what `score_all` needs detectors to share.
_SCORING_PARAMS = ("num_samples", "seed", "binarize_seed", "progress", "compressor")
_SHARED_SETTINGS = ("estimator_", "num_samples", "seed", "binarize_seed", "compressor")


class FlagsNothingWarning(UserWarning):
    """`fit` calibrated on too few images for its `target_fpr`: `predict` flags no image."""


class _InvalidParameterError(ValueError, TypeError):
    """A detector parameter that `fit` refuses (both kinds, as scikit-learn's own)."""


class AnomalyDetector(OutlierMixin, BaseEstimator):
    """Flags images a trained VAE finds abnormal; a scikit-learn outlier detector.

    `__init__` only stores its arguments; `fit` checks them (raising ValueError naming the
    argument) and learns the attributes that end in "_", so `get_params`, `set_params`,
    `sklearn.base.clone` and `GridSearchCV` work. `clone` passes `model` and `estimator` on
    by reference: a Keras model is shared, never copied.

    `fit` takes normal images the model was *not* trained on; their scores set the threshold
    and the conformal p-values. For "typicality" and "combined" it first splits them into a
    reference part (the typical NLL; the density and its p-values) and the calibration part,
    since the calibration scores must not come from the images that fitted the score. Every
    image is scored once, keyed by its
    row index in `x` and the seed, so the scores do not depend on the split.

    Args:
      model: a trained `tfpvae.VAE` (its `likelihood` estimator is used), or any object
        `LikelihoodEstimator.from_model` accepts; or pass `estimator` instead.
      score: one of `DETECTOR_SCORES`. Default "combined", the score that holds against
        the most kinds of shift (see `tfpvae.combined`).
      num_samples: importance samples per image.
      threshold: "fpr" (flag the images whose `p_values` are at most `target_fpr`: at
        most that fraction of normal data, whatever the number of calibration images) or
        "contamination" (flag the `contamination` lowest-scoring fraction of the
        calibration images).
      target_fpr: the most false positives on normal data for threshold="fpr", in (0, 1).
        With fewer than 1 / target_fpr - 1 calibration images no p-value is that small:
        `predict` flags nothing (and `fit` warns).
      contamination: expected outlier fraction for threshold="contamination", in (0, 0.5].
      calibration_fraction: for "typicality" and "combined", the share of the fit data
        used for calibration, in (0, 1]; the rest is the reference (the typical NLL; the
        density and its p-values). Other scores calibrate on all of it.
      seed: seed for the split and for the Monte Carlo scores.
      binarize_seed: score a fixed binarisation of grey images (the combined score's
        anomaly map still reads them grey).
      compressor: L(x) of the "complexity" score, "context" or "zlib".
      progress: show progress bars while `fit` and `score_samples` score images.
        None (automatic: on for long runs in a terminal).
      estimator: a ready `LikelihoodEstimator` (then `model` may be None).
      precision: the networks' arithmetic when scoring a `model`: "float32",
        "bfloat16" or "auto" (see `LikelihoodEstimator.from_model`). With `estimator`, the
        estimator's own precision is used.

    Attributes:
      estimator_: the `LikelihoodEstimator` that scores images.
      threshold_: score below which `predict` returns -1 (-inf where it flags nothing).
      flags_nothing_: True where the calibration images are too few for `target_fpr`:
        no p-value can be that small, and `predict` flags no image.
      calibration_scores_: sorted scores of the calibration images, array (n_cal,).
      typical_nll_: mean -log p(x) of the reference images for "typicality", else None.
      combined_: the fitted `tfpvae.combined.CombinedScore` for "combined", else None.

    Examples:
      >>> detector = AnomalyDetector(model)  # score="combined"
      >>> detector.fit(x_normal_heldout)
      >>> detector.predict(x_new)       # +1 inlier, -1 outlier
      >>> detector.p_values(x_new)      # small = unlike the normal data

      A grid search takes a `scoring` callable (the parameter `score` hides the method of
      that name) and `cv` folds whose training parts hold only normal images (y: 1 normal,
      -1 anomaly); refit=False, since a refit would calibrate on the anomalies too:

      >>> auroc = lambda det, x, y: roc_auc_score(y == 1, det.score_samples(x))
      >>> grid = {"score": list(DETECTOR_SCORES), "num_samples": [16, 64]}
      >>> search = GridSearchCV(
      ...     AnomalyDetector(model), grid, scoring=auroc, cv=folds, refit=False
      ... )
      >>> search.fit(x, y).best_params_
    """

    def __init__(
        self,
        model: Any = None,
        score: str = "combined",
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
        precision: str = "float32",
    ) -> None:
        # Stored as given (scikit-learn's rule): `fit` checks them.
        self.model, self.estimator, self.score, self.num_samples = model, estimator, score, num_samples
        self.threshold, self.target_fpr, self.contamination = threshold, target_fpr, contamination
        self.calibration_fraction, self.seed, self.binarize_seed = calibration_fraction, seed, binarize_seed
        self.compressor, self.progress, self.precision = compressor, progress, precision

    def __sklearn_clone__(self) -> AnomalyDetector:
        """An unfitted copy with equal parameters; `model` and `estimator` are the same objects.

        scikit-learn's default would deep-copy them, which a Keras model refuses.
        """
        params = self.get_params(deep=False)
        new = type(self)(**{k: v if k in _SHARED_PARAMS else clone(v, safe=False) for k, v in params.items()})
        if hasattr(self, "_metadata_request"):  # set_*_request choices, kept as `sklearn.base.clone` keeps them
            new._metadata_request = copy.deepcopy(self._metadata_request)
        return new

    def _build_estimator(self) -> Any:
        if self.estimator is not None:
            if not callable(getattr(self.estimator, "scores", None)):  # the method every score goes through
                raise _InvalidParameterError(
                    f"`estimator` must be a tfpvae.LikelihoodEstimator (such as `model.likelihood`); got "
                    f"{type(self.estimator).__name__}. Pass a trained VAE as `model` instead."
                )
            return self.estimator
        if self.model is None:
            raise _InvalidParameterError("`model` is None: pass a trained `model` or an `estimator`.")
        precision = self.precision
        if precision not in PRECISIONS:
            raise _InvalidParameterError(f"`precision` must be one of {PRECISIONS}; got {precision!r}.")
        if hasattr(self.model, "estimator"):  # a tfpvae.VAE keeps one per precision, with its traced graph
            return self.model.estimator(precision)
        from tfpvae.likelihood import LikelihoodEstimator

        try:
            return LikelihoodEstimator.from_model(self.model, precision=precision)
        except TypeError as err:
            raise _InvalidParameterError(str(err)) from None

    def _check_params(self, estimator: Any = None) -> Any:
        """Checks every parameter; returns `estimator`, or the one the parameters give if None.

        Raises:
          ValueError: a parameter out of range or of the wrong type (also a TypeError), or a
            score the model cannot give.
        """
        above_0 = dict(minimum=0.0, min_inclusive=False)
        try:
            check_choice(self.score, "score", DETECTOR_SCORES)
            check_int(self.num_samples, "num_samples")
            check_choice(self.threshold, "threshold", THRESHOLDS)
            # Open at both ends, as `tfpvae detect --target-fpr`: 0 flags nothing, 1 flags everything.
            check_float(self.target_fpr, "target_fpr", maximum=1.0, max_inclusive=False, **above_0)
            check_float(self.contamination, "contamination", maximum=0.5, **above_0)
            check_float(self.calibration_fraction, "calibration_fraction", maximum=1.0, **above_0)
            check_seed(self.seed, "seed")
            check_seed(self.binarize_seed, "binarize_seed")
            check_choice(self.compressor, "compressor", COMPRESSORS)
            check_bool(self.progress, "progress", allow_none=True)
        except (TypeError, ValueError) as err:
            raise _InvalidParameterError(str(err)) from None
        estimator = self._build_estimator() if estimator is None else estimator
        if self.score not in available_scores(estimator, detector=True):
            estimator.require_likelihood(self.score)  # a plain autoencoder: only "distortion"
        return estimator

    def _scoring_settings(self) -> dict[str, Any]:
        """The keywords of `compute_scores` that this detector fixes."""
        return {name: getattr(self, name) for name in _SCORING_PARAMS}

    def _fit_outputs(self) -> tuple[str, ...]:
        """The scores of the fit images that `_calibrate` reads ("combined": its statistics)."""
        return ("log_prob",) if self.score == "typicality" else (self.score,)

    def _score_of(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """This detector's score from the scores (and statistics) of `_statistics`."""
        return self.combined_(scores) if self.score == "combined" else scores[self.score]

    def _calibrate(self, estimator: Any, scores: Mapping[str, np.ndarray]) -> AnomalyDetector:
        """Learns the fitted attributes from `_fit_outputs` scores of the fit images.

        Args:
          estimator: the `LikelihoodEstimator` that gave the scores.
          scores: name -> array (n,), one row per fit image in order.

        Returns:
          self.
        """
        from tfpvae.combined import CombinedScore

        self.estimator_, self.typical_nll_, self.combined_ = estimator, None, None
        if self.score in ("typicality", "combined"):  # a seeded split: calibration, then reference
            n = len(next(iter(scores.values())))
            n_ref = 2 if self.score == "combined" else 1  # "combined" cross-fits its density: two at least
            n_cal = min(n - n_ref, max(1, int(round(self.calibration_fraction * n))))
            order = np.random.default_rng(self.seed).permutation(n)
            cal, ref = order[:n_cal], order[n_cal:]
        if self.score == "typicality":
            self.typical_nll_ = float(-np.mean(scores["log_prob"][ref]))
            # The graph's formula (`tfpvae.scoring`), so an image scores the same in `score_samples`.
            calibration = -np.abs(-scores["log_prob"][cal] - self.typical_nll_)
        elif self.score == "combined":  # the reference fits the density and makes the p-values of its tests
            try:
                self.combined_ = CombinedScore({k: v[ref] for k, v in scores.items()})
            except ValueError as error:  # say it of what the caller passed
                raise ValueError(
                    f"`x`: of the {len(ref)} fit images outside the calibration part, fewer than 2 have every "
                    "statistic of the combined score finite; fit on more images or lower `calibration_fraction`."
                ) from error
            calibration = self.combined_({k: v[cal] for k, v in scores.items()})
        else:
            calibration = scores[self.score]
        self.calibration_scores_ = np.sort(calibration)
        if self.threshold == "contamination":
            self.threshold_ = float(np.quantile(self.calibration_scores_, self.contamination))
        else:
            self.threshold_ = _conformal_threshold(self.calibration_scores_, self.target_fpr)
        # The smallest p-value, 1 / (n + 1), above target_fpr: the case where the threshold above is -inf.
        self.flags_nothing_ = self.threshold == "fpr" and 1.0 / (len(calibration) + 1.0) > float(self.target_fpr)
        return self

    def fit(self, x: Any, y: Any = None) -> AnomalyDetector:
        """Checks the parameters and calibrates on normal images held out from the model's training data.

        Args:
          x: normal images (n, H, W, C), n >= 4.
          y: ignored (scikit-learn compatibility).

        Returns:
          self.

        Raises:
          ValueError: an invalid parameter (named), or fewer than 4 images.
        """
        return _fit_together([self], self._check_params(), x)[0]

    def score_samples(self, x: Any) -> np.ndarray:
        """Per-image score, array (n,) for images (n, H, W, C); higher = more normal."""
        return self._score_of(_score_together([self], x))

    def decision_function(self, x: Any) -> np.ndarray:
        """score_samples(x) - threshold_, array (n,): negative for outliers (0 for a score of -inf at a
        threshold of -inf)."""
        s = self.score_samples(x)
        with np.errstate(invalid="ignore"):
            return np.where(s == self.threshold_, 0.0, s - self.threshold_)

    def predict(self, x: Any) -> np.ndarray:
        """+1 for inliers, -1 for outliers, array (n,) of int."""
        return np.where(self.decision_function(x) < 0, -1, 1)

    def p_values(self, x: Any) -> np.ndarray:
        """Split-conformal p-values, array (n,): (1 + #{calibration scores <= s(x)}) / (n_cal + 1).

        Under exchangeability with the calibration data, P(p <= a) <= a for normal images,
        so flagging p <= a controls the false-positive rate at a.
        """
        s = self.score_samples(x)
        counts = np.searchsorted(self.calibration_scores_, s, side="right")
        return (1.0 + counts) / (len(self.calibration_scores_) + 1.0)


def _fewest_calibration_images(alpha: float) -> int:
    """The fewest calibration images n whose smallest p-value, 1 / (n + 1), is at most `alpha`."""
    alpha, n = float(alpha), max(0, math.ceil(1.0 / float(alpha)) - 1)
    while 1.0 / (n + 1.0) > alpha:  # the p-values' own float arithmetic
        n += 1
    while n > 0 and 1.0 / n <= alpha:
        n -= 1
    return n


def _conformal_threshold(calibration: np.ndarray, alpha: float) -> float:
    """The threshold at which `predict` flags exactly the images with `p_values` <= `alpha`.

    That is the (c + 1)-th smallest of the n sorted `calibration` scores, c the largest
    count with (1 + c) / (n + 1) <= alpha: an image scoring below it has at most c
    calibration scores at or below its own. Normal images are then flagged with probability
    at most `alpha` (split conformal); a quantile of the calibration scores flags more
    than `alpha` where they are few (about 1.8 alpha for 20). With fewer than
    `_fewest_calibration_images(alpha)` no p-value is that small: -inf.
    """
    n, alpha = len(calibration), float(alpha)  # float64, as the p-values: a float32 alpha rounds otherwise
    count = int(np.floor(alpha * (n + 1))) - 1
    # Settle the count in the p-values' own float arithmetic, so the two agree at the edge.
    while (2.0 + count) / (n + 1.0) <= alpha:
        count += 1
    while count >= 0 and (1.0 + count) / (n + 1.0) > alpha:
        count -= 1
    return -np.inf if count < 0 else float(calibration[count])


def _fit_together(detectors: Sequence[AnomalyDetector], estimator: Any, x: Any) -> list[AnomalyDetector]:
    """Fits checked detectors that share `estimator` and their scoring settings on `x`, scored once."""
    x = check_images(x, "x", getattr(estimator, "image_shape", None))
    if len(x) < 4:
        raise ValueError(f"`x` must hold at least 4 normal images to calibrate; got {len(x)}.")
    outputs = tuple(dict.fromkeys(name for d in detectors for name in d._fit_outputs()))
    scores = _statistics(estimator, x, outputs, detectors[0]._scoring_settings())
    for detector in detectors:
        detector._calibrate(estimator, scores)
        if detector.flags_nothing_:
            n = len(detector.calibration_scores_)
            warnings.warn(
                FlagsNothingWarning(
                    f"The {detector.score!r} detector flags no image: with {n} calibration images no p-value "
                    f"can be as small as `target_fpr`={detector.target_fpr} (the smallest is 1/{n + 1}); this "
                    f"target_fpr needs at least {_fewest_calibration_images(detector.target_fpr)} calibration images."
                ),
                stacklevel=3,  # the caller of fit or fit_detectors
            )
    return list(detectors)


def _statistics(estimator: Any, x: np.ndarray, names: Sequence[str], settings: dict, **kwargs: Any) -> dict:
    """`compute_scores` of the `SCORES` among `names`, and the statistics of "combined" if named."""
    out = combined_statistics(estimator, x, **settings) if "combined" in names else {}
    library = tuple(name for name in names if name != "combined")
    return {**out, **(compute_scores(estimator, x, library, **settings, **kwargs) if library else {})}


def _score_together(detectors: Sequence[AnomalyDetector], x: Any) -> dict[str, np.ndarray]:
    """The scores that fitted `detectors` use, name -> array (n,), from one pass over `x`."""
    from sklearn.utils.validation import check_is_fitted

    if not detectors:
        raise ValueError("`detectors` is empty: give at least one fitted AnomalyDetector.")
    for d in detectors:
        check_is_fitted(d, "threshold_", msg="This %(name)s is not fitted yet: call fit(x_normal) first.")
    first = detectors[0]
    for name in _SHARED_SETTINGS:
        values = [getattr(d, name) for d in detectors]
        if any(v is not values[0] and v != values[0] for v in values[1:]):
            raise ValueError(
                f"`detectors` must share `{name}` to score images in one pass; got "
                f"{'different estimators' if name == 'estimator_' else values}. Fit them with `fit_detectors`."
            )
    typical = {d.typical_nll_ for d in detectors if d.score == "typicality"}
    if len(typical) > 1:
        raise ValueError(f"`detectors` hold different `typical_nll_` for 'typicality': {sorted(typical)}.")
    estimator = first.estimator_
    x = check_images(x, "x", getattr(estimator, "image_shape", None))
    names = tuple(dict.fromkeys(d.score for d in detectors))
    typical_nll = typical.pop() if typical else None
    return _statistics(estimator, x, names, first._scoring_settings(), typical_nll=typical_nll)


def fit_detectors(
    model_or_estimator: Any,
    x: Any,
    scores: str | Sequence[str] | None = None,
    **detector_params: Any,
) -> dict[str, AnomalyDetector]:
    """Fits one `AnomalyDetector` per score on the same normal images, scored once for all.

    Each detector is the one `AnomalyDetector(..., score=name, **detector_params).fit(x)`
    gives (the same threshold, calibration scores and typical NLL), but the k importance
    draws per image are computed once, not once per score.

    Args:
      model_or_estimator: a trained `tfpvae.VAE` (the detectors' `model`) or a
        `LikelihoodEstimator` (their `estimator`).
      x: normal images (n, H, W, C) held out from training, n >= 4.
      scores: names from `DETECTOR_SCORES` (or one name). None: every score the model gives
        (`available_scores(estimator, detector=True)`), "typicality" and "combined" included.
      **detector_params: the other `AnomalyDetector` parameters (num_samples, threshold,
        target_fpr, contamination, calibration_fraction, seed, binarize_seed, compressor,
        progress), shared by every detector.

    Returns:
      dict score name -> fitted `AnomalyDetector`, in the order of `scores`.

    Raises:
      ValueError: an invalid parameter or score (named), or fewer than 4 images.
      TypeError: `score`, `model` or `estimator` among `detector_params`, or an unknown one.

    Examples:
      >>> names = ("log_prob", "complexity")
      >>> detectors = fit_detectors(model, x_normal_heldout, names, num_samples=32)
      >>> detectors["complexity"].threshold_
    """
    from tfpvae.likelihood import LikelihoodEstimator

    taken = sorted(set(detector_params) & {"score", *_SHARED_PARAMS})
    if taken:
        raise TypeError(f"fit_detectors sets {', '.join(f'`{k}`' for k in taken)} itself; pass the other parameters.")
    source = "estimator" if isinstance(model_or_estimator, LikelihoodEstimator) else "model"
    template = AnomalyDetector(**{source: model_or_estimator}, **detector_params)
    estimator = template._build_estimator()
    names = available_scores(estimator, True) if scores is None else (scores,) if isinstance(scores, str) else scores
    detectors = {name: clone(template).set_params(score=name) for name in dict.fromkeys(names)}
    if not detectors:
        raise ValueError("`scores` is empty: name at least one score.")
    for detector in detectors.values():
        detector._check_params(estimator)
    _fit_together(list(detectors.values()), estimator, x)
    return detectors


def score_all(detectors: Mapping[str, AnomalyDetector], x: Any) -> dict[str, np.ndarray]:
    """Every detector's `score_samples(x)`, from one pass of importance draws.

    Args:
      detectors: name -> fitted `AnomalyDetector`, sharing their estimator, num_samples,
        seed, binarize_seed and compressor (as `fit_detectors` makes them).
      x: images (n, H, W, C).

    Returns:
      dict name -> float64 array (n,), higher = more normal.

    Raises:
      ValueError: detectors that differ in those settings, or that are not fitted.

    Examples:
      >>> detectors = fit_detectors(model, x_normal_heldout)
      >>> s = score_all(detectors, x_new)   # {"log_prob": ..., ...}
    """
    scores = _score_together(list(detectors.values()), x)
    return {name: d._score_of(scores) for name, d in detectors.items()}


def detection_report(
    detectors: Mapping[str, AnomalyDetector], x_normal: Any, x_anomalous: Any
) -> dict[str, dict[str, float]]:
    """How well each fitted detector tells normal from anomalous images: `tfpvae detect`'s report.

    Args:
      detectors: name -> fitted `AnomalyDetector`, as `score_all` takes them.
      x_normal: normal images (n, H, W, C) that none of the detectors was fitted on.
      x_anomalous: anomalous images (m, H, W, C).

    Returns:
      dict name -> {"auroc", "auprc", "fpr_at_95_tpr"} of `detection_metrics`, plus
      "threshold" (`threshold_`), "fpr_at_threshold" (fraction of `x_normal` that `predict`
      flags) and "tpr_at_threshold" (fraction of `x_anomalous` it flags).

    Examples:
      >>> detectors = fit_detectors(model, x_normal[:500], target_fpr=0.05)
      >>> report = detection_report(detectors, x_normal[500:], x_anomalous)
      >>> report["complexity"]["auroc"]
    """
    normal, anomalous = score_all(detectors, x_normal), score_all(detectors, x_anomalous)
    report = {}
    for name, detector in detectors.items():
        threshold = detector.threshold_
        report[name] = {
            **detection_metrics(normal[name], anomalous[name]),
            "threshold": threshold,
            "fpr_at_threshold": float(np.mean(normal[name] < threshold)),
            "tpr_at_threshold": float(np.mean(anomalous[name] < threshold)),
        }
    return report
