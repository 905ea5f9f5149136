"""The "combined" anomaly score: one detector for many kinds of shift at once.

Each single score of `tfpvae.anomaly` fails somewhere: raw likelihood calls simpler foreign
images normal, `complexity` misses images of the normal kind that are dimmed, blurred or
flipped. The combined score joins four tests, each turned into a split-conformal p-value
on held-out normal images, by Fisher's method (the sum of the four log p-values; higher =
more normal):

* density (DoSE, Morningstar et al., AISTATS 2021): a Gaussian kernel density, fitted to
  the standardised vector of per-image statistics of normal images, at the image's vector.
  The statistics (`FEATURES`): from one scoring pass over a fixed binarisation x~ of the
  image, log p(x~) plus the grey entropy H(x) of the image itself ("kl": for a grey image,
  minus the KL between its pixels and the decoder's, without its own greyness), the rate,
  the distortion and the `complexity` score; and three statistics of the image that no
  likelihood of a binarised image sees: its peak (the largest pixel value: data sets
  scaled to a full range reach 1 or nearly in every image, a dimmed or resampled one does
  not; standardised by at least `MIN_SCALE`, one grey level),
  its total absolute gradient (blur lowers it, noise raises it) and its sharpness (the
  total absolute Laplacian over the total gradient: a ratio that blur, rotation and other
  resampling lower whatever the image's ink, and that a cut edge raises).
* pose: min over T in {horizontal flip, vertical flip, 180-degree rotation} of
  log p(x~) - log p(T x~), at `POSE_SAMPLES` importance samples. A model knows the pose of
  its data: a normal image is more likely than its flipped copy (or as likely, if it is
  symmetric), a flipped image less likely than its flip back.
* complexity: the `complexity` score of x~ alone (Serra et al., ICLR 2020), the strongest
  single test against images of another domain, which the density dilutes among its seven
  statistics.
* map: the largest value of the image's anomaly map, the per-pixel KL divergence from its
  grey pixels to the decoder's (`tfpvae.anomaly_maps`' "pixel_kl", at `POSE_SAMPLES`
  draws), blurred by `MAP_BLUR` pixels. Whole-image statistics average a local defect
  (an occluding square, a scratch, a patch of noise) away; its map's peak does not.

`combined_statistics` computes the statistics of images (one pass at the detector's k, one
at `POSE_SAMPLES` over the four views, one at `POSE_SAMPLES` for the map),
`combined_features` is their arithmetic, and `CombinedScore` the fitted score. The
detector's calibration part of the fit images (`calibration_fraction`) sets its threshold
and p-values; the rest are the score's reference: the density is fitted on all of them,
and the four statistics of the same images turn into p-values, with the density of each
reference image taken from a density fitted without it (`CombinedScore`'s folds). Cost: one scoring pass at
the detector's k over x~ plus passes at k = 8 over the four views and over x (1.6-1.9x
`log_prob` at k = 100, measured); the measured AUROCs are on the anomaly benchmarks page
of the docs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfpvae._validation import check_images, check_int, check_seed
from tfpvae.anomaly_scores import compute_scores

__all__ = [
    "FEATURES",
    "MAP_BLUR",
    "MIN_SCALE",
    "POSE_SAMPLES",
    "POSE_TRANSFORMS",
    "TESTS",
    "CombinedScore",
    "combined_features",
    "combined_statistics",
    "image_statistics",
    "map_statistic",
    "pose_views",
]

FEATURES = ("kl", "rate", "distortion", "complexity", "peak", "gradient", "sharpness")
TESTS = ("density", "pose", "complexity", "map")  # the p-values Fisher's method joins
POSE_TRANSFORMS = ("hflip", "vflip", "rot180")
POSE_SAMPLES = 8  # the pose statistic is a difference of two estimates with shared draws: few suffice
MAP_BLUR = 2.0  # pixels: a defect is a region, and the blur averages away single pixels the model misses
_MAP_CHUNK = 4096  # images per map pass: its float64 per-pixel arrays stay in the tens of MB
# The smallest scale the density standardises a statistic by: one grey level of 8-bit
# images. A statistic nearly constant on normal images (the peak pixel value of
# contrast-stretched data: 254/255 or 255/255) would otherwise turn an unseen 253/255 into
# hundreds of standard deviations, or, exactly constant, be left unscaled and miss a
# dimmed image.
MIN_SCALE = 1 / 255
PASS = ("log_prob", "rate", "distortion", "complexity")  # what the statistics read of one scoring pass
PREFIX = "combined."  # its statistics' keys among a detector's scores, apart from the scores of that name
_TRANSFORMS = {
    "hflip": lambda x: x[:, :, ::-1],
    "vflip": lambda x: x[:, ::-1],
    "rot180": lambda x: x[:, ::-1, ::-1],
}


def _pixel_entropy(x: np.ndarray) -> np.ndarray:
    """h(x) = -x log x - (1 - x) log(1 - x) per pixel, in nats (x clipped off 0 and 1: h(0) = h(1) = 0)."""
    v = np.clip(x, 1e-12, 1 - 1e-12)
    return -(v * np.log(v) + (1 - v) * np.log1p(-v))


def image_statistics(x: Any) -> dict[str, np.ndarray]:
    """Statistics of the images themselves, no model involved.

    Args:
      x: images (n, H, W, C) in [0, 1].

    Returns:
      dict of float64 arrays (n,): "grey_entropy" (sum over pixels of the binary entropy
      h(x_hwc) in nats, 0 for a binary image), "peak" (the largest pixel value),
      "gradient" (the sum of absolute differences between neighbouring pixels along
      height and width) and "sharpness" (the sum of absolute values of the
      discrete Laplacian 4 x[i, j] - x[i-1, j] - x[i+1, j] - x[i, j-1] - x[i, j+1] over the
      interior pixels, divided by "gradient"; 0 for an image without edges, and for one
      under 3 pixels high or wide, which has no interior).

    Examples:
      >>> image_statistics(np.full((1, 2, 2, 1), 0.5))["grey_entropy"]  # 4 log 2
      array([2.77258872])
    """
    x = check_images(x, "x").astype(np.float64)
    gradient = np.abs(np.diff(x, axis=1)).sum(axis=(1, 2, 3)) + np.abs(np.diff(x, axis=2)).sum(axis=(1, 2, 3))
    inner = x[:, 1:-1, 1:-1]
    laplacian = 4 * inner - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
    total_laplacian = np.abs(laplacian).sum(axis=(1, 2, 3))
    return {
        "grey_entropy": _pixel_entropy(x).sum(axis=(1, 2, 3)),
        "peak": x.reshape(len(x), -1).max(axis=1),
        "gradient": gradient,
        # A ratio, so that it measures how abruptly edges change, not how much ink there is.
        "sharpness": np.divide(total_laplacian, gradient, out=np.zeros_like(gradient), where=gradient > 0),
    }


def pose_views(xb: np.ndarray) -> np.ndarray:
    """The images and their `POSE_TRANSFORMS`, stacked.

    Args:
      xb: images (n, H, W, C).

    Returns:
      array ((1 + 3) n, H, W, C): the images, then each transform of all of them in the
      order of `POSE_TRANSFORMS`.
    """
    return np.concatenate([xb] + [np.ascontiguousarray(_TRANSFORMS[t](xb)) for t in POSE_TRANSFORMS])


def map_statistic(x: Any, pixel_log_prob: Any) -> np.ndarray:
    """The largest value of each image's pixel-KL anomaly map, blurred by `MAP_BLUR` pixels.

    Per pixel, -log p(x_hwc | z) averaged over posterior draws, minus the pixel's own binary
    entropy h(x_hwc): the KL divergence from Bernoulli(x_hwc) to the decoder's Bernoulli
    (0 where the model predicts the grey value exactly; clipped at 0 against rounding),
    averaged over channels, then blurred (Gaussian, edges repeated) and maximised over the
    image.

    Args:
      x: the images (n, H, W, C) in [0, 1].
      pixel_log_prob: their per-pixel log-likelihoods (n, H, W, C) in nats, as
        `LikelihoodEstimator.pixel_log_prob` gives them.

    Returns:
      float64 array (n,), >= 0: higher = a region the model explains worse.

    Examples:
      >>> x = np.full((1, 3, 3, 1), 0.5)  # log p = -log 2: predicted exactly
      >>> map_statistic(x, np.full(x.shape, -np.log(2)))
      array([0.])
    """
    from scipy import ndimage

    x = np.asarray(x, np.float64)
    kl = np.maximum(-np.asarray(pixel_log_prob, np.float64) - _pixel_entropy(x), 0.0).mean(axis=-1)
    blurred = ndimage.gaussian_filter(kl, sigma=(0.0, MAP_BLUR, MAP_BLUR), mode="nearest")
    return blurred.reshape(len(x), -1).max(axis=1)


def combined_features(
    x: Any, scores: Mapping[str, np.ndarray], pose_log_prob: Any, map_values: Any = None
) -> dict[str, np.ndarray]:
    """The statistics the combined score reads, from the scores of a fixed binarisation x~ of x.

    `combined_statistics` computes them for a model; this is their arithmetic.

    Args:
      x: the images (n, H, W, C) in [0, 1], as given (grey where they are grey).
      scores: "log_prob", "rate", "distortion" and "complexity" of x~ (as
        `tfpvae.anomaly.compute_scores` gives them), arrays (n,).
      pose_log_prob: log p of `pose_views(x~)`, array ((1 + 3) n,).
      map_values: the images' `map_statistic`, array (n,). None (a decoder that does not
        factorise over pixels): 0 for every image, so that the map test tells nothing.

    Returns:
      dict "combined.<name>" -> float64 array (n,), for each name in `FEATURES`, "pose"
      and "map".
    """
    image = image_statistics(x)
    log_p = np.asarray(pose_log_prob, np.float64).reshape(1 + len(POSE_TRANSFORMS), len(image["peak"]))
    values = {
        "kl": scores["log_prob"] + image["grey_entropy"],
        "rate": scores["rate"],
        "distortion": scores["distortion"],
        "complexity": scores["complexity"],
        "peak": image["peak"],
        "gradient": image["gradient"],
        "sharpness": image["sharpness"],
        "pose": (log_p[0] - log_p[1:]).min(axis=0),
        "map": np.zeros(len(image["peak"])) if map_values is None else map_values,
    }
    return {PREFIX + name: np.asarray(v, np.float64) for name, v in values.items()}


def combined_statistics(
    estimator: Any,
    x: Any,
    *,
    num_samples: int = 100,
    seed: int | None = 0,
    binarize_seed: int | None = None,
    compressor: str = "context",
    progress: bool | None = None,
    ids: Sequence[Any] | None = None,
    index_offset: int = 0,
) -> dict[str, np.ndarray]:
    """The per-image statistics of the "combined" score, keyed "combined.<name>".

    Every statistic of an image comes from draws keyed by its id and the seed, the pose
    views' and the map's too (an image and its flips share their draws, so their difference
    is not drowned in Monte Carlo noise): a row does not depend on the batch it is scored in.

    Args:
      estimator: a `LikelihoodEstimator` of a VAE.
      x: images (n, H, W, C) in [0, 1].
      num_samples: importance samples of the scoring pass (the pose and map passes take
        `POSE_SAMPLES`).
      seed: seed of the posterior draws.
      binarize_seed: seed of the fixed binarisation x~ that the scoring and pose passes
        read (binary images are their own; the map reads x itself, or x~ for a decoder of
        integer pixels, which cannot score grey values). None: `seed` (0 when that is None).
      compressor: L(x) of the complexity statistic, "context" or "zlib".
      progress: show progress bars. None: automatic.
      ids: one id per image (str or int), which keys its draws and its binarisation.
        None: the row index plus `index_offset`.
      index_offset: with the default ids, the position of x[0] in a larger set.

    Returns:
      dict "combined.<name>" -> float64 array (n,), for each of `FEATURES`, "pose" and
      "map".
    """
    from tfpvae.likelihood import binarize, check_ids

    x = check_images(x, "x", getattr(estimator, "image_shape", None))
    ids = check_ids(ids, len(x), check_int(index_offset, "index_offset", minimum=0))
    check_seed(binarize_seed, "binarize_seed")
    xb = binarize(x, binarize_seed if binarize_seed is not None else 0 if seed is None else seed, ids=ids)
    kw = dict(seed=seed, progress=progress)
    scores = compute_scores(estimator, xb, PASS, num_samples=num_samples, compressor=compressor, ids=ids, **kw)
    views_ids = np.tile(ids, 1 + len(POSE_TRANSFORMS))
    pose = compute_scores(estimator, pose_views(xb), "log_prob", num_samples=POSE_SAMPLES, ids=views_ids, **kw)
    return combined_features(x, scores, pose["log_prob"], _map_values(estimator, x, xb, ids, seed))


def _map_values(estimator: Any, x: np.ndarray, xb: np.ndarray, ids: np.ndarray, seed: int | None) -> np.ndarray | None:
    """`map_statistic` of the images, `_MAP_CHUNK` at a time (its per-pixel arrays stay small);
    None for a decoder that does not factorise over pixels, which has no map."""
    from tfpvae._keras import tfd

    px = estimator.decode(estimator.prior.sample(1, seed=(0, 0)))
    if not isinstance(px, tfd.Independent):
        return None
    images = x if px.dtype.is_floating else xb  # an integer Bernoulli cannot score grey pixels
    out = []
    for start in range(0, len(x), _MAP_CHUNK):
        part = slice(start, start + _MAP_CHUNK)
        pixels = estimator.pixel_log_prob(images[part], POSE_SAMPLES, ids=ids[part], seed=seed, progress=False)
        out.append(map_statistic(images[part], pixels))
    return np.concatenate(out) if out else np.zeros(0)


def _finite_or_low(values: np.ndarray) -> np.ndarray:
    """`values` with every NaN and infinity replaced by -inf: a statistic that could not be
    computed counts as the least normal there is (never as normal)."""
    values = np.asarray(values, np.float64)
    return np.where(np.isfinite(values), values, -np.inf)


def _log_p_values(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Log conformal p-values of the lower tail, log (1 + #{reference <= v}) / (m + 1), with an
    exponential tail below the smallest finite reference value.

    Without the tail every value below the reference would get the same p-value, and an
    image far outside the normal data would tie with one just outside it. The tail
    continues the empirical CDF at the mean spacing of the lowest tenth of the finite
    reference values: log p falls by one for each such spacing below the smallest of them.
    Where those values tie, the mean spacing of all of them is used; where every finite
    value ties (or there is only one), nothing tells how fast the tail should fall, and
    values below get the rank's p-value alone. Reference values of -inf (statistics that
    failed) count in the rank, not in the tail. (The score is a fixed function of the
    image, calibrated again on other images, so the tail's shape does not affect the
    detector's p-values' validity.)
    """
    m = len(reference)
    log_p = np.log((1.0 + np.searchsorted(reference, values, side="right")) / (m + 1.0))
    finite = reference[np.isfinite(reference)]  # sorted; the -infs come first in `reference`
    below = values < finite[0] if finite.size else np.zeros(len(values), bool)
    spacing = _tail_spacing(finite) if below.any() else None
    if spacing is not None:
        start = np.log((1.0 + m - finite.size) / (m + 1.0))  # the p-value just below the finite ones
        log_p[below] = start - (finite[0] - values[below]) / spacing
    return log_p


def _tail_spacing(finite: np.ndarray) -> float | None:
    """The mean spacing of the lowest tenth of sorted `finite` values, or of all of them where
    those tie; None where all tie. Spacings within float32 rounding of the values (1e-6 of
    them; the statistics come from float32 networks) count as ties: a spacing of 1e-12 would
    make the tail fall by 1e12 nats per unit and drown the other tests.
    """
    k = max(1, finite.size // 10)
    for last in (min(k, finite.size - 1), finite.size - 1):
        spacing = (finite[last] - finite[0]) / max(last, 1)
        if spacing > 1e-6 * max(1.0, abs(float(finite[0])), abs(float(finite[last]))):
            return float(spacing)
    return None


class CombinedScore:
    """The fitted combined score: a density of `FEATURES` and the reference values of its four tests.

    The density is fitted on all the reference images. Their own log-densities, which turn
    a new image's density into a p-value, each come from a density fitted on the other
    folds (K-fold cross-fitting), so that no reference image is scored by a density that
    saw it; the other three statistics need no fit and use every reference image.

    Args:
      reference_stats: `combined_statistics` of normal images held out from the model's
        training data, at least 2 of them with every `FEATURES` statistic finite.
      folds: folds of the cross-fitted reference densities, >= 2 (fewer where there are
        fewer finite images). Default 5.

    Attributes:
      scaler_: the `sklearn.preprocessing.StandardScaler` of the density's features, its
        scales at least `MIN_SCALE`.
      density_: the `sklearn.neighbors.KernelDensity` (Gaussian, Scott's bandwidth) on them.
      references_: dict test name (`TESTS`) -> the sorted reference values of that test's
        statistic, array (m,): the cross-fitted log-densities, the pose and `complexity`
        statistics, and minus the map statistic (low = unlike normal in each).
    """

    def __init__(self, reference_stats: Mapping[str, np.ndarray], *, folds: int = 5) -> None:
        from sklearn.neighbors import KernelDensity
        from sklearn.preprocessing import StandardScaler
        from threadpoolctl import threadpool_limits

        folds = check_int(folds, "folds", minimum=2)
        features = self._features(reference_stats)
        finite = np.flatnonzero(np.isfinite(features).all(axis=1))  # a statistic that failed tells no density
        if len(finite) < 2:
            raise ValueError(
                "`reference_stats` needs at least 2 images whose statistics are all finite (one to fit a "
                f"density, one to score it); got {len(finite)}."
            )
        self.scaler_ = StandardScaler().fit(features[finite])
        self.scaler_.scale_ = np.maximum(np.sqrt(self.scaler_.var_), MIN_SCALE)
        scaled = self.scaler_.transform(features[finite])
        own = np.full(len(features), -np.inf)  # each reference image's density, fitted without it
        with threadpool_limits(1):  # scikit-learn's BLAS busy-waits on a loaded machine
            self.density_ = KernelDensity(bandwidth="scott").fit(scaled)
            order = np.random.default_rng(0).permutation(len(finite))  # folds of any given order alike
            for fold in np.array_split(order, min(folds, len(finite))):
                rest = np.delete(scaled, fold, axis=0)
                own[finite[fold]] = KernelDensity(bandwidth="scott").fit(rest).score_samples(scaled[fold])
        self.references_ = {name: np.sort(v) for name, v in self._statistics(reference_stats, own).items()}

    @staticmethod
    def _features(stats: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.stack([stats[PREFIX + name] for name in FEATURES], axis=1)

    @staticmethod
    def _statistics(stats: Mapping[str, np.ndarray], log_density: np.ndarray) -> dict[str, np.ndarray]:
        """The value of each of `TESTS` per image, low = unlike normal; non-finite -> -inf."""
        return {
            "density": log_density,
            "pose": _finite_or_low(stats[PREFIX + "pose"]),
            "complexity": _finite_or_low(stats[PREFIX + "complexity"]),
            "map": _finite_or_low(-np.asarray(stats[PREFIX + "map"], np.float64)),
        }

    def log_density(self, stats: Mapping[str, np.ndarray]) -> np.ndarray:
        """Log-density of the standardised `FEATURES` vectors, array (n,); non-finite -> -inf."""
        from threadpoolctl import threadpool_limits

        features = self._features(stats)
        finite = np.isfinite(features).all(axis=1)  # the scaler refuses infinities: keep them out
        out = np.full(len(features), -np.inf)
        if finite.any():
            with threadpool_limits(1):
                out[finite] = self.density_.score_samples(self.scaler_.transform(features[finite]))
        return out

    def log_parts(self, stats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The logs of the four p-values (`TESTS`: "density", "pose", "complexity", "map"),
        arrays (n,) in [-inf, 0]: low = unlike normal. Conformal p-values against the
        reference images, with an exponential tail below the least normal of them (-inf for
        a non-finite statistic)."""
        values = self._statistics(stats, self.log_density(stats))
        return {name: _log_p_values(self.references_[name], values[name]) for name in TESTS}

    def __call__(self, stats: Mapping[str, np.ndarray]) -> np.ndarray:
        """The combined score, array (n,): the sum of the log p-values (minus half Fisher's statistic)."""
        return sum(self.log_parts(stats).values())
