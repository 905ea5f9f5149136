"""Model folders as plain files: config JSON, weights .npz, metadata JSON, nothing executable.

This module reads and writes the files and checks them (format version, SHA-256 of the
weights, no pickles); it knows nothing of the model class. `tfpvae.model.save` and
`tfpvae.model.load` (also `tfpvae.save` / `tfpvae.load`) build on it: loading rebuilds the
model from its config with library code, then assigns the arrays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tfpvae._io import atomic_write, atomic_write_text, load_npz_arrays, numbered_arrays, numbered_keys, sha256
from tfpvae._version import __version__
from tfpvae.config import VAEConfig
from tfpvae.registry import UnregisteredNameError

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE = "config.json", "weights.npz", "metadata.json"
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
      path: the folder, created if needed. Existing model files in it are replaced.
      config: the model's `VAEConfig`.
      weights: the weight arrays in the order of the model's `weights`.
      metadata: JSON-serialisable entries for metadata.json; the format version, the
        tfpvae version and the weights' SHA-256 are added.

    Returns:
      The folder as a `Path`.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = numbered_arrays(weights, _WEIGHT_PREFIX)
    atomic_write(folder / WEIGHTS_FILE, lambda f: np.savez(f, **arrays))
    metadata = {
        "format_version": FORMAT_VERSION,
        "tfpvae_version": __version__,
        **metadata,
        "weights_sha256": sha256(folder / WEIGHTS_FILE),
    }
    atomic_write_text(folder / CONFIG_FILE, config.to_json())
    atomic_write_text(folder / METADATA_FILE, json.dumps(metadata, indent=2))
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
    for name in (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE):
        if not (folder / name).is_file():
            raise ModelFormatError(f"Model folder {folder} is incomplete: {name} is missing.")
    try:
        metadata = json.loads((folder / METADATA_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFormatError(f"{folder / METADATA_FILE} is not valid JSON: {err}") from None
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    if version != FORMAT_VERSION:
        raise ModelFormatError(
            f"Model folder {folder} has format version {version!r}; this tfpvae reads version {FORMAT_VERSION}."
        )
    return metadata


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
        version, its weights fail the checksum or hold pickled data, or are not numbered
        as `write_model_files` numbers them.
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
    return ModelFiles(config, [arrays[k] for k in keys], metadata)
