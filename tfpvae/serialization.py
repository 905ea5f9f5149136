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
from tfpvae._version import __version__
from tfpvae.config import VAEConfig
from tfpvae.registry import UnregisteredNameError

# The format written. Every format from 1 up is read forever: tests/fixtures/model-format-N
# holds a folder of each, which every later version must load with identical log_prob.
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE = "config.json", "weights.npz", "metadata.json"
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE)
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


def write_model_files(
    path: str | os.PathLike,
    config: VAEConfig,
    weights: Sequence[Any],
    metadata: dict[str, Any],
) -> Path:
    """Writes a model folder: each file atomically, the weights first.

    Args:
      path: the folder, created if needed. Existing model files in it are replaced, all
        three or none (a write error leaves the old ones).
      config: the model's `VAEConfig`.
      weights: the weight arrays in the order of the model's `weights`.
      metadata: JSON-serialisable entries for metadata.json; the format version, the
        tfpvae version and the weights' SHA-256 are added.

    Returns:
      The folder as a `Path`.

    Raises:
      StorageError: the file system refused a write; the folder's old files are unchanged.
    """
    folder = Path(path)
    make_folder(folder)
    buffer = io.BytesIO()
    np.savez(buffer, **numbered_arrays(weights, _WEIGHT_PREFIX))
    data = buffer.getvalue()
    metadata = {
        "format_version": FORMAT_VERSION,
        "tfpvae_version": __version__,
        **metadata,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
    }
    texts = {CONFIG_FILE: config.to_json(), METADATA_FILE: json.dumps(metadata, indent=2)}
    # All three written before any is renamed: a full disk leaves the old model whole.
    atomic_write_files(
        {
            folder / WEIGHTS_FILE: lambda f: f.write(data),
            **{folder / name: (lambda f, t=text: f.write(t.encode())) for name, text in texts.items()},
        }
    )
    return folder


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
        version, its weights fail the checksum, hold pickled data or other than floats, or
        are not numbered as `write_model_files` numbers them, or its metadata's history is
        not a dict of lists of numbers.
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
    try:
        config = VAEConfig.from_json((folder / CONFIG_FILE).read_text())
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
