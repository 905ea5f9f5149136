"""What a record read from a file is: its id, the error of an unreadable one, the checks of a good one.

Every reader of `tfpvae.streaming` yields `Record`s: (id, image or `BadRecordError`,
label). Ids are stable across runs, machines and shardings of the same input:

  - a PNG/JPEG file: the path exactly as listed (`"data/img_007.png"`);
  - a TFRecord record: `"{path}:{record_number}"`, 0-based in file order (`"a.tfrecord:12"`);
  - an array row: `"{row}"` when the input is exactly one .npy/.npz file (`"12"`, the ids
    the rest of tfpvae gives rows of an in-memory array), else `"{path}:{row}"`.

A record that cannot be used is a `BadRecordError` naming its id, never dropped silently;
`image_problem` holds the checks every decoded image must pass (shape, values in [0, 1]).
"""

from __future__ import annotations

import numpy as np

__all__ = ["BadRecordError", "Record", "image_problem"]


class BadRecordError(ValueError):
    """A record or file that cannot be read as an image; `.id` names it, `.reason` says why.

    Args:
      id: the record's id (see `tfpvae.streaming`), or a file's path when the whole file
        cannot be read.
      reason: what is wrong, e.g. "has shape (32, 32, 3); expected (28, 28, 1)".
    """

    def __init__(self, id: str, reason: str):
        super().__init__(f"{id}: {reason}")
        self.id = id
        self.reason = reason

    def __reduce__(self):
        # Exceptions pickle as cls(*args) and args holds the joined message only; Beam and
        # multiprocessing workers send errors back pickled, so rebuild from both fields.
        return type(self), (self.id, self.reason)


Record = tuple[str, "np.ndarray | BadRecordError", "int | None"]
"""(id, image, label) as the readers yield it: image a uint8 or float32 array (height, width,
channels) or the `BadRecordError` saying why the record cannot be read; label an int or None."""


def image_problem(image: np.ndarray, expected: tuple[int, ...] | None) -> str | None:
    """Why a decoded image cannot be scored, or None if it can: the checks of `tfpvae.streaming.iter_batches`.

    They are the per-image checks `check_images` makes of an in-memory array (a positive
    height, width and channels; finite values in [0, 1] unless uint8), so a record read
    from a file is accepted or refused exactly as the same image in memory would be.

    Args:
      image: a uint8 array (any values) or a float array (values must be finite and in
        [0, 1]) of shape (height, width, channels).
      expected: the shape it must have; None accepts any shape.

    Returns:
      None, or the reason as a sentence, e.g. "has shape (32, 32, 3); expected (28, 28, 1).",
      ready for `BadRecordError(id, reason)`.
    """
    if 0 in image.shape:  # an array file may hold (n, 0, 0) "images": no pixel to score
        return f"has shape {image.shape}; an image needs a positive height, width and channels."
    if expected is not None and image.shape != expected:
        return f"has shape {image.shape}; expected {expected}."
    if image.dtype == np.uint8:
        return None
    finite = np.isfinite(image)
    if not finite.all():
        return f"contains {image.size - int(np.count_nonzero(finite))} NaN or Inf pixel values; all must be finite."
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        return f"pixel values must lie in [0, 1] (only uint8 is read as 0..255); got range [{lo:g}, {hi:g}]."
    return None
