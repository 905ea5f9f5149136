"""File I/O that never leaves half a file and never unpickles: atomic writes, checksums, .npz reads.

Every file the package writes for later (model folders, checkpoints, run arguments) goes
through `atomic_write`; every array file it reads back goes through `load_npz_arrays`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read 1 MiB at a time."""
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


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Calls `write(f)` on a temporary file in `path`'s folder, then renames it to `path`.

    A reader sees the old file or the complete new one, never half a file, even if the
    process is killed mid-write.

    Args:
      path: the file to (re)place; its folder must exist.
      write: called with a binary file object open for writing.
    """
    path = Path(path)
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


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write` of a UTF-8 string."""
    data = text.encode()
    atomic_write(path, lambda f: f.write(data))


def load_npz_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads every array of an .npz file without unpickling anything.

    Raises:
      ValueError: if the file is corrupt or holds pickled (object) arrays.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise ValueError(
                f"{path} contains pickled objects; refusing to load it (only plain arrays are read)."
            ) from None
        raise ValueError(f"Cannot read {path}: {err}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ValueError(f"Cannot read {path}: it is truncated or not an .npz file ({err}).") from None


def numbered_arrays(arrays: Sequence[Any], prefix: str) -> dict[str, np.ndarray]:
    """{"<prefix>0000": arrays[0], ...}: a list stored in an .npz under keys that sort in order."""
    return {f"{prefix}{i:04d}": np.asarray(a) for i, a in enumerate(arrays)}


def numbered_keys(count: int, prefix: str) -> list[str]:
    """The keys `numbered_arrays` gives a list of `count` arrays, in order."""
    return [f"{prefix}{i:04d}" for i in range(count)]
