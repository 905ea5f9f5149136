"""A user's own network and prior, registered as a researcher would: the tests' stand-in for user code.

`small_resnet` is a small residual conv network whose encoder ends in a feature map (tfpvae
flattens it) and whose decoder ends in logits of the image's shape (n, H, W, C); it reads
its width and depth from `config.options`. `logistic` is a prior with no closed-form KL
from a Gaussian posterior (Monte Carlo KL). Imported by name in fresh processes
(`--import example_networks`), so it must stay importable on its own.
"""

from __future__ import annotations

import tfpvae
from tfpvae._keras import tf, tfd, tfk, tfkl


def _residual(x, filters: int):
    h = tfkl.Conv2D(filters, 3, padding="same", activation="swish")(x)
    h = tfkl.Conv2D(filters, 3, padding="same")(h)
    return tfkl.Activation("swish")(tfkl.Add()([x, h]))


@tfpvae.register_network("small_resnet")
def small_resnet(config, role):
    """Two stride-2 stages with `blocks` residual blocks each, `width` channels (options)."""
    width, blocks = config.options.get("width", 16), config.options.get("blocks", 1)
    height, w, channels = config.input_shape
    if role == "encoder":
        inputs = tfkl.Input(config.input_shape)
        x = tfkl.Conv2D(width, 3, strides=2, padding="same", activation="swish")(inputs)
        for _ in range(blocks):
            x = _residual(x, width)
        x = tfkl.Conv2D(2 * width, 3, strides=2, padding="same", activation="swish")(x)
        return tfk.Model(inputs, x)  # a feature map (n, H/4, W/4, 2 width): tfpvae flattens it
    inputs = tfkl.Input((config.latent_dim,))
    x = tfkl.Dense(height // 4 * w // 4 * 2 * width, activation="swish")(inputs)
    x = tfkl.Reshape((height // 4, w // 4, 2 * width))(x)
    x = tfkl.Conv2DTranspose(width, 3, strides=2, padding="same", activation="swish")(x)
    for _ in range(blocks):
        x = _residual(x, width)
    x = tfkl.Conv2DTranspose(width, 3, strides=2, padding="same", activation="swish")(x)
    return tfk.Model(inputs, tfkl.Conv2D(channels, 3, padding="same")(x))  # logits (n, H, W, C)


class LogisticPrior(tfpvae.priors.PriorLayer):
    """Independent logistic distributions with trainable locations and scales."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(name="prior")
        self.loc = self.add_weight(name="loc", shape=(latent_dim,), initializer="zeros")
        self.raw_scale = self.add_weight(name="raw_scale", shape=(latent_dim,), initializer="zeros")

    @property
    def distribution(self):
        return tfd.Independent(tfd.Logistic(self.loc, tf.nn.softplus(self.raw_scale) + 0.1), 1)


@tfpvae.register_prior("logistic")
def logistic(config):
    return LogisticPrior(config.latent_dim)
