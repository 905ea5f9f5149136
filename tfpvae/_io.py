"""File I/O that never leaves half a file and never unpickles: atomic writes, checksums, .npz reads.

Every file the package writes for later (model folders, checkpoints, run arguments) goes
through `atomic_write` (or `atomic_write_files` for files that belong together); every
array file it reads back goes through `load_npz_arrays`. A write the file system refuses
(no space left, permission denied, read-only, missing folder) raises `StorageError`,
which names the operation and the path, and leaves the previous file as it was.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np


class StorageError(OSError):
    """The file system refused an operation on a path: no space left, permission denied, read-only, missing folder.

    Attributes:
      operation: what was being done, e.g. "write" or "create folder".
      filename: the path (as for any `OSError`).
      kept: what is still intact, for the message (e.g. "the last checkpoint is unchanged").
    """

    def __init__(self, operation: str, path: str | os.PathLike, err: OSError, kept: str = "") -> None:
        super().__init__(err.errno, err.strerror or str(err), str(path))
        self.operation, self.kept = operation, kept

    def __str__(self) -> str:
        kept = f"; {self.kept}" if self.kept else ""
        return f"cannot {self.operation} {self.filename}: {self.strerror}{kept}"

    def keeping(self, kept: str) -> StorageError:
        """The same error, saying what is still intact."""
        err = StorageError(self.operation, self.filename, self, kept)
        err.__cause__ = self.__cause__
        return err


def storage_error(operation: str, path: str | os.PathLike, err: OSError) -> StorageError:
    """`err` as a `StorageError` naming `operation` and `path` (an error that already is one is kept)."""
    return err if isinstance(err, StorageError) else StorageError(operation, path, err)


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


def _write_temporary(path: Path, write: Callable[[IO[bytes]], Any]) -> str:
    """Writes a temporary file beside `path` with `write(f)`, flushed to disk; returns its name."""
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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Calls `write(f)` on a temporary file in `path`'s folder, then renames it to `path`.

    A reader sees the old file or the complete new one, never half a file, even if the
    process is killed mid-write.

    Args:
      path: the file to (re)place; its folder must exist.
      write: called with a binary file object open for writing.

    Raises:
      StorageError: the file system refused the write; the old file is unchanged.
    """
    atomic_write_files({path: write})


def atomic_write_files(files: dict[str | os.PathLike, Callable[[IO[bytes]], Any]]) -> None:
    """Writes several files that belong together: all to temporary files first, then renames.

    A full disk or any other error while writing leaves every old file unchanged; only a
    kill between the renames (microseconds) can leave some old and some new.

    Args:
      files: {path: write}, renamed in this order; each folder must exist.

    Raises:
      StorageError: the file system refused a write; the old files are unchanged.
    """
    written: list[tuple[str, Path]] = []
    try:
        for path, write in files.items():
            path = Path(path)
            try:
                written.append((_write_temporary(path, write), path))
            except OSError as err:
                raise storage_error("write", path, err) from err
        for tmp, path in written:
            try:
                os.replace(tmp, path)
            except OSError as err:
                raise storage_error("replace", path, err) from err
    finally:
        for tmp, _ in written:
            Path(tmp).unlink(missing_ok=True)
    for _, path in written:
        _remove_stale_temporaries(path)


# A temporary file this much older than its last write is a leftover of a killed writer
# (SIGKILL, a power cut): no write of ours takes that long without touching its file.
STALE_TEMPORARY_S = 3600.0


def _remove_stale_temporaries(path: Path) -> None:
    """Removes the temporary files of `path` that killed writers left (best effort)."""
    now = time.time()
    # mkstemp's names: the prefix, 8 random characters, the suffix. Exactly 8: a longer
    # file's temporary (".scores.csv.json.x.tmp" for "scores.csv") is not this file's.
    mine = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if not mine.fullmatch(tmp.name):
            continue
        try:
            if now - tmp.stat().st_mtime > STALE_TEMPORARY_S:
                tmp.unlink()
        except OSError:  # gone already, or not ours to remove
            pass


def make_folder(path: str | os.PathLike) -> Path:
    """Creates the folder `path` and its parents (an existing folder is fine).

    Raises:
      StorageError: the file system refused (a file in the way, permission, read-only).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error("create folder", path, err) from err
    return path


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
    except Exception as err:
        # A crafted member makes numpy's header parser and zlib raise their own errors
        # (TokenError, OverflowError, MemoryError for a stated shape of terabytes, zlib.error).
        raise ValueError(f"Cannot read {path}: it is corrupt ({type(err).__name__}: {err}).") from None


def numbered_arrays(arrays: Sequence[Any], prefix: str) -> dict[str, np.ndarray]:
    """{"<prefix>0000": arrays[0], ...}: a list stored in an .npz under keys that sort in order."""
    return {f"{prefix}{i:04d}": np.asarray(a) for i, a in enumerate(arrays)}


def numbered_keys(count: int, prefix: str) -> list[str]:
    """The keys `numbered_arrays` gives a list of `count` arrays, in order."""
    return [f"{prefix}{i:04d}" for i in range(count)]
