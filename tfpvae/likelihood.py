"""Per-image likelihood estimates for any latent-variable model given as distributions.

`LikelihoodEstimator` takes three pieces, so it works for a `tfpvae.VAE` (see
`LikelihoodEstimator.from_model`) and for any other model that supplies them:

* `encode(x)`: images (n, H, W, C) -> q(z|x), batch shape (n,), event shape (d,);
* `decode(z)`: codes (m, d) -> p(x|z), batch shape (m,), event shape (H, W, C);
* `prior`: p(z), event shape (d,).

With z_1..z_k ~ q(z|x) and log-weights log w_j = log p(x|z_j) + log p(z_j) - log q(z_j|x):

* `elbo`: (1/k) sum_j log w_j, a Monte Carlo ELBO (valid for priors without a closed-form
  KL, such as a mixture).
* `log_prob`: log (1/k) sum_j w_j, the importance-weighted (IWAE) bound; it never lies
  below the ELBO of the same draws and tends to log p(x) as k grows. Its Monte Carlo
  standard error is the delta-method value sd(w) / (sqrt(k) * mean(w)).
* `bits_per_dim`: -log_prob / (H * W * C * ln 2).
* `rate_distortion`: rate KL(q(z|x) || p(z)) (closed form where TFP registers one) and
  distortion -E_q log p(x|z), the two terms of -ELBO, for anomaly scores.
* `pixel_log_prob`: log p(x_hwc|z) per pixel, averaged over posterior draws.

Grey-level images: a Bernoulli decoder's log p(x|z) at grey x in [0, 1] is
sum x log p + (1 - x) log(1 - p), minus the cross-entropy with grey targets. It is linear
in x, so it equals E_b[log p(b|z)] for binary images b ~ Bernoulli(x) under the same z:
the expected log-likelihood of a random binarisation, not the probability of any image.
This needs a float-dtype Bernoulli (as `tfp.layers.IndependentBernoulli` builds): TFP's
default int32 Bernoulli casts grey values to 0, so such decoders are refused grey input.
For the usual binarised-MNIST numbers, pass `binarize_seed` to score one fixed
binarisation (or call `binarize` first).

Batching and memory: every (image, sample) pair of a chunk goes through the decoder as
one batch; a chunk holds at most `max_batch_elements` pairs (by default 4096 for an MLP
decoder, a few tens of MB, and 1024 for a conv decoder, a few hundred MB at 28x28). When
k fits, a chunk holds several images with all their samples; when it does not, one
image's samples are split over chunks and combined with a streaming log-sum-exp (float64
sums of w and w^2 relative to a running max), so peak memory does not grow with n or k.
Each chunk has a fixed shape (the last is padded), so the `tf.function` that computes it
is traced once per call shape.

Seeds: each image's samples are drawn in blocks of `min(k, 64)` from that image's own
q(z|x), with a stateless seed hashed from (seed, image index, block index). The draws
therefore depend neither on the chunk budget nor on the other images in the call (only on
each image's position in `x`), so results agree across budgets up to the float32 rounding
of differently sized network batches. The same seed gives the same z in `elbo`,
`log_prob`, `rate_distortion` and `pixel_log_prob` (so, for example, rate + distortion =
-ELBO exactly when `analytic_kl=False`, and log_prob >= elbo image by image).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from tfpvae._keras import tf, tfd, tfk
from tfpvae._validation import check_bool, check_images, check_int, check_seed, check_shape

__all__ = ["LikelihoodEstimator", "binarize", "nats_to_bits_per_dim"]

# Default (image, sample) pairs decoded per call: 28x28 conv decoders need ~250 KB per
# pair, and their CPU throughput barely improves past this size (4096 pairs: +4% for the
# TFP example's decoder, 2026-12-02).
DEFAULT_MAX_BATCH_ELEMENTS = 1024
# An MLP decoder needs a few KB per pair and scores ~28% more images/s with 4096 pairs per
# call than with 1024 (default model, k=64, 2 cores, 4 interleaved rounds; 2026-12-02).
MLP_MAX_BATCH_ELEMENTS = 4096
# Samples drawn per seeded block. Small enough that k=1000 does not waste draws, large
# enough that the per-block loop is short.
_SAMPLE_BLOCK = 64
# With progress=None, a bar appears only for jobs of more chunks than this, on a terminal.
_PROGRESS_MIN_CHUNKS = 16

_U64 = np.uint64


def _on_terminal() -> bool:
    """Whether standard output (where Keras draws progress bars) is read by a person: a terminal
    or a Jupyter kernel (whose stdout says it is not a tty), not a file or pipe."""
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


def _unwrap(distribution: Any) -> tfd.Distribution:
    """The plain distribution inside a Keras layer's tensor-coercible output wrapper."""
    return getattr(distribution, "tensor_distribution", distribution)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, vectorised: a bijective, well-mixed hash of uint64 values."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _block_seeds(seed: int, images: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Stateless seeds, (len, 2) int32, one per (image index, block index) pair.

    A 64-bit hash of (seed, image, block): distinct pairs get unrelated Philox streams, and
    a pair's seed does not depend on how the work is chunked.
    """
    h = _splitmix64(np.full(images.shape, seed % 2**64, dtype=_U64))
    h = _splitmix64(h ^ images.astype(_U64))
    h = _splitmix64(h ^ blocks.astype(_U64))
    words = np.stack([h >> _U64(32), h & _U64(0xFFFFFFFF)], axis=-1).astype(np.uint32)
    return words.view(np.int32)


def binarize(x: Any, seed: int | None = None, index_offset: int = 0) -> np.ndarray:
    """Draws binary images b ~ Bernoulli(x), pixel by pixel.

    Args:
      x: images, array of shape (n, H, W, C) (or (n, H, W)) with float values in [0, 1]
        or uint8 0..255, read as the probability that each pixel is on.
      seed: int >= 0 for a reproducible draw. Default None (a fresh draw each call).
      index_offset: position of x[0] in a larger set: with a seed, image i gets the draw
        that image index_offset + i gets when the whole set is binarised in one call, so
        shards binarise exactly as the whole. Default 0.

    Returns:
      float32 array shaped like `x` as (n, H, W, C), with values 0.0 and 1.0.
    """
    x = check_images(x, "x")
    seed = check_seed(seed, "seed")
    index_offset = check_int(index_offset, "index_offset", minimum=0)
    generator = np.random.default_rng(seed)
    if index_offset:
        # The whole set's uniforms are one float32 stream, image after image; PCG64 yields
        # two float32 per step, so skip the earlier images' draws: advance by half of them,
        # then one more float32 when their count is odd (tested against the whole-set draw).
        skipped = index_offset * int(np.prod(x.shape[1:]))
        generator.bit_generator.advance(skipped // 2)
        if skipped % 2:
            generator.random(1, dtype=np.float32)
    u = generator.random(x.shape, dtype=np.float32)
    # u < 1 always, so x = 1 gives 1 and x = 0 gives 0.
    return (u < x).astype(np.float32)


def nats_to_bits_per_dim(nats: Any, num_dims: int) -> np.ndarray:
    """Converts a negative log-likelihood in nats to bits per dimension.

    Args:
      nats: -log p(x) in nats, a number or array (e.g. `-estimator.log_prob(x)`).
      num_dims: dimensions per image, H * W * C (784 for MNIST).

    Returns:
      float64 array (or scalar) nats / (num_dims * ln 2).
    """
    num_dims = check_int(num_dims, "num_dims")
    return np.asarray(nats, dtype=np.float64) / (num_dims * math.log(2.0))


def _default_batch_elements(model: Any) -> int:
    """The chunk size that suits `model`'s decoder: larger for an MLP, whose pairs are small."""
    architecture = getattr(getattr(model, "config", None), "architecture", None)
    return MLP_MAX_BATCH_ELEMENTS if architecture == "mlp" else DEFAULT_MAX_BATCH_ELEMENTS


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How n images x k samples are cut into fixed-shape chunks.

    Each chunk covers images [i0, i0 + images) and samples [j0, j0 + samples). Samples are
    drawn in seeded blocks of `block`; a chunk draws `blocks` whole blocks starting at
    block j0 // block and keeps `samples` of them from offset j0 % block.
    """

    num_images: int
    num_samples: int
    images: int
    samples: int
    block: int
    blocks: int

    @classmethod
    def make(cls, n: int, k: int, budget: int) -> _Plan:
        block = min(k, _SAMPLE_BLOCK)
        if k <= budget:
            # All of an image's samples in one chunk; as many images as fit, rounded to a
            # power of two >= n (and >= 8) so that small calls neither pad much nor retrace often.
            images = min(budget // k, max(8, 1 << (n - 1).bit_length()))
            return cls(n, k, images, k, block, -(-k // block))
        if budget >= block:
            samples = budget // block * block  # whole blocks, so chunks start on a block
            return cls(n, k, 1, samples, block, samples // block)
        # A budget under one block: a divisor of the block, so no chunk straddles two.
        samples = max(v for v in range(1, budget + 1) if block % v == 0)
        return cls(n, k, 1, samples, block, 1)

    def chunks(self):
        """Yields (i0, j0) of every chunk, image-major."""
        for i0 in range(0, self.num_images, self.images):
            for j0 in range(0, self.num_samples, self.samples):
                yield i0, j0

    @property
    def num_chunks(self) -> int:
        return -(-self.num_images // self.images) * -(-self.num_samples // self.samples)


class _Stats:
    """Per-image running sums over posterior draws, in float64."""

    def __init__(self, n: int, image_shape: tuple[int, ...], pixels: bool) -> None:
        self.max = np.full(n, -np.inf)
        self.sum_w = np.zeros(n)  # sum_j exp(log w_j - max)
        self.sum_w2 = np.zeros(n)  # sum_j exp(2 (log w_j - max))
        self.sum_lw = np.zeros(n)
        self.sum_lw2 = np.zeros(n)
        self.sum_lpx = np.zeros(n)
        self.sum_lpz = np.zeros(n)
        self.sum_lqz = np.zeros(n)
        self.kl: np.ndarray | None = None
        self.pixels = np.zeros((n, *image_shape)) if pixels else None

    def update(self, rows: slice, out: dict[str, np.ndarray], num_valid: int) -> None:
        """Adds the first `num_valid` samples of a chunk's outputs to images `rows`."""
        nb = rows.stop - rows.start
        lpx, lpz, lqz = (out[key][:nb, :num_valid].astype(np.float64) for key in ("lpx", "lpz", "lqz"))
        lw = lpx + lpz - lqz
        old = self.max[rows]
        new = np.maximum(old, lw.max(axis=1))
        # All weights zero so far (max -inf): shift by 0 so that no inf - inf appears.
        shift = np.where(np.isfinite(new), new, 0.0)
        with np.errstate(invalid="ignore", over="ignore"):
            scale = np.exp(old - shift)
            rel = np.exp(lw - shift[:, None])
        self.sum_w[rows] = self.sum_w[rows] * scale + rel.sum(axis=1)
        self.sum_w2[rows] = self.sum_w2[rows] * scale**2 + (rel**2).sum(axis=1)
        self.max[rows] = new
        self.sum_lw[rows] += lw.sum(axis=1)
        self.sum_lw2[rows] += (lw**2).sum(axis=1)
        self.sum_lpx[rows] += lpx.sum(axis=1)
        self.sum_lpz[rows] += lpz.sum(axis=1)
        self.sum_lqz[rows] += lqz.sum(axis=1)
        if "kl" in out:
            if self.kl is None:
                self.kl = np.zeros_like(self.max)
            self.kl[rows] = out["kl"][:nb]
        if self.pixels is not None:
            self.pixels[rows] += out["pixels"][:nb]


class LikelihoodEstimator:
    """ELBO, importance-weighted log-likelihood and related scores for a latent-variable model.

    Args:
      encode: images, float32 tensor (n, H, W, C) -> q(z|x), a distribution with batch
        shape (n,) and event shape (d,). It must support batch slicing (`q[i:i+1]`), as
        every TFP distribution does.
      decode: codes, float32 tensor (m, d) -> p(x|z), batch shape (m,) and event shape
        (H, W, C); e.g. `Independent(Bernoulli)` or `Independent(Normal)`.
      prior: p(z), a distribution with event shape (d,), or a callable with no arguments
        that returns it, read on every call (for a prior that depends on trained weights,
        such as the VampPrior, so the estimator follows further training).
      image_shape: (H, W, C) the images must have; checked on every call when given.
        Default None (any shape the decoder accepts).
      max_batch_elements: default number of (image, sample) pairs decoded per call; each
        method can override it. Default 1024.
      defines_likelihood: False for a model whose q(z|x) is a point mass (a plain
        autoencoder): `elbo`, `log_prob` and `bits_per_dim` then refuse, since
        log p(x|z) + log p(z) - log q(z|x) bounds nothing; `rate_distortion` and
        `pixel_log_prob` still give its reconstruction terms. Default True.

    All methods take images `x` of shape (n, H, W, C) (or (n, H, W)), float in [0, 1] or
    uint8 0..255, and the keywords `seed`, `binarize_seed`, `max_batch_elements` and
    `progress`. The same seed gives the same posterior draws in every method.

    Example:
      >>> est = LikelihoodEstimator.from_model(model)
      >>> est.log_prob(x_test, num_samples=1000, seed=0).mean()
    """

    def __init__(
        self,
        encode: Callable[[tf.Tensor], tfd.Distribution],
        decode: Callable[[tf.Tensor], tfd.Distribution],
        prior: tfd.Distribution | Callable[[], tfd.Distribution],
        *,
        image_shape: tuple[int, int, int] | None = None,
        max_batch_elements: int = DEFAULT_MAX_BATCH_ELEMENTS,
        defines_likelihood: bool = True,
    ) -> None:
        for value, name in ((encode, "encode"), (decode, "decode")):
            if not callable(value):
                raise TypeError(f"`{name}` must be callable; got {type(value).__name__}.")
        prior = _unwrap(prior)
        if not isinstance(prior, tfd.Distribution) and not callable(prior):
            kind = type(prior).__name__
            raise TypeError(f"`prior` must be a tfd.Distribution or a callable returning one; got {kind}.")
        self._encode = encode
        self._decode = decode
        self._prior = prior
        self.image_shape = None if image_shape is None else check_shape(image_shape, "image_shape")
        self.max_batch_elements = check_int(max_batch_elements, "max_batch_elements")
        self.defines_likelihood = check_bool(defines_likelihood, "defines_likelihood")
        # One tf.function per estimator: it traces once per chunk shape and is reused.
        self._chunk_fn = tf.function(self._chunk)

    @property
    def prior(self) -> tfd.Distribution:
        """p(z) as it is now (a callable prior is called afresh)."""
        if isinstance(self._prior, tfd.Distribution):
            return self._prior
        prior = _unwrap(self._prior())
        if not isinstance(prior, tfd.Distribution):
            raise TypeError(f"The `prior` callable must return a tfd.Distribution; got {type(prior).__name__}.")
        return prior

    @classmethod
    def from_model(cls, model: Any, *, max_batch_elements: int | None = None) -> LikelihoodEstimator:
        """Builds an estimator for a `tfpvae.VAE` (encoder and decoder in inference mode).

        Each estimator traces its own `tf.function`, so keep one per model and reuse it
        rather than building one per call.

        Args:
          model: a `tfpvae.VAE`, or any object with `encoder`, `decoder`, `prior` and
            `image_shape` attributes of the same kinds.
          max_batch_elements: default (image, sample) pairs per decoder call. Default None:
            `MLP_MAX_BATCH_ELEMENTS` (4096) for a model with architecture "mlp", else
            `DEFAULT_MAX_BATCH_ELEMENTS` (1024).
        """
        missing = [a for a in ("encoder", "decoder", "prior", "image_shape") if not hasattr(model, a)]
        if missing:
            raise TypeError(f"`model` must be a tfpvae.VAE; {type(model).__name__} has no {', '.join(missing)}.")
        return cls(
            lambda x: model.encoder(x, training=False),
            lambda z: model.decoder(z, training=False),
            lambda: model.prior,  # read per call: a VampPrior moves with the encoder's weights
            image_shape=model.image_shape,
            max_batch_elements=_default_batch_elements(model) if max_batch_elements is None else max_batch_elements,
            defines_likelihood=getattr(getattr(model, "config", None), "model_type", "vae") != "ae",
        )

    def require_likelihood(self, what: str) -> None:
        """Raises ValueError naming `what` if this estimator's model defines no likelihood."""
        if not self.defines_likelihood:
            raise ValueError(
                f"`{what}` needs a VAE; this model is a plain autoencoder (model_type='ae'), which defines no "
                "likelihood. Use rate_distortion(x)['distortion'] (score 'distortion') for its reconstruction NLL."
            )

    # ------------------------------------------------------------------ core
    def _chunk(self, x, seeds, offset, first_sample, num_samples, *, samples, block, blocks, pixels):
        """Log-densities for every (image, sample) pair of one chunk.

        Args:
          x: float32 (b, H, W, C), the chunk's images (padded at the end of the data).
          seeds: int32 (b * blocks, 2), a stateless seed per (image, block).
          offset: int32 scalar, index of the chunk's first sample within its first block.
          first_sample: int32 scalar, j0, the index of the chunk's first sample.
          num_samples: int32 scalar, k; samples j >= k are padding.
          samples: Python int, samples per image in the chunk.
          block: Python int, samples per seeded block.
          blocks: Python int, blocks drawn per image.
          pixels: Python bool, also return per-pixel log-probabilities summed over samples.

        Returns:
          dict of lpx, lpz, lqz (b, samples) and, where available, kl (b,) and pixels
          (b, H, W, C).
        """
        b = x.shape[0]
        q = _unwrap(self._encode(x))
        image_of = tf.range(b * blocks) // blocks

        def draw(args):
            i, seed = args
            # Each image's own q and seed: the draws do not depend on the chunking. log q
            # comes with the draw (from the standard-normal noise), not by solving the
            # scale_tril system again, which loses all precision for ill-conditioned q.
            zi, lqi = q[i : i + 1].experimental_sample_and_log_prob(block, seed=seed)
            return zi[:, 0], lqi[:, 0]

        z, lq = tf.map_fn(draw, (image_of, seeds), fn_output_signature=(q.dtype, q.dtype))
        z = tf.reshape(z, [b, blocks * block, -1])  # (b, blocks * block, d)
        z = tf.slice(z, [0, offset, 0], [b, samples, -1])  # (b, samples, d)
        lqz = tf.slice(tf.reshape(lq, [b, blocks * block]), [0, offset], [b, samples])
        prior = self.prior  # once per chunk: a VampPrior encodes its pseudo-images on each read
        lpz = prior.log_prob(z)
        px = _unwrap(self._decode(tf.reshape(z, [b * samples, -1])))
        event = tf.TensorShape(px.event_shape)
        if event.is_fully_defined() and event != x.shape[1:]:
            raise ValueError(
                f"`x` images have shape {tuple(x.shape[1:])} but the decoder's distribution has event shape "
                f"{tuple(event)}."
            )
        xr = tf.repeat(tf.cast(x, px.dtype), samples, axis=0)  # row r = image r // samples
        out = {"lqz": lqz, "lpz": lpz}
        if px.dtype.is_integer:
            # TFP's default Bernoulli has dtype int32: log_prob would truncate grey x to 0.
            out["grey"] = tf.reduce_any(tf.not_equal(x, tf.round(x)))
        if pixels:
            if not isinstance(px, tfd.Independent):
                raise TypeError(
                    "pixel_log_prob needs a decoder distribution that factorises over pixels, a "
                    f"tfd.Independent such as Independent(Bernoulli); got {type(px).__name__}."
                )
            per_pixel = px.distribution.log_prob(xr)
            per_pixel = tf.reshape(per_pixel, [b, samples, *x.shape[1:]])
            valid = first_sample + tf.range(samples) < num_samples
            mask = tf.reshape(valid, [1, samples] + [1] * (len(x.shape) - 1))
            out["pixels"] = tf.reduce_sum(tf.where(mask, per_pixel, tf.zeros_like(per_pixel)), axis=1)
            out["lpx"] = tf.reduce_sum(per_pixel, axis=list(range(2, len(x.shape) + 1)))
        else:
            out["lpx"] = tf.reshape(px.log_prob(xr), [b, samples])
        try:
            out["kl"] = tfd.kl_divergence(q, prior)
        except NotImplementedError:
            pass  # no closed form (e.g. a mixture prior): the rate is estimated from the draws
        return out

    def _prepare(
        self, x: Any, num_samples: Any, seed: Any, binarize_seed: Any, budget: Any, progress: Any, index_offset: Any
    ):
        """Validates the shared arguments; returns (x, k, seed, budget, progress, index_offset)."""
        x = check_images(x, "x", self.image_shape)
        index_offset = check_int(index_offset, "index_offset", minimum=0)
        k = check_int(num_samples, "num_samples")
        seed = check_seed(seed, "seed")
        binarize_seed = check_seed(binarize_seed, "binarize_seed")
        budget = self.max_batch_elements if budget is None else check_int(budget, "max_batch_elements")
        progress = check_bool(progress, "progress", allow_none=True)
        if binarize_seed is not None:
            x = binarize(x, binarize_seed, index_offset)  # a shard binarises as in the whole set
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31))
        return x, k, seed, budget, progress, index_offset

    def _run(
        self, x, num_samples, seed, binarize_seed, max_batch_elements, progress, pixels=False, index_offset=0
    ) -> _Stats:
        x, k, seed, budget, progress, index_offset = self._prepare(
            x, num_samples, seed, binarize_seed, max_batch_elements, progress, index_offset
        )
        n = len(x)
        plan = _Plan.make(n, k, budget)
        stats = _Stats(n, x.shape[1:], pixels)
        show = progress if progress is not None else plan.num_chunks > _PROGRESS_MIN_CHUNKS and _on_terminal()
        bar = tfk.utils.Progbar(plan.num_chunks, unit_name="chunk") if show else None
        padded = np.zeros((plan.images, *x.shape[1:]), np.float32)
        static = dict(samples=plan.samples, block=plan.block, blocks=plan.blocks, pixels=pixels)
        for step, (i0, j0) in enumerate(plan.chunks(), start=1):
            i1 = min(i0 + plan.images, n)
            if i1 - i0 == plan.images:
                chunk = x[i0:i1]
            else:  # the last, short chunk: pad to the traced shape, drop the padding after
                padded[: i1 - i0] = x[i0:i1]
                padded[i1 - i0 :] = 0.0
                chunk = padded
            t0 = j0 // plan.block
            images = np.repeat(np.arange(i0, i0 + plan.images) + index_offset, plan.blocks)
            blocks = np.tile(np.arange(t0, t0 + plan.blocks), plan.images)
            out = self._chunk_fn(
                tf.constant(chunk),
                tf.constant(_block_seeds(seed, images, blocks)),
                tf.constant(j0 - t0 * plan.block, tf.int32),
                tf.constant(j0, tf.int32),
                tf.constant(k, tf.int32),
                **static,
            )
            out = {key: v.numpy() for key, v in out.items()}
            if out.pop("grey", False):
                raise ValueError(
                    "`x` has grey values but the decoder's distribution has an integer dtype, which would "
                    "truncate them to 0; pass binarize_seed=..., or build the decoder with a float dtype "
                    "(e.g. tfd.Bernoulli(logits, dtype=tf.float32), as tfp.layers.IndependentBernoulli does)."
                )
            stats.update(slice(i0, i1), out, min(plan.samples, k - j0))
            if bar is not None:
                bar.update(step)
        return stats

    # ------------------------------------------------------------------ estimates
    def elbo(
        self,
        x: Any,
        num_samples: int = 1,
        *,
        return_stderr: bool = False,
        seed: int | None = None,
        index_offset: int = 0,
        binarize_seed: int | None = None,
        max_batch_elements: int | None = None,
        progress: bool | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Monte Carlo ELBO per image: mean over k draws of log p(x|z) + log p(z) - log q(z|x).

        Args:
          x: images (n, H, W, C).
          num_samples: draws k per image, >= 1. Default 1.
          return_stderr: also return the Monte Carlo standard error of each estimate,
            sd / sqrt(k) (NaN for k = 1). Default False.
          seed: int >= 0 for reproducible draws, the same z in every method. Default None.
          index_offset: position of x[0] in a larger set (for shards). Default 0.
          binarize_seed: int >= 0 to score `binarize(x, binarize_seed)` instead of `x`.
            Default None.
          max_batch_elements: (image, sample) pairs per decoder call. Default None: the
            estimator's `max_batch_elements`.
          progress: show a progress bar. Default None: only for jobs of over 16 chunks, on a terminal.

        Returns:
          float64 array (n,) in nats; with `return_stderr`, the pair (elbo, stderr).
        """
        self.require_likelihood("elbo")
        check_bool(return_stderr, "return_stderr")
        s = self._run(x, num_samples, seed, binarize_seed, max_batch_elements, progress, index_offset=index_offset)
        k = int(num_samples)
        elbo = s.sum_lw / k
        if not return_stderr:
            return elbo
        if k == 1:
            return elbo, np.full_like(elbo, np.nan)
        var = np.maximum(s.sum_lw2 - s.sum_lw**2 / k, 0.0) / (k - 1)
        return elbo, np.sqrt(var / k)

    def log_prob(
        self,
        x: Any,
        num_samples: int = 100,
        *,
        return_stderr: bool = False,
        seed: int | None = None,
        index_offset: int = 0,
        binarize_seed: int | None = None,
        max_batch_elements: int | None = None,
        progress: bool | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Importance-weighted estimate of log p(x) per image, with q(z|x) as the proposal.

        log (1/k) sum_j p(x|z_j) p(z_j) / q(z_j|x), z_j ~ q(z|x): a lower bound in
        expectation that rises to log p(x) as k grows (exact for any k when q is the true
        posterior).

        Args:
          x: images (n, H, W, C).
          num_samples: importance samples k per image, >= 1. Default 100; 1000 or more for
            reported test likelihoods.
          return_stderr: also return the delta-method standard error of each estimate,
            sd(w) / (sqrt(k) * mean(w)) with the weights' sample sd (NaN for k = 1). It
            measures the spread, not the bias, which is of order sd(w)^2 / (2 k mean(w)^2).
            Default False.
          seed: int >= 0 for reproducible draws, the same z in every method. Default None.
          index_offset: position of x[0] in a larger set (for shards). Default 0.
          binarize_seed: int >= 0 to score `binarize(x, binarize_seed)` instead of `x`.
            Default None.
          max_batch_elements: (image, sample) pairs per decoder call. Default None: the
            estimator's `max_batch_elements`.
          progress: show a progress bar. Default None: only for jobs of over 16 chunks, on a terminal.

        Returns:
          float64 array (n,) in nats; with `return_stderr`, the pair (log_prob, stderr).
        """
        self.require_likelihood("log_prob")
        check_bool(return_stderr, "return_stderr")
        s = self._run(x, num_samples, seed, binarize_seed, max_batch_elements, progress, index_offset=index_offset)
        k = int(num_samples)
        with np.errstate(divide="ignore"):
            log_prob = np.where(np.isfinite(s.max), s.max, 0.0) + np.log(s.sum_w) - math.log(k)
        log_prob = np.where(s.max == -np.inf, -np.inf, log_prob)
        if not return_stderr:
            return log_prob
        if k == 1:
            return log_prob, np.full_like(log_prob, np.nan)
        mean = s.sum_w / k  # >= 1 / k: the largest weight is exp(0)
        var = np.maximum(s.sum_w2 - s.sum_w**2 / k, 0.0) / (k - 1)
        return log_prob, np.sqrt(var) / (math.sqrt(k) * mean)

    def bits_per_dim(
        self,
        x: Any,
        num_samples: int = 100,
        *,
        return_stderr: bool = False,
        seed: int | None = None,
        index_offset: int = 0,
        binarize_seed: int | None = None,
        max_batch_elements: int | None = None,
        progress: bool | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """-log_prob / (H * W * C * ln 2) per image; arguments as in `log_prob`.

        Returns:
          float64 array (n,) in bits per dimension; with `return_stderr`, the pair
          (bits_per_dim, stderr in the same units).
        """
        self.require_likelihood("bits_per_dim")
        result = self.log_prob(
            x,
            num_samples,
            return_stderr=return_stderr,
            seed=seed,
            index_offset=index_offset,
            binarize_seed=binarize_seed,
            max_batch_elements=max_batch_elements,
            progress=progress,
        )
        log_prob, stderr = result if return_stderr else (result, None)
        num_dims = int(np.prod(check_images(x, "x", self.image_shape).shape[1:]))
        bpd = nats_to_bits_per_dim(-log_prob, num_dims)
        return (bpd, nats_to_bits_per_dim(stderr, num_dims)) if return_stderr else bpd

    def rate_distortion(
        self,
        x: Any,
        num_samples: int = 1,
        *,
        analytic_kl: bool = True,
        seed: int | None = None,
        index_offset: int = 0,
        binarize_seed: int | None = None,
        max_batch_elements: int | None = None,
        progress: bool | None = None,
    ) -> dict[str, np.ndarray]:
        """The two terms of -ELBO per image: rate KL(q(z|x) || p(z)) and distortion -E_q log p(x|z).

        Args:
          x: images (n, H, W, C).
          num_samples: draws k per image for the Monte Carlo terms, >= 1. Default 1.
          analytic_kl: use TFP's closed-form KL when one is registered for (q, prior), as
            for Gaussian priors; otherwise, or when False, the rate is the Monte Carlo
            mean of log q(z|x) - log p(z) over the same draws as the distortion. Default True.
          seed: int >= 0 for reproducible draws, the same z in every method. Default None.
          index_offset: position of x[0] in a larger set (for shards). Default 0.
          binarize_seed: int >= 0 to score `binarize(x, binarize_seed)` instead of `x`.
            Default None.
          max_batch_elements: (image, sample) pairs per decoder call. Default None: the
            estimator's `max_batch_elements`.
          progress: show a progress bar. Default None: only for jobs of over 16 chunks, on a terminal.

        Returns:
          dict with float64 arrays (n,) "rate" and "distortion", in nats.
        """
        check_bool(analytic_kl, "analytic_kl")
        s = self._run(x, num_samples, seed, binarize_seed, max_batch_elements, progress, index_offset=index_offset)
        k = int(num_samples)
        rate = s.kl.astype(np.float64) if analytic_kl and s.kl is not None else (s.sum_lqz - s.sum_lpz) / k
        return {"rate": rate, "distortion": -s.sum_lpx / k}

    def pixel_log_prob(
        self,
        x: Any,
        num_samples: int = 16,
        *,
        seed: int | None = None,
        index_offset: int = 0,
        binarize_seed: int | None = None,
        max_batch_elements: int | None = None,
        progress: bool | None = None,
    ) -> np.ndarray:
        """Per-pixel log p(x_hwc | z), averaged over z ~ q(z|x): where an image is poorly explained.

        Needs a decoder distribution that is a `tfd.Independent` over pixels. Summed over
        pixels it gives -distortion of `rate_distortion` with the same seed and k.

        Args:
          x: images (n, H, W, C).
          num_samples: draws k per image, >= 1. Default 16.
          seed: int >= 0 for reproducible draws, the same z in every method. Default None.
          index_offset: position of x[0] in a larger set (for shards). Default 0.
          binarize_seed: int >= 0 to score `binarize(x, binarize_seed)` instead of `x`.
            Default None.
          max_batch_elements: (image, sample) pairs per decoder call. Default None: the
            estimator's `max_batch_elements`.
          progress: show a progress bar. Default None: only for jobs of over 16 chunks, on a terminal.

        Returns:
          float32 array (n, H, W, C) in nats (<= 0 for Bernoulli decoders).
        """
        s = self._run(
            x, num_samples, seed, binarize_seed, max_batch_elements, progress, pixels=True, index_offset=index_offset
        )
        return (s.pixels / int(num_samples)).astype(np.float32)
