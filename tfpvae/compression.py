"""Lossless code lengths of images: the adaptive context model (in-graph) and zlib.

The `complexity` anomaly score subtracts a generic compressor's code length L(x) from the
model's NLL (Serra et al., ICLR 2020). The context model here is a TensorFlow function, so
the scoring core (and an exported SavedModel) computes it inside the same graph as the
likelihood; zlib is a numpy-side alternative, much weaker for images this small.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from tfpvae._keras import tf
from tfpvae._validation import check_choice, check_float, check_images

__all__ = ["COMPRESSORS", "CONTEXT_TEMPLATE", "compressed_bits", "context_code_length", "context_code_length_graph"]

COMPRESSORS = ("context", "zlib")

# Causal neighbours (row offset, column offset) that form a pixel's context in the
# context-model compressor: west, north-west, north, north-east. Among templates of 1 to
# 10 pixels (JBIG's 10-pixel one included) and estimators with 1/2, 1/4 and 1/16
# pseudo-counts, this one with 1/2 (Krichevsky-Trofimov) gave the shortest codes on both
# MNIST and Fashion-MNIST: a bigger template splits 784 pixels over too many contexts for
# the counts to learn anything (docs/anomaly-benchmarks.md).
CONTEXT_TEMPLATE = ((0, -1), (-1, -1), (-1, 0), (-1, 1))


def _check_template(template: Any) -> tuple[tuple[int, int], ...]:
    template = tuple((int(dy), int(dx)) for dy, dx in template)
    for dy, dx in template:
        if dy > 0 or (dy == 0 and dx >= 0):
            raise ValueError(
                f"`template` offsets must point to earlier pixels (dy < 0, or dy == 0 and dx < 0); got {(dy, dx)}."
            )
    return template


def context_code_length_graph(
    x: tf.Tensor, template: tuple[tuple[int, int], ...] = CONTEXT_TEMPLATE, pseudo_count: float = 0.5
) -> tf.Tensor:
    """`context_code_length` as TensorFlow ops, for use inside a `tf.function`.

    The adaptive counts are cumulative sums over raster order of a one-hot of each pixel's
    (context, value) pair, so the whole code length is a handful of vectorised ops: no
    per-pixel loop. Memory is n * H * W * C * 2^(len(template) + 1) int32 counts (6.4 MB
    for 64 MNIST images and the default 4-pixel template).

    Args:
      x: binary images, float tensor (n, H, W, C) of 0/1 values (not checked here).
      template: context offsets, as in `context_code_length`.
      pseudo_count: a > 0.

    Returns:
      float64 tensor (n,) of bits.
    """
    planes = tf.cast(tf.transpose(x, [0, 3, 1, 2]) > 0.5, tf.int32)  # (n, C, H, W)
    height, width = x.shape[1], x.shape[2]
    reach_y = max([-dy for dy, _ in template] + [0])
    reach_x = max([abs(dx) for _, dx in template] + [0])
    padded = tf.pad(planes, [[0, 0], [0, 0], [reach_y, 0], [reach_x, reach_x]])
    context = tf.zeros_like(planes)
    for bit, (dy, dx) in enumerate(template):
        rows, cols = reach_y + dy, reach_x + dx
        context += padded[:, :, rows : rows + height, cols : cols + width] * (1 << bit)
    n = tf.shape(x)[0]
    context = tf.reshape(context, [n, -1])
    value = tf.reshape(planes, [n, -1])
    classes = 2 << len(template)  # (context, value) pairs
    onehot = tf.one_hot(context * 2 + value, classes, dtype=tf.int32)  # (n, P, classes)
    seen = tf.cumsum(onehot, axis=1, exclusive=True)  # counts before each pixel, in this image
    same = tf.gather(seen, context * 2 + value, axis=2, batch_dims=2)
    other = tf.gather(seen, context * 2 + 1 - value, axis=2, batch_dims=2)
    a = tf.constant(pseudo_count, tf.float64)
    same, other = tf.cast(same, tf.float64), tf.cast(other, tf.float64)
    bits = -tf.math.log((same + a) / (same + other + 2.0 * a)) / tf.math.log(tf.constant(2.0, tf.float64))
    return tf.reduce_sum(bits, axis=1)


def context_code_length(
    x: Any, template: tuple[tuple[int, int], ...] = CONTEXT_TEMPLATE, pseudo_count: float = 0.5
) -> np.ndarray:
    """Code length in bits of each binary image under an adaptive context model.

    The pixels are coded in raster order (channel planes one after another). A pixel's
    context is the bit pattern of its `template` neighbours that are already coded (0
    outside the image), and its probability is the estimate
    (count of its value + a) / (count of the context + 2a) from the pixels seen so far
    *in this image* (a = 1/2: Krichevsky-Trofimov). An arithmetic coder driven by this
    model (the JBIG family of bi-level image coders) writes -sum log2 p bits to within 2
    bits, so this is a lossless compressed length that assumes nothing about any dataset:
    a universal code.

    Args:
      x: binary images, array (n, H, W, C) (or (n, H, W)) of 0/1 values.
      template: (row offset, column offset) of each context pixel; every offset must point
        to an earlier pixel in raster order. `CONTEXT_TEMPLATE`: 4 neighbours.
      pseudo_count: a, > 0.

    Returns:
      float64 array (n,) of bits.
    """
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or not np.all((x == 0) | (x == 1)):
        raise ValueError(f"`x` must be binary images (n, H, W[, C]) of 0/1 values; got shape {x.shape}.")
    template = _check_template(template)
    pseudo_count = check_float(pseudo_count, "pseudo_count", minimum=0.0, min_inclusive=False)
    return context_code_length_graph(tf.constant(x, tf.float32), template, pseudo_count).numpy()


def compressed_bits(x: Any, binarize_threshold: float | None = 0.5, compressor: str = "context") -> np.ndarray:
    """Lossless compressed length L(x) in bits of each image.

    Args:
      x: images (n, H, W, C), float in [0, 1] or uint8 0..255 (scaled to [0, 1]).
      binarize_threshold: compress the image thresholded at this value in (0, 1] (matching
        a binary Bernoulli model), or None to compress the 8-bit grey image (zlib only).
      compressor: "context", the adaptive context-model code length of
        `context_code_length`, or "zlib" (level 9, on the packed bits or grey bytes), a
        much weaker coder for images this small whose fixed header cost is the same for
        every image (a shift that does not change rankings).

    Returns:
      float64 array (n,) of bit counts.
    """
    x = check_images(x, "x")
    if binarize_threshold is not None:
        binarize_threshold = check_float(
            binarize_threshold, "binarize_threshold", minimum=0.0, maximum=1.0, min_inclusive=False
        )
    if check_choice(compressor, "compressor", COMPRESSORS) == "context":
        if binarize_threshold is None:
            raise ValueError("compressor='context' codes binary images: pass a `binarize_threshold`, not None.")
        return context_code_length(x >= binarize_threshold)
    if binarize_threshold is None:
        data = [np.round(img * 255).astype(np.uint8).tobytes() for img in x]
    else:
        data = [np.packbits(img.reshape(-1) >= binarize_threshold).tobytes() for img in x]
    return np.array([8.0 * len(zlib.compress(d, 9)) for d in data])
