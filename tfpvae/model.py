"""The VAE: a tf_keras.Model whose encoder, decoder and prior are TFP distributions.

q(z|x) is a `tfp.layers.MultivariateNormalTriL` whose activity regularizer is a
`tfp.layers.KLDivergenceRegularizer` against the prior; p(x|z) is a
`tfp.layers.IndependentBernoulli`. Training minimises -log p(x|z) + beta * KL with the KL
taken from the regularizer, counted once (see `KLOnceMultivariateNormalTriL`), or, with
`VAEConfig.train_samples` k > 1, the negative importance-weighted (IWAE) bound of k draws.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tfpvae._keras import losses_kept, tf, tfb, tfd, tfk, tfkl, tfp, tfpl, unwrap
from tfpvae._validation import check_choice, check_float, check_images, check_int
from tfpvae.config import PRECISIONS, REGISTERED, VAEConfig
from tfpvae.networks import build_body, seeded_initializer
from tfpvae.precision import networks_in, resolve_precision
from tfpvae.priors import build_prior, check_prior, sample_prior, uses_exact_kl
from tfpvae.scoring import log_weight_terms
from tfpvae.serialization import ModelFormatError, read_model_files, write_model_files

if TYPE_CHECKING:  # for the annotations only: the estimator is built on first use
    from tfpvae.likelihood import LikelihoodEstimator

# Codes decoded per call when turning many latents into images: bounds peak memory.
_DECODE_CHUNK = 1024
_NO_WEIGHTS = "the loss is the model's negative ELBO, every image weighted alike; per-image weights are not supported"


def posterior_from_params(params: tf.Tensor, event_size: int, scale_floor: float = 1e-5) -> tfd.Distribution:
    """q(z|x) from the encoder head's output: loc, then scale_tril with a floored softplus diagonal.

    Args:
      params: float tensor (..., event_size + event_size * (event_size + 1) / 2).
      event_size: latent dimension d.
      scale_floor: added to the softplus diagonal of scale_tril.

    Returns:
      `MultivariateNormalTriL` with batch shape params.shape[:-1] and event shape (d,).
    """
    fill = tfb.FillScaleTriL(diag_shift=np.array(scale_floor, params.dtype.as_numpy_dtype))
    return tfd.MultivariateNormalTriL(loc=params[..., :event_size], scale_tril=fill(params[..., event_size:]))


class KLOnceMultivariateNormalTriL(tfpl.MultivariateNormalTriL):
    """`tfp.layers.MultivariateNormalTriL` whose activity regularizer runs once per call.

    `DistributionLambda.__call__` hands Keras a (distribution, sample) pair, and Keras
    applies the activity regularizer to every flattened output, so a
    `KLDivergenceRegularizer` is added to `model.losses` twice
    ([tensorflow/probability#1215](https://github.com/tensorflow/probability/issues/1215)).
    Here it sees only the distribution.

    Args:
      event_size: latent dimension.
      scale_floor: added to the softplus diagonal of scale_tril, so no posterior standard
        deviation falls below it. 1e-5 is TFP's own value; raise it (e.g. 1e-3) if
        training diverges from collapsing posterior scales.
      **kwargs: passed to the Keras layer (name, activity_regularizer, ...).
    """

    def __init__(self, event_size: int, scale_floor: float = 1e-5, **kwargs: Any) -> None:
        def make_posterior(params):
            return posterior_from_params(params, event_size, scale_floor)

        # Skip MultivariateNormalTriL.__init__, whose only job is to fix the floor at 1e-5.
        tfpl.DistributionLambda.__init__(self, make_posterior, tfd.Distribution.sample, **kwargs)

    def _handle_activity_regularization(self, inputs, outputs):
        if isinstance(outputs, (tuple, list)):
            outputs = outputs[0]
        super()._handle_activity_regularization(inputs, outputs)


def _point_mass(loc):
    """q(z|x) of the plain autoencoder: all mass on the encoder's output."""
    return tfd.VectorDeterministic(loc)


def build_encoder(config: VAEConfig, prior: tfkl.Layer) -> tfk.Model:
    """Builds x -> q(z|x).

    Args:
      config: the model config.
      prior: the prior layer (`tfpvae.priors.build_prior`); its distribution is the KL
        regularizer's target. A prior with `attach_posterior` (the VampPrior) is given
        the encoder's images -> q(z|x) and checked once it has it.

    Returns:
      A Keras model mapping images (n, H, W, C) to a distribution with batch shape (n,)
      and event shape (latent_dim,): `MultivariateNormalTriL` for a VAE,
      `VectorDeterministic` for an autoencoder.
    """
    d = config.latent_dim
    body = build_body(config, "encoder")
    features = body(body.inputs[0])
    if config.model_type == "ae" and hasattr(prior, "attach_posterior"):
        # A mixture of q(z|u) (the VampPrior) needs a posterior density; a point mass has none.
        raise ValueError(f"Prior {config.prior!r} is made from the encoder's posteriors and needs model_type='vae'.")
    if config.model_type == "ae":
        loc = tfkl.Dense(d, kernel_initializer=seeded_initializer(config, 999), name="code")(features)
        q = tfpl.DistributionLambda(_point_mass, name="posterior")(loc)
    else:
        head = tfkl.Dense(
            tfpl.MultivariateNormalTriL.params_size(d),
            kernel_initializer=seeded_initializer(config, 999),
            name="posterior_params",
        )
        params = head(features)
        if hasattr(prior, "attach_posterior"):

            def pseudo_posterior(u):  # the VampPrior's q(z|u) of its pseudo-images u
                # Through these same layers in inference mode (no dropout), so the prior moves with
                # every encoder update; the losses of the batch's own pass stay as they were.
                with losses_kept(body):
                    return posterior_from_params(head(body(u, training=False)), d, config.posterior_scale_floor)

            prior.attach_posterior(pseudo_posterior)
            check_prior(prior, d, config.prior)
        # A callable target: the regularizer reads the prior afresh on every call, which
        # the VampPrior (rebuilt from the encoder's weights) needs.
        kl = tfpl.KLDivergenceRegularizer(lambda: prior.distribution, use_exact_kl=uses_exact_kl(prior))
        q = KLOnceMultivariateNormalTriL(
            d, scale_floor=config.posterior_scale_floor, activity_regularizer=kl, name="posterior"
        )(params)
    return tfk.Model(body.inputs, q, name="encoder")


def build_decoder(config: VAEConfig) -> tfk.Model:
    """Builds z -> p(x|z), an `IndependentBernoulli` with event shape input_shape."""
    body = build_body(config, "decoder")
    logits = body(body.inputs[0])
    px = tfpl.IndependentBernoulli(config.input_shape, tfd.Bernoulli.logits, name="likelihood")(logits)
    return tfk.Model(body.inputs, px, name="decoder")


class VAE(tfk.Model):
    """Variational autoencoder with TFP distribution layers (or a plain autoencoder).

    Args:
      config: a `VAEConfig`. None: `VAEConfig()` (28x28x1, latent 16, mlp, normal prior).
      **overrides: config fields to change, e.g. `VAE(latent_dim=2, prior="mixture")`.

    Attributes:
      config: the `VAEConfig` the model was built from.
      encoder: Keras model, images -> q(z|x) (`MultivariateNormalTriL`).
      decoder: Keras model, codes -> p(x|z) (`IndependentBernoulli`).
      prior: the prior p(z), a `tfd.Distribution` whose variables the model tracks.
      kl_weight: non-trainable variable holding beta; `tfpvae.schedules.KLWarmup` (or
        `tfpvae.train(..., kl_warmup_epochs=n)`) sets it per epoch for a KL warm-up.
      training_history: dict of per-epoch metric lists, accumulated over `fit` calls.

    Examples:
      >>> model = VAE(input_shape=(8, 8, 1), latent_dim=2)
      >>> model.compile()
      >>> model.sample(4).shape
      (4, 8, 8, 1)
    """

    def __init__(self, config: VAEConfig | None = None, **overrides: Any) -> None:
        super().__init__(name="vae")
        if config is not None and not isinstance(config, VAEConfig):
            raise TypeError(f"`config` must be a VAEConfig or None; got {type(config).__name__}.")
        config = (config or VAEConfig()).replace(**overrides)
        self.config = config
        self.prior_layer = build_prior(config)
        self.encoder = build_encoder(config, self.prior_layer)
        self.decoder = build_decoder(config)
        self.kl_weight = tf.Variable(config.beta, trainable=False, dtype=tf.float32, name="kl_weight")
        # Our own generator (not the global one) so a seed fixes the binarisation draws and
        # checkpoints can save and restore its state; it is not part of the saved weights.
        self.binarize_rng = (
            tf.random.Generator.from_seed(config.seed)
            if config.seed is not None
            else tf.random.Generator.from_non_deterministic_state()
        )
        # Set past Keras' attribute tracking, which would wrap the dict in trackable proxies.
        object.__setattr__(self, "_history", {})
        # Untracked by Keras so metric state stays out of `weights` (and saved files).
        trackers = {name: tfk.metrics.Mean(name=name) for name in ("loss", "nll", "kl", "elbo")}
        object.__setattr__(self, "_trackers", trackers)

    # ------------------------------------------------------------------ properties
    @property
    def prior(self) -> tfd.Distribution:
        """The prior p(z), event shape (latent_dim,)."""
        return self.prior_layer.distribution

    @property
    def training_history(self) -> dict[str, list[float]]:
        """Per-epoch metrics accumulated over every `fit` call (and restored by `load`)."""
        return self._history

    @training_history.setter
    def training_history(self, value: dict[str, list[float]]) -> None:
        object.__setattr__(self, "_history", {k: [float(x) for x in v] for k, v in value.items()})

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the images the model takes."""
        return self.config.input_shape

    @property
    def metrics(self):
        """The loss, nll, kl and elbo trackers, which Keras resets each epoch (`compile` takes no others)."""
        return list(self._trackers.values())

    # ------------------------------------------------------------------ training
    def call(self, inputs, training=None):
        """Returns p(x|z) with z ~ q(z|inputs); adds the KL to `self.losses` once."""
        q = self.encoder(inputs, training=training)
        return self.decoder(tf.convert_to_tensor(q), training=training)

    def _prepare_batch(self, data):
        x, _, weights = tfk.utils.unpack_x_y_sample_weight(data)  # labels are not used
        if weights is not None:  # fit and evaluate refuse them first; train_on_batch and such come here
            raise ValueError(f"`sample_weight` must be None: {_NO_WEIGHTS}.")
        if x.dtype == tf.uint8:
            return tf.cast(x, tf.float32) / 255.0
        return tf.cast(x, tf.float32)

    def _loss_terms(self, x, training: bool):
        """Returns (loss, nll, kl), scalars in nats per image, for a batch x (n, H, W, C).

        nll is the batch mean of -log p(x|z) over the posterior draws and kl the batch mean
        KL(q(z|x) || p(z)): the encoder regularizer's, or with k > 1 and a prior without a
        closed-form KL, the mean of log q(z|x) - log p(z) over the k draws. With
        `config.train_samples` k = 1 the loss is nll + beta * kl; with k > 1 it is the
        negative importance-weighted bound
        -mean_i [logsumexp_j log w_ij - log k], log w_ij = log p(x_i|z_ij) + beta * (log p(z_ij)
        - log q(z_ij|x_i)), z_i1..z_ik ~ q(z|x_i); beta is `kl_weight`.
        """
        k = self.config.train_samples
        encoder, decoder = self.__dict__.get("_compute_networks") or (self.encoder, self.decoder)  # see compile
        if k == 1:
            q = encoder(x, training=training)
            px = decoder(tf.convert_to_tensor(q), training=training)
            nll = -tf.reduce_mean(px.log_prob(x))
            kl = self._kl_from_regularizer()
            return nll + self.kl_weight * kl + self._penalty(), nll, kl
        # One encoder call (so the regularizer adds its KL once) and one decoder call over
        # all k * n codes, sample-major: row j * n + i holds draw j of image i.
        q = unwrap(encoder(x, training=training))
        # log q(z|x) from the draw itself, as the scoring core does: no triangular solve
        # against scale_tril, which is inaccurate for ill-conditioned posteriors.
        z, log_q = q.experimental_sample_and_log_prob(k)  # (k, n, d), (k, n)
        log_px, log_pz, log_q = log_weight_terms(
            x, tf.transpose(z, [1, 0, 2]), tf.transpose(log_q), lambda c: decoder(c, training=training), self.prior
        )  # (n, k) each
        log_w = log_px + self.kl_weight * (log_pz - log_q)
        bound = tf.reduce_logsumexp(log_w, axis=1) - tf.math.log(tf.cast(k, log_w.dtype))  # (n,)
        if uses_exact_kl(self.prior_layer):
            kl = self._kl_from_regularizer()
        else:
            # The KL is only reported here, and a Monte Carlo one can come from these k draws:
            # the regularizer's own single draw would be noisier and, left unread, its prior
            # log-density (for the VampPrior, an encoder pass over the pseudo-images) is pruned.
            kl = tf.reduce_mean(log_q - log_pz)
        return -tf.reduce_mean(bound) + self._penalty(), -tf.reduce_mean(log_px), kl

    def _kl_losses(self) -> list:
        # The KL regularizer's loss (mean over the batch) is the posterior layer's own; the
        # tests check it appears exactly once. An autoencoder's posterior has none.
        return self.encoder.get_layer("posterior").losses

    def _kl_from_regularizer(self):
        losses = self._kl_losses()
        return tf.add_n(losses) if losses else tf.zeros([])

    def _penalty(self):
        """The sum of the losses a user's layers add (weight regularizers, `add_loss`) in the
        encoder, decoder or prior: part of the loss, never of the KL or the ELBO."""
        kl = {id(loss) for loss in self._kl_losses()}
        others = [loss for loss in self.losses if id(loss) not in kl]
        return tf.add_n(others) if others else tf.zeros([])

    def _update_metrics(self, loss, nll, kl):
        for name, value in (("loss", loss), ("nll", nll), ("kl", kl), ("elbo", -(nll + kl))):
            self._trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    def train_step(self, data):
        x = self._prepare_batch(data)
        if self.config.binarize == "dynamic":
            # A fresh binarisation each step: the Bernoulli model then sees binary data
            # and cannot overfit to one fixed draw.
            x = tf.cast(self.binarize_rng.uniform(tf.shape(x)) < x, x.dtype)
        with tf.GradientTape() as tape:
            loss, nll, kl = self._loss_terms(x, training=True)
            # Under a distribution strategy each replica sees batch / replicas images and
            # the optimizer sums the replicas' gradients: scale so the update is that of
            # the mean over the global batch (each image's NLL and KL counted once).
            scaled = loss / tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, loss.dtype)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self._update_metrics(loss, nll, kl)

    def test_step(self, data):
        x = self._prepare_batch(data)
        return self._update_metrics(*self._loss_terms(x, training=False))

    def compile(self, optimizer: Any = None, precision: str = "float32", **kwargs: Any) -> None:
        """Configures training; without `optimizer`, Adam at `config.learning_rate`.

        Args:
          optimizer: any tf_keras optimizer (instance or name). None: Adam.
          precision: the arithmetic of the training and validation steps: "float32",
            "bfloat16" (the networks' matrix products, forward and backward, in
            bfloat16; weights, optimizer, heads and loss in float32: see `tfpvae.precision`)
            or "auto" (bfloat16 where the hardware has native bfloat16 units).
            `training_precision` says which was used; scoring has its own (`estimator`).
          **kwargs: passed to `tf_keras.Model.compile` (e.g. `jit_compile`). A `loss`,
            `metrics`, `weighted_metrics` or `loss_weights` is not accepted: the loss is the
            negative ELBO built from the distributions, reported as loss, nll, kl and elbo.
        """
        if "loss" in kwargs:
            raise ValueError("`loss` is fixed by the model (-log p(x|z) + beta * KL); do not pass one.")
        for name in ("metrics", "weighted_metrics", "loss_weights"):
            if kwargs.get(name) is not None:  # `train_step` would never run or report them
                raise ValueError(f"`{name}` must be None: the model's loss (the negative ELBO) and metrics are fixed.")
        self.set_training_precision(precision)
        if optimizer is None:
            optimizer = tfk.optimizers.Adam(learning_rate=self.config.learning_rate)
        super().compile(optimizer=optimizer, **kwargs)

    def set_training_precision(self, precision: str) -> None:
        """Sets the arithmetic of the training and validation steps (see `compile`).

        Applies to steps traced afterwards: call it before `fit` (Keras retraces after `compile`).
        """
        # In __dict__, past Keras' attribute tracking: the bfloat16 copies share the
        # model's layers and must not be tracked (and saved) a second time.
        self.__dict__["training_precision"] = resolve_precision(precision)
        self.__dict__["_compute_networks"] = networks_in(self.training_precision, self.encoder, self.decoder)
        self.train_function = self.test_function = None  # retrace with the new networks

    def _training_input(self, data: Any, name: str):
        dataset = isinstance(data, (tf.data.Dataset, tf.distribute.DistributedDataset))
        parts = data.element_spec if dataset else data if name == "validation_data" else None
        if isinstance(parts, tuple) and len(parts) == 3 and parts[2] is not None:
            # Keras' (images, labels, weights): the labels go unused by design, the weights cannot.
            raise ValueError(f"`{name}` must hold images or (images, labels) pairs, not sample weights: {_NO_WEIGHTS}.")
        if data is None or dataset:
            return data
        if isinstance(data, tuple) and len(data) in (1, 2, 3) and name == "validation_data":
            data = data[0]  # (x, y) pairs as returned by tfpvae.datasets.load: labels unused
        return check_images(data, name, self.image_shape)

    def _refuse_targets(self, y: Any, kwargs: dict[str, Any]) -> None:
        """Raises on what Keras would pass `train_step` and `test_step` to be dropped: targets and weights."""
        if y is not None:
            raise ValueError("`y` must be None: a VAE learns to reproduce `x`, so it needs no targets.")
        for name in ("sample_weight", "class_weight"):
            if kwargs.get(name) is not None:
                raise ValueError(f"`{name}` must be None: {_NO_WEIGHTS}.")

    def fit(self, x: Any = None, y: Any = None, *, batch_size: int | None = None, epochs: int = 1, **kwargs: Any):
        """Trains on images; the input is its own target.

        Args:
          x: images, array of shape (n, H, W, C) (float in [0, 1] or uint8 0..255), or a
            `tf.data.Dataset` of such batches (or of (images, labels) pairs).
          y: must be None; labels are not used.
          batch_size: images per step for array input. None: Keras' 32.
          epochs: number of passes over the data.
          **kwargs: passed to `tf_keras.Model.fit` (validation_data, callbacks, ...).
            `validation_data` may be an image array, an (images, labels) pair or a dataset.
            Per-image weights are refused: `sample_weight`, `class_weight`, (x, y, weights) data.

        Returns:
          (tf_keras.callbacks.History): the Keras training history of this call;
          `training_history` accumulates the histories of every call.
        """
        self._refuse_targets(y, kwargs)
        if x is None:
            raise ValueError("`x` is required: pass an image array or a tf.data.Dataset.")
        if batch_size is not None:
            batch_size = check_int(batch_size, "batch_size")
        epochs = check_int(epochs, "epochs", minimum=kwargs.get("initial_epoch", 0) + 1)
        if self.optimizer is None:
            self.compile()
        x = self._training_input(x, "x")
        if kwargs.get("validation_data") is not None:
            val = self._training_input(kwargs["validation_data"], "validation_data")
            # Keras tests `if validation_data:`, which an array cannot answer: wrap it.
            kwargs["validation_data"] = val if isinstance(val, tf.data.Dataset) else (val,)
        history = super().fit(x, batch_size=batch_size, epochs=epochs, **kwargs)
        for key, values in history.history.items():
            self.training_history.setdefault(key, []).extend(float(v) for v in values)
        return history

    def evaluate(self, x: Any = None, y: Any = None, *, batch_size: int | None = None, **kwargs: Any):
        """Mean loss, nll, kl and elbo on images (no binarisation). See `fit` for `x` (and the weights it refuses)."""
        self._refuse_targets(y, kwargs)
        if batch_size is not None:
            batch_size = check_int(batch_size, "batch_size")
        if self.optimizer is None:
            self.compile()
        return super().evaluate(self._training_input(x, "x"), batch_size=batch_size, **kwargs)

    # ------------------------------------------------------------------ inference
    def encode(self, x: Any) -> tfd.Distribution:
        """Returns q(z|x), batch shape (n,), event shape (latent_dim,).

        Args:
          x: images, array of shape (n, H, W, C) in [0, 1] (or uint8 0..255).
        """
        return unwrap(self.encoder(check_images(x, "x", self.image_shape), training=False))

    def _check_latents(self, z: Any) -> tf.Tensor:
        z = np.asarray(z.numpy() if hasattr(z, "numpy") else z)
        if not np.issubdtype(z.dtype, np.number):
            raise TypeError(f"`z` must be numeric; got dtype {z.dtype}.")
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim or z.shape[0] == 0:
            raise ValueError(f"`z` must have shape (n, {self.config.latent_dim}) with n >= 1; got {z.shape}.")
        if not np.all(np.isfinite(z)):
            raise ValueError("`z` contains NaN or Inf values.")
        return tf.convert_to_tensor(z, tf.float32)

    def decode(self, z: Any) -> tfd.Distribution:
        """Returns p(x|z), batch shape (n,), event shape input_shape.

        Args:
          z: latent codes, array of shape (n, latent_dim).
        """
        return unwrap(self.decoder(self._check_latents(z), training=False))

    def decode_mean(self, z: Any) -> np.ndarray:
        """Bernoulli means E[x|z] as a numpy array (n, H, W, C), decoded in chunks."""
        z = self._check_latents(z)
        parts = [
            self.decoder(z[i : i + _DECODE_CHUNK], training=False).mean().numpy()
            for i in range(0, int(z.shape[0]), _DECODE_CHUNK)
        ]
        return np.concatenate(parts).astype(np.float32)

    def sample(
        self,
        num_samples: int,
        temperature: float = 1.0,
        seed: int | None = None,
        return_latents: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Draws images from the model: z ~ p(z) (spread by `temperature`), x = E[x|z].

        To sample from a mixture fitted to where the training codes lie instead, see
        `tfpvae.latent.fit_aggregate_posterior` and `tfpvae.latent.sample_aggregate_posterior`.

        Args:
          num_samples: number of images, >= 1.
          temperature: prior spread multiplier, > 0. 1.0 draws from the prior itself; lower
            gives cleaner, less varied images.
          seed: int for reproducible samples.
          return_latents: also return the codes.

        Returns:
          images, float32 array (num_samples, H, W, C) in [0, 1]; with `return_latents`,
          the pair (images, codes of shape (num_samples, latent_dim)).
        """
        num_samples = check_int(num_samples, "num_samples")
        temperature = check_float(temperature, "temperature", minimum=0.0, min_inclusive=False)
        z = sample_prior(self.prior, num_samples, temperature, seed).numpy()
        images = self.decode_mean(z)
        return (images, z) if return_latents else images

    def reconstruct(self, x: Any) -> np.ndarray:
        """Returns E[x | z = mean of q(z|x)], a float32 array (n, H, W, C) in [0, 1]."""
        return self.decode_mean(self.encode(x).mean())

    # ------------------------------------------------------------------ likelihoods
    @property
    def likelihood(self) -> LikelihoodEstimator:
        """The model's float32 `tfpvae.likelihood.LikelihoodEstimator`: `estimator("float32")`."""
        return self.estimator("float32")

    def estimator(self, precision: str = "float32") -> LikelihoodEstimator:
        """The model's `tfpvae.likelihood.LikelihoodEstimator` in `precision`, built once and reused.

        Reusing it matters: each estimator compiles its own `tf.function`.

        Args:
          precision: "float32", "bfloat16" or "auto"; see
            `LikelihoodEstimator.from_model`.
        """
        from tfpvae.likelihood import LikelihoodEstimator

        cache = self.__dict__.setdefault("_estimators", {})  # past Keras' attribute tracking
        key = check_choice(precision, "precision", PRECISIONS)
        if key not in cache:
            cache[key] = LikelihoodEstimator.from_model(self, precision=key)
        return cache[key]

    def elbo(
        self, x: Any, num_samples: int = 1, precision: str = "float32", **kwargs: Any
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Per-image ELBO in nats, array (n,). See `LikelihoodEstimator.elbo` for keywords
        (seed, binarize_seed, return_stderr, max_batch_elements, progress) and `estimator`
        for `precision`."""
        return self.estimator(precision).elbo(x, num_samples, **kwargs)

    def log_prob(
        self, x: Any, num_samples: int = 100, precision: str = "float32", **kwargs: Any
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Per-image importance-weighted estimate of log p(x) in nats, array (n,).

        Pass `return_stderr=True` for its Monte Carlo standard error; see
        `LikelihoodEstimator.log_prob` for the other keywords and `estimator` for `precision`.
        """
        return self.estimator(precision).log_prob(x, num_samples, **kwargs)

    def bits_per_dim(
        self, x: Any, num_samples: int = 100, precision: str = "float32", **kwargs: Any
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Per-image -log p(x) / (H * W * C * ln 2), array (n,)."""
        return self.estimator(precision).bits_per_dim(x, num_samples, **kwargs)

    def rate_distortion(
        self, x: Any, num_samples: int = 1, precision: str = "float32", **kwargs: Any
    ) -> dict[str, np.ndarray]:
        """Per-image rate KL(q(z|x) || p(z)) and distortion -E_q log p(x|z), in nats."""
        return self.estimator(precision).rate_distortion(x, num_samples, **kwargs)

    def pixel_log_prob(self, x: Any, num_samples: int = 16, precision: str = "float32", **kwargs: Any) -> np.ndarray:
        """log p(x_hwc | z) per pixel averaged over z ~ q(z|x), array (n, H, W, C)."""
        return self.estimator(precision).pixel_log_prob(x, num_samples, **kwargs)

    def save(self, filepath: str, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Writes the model to the folder `filepath`: config JSON, weights, metadata.

        Keras' own formats are not used: they would pickle the distribution layers'
        functions. Reload with `tfpvae.load(filepath)`.
        """
        if args or kwargs:
            raise TypeError("VAE.save takes only a folder path; Keras save options do not apply.")
        save(self, filepath)


def save(model: VAE, path: str | os.PathLike, extra_metadata: dict[str, Any] | None = None) -> Path:
    """Writes `model` to the folder `path` (created if needed) as plain files.

    Args:
      model: a `tfpvae.VAE`.
      path: the folder. Existing model files in it are replaced atomically.
      extra_metadata: more JSON-serialisable entries for metadata.json, under keys of your
        own (`tfpvae.serialization.RESERVED_METADATA_KEYS` are refused, nothing written).

    Returns:
      The folder as a `Path`.
    """
    metadata = {
        "tensorflow_version": tf.__version__,
        "tensorflow_probability_version": tfp.__version__,
        "weights": [{"name": w.name, "shape": list(w.shape)} for w in model.weights],
        "num_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "history": model.training_history,
        # Where the registered (not built-in) network and prior came from: a hint for the
        # error when a process loads the model without importing them. Never imported by load.
        "registered_by": {f: m for f, names in REGISTERED.items() if (m := names.module_of(getattr(model.config, f)))},
    }
    return write_model_files(path, model.config, model.get_weights(), metadata, extra_metadata=extra_metadata)


def load(path: str | os.PathLike) -> VAE:
    """Loads a model saved by `VAE.save` / `tfpvae.save`.

    The model is rebuilt from its config by library code and the stored arrays are
    assigned: nothing from the folder is executed or unpickled.

    Args:
      path: the model folder.

    Returns:
      A `tfpvae.VAE` with the saved weights and training history, compiled with the
      default optimizer.

    Raises:
      ModelFormatError: the folder is missing or incomplete, from an incompatible format
        version, fails a checksum (weights or config), or holds pickled or misfitting weights.
    """
    files = read_model_files(path)
    model = VAE(files.config)
    expected = [tuple(w.shape) for w in model.weights]
    found = [tuple(w.shape) for w in files.weights]
    if found != expected:
        raise ModelFormatError(
            f"Weights in {path} do not match its config: expected {len(expected)} arrays with shapes "
            f"{expected[:3]}..., found {len(found)} with shapes {found[:3]}..."
        )
    model.set_weights(files.weights)
    model.training_history = {k: list(v) for k, v in files.metadata.get("history", {}).items()}
    model.compile()
    return model
