"""Network arithmetic in bfloat16: which precision to use, and networks that multiply in it.

`precision="bfloat16"` runs the matrix products of a network (Dense kernels and
convolutions) in bfloat16, which the matrix units of recent CPUs (Intel AMX, AVX-512 BF16)
and GPUs (compute capability 8.0 and later) execute several times faster than float32;
their products accumulate in float32 inside the unit. Everything else stays float32:
biases, activations, normalisation, the encoder's posterior head (its parameter layer,
product included, since the posterior's scale needs the precision), the decoder's
Bernoulli head (its logits come from a bfloat16 product like every other layer's, and
are float32 from the accumulator on), log-probabilities and the log-sum-exp of the
scoring core. (Measured on an AMX CPU: activations in bfloat16 cost more
than they save, because only the matrix units are native in bfloat16.)

`low_precision(network)` rebuilds a functional tf_keras model with each Dense, Conv1D/2D/3D
and Conv2DTranspose layer replaced by a `BFloat16Product` that reads the original layer's
float32 variables (rounded to bfloat16 on each call): the copy shares every weight with the
original, so it stays current while the original trains, and gradients reach the float32
variables through the rounding. Any other layer, including a subclassed model a user
registered, is called as it is, in float32.

`precision="auto"` is bfloat16 where the hardware has native bfloat16 matrix units
(`native_bfloat16`) and float32 elsewhere; the scoring code further falls back to float32
for a model whose bfloat16 scores differ by more than `AUTO_TOLERANCE_NATS` on a probe.
"""

from __future__ import annotations

import functools
from typing import Any

from tfpvae._keras import tf, tfk, tfkl
from tfpvae._validation import check_choice
from tfpvae.config import PRECISIONS

__all__ = [
    "AUTO_TOLERANCE_NATS",
    "HEAD_LAYERS",
    "PRECISIONS",
    "BFloat16Product",
    "count_products",
    "low_precision",
    "native_bfloat16",
    "networks_in",
    "resolve_precision",
]

# `auto` keeps float32 for a model whose bfloat16 log p(x) differs by more than this on any
# probe image: the per-image goal for bfloat16 scoring (99% of images within 0.5 nats).
AUTO_TOLERANCE_NATS = 0.5
_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# The layers of tfpvae's encoder that make q(z|x)'s parameters: kept in float32.
HEAD_LAYERS = ("posterior_params", "code")


@functools.cache
def native_bfloat16() -> bool:
    """Whether this machine multiplies bfloat16 matrices natively.

    True with a GPU of compute capability 8.0 or later (the one TensorFlow places ops on), or
    a CPU whose flags include `amx_bf16` or `avx512_bf16` (Linux: /proc/cpuinfo).
    """
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
        return bool(capability) and tuple(capability) >= (8, 0)
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in _CPU_FLAGS)


def resolve_precision(precision: str, name: str = "precision") -> str:
    """ "float32" or "bfloat16" for a `precision` of `PRECISIONS`; "auto" follows `native_bfloat16`.

    Raises:
      ValueError: `precision` is not one of `PRECISIONS` (the message names `name`).
    """
    precision = check_choice(precision, name, PRECISIONS)
    if precision == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    return precision


class BFloat16Product(tfkl.Layer):
    """A Dense or convolution layer's product in bfloat16; bias and activation in float32.

    Reads `layer`'s variables, so it trains and saves with it; holds no weights of its own.

    Args:
      layer: a built `Dense`, `Conv1D`/`Conv2D`/`Conv3D` or `Conv2DTranspose` (channels last).
    """

    def __init__(self, layer: tfkl.Layer, **kwargs: Any) -> None:
        super().__init__(name=f"{layer.name}_bf16", **kwargs)
        self.layer = layer

    def call(self, inputs):
        layer = self.layer
        x = tf.cast(inputs, tf.bfloat16)
        kernel = tf.cast(layer.kernel, tf.bfloat16)
        if isinstance(layer, tfkl.Dense):
            y = tf.tensordot(x, kernel, [[x.shape.rank - 1], [0]]) if x.shape.rank > 2 else tf.matmul(x, kernel)
        elif isinstance(layer, tfkl.Conv2DTranspose):
            static = tf.TensorShape(layer.compute_output_shape(inputs.shape)).as_list()
            shape = tf.concat([tf.shape(inputs)[:1], tf.constant(static[1:], tf.int32)], 0)
            y = tf.nn.conv2d_transpose(x, kernel, shape, layer.strides, padding=layer.padding.upper())
        else:
            y = layer.convolution_op(x, kernel)
        y = tf.cast(y, tf.float32)
        if layer.use_bias:
            y = tf.nn.bias_add(y, layer.bias)
        return layer.activation(y) if layer.activation is not None else y


def _convertible(layer: tfkl.Layer) -> bool:
    """Layers whose product `BFloat16Product` computes exactly as the layer does, but rounded."""
    if not layer.built or getattr(layer, "dtype", "float32") != "float32":
        return False
    if layer.activity_regularizer is not None:  # applied by the layer's own __call__, which this skips
        return False
    if type(layer) is tfkl.Dense:  # exact types: a subclass may compute something else
        return True
    if type(layer) is tfkl.Conv2DTranspose:
        plain = layer.output_padding is None and tuple(layer.dilation_rate) == (1, 1)
        return plain and layer.data_format == "channels_last"
    if type(layer) not in (tfkl.Conv1D, tfkl.Conv2D, tfkl.Conv3D):
        return False
    # Causal padding is applied by the layer's `call`, before the convolution op this uses.
    return layer.data_format == "channels_last" and layer.padding != "causal"


def _functional(layer: tfkl.Layer) -> bool:
    return isinstance(layer, tfk.Model) and getattr(layer, "_is_graph_network", False)


def low_precision(network: tfk.Model, keep: tuple[str, ...] = ()) -> tfk.Model:
    """A copy of a functional model whose matrix products run in bfloat16, sharing its weights.

    Args:
      network: a built functional (or Sequential) tf_keras model. Nested functional models
        are converted too; any other layer is reused as it is (float32).
      keep: names of layers to leave in float32 (such as a distribution head's parameters).

    Returns:
      A functional model with the same inputs and outputs as `network`; its outputs are float32.
      A network with nothing to convert (a subclassed model) is returned as it is.
    """
    if not _functional(network):
        return network

    def convert(layer):
        if layer.name in keep:
            return layer
        if _functional(layer):
            return low_precision(layer, keep)
        return BFloat16Product(layer) if _convertible(layer) else layer

    # clone_model calls `convert` for every layer but the inputs; returning a layer itself
    # (rather than a copy from its config) shares that layer and its weights.
    return tfk.models.clone_model(network, clone_function=convert)


def count_products(network: tfk.Model) -> int:
    """How many `BFloat16Product` layers a `low_precision` copy holds, nested models included."""
    total = 0
    for layer in network.layers:
        if isinstance(layer, BFloat16Product):
            total += 1
        elif _functional(layer) and layer is not network:
            total += count_products(layer)
    return total


def networks_in(precision: str, encoder: tfk.Model, decoder: tfk.Model) -> tuple[tfk.Model, tfk.Model]:
    """tfpvae's encoder and decoder as they compute in a resolved `precision`.

    Args:
      precision: "float32" or "bfloat16" (as `resolve_precision` returns it).
      encoder: the model's encoder.
      decoder: the model's decoder.

    Returns:
      The networks themselves for float32; for bfloat16, `low_precision` copies that keep
      the encoder's posterior head (`HEAD_LAYERS`) in float32.
    """
    if precision == "bfloat16":
        return low_precision(encoder, keep=HEAD_LAYERS), low_precision(decoder)
    return encoder, decoder
