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
one batch; a call holds at most `max_batch_elements` pairs (by default 16384 for an MLP
decoder, about 240 MB at 28x28, and 1024 for a conv decoder, a few hundred MB; see
`default_batch_elements` and the "Scoring chunk size" section of the benchmarks page). When
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
from typing import Any, NamedTuple

import numpy as np

from tfpvae._keras import tf, tfd, tfk, unwrap
from tfpvae._validation import check_bool, check_float, check_images, check_int, check_seed, check_shape
from tfpvae.precision import AUTO_TOLERANCE_NATS, networks_in, resolve_precision
from tfpvae.protocols import EncoderDecoderModel
from tfpvae.scoring import OUTPUTS, ScoringPlan, binarize, check_ids, score_images

__all__ = [
    "EncoderDecoderModel",
    "LikelihoodEstimator",
    "binarize",
    "check_ids",
    "default_batch_elements",
    "nats_to_bits_per_dim",
]

# Pairs per decoder call, larger for an MLP decoder; chosen by measurement: see docs/benchmarks.md#scoring-chunk-size
DEFAULT_MAX_BATCH_ELEMENTS = 1024
MLP_MAX_BATCH_ELEMENTS = 16384
# With progress=None, a bar appears only for jobs of more calls than this, on a terminal.
_PROGRESS_MIN_CHUNKS = 16
# Outputs that a model without a likelihood (a plain autoencoder) still defines.
_RECONSTRUCTION_OUTPUTS = ("distortion", "rate", "rate_mc", "pixels")
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


def _agrees(
    estimator: LikelihoodEstimator, reference: LikelihoodEstimator, model: Any, n: int = 16, k: int = 8
) -> bool:
    """Whether `estimator`'s log p(x) of n images the model generates is `reference`'s within tolerance.

    The images are binarised decoder means of prior draws, fixed by seed: typical of the
    model, so the check needs no data.
    """
    prior = unwrap(model.prior)
    images = unwrap(model.decoder(prior.sample(n, seed=(1, 2)), training=False)).mean()
    x = binarize(np.clip(images.numpy(), 0.0, 1.0), seed=0)
    difference = estimator.log_prob(x, k, seed=0) - reference.log_prob(x, k, seed=0)
    return bool(np.all(np.abs(difference) <= AUTO_TOLERANCE_NATS))


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


def default_batch_elements(model: object) -> int:
    """The default number of (image, sample) pairs per decoder call for `model`'s decoder.

    An MLP decoder's pairs take a few KB each and it scores faster in larger calls; a conv
    decoder's take about 250 KB each at 28x28 (measurements: the "Scoring chunk size" section
    of the benchmarks page). `LikelihoodEstimator.from_model` and the exported SavedModel
    (`tfpvae.export`) use this default.

    Args:
      model: any object; its `config.architecture` is read when it has one (as a
        `tfpvae.VAE` does).

    Returns:
      `MLP_MAX_BATCH_ELEMENTS` (16384) when `model.config.architecture` is "mlp", else
      `DEFAULT_MAX_BATCH_ELEMENTS` (1024).

    Examples:
      >>> default_batch_elements(tfpvae.VAE(architecture="mlp"))
      16384
    """
    architecture = getattr(getattr(model, "config", None), "architecture", None)
    return MLP_MAX_BATCH_ELEMENTS if architecture == "mlp" else DEFAULT_MAX_BATCH_ELEMENTS


class _Options(NamedTuple):
    """The keywords of a scoring method, as given (`LikelihoodEstimator._prepare` checks them)."""

    seed: Any
    ids: Any
    index_offset: Any
    binarize_seed: Any
    max_batch_elements: Any
    progress: Any
    typical_nll: Any = None
    analytic_kl: Any = True


class _Job(NamedTuple):
    """One validated scoring call: what `LikelihoodEstimator._run` needs."""

    x: np.ndarray  # float32 (n, H, W, C)
    ids: np.ndarray  # str (n,)
    outputs: tuple[str, ...]
    plan: ScoringPlan
    scalars: tuple[tf.Tensor, tf.Tensor, tf.Tensor]  # seed, binarize_seed (-1: none), typical_nll (NaN: none)
    analytic_kl: bool
    progress: bool


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
        None: any shape the decoder accepts.
      max_batch_elements: default number of (image, sample) pairs decoded per call; each
        method can override it. Default 1024.
      defines_likelihood: False for a model whose q(z|x) is a point mass (a plain
        autoencoder): `elbo`, `log_prob` and `bits_per_dim` then refuse, since
        log p(x|z) + log p(z) - log q(z|x) bounds nothing; `rate_distortion` and
        `pixel_log_prob` still give its reconstruction terms.

    All methods take images `x` of shape (n, H, W, C) (or (n, H, W)), float in [0, 1] or
    uint8 0..255, and the keywords `seed`, `ids`, `index_offset`, `binarize_seed`,
    `max_batch_elements` and `progress` (see `scores`). The same image, id and seed give
    the same posterior draws in every method, in any batch.

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
        # What the networks compute in: `from_model` sets it; callables given here are as they are.
        self.precision = "float32"
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

    def decode(self, z: Any) -> tfd.Distribution:
        """p(x|z) for codes z (m, d): the decoder's distribution, batch shape (m,)."""
        return unwrap(self._decode(tf.convert_to_tensor(z, tf.float32)))

    @classmethod
    def from_model(
        cls, model: EncoderDecoderModel, *, max_batch_elements: int | None = None, precision: str = "float32"
    ) -> LikelihoodEstimator:
        """Builds an estimator for a `tfpvae.VAE` (encoder and decoder in inference mode).

        Each estimator traces its own `tf.function`, so keep one per model and reuse it
        rather than building one per call (`VAE.estimator(precision)` keeps one per precision).

        Args:
          model: a `tfpvae.VAE`, or any object with the `encoder`, `decoder`, `prior` and
            `image_shape` that `EncoderDecoderModel` describes (and optionally its `config`).
          max_batch_elements: default (image, sample) pairs per decoder call. None:
            `default_batch_elements(model)`, 16384 for a model with architecture "mlp", else 1024.
          precision: "float32", "bfloat16" (the networks' matrix products in
            bfloat16; heads, log-probabilities and sums in float32: see `tfpvae.precision`)
            or "auto" (bfloat16 on hardware with native bfloat16 units, unless the model's
            bfloat16 log p(x) of 16 of its own samples differs from float32's by more than
            `AUTO_TOLERANCE_NATS`). The estimator's `precision` says which was used.
        """
        missing = [a for a in ("encoder", "decoder", "prior", "image_shape") if not hasattr(model, a)]
        if missing:
            raise TypeError(f"`model` must be a tfpvae.VAE; {type(model).__name__} has no {', '.join(missing)}.")
        resolved = resolve_precision(precision)
        encoder, decoder = networks_in(resolved, model.encoder, model.decoder)
        estimator = cls(
            lambda x: encoder(x, training=False),
            lambda z: decoder(z, training=False),
            lambda: model.prior,  # read per call: a VampPrior moves with the encoder's weights
            image_shape=model.image_shape,
            max_batch_elements=default_batch_elements(model) if max_batch_elements is None else max_batch_elements,
            defines_likelihood=getattr(getattr(model, "config", None), "model_type", "vae") != "ae",
        )
        estimator.precision = resolved
        if precision == "auto" and resolved == "bfloat16" and estimator.defines_likelihood:
            reference = cls.from_model(model, max_batch_elements=max_batch_elements)
            if not _agrees(estimator, reference, model):
                return reference
        return estimator

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

    def _prepare(self, x: Any, outputs: Any, num_samples: Any, options: _Options) -> _Job:
        """Checks the arguments of one scoring call, as every public method documents them."""
        outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        for name in outputs:
            if name not in OUTPUTS:
                raise ValueError(f"`outputs` must be names from {OUTPUTS}; got {name!r}.")
        outputs = tuple(dict.fromkeys(outputs))  # each name once
        needs_likelihood = [name for name in outputs if name not in _RECONSTRUCTION_OUTPUTS]
        if needs_likelihood:
            self.require_likelihood(needs_likelihood[0])
        x = check_images(x, "x", self.image_shape)
        k = check_int(num_samples, "num_samples")
        ids = check_ids(options.ids, len(x), check_int(options.index_offset, "index_offset", minimum=0))
        seed = check_seed(options.seed, "seed", maximum=2**31 - 1)
        binarize_seed = check_seed(options.binarize_seed, "binarize_seed", maximum=2**31 - 1)
        typical_nll = options.typical_nll
        if typical_nll is not None:
            typical_nll = check_float(typical_nll, "typical_nll")
        elif "typicality" in outputs:
            raise ValueError(
                "The 'typicality' score needs `typical_nll`, the mean -log p(x) of held-out normal images "
                "(AnomalyDetector(score='typicality').fit computes it as `typical_nll_`)."
            )
        analytic_kl = check_bool(options.analytic_kl, "analytic_kl")
        budget = self.max_batch_elements
        if options.max_batch_elements is not None:
            budget = check_int(options.max_batch_elements, "max_batch_elements")
        progress = check_bool(options.progress, "progress", allow_none=True)
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31))
        plan = ScoringPlan.make(k, budget, len(x))
        if progress is None:
            calls = -(-len(x) // plan.images)
            progress = calls * plan.steps > _PROGRESS_MIN_CHUNKS and _on_terminal()
        scalars = (
            tf.constant(seed, tf.int32),
            tf.constant(-1 if binarize_seed is None else binarize_seed, tf.int32),
            tf.constant(math.nan if typical_nll is None else typical_nll, tf.float64),
        )
        return _Job(x, ids, outputs, plan, scalars, analytic_kl, progress)

    def _run(self, job: _Job) -> dict[str, np.ndarray]:
        """Scores `job`'s images in calls of `job.plan.images` (the last one padded), in order."""
        n, size = len(job.x), job.plan.images
        bar = tfk.utils.Progbar(n, unit_name="image") if job.progress else None
        padded = np.zeros((size, *job.x.shape[1:]), np.float32)
        static = dict(plan=job.plan, outputs=tuple(sorted(job.outputs)), analytic_kl=job.analytic_kl)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in job.outputs}
        for i0 in range(0, n, size):
            i1 = min(i0 + size, n)
            chunk_ids = np.full(size, "pad", dtype=object)
            chunk_ids[: i1 - i0] = job.ids[i0:i1]
            if i1 - i0 == size:
                chunk = job.x[i0:i1]
            else:  # the last, short chunk: pad to the traced shape, drop the padding after
                padded[: i1 - i0] = job.x[i0:i1]
                padded[i1 - i0 :] = 0.0
                chunk = padded
            try:
                out = self._call_fn(tf.constant(chunk), tf.constant(chunk_ids.astype(str)), *job.scalars, **static)
            except tf.errors.InvalidArgumentError as err:
                if "integer dtype" in str(err):
                    raise ValueError(_GREY_INTEGER_DECODER) from None
                raise
            for name in job.outputs:
                parts[name].append(out[name].numpy()[: i1 - i0])
            if bar is not None:
                bar.update(i1)
        result = {name: np.concatenate(values) for name, values in parts.items()}
        if "pixels" in result:
            result["pixels"] = result["pixels"].astype(np.float32)
        return result

    def _estimate(
        self, name: str, x: Any, num_samples: Any, return_stderr: Any, options: _Options, per_dim: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """`name` ("elbo" or "log_prob") per image, and its standard error with `return_stderr`.

        With `per_dim`, -log_prob (and its error) in bits per dimension instead of nats.
        """
        self.require_likelihood("bits_per_dim" if per_dim else name)
        check_bool(return_stderr, "return_stderr")
        job = self._prepare(x, (name, f"{name}_stderr") if return_stderr else (name,), num_samples, options)
        values = tuple(self._run(job).values())
        if per_dim:
            num_dims = int(np.prod(job.x.shape[1:]))
            values = tuple(nats_to_bits_per_dim(v, num_dims) for v in (-values[0], *values[1:]))
        return values if return_stderr else values[0]

    # ------------------------------------------------------------------ public scores
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
            "complexity", "pixels".
          num_samples: draws k per image, >= 1.
          ids: one id per image (str or int) that keys its draws. None: the row
            index plus `index_offset`.
          seed: int in [0, 2^31 - 1] for reproducible draws, the same z in every method.
            None: a fresh seed.
          index_offset: with the default ids, the position of x[0] in a larger set.
          binarize_seed: int >= 0 to score the fixed binarisation keyed by (id,
            binarize_seed) instead of `x`.
          typical_nll: mean -log p(x) of normal data, for "typicality".
          analytic_kl: "rate" in closed form where TFP has one.
          max_batch_elements: (image, sample) pairs per decoder call. None: the
            estimator's `max_batch_elements`.
          progress: show a progress bar. None: only for jobs of over 16 calls, on a terminal.

        Returns:
          dict name -> float64 array (n,) in nats ("complexity" in bits; "pixels" float32
          (n, H, W, C)), one entry per name in `outputs`.
        """
        options = _Options(
            seed, ids, index_offset, binarize_seed, max_batch_elements, progress, typical_nll, analytic_kl
        )
        return self._run(self._prepare(x, outputs, num_samples, options))

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

        For images `x` (n, H, W, C) and k = `num_samples` >= 1 draws each (default 1). With
        `return_stderr` (default False) also the Monte Carlo standard error of each estimate,
        sd / sqrt(k) (NaN for k = 1). `seed`, `ids`, `index_offset`, `binarize_seed`,
        `max_batch_elements` and `progress` are those of `scores`, with the same defaults.

        Returns:
          float64 array (n,) in nats; with `return_stderr`, the pair (elbo, stderr).
        """
        options = _Options(seed, ids, index_offset, binarize_seed, max_batch_elements, progress)
        return self._estimate("elbo", x, num_samples, return_stderr, options)

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
        posterior). For images `x` (n, H, W, C) and k = `num_samples` >= 1 importance
        samples each (default 100; 1000 or more for reported test likelihoods).

        With `return_stderr` (default False) also the delta-method standard error of each
        estimate, sd(w) / (sqrt(k) * mean(w)) with the weights' sample sd (NaN for k = 1). It
        measures the spread, not the bias, which is of order sd(w)^2 / (2 k mean(w)^2).
        `seed`, `ids`, `index_offset`, `binarize_seed`, `max_batch_elements` and `progress`
        are those of `scores`, with the same defaults.

        Returns:
          float64 array (n,) in nats; with `return_stderr`, the pair (log_prob, stderr).
        """
        options = _Options(seed, ids, index_offset, binarize_seed, max_batch_elements, progress)
        return self._estimate("log_prob", x, num_samples, return_stderr, options)

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
        """-log_prob / (H * W * C * ln 2) per image; arguments (and their defaults) as in `log_prob`.

        Returns:
          float64 array (n,) in bits per dimension; with `return_stderr`, the pair
          (bits_per_dim, stderr in the same units).
        """
        options = _Options(seed, ids, index_offset, binarize_seed, max_batch_elements, progress)
        return self._estimate("log_prob", x, num_samples, return_stderr, options, per_dim=True)

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

        For images `x` (n, H, W, C) and k = `num_samples` >= 1 draws each for the Monte Carlo
        terms (default 1). With `analytic_kl` (default True) the rate is TFP's closed-form KL
        when one is registered for (q, prior), as for Gaussian priors; otherwise, or when
        False, it is the Monte Carlo mean of log q(z|x) - log p(z) over the same draws as the
        distortion. The other keywords are those of `scores`, with the same defaults.

        Returns:
          dict with float64 arrays (n,) "rate" and "distortion", in nats.
        """
        options = _Options(
            seed, ids, index_offset, binarize_seed, max_batch_elements, progress, analytic_kl=analytic_kl
        )
        return self._run(self._prepare(x, ("rate", "distortion"), num_samples, options))

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
        pixels it gives -distortion of `rate_distortion` with the same seed and k. For images
        `x` (n, H, W, C) and k = `num_samples` >= 1 draws each (default 16); the other
        keywords are those of `scores`, with the same defaults.

        Returns:
          float32 array (n, H, W, C) in nats (<= 0 for Bernoulli decoders).
        """
        options = _Options(seed, ids, index_offset, binarize_seed, max_batch_elements, progress)
        return self._run(self._prepare(x, ("pixels",), num_samples, options))["pixels"]
