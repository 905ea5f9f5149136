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
import zlib
from typing import Any

import numpy as np

from tfpvae._validation import check_bool, check_choice, check_float, check_images, check_int, check_seed

SCORES = ("log_prob", "elbo", "rate", "distortion", "typicality", "complexity")
THRESHOLDS = ("fpr", "contamination")


# Causal neighbours (row offset, column offset) that form a pixel's context in the
# context-model compressor: west, north-west, north, north-east. Among templates of 1 to
# 10 pixels (JBIG's 10-pixel one included) and estimators with 1/2, 1/4 and 1/16
# pseudo-counts, this one with 1/2 (Krichevsky-Trofimov) gave the shortest codes on both
# MNIST and Fashion-MNIST: a bigger template splits 784 pixels over too many contexts for
# the counts to learn anything (docs/anomaly-benchmarks.md).
CONTEXT_TEMPLATE = ((0, -1), (-1, -1), (-1, 0), (-1, 1))


def context_code_length(
    x: np.ndarray, template: tuple[tuple[int, int], ...] = CONTEXT_TEMPLATE, pseudo_count: float = 0.5
) -> np.ndarray:
    """Code length in bits of each binary image under an adaptive context model.

    The pixels are coded in raster order (channel planes one after another). A pixel's
    context is the bit pattern of its `template` neighbours that are already coded (0
    outside the image), and its probability is the estimate
    (count of its value + a) / (count of the context + 2a) from the pixels seen so far
    *in this image* (a = 1/2: Krichevsky-Trofimov). An arithmetic coder driven by this
    model (the JBIG family of bi-level image coders) writes -sum log2 p bits to within 2
    bits, so this is a lossless compressed length that assumes nothing about any dataset:
    a universal code.

    Args:
      x: binary images, array (n, H, W, C) (or (n, H, W)) of 0/1 values.
      template: (row offset, column offset) of each context pixel; every offset must point
        to an earlier pixel in raster order. Default `CONTEXT_TEMPLATE` (4 neighbours).
      pseudo_count: a, > 0. Default 0.5.

    Returns:
      float64 array (n,) of bits.
    """
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or not np.all((x == 0) | (x == 1)):
        raise ValueError(f"`x` must be binary images (n, H, W[, C]) of 0/1 values; got shape {x.shape}.")
    for dy, dx in template:
        if dy > 0 or (dy == 0 and dx >= 0):
            raise ValueError(
                f"`template` offsets must point to earlier pixels (dy < 0, or dy == 0 and dx < 0); got {(dy, dx)}."
            )
    pseudo_count = check_float(pseudo_count, "pseudo_count", minimum=0.0, min_inclusive=False)
    n, height, width, channels = x.shape
    planes = np.moveaxis(x, -1, 1).astype(np.int64)  # (n, C, H, W)
    reach_y = max([-dy for dy, _ in template] + [0])
    reach_x = max([abs(dx) for _, dx in template] + [0])
    padded = np.zeros((n, channels, height + reach_y, width + 2 * reach_x), np.int64)
    padded[:, :, reach_y:, reach_x : reach_x + width] = planes
    context = np.zeros_like(planes)
    for bit, (dy, dx) in enumerate(template):
        rows, cols = reach_y + dy, reach_x + dx
        context |= padded[:, :, rows : rows + height, cols : cols + width] << bit
    context, bits_in = context.reshape(n, -1), planes.reshape(n, -1)
    # counts[i, c, v]: how often image i has coded value v in context c so far. One pass
    # over the pixel positions, vectorised over the images.
    counts = np.zeros((n, 1 << len(template), 2))
    images = np.arange(n)
    total = np.zeros(n)
    for j in range(context.shape[1]):
        c, v = context[:, j], bits_in[:, j]
        seen = counts[images, c]
        total -= np.log2((seen[images, v] + pseudo_count) / (seen.sum(axis=1) + 2 * pseudo_count))
        counts[images, c, v] += 1.0
    return total


COMPRESSORS = ("context", "zlib")


def compressed_bits(x: np.ndarray, binarize_threshold: float | None = 0.5, compressor: str = "context") -> np.ndarray:
    """Lossless compressed length L(x) in bits of each image.

    Args:
      x: images (n, H, W, C), float in [0, 1] or uint8 0..255 (scaled to [0, 1]).
      binarize_threshold: compress the image thresholded at this value in (0, 1] (matching
        a binary Bernoulli model), or None to compress the 8-bit grey image (zlib only).
        Default 0.5.
      compressor: "context" (default), the adaptive context-model code length of
        `context_code_length`, or "zlib" (level 9, on the packed bits or grey bytes), a
        much weaker coder for images this small whose fixed header cost is the same for
        every image (a shift that does not change rankings).

    Returns:
      float64 array (n,) of bit counts.
    """
    x = check_images(x, "x")
    if binarize_threshold is not None:
        binarize_threshold = check_float(
            binarize_threshold, "binarize_threshold", minimum=0.0, maximum=1.0, min_inclusive=False
        )
    if check_choice(compressor, "compressor", COMPRESSORS) == "context":
        if binarize_threshold is None:
            raise ValueError("compressor='context' codes binary images: pass a `binarize_threshold`, not None.")
        return context_code_length(x >= binarize_threshold)
    if binarize_threshold is None:
        data = [np.round(img * 255).astype(np.uint8).tobytes() for img in x]
    else:
        data = [np.packbits(img.reshape(-1) >= binarize_threshold).tobytes() for img in x]
    return np.array([8.0 * len(zlib.compress(d, 9)) for d in data])


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
    index_offset: int = 0,
    progress: bool | None = None,
    compressor: str = "context",
) -> dict[str, np.ndarray]:
    """Computes the named scores of every image, sharing the expensive passes.

    Args:
      estimator: a `tfpvae.likelihood.LikelihoodEstimator`.
      x: images (n, H, W, C) in [0, 1].
      scores: names from `SCORES` (or one name). Default None: every score the estimator
        gives (`available_scores`), with "typicality" only when `typical_nll` is given.
      num_samples: importance samples for log_prob-based scores; ELBO, rate and distortion
        use `max(1, num_samples // 10)` samples. Default 100.
      typical_nll: mean -log p(x) of normal data; required by "typicality".
      seed: seed for reproducible scores. Default 0.
      binarize_seed: score a fixed binarisation of grey images drawn with this seed
        (`tfpvae.likelihood.binarize`). Default None (score the grey values; the
        "complexity" score still uses a fixed binarisation drawn with `seed`, because its
        compressed length is that of one binary image).
      index_offset: position of x[0] in a larger set, for shards that reproduce the
        scores of the whole set (see `LikelihoodEstimator`). Default 0.
      progress: show a progress bar. Default None (automatic).
      compressor: the code length L(x) of "complexity": "context" (default) or "zlib";
        see `compressed_bits`.

    Returns:
      dict name -> float64 array (n,), higher = more normal.
    """
    from tfpvae.likelihood import binarize

    if scores is None:
        scores = tuple(s for s in available_scores(estimator) if s != "typicality" or typical_nll is not None)
    scores = (scores,) if isinstance(scores, str) else tuple(scores)
    for name in scores:
        check_choice(name, "score", SCORES)
    num_samples = check_int(num_samples, "num_samples")
    check_choice(compressor, "compressor", COMPRESSORS)
    if typical_nll is not None:
        typical_nll = check_float(typical_nll, "typical_nll")
    index_offset = check_int(index_offset, "index_offset", minimum=0)
    unavailable = [name for name in scores if name not in available_scores(estimator)]
    if unavailable:
        estimator.require_likelihood(unavailable[0])
    x = check_images(x, "x", getattr(estimator, "image_shape", None))
    if check_seed(binarize_seed, "binarize_seed") is not None:
        # Every score then sees the same binary images; a shard draws them as the whole set does.
        x = binarize(x, binarize_seed, index_offset)
    kw = dict(seed=seed, progress=progress, index_offset=index_offset)
    out: dict[str, np.ndarray] = {}
    if {"log_prob", "typicality", "complexity"} & set(scores):
        log_p = np.asarray(estimator.log_prob(x, num_samples=num_samples, **kw), np.float64)
        if "log_prob" in scores:
            out["log_prob"] = log_p
        if "typicality" in scores:
            if typical_nll is None:
                raise ValueError(
                    "The 'typicality' score needs `typical_nll`, the mean -log p(x) of held-out normal images "
                    "(AnomalyDetector(score='typicality').fit computes it as `typical_nll_`)."
                )
            out["typicality"] = -np.abs(-log_p - typical_nll)
        if "complexity" in scores:
            if np.all((x == 0) | (x == 1)):
                out["complexity"] = log_p / math.log(2) + compressed_bits(x, compressor=compressor)
            else:
                # L(x) is the code length of one binary image, so the likelihood must be
                # of that same image: for grey input, score a fixed binarisation (the
                # grey log-likelihood is an average over binarisations and does not match).
                xb = binarize(x, 0 if seed is None else seed, index_offset)
                log_pb = np.asarray(estimator.log_prob(xb, num_samples=num_samples, **kw), np.float64)
                out["complexity"] = log_pb / math.log(2) + compressed_bits(xb, compressor=compressor)
    if {"elbo", "rate", "distortion"} & set(scores):
        k = max(1, num_samples // 10)
        rd = estimator.rate_distortion(x, num_samples=k, **kw)
        rate, distortion = np.asarray(rd["rate"], np.float64), np.asarray(rd["distortion"], np.float64)
        if "elbo" in scores:
            out["elbo"] = -(rate + distortion)
        if "rate" in scores:
            out["rate"] = -rate
        if "distortion" in scores:
            out["distortion"] = -distortion
    return {name: out[name] for name in scores}


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
