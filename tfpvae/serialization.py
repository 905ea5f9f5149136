"""Model folders as plain files: config JSON, weights .npz, metadata JSON, nothing executable.

This module reads and writes the files and checks them (format version, SHA-256 of the
weights, no pickles); it knows nothing of the model class. `tfpvae.model.save` and
`tfpvae.model.load` (also `tfpvae.save` / `tfpvae.load`) build on it: loading rebuilds the
model from its config with library code, then assigns the arrays.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tfpvae._io import atomic_write_files, load_npz_arrays, make_folder, numbered_arrays, numbered_keys, sha256
from tfpvae._validation import show
from tfpvae._version import __version__
from tfpvae.config import VAEConfig
from tfpvae.registry import UnregisteredNameError

# The format written. Every format from 1 up is read forever: tests/fixtures/model-format-N
# holds a folder of each, which every later version must load with identical log_prob.
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE = "config.json", "weights.npz", "metadata.json"
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE)
# The entries of metadata.json that tfpvae writes itself: `write_model_files` the first three,
# `tfpvae.model.save` the rest. A user's extra entries may not replace them: a replaced
# "format_version" or "history" leaves a folder that no longer loads.
_OWN_KEYS = ("format_version", "tfpvae_version", "weights_sha256", "config_sha256")
RESERVED_METADATA_KEYS = (
    *_OWN_KEYS,
    "tensorflow_version",
    "tensorflow_probability_version",
    "weights",
    "num_parameters",
    "history",
    "registered_by",
)
# Weights are stored under "w0000", "w0001", ... in the order of `Model.weights`, which
# rebuilding the same config reproduces.
_WEIGHT_PREFIX = "w"


class ModelFormatError(ValueError):
    """A model folder is missing, incomplete, tampered with or from an incompatible version."""


class ModelFiles(NamedTuple):
    """The checked contents of a model folder.

    Attributes:
      config: the `VAEConfig` in config.json.
      weights: the weight arrays, in the order of the model's `weights`.
      metadata: metadata.json as a dict (versions, checksum, weight shapes, history).
    """

    config: VAEConfig
    weights: list[np.ndarray]
    metadata: dict[str, Any]


def check_extra_metadata(extra_metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Returns a user's extra metadata.json entries as a new dict, or raises if one would replace tfpvae's own.

    Args:
      extra_metadata: a dict of JSON-serialisable entries, or None (none).

    Raises:
      TypeError: `extra_metadata` is not a dict.
      ValueError: a key is one of `RESERVED_METADATA_KEYS`; the message names it.
    """
    if extra_metadata is None:
        return {}
    if not isinstance(extra_metadata, dict):
        raise TypeError(f"`extra_metadata` must be a dict of JSON values; got {type(extra_metadata).__name__}.")
    _refuse_reserved(extra_metadata, RESERVED_METADATA_KEYS, "`extra_metadata`")
    return dict(extra_metadata)


def _refuse_reserved(entries: dict[str, Any], reserved: Sequence[str], argument: str) -> None:
    """Raises ValueError naming `argument` and the first key of `entries` that is in `reserved`."""
    clash = [key for key in entries if key in reserved]
    if clash:
        raise ValueError(
            f"{argument} key {clash[0]!r} is reserved: tfpvae writes it to metadata.json itself "
            f"(reserved keys: {', '.join(reserved)}); store your own entries under other keys."
        )


def write_model_files(
    path: str | os.PathLike,
    config: VAEConfig,
    weights: Sequence[Any],
    metadata: dict[str, Any],
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Writes a model folder: each file atomically, the weights first.

    Args:
      path: the folder, created if needed. Existing model files in it are replaced, all
        three or none (a write error leaves the old ones).
      config: the model's `VAEConfig`.
      weights: the weight arrays in the order of the model's `weights`.
      metadata: JSON-serialisable entries for metadata.json; the format version, the
        tfpvae version and the weights' SHA-256 are added (and may not be given). A
        "history" must be {metric: [number per epoch]}, as `read_model_files` requires.
      extra_metadata: a user's own JSON-serialisable entries, added after `metadata`;
        none may use a key of `RESERVED_METADATA_KEYS`. Default None (none).

    Returns:
      The folder as a `Path`.

    Raises:
      TypeError: `extra_metadata` is not a dict.
      ValueError: an entry would replace one that tfpvae writes, or the "history" is not
        a training history; nothing is written, and the folder's old files are unchanged.
      StorageError: the file system refused a write; the folder's old files are unchanged.
    """
    # Checked before the folder is touched: a refused save must leave an earlier model whole.
    extra = check_extra_metadata(extra_metadata)
    _refuse_reserved(metadata, _OWN_KEYS, "`metadata`")
    metadata = {**metadata, **extra}
    if "history" in metadata and not is_history(metadata["history"]):
        # read_model_files would refuse the folder: one holding a user's "history" entry
        # (tfpvae.save's `extra_metadata`, merged into `metadata`) could never be loaded.
        raise ValueError(
            f'metadata "history" must be the training history, {{metric: [number per epoch]}}, which load reads '
            f"back; got {show(metadata['history'])}. Store your own entries (`extra_metadata`) under other keys."
        )
    folder = Path(path)
    make_folder(folder)
    buffer = io.BytesIO()
    np.savez(buffer, **numbered_arrays(weights, _WEIGHT_PREFIX))
    data = buffer.getvalue()
    config_text = config.to_json()
    metadata = {
        "format_version": FORMAT_VERSION,
        "tfpvae_version": __version__,
        **metadata,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "config_sha256": config_digest(config_text),
    }
    texts = {CONFIG_FILE: config_text, METADATA_FILE: json.dumps(metadata, indent=2)}
    # All three written before any is renamed: a full disk leaves the old model whole.
    atomic_write_files(
        {
            folder / WEIGHTS_FILE: lambda f: f.write(data),
            **{folder / name: (lambda f, t=text: f.write(t.encode())) for name, text in texts.items()},
        }
    )
    return folder


def config_digest(text: str | bytes) -> str | None:
    """SHA-256 of a config.json's content in a canonical form (keys sorted, no spaces), or
    None for text that is not JSON: line endings, indentation or key order changed by
    git or an editor keep the digest, a changed value does not."""
    try:
        canonical = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (ValueError, RecursionError):  # not JSON (or not UTF-8), or nested too deeply
        return None
    return hashlib.sha256(canonical.encode()).hexdigest()


def read_config_text(path: str | os.PathLike) -> str:
    """Returns the text of a model folder's config.json.

    Args:
      path: the model folder.

    Returns:
      the file's text, decoded as UTF-8 (it is not parsed here).

    Raises:
      ModelFormatError: the file is not UTF-8 text (damaged, or not written by tfpvae).
    """
    file = Path(path) / CONFIG_FILE
    try:
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ModelFormatError(f"{file} is not UTF-8 text ({err}): it was damaged or not written by tfpvae.") from None


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Returns metadata.json of a model folder, checked for a compatible format version.

    Raises:
      ModelFormatError: the folder is missing or incomplete, or its metadata is not valid
        JSON of this format version.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFormatError(f"Model folder {folder} does not exist (expected a folder written by VAE.save).")
    for name in MODEL_FILES:
        if not (folder / name).is_file():
            raise ModelFormatError(f"Model folder {folder} is incomplete: {name} is missing.")
    try:
        metadata = json.loads((folder / METADATA_FILE).read_text())
    except (ValueError, RecursionError) as err:  # not JSON, not UTF-8, or nested too deeply
        raise ModelFormatError(f"{folder / METADATA_FILE} is not valid JSON: {err}") from None
    if not isinstance(metadata, dict):
        raise ModelFormatError(f"{folder / METADATA_FILE} is not a JSON object: not written by tfpvae.")
    check_format_version(metadata.get("format_version"), folder, metadata.get("tfpvae_version"))
    return metadata


def check_format_version(version: Any, folder: str | os.PathLike, written_by: Any = None) -> int:
    """Returns a model folder's format version, or raises saying why this tfpvae cannot read it.

    Every format from 1 to `FORMAT_VERSION` is read (tests load a committed folder of each
    with identical `log_prob`); a newer one asks for a newer tfpvae.

    Raises:
      ModelFormatError: `version` is missing, not an integer, or not a format this reads.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFormatError(
            f"{Path(folder) / METADATA_FILE} has format_version {version!r}: not a model folder written by tfpvae."
        )
    if version > FORMAT_VERSION:
        by = f" by tfpvae {written_by}" if isinstance(written_by, str) else ""
        reads = "format 1" if FORMAT_VERSION == 1 else f"formats 1 to {FORMAT_VERSION}"
        raise ModelFormatError(
            f"Model folder {folder} was written{by} in format {version}, newer than this tfpvae {__version__} "
            f"reads ({reads}): upgrade tfpvae (pip install -U tfpvae) to load it."
        )
    return version


def _with_origin(message: str, metadata: dict[str, Any]) -> str:
    """`message` plus the module that registered the missing name when the model was saved."""
    for field, module in metadata.get("registered_by", {}).items():
        if message.startswith(f"`{field}` ") and module != "__main__":
            return f"{message} When saved, it was registered by module {module!r}: `import {module}`."
    return message


def read_model_files(path: str | os.PathLike) -> ModelFiles:
    """Reads and checks a model folder written by `write_model_files`.

    Args:
      path: the model folder.

    Returns:
      `ModelFiles(config, weights, metadata)`; whether the weights fit a model of that
      config is for the caller that builds it (`tfpvae.model.load`) to check.

    Raises:
      ModelFormatError: the folder is missing or incomplete, from an incompatible format
        version, fails a checksum (weights or config), its weights hold pickled data or other
        than floats or are not numbered as `write_model_files` numbers them, or its metadata's
        history is not a dict of lists of numbers.
      UnregisteredNameError: the config names a network or prior that no module imported
        in this process registers; the message names the module that registered it when
        the model was saved (from metadata.json's "registered_by"; it is never imported).
    """
    folder = Path(path)
    metadata = read_metadata(folder)
    if sha256(folder / WEIGHTS_FILE) != metadata.get("weights_sha256"):
        raise ModelFormatError(
            f"{folder / WEIGHTS_FILE} does not match the checksum in {METADATA_FILE}: "
            "the file is truncated or was modified after saving."
        )
    config_text = read_config_text(folder)
    # Folders written before the config had a checksum have none to check.
    if "config_sha256" in metadata and config_digest(config_text) != metadata["config_sha256"]:
        raise ModelFormatError(
            f"{folder / CONFIG_FILE} does not match the checksum in {METADATA_FILE}: it was modified after "
            "saving, and its weights may not fit it. Save the model again rather than edit the file."
        )
    try:
        config = VAEConfig.from_json(config_text)
    except UnregisteredNameError as err:
        # Not a broken folder: this process lacks the user's network or prior module.
        raise UnregisteredNameError(_with_origin(str(err), metadata)) from None
    except (ValueError, TypeError) as err:
        raise ModelFormatError(f"{folder / CONFIG_FILE} is not a valid config: {err}") from None
    try:
        arrays = load_npz_arrays(folder / WEIGHTS_FILE)
    except ValueError as err:
        raise ModelFormatError(str(err)) from None
    keys = numbered_keys(len(arrays), _WEIGHT_PREFIX)
    if set(arrays) != set(keys):
        raise ModelFormatError(f"Weights in {folder} are not numbered as tfpvae writes them: {sorted(arrays)[:3]}...")
    not_float = [k for k in keys if arrays[k].dtype.kind != "f"]
    if not_float:
        key = not_float[0]
        raise ModelFormatError(f"Weights in {folder} must be float arrays; {key} has dtype {arrays[key].dtype}.")
    if not is_history(metadata.get("history", {})):
        raise ModelFormatError(f'{folder / METADATA_FILE} has a "history" that is not a dict of lists of numbers.')
    return ModelFiles(config, [arrays[k] for k in keys], metadata)


def is_history(history: Any) -> bool:
    """Whether `history` is {metric: [number per epoch]}, as `VAE.training_history` is."""
    number = (int, float)
    return isinstance(history, dict) and all(
        isinstance(v, list) and all(isinstance(x, number) and not isinstance(x, bool) for x in v)
        for v in history.values()
    )
