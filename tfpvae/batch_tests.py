"""Is this batch different? Tests that a whole batch of images was drawn from the normal data.

A per-image detector (`tfpvae.anomaly.AnomalyDetector`) asks whether one image is abnormal;
a shift that moves every image a little (a new scanner, a flipped camera, a few percent of
foreign images) can hide from it image by image and still be plain in a batch of 50.
`BatchShiftTest` gives a p-value for "this batch was drawn from the same distribution as
the normal images", from two statistics of a batch of m images against a reference sample of
r held-out normal images:

* `typicality`: |mean NLL of the batch - mean NLL of the reference|, where NLL = -log p(x)
  is the model's importance-weighted estimate (`tfpvae.anomaly.compute_scores`). It is the
  typicality test of Nalisnick et al. (2019), whose typical NLL is the reference's mean; it
  flags batches that are too unlikely *and* too likely (simpler data, which raw likelihood
  misses image by image).
* `mmd`: the unbiased squared maximum mean discrepancy (Gretton et al., JMLR 2012) between the
  posterior means E[z|x] of the batch and of the reference, with a Gaussian kernel whose
  bandwidth is the median distance between reference codes (fixed at `fit`). It flags
  batches whose codes sit elsewhere in latent space, whatever their likelihood.
* `either`: min(1, 2 min(p_typicality, p_mmd)), the Bonferroni combination, one number to
  report when the kind of shift is unknown.

Both p-values are permutation p-values: the batch and the reference are pooled, `B` random
relabellings pick m of the r + m pooled images as a "batch", and
p = (1 + #{relabelled statistic >= observed}) / (B + 1). If the batch's images and the
reference's are exchangeable (independent draws from the normal data), P(p <= a) <= a for
every a and any batch size: exactly for `typicality`; for `mmd` up to the kernel's
bandwidth, which is fixed from the reference alone at `fit` (a negligible departure with a
reference of hundreds of images). (Nalisnick et al. draw their null from bootstrap
batches of a calibration part instead, which holds only approximately for a finite
calibration set; the statistic is the same.) `either` is valid by the union bound. The
scores of all images come from one scoring pass; each batch then costs O(B m^2) numpy work.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfpvae._validation import check_bool, check_choice, check_float, check_images, check_int, check_seed
from tfpvae.config import PRECISIONS

__all__ = [
    "TESTS",
    "BatchShiftTest",
    "median_bandwidth",
    "mmd2_unbiased",
    "permutation_p_values",
    "rbf_kernel",
    "typicality_statistic",
]

TESTS = ("typicality", "mmd", "either")
# Gathered kernel entries per chunk of relabellings (B * m^2 float64): about 32 MB.
_CHUNK_ELEMENTS = 4_000_000


def rbf_kernel(a: Any, b: Any, bandwidth: float) -> np.ndarray:
    """The Gaussian kernel exp(-|a_i - b_j|^2 / (2 bandwidth^2)).

    Args:
      a: array of shape (n, d).
      b: array of shape (m, d).
      bandwidth: the kernel's length scale, > 0.

    Returns:
      float64 array of shape (n, m).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.exp(-np.maximum(d2, 0.0) / (2.0 * bandwidth**2))


def median_bandwidth(codes: Any) -> float:
    """The median heuristic: the median Euclidean distance between distinct rows of `codes`.

    Args:
      codes: array of shape (n, d), n >= 2.

    Returns:
      the median distance, or 1.0 when every row is the same (a kernel of any width then
      sees no difference).
    """
    codes = np.asarray(codes, np.float64)
    d2 = (codes * codes).sum(1)[:, None] + (codes * codes).sum(1)[None, :] - 2.0 * codes @ codes.T
    median = float(np.sqrt(np.median(np.maximum(d2[np.triu_indices(len(codes), k=1)], 0.0))))
    return median if median > 0.0 else 1.0


def mmd2_unbiased(x: Any, y: Any, bandwidth: float) -> float:
    """The unbiased estimate MMD_u^2 of Gretton et al. (2012, eq. 3) with `rbf_kernel`.

    mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j).

    Args:
      x: array of shape (m, d), m >= 2.
      y: array of shape (n, d), n >= 2.
      bandwidth: the kernel's length scale, > 0.

    Returns:
      the estimate (it can be slightly negative when the two samples are alike).
    """
    kxx, kyy, kxy = rbf_kernel(x, x, bandwidth), rbf_kernel(y, y, bandwidth), rbf_kernel(x, y, bandwidth)
    m, n = len(kxx), len(kyy)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


def typicality_statistic(batch_nll: Any, reference_nll: Any) -> float:
    """|mean of `batch_nll` - mean of `reference_nll`|: how far a batch's mean NLL lies from the typical NLL."""
    return float(abs(np.mean(batch_nll) - np.mean(reference_nll)))


def _check_sample(nll: Any, codes: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """`{name}_nll` (n,) and `{name}_codes` (n, d) as float64 arrays, n >= 2, or raises naming them."""
    nll, codes = np.asarray(nll, np.float64), np.asarray(codes, np.float64)
    if nll.ndim != 1 or len(nll) < 2:
        raise ValueError(f"`{name}_nll` must be an array (n,) with n >= 2; got shape {nll.shape}.")
    if codes.shape[:1] != nll.shape or codes.ndim != 2:
        raise ValueError(f"`{name}_codes` must be an array ({len(nll)}, d), one row per NLL; got shape {codes.shape}.")
    return nll, codes


def permutation_p_values(
    batch_nll: Any,
    batch_codes: Any,
    reference_nll: Any,
    reference_codes: Any,
    bandwidth: float,
    num_permutations: int = 500,
    seed: Any = 0,
    reference_kernel: np.ndarray | None = None,
) -> dict[str, float]:
    """The permutation p-values of one batch against a reference sample of normal images.

    The batch (m rows) and the reference (r rows) are pooled; each of `num_permutations`
    relabellings takes a uniformly random m of the r + m pooled rows as the batch. With
    T the statistic (`typicality_statistic` of the NLLs, `mmd2_unbiased` of the codes),
    p = (1 + #{T(relabelled) >= T(observed)}) / (num_permutations + 1): valid when the
    pooled rows are exchangeable (for MMD, with a bandwidth chosen without looking at the
    batch). The relabellings are shared by both statistics.

    Args:
      batch_nll: array (m,), -log p(x) of the batch's images, m >= 2.
      batch_codes: array (m, d), their posterior means.
      reference_nll: array (r,), -log p(x) of the normal reference images, r >= 2.
      reference_codes: array (r, d), their posterior means.
      bandwidth: the kernel's length scale, > 0 (`median_bandwidth` of the reference).
      num_permutations: random relabellings B, >= 1. Default 500: p-values in steps of 1/501.
      seed: seed (an int, a sequence of ints, or None for a fresh draw) or numpy Generator
        of the relabellings. Default 0.
      reference_kernel: `rbf_kernel(reference_codes, reference_codes, bandwidth)`, array
        (r, r), when the caller keeps it for many batches. Default None: computed here.

    Returns:
      dict "typicality", "mmd", "either" -> p-value in (0, 1].

    Raises:
      ValueError: samples of fewer than 2 rows, codes and NLLs of different lengths or codes
        of different widths, a bandwidth <= 0, or num_permutations < 1 (each named).
    """
    batch_nll, batch_codes = _check_sample(batch_nll, batch_codes, "batch")
    reference_nll, reference_codes = _check_sample(reference_nll, reference_codes, "reference")
    if batch_codes.shape[1] != reference_codes.shape[1]:
        raise ValueError(
            f"`batch_codes` and `reference_codes` must have the same width; got {batch_codes.shape[1]} "
            f"and {reference_codes.shape[1]}."
        )
    check_float(bandwidth, "bandwidth", minimum=0.0, min_inclusive=False)
    num_permutations = check_int(num_permutations, "num_permutations")
    nll = np.concatenate([reference_nll, batch_nll])
    r, total = len(reference_nll), len(nll)
    m = total - r
    # The pooled kernel; the reference block, the costly one, is computed once per reference.
    kernel = np.empty((total, total))
    kernel[:r, :r] = (
        rbf_kernel(reference_codes, reference_codes, bandwidth) if reference_kernel is None else reference_kernel
    )
    kernel[r:, :] = rbf_kernel(batch_codes, np.concatenate([reference_codes, batch_codes]), bandwidth)
    kernel[:r, r:] = kernel[r:, :r].T
    row_sums = kernel.sum(1)
    kernel_total, diagonal = row_sums.sum(), np.diag(kernel)
    rng = np.random.default_rng(seed)

    def statistics(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(typicality, MMD_u^2) of each relabelling, rows (b, m) of pooled indices."""
        batch_sum = nll[rows].sum(1)
        typicality = np.abs(batch_sum / m - (nll.sum() - batch_sum) / r)
        # Every kernel block from two numbers per relabelling: the batch's own block sum and
        # its row sums; so the cost is O(m^2), not O((r + m)^2).
        within = kernel[rows[:, :, None], rows[:, None, :]].sum((1, 2))
        across = row_sums[rows].sum(1) - within
        rest = kernel_total - within - 2.0 * across
        diag_batch = diagonal[rows].sum(1)
        mmd = (
            (within - diag_batch) / (m * (m - 1))
            + (rest - (diagonal.sum() - diag_batch)) / (r * (r - 1))
            - 2.0 * across / (m * r)
        )
        return typicality, mmd

    observed = statistics(np.arange(r, total)[None, :])
    exceed = np.zeros(2)
    chunk = max(1, _CHUNK_ELEMENTS // (m * m))
    for start in range(0, num_permutations, chunk):
        size = min(chunk, num_permutations - start)
        # A uniformly random m-subset per row: the m smallest of iid uniform keys.
        rows = np.argpartition(rng.random((size, total)), m - 1, axis=1)[:, :m]
        for i, values in enumerate(statistics(rows)):
            # A relabelling equal to the observed one may differ in the last bits (another summation order).
            exceed[i] += np.sum(values >= observed[i][0] - 1e-9 * max(1.0, abs(observed[i][0])))
    p_typicality, p_mmd = (1.0 + exceed) / (num_permutations + 1.0)
    either = min(1.0, 2.0 * min(p_typicality, p_mmd))
    return {"typicality": float(p_typicality), "mmd": float(p_mmd), "either": float(either)}


class BatchShiftTest:
    """P-values for "this batch of images comes from the normal data", from a trained VAE.

    `__init__` only stores its arguments (scikit-learn's rule); `fit` checks them, raising
    ValueError or TypeError naming the argument, and learns the attributes that end in "_".

    `fit` takes normal images held out from the model's training data; at most
    `reference_size` of them (a random subset) become the reference sample that every batch
    is compared with. Each image is scored once: its NLL -log p(x) (the importance-weighted
    estimate of `tfpvae.anomaly.compute_scores`, as the per-image scores) and its posterior
    mean E[z|x]. Monte Carlo draws are keyed by image id: the reference images get the ids
    "reference:0", "reference:1", ..., the images of `image_statistics` their row index.

    Args:
      model: a trained `tfpvae.VAE` (or any model with `encode` that
        `tfpvae.likelihood.LikelihoodEstimator.from_model` accepts).
      num_samples: importance samples per image for log p(x). Default 100.
      num_permutations: random relabellings per batch, >= 1. Default 500 (p-values in
        steps of 1/501); at least 1/alpha - 1 of them to ever reject at level alpha.
      reference_size: most normal images kept as the reference, >= 2. Default 1000.
      seed: seed of the Monte Carlo scores, the reference subset and the relabellings.
        Default 0.
      binarize_seed: score (and encode) a fixed binarisation of grey images drawn with this
        seed. Default None: the grey values.
      progress: show a progress bar while scoring. Default None (automatic).
      precision: the networks' arithmetic when scoring: "float32" (default), "bfloat16" or
        "auto".

    Attributes:
      estimator_: the `LikelihoodEstimator` that scores images.
      reference_nll_: NLLs of the reference images, float64 array (r,).
      reference_codes_: their posterior means, float64 array (r, latent_dim).
      bandwidth_: the MMD kernel's length scale, `median_bandwidth(reference_codes_)`.
      typical_nll_: mean of `reference_nll_`, the typical NLL.

    Examples:
      >>> test = BatchShiftTest(model).fit(x_normal_heldout)
      >>> test.p_values(x_batch)  # {"typicality": ..., "mmd": ..., "either": ...}
      >>> p = test.test_batches(x_stream, batch_size=50)
      >>> (p["either"] <= 0.05).mean()      # the fraction of batches flagged
    """

    def __init__(
        self,
        model: Any,
        num_samples: int = 100,
        num_permutations: int = 500,
        reference_size: int = 1000,
        seed: int | None = 0,
        binarize_seed: int | None = None,
        progress: bool | None = None,
        precision: str = "float32",
    ) -> None:
        self.model, self.num_samples, self.num_permutations = model, num_samples, num_permutations
        self.reference_size, self.seed, self.binarize_seed = reference_size, seed, binarize_seed
        self.progress, self.precision = progress, precision

    def _check_params(self) -> Any:
        """Checks every parameter; returns the estimator that scores images."""
        check_int(self.num_samples, "num_samples")
        check_int(self.num_permutations, "num_permutations")
        check_int(self.reference_size, "reference_size", minimum=2)
        check_seed(self.seed, "seed")
        check_seed(self.binarize_seed, "binarize_seed")
        check_bool(self.progress, "progress", allow_none=True)
        check_choice(self.precision, "precision", PRECISIONS)
        if not hasattr(self.model, "encode"):
            raise TypeError(f"`model` must be a trained tfpvae.VAE (with `encode`); got {type(self.model).__name__}.")
        if hasattr(self.model, "estimator"):  # a tfpvae.VAE keeps one per precision, with its traced graph
            estimator = self.model.estimator(self.precision)
        else:
            from tfpvae.likelihood import LikelihoodEstimator

            estimator = LikelihoodEstimator.from_model(self.model, precision=self.precision)
        estimator.require_likelihood("BatchShiftTest")  # a plain autoencoder has no NLL
        return estimator

    def _image_statistics(self, estimator: Any, x: Any, ids: Any = None) -> dict[str, np.ndarray]:
        from tfpvae.anomaly import compute_scores
        from tfpvae.embedding import posterior_means
        from tfpvae.likelihood import binarize

        x = check_images(x, "x", getattr(estimator, "image_shape", None))
        log_p = compute_scores(
            estimator,
            x,
            "log_prob",
            num_samples=self.num_samples,
            seed=self.seed,
            binarize_seed=self.binarize_seed,
            ids=ids,
            progress=self.progress,
        )["log_prob"]
        # The codes of the images that were scored: the fixed binarisation when there is one.
        encoded = x if self.binarize_seed is None else binarize(x, self.binarize_seed, ids=ids)
        return {"nll": -log_p, "codes": posterior_means(self.model, encoded).astype(np.float64)}

    def fit(self, x: Any, y: Any = None) -> BatchShiftTest:
        """Checks the parameters and learns the reference sample from held-out normal images.

        Args:
          x: normal images (n, H, W, C) the model was not trained on, n >= 4.
          y: ignored (scikit-learn compatibility).

        Returns:
          self.

        Raises:
          ValueError: an invalid parameter (named), fewer than 4 images, or a model
            without a likelihood (a plain autoencoder).
          TypeError: a parameter of the wrong type (named).
        """
        estimator = self._check_params()
        x = check_images(x, "x", getattr(estimator, "image_shape", None))
        if len(x) < 4:
            raise ValueError(f"`x` must hold at least 4 normal images to form the reference; got {len(x)}.")
        # Ids of their own, so no reference image shares its Monte Carlo draws with an image of
        # a batch (those are keyed by row index): the pooled scores stay exchangeable.
        stats = self._image_statistics(estimator, x, ids=[f"reference:{i}" for i in range(len(x))])
        keep = np.sort(np.random.default_rng(self.seed).permutation(len(x))[: self.reference_size])
        self.estimator_ = estimator
        self.reference_nll_, self.reference_codes_ = stats["nll"][keep], stats["codes"][keep]
        self.bandwidth_ = median_bandwidth(self.reference_codes_)
        self._reference_kernel = rbf_kernel(self.reference_codes_, self.reference_codes_, self.bandwidth_)
        self.typical_nll_ = float(np.mean(self.reference_nll_))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "reference_nll_"):
            raise ValueError("This BatchShiftTest is not fitted yet: call fit(x_normal) first.")

    def image_statistics(self, x: Any) -> dict[str, np.ndarray]:
        """Scores images once for `batch_p_values`: their NLL and posterior means.

        Args:
          x: images (n, H, W, C).

        Returns:
          dict "nll" -> float64 array (n,), -log p(x); "codes" -> float64 array (n, latent_dim).
        """
        self._check_fitted()
        return self._image_statistics(self.estimator_, x)

    def batch_p_values(self, statistics: dict[str, np.ndarray], batches: Any) -> dict[str, np.ndarray]:
        """The p-values of batches made of already scored images.

        Args:
          statistics: `image_statistics(x)` of n images.
          batches: int array (num_batches, batch_size) of rows of x, batch_size >= 2; each
            row is one batch (an image should appear at most once in a batch).

        Returns:
          dict "typicality", "mmd", "either" -> float64 array (num_batches,) of p-values.
          Batch i draws its relabellings from a generator seeded with (seed, i).

        Raises:
          ValueError: `batches` not a 2-D int array of valid rows with batch_size >= 2.
        """
        self._check_fitted()
        n = len(statistics["nll"])
        batches = np.asarray(batches)
        if batches.ndim != 2 or batches.shape[1] < 2 or batches.dtype.kind not in "iu":
            raise ValueError(
                "`batches` must be an int array (num_batches, batch_size) with batch_size >= 2; "
                f"got shape {batches.shape}, dtype {batches.dtype}."
            )
        if batches.size and (batches.min() < 0 or batches.max() >= n):
            raise ValueError(f"`batches` must hold rows in [0, {n - 1}]; got {batches.min()}..{batches.max()}.")
        out = {name: np.empty(len(batches)) for name in TESTS}
        for i, rows in enumerate(batches):
            p = permutation_p_values(
                statistics["nll"][rows],
                statistics["codes"][rows],
                self.reference_nll_,
                self.reference_codes_,
                self.bandwidth_,
                self.num_permutations,
                seed=None if self.seed is None else [self.seed, i],
                reference_kernel=self._reference_kernel,
            )
            for name in TESTS:
                out[name][i] = p[name]
        return out

    def test_batches(self, x: Any, batch_size: int) -> dict[str, np.ndarray]:
        """Cuts images into consecutive batches and tests each; the images are scored in one pass.

        Args:
          x: images (n, H, W, C), in the order they arrived.
          batch_size: images per batch, 2 <= batch_size <= n. The last n % batch_size
            images, too few for a batch, are not tested.

        Returns:
          dict "typicality", "mmd", "either" -> float64 array (n // batch_size,) of p-values:
          small = unlike the normal data.

        Raises:
          ValueError: a batch size below 2 or above the number of images.
        """
        self._check_fitted()
        batch_size = check_int(batch_size, "batch_size", minimum=2)
        x = check_images(x, "x", getattr(self.estimator_, "image_shape", None))
        if batch_size > len(x):
            raise ValueError(f"`batch_size` must be at most the number of images ({len(x)}); got {batch_size}.")
        num_batches = len(x) // batch_size
        used = num_batches * batch_size
        statistics = self.image_statistics(x[:used])
        return self.batch_p_values(statistics, np.arange(used).reshape(num_batches, batch_size))

    def p_values(self, x: Any) -> dict[str, float]:
        """The p-values of one batch of images.

        Args:
          x: the batch, images (m, H, W, C), m >= 2.

        Returns:
          dict "typicality", "mmd", "either" -> p-value in (0, 1]; small = unlike the
          normal data. For normal images, P(p <= a) <= a.
        """
        self._check_fitted()
        x = check_images(x, "x", getattr(self.estimator_, "image_shape", None))
        if len(x) < 2:
            raise ValueError(f"`x` must hold a batch of at least 2 images; got {len(x)}.")
        return {name: float(p[0]) for name, p in self.test_batches(x, len(x)).items()}
