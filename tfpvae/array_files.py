"""Reads .npy and .npz arrays as records, a chunk of rows at a time, never whole; counts their rows.

A .npy file holds images of shape (n, height, width) or (n, height, width, channels),
uint8 (0..255) or float ([0, 1]; other numeric dtypes become float32), and no labels. An
.npz holds them as `x` or `images`, with optional labels `y` or `labels` of shape (n,) or
(n, 1): int, bool or whole floats (any other dtype or shape makes the file unreadable; a
fraction, that row a bad record). Pickled objects are refused, never loaded.

Memory holds one chunk of about 256 KiB of rows whatever the file's size: a local .npy is
memory-mapped, and an .npz member (or a remote .npy) decompressed as a stream. Only an
.npz member saved in Fortran order, whose rows are not contiguous, is loaded whole. An .npz
member is read through once before its first row, for the zip's CRC check: a damaged
member is one error for its file, not rows of wrong pixels.
"""

from __future__ import annotations

import contextlib
import math
import zipfile
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from tfpvae.input_files import is_remote, open_binary
from tfpvae.records import BadRecordError, Record

__all__ = ["count_array_file", "read_array_file"]

# Array rows are copied out of a memory map (or a zip stream) this many bytes at a time:
# large enough that per-chunk overhead vanishes, small enough to be no memory concern.
_CHUNK_BYTES = 1 << 18


def _row_shape(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    if dtype.hasobject:
        raise ValueError("it holds Python objects; refusing to unpickle them (only plain arrays are read)")
    if dtype.kind not in "biuf":
        raise ValueError(f"its dtype {dtype} is not numeric; expected uint8 0..255 or float in [0, 1]")
    if len(shape) not in (3, 4):
        raise ValueError(f"it has shape {shape}; expected (n, height, width) or (n, height, width, channels)")
    if 0 in shape[1:]:
        # Every row would be refused, and rows of no bytes are not bounded by the file's size:
        # a 128-byte file could yield millions of bad records.
        raise ValueError(f"it has shape {shape}; images need a positive height, width and channels")
    return tuple(shape[1:])


def _chunk_rows(row_shape: tuple[int, ...], dtype: np.dtype) -> int:
    return max(1, _CHUNK_BYTES // max(1, math.prod(row_shape) * dtype.itemsize))


_FLOAT32_MAX = float(np.finfo(np.float32).max)
# The int64 range of float labels, [-2**63, 2**63): both ends exact as floats (2**63 - 1 is not).
_INT64_MIN, _INT64_END = -(2.0**63), 2.0**63


def _as_images(chunk: np.ndarray) -> np.ndarray:
    chunk = chunk[..., None] if chunk.ndim == 3 else chunk
    if chunk.dtype == np.uint8:
        return chunk
    if chunk.dtype.kind == "f" and chunk.dtype.itemsize > 4:
        # A finite float64 beyond float32's range would become Inf in the cast (and be refused as
        # "NaN or Inf"): clip it to the largest float32, which is refused as out of [0, 1].
        chunk = np.where(np.isinf(chunk), chunk, np.clip(chunk, -_FLOAT32_MAX, _FLOAT32_MAX))
    return chunk.astype(np.float32, copy=False)


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
        whole = fits = None
        if labels is not None and labels.dtype.kind == "f":
            whole = np.isfinite(labels) & (labels == np.round(labels))
        # Labels become int64 (Batch.labels): a larger one would overflow there.
        if labels is not None and labels.dtype.kind == "f":
            fits = (labels >= _INT64_MIN) & (labels < _INT64_END)
        elif labels is not None and labels.dtype.kind == "u":
            fits = labels <= np.iinfo(np.int64).max
        for i in range(len(images)):
            rid = f"{prefix}{row}"
            row += 1
            if labels is None:
                yield rid, images[i], None
            elif whole is not None and not whole[i]:
                yield rid, BadRecordError(rid, f"label {labels[i]:g} in {path} is not a whole number."), None
            elif fits is not None and not fits[i]:
                yield rid, BadRecordError(rid, f"label {labels[i]:g} in {path} is outside the int64 range."), None
            else:
                yield rid, images[i], int(labels[i])


def _read_npy(path: str, prefix: str) -> Iterator[Record]:
    if is_remote(path):  # no memory map over a network file system: read it as a stream
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
    if version in ((2, 0), (3, 0)):
        # 3.0 differs from 2.0 only in a UTF-8 header, which numpy writes for structured dtypes
        # with non-Latin-1 field names (refused below as not numeric); np.load reads it, so must this.
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
    # The zip's CRC is checked only at the end of a member: read it through once first, so that
    # a damaged member is one error for the file, not rows of wrong pixels and an error later.
    # (Cheap beside scoring: decompression runs at hundreds of MB/s, scoring at a few.)
    with zf.open(name) as check:
        while check.read(_CHUNK_BYTES):
            pass
    return shape, lambda step: _stream_chunks(fp, shape[0], tuple(shape[1:]), dtype, step), dtype


def _check_labels(key: str, shape: tuple[int, ...], dtype: np.dtype, n: int) -> None:
    """Raises ValueError unless an .npz's labels `key` hold one whole-number label per image."""
    if tuple(shape) not in ((n,), (n, 1)):
        raise ValueError(f"labels '{key}' must hold one label per image, shape ({n},); got shape {shape}")
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ValueError(f"labels '{key}' must be whole numbers; got dtype {dtype}")


def _read_npz(path: str, prefix: str, single_npy: bool = False) -> Iterator[Record]:
    what = ".npy" if single_npy else ".npz"
    with contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(open_binary(path))
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
                    _check_labels(y_key, y_shape, y_dtype, shape[0])
                    y_chunks = (y.reshape(-1) for y in y_source(step))
        except Exception as err:  # zipfile, zlib and numpy raise many types on a bad file
            yield path, BadRecordError(path, f"cannot read the {what} file: {err}."), None
            return
        pairs = zip(x_chunks, y_chunks) if y_chunks is not None else ((x, None) for x in x_chunks)
        yield from _array_records(prefix, iter(pairs), path)


def read_array_file(path: str, *, single_array: bool) -> Iterator[Record]:
    """The rows of one .npy or .npz file as records, in row order, read lazily by chunks.

    Args:
      path: the .npy or .npz file (what each may hold: see the module docstring), local
        or on any file system `tf.io.gfile` has.
      single_array: whether `path` is the only file of the input: rows get ids str(row)
        if so, else f"{path}:{row}".

    Yields:
      (id, image, label): image a uint8 array (height, width, channels) or a float32 one
      (other numeric dtypes are converted), values as stored; or a `BadRecordError`: one
      whose id is `path` for a file that cannot be read at all, or one for the row where
      reading failed, after which the rest of the file is lost. label an int or None.
    """
    prefix = "" if single_array else f"{path}:"
    return _read_npz(path, prefix) if path.lower().endswith(".npz") else _read_npy(path, prefix)


def count_array_file(path: str) -> int:
    """The number of records `read_array_file` yields for a .npy or .npz file, from headers alone
    (an .npz member whose data fails its CRC check is counted by its header, though reading
    it yields one error).

    A file that reading refuses as a whole (images not (n, height, width[, channels]) of
    positive sizes and a numeric dtype, an .npz without `x` or `images` or with labels of
    the wrong shape or dtype, a remote .npy in Fortran order) counts 1, for its one error;
    one of 0 rows (or a negative count) counts what reading it yields.

    Raises:
      Exception: numpy, zipfile or the file system's error when the file cannot be read.
    """
    try:
        if path.lower().endswith(".npy"):
            with open_binary(path) as f:
                shape, fortran, dtype = _npy_header(f)
            if fortran and is_remote(path):
                return 1  # streamed, and refused: see _read_npz
        else:
            with open_binary(path) as f, zipfile.ZipFile(f) as zf:
                names = set(zf.namelist())
                key = next((k for k in ("x", "images") if f"{k}.npy" in names), None)
                if key is None:
                    return 1
                with zf.open(f"{key}.npy") as member:
                    shape, _, dtype = _npy_header(member)
                y_key = next((k for k in ("y", "labels") if f"{k}.npy" in names), None)
                if y_key is not None and shape:
                    with zf.open(f"{y_key}.npy") as member:
                        y_shape, _, y_dtype = _npy_header(member)
                    _check_labels(y_key, y_shape, y_dtype, shape[0])
        _row_shape(shape, dtype)
    except ValueError:
        return 1  # read_array_file yields one error for it
    if shape[0] > 0:
        return shape[0]
    # No rows (or a negative count): reading is as cheap as counting, and yields the error of a refused file.
    return sum(1 for _ in read_array_file(path, single_array=True))
