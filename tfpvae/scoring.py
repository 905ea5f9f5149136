"""The one importance-weighted scoring core: images with stable ids -> k log-weights -> every per-image score.

For images x_i with ids id_i, draws z_i1..z_ik ~ q(z|x_i) give log-weights
log w_ij = log p(x_i|z_ij) + log p(z_ij) - log q(z_ij|x_i), and from them (all in nats):

* `log_prob`: log (1/k) sum_j w_ij, the importance-weighted (IWAE) bound, with
  `log_prob_stderr`, the delta-method Monte Carlo error sd(w) / (sqrt(k) mean(w));
* `elbo`: (1/k) sum_j log w_ij, with `elbo_stderr`, sd(log w) / sqrt(k);
* `rate`: KL(q(z|x_i) || p(z)) in closed form where TFP registers one, else the Monte
  Carlo mean of log q - log p(z) (`rate_mc` always holds the latter);
* `distortion`: -(1/k) sum_j log p(x_i|z_ij);
* `typicality`: -|-log_prob - typical NLL| (given the typical NLL of normal data);
* `complexity`: log2 p(xb_i) + L(xb_i), the NLL in bits corrected by the image's
  context-model code length (`tfpvae.compression`), where xb_i is the image itself when
  it is binary and otherwise a fixed binarisation keyed by its id and the seed.

`score_images` computes all of them inside one TensorFlow graph, and every path that
scores images calls it: `LikelihoodEstimator` (and through it `compute_scores` and
`AnomalyDetector`), the exported SavedModel's `score` signature and the Beam pipeline.
The IWAE training loss shares `log_weight_terms`.

Scores are a function of (model, image, id, seed) only. Each image's posterior draws come
in blocks of `min(k, 64)`, each block from a stateless seed that is a fingerprint of
(id, seed, block index); a fixed binarisation draws from a fingerprint of (id, seed). So
the same image with the same id and seed gets the same score whatever batch, chunk,
shard, worker or order it is scored in, up to the float32 rounding of differently sized
network batches (well under 1e-4 nats). Ids are strings: a row index ("0", "1", ...) for
arrays, a file path, or `path:record` for TFRecord. For numpy arrays, `check_ids` turns the
ids a caller gives into those strings and `binarize` draws an array's fixed binarisation
(both are also importable from `tfpvae.likelihood`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from tfpvae._keras import tf, tfd, unwrap
from tfpvae._validation import check_images, check_int, check_seed
from tfpvae.compression import CONTEXT_TEMPLATE, context_code_length_graph
from tfpvae.config import SCORES  # the names a user asks for (CLI --score, compute_scores, AnomalyDetector)

__all__ = [
    "OUTPUTS",
    "SCORES",
    "ScoringPlan",
    "binarize",
    "binarize_images",
    "check_ids",
    "log_weight_terms",
    "per_seed",
    "score_images",
    "seeds_from_keys",
    "softplus_sum",
]

# Everything `score_images` can return; the scores above plus their companions.
OUTPUTS = (*SCORES, "log_prob_stderr", "elbo_stderr", "rate_mc", "pixels")
SAMPLE_BLOCK = 64  # samples per seeded block: k=1000 wastes few draws, and the block loop is short
SEEDS_PER_ITERATION = 8  # per `per_seed` loop iteration, which costs several small draws; more trace longer
_LN2 = math.log(2.0)
_GREY_INTEGER = "`x` has grey values but the decoder's distribution has an integer dtype"


def seeds_from_keys(keys: tf.Tensor) -> tf.Tensor:
    """Stateless seeds, int32 (..., 2), from string keys of any shape.

    FarmHash Fingerprint64 (`tf.strings.to_hash_bucket_fast`), stable across platforms
    and TensorFlow versions: the same key gives the same seed on every machine.
    """
    h = tf.strings.to_hash_bucket_fast(keys, 2**63 - 1)
    high = tf.cast(tf.bitwise.right_shift(h, 32), tf.int32)  # < 2^31: h < 2^63
    low = tf.bitcast(tf.cast(tf.bitwise.bitwise_and(h, 0xFFFFFFFF), tf.uint32), tf.int32)
    return tf.stack([high, low], axis=-1)


def _keys(ids: tf.Tensor, stream: str, seed: tf.Tensor, *counters: tf.Tensor) -> tf.Tensor:
    """ "id␟stream␟seed[␟counter...]": one key per id (and counter), broadcast together."""
    key = tf.strings.join([ids, tf.constant(stream), tf.strings.as_string(seed)], separator="\x1f")
    for counter in counters:  # StringJoin broadcasts only scalars: broadcast by hand
        shape = tf.broadcast_dynamic_shape(tf.shape(key), tf.shape(counter))
        counter = tf.broadcast_to(tf.strings.as_string(counter), shape)
        key = tf.strings.join([tf.broadcast_to(key, shape), counter], separator="\x1f")
    return key


def binarize_images(x: tf.Tensor, ids: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """b ~ Bernoulli(x) pixel by pixel, each image from a seed keyed by (its id, `seed`).

    Args:
      x: float32 (n, H, W, C) in [0, 1].
      ids: string (n,).
      seed: int32 scalar.

    Returns:
      float32 (n, H, W, C) of 0.0 and 1.0; u < x with u in [0, 1), so 0 stays 0 and 1 stays 1.
    """
    seeds = seeds_from_keys(_keys(ids, "binarize", seed))
    shape = tf.shape(x)[1:]
    u = per_seed(lambda image_seed: tf.random.stateless_uniform(shape, seed=image_seed), seeds, tf.float32)
    return tf.cast(u < x, tf.float32)


def per_seed(draw: Callable[[tf.Tensor], tf.Tensor], seeds: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """`draw(seed)` for every row of `seeds` (n, 2), stacked: (n, *shape of one draw).

    TensorFlow's stateless random ops take one seed each, so each row needs its own op. A
    `tf.map_fn` loop iteration costs several times a small draw on a CPU, so each iteration
    runs `SEEDS_PER_ITERATION` draws side by side: the values of one op per seed.
    """
    n = tf.shape(seeds)[0]
    pad = -n % SEEDS_PER_ITERATION + SEEDS_PER_ITERATION * tf.cast(n == 0, tf.int32)  # >= 1 group: its shape
    groups = tf.reshape(tf.pad(seeds, [[0, pad], [0, 0]]), [-1, SEEDS_PER_ITERATION, 2])

    def group(row_seeds):
        return tf.stack([draw(row_seeds[i]) for i in range(SEEDS_PER_ITERATION)])

    drawn = tf.map_fn(group, groups, fn_output_signature=dtype)  # (groups, SEEDS_PER_ITERATION, ...)
    return tf.reshape(drawn, tf.concat([[-1], tf.shape(drawn)[2:]], 0))[:n]


def check_ids(ids: Any, n: int, index_offset: int = 0, name: str = "ids") -> np.ndarray:
    """Image ids as a numpy array of n non-empty str; None gives the row indices "offset", "offset + 1", ...

    Raises:
      ValueError: not one id per image, an empty id.
      TypeError: ids that are neither str nor int.
    """
    if ids is None:
        return np.arange(index_offset, index_offset + n).astype(str).astype(object)
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"`{name}` must be a sequence of one id per image, not a single string; got {ids!r}.")
    values = list(ids)
    if len(values) != n:
        raise ValueError(f"`{name}` must hold one id per image ({n}); got {len(values)}.")
    out = []
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            value = str(int(value))
        if not isinstance(value, str):
            raise TypeError(f"`{name}` must be str or int ids; got {value!r} ({type(value).__name__}).")
        if not value:
            raise ValueError(f"`{name}` must not contain empty ids.")
        out.append(value)
    return np.array(out, dtype=object)


_binarize_graph = tf.function(
    binarize_images,
    input_signature=[
        tf.TensorSpec([None, None, None, None], tf.float32),
        tf.TensorSpec([None], tf.string),
        tf.TensorSpec([], tf.int32),
    ],
)


def binarize(x: Any, seed: int | None = None, index_offset: int = 0, ids: Sequence[Any] | None = None) -> np.ndarray:
    """Draws binary images b ~ Bernoulli(x), pixel by pixel, each image keyed by its id.

    Args:
      x: images, array of shape (n, H, W, C) (or (n, H, W)) with float values in [0, 1]
        or uint8 0..255, read as the probability that each pixel is on.
      seed: int in [0, 2^31 - 1] for a reproducible draw. None: a fresh draw each call.
      index_offset: with the default ids, the position of x[0] in a larger set: image i
        gets id str(index_offset + i), and so the draw it gets when the whole set is
        binarised in one call.
      ids: one id per image (str or int); an image's draw depends only on its id and the
        seed. None: row indices from `index_offset`.

    Returns:
      float32 array shaped like `x` as (n, H, W, C), with values 0.0 and 1.0.
    """
    x = check_images(x, "x")
    seed = check_seed(seed, "seed", maximum=2**31 - 1)
    index_offset = check_int(index_offset, "index_offset", minimum=0)
    ids = check_ids(ids, len(x), index_offset)
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31))
    return _binarize_graph(tf.constant(x), tf.constant(ids.astype(str)), tf.constant(seed, tf.int32)).numpy()


# Pixels whose log sigmoid(|l|) terms share one logarithm (`_log_sigmoid_sum`): each
# factor lies in [1/2, 1], so a product of 16 stays within [2^-16, 1].
_SOFTPLUS_GROUP = 16


def _as_float32(logits: tf.Tensor) -> tf.Tensor:
    """float16 and bfloat16 logits as float32: sums of hundreds of terms need more than their 11 or 8 bits."""
    return tf.cast(logits, tf.float32) if logits.dtype in (tf.float16, tf.bfloat16) else logits


def _log_sigmoid_sum(a: tf.Tensor) -> tf.Tensor:
    """sum(log sigmoid(a)) over the last axis, for a >= 0, with one logarithm per 16 entries.

    Each factor sigmoid(a) lies in [1/2, 1], so the product of 16 lies in [2^-16, 1]: it
    neither overflows nor underflows.
    """
    factors = tf.sigmoid(a)
    width = a.shape[-1] if a.shape[-1] is not None else tf.shape(a)[-1]
    pad = -width % _SOFTPLUS_GROUP  # ones fill the last group: log 1 = 0
    if not isinstance(pad, int) or pad:
        factors = tf.concat([factors, tf.ones(tf.concat([tf.shape(a)[:-1], [pad]], 0), a.dtype)], -1)
    groups = tf.reshape(factors, tf.concat([tf.shape(a)[:-1], [-1, _SOFTPLUS_GROUP]], 0))
    return tf.reduce_sum(tf.math.log(tf.reduce_prod(groups, -1)), -1)


@tf.custom_gradient
def softplus_sum(logits: tf.Tensor) -> tf.Tensor:
    """sum(softplus(logits)) over the last axis, with one logarithm per 16 entries.

    softplus(l) = max(l, 0) - log sigmoid(|l|), with the logarithms of 16 neighbouring
    entries taken as the logarithm of their product (`_log_sigmoid_sum`): a sixteenth of
    the `log` calls, which dominate a CPU's time here. The error is absolute, below 3e-6
    nats per 16 entries (terms under 6e-8, where |l| > 16.6, vanish), so a sum made only of
    tiny terms is not accurate relative to its own size. float16 and bfloat16 logits are
    summed in float32. The gradient is sigmoid(logits).

    Args:
      logits: float (..., P).

    Returns:
      float (...), the dtype of `logits`.
    """
    dtype, logits = logits.dtype, _as_float32(logits)
    total = tf.reduce_sum(tf.nn.relu(logits), -1) - _log_sigmoid_sum(tf.abs(logits))

    def grad(upstream):
        return tf.cast(tf.cast(upstream, logits.dtype)[..., None] * tf.sigmoid(logits), dtype)

    return tf.cast(total, dtype), grad


@tf.custom_gradient
def _bernoulli_log_px_sum(logits: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
    """sum(x l - softplus(l)) over the last axis: the Bernoulli log-likelihood of pixels x.

    Pixel by pixel x l - softplus(l) = (x l - max(l, 0)) + log sigmoid(|l|). The first part
    is summed as it is: non-zero only where l is on the wrong side of x, its sum is about
    the log-likelihood's size (split into sums of hundreds or thousands of nats that
    cancel, as for a trained model's confident logits, it loses 1e-4 to 4e-3 nats to
    rounding). For binary x it is -max(l (1 - 2x), 0). The second part is
    `_log_sigmoid_sum`. As accurate as TFP's own float32 `log_prob`: within 5e-5 nats of a
    float64 sum for 784 binary pixels, and float32's relative 2e-7 of the sum for grey
    ones. Gradients: x - sigmoid(l) for the logits, the sum of the rows' l for the pixels.

    Args:
      logits: float (b, s, P), image-major rows of decoded logits.
      pixels: float (b, 1, P), each image's pixels in [0, 1], met by its s rows.

    Returns:
      float (b, s).
    """
    binary = tf.reduce_all(tf.equal(pixels, 0.0) | tf.equal(pixels, 1.0))
    misses = tf.cond(
        binary,
        lambda: -tf.reduce_sum(tf.nn.relu(logits * (1.0 - 2.0 * pixels)), -1),
        lambda: tf.reduce_sum(logits * pixels - tf.nn.relu(logits), -1),
    )
    total = misses + _log_sigmoid_sum(tf.abs(logits))

    def grad(upstream):
        up = upstream[..., None]
        return up * (pixels - tf.sigmoid(logits)), tf.reduce_sum(up * logits, axis=1, keepdims=True)

    return total, grad


def _bernoulli_logits(px: tfd.Distribution) -> tf.Tensor | None:
    """The logits (m, *event) of an `Independent(Bernoulli)` with batch shape (m,) and float dtype, else None."""
    inner = px.distribution if isinstance(px, tfd.Independent) else None
    if type(inner) is not tfd.Bernoulli or inner.logits is None or not px.dtype.is_floating:
        return None
    if px.batch_shape.rank != 1 or inner.logits.shape.rank != 1 + px.event_shape.rank:
        return None
    return inner.logits


def _log_px(px: tfd.Distribution, x: tf.Tensor, s: tf.Tensor) -> tf.Tensor:
    """log p(x|z) (b, s) for decoded px of batch (b * s,), image-major, and images x (b, ...).

    For independent Bernoulli pixels with logits l, `_bernoulli_log_px_sum`: each image's
    pixels meet its s rows of logits directly (no copy of x per draw), and the logarithms
    are taken once per 16 pixels: as accurate as `px.log_prob`, at a fraction of its time
    on a CPU. Where that gives a non-finite value (an infinite logit where x is grey:
    0 * inf is NaN), the batch is computed again by `px.log_prob`, which handles it. Any
    other distribution: `px.log_prob` of x repeated.
    """
    b = tf.shape(x)[0]

    def exact():
        xr = tf.repeat(tf.cast(x, px.dtype), s, axis=0)  # row r = image r // s
        return tf.reshape(px.log_prob(xr), [b, s])

    logits = _bernoulli_logits(px)
    if logits is None:
        return exact()
    width = px.event_shape.num_elements() or -1  # static where known: no padding ops for 16 | width
    dtype, logits = logits.dtype, _as_float32(tf.reshape(logits, [b, s, width]))
    pixels = tf.reshape(tf.cast(x, logits.dtype), [b, 1, width])
    fast = tf.cast(_bernoulli_log_px_sum(logits, pixels), dtype)  # px.log_prob's dtype
    return tf.cond(tf.reduce_all(tf.math.is_finite(fast)), lambda: fast, exact)


def log_weight_terms(
    x: tf.Tensor, z: tf.Tensor, log_q: tf.Tensor, decode: Callable[[tf.Tensor], Any], prior: tfd.Distribution
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """log p(x|z), log p(z) and log q(z|x) for s draws of each of b images: (b, s) each.

    The decoder sees all b * s codes in one batch. log w = log p(x|z) + log p(z) - log q(z|x);
    the IWAE training loss weighs the last two by beta.

    Args:
      x: images (b, H, W, C).
      z: codes (b, s, d), image-major.
      log_q: log q(z|x) of those codes (b, s), taken with the draw.
      decode: codes (m, d) -> p(x|z) with batch shape (m,).
      prior: p(z), event shape (d,).
    """
    b, s = tf.shape(z)[0], tf.shape(z)[1]
    px = unwrap(decode(tf.reshape(z, [b * s, z.shape[-1]])))
    event = tf.TensorShape(px.event_shape)
    if event.is_fully_defined() and x.shape[1:].is_fully_defined() and event != x.shape[1:]:
        raise ValueError(
            f"`x` images have shape {tuple(x.shape[1:])} but the decoder's distribution has event shape {tuple(event)}."
        )
    log_px = tf.ensure_shape(tf.cast(_log_px(px, _pixels_for(px, x), s), log_q.dtype), log_q.shape)  # loop state
    return log_px, prior.log_prob(z), log_q


def _pixels_for(px: tfd.Distribution, x: tf.Tensor) -> tf.Tensor:
    """`x`, asserted binary where `px` has an integer dtype (TFP's default Bernoulli, whose
    log_prob would truncate grey values to 0)."""
    if not px.dtype.is_integer:
        return x
    with tf.control_dependencies([tf.debugging.Assert(tf.reduce_all(tf.equal(x, tf.round(x))), [_GREY_INTEGER])]):
        return tf.identity(x)


class ScoringPlan(NamedTuple):
    """How k samples per image are cut into steps of at most `budget` (image, sample) pairs.

    A step draws `blocks` whole seeded blocks of `block` samples per image and keeps
    `samples` of them; `images` is how many images share one call when k fits the budget
    (one image otherwise). Steps over the samples of a call run inside the graph.
    """

    num_samples: int
    images: int
    samples: int
    block: int
    blocks: int

    @classmethod
    def make(cls, k: int, budget: int, n: int | None = None) -> ScoringPlan:
        """The plan for k samples per image and `budget` pairs per decoder batch.

        Args:
          k: samples per image, >= 1.
          budget: (image, sample) pairs per decoder batch, >= 1.
          n: images to score, when known: with k <= budget a call then holds at most the
            power of two >= n (and >= 8), so that small calls neither pad much nor retrace
            often. None: as many as the budget allows.
        """
        block = min(k, SAMPLE_BLOCK)
        if k <= budget:
            images = budget // k
            if n is not None:
                images = min(images, max(8, 1 << (n - 1).bit_length()))
            return cls(k, images, k, block, -(-k // block))
        if budget >= block:
            samples = budget // block * block  # whole blocks, so steps start on a block
            return cls(k, 1, samples, block, samples // block)
        # A budget under one block: a divisor of the block, so no step straddles two blocks.
        samples = max(v for v in range(1, budget + 1) if block % v == 0)
        return cls(k, 1, samples, block, 1)

    @property
    def steps(self) -> int:
        return -(-self.num_samples // self.samples)


def _draw_tril(q: tfd.MultivariateNormalTriL, image_of: tf.Tensor, seeds: tf.Tensor, block: int):
    """`experimental_sample_and_log_prob` of q[image_of[r]] with seeds[r], for every row r at once.

    The same noise as TFP draws (standard normals of shape (block, 1, d) from the seed), then
    z = loc + L eps and log q = log N(eps; 0, I) - log|det L| batched over rows: one small
    random op per row instead of a sliced distribution per row.
    """
    d = q.event_shape[-1]

    def noise(row_seed):
        return tf.random.stateless_normal([block, d], seed=row_seed, dtype=q.dtype)

    eps = per_seed(noise, seeds, q.dtype)  # (rows, block, d)
    loc = q.mean()  # (b, d), the location broadcast to the batch
    tril = tf.broadcast_to(q.scale.to_dense(), tf.concat([tf.shape(loc), [d]], 0))
    tril = tf.gather(tril, image_of)  # (rows, d, d)
    # eps L^T: one (block, d) x (d, d) product per row, not one matrix-vector product per draw.
    z = tf.gather(loc, image_of)[:, None, :] + tf.matmul(eps, tril, transpose_b=True)
    log_det = tf.reduce_sum(tf.math.log(tf.abs(tf.linalg.diag_part(tril))), axis=-1)
    log_q = -0.5 * tf.reduce_sum(tf.square(eps), axis=-1) - (0.5 * d * math.log(2 * math.pi)) - log_det[:, None]
    return z, log_q


def _draw_sliced(q: tfd.Distribution, image_of: tf.Tensor, seeds: tf.Tensor, block: int):
    """Row r: `block` draws of q[image_of[r]] with seeds[r], (rows, block, d), and their log q.

    Any distribution that slices; one sliced distribution per row.
    """

    def draw(args):
        i, row_seed = args
        zi, lqi = q[i : i + 1].experimental_sample_and_log_prob(block, seed=row_seed)
        return zi[:, 0], lqi[:, 0]

    return tf.map_fn(draw, (image_of, seeds), fn_output_signature=(q.dtype, q.dtype))


def _draw(q: tfd.Distribution, ids: tf.Tensor, seed: tf.Tensor, first: tf.Tensor, plan: ScoringPlan):
    """Samples [first, first + plan.samples) of every image: z (b, samples, d), log q (b, samples)."""
    b = tf.shape(ids)[0]
    first_block = first // plan.block
    block_index = first_block + tf.range(plan.blocks)
    seeds = seeds_from_keys(_keys(ids[:, None], "z", seed, block_index[None, :]))  # (b, blocks, 2)
    seeds = tf.reshape(seeds, [b * plan.blocks, 2])
    image_of = tf.range(b * plan.blocks) // plan.blocks

    # Each image's own seed, so the draws depend on neither the batch nor the chunking.
    # log q comes with the draw (from the standard-normal noise), not by solving the
    # scale_tril system again, which loses all precision for ill-conditioned q.
    draw = _draw_tril if type(q) is tfd.MultivariateNormalTriL else _draw_sliced
    z, lq = draw(q, image_of, seeds, plan.block)
    d = z.shape[-1]
    offset = first - first_block * plan.block
    z = tf.slice(tf.reshape(z, [b, plan.blocks * plan.block, d]), [0, offset, 0], [b, plan.samples, d])
    lq = tf.slice(tf.reshape(lq, [b, plan.blocks * plan.block]), [0, offset], [b, plan.samples])
    return z, lq


def _moments(encode, decode, prior_fn, x, ids, seed, plan: ScoringPlan, pixels: bool) -> dict[str, tf.Tensor]:
    """Per-image float64 sums over the k draws (streaming log-sum-exp relative to a running max)."""
    b = tf.shape(x)[0]
    q = unwrap(encode(x))
    prior = prior_fn()  # once per call: a VampPrior encodes its pseudo-images on each read
    zeros = tf.zeros([b], tf.float64)
    state = {
        "max": tf.fill([b], tf.constant(-math.inf, tf.float64)),
        "sum_w": zeros,
        "sum_w2": zeros,
        "sum_lw": zeros,
        "sum_lw2": zeros,
        "sum_lpx": zeros,
        "sum_lpz": zeros,
        "sum_lqz": zeros,
    }
    if pixels:
        state["pixels"] = tf.zeros(tf.shape(x), tf.float64)

    def step(t, state):
        first = t * plan.samples
        z, lq = _draw(q, ids, seed, first, plan)
        valid = (first + tf.range(plan.samples) < plan.num_samples)[None, :]  # (1, samples)
        if pixels:
            px = unwrap(decode(tf.reshape(z, [b * plan.samples, z.shape[-1]])))
            if not isinstance(px, tfd.Independent):
                raise TypeError(
                    "pixel_log_prob needs a decoder distribution that factorises over pixels, a "
                    f"tfd.Independent such as Independent(Bernoulli); got {type(px).__name__}."
                )
            per_pixel = px.distribution.log_prob(tf.repeat(tf.cast(_pixels_for(px, x), px.dtype), plan.samples, 0))
            per_pixel = tf.reshape(tf.cast(per_pixel, tf.float64), [b, plan.samples, *x.shape[1:]])
            mask = tf.reshape(valid, [1, plan.samples] + [1] * (len(x.shape) - 1))
            new = dict(state, pixels=state["pixels"] + tf.reduce_sum(tf.where(mask, per_pixel, 0.0), axis=1))
            lpx = tf.reduce_sum(per_pixel, axis=list(range(2, len(x.shape) + 1)))
            lpz, lqz = prior.log_prob(z), lq
        else:
            new = dict(state)
            lpx, lpz, lqz = log_weight_terms(x, z, lq, decode, prior)
        lpx, lpz, lqz = (tf.cast(v, tf.float64) for v in (lpx, lpz, lqz))
        lw = lpx + lpz - lqz
        masked = tf.where(valid, lw, -math.inf)
        top = tf.maximum(state["max"], tf.reduce_max(masked, axis=1))
        # All weights zero so far (max -inf): shift by 0 so that no inf - inf appears.
        shift = tf.where(tf.math.is_finite(top), top, 0.0)
        scale = tf.exp(state["max"] - shift)
        rel = tf.exp(masked - shift[:, None])
        new["max"] = top
        new["sum_w"] = state["sum_w"] * scale + tf.reduce_sum(rel, axis=1)
        new["sum_w2"] = state["sum_w2"] * scale**2 + tf.reduce_sum(rel**2, axis=1)
        for key, value in (("sum_lw", lw), ("sum_lw2", lw**2), ("sum_lpx", lpx), ("sum_lpz", lpz), ("sum_lqz", lqz)):
            new[key] = state[key] + tf.reduce_sum(tf.where(valid, value, 0.0), axis=1)
        return new

    if plan.steps == 1:
        state = step(tf.constant(0), state)
    else:
        _, state = tf.while_loop(lambda t, s: t < plan.steps, lambda t, s: (t + 1, step(t, s)), (tf.constant(0), state))
    try:
        state["kl"] = tf.cast(tfd.kl_divergence(q, prior), tf.float64)
    except NotImplementedError:
        pass  # no closed form (e.g. a mixture prior): the rate is estimated from the draws
    return state


def _finish(s: dict[str, tf.Tensor], k: int, outputs: frozenset) -> dict[str, tf.Tensor]:
    """Scores from the per-image sums of `_moments`."""
    out = {}
    nan = tf.fill(tf.shape(s["max"]), tf.constant(math.nan, tf.float64))
    log_prob = tf.where(
        tf.math.is_finite(s["max"]), s["max"] + tf.math.log(s["sum_w"]) - math.log(k), s["max"]
    )  # max = -inf: every weight zero
    out["log_prob"] = log_prob
    if k > 1:
        mean = s["sum_w"] / k  # >= 1 / k: the largest weight is exp(0)
        var = tf.maximum(s["sum_w2"] - s["sum_w"] ** 2 / k, 0.0) / (k - 1)
        out["log_prob_stderr"] = tf.sqrt(var) / (math.sqrt(k) * mean)
        var_lw = tf.maximum(s["sum_lw2"] - s["sum_lw"] ** 2 / k, 0.0) / (k - 1)
        out["elbo_stderr"] = tf.sqrt(var_lw / k)
    else:
        out["log_prob_stderr"] = out["elbo_stderr"] = nan
    out["elbo"] = s["sum_lw"] / k
    out["rate_mc"] = (s["sum_lqz"] - s["sum_lpz"]) / k
    out["rate"] = s.get("kl", out["rate_mc"])
    out["distortion"] = -s["sum_lpx"] / k
    if "pixels" in s:
        out["pixels"] = s["pixels"] / k
    return {key: value for key, value in out.items() if key in outputs}


def score_images(
    encode: Callable[[tf.Tensor], Any],
    decode: Callable[[tf.Tensor], Any],
    prior: Callable[[], tfd.Distribution],
    x: tf.Tensor,
    ids: tf.Tensor,
    seed: tf.Tensor,
    binarize_seed: tf.Tensor,
    *,
    plan: ScoringPlan,
    outputs: tuple[str, ...] = ("log_prob", "elbo", "rate", "distortion"),
    typical_nll: float | None = None,
    analytic_kl: bool = True,
    complexity_template: tuple[tuple[int, int], ...] = CONTEXT_TEMPLATE,
) -> dict[str, tf.Tensor]:
    """Every requested per-image score of a batch, as TensorFlow ops (call inside a `tf.function`).

    Args:
      encode: images (b, H, W, C) -> q(z|x), batch shape (b,), event shape (d,).
      decode: codes (m, d) -> p(x|z), batch shape (m,), event shape (H, W, C).
      prior: a callable returning p(z), read once per call.
      x: float32 (b, H, W, C) in [0, 1].
      ids: string (b,), each image's stable id.
      seed: int32 scalar, the Monte Carlo seed.
      binarize_seed: int32 scalar; >= 0 scores the fixed binarisation keyed by (id,
        binarize_seed) instead of x; negative scores x as it is.
      plan: how the k = plan.num_samples draws per image are cut into steps.
      outputs: names from `OUTPUTS`.
      typical_nll: mean -log p(x) of normal data, needed by "typicality".
      analytic_kl: "rate" in closed form where TFP has one.
      complexity_template: the context model's template for "complexity".

    Returns:
      dict name -> float64 tensor (b,) (or (b, H, W, C) for "pixels").
    """
    outputs = frozenset(outputs)
    unknown = outputs - set(OUTPUTS)
    if unknown:
        raise ValueError(f"`outputs` must be names from {OUTPUTS}; got {sorted(unknown)}.")
    if "typicality" in outputs and typical_nll is None:
        raise ValueError("The 'typicality' score needs `typical_nll`, the mean -log p(x) of held-out normal images.")
    k = plan.num_samples
    x = tf.cond(binarize_seed >= 0, lambda: binarize_images(x, ids, binarize_seed), lambda: x)
    moments = _moments(encode, decode, prior, x, ids, seed, plan, pixels="pixels" in outputs)
    wanted = outputs | {"log_prob"}
    if not analytic_kl:
        wanted |= {"rate_mc"}
    out = _finish(moments, k, wanted)
    if not analytic_kl and "rate" in outputs:
        out["rate"] = out["rate_mc"]
    if "typicality" in outputs:
        out["typicality"] = -tf.abs(-out["log_prob"] - typical_nll)
    if "complexity" in outputs:
        # L(x) is the code length of one binary image, so the likelihood must be of that
        # same image: a grey image is scored as a fixed binarisation keyed by its id.
        binary = tf.reduce_all(tf.equal(x, tf.round(x)), axis=[1, 2, 3])
        xb = tf.where(binary[:, None, None, None], x, binarize_images(x, ids, seed))

        def rescore():
            again = _moments(encode, decode, prior, xb, ids, seed, plan, pixels=False)
            return _finish(again, k, frozenset({"log_prob"}))["log_prob"]

        log_pb = tf.cond(tf.reduce_all(binary), lambda: out["log_prob"], rescore)
        out["complexity"] = log_pb / _LN2 + context_code_length_graph(xb, complexity_template)
    return {name: out[name] for name in outputs}
