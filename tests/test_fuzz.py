"""Property-based tests (hypothesis) of the argument validators and of every image, array and model-folder reader.

Each property feeds one reader family generated values or damaged files and checks its one promise
(docs/reliability.md, "Bad input" and "Files from strangers"): the call works and its result is sane,
or it raises the documented error type with a message that names the argument or the file; never
another exception, a hang (a time limit per call) or code execution (planted pickles would create a
marker file). Files are damaged from valid ones made once per module: flipped, inserted, deleted and
truncated bytes, rewritten headers with fixed checksums, JSON with keys dropped or values replaced by
arbitrary JSON, and arrays of any shape and dtype.

The hypothesis profile (tests/conftest.py) sets the number of cases: "ci" by default, "fuzz" for long
runs. With TFPVAE_FUZZ_SECONDS set, each property runs again with fresh seeds until that many seconds
are spent; with TFPVAE_FUZZ_REPORT set, the cases tried and their outcomes are written there as JSON
(tools/fuzz.py sets both).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfpvae import _validation, streaming
from tfpvae._io import load_npz_arrays
from tfpvae.config import VAEConfig
from tfpvae.datasets import load_images, load_split, read_idx
from tfpvae.image_files import decode_image
from tfpvae.records import BadRecordError
from tfpvae.registry import UnregisteredNameError
from tfpvae.serialization import ModelFormatError, read_model_files

# --------------------------------------------------------------------------- running and counting

FUZZ_SECONDS = float(os.environ.get("TFPVAE_FUZZ_SECONDS") or 0)
FUZZ_REPORT = os.environ.get("TFPVAE_FUZZ_REPORT")
# Per property: cases tried, hypothesis runs, seconds, and one count per reader and outcome.
TALLY: dict[str, Counter] = defaultdict(Counter)
_current = ["-"]


def _examples(share: float) -> int:
    """`share` of the loaded profile's max_examples: slow properties (a model build per case) get fewer."""
    return max(3, round(settings.default.max_examples * share))


def fuzzed(
    share: float, deadline: bool = True, prepare: Callable[[], Any] | None = None
) -> Callable[[Callable[..., None]], Callable[[], None]]:
    """Makes a `@given` property a pytest test: one hypothesis run, or repeated runs in a timed fuzz run.

    Args:
      share: fraction of the profile's max_examples that one run tries.
      deadline: keep the profile's per-case deadline; False for properties that build a model
        (the time limit of `attempt` still catches a hang).
      prepare: called before the first case, to make the valid files its strategies start from
        (training a model inside a strategy would trip hypothesis' check of the global random state).
    """

    def wrap(prop: Callable[..., None]) -> Callable[[], None]:
        prop = settings(
            max_examples=_examples(share),
            **({} if deadline else {"deadline": None}),
        )(prop)

        def test() -> None:
            _current[0] = name = prop.__name__
            for make in (valid_images, valid_tfrecord, valid_arrays, valid_idx, prepare):
                if make is not None:
                    make()
            start = time.monotonic()
            try:
                while True:
                    TALLY[name]["runs"] += 1
                    prop()
                    if time.monotonic() - start >= FUZZ_SECONDS:
                        break
            finally:
                TALLY[name]["seconds"] += round(time.monotonic() - start)
                _write_report()

        test.__name__ = test.__qualname__ = prop.__name__
        test.__doc__ = prop.__doc__
        test.__module__ = prop.__module__
        return test

    return wrap


def _write_report() -> None:
    if FUZZ_REPORT:
        Path(FUZZ_REPORT).write_text(json.dumps({k: dict(v) for k, v in sorted(TALLY.items())}, indent=2) + "\n")


def count(outcome: str) -> None:
    """Counts one outcome of the running property."""
    TALLY[_current[0]][outcome] += 1


class Hang(BaseException):
    """A reader ran past its time limit; a BaseException, so that no reader's `except Exception` hides it."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raises `Hang` in the block after `seconds` (SIGALRM: pytest runs tests in the main thread)."""

    def expire(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# Bugs a property has found and that are not fixed yet: name -> (error types, the tfpvae function they
# pass through). A property counts a match as "known bug: <name>" instead of failing, so that it goes on
# guarding the rest; each entry needs a strict-xfail reproducer at the end of this file. None now: the
# reproducers there are the regression tests of the bugs found so far.
KNOWN_BUGS: dict[str, tuple[tuple[type[BaseException], ...], str]] = {}


def known_bug(err: BaseException) -> str | None:
    """The name of the `KNOWN_BUGS` entry `err` is, or None."""
    if isinstance(err, (AssertionError, Hang)):
        return None
    frames = traceback.extract_tb(err.__traceback__)
    passed = {f"{Path(f.filename).name}:{f.name}" for f in frames if f"{os.sep}tfpvae{os.sep}" in f.filename}
    for name, (types, where) in KNOWN_BUGS.items():
        if isinstance(err, types) and where in passed:
            return name
    return None


def attempt(
    label: str,
    call: Callable[[], Any],
    errors: tuple[type[BaseException], ...],
    names: tuple[str, ...],
    seconds: float = 60,
) -> tuple[Any, BaseException | None]:
    """Runs `call`: (its result, None), or (None, the error) if it raised one of `errors` naming one of `names`.

    Any other exception propagates and fails the property, as does an error of the right type
    whose message names none of `names` (the argument, or the file or folder read), unless it is
    one of `KNOWN_BUGS`, which is counted and returned.
    """
    try:
        with time_limit(seconds):
            result = call()
    except BaseException as err:
        named = any(name in str(err) for name in names)
        if isinstance(err, errors) and named:
            count(f"{label}: {type(err).__name__}")
            return None, err
        bug = known_bug(err)
        if bug is None and isinstance(err, errors):
            raise AssertionError(f"{label}: {type(err).__name__} names none of {names}: {str(err)!r}") from err
        if bug is None:
            raise
        count(f"known bug: {bug} ({type(err).__name__})")
        return None, err
    count(f"{label}: ok")
    return result, None


def short(value: Any) -> str:
    """repr(value), or for long bytes or text its length and ends: failing cases print their arguments."""
    if isinstance(value, (bytes, str)) and len(value) > 300:
        return f"<{len(value)} {type(value).__name__}: {value[:120]!r} ... {value[-60:]!r}>"
    return repr(value)


class Text(str):
    """A str that shows itself shortened, for generated JSON texts of up to 200,000 characters."""

    def __repr__(self) -> str:
        return short(str(self))


class Blob(bytes):
    """Bytes that show themselves shortened."""

    def __repr__(self) -> str:
        return short(bytes(self))


@contextlib.contextmanager
def case_folder() -> Iterator[Path]:
    """A fresh folder for one case, with the marker a planted pickle would create checked absent at the end."""
    count("cases")
    folder = Path(tempfile.mkdtemp(prefix="tfpvae-fuzz-"))
    try:
        yield folder
        assert not (folder / MARKER).exists(), "a planted pickle was executed"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- valid inputs, made once

MARKER = "pwned"


class Payload:
    """A pickle whose loading creates the file `marker`: loading it would be code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


_ROOT = Path(tempfile.mkdtemp(prefix="tfpvae-fuzz-valid-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


@functools.cache
def digits_u8() -> np.ndarray:
    """32 digits images (32, 8, 8) as uint8 0..255."""
    from tfpvae.datasets import load

    (x, _), _ = load("digits")
    return np.round(x[:32, ..., 0] * 255).astype(np.uint8)


def _encode(array: np.ndarray, mode: str | None = None, fmt: str = "PNG", **options) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@functools.cache
def valid_images() -> tuple[bytes, ...]:
    """Encoded images of every kind the decoder takes: grey, RGB, 16-bit, palette, alpha, interlaced, JPEG."""
    from PIL import Image

    u8 = digits_u8()
    rgb = np.stack([u8[1], u8[2], u8[3]], axis=-1)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    return (
        _encode(u8[0]),
        _encode(rgb),
        _encode(u8[4].astype(np.uint16) * 257),
        buffer.getvalue(),
        _encode(np.stack([u8[5], u8[6]], axis=-1), "LA"),
        _encode(u8[7], interlace=1),
        _encode(u8[8], fmt="JPEG", quality=90),
    )


def example_bytes(features: dict[str, tuple[str, list]]) -> bytes:
    """A serialized tf.train.Example; features: name -> (kind, values), kind bytes_list, int64_list or float_list."""
    from tfpvae._keras import tf

    made = {}
    for name, (kind, values) in features.items():
        cls = {"bytes_list": tf.train.BytesList, "int64_list": tf.train.Int64List, "float_list": tf.train.FloatList}
        made[name] = tf.train.Feature(**{kind: cls[kind](value=values)})
    return tf.train.Example(features=tf.train.Features(feature=made)).SerializeToString()


@functools.cache
def valid_examples() -> tuple[bytes, ...]:
    """Three Examples of 8x8 grey PNGs with labels 0, 1, 2."""
    u8 = digits_u8()
    return tuple(
        example_bytes({"image": ("bytes_list", [_encode(u8[i])]), "label": ("int64_list", [i])}) for i in range(3)
    )


_CRC32C = []
for _byte in range(256):
    _crc = _byte
    for _ in range(8):
        _crc = (_crc >> 1) ^ 0x82F63B78 if _crc & 1 else _crc >> 1
    _CRC32C.append(_crc)


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C a TFRecord frame stores (pure Python: the payloads here are small)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(payload: bytes, length: int | None = None) -> bytes:
    """One TFRecord frame with valid CRCs; `length` overrides the stated length (its CRC still valid)."""
    head = struct.pack("<Q", len(payload) if length is None else length)
    return head + struct.pack("<I", masked_crc32c(head)) + payload + struct.pack("<I", masked_crc32c(payload))


@functools.cache
def valid_tfrecord() -> bytes:
    data = b"".join(tfrecord_frame(e) for e in valid_examples())
    from tfpvae._keras import tf

    # The framing here must be TensorFlow's, or the damage below would not be what it seems.
    path = _ROOT / "check.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for e in valid_examples():
            writer.write(e)
    assert path.read_bytes() == data
    return data


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def npz_bytes(arrays: dict[str, Any], compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


@functools.cache
def valid_arrays() -> dict[str, dict[str, np.ndarray]]:
    """The arrays of each valid .npy/.npz input, by role."""
    u8 = digits_u8()
    return {
        "npy": {"x": u8[:4]},
        "npz": {"x": u8[:4], "y": np.arange(4)},
        "mnist.npz": {
            "x_train": u8[:6],
            "y_train": np.arange(6, dtype=np.uint8),
            "x_test": u8[6:9],
            "y_test": np.arange(3, dtype=np.uint8),
        },
        "binarized_mnist.npz": {
            s: (np.resize(u8, (n, 784)) > 127).astype(np.uint8) for s, n in (("train", 5), ("valid", 2), ("test", 3))
        },
    }


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@functools.cache
def valid_idx() -> dict[str, bytes]:
    """A small MNIST folder's four IDX files, gzipped."""
    u8 = digits_u8()
    files = {
        "train-images-idx3-ubyte.gz": u8[:6],
        "train-labels-idx1-ubyte.gz": np.arange(6, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": u8[6:9],
        "t10k-labels-idx1-ubyte.gz": np.arange(3, dtype=np.uint8),
    }
    return {name: gzip.compress(idx_bytes(a), mtime=0) for name, a in files.items()}


# The model folder's config: every size small, so that a damaged config still builds in a second.
MODEL_CONFIG = dict(
    input_shape=(8, 8, 1),
    latent_dim=2,
    hidden_units=8,
    filters=4,
    num_components=2,
    flow_layers=1,
    flow_hidden_units=4,
    seed=0,
)


@functools.cache
def valid_model() -> Path:
    """A saved untrained VAE on 8x8 images (latent_dim 2, every width small)."""
    import tfpvae

    return tfpvae.save(tfpvae.VAE(VAEConfig(**MODEL_CONFIG)), _ROOT / "model")


@functools.cache
def valid_run() -> tuple[Path, Any]:
    """A run folder after one epoch of `tfpvae.training.train` on 32 digits, and a model to restore into."""
    import tfpvae
    from tfpvae.training import train

    run = _ROOT / "run"
    train(
        tfpvae.VAE(VAEConfig(**MODEL_CONFIG)),
        digits_u8()[:32, ..., None] / np.float32(255),
        epochs=1,
        batch_size=16,
        run_dir=run,
        verbose=0,
    )
    model = tfpvae.VAE(VAEConfig(**MODEL_CONFIG))
    model.compile()
    return run, model


# --------------------------------------------------------------------------- strategies

_shapes = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)
any_dtypes = (
    hnp.scalar_dtypes()
    | hnp.integer_dtypes(endianness="?")
    | hnp.floating_dtypes(endianness="?", sizes=(16, 32, 64, 128))
    | hnp.complex_number_dtypes(endianness="?")
    | hnp.byte_string_dtypes(max_len=3)
    | hnp.unicode_string_dtypes(max_len=3)
    | hnp.array_dtypes(max_size=2)
)
any_arrays = hnp.arrays(any_dtypes, _shapes)
_image_dtypes = st.sampled_from([np.uint8, np.float32, np.float64, np.float16, np.bool_, np.int64, np.uint16])


@st.composite
def image_like_arrays(draw, min_dims: int = 3, max_dims: int = 4) -> np.ndarray:
    """Arrays that are often valid images: uint8 anything, and other dtypes either all in [0, 1] or any values
    (NaN, Inf, out of range, float64 beyond float32's range)."""
    dtype = np.dtype(draw(_image_dtypes))
    side = st.integers(1, 5) if draw(st.integers(0, 3)) else st.integers(0, 5)
    shape = tuple(draw(st.lists(side, min_size=min_dims, max_size=max_dims)))
    clean = draw(st.booleans())
    if dtype.kind == "f":
        width = 8 * min(dtype.itemsize, 8)
        elements = st.floats(0, 1, width=width) if clean else st.floats(width=width)
    elif dtype.kind in "iu" and dtype != np.uint8:
        info = np.iinfo(dtype)
        elements = st.integers(0, 1) if clean else st.integers(int(info.min), int(info.max))
    else:
        elements = None
    return draw(hnp.arrays(dtype, shape, elements=elements))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | st.complex_numbers()
    | st.text(max_size=6)
    | st.binary(max_size=6)
    | st.sampled_from(["mlp", "conv", "normal", "vae", "ae", "dynamic", "none", "relu", "x", "", "nan"])
    | hnp.from_dtype(np.dtype(np.int64))
    | hnp.from_dtype(np.dtype(np.float32))
    | hnp.from_dtype(np.dtype(np.bool_))
)
# Any Python value an argument may be given: scalars, numpy scalars and arrays, nested (ragged) containers.
python_values = st.recursive(
    _scalars | any_arrays,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner, inner)
        | st.dictionaries(_scalars.filter(_hashable), inner, max_size=3)
    ),
    max_leaves=8,
)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@st.composite
def mutated_bytes(draw, data: bytes, max_ops: int = 4) -> bytes:
    """`data` with 1..max_ops random edits: bits flipped, bytes set, inserted, deleted, duplicated, or a truncation.

    Positions favour the first 64 bytes, where the headers are.
    """
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_ops))):
        n = len(out)
        pos = draw(st.integers(0, min(n, 64)) | st.integers(0, n))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]))
        if op == "flip" and pos < n:
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and pos < n:
            out[pos] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80]) | st.integers(0, 255))
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del out[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del out[pos:]
        elif op == "duplicate":
            out[pos:pos] = out[pos : pos + draw(st.integers(1, 64))]
    return bytes(out)


def fix_png_crcs(data: bytes) -> bytes:
    """`data` with every chunk CRC that can be found made valid, so damage reaches past the CRC check."""
    out, pos = bytearray(data), 8
    while pos + 12 <= len(out):
        length = struct.unpack_from(">I", out, pos)[0]
        end = pos + 8 + length
        if end + 4 > len(out):
            break
        struct.pack_into(">I", out, end, zlib.crc32(out[pos + 4 : end]))
        pos = end + 4
    return bytes(out)


@st.composite
def image_bytes(draw) -> bytes:
    """Encoded images: valid ones, damaged ones (sometimes with valid CRCs), rewritten PNG headers, or noise."""
    valid = draw(st.sampled_from(valid_images()))
    kind = draw(st.sampled_from(["valid", "damaged", "damaged-crc", "header", "noise"]))
    if kind == "valid":
        return valid
    if kind == "noise":
        return draw(st.binary(max_size=64))
    if kind == "header" and valid.startswith(b"\x89PNG"):
        # IHDR: width, height, bit depth, colour type, compression, filter, interlace.
        fields = draw(
            st.tuples(
                st.integers(0, 2**32 - 1) | st.integers(0, 300),
                st.integers(0, 2**32 - 1) | st.integers(0, 300),
                st.sampled_from([0, 1, 2, 4, 8, 16, 255]),
                st.sampled_from([0, 2, 3, 4, 6, 7, 255]),
                st.integers(0, 2),
                st.integers(0, 2),
                st.integers(0, 2),
            )
        )
        return fix_png_crcs(valid[:16] + struct.pack(">IIBBBBB", *fields) + valid[29:])
    damaged = draw(mutated_bytes(valid))
    return fix_png_crcs(damaged) if kind == "damaged-crc" and damaged.startswith(b"\x89PNG") else damaged


@st.composite
def example_payloads(draw) -> bytes:
    """One TFRecord payload: a valid Example, a damaged one, an Example of arbitrary features, or noise."""
    kind = draw(st.sampled_from(["valid", "damaged", "features", "noise"]))
    if kind == "valid":
        return draw(st.sampled_from(valid_examples()))
    if kind == "damaged":
        return draw(mutated_bytes(draw(st.sampled_from(valid_examples()))))
    if kind == "noise":
        return draw(st.binary(max_size=48))
    int64 = st.integers(-(2**63), 2**63 - 1)
    values = {
        "bytes_list": st.lists(image_bytes() | st.binary(max_size=8), max_size=2),
        "int64_list": st.lists(int64, max_size=2),
        "float_list": st.lists(st.floats(width=32), max_size=2),
    }
    features = {}
    for name in draw(st.lists(st.sampled_from(["image", "label", "other", ""]), unique=True, max_size=3)):
        kind = draw(st.sampled_from(sorted(values)))
        features[name] = (kind, draw(values[kind]))
    return example_bytes(features)


@st.composite
def tfrecord_bytes(draw) -> bytes:
    """A TFRecord file: the valid one damaged byte by byte, or frames of generated payloads with valid CRCs,
    some with a stated length that is wrong (its own CRC valid) or cut short."""
    if draw(st.booleans()):
        return draw(mutated_bytes(valid_tfrecord()))
    frames = [tfrecord_frame(p) for p in draw(st.lists(example_payloads(), max_size=4))]
    if frames and draw(st.booleans()):
        i = draw(st.integers(0, len(frames) - 1))
        payload = frames[i][12:-4]
        length = draw(st.integers(0, 2**64 - 1) | st.integers(0, 2 * len(payload) + 32))
        frames[i] = tfrecord_frame(payload, length)
    data = b"".join(frames)
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


@st.composite
def npy_header_bytes(draw) -> bytes:
    """An .npy file with a generated header (any version, dtype text, order and shape) and data of any length."""
    version = draw(st.sampled_from([(1, 0), (2, 0), (3, 0)]) | st.tuples(st.integers(0, 255), st.integers(0, 255)))
    descr = draw(
        st.sampled_from(
            [
                "|u1",
                "<f4",
                ">f8",
                "|b1",
                "<i8",
                "<u2",
                "<f2",
                "<c8",
                "<U2",
                "|S2",
                "|O",
                "|V4",
                "<M8[s]",
                "<m8[D]",
                "<f16",
            ]
        )
        | st.text(max_size=6)
    )
    shape = draw(st.lists(st.integers(0, 9) | st.integers(-1, 2**64), max_size=5).map(tuple) | json_values)
    fortran = draw(st.booleans() | st.sampled_from([0, 1, None, "yes"]))
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape})
    if draw(st.booleans()):
        header = draw(mutated_bytes(header.encode(), max_ops=2)).decode("latin-1")
    header += " " * (-(len(header) + 11) % 64) + "\n"
    size = struct.pack(
        "<H" if version[0] == 1 else "<I", len(header.encode()) % (1 << 16 if version[0] == 1 else 1 << 32)
    )
    data = draw(st.binary(max_size=300) | st.just(bytes(range(256)) * 2))
    return b"\x93NUMPY" + bytes(version) + size + header.encode() + data


@st.composite
def array_dicts(draw, valid: dict[str, np.ndarray], marker: Path) -> dict[str, Any]:
    """`valid` with 1..3 changes: an array dropped, added, replaced by any array (or one of the same shape),
    reshaped, cast, emptied, or a planted pickle."""
    arrays = dict(valid)
    names = [*valid, "x", "images", "y", "labels", "other", "meta_json"]
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(names))
        op = draw(st.sampled_from(["drop", "any", "image", "labels", "reshape", "cast", "values", "pickle", "empty"]))
        if op == "drop":
            arrays.pop(name, None)
        elif op == "any":
            arrays[name] = draw(any_arrays)
        elif op == "image":
            arrays[name] = draw(image_like_arrays(min_dims=1, max_dims=5))
        elif op == "labels":
            arrays[name] = draw(
                hnp.arrays(draw(_image_dtypes), draw(st.sampled_from([(4,), (4, 1), (3,), (6,), (2, 2)])))
            )
        elif op == "pickle":
            arrays[name] = np.array([Payload(marker), 1], dtype=object)
        elif op == "empty":
            arrays[name] = np.zeros((0,) + tuple(np.shape(arrays.get(name, np.zeros((0,))))[1:]), np.uint8)
        elif name in arrays:
            array = np.asarray(arrays[name])
            if op == "reshape":
                arrays[name] = array.reshape(-1) if array.ndim > 1 else array.reshape(-1, 1)
            elif op == "values":  # same shape, any dtype and values (NaN, Inf, huge)
                arrays[name] = draw(hnp.arrays(any_dtypes.filter(lambda d: d.kind not in "OV"), array.shape))
            else:
                dtype = draw(any_dtypes.filter(lambda d: d.kind not in "OV"))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # complex to real, overflow: the point is a strange array
                    try:
                        arrays[name] = array.astype(dtype, casting="unsafe")
                    except (TypeError, ValueError):  # numbers to dates and similar: no such cast
                        pass
    return arrays


@st.composite
def npz_files(draw, valid: dict[str, np.ndarray], marker: Path) -> bytes:
    """An .npz from `valid`: its arrays changed (saved plain or compressed), its bytes damaged, or a member replaced
    by a generated .npy."""
    kind = draw(st.sampled_from(["arrays", "damaged", "member"]))
    compressed = draw(st.booleans())
    if kind == "arrays":
        return npz_bytes(draw(array_dicts(valid, marker)), compressed)
    if kind == "damaged":
        return draw(mutated_bytes(npz_bytes(valid, compressed)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as zf:
        replaced = draw(st.sampled_from(sorted(valid)))
        for name, array in valid.items():
            zf.writestr(f"{name}.npy", draw(npy_header_bytes()) if name == replaced else npy_bytes(array))
    return buffer.getvalue()


@st.composite
def npy_files(draw, marker: Path) -> bytes:
    """An .npy: any array, an image-like array, a planted pickle, damaged bytes, or a generated header."""
    kind = draw(st.sampled_from(["any", "image", "pickle", "damaged", "header"]))
    if kind == "any":
        return npy_bytes(draw(any_arrays))
    if kind == "image":
        return npy_bytes(draw(image_like_arrays()))
    if kind == "pickle":
        return npy_bytes(np.array([[[Payload(marker)]]], dtype=object))
    if kind == "damaged":
        return draw(mutated_bytes(npy_bytes(valid_arrays()["npy"]["x"])))
    return draw(npy_header_bytes())


# --------------------------------------------------------------------------- validators


@fuzzed(share=1.0)
@given(
    x=image_like_arrays(min_dims=0, max_dims=6) | any_arrays | python_values,
    name=st.sampled_from(["x", "images", "x_test"]),
    shape=st.none() | st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 3)),
)
def test_check_images_takes_any_value(x, name, shape):
    """check_images: any array or Python value gives float32 (n, H, W, C) images in [0, 1], or a TypeError or
    ValueError naming the argument."""
    count("cases")
    images, _ = attempt(
        "check_images", lambda: _validation.check_images(x, name, shape), (TypeError, ValueError), (f"`{name}`",)
    )
    if images is not None:
        assert images.dtype == np.float32 and images.ndim == 4 and min(images.shape) >= 1
        assert shape is None or images.shape[1:] == shape
        assert np.all(np.isfinite(images)) and images.min() >= 0 and images.max() <= 1
        if isinstance(x, np.ndarray) and x.dtype == np.uint8:
            np.testing.assert_array_equal(images.reshape(x.shape), x.astype(np.float32) / np.float32(255))


_CHECKS = {
    "check_int": lambda v: _validation.check_int(v, "n", minimum=1, maximum=100),
    "check_int_unbounded": lambda v: _validation.check_int(v, "n", minimum=0),
    "check_seed": lambda v: _validation.check_seed(v, "n", maximum=_validation.MAX_INT32_SEED),
    "check_float": lambda v: _validation.check_float(v, "n", minimum=0.0, maximum=1.0, max_inclusive=False),
    "check_float_open": lambda v: _validation.check_float(v, "n", minimum=0.0, min_inclusive=False),
    "check_bool": lambda v: _validation.check_bool(v, "n", allow_none=True),
    "check_choice": lambda v: _validation.check_choice(v, "n", ("mlp", "conv")),
    "check_shape": lambda v: _validation.check_shape(v, "n"),
    "check_labels": lambda v: _validation.check_labels(v, 3, "n"),
}


@fuzzed(share=1.0)
@given(check=st.sampled_from(sorted(_CHECKS)), value=python_values)
def test_argument_checks_take_any_value(check, value):
    """check_int, check_seed, check_float, check_bool, check_choice, check_shape, check_labels: any Python or numpy
    value is returned in range and of the promised type, or refused with a TypeError or ValueError naming `n`."""
    count("cases")
    result, err = attempt(check, lambda: _CHECKS[check](value), (TypeError, ValueError), ("`n`", "`n["))
    if err is not None:
        return
    if check.startswith(("check_int", "check_seed")):
        assert (result is None) if value is None else (type(result) is int and 0 <= result)
        assert check != "check_int" or 1 <= result <= 100
    elif check.startswith("check_float"):
        assert type(result) is float and np.isfinite(result) and 0 <= result
        assert check != "check_float" or result < 1
    elif check == "check_bool":
        assert result in (True, False, None)
    elif check == "check_choice":
        assert result in ("mlp", "conv")
    elif check == "check_shape":
        assert isinstance(result, tuple) and len(result) == 3 and all(type(v) is int and v >= 1 for v in result)
    else:
        assert isinstance(result, np.ndarray) and result.shape == (3,)


# --------------------------------------------------------------------------- config


_FIELDS = tuple(f.name for f in dataclasses.fields(VAEConfig))
_NEAR_VALID = (
    st.integers(-2, 70)
    | st.integers()
    | st.integers(min_value=2**63 - 1, max_value=10**500)
    | st.floats()
    | st.sampled_from(
        [
            "mlp",
            "conv",
            "dcgan",
            "normal",
            "learned_normal",
            "mixture",
            "vamp",
            "flow",
            "vae",
            "ae",
            "dynamic",
            "none",
            "relu",
            "elu",
            "swish",
            "leaky_relu",
            "tanh",
            "unknown",
            "",
        ]
    )
    | st.lists(st.integers(-1, 40) | st.floats() | st.text(max_size=2), max_size=4)
    | json_values
)


@st.composite
def config_dicts(draw, base: dict[str, Any] | None = None) -> Any:
    """A config dict with fields dropped, added or given near-valid or arbitrary JSON values; or any JSON value."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    data = json.loads(VAEConfig(**(base or MODEL_CONFIG)).to_json())
    for _ in range(draw(st.integers(1, 4))):
        field = draw(st.sampled_from(_FIELDS) | st.text(max_size=6))
        op = draw(st.sampled_from(["drop", "set", "set", "wrap"]))
        if op == "drop":
            data.pop(field, None)
        elif op == "set":
            data[field] = draw(_NEAR_VALID)
        elif field in data:
            data[field] = [data[field]]
    return data


@st.composite
def config_texts(draw) -> str | bytes:
    """config.json contents: a damaged config dict, its text damaged byte by byte (invalid UTF-8 too), a number
    of thousands of digits, or JSON nested up to far deeper than the recursion limit."""
    kind = draw(st.sampled_from(["dict", "dict", "bytes", "huge", "deep"]))
    valid = VAEConfig(**MODEL_CONFIG).to_json()
    if kind == "bytes":
        return Blob(draw(mutated_bytes(valid.encode())))
    if kind == "huge":
        return Text(valid.replace('"latent_dim": 2', '"latent_dim": ' + "9" * draw(st.integers(4000, 6000))))
    if kind == "deep":
        depth = draw(st.integers(20, 200_000))
        return Text('{"options": {"a": ' + "[" * depth + "]" * depth + "}}")
    return Text(json.dumps(draw(config_dicts())))


# What a config error names: a field (as `field` or `field[0]`), the argument, or the unknown fields.
CONFIG_ERROR_NAMES = (*(f"`{name}" for name in _FIELDS), "`data`", "`text`", "config field")


@fuzzed(share=1.0)
@given(data=config_dicts() | python_values, text=config_texts())
def test_config_from_dict_and_json_take_any_input(data, text):
    """VAEConfig.from_dict (any value, dict keys of any type) and from_json (any text): a config that survives its own
    JSON round trip, or a TypeError or ValueError (UnregisteredNameError for an unknown network or prior) naming
    the field or the argument."""
    count("cases")
    names = CONFIG_ERROR_NAMES
    for label, call in (
        ("from_dict", lambda: VAEConfig.from_dict(data)),
        ("from_json", lambda: VAEConfig.from_json(text if isinstance(text, str) else text.decode("utf-8", "replace"))),
    ):
        config, _ = attempt(label, call, (TypeError, ValueError), names)
        if config is not None:
            assert VAEConfig.from_json(config.to_json()) == config
            hash(config)


# --------------------------------------------------------------------------- image, TFRecord, .npy, .npz readers


def reason_kind(reason: str) -> str:
    """A bad record's reason without its particulars (quoted names, numbers, details), to count kinds of reasons."""
    kind = re.sub(r"'[^']*'|\d+", "_", reason.split(" (")[0].split(";")[0].split(": ")[0])
    return " ".join(kind.split()[:8])


def check_file_readers(path: Path) -> None:
    """Every streaming reader on one file: records are images or BadRecordErrors with proper ids, batches are
    valid images, the count bounds the records, and load_images returns images or a ValueError naming the file."""
    name = str(path)
    records, _ = attempt("read_records", lambda: list(streaming.read_records(name)), (), ())
    for rid, image, label in records:
        assert isinstance(rid, str)
        if isinstance(image, BadRecordError):
            assert image.id == rid and str(image).startswith(f"{rid}: ")
            assert name in str(image) or rid.isdigit() or rid.startswith(f"{name}:"), str(image)
            count(f"record: {reason_kind(image.reason)}")
        else:
            assert isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype in (np.uint8, np.float32)
            assert label is None or type(label) is int
    bad: list[BadRecordError] = []
    batches, _ = attempt(
        "iter_batches", lambda: list(streaming.iter_batches(name, batch_size=3, on_error=bad.append)), (), ()
    )
    good = sum(len(b) for b in batches)
    assert good + len(bad) == len(records)
    for batch in batches:
        assert batch.images.dtype == np.float32 and batch.images.ndim == 4 and len(batch.ids) == len(batch.images)
        assert np.all(np.isfinite(batch.images)) and batch.images.min() >= 0 and batch.images.max() <= 1
        assert batch.labels is None or (batch.labels.dtype == np.int64 and batch.labels.shape == (len(batch),))
    total, _ = attempt("count_records", lambda: streaming.count_records(name), (), ())
    assert isinstance(total, int) and total >= len(records), (total, len(records))
    loaded, _ = attempt("load_images", lambda: load_images(name), (ValueError,), (name,))
    if loaded is not None:
        images, labels = loaded
        assert images.dtype == np.float32 and images.ndim == 4 and len(images) == good
        assert np.all(np.isfinite(images)) and images.min() >= 0 and images.max() <= 1
        assert labels is None or (labels.dtype == np.int64 and labels.shape == (len(images),))


@fuzzed(share=0.6)
@given(data=image_bytes(), suffix=st.sampled_from([".png", ".jpg", ".jpeg", ".PNG"]))
def test_image_files_decode_or_are_bad_records(data, suffix):
    """decode_image and the PNG/JPEG file readers: any bytes decode to uint8 (H, W, 1 or 3), or give a
    BadRecordError whose id is the record's, never another exception."""
    with case_folder() as folder:
        image, err = attempt("decode_image", lambda: decode_image(data, "rec-7"), (BadRecordError,), ("rec-7",))
        if image is not None:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (1, 3) and min(image.shape) >= 1
        else:
            assert err.id == "rec-7"
        path = folder / f"image{suffix}"
        path.write_bytes(data)
        check_file_readers(path)


@fuzzed(share=0.4)
@given(data=tfrecord_bytes())
def test_tfrecord_files_read_or_give_bad_records(data):
    """TFRecord reader: damaged files, wrong frame lengths (up to 2**64 - 1, with valid CRCs), Examples with
    any features: records or BadRecordErrors naming the file, never a crash or another exception."""
    with case_folder() as folder:
        path = folder / "shard.tfrecord"
        path.write_bytes(data)
        check_file_readers(path)


@fuzzed(share=0.6)
@given(data=st.data())
def test_npy_files_read_or_give_bad_records(data):
    """.npy reader: any array (any dtype and rank, planted pickles), damaged bytes, generated headers."""
    with case_folder() as folder:
        path = folder / "images.npy"
        path.write_bytes(data.draw(npy_files(folder / MARKER)))
        check_file_readers(path)


@fuzzed(share=0.6)
@given(data=st.data(), several=st.booleans())
def test_npz_files_read_or_give_bad_records(data, several):
    """.npz reader: arrays dropped, added, replaced by any array or a planted pickle, reshaped or cast; damaged
    bytes; generated member headers. With `several`, a second file makes the ids "{path}:{row}"."""
    with case_folder() as folder:
        path = folder / "images.npz"
        path.write_bytes(data.draw(npz_files(valid_arrays()["npz"], folder / MARKER)))
        if several:
            (folder / "z.npy").write_bytes(npy_bytes(valid_arrays()["npy"]["x"]))
            loaded, _ = attempt("load_images[folder]", lambda: load_images(folder), (ValueError,), (str(folder),))
            if loaded is not None:
                assert loaded[0].dtype == np.float32 and loaded[0].min() >= 0 and loaded[0].max() <= 1
        check_file_readers(path)


# --------------------------------------------------------------------------- dataset files


@fuzzed(share=0.6)
@given(data=st.data(), gz=st.booleans())
def test_idx_files_read_or_raise_value_error(data, gz):
    """read_idx and load_split's IDX folders: damaged or generated IDX files (gzipped or not) give the uint8 array
    the header describes, or a ValueError naming the file or folder."""
    with case_folder() as folder:
        name = data.draw(st.sampled_from(sorted(valid_idx())))
        raw = gzip.decompress(valid_idx()[name])
        kind = data.draw(st.sampled_from(["damaged", "header", "gz-damaged"]))
        if kind == "header":
            dims = data.draw(st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 9), max_size=4))
            magic = data.draw(st.sampled_from([b"\x00\x00\x08", b"\x00\x00\x09", b"\x00\x00\x0d"]))
            raw = magic + bytes([len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + data.draw(st.binary(max_size=200))
        elif kind == "damaged":
            raw = data.draw(mutated_bytes(raw))
        if kind == "gz-damaged":
            gz, content = True, data.draw(mutated_bytes(gzip.compress(raw, mtime=0)))
        else:
            content = gzip.compress(raw, mtime=0) if gz else raw
        path = folder / (name if gz else name.removesuffix(".gz"))
        path.write_bytes(content)
        array, _ = attempt("read_idx", lambda: read_idx(path), (ValueError,), (str(path),))
        if array is not None:
            assert array.dtype == np.uint8 and array.ndim >= 1
        mnist = folder / "mnist"
        mnist.mkdir()
        for other, content_ in valid_idx().items():
            (mnist / other).write_bytes((content if gz else gzip.compress(content)) if other == name else content_)
        split = "train" if name.startswith("train") else "test"
        result, _ = attempt("load_split", lambda: load_split("mnist", split, folder), (ValueError,), (str(mnist),))
        if result is not None:
            check_split(*result)


def check_split(x: np.ndarray, y: np.ndarray | None) -> None:
    """A loaded split is float32 (n, H, W, C) in [0, 1] with int64 labels (n,) or None."""
    assert x.dtype == np.float32 and x.ndim == 4, (x.dtype, x.shape)
    assert x.size == 0 or (np.all(np.isfinite(x)) and x.min() >= 0 and x.max() <= 1)
    assert y is None or (y.dtype == np.int64 and y.shape == (len(x),))


@fuzzed(share=0.6)
@given(
    data=st.data(),
    which=st.sampled_from(["mnist.npz", "binarized_mnist.npz"]),
    split=st.sampled_from(["train", "test", "valid"]),
)
def test_dataset_npz_files_load_or_raise_value_error(data, which, split):
    """load_split on a Keras mnist.npz or a binarized_mnist.npz with any damage: a valid split, or a ValueError
    naming the file; a planted pickle never runs."""
    if which == "mnist.npz" and split == "valid":
        split = "test"
    with case_folder() as folder:
        path = folder / which
        path.write_bytes(data.draw(npz_files(valid_arrays()[which], folder / MARKER)))
        name = "mnist" if which == "mnist.npz" else "binarized_mnist"
        result, _ = attempt("load_split", lambda: load_split(name, split, folder), (ValueError,), (str(path),))
        if result is not None:
            check_split(*result)
        arrays, _ = attempt("load_npz_arrays", lambda: load_npz_arrays(path), (ValueError,), (str(path),))
        assert arrays is None or all(isinstance(a, np.ndarray) and not a.dtype.hasobject for a in arrays.values())


# --------------------------------------------------------------------------- model folders and checkpoints


@dataclasses.dataclass(frozen=True)
class Damage:
    """One change to a copied folder: write `content` to `file`, remove it (None) or put a folder there ("dir").

    With `rehash`, metadata.json then records the new weights' SHA-256, so damaged weights get past the checksum.
    """

    file: str
    content: bytes | str | None
    rehash: bool = False

    def apply(self, folder: Path) -> None:
        path = folder / self.file
        if self.content is None or self.content == "dir":
            path.unlink()
            if self.content == "dir":
                path.mkdir()
        else:
            path.write_bytes(self.content)
        if self.rehash:
            meta = json.loads((folder / "metadata.json").read_text())
            meta["weights_sha256"] = hashlib.sha256((folder / "weights.npz").read_bytes()).hexdigest()
            (folder / "metadata.json").write_text(json.dumps(meta))

    def __repr__(self) -> str:
        return f"Damage({self.file!r}, {short(self.content)}, rehash={self.rehash})"


# Values a loadable config's fields take: mostly valid and small, so that the model builds in a second.
_SIZE = st.integers(1, 12)
_LOADABLE = {
    "input_shape": st.lists(st.integers(1, 16), min_size=3, max_size=3),
    "latent_dim": _SIZE,
    "architecture": st.sampled_from(["mlp", "conv", "dcgan", "unknown"]),
    "prior": st.sampled_from(["normal", "learned_normal", "mixture", "vamp", "flow", "unknown"]),
    "num_components": _SIZE,
    "flow_layers": _SIZE,
    "flow_hidden_units": _SIZE,
    "beta": st.floats(0, 2),
    "model_type": st.sampled_from(["vae", "ae"]),
    "filters": _SIZE,
    "hidden_units": _SIZE,
    "activation": st.sampled_from(["relu", "elu", "swish", "leaky_relu", "tanh"]),
    "dropout": st.floats(0, 0.9),
    "binarize": st.sampled_from(["dynamic", "none"]),
    "learning_rate": st.floats(1e-6, 1),
    "posterior_scale_floor": st.floats(0, 1),
    "train_samples": st.integers(1, 4),
    "seed": st.none() | st.integers(0, 2**31 - 1),
    "options": st.dictionaries(st.text(max_size=3), json_values, max_size=2),
}


@st.composite
def model_folder_damage(draw, loadable: bool = False) -> Damage:
    """A change to a copy of the valid model folder: a file damaged, replaced or removed.

    With `loadable`, only changes that often still read: config fields set to small or odd values, weights
    changed with a matching checksum, metadata values replaced.
    """
    kinds = (
        ["config-field", "weights-rehash", "metadata"]
        if loadable
        else ["config", "metadata", "weights", "weights-rehash", "remove", "dir"]
    )
    target = draw(st.sampled_from(kinds))
    if target == "config-field":
        data = json.loads(VAEConfig(**MODEL_CONFIG).to_json())
        for field in draw(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=3)):
            data[field] = draw(_LOADABLE[field] if draw(st.integers(0, 4)) else _NEAR_VALID)
        return Damage("config.json", json.dumps(data).encode())
    if target == "config":
        text = draw(config_texts())
        return Damage("config.json", text if isinstance(text, bytes) else text.encode())
    if target == "metadata":
        valid = json.loads((valid_model() / "metadata.json").read_text())
        choice = draw(
            st.sampled_from(["value", "value", "drop"] if loadable else ["value", "drop", "bytes", "any", "deep"])
        )
        if choice == "bytes":
            text = draw(mutated_bytes(json.dumps(valid, indent=2).encode()))
        elif choice == "any":
            text = json.dumps(draw(json_values)).encode()
        elif choice == "deep":
            depth = draw(st.integers(500, 200_000))
            text = ('{"format_version": 1, "history": ' + "[" * depth + "]" * depth + "}").encode()
        else:
            key = draw(st.sampled_from(sorted(valid)))
            if choice == "drop":
                valid.pop(key)
            else:
                valid[key] = draw(_NEAR_VALID)
            text = json.dumps(valid).encode()
        return Damage("metadata.json", text)
    if target.startswith("weights"):
        arrays = dict(np.load(valid_model() / "weights.npz"))
        if not loadable and draw(st.booleans()):
            data = draw(mutated_bytes(npz_bytes(arrays), max_ops=2))
        else:
            # A planted pickle names the marker relative to the working folder, which the properties
            # make the case's folder: the strategy is drawn before the folder exists.
            data = npz_bytes(draw(array_dicts(arrays, Path(MARKER))), draw(st.booleans()))
        return Damage("weights.npz", data, rehash=target == "weights-rehash")
    return Damage(
        draw(st.sampled_from(["config.json", "metadata.json", "weights.npz"])), None if target == "remove" else "dir"
    )


_MODEL_ERRORS = (ModelFormatError, UnregisteredNameError)


@contextlib.contextmanager
def _cwd(folder: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


@fuzzed(share=0.6, prepare=valid_model)
@given(damage=model_folder_damage())
def test_model_folders_read_or_raise_model_format_error(damage):
    """read_model_files: config.json and metadata.json with any JSON damage, weights.npz damaged (with and without a
    matching checksum), files missing or folders in their place: ModelFiles, or ModelFormatError naming the folder
    (UnregisteredNameError naming the field)."""
    with case_folder() as case, _cwd(case):
        folder = case / "model"
        shutil.copytree(valid_model(), folder)
        damage.apply(folder)
        files, _ = attempt(
            "read_model_files",
            lambda: read_model_files(folder),
            _MODEL_ERRORS,
            (str(folder), "`architecture`", "`prior`"),
        )
        if files is not None:
            assert isinstance(files.config, VAEConfig) and isinstance(files.metadata, dict)
            assert all(isinstance(w, np.ndarray) and not w.dtype.hasobject for w in files.weights)


def _small(config: VAEConfig) -> bool:
    """Whether a model of `config` builds in about a second (a large one is the reported allocation bug)."""
    sizes = (
        config.latent_dim,
        config.hidden_units,
        config.filters,
        config.num_components,
        config.flow_layers,
        config.flow_hidden_units,
        config.train_samples,
    )
    return max(sizes) <= 64 and int(np.prod(config.input_shape)) <= 4096


@fuzzed(share=0.15, deadline=False, prepare=valid_model)
@given(damage=model_folder_damage(loadable=True))
def test_damaged_model_folders_load_or_raise_model_format_error(damage):
    """tfpvae.load on the folders of the property above: a model whose config is the folder's, or ModelFormatError
    naming the folder. Only folders whose config builds a small model are loaded: see `_small`."""
    import tfpvae

    with case_folder() as case, _cwd(case):
        folder = case / "model"
        shutil.copytree(valid_model(), folder)
        damage.apply(folder)
        try:
            config = read_model_files(folder).config
        except _MODEL_ERRORS:
            count("read_model_files refused")
            return
        if not _small(config):
            count("large config: not loaded")
            return
        model, _ = attempt("load", lambda: tfpvae.load(folder), _MODEL_ERRORS, (str(folder),), seconds=300)
        if model is not None:
            assert model.config == config


@st.composite
def checkpoint_damage(draw) -> Damage:
    """A change to a copy of the valid checkpoint.npz: its bytes, its arrays, or its meta_json (JSON damage)."""
    arrays = dict(np.load(valid_run()[0] / "checkpoint.npz"))
    kind = draw(st.sampled_from(["bytes", "arrays", "meta"]))
    if kind == "bytes":
        return Damage("checkpoint.npz", draw(mutated_bytes(npz_bytes(arrays), max_ops=2)))
    if kind == "arrays":
        return Damage("checkpoint.npz", npz_bytes(draw(array_dicts(arrays, Path(MARKER))), draw(st.booleans())))
    meta = json.loads(arrays["meta_json"].tobytes())
    choice = draw(st.sampled_from(["value", "drop", "bytes", "any"]))
    if choice == "bytes":
        text = draw(mutated_bytes(json.dumps(meta).encode()))
    elif choice == "any":
        text = json.dumps(draw(json_values)).encode()
    else:
        key = draw(st.sampled_from(sorted(meta)))
        if choice == "drop":
            meta.pop(key)
        else:
            meta[key] = draw(config_dicts()) if key == "config" else draw(_NEAR_VALID)
        text = json.dumps(meta).encode()
    arrays["meta_json"] = np.frombuffer(text, dtype=np.uint8)
    return Damage("checkpoint.npz", npz_bytes(arrays))


@fuzzed(share=0.4, deadline=False, prepare=valid_run)
@given(damage=checkpoint_damage())
def test_damaged_checkpoints_resume_or_raise_checkpoint_error(damage):
    """read_checkpoint_meta and restore_checkpoint on a damaged checkpoint.npz: the epoch it holds, or a
    CheckpointError naming the run folder."""
    from tfpvae.training import CheckpointError, read_checkpoint_meta, restore_checkpoint

    run, model = valid_run()
    with case_folder() as case, _cwd(case):
        folder = case / "run"
        shutil.copytree(run, folder)
        damage.apply(folder)
        meta, _ = attempt(
            "read_checkpoint_meta", lambda: read_checkpoint_meta(folder), (CheckpointError,), (str(folder),)
        )
        if meta is not None:
            epoch, _ = attempt(
                "restore_checkpoint", lambda: restore_checkpoint(model, folder), (CheckpointError,), (str(folder),)
            )
            assert epoch is None or (type(epoch) is int and epoch >= 0), f"restored epoch {epoch!r}"


# --------------------------------------------------------------------------- crafted files: bugs found, fixed


def npz_with_header(path: Path, header: str) -> Path:
    """An .npz whose one member, x.npy, has the .npy header text `header` and no data."""
    header += " " * (-(len(header) + 11) % 64) + "\n"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    return path


def npz_with_bad_deflate(path: Path) -> Path:
    """A compressed .npz whose member's deflate data starts with a block of the reserved type 3."""
    data = bytearray(npz_bytes({"x": np.zeros(64, np.uint8)}, compressed=True))
    name_length, extra_length = struct.unpack_from("<HH", data, 26)  # the zip local file header
    data[30 + name_length + extra_length] = 0xFF
    path.write_bytes(bytes(data))
    return path


_HEADER = "{'descr': '<f4', 'fortran_order': False, 'shape': "


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda path: npz_with_header(path, _HEADER + "(1,"), id="TokenError"),
        pytest.param(
            lambda path: npz_with_header(path, _HEADER + "(1099511627776,)}"),
            id="MemoryError",
        ),
        pytest.param(
            lambda path: npz_with_header(path, _HEADER + f"({2**64},)}}"),
            id="OverflowError",
        ),
        pytest.param(npz_with_bad_deflate, id="zlib.error"),
    ],
)
def test_crafted_load_npz_arrays(tmp_path, make):
    """An .npz member whose header is cut short, states a 4 TiB array or one of 2**64 elements, or whose deflate
    data is corrupt: a ValueError naming the file."""
    path = make(tmp_path / "a.npz")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_npz_arrays(path)


def test_crafted_read_metadata_recursion(tmp_path):
    """metadata.json nested 100,000 deep: a ModelFormatError naming the folder."""
    folder = shutil.copytree(valid_model(), tmp_path / "model")
    (folder / "metadata.json").write_text('{"format_version": 1, "history": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ModelFormatError, match=re.escape(str(folder))):
        read_model_files(folder)


def test_crafted_load_text_weights(tmp_path):
    """weights.npz whose first array is text of the right shape (checksum updated): ModelFormatError naming the
    folder, not numpy's "could not convert string to float"."""
    import tfpvae

    folder = shutil.copytree(valid_model(), tmp_path / "model")
    arrays = dict(np.load(folder / "weights.npz"))
    arrays["w0000"] = np.full(arrays["w0000"].shape, "-", dtype="S1")
    Damage("weights.npz", npz_bytes(arrays), rehash=True).apply(folder)
    with pytest.raises(ModelFormatError, match=re.escape(str(folder))):
        tfpvae.load(folder)


@pytest.mark.parametrize(
    "history",
    [
        pytest.param([1], id="a-list"),
        pytest.param({"loss": 3}, id="a-number-per-metric"),
    ],
)
def test_crafted_load_history(tmp_path, history):
    """metadata.json whose "history" is not a dict of lists: ModelFormatError naming the folder."""
    import tfpvae

    folder = shutil.copytree(valid_model(), tmp_path / "model")
    meta = json.loads((folder / "metadata.json").read_text())
    meta["history"] = history
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match=re.escape(str(folder))):
        tfpvae.load(folder)


def _checkpoint_case(case: str) -> dict[str, np.ndarray]:
    arrays = dict(np.load(valid_run()[0] / "checkpoint.npz"))
    meta = json.loads(arrays["meta_json"].tobytes())
    if case == "meta-not-json":
        arrays["meta_json"] = np.frombuffer(b"{not json", np.uint8)
    elif case == "meta-a-list":
        arrays["meta_json"] = np.frombuffer(b"[1]", np.uint8)
    elif case == "no-w0000":
        del arrays["w0000"]
    elif case == "w0000-wrong-shape":
        arrays["w0000"] = np.zeros((3, 0, 1), np.float32)
    elif case == "no-config":
        del meta["config"]
    elif case == "negative-epoch":
        meta["epoch"] = -3
    if case in ("no-config", "negative-epoch"):
        arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return arrays


@pytest.mark.parametrize(
    "case",
    [
        pytest.param("meta-not-json"),
        pytest.param("meta-a-list"),
        pytest.param("no-w0000"),
        pytest.param("w0000-wrong-shape"),
        pytest.param("no-config"),
        pytest.param("negative-epoch"),
    ],
)
def test_crafted_restore_checkpoint(tmp_path, case):
    """A damaged checkpoint.npz: CheckpointError naming the run folder, from read_checkpoint_meta or
    restore_checkpoint (JSONDecodeError, AttributeError, KeyError, Keras' ValueError; a negative epoch is
    restored as is)."""
    from tfpvae.training import CheckpointError, read_checkpoint_meta, restore_checkpoint

    run, model = valid_run()
    folder = shutil.copytree(run, tmp_path / "run")
    (folder / "checkpoint.npz").write_bytes(npz_bytes(_checkpoint_case(case)))
    with pytest.raises(CheckpointError, match=re.escape(str(folder))):
        read_checkpoint_meta(folder)
        restore_checkpoint(model, folder)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
