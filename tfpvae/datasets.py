"""Named datasets and user image files, loaded offline-first as float32 arrays in [0, 1].

Names: "mnist", "fashion_mnist", "binarized_mnist" (static binarisation, no labels),
"digits" (scikit-learn's bundled 8x8 digits, the default that needs no files), and
"colour_mnist" and "colour_fashion_mnist": 32x32x3 colour versions of MNIST and
Fashion-MNIST made by `colourise` (see there), from the same files. Files are
searched, in order, in the `data_dir` argument, the `TFPVAE_DATA_DIR` setting and the
Keras dataset cache (~/.keras/datasets); only then is the Keras downloader tried.

User files (PNG/JPEG, TFRecord, .npy/.npz) load whole with `load_images`, which reads
through `tfpvae.streaming`; for files larger than memory use `tfpvae.streaming.iter_batches`
directly, which holds one batch at a time. Nothing here unpickles: every `np.load` uses
`allow_pickle=False`.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tfpvae._io import load_npz_arrays
from tfpvae._validation import check_choice, check_images, check_int
from tfpvae.streaming import BadRecordError, iter_batches, list_files
from tfpvae.subsets import evenly_spaced as evenly_spaced  # documented here in 0.1; lives in subsets

NAMES = ("digits", "mnist", "fashion_mnist", "binarized_mnist", "colour_mnist", "colour_fashion_mnist")
# The colour datasets: name -> the grey dataset they are made from.
_COLOUR_OF = {"colour_mnist": "mnist", "colour_fashion_mnist": "fashion_mnist"}
# Each split gets its own colours, so the test images' colour pairs are not the training ones.
_COLOUR_SEEDS = {"train": 0, "test": 1}
SPLITS = ("train", "valid", "test")
DATA_DIR_ENV = "TFPVAE_DATA_DIR"

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Where the Keras downloader fetches from (used only when no local copy exists).
_KERAS_ORIGINS = {
    "mnist": ("https://storage.googleapis.com/tensorflow/tf-keras-datasets/", "mnist.npz"),
    "fashion_mnist": ("https://storage.googleapis.com/tensorflow/tf-keras-datasets/", None),
}
_BINARIZED_FILE = "binarized_mnist.npz"
_DIGITS_TEST_FRACTION = 0.2

Arrays = tuple[np.ndarray, np.ndarray | None]


class DatasetNotFoundError(FileNotFoundError):
    """A named dataset's files were found in none of the places searched."""


def _search_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if os.environ.get(DATA_DIR_ENV):
        dirs.append(Path(os.environ[DATA_DIR_ENV]))
    dirs.append(Path.home() / ".keras" / "datasets")
    return dirs


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (optionally gzipped) of uint8 data, as used by MNIST.

    Args:
      path: the file, e.g. "train-images-idx3-ubyte.gz".

    Returns:
      uint8 array, shape (n, rows, cols) for images or (n,) for labels.

    Raises:
      ValueError: if the file is truncated or not a uint8 IDX file.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:  # zlib.error: corrupt gzip data
        raise ValueError(f"Cannot read IDX file {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file (bad magic number).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(raw) < header:
        raise ValueError(f"{path} has a truncated IDX header.")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims)  # exact: np.prod would wrap around in int64 for huge dims
    if len(raw) - header != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: header promises {expected} bytes of data for shape {dims}, "
            f"found {len(raw) - header}."
        )
    try:
        return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    except ValueError:  # an empty array of a shape numpy cannot hold, e.g. (2**31, 2**31, 2**31, 0)
        raise ValueError(f"{path} has an IDX shape {dims} that no array can have.") from None


def _to_images(x: np.ndarray, scale: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32) / np.float32(scale)
    return x[..., None] if x.ndim == 3 else x


def _load_idx_split(folder: Path, split: str) -> Arrays:
    images, labels = (folder / name for name in _IDX_FILES[split])
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or 0 in x.shape:
        raise ValueError(f"IDX files in {folder} do not match: images {x.shape}, labels {y.shape}.")
    return _to_images(x, 255.0), y.astype(np.int64)


def _check_split_arrays(path: Path, x: np.ndarray, y: np.ndarray, names: tuple[str, str]) -> None:
    """Raises unless x is uint8 images (n, H, W) and y one integer label per image, as in Keras' mnist.npz."""
    if x.dtype != np.uint8 or x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"{path}: {names[0]} must be uint8 images (n, height, width); got {x.dtype} {x.shape}.")
    fits = y.dtype.kind in "iu" and (np.can_cast(y.dtype, np.int64) or y.max(initial=0) <= np.iinfo(np.int64).max)
    if not fits or y.shape != (len(x),):
        raise ValueError(
            f"{path}: {names[1]} must hold one integer label per image, shape ({len(x)},); got {y.dtype} {y.shape}."
        )


def _load_keras_npz(path: Path, split: str) -> Arrays:
    data = load_npz_arrays(path)
    key = "train" if split == "train" else "test"
    if f"x_{key}" not in data or f"y_{key}" not in data:
        raise ValueError(f"{path} lacks arrays x_{key}/y_{key}; found {sorted(data)}.")
    x, y = data[f"x_{key}"], data[f"y_{key}"]
    _check_split_arrays(path, x, y, (f"x_{key}", f"y_{key}"))
    return _to_images(x, 255.0), y.astype(np.int64)


def _load_binarized(path: Path, split: str) -> Arrays:
    data = load_npz_arrays(path)
    if split not in data:
        raise ValueError(f"{path} lacks array {split!r}; found {sorted(data)}.")
    x = data[split]
    if x.ndim != 2 or x.shape[1] != 784 or not len(x) or x.dtype.kind not in "biuf":
        raise ValueError(f"{path}[{split!r}] must be numbers of shape (n, 784); got {x.dtype} {x.shape}.")
    x = x.reshape(-1, 28, 28, 1).astype(np.float32)
    if not (np.all(np.isfinite(x)) and x.min() >= 0 and x.max() <= 1):
        raise ValueError(f"{path}[{split!r}] must hold binary pixels 0 or 1; it holds values outside [0, 1].")
    return x, None


def _find(name: str, data_dir) -> tuple[str, Path]:
    """Returns (format, path) of the first local copy of dataset `name`."""
    tried = []
    for base in _search_dirs(data_dir):
        if name == "binarized_mnist":
            candidates = [
                ("binarized", base / "binarized_mnist" / _BINARIZED_FILE),
                ("binarized", base / _BINARIZED_FILE),
            ]
        else:
            folder = "fashion-mnist" if name == "fashion_mnist" else name
            candidates = [("idx", base / name), ("idx", base / folder)]
            if name == "mnist":
                candidates.append(("keras_npz", base / "mnist.npz"))
        for fmt, path in candidates:
            ok = (path / _IDX_FILES["train"][0]).exists() if fmt == "idx" else path.exists()
            if ok:
                return fmt, path
            tried.append(str(path))
    return "", Path(", ".join(dict.fromkeys(tried)))


def _download(name: str) -> tuple[str, Path]:
    """Fetches `name` into the Keras cache with the Keras downloader (needs a network)."""
    from tfpvae._keras import tfk

    origin, npz = _KERAS_ORIGINS[name]
    if npz:
        return "keras_npz", Path(tfk.utils.get_file(npz, origin=origin + npz))
    folder = Path.home() / ".keras" / "datasets" / "fashion-mnist"
    for fname in _IDX_FILES["train"] + _IDX_FILES["test"]:
        tfk.utils.get_file(fname, origin=origin + "fashion-mnist/" + fname, cache_subdir="datasets/fashion-mnist")
    return "idx", folder


def _digits(split: str) -> Arrays:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = _to_images(digits.images, 16.0), digits.target.astype(np.int64)
    # Deterministic split: a fixed permutation, the last 20% is the test set.
    order = np.random.default_rng(0).permutation(len(x))
    cut = int(round(len(x) * (1 - _DIGITS_TEST_FRACTION)))
    idx = order[:cut] if split == "train" else order[cut:]
    return x[idx], y[idx]


def load_split(name: str, split: str = "train", data_dir: str | os.PathLike | None = None) -> Arrays:
    """Loads one split of a named dataset.

    Args:
      name: one of `NAMES`: "digits", "mnist", "fashion_mnist", "binarized_mnist",
        "colour_mnist", "colour_fashion_mnist".
      split: "train", "test", or "valid" (binarized_mnist only).
      data_dir: folder to search first. None: then `TFPVAE_DATA_DIR`, the Keras cache.

    Returns:
      (images, labels): images float32 of shape (n, H, W, 1) in [0, 1] ((n, 32, 32, 3)
      for the colour names); labels int64 of shape (n,), or None for binarized_mnist.

    Raises:
      ValueError: unknown name or split, or corrupt files.
      DatasetNotFoundError: no local copy and the download failed; the message lists
        every place searched.
    """
    check_choice(name, "name", NAMES)
    check_choice(split, "split", SPLITS if name == "binarized_mnist" else ("train", "test"))
    if name == "digits":
        return _digits(split)
    if name in _COLOUR_OF:
        x, y = load_split(_COLOUR_OF[name], split, data_dir)
        return colourise(x, size=32, seed=_COLOUR_SEEDS[split]), y
    fmt, path = _find(name, data_dir)
    if not fmt:
        searched = str(path)
        if name == "binarized_mnist":
            raise DatasetNotFoundError(
                f"Dataset 'binarized_mnist' not found; searched: {searched}. Put {_BINARIZED_FILE} (uint8 arrays "
                f"train/valid/test of shape (n, 784)) under DATA_DIR/binarized_mnist/ and pass data_dir=DATA_DIR "
                f"(CLI: --data-dir DATA_DIR) or set {DATA_DIR_ENV}."
            )
        try:
            fmt, path = _download(name)
        except Exception as err:  # offline: say where we looked and how to fix it
            raise DatasetNotFoundError(
                f"Dataset {name!r} not found; searched: {searched}; download failed ({type(err).__name__}). "
                f"Put the four IDX .gz files under DATA_DIR/{name}/ and pass data_dir=DATA_DIR "
                f"(CLI: --data-dir DATA_DIR) or set {DATA_DIR_ENV}."
            ) from None
    if fmt == "binarized":
        return _load_binarized(path, split)
    if fmt == "keras_npz":
        return _load_keras_npz(path, split)
    return _load_idx_split(path, split)


def colourise(images: Any, size: int = 32, seed: int = 0) -> np.ndarray:
    """Colour versions of grey images: the strokes in one colour on a background of another.

    Each image gets its own pair of colours, a light one (every channel in [0.55, 1]) for
    the strokes and a dark one ([0, 0.35]) for the background, so the shapes stay as
    visible as in the grey originals: pixel = g * stroke + (1 - g) * background for grey
    value g. Images are enlarged by the whole factor size // height (pixel repetition) and
    padded with background to size x size, as 28x28 MNIST becomes 32x32 or 64x64.

    Args:
      images: grey images, array of shape (n, H, W, 1) or (n, H, W), float in [0, 1] or
        uint8 0..255, H = W <= size.
      size: side of the output.
      seed: seed of the colours; image i's colours depend only on the seed and i.

    Returns:
      float32 array of shape (n, size, size, 3) in [0, 1].

    Examples:
      >>> (x, _), _ = load("digits")
      >>> colourise(x[:5], size=16).shape
      (5, 16, 16, 3)
    """
    x = check_images(images, "images")  # uint8 scaled to [0, 1]; empty and NaN refused
    if x.shape[-1] != 1 or x.shape[1] != x.shape[2]:
        raise ValueError(
            f"`images` must be square grey images (n, H, W, 1) or (n, H, W); got shape {np.shape(images)}."
        )
    x = x[..., 0]
    size = check_int(size, "size", minimum=x.shape[1])
    factor = size // x.shape[1]
    x = np.repeat(np.repeat(x, factor, axis=1), factor, axis=2)
    before = (size - x.shape[1]) // 2
    after = size - x.shape[1] - before
    x = np.pad(x, ((0, 0), (before, after), (before, after)))[..., None]  # background where g = 0
    rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
    # Both colours of image i from draws 6i..6i+5: they depend on the seed and i only, so a
    # prefix of the images gets the colours it gets inside the whole set.
    u = rng.uniform(size=(len(x), 2, 1, 1, 3)).astype(np.float32)
    stroke, background = 0.55 + 0.45 * u[:, 0], 0.35 * u[:, 1]
    return x * stroke + (1.0 - x) * background


def load(name: str, data_dir: str | os.PathLike | None = None) -> tuple[Arrays, Arrays]:
    """Loads a named dataset's train and test splits.

    Args:
      name: one of "digits" (no files needed), "mnist", "fashion_mnist", "binarized_mnist".
      data_dir: folder to search first (layout as `../shared/data`: `mnist/*.gz`,
        `fashion_mnist/*.gz`, `binarized_mnist/binarized_mnist.npz`).

    Returns:
      ((x_train, y_train), (x_test, y_test)); see `load_split`.

    Examples:
      >>> (x_train, y_train), (x_test, y_test) = load("digits")
      >>> x_train.shape, x_test.shape
      ((1438, 8, 8, 1), (359, 8, 8, 1))
    """
    return load_split(name, "train", data_dir), load_split(name, "test", data_dir)


def load_images(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Loads user images into memory: PNG/JPEG files, TFRecord shards or .npy/.npz arrays.

    Reads through `tfpvae.streaming.iter_batches`, so it takes what that reader takes and
    decodes the same way: PNG/JPEG files (grey, 8- or 16-bit, alpha dropped, gives one
    channel; colour three), TFRecord files of `tf.train.Example` (bytes feature `image`,
    optional int64 feature `label`), .npy arrays and .npz arrays `x` or `images` with
    optional labels `y` or `labels` (one whole number or bool per image, shape (n,) or
    (n, 1)). Arrays are (n, H, W) or (n, H, W, C), uint8 0..255 or float in [0, 1].

    Args:
      path: a file, a folder (its files of those kinds, in sorted name order, not
        recursive) or a glob such as "shards/*.tfrecord"; see `tfpvae.streaming.list_files`.

    Returns:
      (images, labels): images float32 of shape (n, H, W, C) in [0, 1], in file order;
      labels int64 of shape (n,), or None when no record has a label.

    Raises:
      FileNotFoundError: `path` does not exist, matches no file, or is a folder without
        one of those files; the message names it.
      ValueError: an unreadable, corrupt or pickled file or record, images of unequal size,
        labels that are not one whole number per image (a `tfpvae.streaming.BadRecordError`
        whose message starts with the file or record id); no images at all; or labels on
        only some records, naming the first record without one (a partial label array
        would silently mix its -1 placeholders in with the real classes).
    """
    images, labels, unlabelled = [], [], None
    try:
        for batch in iter_batches(path, on_error=None):
            images.append(batch.images)
            if batch.labels is not None:
                labels.append(batch.labels)
            if unlabelled is None and (batch.labels is None or batch.labelled is not None):
                unlabelled = batch.ids[0 if batch.labels is None else int(np.argmin(batch.labelled))]
    except BadRecordError as err:
        # A row of the input's only array file has the bare row number as id: name the file.
        file = list_files(path)[0] if err.id.isdigit() else err.id
        if file in str(err):
            raise
        raise BadRecordError(err.id, f"in {file}: {err.reason}") from None
    shown = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path  # or a list of them
    if not images:
        raise ValueError(f"`path` {shown!r} holds no images; expected at least one.")
    if labels and unlabelled is not None:
        raise ValueError(
            f"`path` {shown!r} has labels on only some records; the first without one is "
            f"{unlabelled!r}. Label every record or none."
        )
    return np.concatenate(images), np.concatenate(labels) if labels else None


def to_dataset(x: np.ndarray, batch_size: int = 128, shuffle: bool = True, seed: int | None = None) -> Any:
    """Wraps images in a cached, shuffled, batched, prefetched `tf.data.Dataset`.

    Args:
      x: images (n, H, W, C) or (n, H, W), float in [0, 1] or uint8 0..255; the dataset
        holds them as float32 in [0, 1].
      batch_size: images per batch.
      shuffle: reshuffle every epoch.
      seed: shuffle seed.

    Raises:
      ValueError, TypeError: `x` is not a non-empty batch of images (`check_images`).
    """
    from tfpvae._keras import tf

    x = check_images(x, "x")
    batch_size = check_int(batch_size, "batch_size")
    ds = tf.data.Dataset.from_tensor_slices(x).cache()
    if shuffle:
        ds = ds.shuffle(min(len(x), 60_000), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
