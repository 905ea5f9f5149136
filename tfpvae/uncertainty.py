"""How unsure a model is about an image: spread of q(z|x) per image, predictive variance per pixel.

Per image, `posterior_uncertainty` reads the encoder's full covariance (`scale_tril`)
and returns standard deviations, entropy, log-determinant and, if asked, correlations.
Per pixel, `predictive_uncertainty` integrates the decoder over q(z|x) by Monte Carlo
and splits the variance of the predicted pixel by the law of total variance:

    Var[x_ij] = E_z[p_ij (1 - p_ij)] + Var_z[p_ij],   p_ij = Bernoulli mean given z,

the first term being the Bernoulli noise the decoder itself predicts (aleatoric) and the
second the disagreement between codes the encoder finds plausible (latent, "epistemic").

Both take any `tfpvae.protocols.LatentModel` (e.g. a trained `tfpvae.VAE`). With a seed, each
image's draws are keyed by (seed, its index), so an image's result does not depend on the
other images of the call; `decoded_draws` gives the same draws to other per-pixel measures.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from tfpvae._keras import tf, tfd, unwrap
from tfpvae._validation import MAX_INT32_SEED, check_bool, check_images, check_int, check_seed
from tfpvae.protocols import LatentModel, encode_in_chunks
from tfpvae.scoring import per_seed, seeds_from_keys

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
    model: LatentModel, x: Any, num_samples: int = 64, seed: int | None = None, index_offset: int = 0
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
      seed: int in [0, 2^31 - 1] for reproducible draws. Image i's draws come from a
        stateless seed keyed by (`seed`, index_offset + i) alone, so an image gets the same
        result whatever else is in `x` and however the call is chunked. None: fresh draws.
      index_offset: the position of x[0] in a larger set, int >= 0 (default 0): pass it
        when scoring a slice to draw what the whole set's call draws for those images.

    Returns:
      A `PredictiveUncertainty` of float64 (n, H, W, C) arrays.

    Examples:
      >>> pred = predictive_uncertainty(model, x_test[:5], num_samples=32, seed=0)
      >>> pred.epistemic.shape
      (5, 8, 8, 1)
    """
    x = check_images(x, "x", model.image_shape)
    num_samples = check_int(num_samples, "num_samples")
    sums = {k: [] for k in ("mean", "aleatoric", "epistemic")}
    for _, p in decoded_draws(model, x, num_samples, seed, index_offset):
        mean = p.mean(0)
        sums["mean"].append(mean)
        sums["aleatoric"].append((p * (1.0 - p)).mean(0))
        sums["epistemic"].append(((p - mean) ** 2).mean(0))
    mean, aleatoric, epistemic = (np.concatenate(sums[k]) for k in ("mean", "aleatoric", "epistemic"))
    clipped = np.clip(mean, _PROB_EPS, 1.0 - _PROB_EPS)
    x64 = x.astype(np.float64)
    log_prob = x64 * np.log(clipped) + (1.0 - x64) * np.log1p(-clipped)
    return PredictiveUncertainty(mean, aleatoric, epistemic, aleatoric + epistemic, log_prob, num_samples)


def decoded_draws(
    model: LatentModel, x: Any, num_samples: int, seed: int | None = None, index_offset: int = 0
) -> Iterator[tuple[int, np.ndarray]]:
    """Decoder means of `num_samples` codes drawn from each image's q(z|x), a chunk of images at a time.

    The draws `predictive_uncertainty` reads, for a caller that computes something else from
    them (a per-pixel anomaly map, say). Chunks hold about 8192 decoded images.

    Args:
      model: a `LatentModel` (e.g. a trained `tfpvae.VAE`).
      x: images (n, H, W, C) in [0, 1] (or uint8 0..255).
      num_samples: draws of z per image, >= 1.
      seed: int in [0, 2^31 - 1]. Image i's draws come from a stateless seed keyed by
        (`seed`, index_offset + i) alone, so they are the same in any batch or chunk (as
        `tfpvae.likelihood` keys its draws by image id), for every posterior that can be
        sliced per image (a posterior that cannot is drawn whole, keyed by its chunk's first
        image). None: fresh draws.
      index_offset: the position of x[0] in a larger set, int >= 0. Default 0.

    Returns:
      An iterator of (start, p): the row of `x` the chunk starts at, and the Bernoulli
      means p of its images, float64 (num_samples, images in the chunk, H, W, C).

    Raises:
      ValueError, TypeError: bad `x`, `num_samples`, `seed` or `index_offset` (at the call,
        not at the first chunk).
    """
    x = check_images(x, "x", model.image_shape)
    num_samples = check_int(num_samples, "num_samples")
    seed = check_seed(seed, maximum=MAX_INT32_SEED)
    index_offset = check_int(index_offset, "index_offset", minimum=0)
    if seed is None:
        seed = int(np.random.default_rng().integers(MAX_INT32_SEED + 1))
    return _decoded_chunks(model, x, num_samples, seed, index_offset)


def _decoded_chunks(model: LatentModel, x: np.ndarray, num_samples: int, seed: int, index_offset: int):
    chunk = max(1, _DECODE_BUDGET // num_samples)
    for c, q in enumerate(encode_in_chunks(model, x, chunk=chunk)):
        start = c * chunk
        rows = range(index_offset + start, index_offset + min(start + chunk, len(x)))
        z = _draw(unwrap(q), seeds_from_keys(tf.constant([f"{i}\x1fpredictive\x1f{seed}" for i in rows])), num_samples)
        size = z.shape[1]  # images in this chunk; z is (num_samples, size, latent_dim)
        p = model.decode_mean(z.reshape(num_samples * size, -1)).astype(np.float64)
        yield start, p.reshape(num_samples, size, *p.shape[1:])


@tf.function(reduce_retracing=True)
def _standard_normals(seeds: tf.Tensor, shape: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """Standard normals of `shape` for each row of `seeds` (n, 2): (n, *shape). In a graph, as
    the scoring core draws them: run eagerly, `per_seed`'s loop costs more than the decoder."""
    return per_seed(lambda s: tf.random.stateless_normal(shape, seed=s, dtype=dtype), seeds, dtype)


def _draw(q: tfd.Distribution, seeds: tf.Tensor, num_samples: int) -> np.ndarray:
    """`num_samples` codes from each image's q(z|x), image i's from its own stateless
    seed `seeds[i]` (int32 (n, 2)): (num_samples, n, latent_dim) numpy.

    One draw per seed (TensorFlow's stateless ops take one seed each) is what makes an
    image's codes independent of its neighbours in the batch.
    """
    if isinstance(q, tfd.MultivariateNormalTriL):
        # The encoder's usual posterior: standard normals per image, then loc + L eps batched.
        d = q.event_shape[-1]
        eps = _standard_normals(seeds, tf.constant([num_samples, d]), q.dtype)
        loc = q.mean()  # (n, d), the location broadcast to the batch
        tril = tf.broadcast_to(q.scale.to_dense(), tf.concat([tf.shape(loc), [d]], 0))
        z = loc[:, None, :] + tf.matmul(eps, tril, transpose_b=True)  # (n, num_samples, d)
        return np.swapaxes(z.numpy(), 0, 1)
    if isinstance(q, tfd.VectorDeterministic):  # an autoencoder's code: nothing to draw
        return np.repeat(q.mean().numpy()[None], num_samples, axis=0)

    def one(args):
        i, image_seed = args
        return q[i : i + 1].sample(num_samples, seed=image_seed)[:, 0]

    try:  # any other distribution that slices by batch: one slice per image
        z = tf.map_fn(one, (tf.range(tf.shape(seeds)[0]), seeds), fn_output_signature=q.dtype)
    except (NotImplementedError, ValueError, TypeError):
        # One that cannot be sliced (some flows): drawn whole, so its draws depend on the chunk.
        return q.sample(num_samples, seed=seeds[0]).numpy()
    return np.swapaxes(z.numpy(), 0, 1)
