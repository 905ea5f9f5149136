"""Export a trained VAE as a TensorFlow SavedModel with serving signatures; no tfpvae needed to load it.

Signatures (all float32 in, float32 out):

* `log_prob(images (n, H, W, C) in [0, 1], seed int32 scalar)` -> `{"log_prob": (n,)}`:
  the importance-weighted (IWAE) estimate of log p(x) with the number of importance samples
  fixed at export time;
* `elbo(images, seed)` -> `{"elbo": (n,)}`: the Monte Carlo ELBO with the same samples;
* `sample(num_samples int32 scalar, seed int32 scalar)` -> `{"images": (num_samples, H, W, C)}`:
  Bernoulli means of prior samples.

Each request decodes n * num_samples codes at once: send batches sized for the serving
machine (a 28x28 conv decoder needs about 250 KB per code). Draws are stateless given the
seed, so the same request gives the same answer. Load with plain TensorFlow:

    served = tf.saved_model.load(path)
    served.signatures["log_prob"](images=x, seed=tf.constant(0))["log_prob"]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tfpvae._keras import tf
from tfpvae._validation import check_int


def _after(check: Any, value: tf.Tensor) -> tf.Tensor:
    """`value`, available only once the `check` op passed. A served call gets no Python
    checks, and in a graph an unconnected assert may run after the op it guards has failed."""
    with tf.control_dependencies([check]):
        return tf.identity(value)


class ServingModule(tf.Module):
    """The tf.Module behind the exported signatures (also callable in-process).

    Args:
      model: a trained `tfpvae.VAE` (model_type "vae").
      num_samples: importance samples per image in `log_prob` and `elbo`. Default 64.
    """

    def __init__(self, model: Any, num_samples: int = 64) -> None:
        super().__init__(name="tfpvae_serving")
        if model.config.model_type != "vae":
            raise ValueError("Only VAEs can be exported for likelihood serving; this model is an autoencoder.")
        self.num_samples = check_int(num_samples, "num_samples")
        # Track only the variables: attaching the Keras models would make the SavedModel
        # serialise Keras layer metadata (and re-trace the KL regularizer), which plain
        # TensorFlow does not need. The networks are reached through a closure instead.
        self.variables_ = list(model.variables)
        self._networks = lambda: (model.encoder, model.decoder, model.prior)
        self.latent_dim = model.config.latent_dim
        h, w, c = model.config.input_shape
        images = tf.TensorSpec([None, h, w, c], tf.float32, name="images")
        seed = tf.TensorSpec([], tf.int32, name="seed")
        self.log_prob = tf.function(self._log_prob, input_signature=[images, seed])
        self.elbo = tf.function(self._elbo, input_signature=[images, seed])
        self.sample = tf.function(self._sample, input_signature=[tf.TensorSpec([], tf.int32, name="num_samples"), seed])

    def _log_weights(self, images, seed):
        """log p(x|z_j) + log p(z_j) - log q(z_j|x) for k draws per image: (k, n)."""
        check = tf.debugging.assert_positive(tf.shape(images)[0], message="`images` must hold at least one image")
        images = _after(check, images)
        encoder, decoder, prior = self._networks()
        q = encoder(images, training=False)
        q = getattr(q, "tensor_distribution", q)
        z = q.sample(self.num_samples, seed=tf.stack([seed, 0]))  # (k, n, d)
        k, n = self.num_samples, tf.shape(images)[0]
        # A static latent size keeps the decoder's input shape known, so Keras returns
        # the distribution (with an unknown size it hands back a plain tensor).
        px = decoder(tf.reshape(z, [-1, self.latent_dim]), training=False)
        tiled = tf.reshape(tf.broadcast_to(images[None], tf.concat([[k], tf.shape(images)], 0)), tf.shape(px.mean()))
        log_px = tf.reshape(px.log_prob(tiled), [k, n])
        return log_px + prior.log_prob(z) - q.log_prob(z)

    def _log_prob(self, images, seed):
        lw = self._log_weights(images, seed)
        return {"log_prob": tf.reduce_logsumexp(lw, axis=0) - tf.math.log(tf.cast(self.num_samples, lw.dtype))}

    def _elbo(self, images, seed):
        return {"elbo": tf.reduce_mean(self._log_weights(images, seed), axis=0)}

    def _sample(self, num_samples, seed):
        check = tf.debugging.assert_non_negative(num_samples, message="`num_samples` must be >= 0")
        num_samples = _after(check, num_samples)
        _, decoder, prior = self._networks()
        z = prior.sample(num_samples, seed=tf.stack([seed, 1]))
        return {"images": decoder(z, training=False).mean()}


def export(model: Any, path: str | os.PathLike, num_samples: int = 64) -> Path:
    """Writes `model` as a SavedModel with `log_prob`, `elbo` and `sample` signatures.

    Args:
      model: a trained `tfpvae.VAE`.
      path: output folder (created; must not already hold a SavedModel).
      num_samples: importance samples per image fixed into `log_prob`/`elbo`. Default 64.

    Returns:
      The folder as a `Path`.
    """
    path = Path(path)
    if (path / "saved_model.pb").exists():
        raise ValueError(f"`path` {path} already holds a SavedModel; choose a new folder.")
    module = ServingModule(model, num_samples)
    signatures = {
        "log_prob": module.log_prob.get_concrete_function(),
        "elbo": module.elbo.get_concrete_function(),
        "sample": module.sample.get_concrete_function(),
    }
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path
