"""Where an image is abnormal: per-pixel anomaly maps, and how well a map localises known defects.

`anomaly_map(model, x, method)` gives one map per image, an array (n, H, W) in which higher
means more abnormal. Every method reads the same draws z_1..z_k ~ q(z|x) and the decoder's
Bernoulli means p_j = E[x|z_j] (a `tfpvae.protocols.LatentModel` is all it needs), per pixel:

* "pixel_nll": -(1/k) sum_j log p(x_ij | z_j), the negative of `VAE.pixel_log_prob`
  (the same quantity, here from `decode_mean` and the draws of `seed`).
* "pixel_kl": pixel_nll minus the binary entropy h(x_ij) of the pixel itself, i.e. the
  KL divergence from Bernoulli(x_ij) to Bernoulli(p_j), averaged over draws: 0 where
  the model predicts the grey value exactly. For binary images it equals pixel_nll; on
  grey images it stops the soft edges of every stroke, which no model can predict to
  the bit, from counting as abnormal.
* "surprise": pixel_nll minus the NLL the decoder itself expects at that pixel, its
  Bernoulli entropy h(p_j): the surprise above the expected surprise.
* "recon_error": |x_ij - (1/k) sum_j p_j|, the per-pixel reconstruction error: the
  baseline that a likelihood-based map has to beat.

Multichannel images give the mean over channels. Two options apply to every method:

* `heal`: a defect pulls the code of its image towards itself, so the reconstruction
  partly copies the defect and the map underrates it. With `heal` > 0 the pixels that
  look most abnormal (that fraction of each image) are replaced by the reconstruction,
  and the image is scored again against the codes of this healed image (twice the cost).
* `smoothing`: a Gaussian blur of the final map, of that many pixels: a defect is a
  region, not a pixel, and the blur averages away isolated pixels that the model
  explains badly. Thin defects (scratches) prefer little blur, round ones more.

The defaults, "pixel_kl" healed at 0.1 with a blur of 0.5 pixels, localised synthetic
defects (scratches, blobs, occlusions, patches pasted from another data set) best on
average over MNIST and Fashion-MNIST, ahead of the reconstruction error; see the anomaly
benchmarks page for the numbers. On MNIST alone "pixel_nll" (healed) does better: its
digits are nearly binary, so any grey area is itself abnormal there; on Fashion-MNIST,
whose images are grey, it does worst. `tfpvae.plots.anomaly_overlay` draws maps over
their images; `tfpvae plot anomaly-map` does so for a saved model.

`pixel_auroc(maps, masks)` and `pro_score(maps, masks, max_fpr)` measure localisation
against ground-truth masks, as in the MVTec AD benchmark (Bergmann et al., CVPR 2019 and
IJCV 2021): the pixel AUROC pools every pixel of every image; the PRO (per-region overlap)
gives each connected defect region the same weight, whatever its size, and integrates the
mean overlap over the false-positive rate on normal pixels up to `max_fpr`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfpvae._validation import MAX_INT32_SEED, check_choice, check_float, check_images, check_int, check_seed
from tfpvae.protocols import LatentModel, encode_in_chunks

__all__ = [
    "DEFAULT_HEAL",
    "DEFAULT_METHOD",
    "DEFAULT_SMOOTHING",
    "METHODS",
    "anomaly_map",
    "pixel_auroc",
    "pro_curve",
    "pro_score",
]

METHODS = ("pixel_nll", "pixel_kl", "surprise", "recon_error")
# Chosen by the localisation benchmark (benchmarks/localisation.py): the best mean PRO and
# pixel AUROC over its defect kinds and both data sets.
DEFAULT_METHOD = "pixel_kl"
DEFAULT_HEAL = 0.1
DEFAULT_SMOOTHING = 0.5
# How far the first map is blurred before it picks the pixels to heal: a defect is healed
# whole, not only its worst pixels.
_HEAL_BLUR = 2.0
# Bernoulli means are clipped this far from 0 and 1 before taking logs: a pixel's NLL is at
# most -log(1e-7), about 16 nats, so one saturated pixel cannot dominate a smoothed map.
_PROB_EPS = 1e-7


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    """h(p) = -p log p - (1 - p) log(1 - p) in nats, 0 at p = 0 and 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log(p) + (1.0 - p) * np.log1p(-p))
    return np.nan_to_num(h, nan=0.0)


def _chunk_map(method: str, x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The (n, H, W, C) map of `method` for images x (n, H, W, C) and means p (k, n, H, W, C)."""
    if method == "recon_error":
        return np.abs(x - p.mean(0))
    p = np.clip(p, _PROB_EPS, 1.0 - _PROB_EPS)
    nll = -(x * np.log(p) + (1.0 - x) * np.log1p(-p)).mean(0)
    if method == "pixel_kl":
        return np.maximum(nll - _binary_entropy(x), 0.0)  # >= 0 in exact arithmetic
    if method == "surprise":
        return nll - _binary_entropy(p).mean(0)
    return nll


def _raw_maps(model: LatentModel, x: np.ndarray, codes_of: np.ndarray, method: str, num_samples: int, seed):
    """The unsmoothed maps (n, H, W) of `method` for images `x`, with the draws z ~ q(z | codes_of),
    keyed per image by (seed, its index), so an image's map does not depend on its batch."""
    from tfpvae.uncertainty import decoded_draws  # here, not above: the CLI's parser reads METHODS without TensorFlow

    parts = [
        _chunk_map(method, x[start : start + p.shape[1]].astype(np.float64), p).mean(-1)
        for start, p in decoded_draws(model, codes_of, num_samples, seed)
    ]
    return np.concatenate(parts)


def _healed(model: LatentModel, x: np.ndarray, maps: np.ndarray, heal: float) -> np.ndarray:
    """`x` with the top `heal` fraction of each image's pixels, by `maps` blurred, replaced by the
    reconstruction E[x | z = mean of q(z|x)]."""
    from scipy import ndimage

    blurred = ndimage.gaussian_filter(maps, sigma=(0.0, _HEAL_BLUR, _HEAL_BLUR), mode="nearest")
    flat = blurred.reshape(len(x), -1)
    count = max(1, int(np.ceil(heal * flat.shape[1])))
    top = np.argpartition(-flat, count - 1, axis=1)[:, :count]
    chosen = np.zeros(flat.shape, bool)
    np.put_along_axis(chosen, top, True, axis=1)
    recon = np.concatenate([model.decode_mean(q.mean()) for q in encode_in_chunks(model, x)])
    return np.where(chosen.reshape(maps.shape)[..., None], recon, x).astype(np.float32)


def anomaly_map(
    model: LatentModel,
    x: Any,
    method: str = DEFAULT_METHOD,
    *,
    heal: float = DEFAULT_HEAL,
    smoothing: float = DEFAULT_SMOOTHING,
    num_samples: int = 16,
    seed: int | None = 0,
) -> np.ndarray:
    """Per-pixel anomaly scores of images: higher means more abnormal.

    With `heal` > 0 the map is computed twice. The first map (blurred by 2 pixels) picks
    the `heal` fraction of each image's pixels that look most abnormal; these are replaced
    by the model's reconstruction, and the final map scores the original image against
    the draws of q(z|healed image). A defect pulls the code of its image towards itself,
    so that the reconstruction partly copies it; the healed image's code is pulled less.

    Args:
      model: a `LatentModel` with a Bernoulli decoder (e.g. a trained `tfpvae.VAE`).
      x: images, array of shape (n, H, W, C) in [0, 1] (or uint8 0..255), grey values
        scored as they are.
      method: one of `METHODS` (see the module docstring). Default "pixel_kl".
      heal: fraction of each image's pixels healed before the final map, in [0, 1);
        0 scores the image against q(z|x) directly. Default 0.1.
      smoothing: standard deviation in pixels of the Gaussian blur applied to the final
        maps, >= 0; 0 leaves them as computed. Default 0.5.
      num_samples: draws of z per image and pass, >= 1. Default 16.
      seed: int for reproducible draws (default 0), or None for fresh ones. Each image's
        draws are keyed by (seed, its index in `x`), as `predictive_uncertainty` keys them.

    Returns:
      float64 array of shape (n, H, W): the mean over channels of the per-pixel scores.

    Raises:
      ValueError: on an unknown `method`, images that do not fit the model, or
        `heal`, `smoothing`, `num_samples` or `seed` out of range.
      TypeError: on non-numeric images or a `heal`, `smoothing`, `num_samples` or `seed`
        of the wrong type.

    Examples:
      >>> maps = anomaly_map(model, x_test[:4], "pixel_kl", num_samples=16)
      >>> maps.shape
      (4, 8, 8)
    """
    method = check_choice(method, "method", METHODS)
    x = check_images(x, "x", model.image_shape)
    heal = check_float(heal, "heal", minimum=0.0, maximum=1.0, max_inclusive=False)
    smoothing = check_float(smoothing, "smoothing", minimum=0.0)
    num_samples = check_int(num_samples, "num_samples")
    seed = check_seed(seed, maximum=MAX_INT32_SEED)
    maps = _raw_maps(model, x, x, method, num_samples, seed)
    if heal > 0:
        maps = _raw_maps(model, x, _healed(model, x, maps, heal), method, num_samples, seed)
    if smoothing > 0:
        from scipy import ndimage

        maps = ndimage.gaussian_filter(maps, sigma=(0.0, smoothing, smoothing), mode="nearest")
    return maps


# --------------------------------------------------------------------------- localisation metrics
def _check_maps_masks(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """(maps, masks) as float64 and bool arrays (n, H, W), or raises naming the argument."""
    arrays = []
    for name, value in (("maps", maps), ("masks", masks)):
        try:
            arr = np.asarray(value)
        except Exception as err:  # ragged lists and similar
            raise ValueError(f"`{name}` must be an array of shape (n, H, W); could not convert it ({err}).") from None
        if arr.ndim == 4 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 3 or 0 in arr.shape:
            raise ValueError(f"`{name}` must have shape (n, H, W) (or (n, H, W, 1)); got {arr.shape}.")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"`{name}` must be numeric or boolean; got dtype {arr.dtype}.")
        arrays.append(arr)
    maps, masks = arrays
    if maps.shape != masks.shape:
        raise ValueError(f"`masks` must have the shape of `maps`, {maps.shape}; got {masks.shape}.")
    maps = maps.astype(np.float64)
    if not np.all(np.isfinite(maps)):
        raise ValueError("`maps` must be finite; it holds NaN or Inf values.")
    if not np.all((masks == 0) | (masks == 1)):
        raise ValueError("`masks` must hold only 0 and 1 (or False and True): 1 marks an abnormal pixel.")
    masks = masks.astype(bool)
    if masks.all() or not masks.any():
        raise ValueError("`masks` must mark some pixels abnormal (1) and some normal (0); it marks only one kind.")
    return maps, masks


def pixel_auroc(maps: Any, masks: Any) -> float:
    """Area under the ROC curve of every pixel's score against its ground truth, all images pooled.

    Ties count one half (the Mann-Whitney statistic), so the value equals
    `sklearn.metrics.roc_auc_score(masks.ravel(), maps.ravel())`.

    Args:
      maps: anomaly maps, array of shape (n, H, W) (or (n, H, W, 1)), higher = more abnormal.
      masks: ground truth of the same shape, 1 (True) for abnormal pixels; it must hold
        both kinds.

    Returns:
      The AUROC in [0, 1]: 1 when every abnormal pixel scores above every normal one, 0.5
      for a map that tells nothing.

    Raises:
      ValueError: on shapes that differ or are not (n, H, W), non-finite maps, masks that
        are not 0/1 or that mark only one kind of pixel.

    Examples:
      >>> pixel_auroc([[[0.1, 0.9], [0.2, 0.3]]], [[[0, 1], [0, 0]]])
      1.0
    """
    from scipy.stats import rankdata

    maps, masks = _check_maps_masks(maps, masks)
    scores, truth = maps.ravel(), masks.ravel()
    ranks = rankdata(scores)  # average ranks: ties count one half
    n_pos = int(truth.sum())
    n_neg = truth.size - n_pos
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pro_curve(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """The per-region overlap against the false-positive rate, at every threshold of the maps.

    At threshold t, a pixel is flagged when its score is >= t; FPR(t) is the fraction of
    normal pixels (mask 0, all images pooled) that are flagged, and PRO(t) the mean over
    every connected region of the masks (8-connected, per image) of the fraction of the
    region's pixels that are flagged.

    Args:
      maps: anomaly maps, array of shape (n, H, W) (or (n, H, W, 1)), higher = more abnormal.
      masks: ground truth of the same shape, 1 (True) for abnormal pixels.

    Returns:
      (fpr, pro): float64 arrays, both starting at 0 (no threshold reached) and ending
      at 1 (every pixel flagged), fpr non-decreasing; one point per distinct score.
    """
    from scipy import ndimage

    maps, masks = _check_maps_masks(maps, masks)
    region = np.zeros(masks.shape, np.int64)  # 0: normal; r >= 1: the r-th region over all images
    count = 0
    for i, mask in enumerate(masks):
        labels, num = ndimage.label(mask, structure=np.ones((3, 3), int))
        region[i] = np.where(labels > 0, labels + count, 0)
        count += num
    sizes = np.bincount(region.ravel(), minlength=count + 1)
    # What each pixel adds when it is flagged: a normal one 1/N to the FPR, one of region r
    # 1/(|r| * R) to the mean overlap.
    flat = region.ravel()
    fpr_step = np.where(flat == 0, 1.0 / sizes[0], 0.0)
    pro_step = np.where(flat > 0, 1.0 / (sizes[flat] * count), 0.0)
    order = np.argsort(-maps.ravel(), kind="stable")
    scores = maps.ravel()[order]
    fpr, pro = np.cumsum(fpr_step[order]), np.cumsum(pro_step[order])
    # Tied scores are flagged together: keep only the last pixel of each run of ties.
    last = np.r_[scores[1:] != scores[:-1], True]
    fpr, pro = np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]
    fpr[-1] = pro[-1] = 1.0  # exactly, whatever the rounding of the sums
    return fpr, pro


def pro_score(maps: Any, masks: Any, max_fpr: float = 0.3) -> float:
    """Normalised area under the per-region overlap curve up to a false-positive rate.

    The MVTec AD localisation metric (Bergmann et al., IJCV 2021): the area under PRO(FPR)
    (see `pro_curve`) from FPR 0 to `max_fpr`, by the trapezoidal rule with the curve
    interpolated linearly at `max_fpr`, divided by `max_fpr`. Unlike `pixel_auroc`, a
    small defect region counts as much as a large one.

    Args:
      maps: anomaly maps, array of shape (n, H, W) (or (n, H, W, 1)), higher = more abnormal.
      masks: ground truth of the same shape, 1 (True) for abnormal pixels.
      max_fpr: the largest false-positive rate integrated over, in (0, 1]. Default 0.3,
        MVTec AD's.

    Returns:
      The score in [0, 1]: 1 when every region is found whole before any normal pixel is
      flagged; a map that tells nothing scores about max_fpr / 2.

    Raises:
      ValueError: as `pixel_auroc`, and for `max_fpr` outside (0, 1].

    Examples:
      >>> pro_score([[[0.1, 0.9], [0.2, 0.3]]], [[[0, 1], [0, 0]]], max_fpr=0.3)
      1.0
    """
    max_fpr = check_float(max_fpr, "max_fpr", minimum=0.0, maximum=1.0, min_inclusive=False)
    fpr, pro = pro_curve(maps, masks)
    # The curve up to max_fpr, closed by the point interpolated at max_fpr.
    keep = fpr < max_fpr
    end = np.searchsorted(fpr, max_fpr, side="left")  # first point at or beyond max_fpr
    pro_end = np.interp(max_fpr, fpr[end - 1 : end + 1], pro[end - 1 : end + 1])
    x, y = np.r_[fpr[keep], max_fpr], np.r_[pro[keep], pro_end]
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) / max_fpr)
