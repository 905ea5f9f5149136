"""Save and load models as a folder of plain data: config JSON, weights .npz, metadata JSON.

Loading rebuilds the model from its config with library code, then assigns the arrays:
no pickles, no Keras Lambda deserialisation, nothing from the folder is executed. The
metadata carries a SHA-256 of the weights file so truncation or tampering is detected.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE = "config.json", "weights.npz", "metadata.json"


class ModelFormatError(ValueError):
    """A model folder is missing, incomplete, tampered with or from an incompatible version."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    # The only way to read the umask is to set it: put it straight back. 0o077 meanwhile, so a
    # file another thread creates in that instant can only be more private, never less.
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    """Writes via a temporary file in the same folder, then renames: never a half file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file private (0600); give it the mode a plain open() would, so
            # a model folder others may read stays readable after the rename. Best effort:
            # some filesystems (FAT, some network mounts) refuse chmod, and the file stays private.
            try:
                os.chmod(tmp, 0o666 & ~_umask())
            except OSError:
                pass
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(model: Any, path: str | os.PathLike, extra_metadata: dict[str, Any] | None = None) -> Path:
    """Writes `model` to the folder `path` (created if needed).

    Args:
      model: a `tfpvae.VAE`.
      path: the folder. Existing model files in it are replaced atomically.
      extra_metadata: more JSON-serialisable entries for metadata.json. Default None.

    Returns:
      The folder as a `Path`.
    """
    import tfpvae
    from tfpvae._keras import tf, tfp

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    weights = model.get_weights()
    arrays = {f"w{i:04d}": np.asarray(w) for i, w in enumerate(weights)}
    _atomic_write(folder / WEIGHTS_FILE, lambda f: np.savez(f, **arrays))
    metadata = {
        "format_version": FORMAT_VERSION,
        "tfpvae_version": tfpvae.__version__,
        "tensorflow_version": tf.__version__,
        "tensorflow_probability_version": tfp.__version__,
        "weights_sha256": _sha256(folder / WEIGHTS_FILE),
        "weights": [{"name": w.name, "shape": list(w.shape)} for w in model.weights],
        "num_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "history": model.training_history,
        **(extra_metadata or {}),
    }
    _atomic_write(folder / CONFIG_FILE, lambda f: f.write(model.config.to_json().encode()))
    _atomic_write(folder / METADATA_FILE, lambda f: f.write(json.dumps(metadata, indent=2).encode()))
    return folder


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Returns metadata.json of a model folder, checked for a compatible format version."""
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


def load(path: str | os.PathLike) -> Any:
    """Loads a model saved by `VAE.save` / `tfpvae.save`.

    Args:
      path: the model folder.

    Returns:
      A `tfpvae.VAE` with the saved weights and training history, compiled with the
      default optimizer.

    Raises:
      ModelFormatError: the folder is missing or incomplete, from an incompatible format
        version, its weights fail the checksum, hold pickled data, or do not fit the config.
    """
    folder = Path(path)
    metadata = read_metadata(folder)  # before importing TensorFlow: fail fast on a bad path

    from tfpvae.config import VAEConfig
    from tfpvae.datasets import load_npz_arrays
    from tfpvae.model import VAE

    if _sha256(folder / WEIGHTS_FILE) != metadata.get("weights_sha256"):
        raise ModelFormatError(
            f"{folder / WEIGHTS_FILE} does not match the checksum in {METADATA_FILE}: "
            "the file is truncated or was modified after saving."
        )
    try:
        config = VAEConfig.from_json((folder / CONFIG_FILE).read_text())
    except (ValueError, TypeError) as err:
        raise ModelFormatError(f"{folder / CONFIG_FILE} is not a valid config: {err}") from None
    try:
        arrays = load_npz_arrays(folder / WEIGHTS_FILE)
    except ValueError as err:
        raise ModelFormatError(str(err)) from None
    model = VAE(config)
    expected = [tuple(w.shape) for w in model.weights]
    keys = [f"w{i:04d}" for i in range(len(expected))]
    got = [tuple(arrays[k].shape) if k in arrays else None for k in keys]
    if set(arrays) != set(keys) or got != expected:
        raise ModelFormatError(
            f"Weights in {folder} do not match its config: expected {len(expected)} arrays with shapes "
            f"{expected[:3]}..., found {len(arrays)} with shapes {[tuple(a.shape) for a in arrays.values()][:3]}..."
        )
    model.set_weights([arrays[k] for k in keys])
    model.training_history = {k: list(v) for k, v in metadata.get("history", {}).items()}
    model.compile()
    return model
