"""The encoder and decoder bodies: the built-in architectures, and `build_body` for any registered one.

An encoder body maps images to a feature vector and a decoder body maps a latent code to
per-pixel Bernoulli logits of the image's exact shape; the distribution heads are added
by `tfpvae.model`. The built-in "mlp", "conv" and "dcgan" are registered builders like a
user's (`tfpvae.register_network`), so `build_body` is the one way every body is made.
Conv stacks stride by 2 and crop after upsampling, so odd or small sizes (8x8, 28x28,
32x32x3, 64x64x3) all work.
"""

from __future__ import annotations

import math

import numpy as np

from tfpvae import registry
from tfpvae._keras import tf, tfk, tfkl
from tfpvae._validation import check_choice
from tfpvae.config import ARCHITECTURES, VAEConfig


def _strided_sizes(size: int, num_blocks: int) -> list[int]:
    """Spatial sizes after each of `num_blocks` stride-2 'same' convolutions."""
    sizes = [size]
    for _ in range(num_blocks):
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def _crop_to(x, height: int, width: int):
    """Crops an upsampled feature map back to (height, width), splitting the excess."""
    dh, dw = x.shape[1] - height, x.shape[2] - width
    if dh or dw:
        x = tfkl.Cropping2D(((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)))(x)
    return x


def _num_blocks(config: VAEConfig) -> int:
    return 4 if config.architecture == "dcgan" else 2


def seeded_initializer(config: VAEConfig, index: int):
    """Glorot-uniform initialiser seeded from `config.seed` and the layer's `index`.

    A distinct derived seed per layer: one shared seed would make same-shaped layers equal.
    """
    seed = None if config.seed is None else config.seed * 1000 + index
    return tfk.initializers.GlorotUniform(seed=seed)


class _Init:
    """Hands out per-layer initialisers so a seeded config builds identical weights."""

    def __init__(self, config: VAEConfig, offset: int) -> None:
        self.config, self.count = config, offset

    def __call__(self):
        self.count += 1
        return seeded_initializer(self.config, self.count)


def _hidden_dense(x, units: int, config: VAEConfig, init: _Init):
    """A hidden Dense layer with the config's activation, then Dropout if `config.dropout` > 0."""
    x = tfkl.Dense(units, activation=config.activation, kernel_initializer=init())(x)
    if config.dropout:
        # Seeded like the weights, so a seeded config trains reproducibly; Keras applies the
        # mask only with training=True, so scoring and sampling see the whole network.
        seed = None if config.seed is None else config.seed * 1000 + init.count
        x = tfkl.Dropout(config.dropout, seed=seed)(x)
    return x


def encoder_body(config: VAEConfig) -> tfk.Model:
    """Builds the encoder's feature extractor.

    Args:
      config: the model config; uses input_shape, architecture, filters, hidden_units,
        activation, dropout, seed.

    Returns:
      A Keras model mapping images (n, H, W, C) in [0, 1] to features (n, hidden_units).
    """
    check_choice(config.architecture, "architecture", ARCHITECTURES)
    init, act = _Init(config, 0), config.activation
    inputs = tfkl.Input(shape=config.input_shape, name="images")
    # Centre the pixels: zero-mean inputs let the first layer learn faster.
    x = tfkl.Rescaling(1.0, offset=-0.5, name="centre")(inputs)
    if config.architecture == "mlp":
        x = tfkl.Flatten()(x)
        x = _hidden_dense(x, 2 * config.hidden_units, config, init)
    else:
        for i in range(_num_blocks(config)):
            filters = config.filters * 2**i
            if config.architecture == "dcgan":
                x = tfkl.Conv2D(filters, 4, strides=2, padding="same", use_bias=False, kernel_initializer=init())(x)
                x = tfkl.BatchNormalization()(x)
                x = tfkl.LeakyReLU(0.2)(x)
            else:
                x = tfkl.Conv2D(filters, 3, strides=2, padding="same", activation=act, kernel_initializer=init())(x)
        x = tfkl.Flatten()(x)
    x = _hidden_dense(x, config.hidden_units, config, init)
    return tfk.Model(inputs, x, name="encoder_body")


def decoder_body(config: VAEConfig) -> tfk.Model:
    """Builds the decoder's generator network.

    Args:
      config: the model config; uses input_shape, latent_dim, architecture, filters,
        hidden_units, activation, dropout, seed.

    Returns:
      A Keras model mapping codes (n, latent_dim) to flat Bernoulli logits (n, H * W * C).
    """
    check_choice(config.architecture, "architecture", ARCHITECTURES)
    init, act = _Init(config, 500), config.activation
    height, width, channels = config.input_shape
    inputs = tfkl.Input(shape=(config.latent_dim,), name="z")
    x = _hidden_dense(inputs, config.hidden_units, config, init)
    if config.architecture == "mlp":
        x = _hidden_dense(x, 2 * config.hidden_units, config, init)
        logits = tfkl.Dense(height * width * channels, kernel_initializer=init())(x)
        return tfk.Model(inputs, logits, name="decoder_body")
    blocks = _num_blocks(config)
    h0, w0 = _strided_sizes(height, blocks)[-1], _strided_sizes(width, blocks)[-1]
    top = config.filters * 2 ** (blocks - 1)
    x = _hidden_dense(x, h0 * w0 * top, config, init)
    x = tfkl.Reshape((h0, w0, top))(x)
    for i in reversed(range(blocks)):
        filters = config.filters * 2**i
        if config.architecture == "dcgan":
            x = tfkl.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False, kernel_initializer=init())(
                x
            )
            x = tfkl.BatchNormalization()(x)
            x = tfkl.LeakyReLU(0.2)(x)
        else:
            x = tfkl.Conv2DTranspose(filters, 3, strides=2, padding="same", activation=act, kernel_initializer=init())(
                x
            )
    x = _crop_to(x, height, width)
    x = tfkl.Conv2D(channels, 3, padding="same", kernel_initializer=init())(x)
    logits = tfkl.Flatten()(x)
    return tfk.Model(inputs, logits, name="decoder_body")


def _builtin(config: VAEConfig, role: str) -> tfk.Model:
    """The registered builder of the built-in architectures."""
    return encoder_body(config) if role == "encoder" else decoder_body(config)


for _name in ARCHITECTURES:
    registry.networks.register(_name, _builtin=True)(_builtin)


def build_body(config: VAEConfig, role: str) -> tfk.Model:
    """Builds the encoder or decoder body of `config.architecture` through the registry.

    The builder's layer is wrapped in a functional model with a fixed input and checked:
    an encoder must give features (n, F) (a feature map is flattened), a decoder logits
    (n, H, W, C) or (n, H * W * C) (returned flat, as `IndependentBernoulli` takes them).

    Args:
      config: the model config.
      role: "encoder" or "decoder".

    Returns:
      A Keras model: images (n, H, W, C) -> features (n, F), or codes (n, latent_dim) ->
      logits (n, H * W * C).

    Raises:
      UnregisteredNameError: no builder is registered under `config.architecture`.
      TypeError: the builder returned something that is not a tf_keras layer.
      ValueError: the layer has more than one output (a list of one is taken as its
        output), or its output has the wrong shape for its role.
    """
    role = check_choice(role, "role", registry.NETWORK_ROLES)
    name = config.architecture
    net = registry.networks.get(name)(config, role)
    if not isinstance(net, tfkl.Layer):
        raise TypeError(
            f"The {role} builder of network {name!r} must return a tf_keras layer or model "
            f"(import tf_keras, not keras or tf.keras); got {type(net).__module__}.{type(net).__name__}."
        )
    in_shape = config.input_shape if role == "encoder" else (config.latent_dim,)
    if _fits(net, in_shape, role, config):
        return net  # a built-in body (or a user's functional model) that needs no wrapping
    inputs = tfkl.Input(shape=in_shape, name="images" if role == "encoder" else "z")
    out = _one_output(net(inputs), name, role)
    shape = tuple(out.shape[1:])
    h, w, c = config.input_shape
    if role == "encoder" and len(shape) >= 1 and None not in shape:
        out = tfkl.Flatten()(out) if len(shape) > 1 else out
    elif role == "decoder" and shape in ((h, w, c), (h * w * c,)):
        out = tfkl.Flatten()(out) if len(shape) > 1 else out
    else:
        expected = "(n, F) or a feature map (n, h, w, c)" if role == "encoder" else f"(n, {h}, {w}, {c}) logits"
        raise ValueError(
            f"The {role} of network {name!r} maps inputs (n, {', '.join(map(str, in_shape))}) to outputs "
            f"(n, {', '.join(map(str, shape))}); expected {expected}."
        )
    return tfk.Model(inputs, out, name=f"{role}_body")


def _one_output(out, name: str, role: str):
    """The one tensor a body outputs (unwrapped from a list of one), or a ValueError naming the network and role."""
    outputs = tf.nest.flatten(out)  # a tensor, or a list, tuple or dict of them
    if len(outputs) != 1:
        raise ValueError(f"The {role} of network {name!r} must have one output; got {len(outputs)}.")
    if not hasattr(outputs[0], "shape"):  # a symbolic (Keras) tensor has one
        raise ValueError(
            f"The {role} of network {name!r} must output a tensor; got {type(outputs[0]).__module__}."
            f"{type(outputs[0]).__name__}."
        )
    return outputs[0]


def _fits(net: tfkl.Layer, in_shape: tuple[int, ...], role: str, config: VAEConfig) -> bool:
    """Whether `net` is already a functional model from `in_shape` to the body's output shape."""
    if not isinstance(net, tfk.Model) or not getattr(net, "_is_graph_network", False) or len(net.inputs) != 1:
        return False
    out = tuple(net.output_shape[1:]) if not isinstance(net.output_shape, list) else ()
    wanted = (int(np.prod(config.input_shape)),) if role == "decoder" else out
    return tuple(net.input_shape[1:]) == in_shape and len(out) == 1 and out == wanted and None not in out
