"""Reads images from files as a stream of bounded batches, each image with a stable string id.

Inputs are PNG/JPEG files (one image each), TFRecord files of `tf.train.Example` (a bytes
feature `image` holding a PNG or JPEG, an optional int64 feature `label`) and .npy/.npz
arrays of shape (n, height, width) or (n, height, width, channels), given as a file, a
folder, a glob or a list of those (`list_files`). Paths go through `tf.io.gfile`, so gs://
and hdfs:// work wherever TensorFlow has the file system.

This module is the entry point: `iter_batches` and `stream` batch what `read_records`
reads. The parts it builds on, each re-exported here, are `tfpvae.input_files` (listing
files), `tfpvae.records` (ids, `BadRecordError`, the image checks) and one reader per
format: `tfpvae.image_files`, `tfpvae.tfrecords` and `tfpvae.array_files`.

Ids, stable across runs, machines and shardings of the same input:

  - a PNG/JPEG file: the path exactly as listed (`"data/img_007.png"`);
  - a TFRecord record: `"{path}:{record_number}"`, 0-based in file order (`"a.tfrecord:12"`);
  - an array row: `"{row}"` when the input is exactly one .npy/.npz file (`"12"`, the ids
    the rest of tfpvae gives rows of an in-memory array), else `"{path}:{row}"`.

Memory bound: `iter_batches` holds at most one batch of `batch_size` float32 images, one
decoded image and one read chunk (about 256 KiB of array rows, or one TFRecord record); .npy
files are memory-mapped and .npz members decompressed as a stream, so peak memory does
not grow with the number of images or files. `stream` adds one batch of 64 images.

A record that cannot be read (corrupt image, Example without `image`, broken TFRecord
framing, wrong shape, values outside [0, 1]) is a `BadRecordError` naming its id; the
caller chooses to stop on it or to collect it and go on, and none is dropped silently.

Examples:
  >>> bad = []
  >>> batches = iter_batches("shards/*.tfrecord", batch_size=512,
  ...                        on_error=bad.append)
  >>> for batch in batches:
  ...     scores = model.score(batch.images)
  ...     write(batch.ids, scores)
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tfpvae._validation import check_int, check_shape
from tfpvae.array_files import count_array_file, read_array_file
from tfpvae.image_files import decode_image, read_image_file
from tfpvae.input_files import (
    ARRAY_SUFFIXES,
    IMAGE_SUFFIXES,
    SUFFIXES,
    TFRECORD_SUFFIXES,
    check_suffix,
    file_kind,
    is_single_array,
    list_files,
)
from tfpvae.records import BadRecordError, Record, image_problem
from tfpvae.tfrecords import count_tfrecord, read_tfrecord

if TYPE_CHECKING:  # only for the annotation: importing TensorFlow is deferred to first use
    import tensorflow as tf

# The public names of the parts are re-exported: code and docs import them from here.
__all__ = [
    "ARRAY_SUFFIXES",
    "IMAGE_SUFFIXES",
    "SUFFIXES",
    "TFRECORD_SUFFIXES",
    "BadRecordError",
    "Batch",
    "Record",
    "count_records",
    "decode_image",
    "iter_batches",
    "list_files",
    "read_records",
    "stream",
]

# Images per generator step in `stream`: from_generator costs ~100 us a call, so one call
# per image would cap the pipeline near 10,000 images/s.
_STREAM_BATCH = 64
# Most bytes the first batch's buffer starts with, before it grows by doubling.
_FIRST_BATCH_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on arrays has no single truth value
class Batch:
    """One batch of validated images with their ids.

    Attributes:
      images: float32 array of shape (b, height, width, channels), values in [0, 1].
      ids: list of b ids, one per image (see the module docstring).
      labels: int64 array of shape (b,), -1 for a record without a label; None when no
        record of this batch has a label.
      labelled: bool array of shape (b,), True for the records that have a label, set only
        when some but not all do; default None (all or none do, as `labels` says). It tells
        a missing label from a real label -1, which `labels` alone cannot.
    """

    images: np.ndarray
    ids: list[str]
    labels: np.ndarray | None
    labelled: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


def read_records(path: str | os.PathLike, *, single_array: bool = True) -> Iterator[Record]:
    """The records of one file, in file order, read lazily.

    Args:
      path: one file; its suffix picks the reader:

        - PNG/JPEG: one record, id = `path` exactly as given, no label.
        - TFRecord of `tf.train.Example`: one record per Example, id = f"{path}:{n}"
          (n 0-based); bytes feature `image` (PNG or JPEG, grey or RGB) and optional
          int64 feature `label` (one value; an empty list means no label). Frames are
          CRC-checked.
        - .npy: an array (n, height, width) or (n, height, width, channels), memory-mapped
          (`np.load(mmap_mode="r")`) and copied out about 256 KiB of rows at a time, never
          whole; no labels.
        - .npz: array `x` or `images` as for .npy, optional labels `y` or `labels` of shape
          (n,) or (n, 1): int, bool or whole floats (any other dtype or shape makes the
          file unreadable; a fraction, that row a bad record). A compressed member cannot
          be memory-mapped; it is decompressed as a stream, again about 256 KiB of rows at
          a time. An array saved in Fortran order cannot be read by rows and is loaded whole.

        Array row ids are str(row) when `single_array`, else f"{path}:{row}".
      single_array: whether `path` is the only file of the input, which gives array rows
        the bare row number as id.

    Yields:
      (id, image, label): image is a uint8 array (height, width, channels) or a float32
      array (height, width, channels) as stored (other numeric dtypes become float32;
      values are checked by `iter_batches`, not here), or the `BadRecordError` that says
      why the record cannot be read; label is an int or None. A corrupt record, an Example
      without `image`, broken TFRecord framing (one error for that record number, after
      which the rest of the file is unreadable) or an unreadable file (one error whose id
      is the path) is yielded, not raised, so the caller decides.

    Raises:
      ValueError: `path` has an unsupported suffix (raised at the call, before iterating).
    """
    path = check_suffix(os.fspath(path), "`path` is")
    kind = file_kind(path)
    if kind == "image":
        return read_image_file(path)
    if kind == "tfrecord":
        return read_tfrecord(path)
    return read_array_file(path, single_array=single_array)


def _resolve(source: Any, files: Sequence[str | os.PathLike] | None) -> tuple[list[str], bool]:
    """(files to read, whether array rows get bare row numbers as ids)."""
    if files is None:
        if source is None:
            raise ValueError("Pass `source` (a file, folder, glob or list) or `files` (an explicit file list).")
        paths = list_files(source)
        listed = paths
    else:
        if isinstance(files, (str, os.PathLike, bytes)) or not isinstance(files, Sequence):
            raise TypeError(f"`files` must be a list of file paths; got {files!r}.")
        paths = []
        for file in files:
            if not isinstance(file, (str, os.PathLike)):
                raise TypeError(f"`files` entries must be str or os.PathLike paths; got {file!r}.")
            paths.append(check_suffix(os.fspath(file), "`files` holds"))
        # Ids come from the whole input, so one worker's shard names rows as a full read would.
        listed = list_files(source) if source is not None else paths
    return paths, is_single_array(listed)


def _check_on_error(on_error: Any) -> Callable[[BadRecordError], None] | None:
    if on_error is not None and not callable(on_error):
        raise TypeError(f"`on_error` must be None (raise) or a callable taking a BadRecordError; got {on_error!r}.")
    return on_error


def _batches(
    paths: Sequence[str],
    single: bool,
    batch_size: int,
    expected: tuple[int, ...] | None,
    on_error: Callable[[BadRecordError], None] | None,
) -> Iterator[Batch]:
    buffer: np.ndarray | None = None
    # The first batch grows by doubling, so a huge batch_size over a small input never
    # allocates batch_size images up front; once one batch filled, later ones start full size.
    # It starts at 64 images, or fewer large ones (set at the first image; a decoded PNG may
    # have 89 million pixels, and 64 of those in float32 would be 22 GB).
    capacity = 0
    ids: list[str] = []
    labels: list[int | None] = []
    scale = np.float32(255.0)
    for path in paths:
        for rid, image, label in read_records(path, single_array=single):
            if not isinstance(image, BadRecordError):
                problem = image_problem(image, expected)
                image = image if problem is None else BadRecordError(rid, problem)
            if isinstance(image, BadRecordError):
                if on_error is None:
                    raise image
                on_error(image)
                continue
            if expected is None:
                expected = image.shape
            count = len(ids)
            if buffer is None or count == len(buffer):
                if not capacity:
                    image_bytes = max(1, 4 * math.prod(expected))
                    capacity = max(1, min(batch_size, 64, _FIRST_BATCH_BYTES // image_bytes))
                grown = np.empty((max(capacity, min(batch_size, 2 * count)), *expected), dtype=np.float32)
                if count:
                    grown[:count] = buffer[:count]
                buffer = grown
            if image.dtype == np.uint8:
                np.divide(image, scale, out=buffer[count])  # as check_images: float32(x) / float32(255)
            else:
                buffer[count] = image
            ids.append(rid)
            labels.append(label)
            if len(ids) == batch_size:
                yield _make_batch(buffer, ids, labels)
                buffer, ids, labels, capacity = None, [], [], batch_size
    if ids:
        yield _make_batch(buffer, ids, labels)


def _make_batch(buffer: np.ndarray, ids: list[str], labels: list[int | None]) -> Batch:
    images = buffer if len(buffer) == len(ids) else buffer[: len(ids)].copy()
    has = [label is not None for label in labels]
    if not any(has):
        return Batch(images=images, ids=ids, labels=None)
    label_array = np.array([-1 if v is None else v for v in labels], dtype=np.int64)
    return Batch(images=images, ids=ids, labels=label_array, labelled=None if all(has) else np.array(has))


def iter_batches(
    source: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    batch_size: int = 1024,
    image_shape: tuple[int, int, int] | None = None,
    on_error: Callable[[BadRecordError], None] | None = None,
    files: Sequence[str | os.PathLike] | None = None,
) -> Iterator[Batch]:
    """Batches of validated images from files, in `list_files` order and file order.

    Every batch but the last holds exactly `batch_size` images; batches run across file
    boundaries. At most one batch is held in memory (see the module docstring).

    Args:
      source: anything `list_files` takes: a file, folder, glob or list of those.
      batch_size: most images per batch, int >= 1.
      image_shape: (height, width, channels) every image must have; None takes the
        first good image's shape.
      on_error: None raises the first `BadRecordError`; a callable is called
        with each bad record, which is then skipped (count or log them there: none is
        dropped silently). Bad records are unreadable images or files, Examples without
        `image`, broken TFRecord framing, images of another shape ("has shape (32, 32, 3);
        expected (28, 28, 1)") and float images with values outside [0, 1] or not finite.
      files: an explicit list of files to read (e.g. one worker's shard) instead of
        expanding `source`; `source`, if also given, still decides the array row ids, so a
        shard names rows as a read of the whole input does.

    Yields:
      `Batch`: images float32 (b, height, width, channels) in [0, 1] (uint8 divided by
      255, float as stored), b ids, and int64 labels (b,) with -1 for unlabelled records,
      or None when no record of the batch has a label (`Batch.labelled` marks which have
      one when only some do).

    Raises:
      FileNotFoundError, ValueError, TypeError: bad `source`, `files`, `batch_size`,
        `image_shape` or `on_error` (raised at the call, before iterating).
      BadRecordError: while iterating, a bad record when `on_error` is None; the message
        starts with the record's id.

    Examples:
      >>> bad = []
      >>> batches = iter_batches("data/*.tfrecord", batch_size=256,
      ...                        on_error=bad.append)
      >>> for batch in batches:
      ...     print(batch.images.shape, batch.ids[0])
      (256, 28, 28, 1) data/a.tfrecord:0
    """
    batch_size = check_int(batch_size, "batch_size")
    expected = None if image_shape is None else check_shape(image_shape, "image_shape")
    on_error = _check_on_error(on_error)
    paths, single = _resolve(source, files)
    return _batches(paths, single, batch_size, expected, on_error)


def stream(
    source: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    image_shape: tuple[int, int, int] | None = None,
    on_error: Callable[[BadRecordError], None] | None = None,
    files: Sequence[str | os.PathLike] | None = None,
    with_labels: bool = False,
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of the records `iter_batches` reads, one element per image.

    Built with `tf.data.Dataset.from_generator` over `iter_batches` (64 images a step,
    then unbatched), so it reads lazily, can be iterated again, and holds one small batch.

    Args:
      source: anything `list_files` takes.
      image_shape: (height, width, channels) of every image. None: read the input
        up to its first good record to find it (the dataset's element spec needs it).
      on_error: as for `iter_batches`. With None, a bad record stops iteration with a
        TensorFlow error (InvalidArgumentError or UnknownError) whose message contains
        the `BadRecordError` text, id first.
      files: as for `iter_batches`.
      with_labels: add a "label" entry.

    Returns:
      dataset of dicts {"image": float32 (height, width, channels) in [0, 1], "id":
      tf.string scalar (UTF-8 bytes of the id)} plus, with `with_labels`, "label": int64
      scalar, -1 for a record without a label.

    Raises:
      ValueError: no good record to take the image shape from (pass `image_shape`), or a
        bad argument as for `iter_batches`.

    Examples:
      >>> ds = stream("data/*.tfrecord", with_labels=True).batch(128).prefetch(2)
      >>> next(iter(ds))["image"].shape
      TensorShape([128, 28, 28, 1])
    """
    from tfpvae._keras import tf

    on_error = _check_on_error(on_error)
    if not isinstance(with_labels, bool):
        raise TypeError(f"`with_labels` must be True or False; got {with_labels!r}.")
    paths, single = _resolve(source, files)
    if image_shape is not None:
        shape = check_shape(image_shape, "image_shape")
    else:
        # Bad records met while peeking are reported when the dataset itself is iterated.
        first = next(_batches(paths, single, 1, None, on_error=lambda err: None), None)
        if first is None:
            raise ValueError(
                f"`source` {source if files is None else files!r} holds no readable image to take the image shape "
                f"from; pass `image_shape`."
            )
        shape = tuple(first.images.shape[1:])

    def generate():
        for batch in _batches(paths, single, _STREAM_BATCH, shape, on_error):
            element = {"image": batch.images, "id": np.array([i.encode() for i in batch.ids], dtype=object)}
            if with_labels:
                none = np.full(len(batch), -1, dtype=np.int64)
                element["label"] = none if batch.labels is None else batch.labels
            yield element

    signature = {
        "image": tf.TensorSpec((None, *shape), tf.float32),
        "id": tf.TensorSpec((None,), tf.string),
    }
    if with_labels:
        signature["label"] = tf.TensorSpec((None,), tf.int64)
    return tf.data.Dataset.from_generator(generate, output_signature=signature).unbatch()


def count_records(source: str | os.PathLike | Sequence[str | os.PathLike]) -> int:
    """The number of records in an input, read from headers and frames without decoding.

    For progress bars: a PNG/JPEG file counts 1, a TFRecord file its frames (lengths only,
    not CRCs), an array file its rows (from the .npy header). A file that cannot be read
    counts 1, as `read_records` yields one error for it. Exact for intact files; for a
    corrupt one it may exceed what `read_records` yields, since reading stops at the damage.

    Args:
      source: anything `list_files` takes.

    Returns:
      int >= 0.

    Raises:
      FileNotFoundError, ValueError, TypeError: as for `list_files`.
    """
    total = 0
    for path in list_files(source):
        kind = file_kind(path)
        if kind == "image":
            total += 1
            continue
        try:
            total += count_tfrecord(path) if kind == "tfrecord" else count_array_file(path)
        except Exception:  # unreadable: read_records yields one error for it
            total += 1
    return total
