"""Argument checks for the public boundary: one helper per kind of value.

Every check raises `ValueError` or `TypeError` with a message that names the argument,
what was expected and what was given, so a user never meets a TensorFlow stack trace
for a mistake in their own input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

# Longest repr of a given value an error message quotes: a message must stay one readable line.
_SHOW_CHARS = 200


def show(value: Any) -> str:
    """repr(value) for an error message, shortened; it never fails, whatever the value.

    repr raises for an int of more than 4300 digits (Python's limit on int-to-text
    conversion) and may raise for a user's object: the message would then be lost.
    """
    if isinstance(value, int) and value.bit_length() > 4000:  # beyond Python's 4300-digit limit on int-to-text
        return f"<an int of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception:
        return f"<a {type(value).__name__} that cannot be shown>"
    return text if len(text) <= _SHOW_CHARS else f"{text[:_SHOW_CHARS]}..."


def check_int(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """Returns `value` as an int, or raises if it is not an int in [minimum, maximum]."""
    bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int {bound}; got {show(value)} ({type(value).__name__}).")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"`{name}` must be an int {bound}; got {show(int(value))}.")
    return int(value)


def check_seed(seed: Any, name: str = "seed", maximum: int | None = None) -> int | None:
    """Returns `seed` as an int in [0, maximum], or None for None (a fresh draw), or raises naming it."""
    return None if seed is None else check_int(seed, name, minimum=0, maximum=maximum)


# Largest seed that fits the int32 words of a TensorFlow stateless seed: a larger one would
# wrap around silently and repeat a smaller seed's draws.
MAX_INT32_SEED = 2**31 - 1


def check_float(
    value: Any,
    name: str,
    *,
    minimum: float = -math.inf,
    maximum: float = math.inf,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """Returns `value` as a finite float within the given bounds, or raises."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a number; got {show(value)} ({type(value).__name__}).")
    try:
        value = float(value)
    except OverflowError:  # an int beyond the float range: out of every bound
        value = math.inf if value > 0 else -math.inf
    low_ok = value >= minimum if min_inclusive else value > minimum
    high_ok = value <= maximum if max_inclusive else value < maximum
    if not (math.isfinite(value) and low_ok and high_ok):
        low, high = ">=" if min_inclusive else ">", "<=" if max_inclusive else "<"
        if maximum == math.inf:
            bound = f"{low} {minimum}"
        elif minimum == -math.inf:
            bound = f"{high} {maximum}"
        else:
            bound = f"in {'[' if min_inclusive else '('}{minimum}, {maximum}{']' if max_inclusive else ')'}"
        raise ValueError(f"`{name}` must be a finite number {bound}; got {value}.")
    return value


def check_bool(value: Any, name: str, allow_none: bool = False) -> bool | None:
    """Returns `value` if it is True or False (or None, with `allow_none`), else raises."""
    if isinstance(value, (bool, np.bool_)) or (allow_none and value is None):
        return None if value is None else bool(value)
    raise TypeError(f"`{name}` must be True{', False or None' if allow_none else ' or False'}; got {show(value)}.")


def check_labels(labels: Any, n: int, name: str = "labels") -> np.ndarray:
    """Returns `labels` as an array of shape (n,), one per image, or raises naming it."""
    try:
        labels = np.asarray(labels)
    except Exception as err:  # ragged lists and similar
        raise ValueError(
            f"`{name}` must be an array of shape ({n},), one per image; could not convert it ({err})."
        ) from None
    if labels.shape != (n,):
        raise ValueError(f"`{name}` must have shape ({n},), one per image; got {labels.shape}.")
    return labels


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """Returns `value` if it is one of `choices`, else raises listing the valid ones."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}; got {show(value)}.")
    return value


def check_shape(value: Any, name: str) -> tuple[int, int, int]:
    """Returns an image shape `(height, width, channels)` as a tuple of positive ints."""
    try:  # any iterable of three: a tuple, list, numpy array or tf.TensorShape
        values = None if isinstance(value, str) else tuple(value)
    except (TypeError, ValueError):  # not iterable, or its iteration fails
        values = None
    if values is None or len(values) != 3:
        raise ValueError(f"`{name}` must be (height, width, channels); got {show(value)}.")
    return tuple(check_int(v, f"{name}[{i}]") for i, v in enumerate(values))  # type: ignore[return-value]


def check_images(x: Any, name: str = "x", image_shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Validates a batch of images and returns it as float32 in [0, 1].

    Args:
      x: array-like of shape (n, height, width, channels), or (n, height, width) for
        single-channel images. uint8 values 0..255 are scaled to [0, 1]; float values
        must already lie in [0, 1].
      name: the argument's name, used in error messages.
      image_shape: if given, the (height, width, channels) the images must have.

    Returns:
      float32 array of shape (n, height, width, channels).

    Raises:
      TypeError: if `x` is not numeric (bool, int, uint or float; complex, dates and
        durations are not pixel values).
      ValueError: on wrong rank or shape, an empty batch, images of zero height, width or
        channels, NaN/Inf, or values out of range.
    """
    if hasattr(x, "numpy") and callable(x.numpy):
        x = x.numpy()
    try:
        arr = np.asarray(x)
    except Exception as err:  # ragged lists and similar
        raise TypeError(f"`{name}` must be a numeric array of images; could not convert it ({err}).") from None
    if arr.dtype.kind not in "biuf":  # numpy counts complex and timedelta as numbers too
        raise TypeError(f"`{name}` must have a numeric dtype (bool, int, uint or float); got dtype {arr.dtype}.")
    if image_shape is not None and arr.shape == tuple(image_shape) and image_shape[0] != 1:
        # Read as (n, H, W) this would fail with a puzzling shape: say what it is.
        raise ValueError(
            f"`{name}` is one image of shape {arr.shape}; pass a batch of shape "
            f"(n, {', '.join(map(str, image_shape))}), e.g. x[None]."
        )
    if arr.ndim == 3 and (image_shape is None or image_shape[2] == 1):
        arr = arr[..., None]
    if arr.ndim != 4:
        if arr.ndim == 3 and image_shape is not None and arr.shape[1:] == tuple(image_shape[:2]):  # grey, for colour
            raise ValueError(
                f"`{name}` must have shape (n, {', '.join(map(str, image_shape))}): the model takes "
                f"{image_shape[2]} channels; got shape {arr.shape}, single-channel images."
            )
        raise ValueError(
            f"`{name}` must have shape (n, height, width, channels) or (n, height, width); got shape {arr.shape}."
        )
    if arr.shape[0] == 0:
        raise ValueError(f"`{name}` is empty: got shape {arr.shape}; expected at least one image.")
    if 0 in arr.shape[1:]:
        raise ValueError(f"`{name}` images must have a positive height, width and channels; got shape {arr.shape}.")
    if image_shape is not None and tuple(arr.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"`{name}` images must have shape {tuple(image_shape)} to match the model; got {tuple(arr.shape[1:])}."
        )
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    kind = "float" if np.issubdtype(arr.dtype, np.floating) else str(arr.dtype)
    original = arr
    # A float64 value beyond float32's range becomes Inf in the cast: counted as out of range
    # below, from the original values, not as the NaN or Inf it never was.
    with np.errstate(over="ignore"):
        arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(original) - np.count_nonzero(np.isfinite(original)))
        if bad:
            raise ValueError(f"`{name}` contains {bad} NaN or Inf pixel values; all pixels must be finite.")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        lo, hi = float(original.min()), float(original.max())
        raise ValueError(
            f"`{name}` {kind} pixel values must lie in [0, 1] (only uint8 is read as 0..255); "
            f"got range [{lo:g}, {hi:g}]."
        )
    return arr
