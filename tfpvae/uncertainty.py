"""How unsure a model is about an image: spread of q(z|x) per image, predictive variance per pixel.

Per image, `posterior_uncertainty` reads the encoder's full covariance (`scale_tril`)
and returns standard deviations, entropy, log-determinant and, if asked, correlations.
Per pixel, `predictive_uncertainty` integrates the decoder over q(z|x) by Monte Carlo
and splits the variance of the predicted pixel by the law of total variance:

    Var[x_ij] = E_z[p_ij (1 - p_ij)] + Var_z[p_ij],   p_ij = Bernoulli mean given z,

the first term being the Bernoulli noise the decoder itself predicts (aleatoric) and the
second the disagreement between codes the encoder finds plausible (latent, "epistemic").

Both take any `tfpvae.protocols.LatentModel` (e.g. a trained `tfpvae.VAE`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from tfpvae._keras import tf
from tfpvae._validation import MAX_INT32_SEED, check_bool, check_images, check_int, check_seed
from tfpvae.protocols import LatentModel, encode_in_chunks

# Decoded images per decoder call (num_samples * images per chunk): bounds peak memory.
_DECODE_BUDGET = 8192
# Predictive means are clipped this far from 0 and 1 before taking logs.
_PROB_EPS = 1e-7


@dataclasses.dataclass(frozen=True)
class PosteriorUncertainty:
    """Spread of q(z|x) = N(mean, L L^T) for each image; float64 numpy arrays.

    Attributes:
      mean: posterior means, (n, d).
      stddev: marginal standard deviations sqrt(diag(L L^T)), (n, d).
      entropy: differential entropy in nats, d/2 log(2 pi e) + 1/2 log det(L L^T), (n,).
      log_det_cov: log det(L L^T) = 2 sum_i log |L_ii|, (n,).
      correlation: correlation matrices (n, d, d), or None when not requested.
    """

    mean: np.ndarray
    stddev: np.ndarray
    entropy: np.ndarray
    log_det_cov: np.ndarray
    correlation: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class PredictiveUncertainty:
    """Per-pixel moments of p(x|x') = E_{q(z|x')} p(x|z), each (n, H, W, C) float64.

    Attributes:
      mean: predictive mean E_z[p].
      aleatoric: E_z[p (1 - p)], the decoder's own Bernoulli variance, averaged over z.
      epistemic: Var_z[p], the spread of the Bernoulli mean across codes drawn from
        q(z|x') (population variance over the draws, so aleatoric + epistemic equals
        mean * (1 - mean) exactly for the same draws).
      total: aleatoric + epistemic, the variance of the predictive Bernoulli.
      log_prob: log of the predictive Bernoulli at x', x' log mean + (1 - x') log(1 - mean)
        per pixel (for grey x' this is minus the binary cross-entropy). Pixels are
        treated one at a time: the sum over pixels is not log p(x'|x').
      num_samples: Monte Carlo draws of z per image.
    """

    mean: np.ndarray
    aleatoric: np.ndarray
    epistemic: np.ndarray
    total: np.ndarray
    log_prob: np.ndarray
    num_samples: int


def posterior_uncertainty(model: LatentModel, x: Any, correlation: bool = False) -> PosteriorUncertainty:
    """Standard deviations, entropy and log-determinant of q(z|x) for each image.

    Computed in float64 from the encoder's Cholesky factor L (`q.scale_tril`), so the
    covariance is never inverted or factorised again.

    Args:
      model: a `LatentModel` (e.g. a trained `tfpvae.VAE`) whose q(z|x) has a
        `scale_tril`: model_type "vae" (a plain autoencoder has no spread).
      x: images (n, H, W, C) in [0, 1] (or uint8 0..255).
      correlation: also return the (n, d, d) correlation matrices.

    Returns:
      A `PosteriorUncertainty` of float64 arrays: mean and stddev (n, latent_dim),
      entropy and log_det_cov (n,), correlation (n, latent_dim, latent_dim) or None.

    Examples:
      >>> post = posterior_uncertainty(model, x_test[:5])
      >>> post.stddev.shape, post.entropy.shape
      ((5, 8), (5,))
    """
    x = check_images(x, "x", model.image_shape)
    correlation = check_bool(correlation, "correlation")
    means, trils = [], []
    for q in encode_in_chunks(model, x):
        if not hasattr(q, "scale_tril"):
            raise ValueError(
                f"`model` must encode to a Gaussian with a scale_tril (a VAE); its posterior is a "
                f"{type(q).__name__} (model_type 'ae' has no posterior spread)."
            )
        means.append(q.mean().numpy())
        trils.append(q.scale_tril.numpy())
    mean = np.concatenate(means).astype(np.float64)
    tril = np.concatenate(trils).astype(np.float64)
    d = tril.shape[-1]
    cov = tril @ np.swapaxes(tril, -1, -2)
    stddev = np.sqrt(np.einsum("nii->ni", cov))
    log_det = 2.0 * np.log(np.abs(np.einsum("nii->ni", tril))).sum(-1)
    entropy = 0.5 * d * (1.0 + math.log(2.0 * math.pi)) + 0.5 * log_det
    corr = cov / (stddev[:, :, None] * stddev[:, None, :]) if correlation else None
    return PosteriorUncertainty(mean, stddev, entropy, log_det, corr)


def predictive_uncertainty(
    model: LatentModel, x: Any, num_samples: int = 64, seed: int | None = None
) -> PredictiveUncertainty:
    """Per-pixel predictive mean and variance of p(x|x'), split into aleatoric and latent parts.

    Draws z_1..z_K ~ q(z|x') and decodes each to Bernoulli means p_k; the predictive
    distribution of each pixel is then Bernoulli(mean_k p_k), whose variance is split as
    E_k[p_k (1 - p_k)] + Var_k[p_k].

    Args:
      model: a `LatentModel` (e.g. a trained `tfpvae.VAE`); for a plain autoencoder the
        latent part is zero.
      x: images (n, H, W, C) in [0, 1] (or uint8 0..255).
      num_samples: draws of z per image, >= 1. The Monte Carlo error of the mean
        falls as 1/sqrt(num_samples).
      seed: int for reproducible draws.

    Returns:
      A `PredictiveUncertainty` of float64 (n, H, W, C) arrays.

    Examples:
      >>> pred = predictive_uncertainty(model, x_test[:5], num_samples=32, seed=0)
      >>> pred.epistemic.shape
      (5, 8, 8, 1)
    """
    x = check_images(x, "x", model.image_shape)
    num_samples = check_int(num_samples, "num_samples")
    seed = check_seed(seed, maximum=MAX_INT32_SEED)
    chunk = max(1, _DECODE_BUDGET // num_samples)
    sums = {k: [] for k in ("mean", "aleatoric", "epistemic")}
    for c, q in enumerate(encode_in_chunks(model, x, chunk=chunk)):
        # A length-2 int tensor is a stateless seed: same seed, same draws; one per chunk.
        z = q.sample(num_samples, seed=None if seed is None else tf.constant([seed, c], tf.int32)).numpy()
        size = z.shape[1]  # images in this chunk; z is (num_samples, size, latent_dim)
        p = model.decode_mean(z.reshape(num_samples * size, -1)).astype(np.float64)
        p = p.reshape(num_samples, size, *p.shape[1:])
        mean = p.mean(0)
        sums["mean"].append(mean)
        sums["aleatoric"].append((p * (1.0 - p)).mean(0))
        sums["epistemic"].append(((p - mean) ** 2).mean(0))
    mean, aleatoric, epistemic = (np.concatenate(sums[k]) for k in ("mean", "aleatoric", "epistemic"))
    clipped = np.clip(mean, _PROB_EPS, 1.0 - _PROB_EPS)
    x64 = x.astype(np.float64)
    log_prob = x64 * np.log(clipped) + (1.0 - x64) * np.log1p(-clipped)
    return PredictiveUncertainty(mean, aleatoric, epistemic, aleatoric + epistemic, log_prob, num_samples)
