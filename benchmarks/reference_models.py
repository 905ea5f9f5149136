"""The two reference VAEs people copy from tutorials, re-created from their published architectures.

* "tfp_example": TensorFlow Probability's "Probabilistic Layers VAE" example: latent 16,
  MultivariateNormalTriL posterior with a KLDivergenceRegularizer (weight 1.0) against a
  standard normal, 5x5 convolutions at full resolution, IndependentBernoulli decoder, input
  shifted by -0.5, trained with `loss=lambda x, rv_x: -rv_x.log_prob(x)`. Re-created as
  published, so its KL is added twice (tensorflow/probability#1215), as it is for everyone who
  copies it.
* "keras_example": the keras.io "Variational AutoEncoder" example: Conv2D 32/64 3x3 stride 2,
  Dense 16, a diagonal Gaussian latent of size 2, decoder Dense 7*7*64 and Conv2DTranspose
  64/32/1, Bernoulli (sigmoid cross-entropy) reconstruction loss summed over pixels plus KL.

Each reference exposes `model` (a compiled tf_keras model trained with `model.fit(x)` on
images) and `encode(x)`, `decode(z)`, `prior` (distributions), so the benchmark scores all
models with the same likelihood code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from tfpvae._keras import tf, tfd, tfk, tfkl, tfpl

NAMES = ("tfp_example", "keras_example")


@dataclasses.dataclass
class Reference:
    """A trainable reference model and its distribution interface."""

    name: str
    model: Any
    encode: Callable[[tf.Tensor], tfd.Distribution]
    decode: Callable[[tf.Tensor], tfd.Distribution]
    prior: tfd.Distribution
    parameters: int = 0


def _unwrap(d):
    return getattr(d, "tensor_distribution", d)


def tfp_example(latent_dim: int = 16, base_depth: int = 32) -> Reference:
    """The TFP "Probabilistic Layers VAE" example (as published, KL counted twice)."""
    input_shape = (28, 28, 1)
    prior = tfd.Independent(tfd.Normal(loc=tf.zeros(latent_dim), scale=1.0), reinterpreted_batch_ndims=1)
    conv = dict(padding="same", activation=tf.nn.leaky_relu)
    encoder = tfk.Sequential(
        [
            tfkl.InputLayer(input_shape=input_shape),
            tfkl.Lambda(lambda x: tf.cast(x, tf.float32) - 0.5),
            tfkl.Conv2D(base_depth, 5, strides=1, **conv),
            tfkl.Conv2D(base_depth, 5, strides=2, **conv),
            tfkl.Conv2D(2 * base_depth, 5, strides=1, **conv),
            tfkl.Conv2D(2 * base_depth, 5, strides=2, **conv),
            tfkl.Conv2D(4 * latent_dim, 7, strides=1, padding="valid", activation=tf.nn.leaky_relu),
            tfkl.Flatten(),
            tfkl.Dense(tfpl.MultivariateNormalTriL.params_size(latent_dim), activation=None),
            tfpl.MultivariateNormalTriL(
                latent_dim, activity_regularizer=tfpl.KLDivergenceRegularizer(prior, weight=1.0)
            ),
        ]
    )
    decoder = tfk.Sequential(
        [
            tfkl.InputLayer(input_shape=[latent_dim]),
            tfkl.Reshape([1, 1, latent_dim]),
            tfkl.Conv2DTranspose(2 * base_depth, 7, strides=1, padding="valid", activation=tf.nn.leaky_relu),
            tfkl.Conv2DTranspose(2 * base_depth, 5, strides=1, **conv),
            tfkl.Conv2DTranspose(2 * base_depth, 5, strides=2, **conv),
            tfkl.Conv2DTranspose(base_depth, 5, strides=1, **conv),
            tfkl.Conv2DTranspose(base_depth, 5, strides=2, **conv),
            tfkl.Conv2DTranspose(base_depth, 5, strides=1, **conv),
            tfkl.Conv2D(filters=1, kernel_size=5, strides=1, padding="same", activation=None),
            tfkl.Flatten(),
            tfpl.IndependentBernoulli(input_shape, tfd.Bernoulli.logits),
        ]
    )
    vae = tfk.Model(inputs=encoder.inputs, outputs=decoder(encoder.outputs[0]))
    vae.compile(optimizer=tfk.optimizers.Adam(learning_rate=1e-3), loss=lambda x, rv_x: -rv_x.log_prob(x))
    return Reference(
        "tfp_example",
        _SelfTarget(vae),
        encode=lambda x: _unwrap(encoder(x, training=False)),
        decode=lambda z: _unwrap(decoder(z, training=False)),
        prior=prior,
        parameters=vae.count_params(),
    )


class _SelfTarget:
    """Fits a Keras model whose target is its input, as the TFP example does with (x, x)."""

    def __init__(self, model):
        self.model = model

    def fit(self, dataset, **kwargs):
        return self.model.fit(dataset.map(lambda x: (x, x)), **kwargs)


class _KerasExampleVAE(tfk.Model):
    """keras.io's VAE: a Model subclass with its own train_step."""

    def __init__(self, encoder, decoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.decoder = encoder, decoder

    def train_step(self, data):
        with tf.GradientTape() as tape:
            z_mean, z_log_var = self.encoder(data)
            eps = tf.random.normal(tf.shape(z_mean))
            z = z_mean + tf.exp(0.5 * z_log_var) * eps
            logits = self.decoder(z)
            reconstruction_loss = tf.reduce_mean(
                tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=data, logits=logits), axis=(1, 2, 3))
            )
            kl_loss = -0.5 * (1 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var))
            total_loss = reconstruction_loss + tf.reduce_mean(tf.reduce_sum(kl_loss, axis=1))
        grads = tape.gradient(total_loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        return {"loss": total_loss}


def keras_example(latent_dim: int = 2) -> Reference:
    """The keras.io VAE example (latent 2, diagonal Gaussian)."""
    inputs = tfk.Input(shape=(28, 28, 1))
    h = tfkl.Conv2D(32, 3, activation="relu", strides=2, padding="same")(inputs)
    h = tfkl.Conv2D(64, 3, activation="relu", strides=2, padding="same")(h)
    h = tfkl.Flatten()(h)
    h = tfkl.Dense(16, activation="relu")(h)
    encoder = tfk.Model(inputs, [tfkl.Dense(latent_dim)(h), tfkl.Dense(latent_dim)(h)])
    z_in = tfk.Input(shape=(latent_dim,))
    h = tfkl.Dense(7 * 7 * 64, activation="relu")(z_in)
    h = tfkl.Reshape((7, 7, 64))(h)
    h = tfkl.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(h)
    h = tfkl.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(h)
    decoder = tfk.Model(z_in, tfkl.Conv2DTranspose(1, 3, padding="same")(h))
    vae = _KerasExampleVAE(encoder, decoder)
    vae.compile(optimizer=tfk.optimizers.Adam())

    def encode(x):
        mean, log_var = encoder(x, training=False)
        return tfd.MultivariateNormalDiag(loc=mean, scale_diag=tf.exp(0.5 * log_var))

    def decode(z):
        return tfd.Independent(tfd.Bernoulli(logits=decoder(z, training=False)), reinterpreted_batch_ndims=3)

    prior = tfd.MultivariateNormalDiag(loc=tf.zeros(latent_dim), scale_diag=tf.ones(latent_dim))
    parameters = encoder.count_params() + decoder.count_params()
    return Reference("keras_example", vae, encode, decode, prior, parameters=parameters)
