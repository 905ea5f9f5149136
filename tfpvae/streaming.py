"""Reads images from files as a stream of bounded batches, each image with a stable string id.

Inputs are PNG/JPEG files (one image each), TFRecord files of `tf.train.Example` (a bytes
feature `image` holding a PNG or JPEG, an optional int64 feature `label`) and .npy/.npz
arrays of shape (n, height, width) or (n, height, width, channels), given as a file, a
folder, a glob or a list of those (`list_files`). Paths go through `tf.io.gfile`, so gs://
and hdfs:// work wherever TensorFlow has the file system.

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
  >>> for batch in iter_batches("shards/*.tfrecord", batch_size=512, on_error=bad.append):
  ...     scores = model.score(batch.images)
  ...     write(batch.ids, scores)
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import os
import re
import struct
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from tfpvae._validation import check_int, check_shape

if TYPE_CHECKING:  # only for the annotation: importing TensorFlow is deferred to first use
    import tensorflow as tf

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfr")
ARRAY_SUFFIXES = (".npy", ".npz")
SUFFIXES = IMAGE_SUFFIXES + TFRECORD_SUFFIXES + ARRAY_SUFFIXES

__all__ = [
    "ARRAY_SUFFIXES",
    "IMAGE_SUFFIXES",
    "TFRECORD_SUFFIXES",
    "BadRecordError",
    "Batch",
    "count_records",
    "decode_image",
    "iter_batches",
    "list_files",
    "read_records",
    "stream",
]

# Array rows are copied out of a memory map (or a zip stream) this many bytes at a time:
# large enough that per-chunk overhead vanishes, small enough to be no memory concern.
_CHUNK_BYTES = 1 << 18
# Images per generator step in `stream`: from_generator costs ~100 us a call, so one call
# per image would cap the pipeline near 10,000 images/s.
_STREAM_BATCH = 64
_GLOB_CHARS = frozenset("*?[")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK_HEAD = struct.Struct(">I4s")
_CRC = struct.Struct(">I")
_IHDR = struct.Struct(">IIBBBBB")
_TFRECORD_LENGTH = struct.Struct("<Q")
_decode_targets = threading.local()

Record = tuple[str, "np.ndarray | BadRecordError", "int | None"]


class BadRecordError(ValueError):
    """A record or file that cannot be read as an image; `.id` names it, `.reason` says why.

    Args:
      id: the record's id (see the module docstring), or a file's path when the whole file
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


def _tf():
    from tfpvae._keras import tf

    return tf


def _is_remote(path: str) -> bool:
    return "://" in path


def _open_binary(path: str) -> BinaryIO:
    # Python's own file object is several times faster than GFile per small file; GFile is
    # needed only for file systems Python does not have (gs://, hdfs://, s3://).
    if _is_remote(path):
        return _tf().io.gfile.GFile(path, "rb")
    return open(path, "rb")


def _kind(path: str) -> str | None:
    """ "image", "tfrecord", "array", or None for an unsupported suffix."""
    lower = path.lower()
    for kind, suffixes in (("image", IMAGE_SUFFIXES), ("tfrecord", TFRECORD_SUFFIXES), ("array", ARRAY_SUFFIXES)):
        if lower.endswith(suffixes):
            return kind
    return None


def _check_suffix(path: str, how: str) -> str:
    if _kind(path) is None:
        raise ValueError(
            f"{how} {path!r}, which does not end in one of {', '.join(SUFFIXES)}; expected an image, "
            f"TFRecord or array file."
        )
    return path


def _source_items(source: Any) -> list[str]:
    if isinstance(source, (str, os.PathLike)):
        items = [source]
    elif isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        items = list(source)
        if not items:
            raise ValueError("`source` is an empty list; expected at least one file, folder or glob.")
    else:
        raise TypeError(
            f"`source` must be a path, a glob or a list of those; got {source!r} ({type(source).__name__})."
        )
    out = []
    for item in items:
        text = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
        if not isinstance(text, str) or not text:
            raise TypeError(f"`source` entries must be non-empty str or os.PathLike paths; got {item!r}.")
        out.append(text)
    return out


def list_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The files of an input, sorted and de-duplicated.

    Args:
      source: a file; a folder (its files ending in one of `IMAGE_SUFFIXES`,
        `TFRECORD_SUFFIXES`, `ARRAY_SUFFIXES`, not recursive, other files ignored); a glob
        such as "data/*.tfrecord" (quote it on the command line so the shell leaves it to
        us); or a list of any of those. Paths go through `tf.io.gfile`, so gs:// and
        hdfs:// paths work where TensorFlow has the file system.

    Returns:
      list of file paths as `tf.io.gfile` spells them, sorted, each once.

    Raises:
      FileNotFoundError: a path does not exist, a glob matches nothing or a folder holds no
        supported file; the message names that entry.
      ValueError: a named file, or a file a glob matched, has an unsupported suffix; or
        `source` is an empty list.
      TypeError: `source` is not a path, glob or list of those.
    """
    gfile = _tf().io.gfile
    found: set[str] = set()
    for item in _source_items(source):
        if gfile.isdir(item):
            names = [name for name in gfile.listdir(item) if _kind(name.rstrip("/")) is not None]
            if not names:
                raise FileNotFoundError(
                    f"`source` folder {item!r} holds no file ending in one of {', '.join(SUFFIXES)}."
                )
            found.update(gfile.join(item, name) for name in names)
        elif gfile.exists(item):  # before globbing: a real file may have "[" in its name
            found.add(_check_suffix(item, "`source` names"))
        elif _GLOB_CHARS & set(item):
            matches = gfile.glob(item)
            if not matches:
                raise FileNotFoundError(f"`source` pattern {item!r} matches no file.")
            found.update(_check_suffix(m, f"`source` pattern {item!r} matched") for m in matches)
        else:
            raise FileNotFoundError(f"`source` {item!r} does not exist; expected a file, a folder or a glob.")
    return sorted(found)


# --------------------------------------------------------------------------- decoding


def _decode_plain_png(data: bytes, id: str) -> np.ndarray | None:
    """Decodes an 8-bit grey or RGB, non-interlaced PNG; None for anything else or any oddity.

    Image.open spends ~50 us per small PNG sniffing formats and parsing chunks in Python;
    walking the chunks here and handing the IDAT stream straight to Pillow's zip decoder
    (which undoes the PNG row filters) is about three times faster, which is what makes
    >= 20,000 MNIST-size records/s possible. Every chunk's CRC is checked, which Pillow does
    not do for image data: a flipped bit there would otherwise decode to wrong pixels or
    pass silently. On any other surprise this returns None, and the full Pillow path
    decides, with its own error message.

    Raises:
      BadRecordError: a chunk fails its CRC check.
    """
    from PIL import Image

    if not data.startswith(_PNG_SIGNATURE):
        return None
    pos, size, header, idat = 8, len(data), None, []
    while True:
        if pos + 12 > size:
            return None  # no IEND: truncated
        length, kind = _CHUNK_HEAD.unpack_from(data, pos)
        end = pos + 8 + length
        if end + 4 > size:
            return None
        chunk = data[pos + 8 : end]
        if zlib.crc32(chunk, zlib.crc32(kind)) != _CRC.unpack_from(data, end)[0]:
            name = kind.decode("latin-1")
            raise BadRecordError(id, f"PNG chunk {name!r} fails its CRC check: the data is corrupt.")
        if header is None and kind != b"IHDR":
            return None
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
        pos = end + 4
    if len(header) != 13 or not idat:
        return None
    width, height, depth, colour, compression, filtering, interlace = _IHDR.unpack(header)
    if depth != 8 or colour not in (0, 2) or compression or filtering or interlace:
        return None
    if width * height > (Image.MAX_IMAGE_PIXELS or math.inf) or not width or not height:
        return None  # let Image.open raise its decompression-bomb error
    mode, channels = ("L", 1) if colour == 0 else ("RGB", 3)
    # Decoding into a reused image skips Image.new, a quarter of the decode time at 28x28;
    # one per thread, as Beam and tf.data may decode in several threads at once.
    images = _decode_targets.__dict__.setdefault("images", {})
    im = images.get((mode, width, height))
    if im is None:
        if len(images) >= 8:  # images of many sizes: keep the cache small
            images.clear()
        im = images[(mode, width, height)] = Image.new(mode, (width, height))
    try:
        im.frombytes(b"".join(idat), "zip", mode)
    except ValueError:  # bad zlib data or too little of it
        return None
    return np.frombuffer(im.tobytes(), dtype=np.uint8).reshape(height, width, channels)


def _pil_to_array(im) -> np.ndarray:
    # The one image decoder of tfpvae (datasets.load_images reads through it too); modes as in decode_image.
    if im.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16-bit grey: scale 0..65535 to 0..255; convert("L") would clip above 255 to white.
        arr = np.round(np.asarray(im, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
    elif im.mode in ("L", "LA", "La", "1"):
        arr = np.asarray(im.convert("L"))  # grey, the alpha channel dropped
    elif im.mode in ("P", "PA"):
        palette = im.getpalette()  # flat [r, g, b, r, g, b, ...]
        entries = np.asarray(palette if palette else [0, 0, 0]).reshape(-1, 3)
        grey = bool(np.all(entries == entries[:, :1]))
        arr = np.asarray(im.convert("L" if grey else "RGB"))
    else:
        arr = np.asarray(im.convert("RGB"))
    return arr[..., None] if arr.ndim == 2 else arr


def decode_image(data: bytes, id: str) -> np.ndarray:
    """Decodes one PNG or JPEG image.

    Grey images (1-, 8- or 16-bit, with or without alpha) give one channel, 16-bit values
    scaled to 0..255 (divided by 257, rounded); colour gives three channels, alpha dropped;
    a palette image is grey if every palette entry is grey, else RGB.

    Args:
      data: the encoded image (the file's bytes, or a TFRecord `image` feature).
      id: the record's id, used in the error message.

    Returns:
      uint8 array of shape (height, width, channels), channels 1 or 3; it may be read-only.

    Raises:
      BadRecordError: `data` is not a readable PNG or JPEG image; `.id` is `id`.
    """
    fast = _decode_plain_png(data, id)
    if fast is not None:
        return fast
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as im:
            im.load()
            return _pil_to_array(im)
    except Exception as err:
        # Pillow raises many types on corrupt input (OSError, SyntaxError, struct.error,
        # DecompressionBombError, ...); every one means the same here: this record is bad.
        # Pillow's messages name the in-memory file object by address ("<_io.BytesIO object
        # at 0x7f...>"): drop it, so the same bad record gives the same reason in every run.
        detail = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(err)).strip() or type(err).__name__
        raise BadRecordError(id, f"cannot decode as a PNG or JPEG image ({detail}).") from None


# --------------------------------------------------------------------------- readers


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
        the bare row number as id. Default True.

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
    path = os.fspath(path)
    kind = _kind(path)
    if kind is None:
        _check_suffix(path, "`path` is")
    if kind == "image":
        return _read_image_file(path)
    if kind == "tfrecord":
        return _read_tfrecord(path)
    prefix = "" if single_array else f"{path}:"
    return _read_npz(path, prefix) if path.lower().endswith(".npz") else _read_npy(path, prefix)


def _read_image_file(path: str) -> Iterator[Record]:
    try:
        with _open_binary(path) as f:
            data = f.read()
    except Exception as err:  # OSError locally, tf.errors.OpError through gfile
        yield path, BadRecordError(path, f"cannot read the file ({err})."), None
        return
    try:
        yield path, decode_image(data, path), None
    except BadRecordError as err:
        yield path, err, None


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


def _read_tfrecord(path: str) -> Iterator[Record]:
    tf = _tf()
    from_string = tf.train.Example.FromString
    number = 0
    try:
        for raw in _record_iterator(tf, path):
            rid = f"{path}:{number}"
            image, label = _parse_example(raw, rid, from_string)
            yield rid, image, label
            number += 1
    except tf.errors.DataLossError as err:
        # A bad length or CRC means the frame boundaries can no longer be trusted: this record
        # and everything after it are lost, and the reader cannot resynchronise.
        rid = f"{path}:{number}"
        reason = f"corrupt TFRecord data ({err.message}); this record and the rest of the file could not be read."
        yield rid, BadRecordError(rid, reason), None
    except (tf.errors.OpError, OSError) as err:
        rid = path if number == 0 else f"{path}:{number}"
        message = getattr(err, "message", str(err))
        reason = "cannot read the file" if number == 0 else "reading failed; the rest of the file could not be read"
        yield rid, BadRecordError(rid, f"{reason} ({message})."), None


def _row_shape(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    if dtype.hasobject:
        raise ValueError("it holds Python objects; refusing to unpickle them (only plain arrays are read)")
    if dtype.kind not in "biuf":
        raise ValueError(f"its dtype {dtype} is not numeric; expected uint8 0..255 or float in [0, 1]")
    if len(shape) not in (3, 4):
        raise ValueError(f"it has shape {shape}; expected (n, height, width) or (n, height, width, channels)")
    return tuple(shape[1:])


def _chunk_rows(row_shape: tuple[int, ...], dtype: np.dtype) -> int:
    return max(1, _CHUNK_BYTES // max(1, math.prod(row_shape) * dtype.itemsize))


def _as_images(chunk: np.ndarray) -> np.ndarray:
    chunk = chunk[..., None] if chunk.ndim == 3 else chunk
    return chunk if chunk.dtype == np.uint8 else chunk.astype(np.float32, copy=False)


def _array_records(prefix: str, chunks: Iterator[tuple[np.ndarray, np.ndarray | None]], path: str) -> Iterator[Record]:
    """Yields the rows of (images, labels) chunks; a read failure ends the file with one error."""
    row = 0
    while True:
        try:
            images, labels = next(chunks)
        except StopIteration:
            return
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            rid = f"{prefix}{row}"
            reason = f"cannot read {path} from this row on ({err}); the rest of the file could not be read."
            yield rid, BadRecordError(rid, reason), None
            return
        images = _as_images(images)
        whole = None
        if labels is not None and labels.dtype.kind == "f":
            whole = np.isfinite(labels) & (labels == np.round(labels))
        for i in range(len(images)):
            rid = f"{prefix}{row}"
            row += 1
            if labels is None:
                yield rid, images[i], None
            elif whole is not None and not whole[i]:
                yield rid, BadRecordError(rid, f"label {labels[i]:g} in {path} is not a whole number."), None
            else:
                yield rid, images[i], int(labels[i])


def _read_npy(path: str, prefix: str) -> Iterator[Record]:
    if _is_remote(path):  # no memory map over a network file system: read it as a stream
        yield from _read_npz(path, prefix, single_npy=True)
        return
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
            array.close()
            raise ValueError("it is an .npz archive, not a .npy file")
        row_shape = _row_shape(array.shape, array.dtype)
    except Exception as err:  # numpy raises ValueError, OSError, EOFError, ... on a bad file
        yield path, BadRecordError(path, f"cannot read the .npy file: {err}."), None
        return
    step = _chunk_rows(row_shape, array.dtype)
    # np.array copies one chunk out of the map: only those pages need to be resident.
    chunks = ((np.array(array[start : start + step]), None) for start in range(0, len(array), step))
    yield from _array_records(prefix, chunks, path)


def _npy_header(fp: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp)
    raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")


def _stream_chunks(fp: BinaryIO, n: int, row_shape: tuple[int, ...], dtype: np.dtype, step: int):
    row_bytes = math.prod(row_shape) * dtype.itemsize
    for start in range(0, n, step):
        count = min(step, n - start)
        data = fp.read(count * row_bytes)
        if len(data) < count * row_bytes:
            raise EOFError(f"the data ends after row {start + len(data) // max(row_bytes, 1)} of {n}")
        yield np.frombuffer(data, dtype=dtype).reshape((count, *row_shape))


def _array_member(stack: contextlib.ExitStack, zf: zipfile.ZipFile, name: str):
    """(n, row shape, dtype, chunk source) of one .npy member; Fortran order is loaded whole."""
    fp = stack.enter_context(zf.open(name))
    shape, fortran, dtype = _npy_header(fp)
    if dtype.hasobject:
        raise ValueError(f"'{name}' holds Python objects; refusing to unpickle them (only plain arrays are read)")
    if not shape:
        raise ValueError(f"'{name}' is a scalar; expected an array with one row per image")
    if fortran:  # rows of a Fortran-order array are not contiguous in the file
        with zf.open(name) as whole:
            array = np.lib.format.read_array(whole, allow_pickle=False)
        return shape, lambda step: (array[s : s + step] for s in range(0, shape[0], step)), dtype
    return shape, lambda step: _stream_chunks(fp, shape[0], tuple(shape[1:]), dtype, step), dtype


def _read_npz(path: str, prefix: str, single_npy: bool = False) -> Iterator[Record]:
    what = ".npy" if single_npy else ".npz"
    with contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(_open_binary(path))
            if single_npy:
                shape, fortran, dtype = _npy_header(f)
                if fortran:
                    raise ValueError("it is stored in Fortran order; re-save it in C order to stream it")
                row_shape = _row_shape(shape, dtype)
                step = _chunk_rows(row_shape, dtype)
                x_chunks, y_chunks = _stream_chunks(f, shape[0], row_shape, dtype, step), None
            else:
                zf = stack.enter_context(zipfile.ZipFile(f))
                names = set(zf.namelist())
                x_key = next((k for k in ("x", "images") if f"{k}.npy" in names), None)
                if x_key is None:
                    found = ", ".join(sorted(name.removesuffix(".npy") for name in names)) or "nothing"
                    raise ValueError(f"it holds no array named 'x' or 'images' (found: {found})")
                shape, x_source, dtype = _array_member(stack, zf, f"{x_key}.npy")
                row_shape = _row_shape(shape, dtype)
                step = _chunk_rows(row_shape, dtype)
                x_chunks, y_chunks = x_source(step), None
                y_key = next((k for k in ("y", "labels") if f"{k}.npy" in names), None)
                if y_key is not None:
                    y_shape, y_source, y_dtype = _array_member(stack, zf, f"{y_key}.npy")
                    if tuple(y_shape) not in ((shape[0],), (shape[0], 1)):
                        expected = f"one label per image, shape ({shape[0]},)"
                        raise ValueError(f"labels '{y_key}' must hold {expected}; got shape {y_shape}")
                    if y_dtype.kind not in "biuf":
                        raise ValueError(f"labels '{y_key}' must be whole numbers; got dtype {y_dtype}")
                    y_chunks = (y.reshape(-1) for y in y_source(step))
        except Exception as err:  # zipfile, zlib and numpy raise many types on a bad file
            yield path, BadRecordError(path, f"cannot read the {what} file: {err}."), None
            return
        pairs = zip(x_chunks, y_chunks) if y_chunks is not None else ((x, None) for x in x_chunks)
        yield from _array_records(prefix, iter(pairs), path)


# --------------------------------------------------------------------------- batches


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
            paths.append(_check_suffix(os.fspath(file), "`files` holds"))
        # Ids come from the whole input, so one worker's shard names rows as a full read would.
        listed = list_files(source) if source is not None else paths
    single = len(listed) == 1 and _kind(listed[0]) == "array"
    return paths, single


def _check_on_error(on_error: Any) -> Callable[[BadRecordError], None] | None:
    if on_error is not None and not callable(on_error):
        raise TypeError(f"`on_error` must be None (raise) or a callable taking a BadRecordError; got {on_error!r}.")
    return on_error


def _image_problem(image: np.ndarray, expected: tuple[int, ...] | None) -> str | None:
    """Why `image` is not a valid image of shape `expected`, or None: the checks of check_images."""
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
    capacity = min(batch_size, 64)
    ids: list[str] = []
    labels: list[int | None] = []
    scale = np.float32(255.0)
    for path in paths:
        for rid, image, label in read_records(path, single_array=single):
            if not isinstance(image, BadRecordError):
                problem = _image_problem(image, expected)
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
      batch_size: most images per batch, int >= 1. Default 1024.
      image_shape: (height, width, channels) every image must have; default None, which
        takes the first good image's shape.
      on_error: None (default) raises the first `BadRecordError`; a callable is called
        with each bad record, which is then skipped (count or log them there: none is
        dropped silently). Bad records are unreadable images or files, Examples without
        `image`, broken TFRecord framing, images of another shape ("has shape (32, 32, 3);
        expected (28, 28, 1)") and float images with values outside [0, 1] or not finite.
      files: an explicit list of files to read (e.g. one worker's shard) instead of
        expanding `source`; `source`, if also given, still decides the array row ids, so a
        shard names rows as a read of the whole input does. Default None.

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
      >>> for batch in iter_batches("data/*.tfrecord", batch_size=256, on_error=bad.append):
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
      image_shape: (height, width, channels) of every image. Default None: read the input
        up to its first good record to find it (the dataset's element spec needs it).
      on_error: as for `iter_batches`. With None, a bad record stops iteration with a
        TensorFlow error (InvalidArgumentError or UnknownError) whose message contains
        the `BadRecordError` text, id first.
      files: as for `iter_batches`.
      with_labels: add a "label" entry. Default False.

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
    tf = _tf()
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


# --------------------------------------------------------------------------- counting


def _count_tfrecord(path: str) -> int:
    # Frame = 8-byte length, 4-byte CRC, data, 4-byte CRC: hop from length to length.
    with _open_binary(path) as f:
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


def _count_array(path: str) -> int:
    if path.lower().endswith(".npy"):
        with _open_binary(path) as f:
            shape = _npy_header(f)[0]
    else:
        with _open_binary(path) as f, zipfile.ZipFile(f) as zf:
            names = set(zf.namelist())
            key = next((k for k in ("x.npy", "images.npy") if k in names), None)
            if key is None:
                return 1  # read_records yields one error for it
            with zf.open(key) as member:
                shape = _npy_header(member)[0]
    return shape[0] if len(shape) in (3, 4) else 1


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
        kind = _kind(path)
        if kind == "image":
            total += 1
            continue
        try:
            total += _count_tfrecord(path) if kind == "tfrecord" else _count_array(path)
        except Exception:  # unreadable: read_records yields one error for it
            total += 1
    return total
