"""Reads TFRecord files of `tf.train.Example` as records, and counts their frames without decoding.

Each Example holds a bytes feature `image` (one PNG or JPEG, decoded by
`tfpvae.image_files.decode_image`) and an optional int64 feature `label`; a record's id
is `"{path}:{n}"`, n 0-based in file order. Frames are CRC-checked; broken framing ends
the file with one `BadRecordError`, since later frame boundaries cannot be trusted.
Compressed files (GZIP, ZLIB) are not read; their one error says so.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from tfpvae.image_files import decode_image
from tfpvae.input_files import open_binary
from tfpvae.records import BadRecordError, Record

__all__ = ["count_tfrecord", "read_tfrecord"]

_TFRECORD_LENGTH = struct.Struct("<Q")
_REST_LOST = "this record and the rest of the file could not be read."


class _SilenceDeprecation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "tf_record_iterator" not in record.getMessage()


def _record_iterator(tf, path: str) -> Iterator[bytes]:
    # tf_record_iterator is deprecated in favour of tf.data, but tf.data costs a TF op per
    # record, ~50x slower from Python; its warning (logged once per process) would only
    # confuse users, so it is filtered out of TensorFlow's logger for this call.
    logger = tf.get_logger()
    quiet = _SilenceDeprecation()
    logger.addFilter(quiet)
    try:
        return tf.compat.v1.io.tf_record_iterator(path)
    finally:
        logger.removeFilter(quiet)


def _frame_ends(frames: BinaryIO) -> Iterator[int | str]:
    """The end offset of each frame in turn, from its length alone; a reason string for one that overruns the file.

    TensorFlow allocates a frame's stated length before reading it, so a corrupt or crafted
    length of 2**40 kills the process (a segfault, not an exception) and one of 10**9
    allocates a gigabyte. Every length is checked against the file's size here first, on
    the same walk from frame to frame that TensorFlow takes (a frame whose length fails its
    CRC stops TensorFlow before the next one). Ends at the end of the file or at a header
    too short to hold a length, which TensorFlow reports itself.
    """
    frames.seek(0, 2)
    size, pos = frames.tell(), 0
    while True:
        frames.seek(pos)
        head = frames.read(8)
        if len(head) < 8:
            return
        length = _TFRECORD_LENGTH.unpack(head)[0]
        if pos + 16 + length > size:
            yield f"frame length {length} at byte {pos} runs past the end of the file at byte {size}"
            return
        pos += 16 + length
        yield pos


def _compression(head: bytes) -> str | None:
    """ "GZIP" or "ZLIB" if a file's first bytes decompress as such a stream, else None.

    Only consulted once the first frame has failed: then its bytes are not a frame.
    """
    if len(head) < 2:  # an empty prefix "decompresses" as anything
        return None
    for kind, wbits in (("GZIP", 31), ("ZLIB", 15)):
        try:
            zlib.decompressobj(wbits).decompress(head)
        except zlib.error:
            continue
        return kind
    return None


def _framing_error(rid: str, head: bytes, detail: str) -> BadRecordError:
    """The error of broken framing at record `rid`: "compressed" where the file's first bytes
    `head` (empty past the first record) are a GZIP or ZLIB stream, else "corrupt"."""
    kind = _compression(head)
    if kind is None:
        return BadRecordError(rid, f"corrupt TFRecord data ({detail}); {_REST_LOST}")
    return BadRecordError(
        rid,
        f"the file is {kind}-compressed; only uncompressed TFRecord files are read (write them with "
        "tf.io.TFRecordWriter without `options`, or decompress them first).",
    )


def _parse_example(raw: bytes, rid: str, from_string) -> tuple[np.ndarray | BadRecordError, int | None]:
    try:
        example = from_string(raw)
    except Exception as err:  # protobuf's DecodeError; google.protobuf is not imported here
        return BadRecordError(rid, f"is not a tf.train.Example ({err})."), None
    features = example.features.feature
    if "image" not in features:
        found = ", ".join(sorted(features)) or "none"
        return BadRecordError(
            rid,
            f"the Example has no feature 'image' (found: {found}); expected a bytes feature "
            f"holding one PNG or JPEG image.",
        ), None
    image = features["image"]
    if image.WhichOneof("kind") != "bytes_list" or len(image.bytes_list.value) != 1:
        return BadRecordError(rid, "feature 'image' must be a bytes_list holding exactly one encoded image."), None
    label = None
    if "label" in features:
        feature = features["label"]
        values = getattr(feature, feature.WhichOneof("kind") or "int64_list").value
        if len(values) > 1 or (values and feature.WhichOneof("kind") != "int64_list"):
            return BadRecordError(rid, "feature 'label' must be an int64_list holding one value."), None
        label = int(values[0]) if values else None
    try:
        return decode_image(image.bytes_list.value[0], rid), label
    except BadRecordError as err:
        return err, label


def read_tfrecord(path: str) -> Iterator[Record]:
    """The records of one TFRecord file of `tf.train.Example`, in file order, read lazily.

    Args:
      path: the file, local or on any file system `tf.io.gfile` has.

    Yields:
      (id, image, label) per Example, id f"{path}:{n}": image the uint8 array of its
      `image` feature, or the `BadRecordError` that says why it cannot be read; label an
      int, or None when the Example has no `label` (or an empty one). Broken framing
      yields one error for that record number and ends the file; a file that cannot be
      opened yields one error whose id is `path`.
    """
    from tfpvae._keras import tf

    from_string = tf.train.Example.FromString
    number, head = 0, b""
    try:
        with open_binary(path) as frames:
            head = frames.read(256)
            records = _record_iterator(tf, path)
            for end in _frame_ends(frames):
                rid = f"{path}:{number}"
                if isinstance(end, str):
                    yield rid, _framing_error(rid, head if number == 0 else b"", end), None
                    return
                raw = next(records, None)
                if raw is None:  # the file shrank while being read
                    return
                image, label = _parse_example(raw, rid, from_string)
                yield rid, image, label
                number += 1
            next(records, None)  # a header cut short at the end: TensorFlow raises DataLossError for it
    except tf.errors.DataLossError as err:
        # A bad length or CRC means the frame boundaries can no longer be trusted: this record
        # and everything after it are lost, and the reader cannot resynchronise.
        rid = f"{path}:{number}"
        yield rid, _framing_error(rid, head if number == 0 else b"", err.message), None
    except (tf.errors.OpError, OSError) as err:
        rid = path if number == 0 else f"{path}:{number}"
        message = getattr(err, "message", str(err))
        reason = "cannot read the file" if number == 0 else "reading failed; the rest of the file could not be read"
        yield rid, BadRecordError(rid, f"{reason} ({message})."), None


def count_tfrecord(path: str) -> int:
    """The number of frames of a TFRecord file, from their lengths alone (no CRC check, no decoding).

    A truncated last frame counts as one record, as `read_tfrecord` yields one error for it.

    Raises:
      OSError, tf.errors.OpError: the file cannot be read.
    """
    # Frame = 8-byte length, 4-byte CRC, data, 4-byte CRC: hop from length to length.
    with open_binary(path) as f:
        f.seek(0, 2)
        size = f.tell()
        pos = count = 0
        while pos < size:
            count += 1
            f.seek(pos)
            head = f.read(8)
            if len(head) < 8:
                break  # a truncated frame is one (bad) record
            pos += 16 + _TFRECORD_LENGTH.unpack(head)[0]
    return count
