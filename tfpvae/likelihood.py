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
* `scores`: any of these (and the anomaly scores of `tfpvae.scoring`) from one pass.

All of them are computed by `tfpvae.scoring.score_images`, the one scoring core that the
exported SavedModel and the Beam pipeline run as well.

Grey-level images: a Bernoulli decoder's log p(x|z) at grey x in [0, 1] is
sum x log p + (1 - x) log(1 - p), minus the cross-entropy with grey targets. It is linear
in x, so it equals E_b[log p(b|z)] for binary images b ~ Bernoulli(x) under the same z:
the expected log-likelihood of a random binarisation, not the probability of any image.
This needs a float-dtype Bernoulli (as `tfp.layers.IndependentBernoulli` builds): TFP's
default int32 Bernoulli casts grey values to 0, so such decoders are refused grey input.
For the usual binarised-MNIST numbers, pass `binarize_seed` to score one fixed
binarisation (or call `binarize` first).

Batching and memory: every (image, sample) pair of a call goes through the decoder as
one batch; a call holds at most `max_batch_elements` pairs (by default 4096 for an MLP
decoder, a few tens of MB, and 1024 for a conv decoder, a few hundred MB at 28x28). When
k fits, a call holds several images with all their samples; when it does not, one image's
samples are split over steps inside the graph and combined with a streaming log-sum-exp
(float64 sums of w and w^2 relative to a running max), so peak memory does not grow with
n or k. Each call has a fixed shape (the last is padded), so the `tf.function` that
computes it is traced once per call shape.

Seeds and ids: each image's draws come from stateless seeds keyed by (its id, `seed`,
block of 64 samples), and `binarize_seed` draws its binarisation keyed by (id,
binarize_seed). Ids default to the row index in `x` plus `index_offset` ("0", "1", ...);
pass `ids` (file paths, `path:record`) to key draws by something stable across files. The
same image, id and seed give the same score in any batch, chunk, order or process, and the
same z in `elbo`, `log_prob`, `rate_distortion` and `pixel_log_prob` (so, for example,
rate + distortion = -ELBO exactly when `analytic_kl=False`, and log_prob >= elbo image by
image).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tfpvae._keras import tf, tfd, tfk, unwrap
from tfpvae._validation import check_bool, check_float, check_images, check_int, check_seed, check_shape
from tfpvae.scoring import OUTPUTS, ScoringPlan, binarize_images, score_images

__all__ = ["LikelihoodEstimator", "binarize", "check_ids", "nats_to_bits_per_dim"]

# Default (image, sample) pairs decoded per call: 28x28 conv decoders need ~250 KB per
# pair, and their CPU throughput barely improves past this size (4096 pairs: +4% for the
# TFP example's decoder, 2026-12-02).
DEFAULT_MAX_BATCH_ELEMENTS = 1024
# An MLP decoder needs a few KB per pair and scores ~28% more images/s with 4096 pairs per
# call than with 1024 (default model, k=64, 2 cores, 4 interleaved rounds; 2026-12-02).
MLP_MAX_BATCH_ELEMENTS = 4096
# With progress=None, a bar appears only for jobs of more calls than this, on a terminal.
_PROGRESS_MIN_CHUNKS = 16
# What an integer-dtype decoder distribution says when it meets grey pixels.
_GREY_INTEGER_DECODER = (
    "`x` has grey values but the decoder's distribution has an integer dtype, which would truncate them to 0; "
    "pass binarize_seed=..., or build the decoder with a float dtype (e.g. tfd.Bernoulli(logits, "
    "dtype=tf.float32), as tfp.layers.IndependentBernoulli does)."
)


def _on_terminal() -> bool:
    """Whether standard output (where Keras draws progress bars) is read by a person: a terminal
    or a Jupyter kernel (whose stdout says it is not a tty), not a file or pipe."""
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


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
      seed: int in [0, 2^31 - 1] for a reproducible draw. Default None (a fresh draw each call).
      index_offset: with the default ids, the position of x[0] in a larger set: image i
        gets id str(index_offset + i), and so the draw it gets when the whole set is
        binarised in one call. Default 0.
      ids: one id per image (str or int); an image's draw depends only on its id and the
        seed. Default None (row indices from `index_offset`).

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
    uint8 0..255, and the keywords `seed`, `ids`, `binarize_seed`, `max_batch_elements`
    and `progress`. The same image, id and seed give the same posterior draws in every
    method, in any batch.

    Examples:
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
        prior = unwrap(prior)
        if not isinstance(prior, tfd.Distribution) and not callable(prior):
            kind = type(prior).__name__
            raise TypeError(f"`prior` must be a tfd.Distribution or a callable returning one; got {kind}.")
        self._encode = encode
        self._decode = decode
        self._prior = prior
        self.image_shape = None if image_shape is None else check_shape(image_shape, "image_shape")
        self.max_batch_elements = check_int(max_batch_elements, "max_batch_elements")
        self.defines_likelihood = check_bool(defines_likelihood, "defines_likelihood")
        # One tf.function per estimator: it traces once per chunk shape and settings, and is reused.
        self._call_fn = tf.function(self._call)

    @property
    def prior(self) -> tfd.Distribution:
        """p(z) as it is now (a callable prior is called afresh)."""
        if isinstance(self._prior, tfd.Distribution):
            return self._prior
        prior = unwrap(self._prior())
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
    def _call(self, x, ids, seed, binarize_seed, typical_nll, *, plan, outputs, analytic_kl):
        """One call of the scoring core on a fixed-shape chunk (traced once per shape and settings)."""
        return score_images(
            self._encode,
            self._decode,
            lambda: self.prior,
            x,
            ids,
            seed,
            binarize_seed,
            plan=plan,
            outputs=outputs,
            typical_nll=typical_nll,
            analytic_kl=analytic_kl,
        )

    def scores(
        self,
        x: Any,
        outputs: Sequence[str] = ("log_prob", "elbo", "rate", "distortion"),
        num_samples: int = 100,
        *,
        ids: Sequence[Any] | None = None,
        seed: int | None = None,
        index_offset: int = 0,
        binarize_seed: int | None = None,
        typical_nll: float | None = None,
        analytic_kl: bool = True,
        max_batch_elements: int | None = None,
        progress: bool | None = None,
    ) -> dict[str, np.ndarray]:
        """Several per-image scores from one set of k posterior draws (`tfpvae.scoring`).

        Args:
          x: images (n, H, W, C).
          outputs: names from `tfpvae.scoring.OUTPUTS`: "log_prob", "log_prob_stderr",
            "elbo", "elbo_stderr", "rate", "rate_mc", "distortion", "typicality",
            "complexity", "pixels". Default log_prob, elbo, rate, distortion.
          num_samples: draws k per image, >= 1. Default 100.
          ids: one id per image (str or int) that keys its draws. Default None: the row
            index plus `index_offset`.
          seed: int in [0, 2^31 - 1] for reproducible draws. Default None (a fresh seed).
          index_offset: with the default ids, the position of x[0] in a larger set. Default 0.
          binarize_seed: int >= 0 to score the fixed binarisation keyed by (id,
            binarize_seed) instead of `x`. Default None.
          typical_nll: mean -log p(x) of normal data, for "typicality". Default None.
          analytic_kl: "rate" in closed form where TFP has one. Default True.
          max_batch_elements: (image, sample) pairs per decoder call. Default None: the
            estimator's `max_batch_elements`.
          progress: show a progress bar. Default None: only for jobs of over 16 calls, on a terminal.

        Returns:
          dict name -> float64 array (n,) in nats ("complexity" in bits; "pixels" float32
          (n, H, W, C)).
        """
        outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        for name in outputs:
            if name not in OUTPUTS:
                raise ValueError(f"`outputs` must be names from {OUTPUTS}; got {name!r}.")
        if any(name not in ("distortion", "rate", "rate_mc", "pixels") for name in outputs):
            self.require_likelihood(next(n for n in outputs if n not in ("distortion", "rate", "rate_mc", "pixels")))
        x = check_images(x, "x", self.image_shape)
        k = check_int(num_samples, "num_samples")
        index_offset = check_int(index_offset, "index_offset", minimum=0)
        ids = check_ids(ids, len(x), index_offset)
        seed = check_seed(seed, "seed", maximum=2**31 - 1)
        binarize_seed = check_seed(binarize_seed, "binarize_seed", maximum=2**31 - 1)
        if typical_nll is not None:
            typical_nll = check_float(typical_nll, "typical_nll")
        elif "typicality" in outputs:
            raise ValueError(
                "The 'typicality' score needs `typical_nll`, the mean -log p(x) of held-out normal images "
                "(AnomalyDetector(score='typicality').fit computes it as `typical_nll_`)."
            )
        check_bool(analytic_kl, "analytic_kl")
        budget = self.max_batch_elements
        if max_batch_elements is not None:
            budget = check_int(max_batch_elements, "max_batch_elements")
        progress = check_bool(progress, "progress", allow_none=True)
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31))
        n = len(x)
        plan = ScoringPlan.make(k, budget, n)
        calls = -(-n // plan.images)
        show = progress if progress is not None else calls * plan.steps > _PROGRESS_MIN_CHUNKS and _on_terminal()
        bar = tfk.utils.Progbar(n, unit_name="image") if show else None
        padded = np.zeros((plan.images, *x.shape[1:]), np.float32)
        static = dict(plan=plan, outputs=tuple(sorted(set(outputs))), analytic_kl=analytic_kl)
        scalars = (
            tf.constant(seed, tf.int32),
            tf.constant(-1 if binarize_seed is None else binarize_seed, tf.int32),
            tf.constant(math.nan if typical_nll is None else typical_nll, tf.float64),
        )
        parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
        for i0 in range(0, n, plan.images):
            i1 = min(i0 + plan.images, n)
            chunk_ids = np.full(plan.images, "pad", dtype=object)
            chunk_ids[: i1 - i0] = ids[i0:i1]
            if i1 - i0 == plan.images:
                chunk = x[i0:i1]
            else:  # the last, short chunk: pad to the traced shape, drop the padding after
                padded[: i1 - i0] = x[i0:i1]
                padded[i1 - i0 :] = 0.0
                chunk = padded
            try:
                out = self._call_fn(tf.constant(chunk), tf.constant(chunk_ids.astype(str)), *scalars, **static)
            except tf.errors.InvalidArgumentError as err:
                if "integer dtype" in str(err):
                    raise ValueError(_GREY_INTEGER_DECODER) from None
                raise
            for name in outputs:
                parts[name].append(out[name].numpy()[: i1 - i0])
            if bar is not None:
                bar.update(i1)
        result = {name: np.concatenate(values) for name, values in parts.items()}
        if "pixels" in result:
            result["pixels"] = result["pixels"].astype(np.float32)
        return result

    # ------------------------------------------------------------------ estimates
    def elbo(
        self,
        x: Any,
        num_samples: int = 1,
        *,
        return_stderr: bool = False,
        seed: int | None = None,
        ids: Sequence[Any] | None = None,
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
          ids: one id per image that keys its draws. Default None (row indices).
          index_offset: with the default ids, the position of x[0] in a larger set. Default 0.
          binarize_seed: int >= 0 to score `binarize(x, binarize_seed)` instead of `x`.
            Default None.
          max_batch_elements: (image, sample) pairs per decoder call. Default None: the
            estimator's `max_batch_elements`.
          progress: show a progress bar. Default None: only for jobs of over 16 calls, on a terminal.

        Returns:
          float64 array (n,) in nats; with `return_stderr`, the pair (elbo, stderr).
        """
        self.require_likelihood("elbo")
        check_bool(return_stderr, "return_stderr")
        out = self.scores(
            x,
            ("elbo", "elbo_stderr") if return_stderr else ("elbo",),
            num_samples,
            ids=ids,
            seed=seed,
            index_offset=index_offset,
            binarize_seed=binarize_seed,
            max_batch_elements=max_batch_elements,
            progress=progress,
        )
        return (out["elbo"], out["elbo_stderr"]) if return_stderr else out["elbo"]

    def log_prob(
        self,
        x: Any,
        num_samples: int = 100,
        *,
        return_stderr: bool = False,
        seed: int | None = None,
        ids: Sequence[Any] | None = None,
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
          ids: one id per image that keys its draws. Default None (row indices).
          index_offset: with the default ids, the position of x[0] in a larger set. Default 0.
          binarize_seed: int >= 0 to score `binarize(x, binarize_seed)` instead of `x`.
            Default None.
          max_batch_elements: (image, sample) pairs per decoder call. Default None: the
            estimator's `max_batch_elements`.
          progress: show a progress bar. Default None: only for jobs of over 16 calls, on a terminal.

        Returns:
          float64 array (n,) in nats; with `return_stderr`, the pair (log_prob, stderr).
        """
        self.require_likelihood("log_prob")
        check_bool(return_stderr, "return_stderr")
        out = self.scores(
            x,
            ("log_prob", "log_prob_stderr") if return_stderr else ("log_prob",),
            num_samples,
            ids=ids,
            seed=seed,
            index_offset=index_offset,
            binarize_seed=binarize_seed,
            max_batch_elements=max_batch_elements,
            progress=progress,
        )
        return (out["log_prob"], out["log_prob_stderr"]) if return_stderr else out["log_prob"]

    def bits_per_dim(
        self,
        x: Any,
        num_samples: int = 100,
        *,
        return_stderr: bool = False,
        seed: int | None = None,
        ids: Sequence[Any] | None = None,
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
            ids=ids,
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
        ids: Sequence[Any] | None = None,
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
          ids: one id per image that keys its draws. Default None (row indices).
          index_offset: with the default ids, the position of x[0] in a larger set. Default 0.
          binarize_seed: int >= 0 to score `binarize(x, binarize_seed)` instead of `x`.
            Default None.
          max_batch_elements: (image, sample) pairs per decoder call. Default None: the
            estimator's `max_batch_elements`.
          progress: show a progress bar. Default None: only for jobs of over 16 calls, on a terminal.

        Returns:
          dict with float64 arrays (n,) "rate" and "distortion", in nats.
        """
        out = self.scores(
            x,
            ("rate", "distortion"),
            num_samples,
            ids=ids,
            seed=seed,
            index_offset=index_offset,
            binarize_seed=binarize_seed,
            analytic_kl=analytic_kl,
            max_batch_elements=max_batch_elements,
            progress=progress,
        )
        return {"rate": out["rate"], "distortion": out["distortion"]}

    def pixel_log_prob(
        self,
        x: Any,
        num_samples: int = 16,
        *,
        seed: int | None = None,
        ids: Sequence[Any] | None = None,
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
          ids: one id per image that keys its draws. Default None (row indices).
          index_offset: with the default ids, the position of x[0] in a larger set. Default 0.
          binarize_seed: int >= 0 to score `binarize(x, binarize_seed)` instead of `x`.
            Default None.
          max_batch_elements: (image, sample) pairs per decoder call. Default None: the
            estimator's `max_batch_elements`.
          progress: show a progress bar. Default None: only for jobs of over 16 calls, on a terminal.

        Returns:
          float32 array (n, H, W, C) in nats (<= 0 for Bernoulli decoders).
        """
        return self.scores(
            x,
            ("pixels",),
            num_samples,
            ids=ids,
            seed=seed,
            index_offset=index_offset,
            binarize_seed=binarize_seed,
            max_batch_elements=max_batch_elements,
            progress=progress,
        )["pixels"]
