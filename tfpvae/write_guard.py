"""Where a command writes: never replace a model, run or result by accident, and one writer per folder.

`claim_folder` is the door every writer of a folder goes through (`tfpvae.train`,
`tfpvae.runs.train_run`, `tfpvae.export`). It locks the folder, so that a second process
writing to it fails at once with `FolderInUseError` naming the holder's process id, and it
refuses a folder that already holds what it would write (`OutputExistsError`) unless the
caller resumes or overwrites. The lock is an operating-system lock (`filelock`): the
system releases it when its process ends, so a run killed with SIGKILL never blocks the
next one. `check_new_file` is the same refusal for a single output file.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from filelock import FileLock, Timeout

from tfpvae._io import make_folder, storage_error

LOCK_FILE = ".tfpvae.lock"
# Who holds the lock, for the error another process gets. A file of its own: the lock file
# is opened (and may be truncated) by every process that tries to take the lock.
OWNER_FILE = ".tfpvae.owner.json"

# Folders this process holds, with the thread holding each: a writer called by another
# writer of the same folder (train_run calls train) does not lock or check it again.
_held: dict[Path, int] = {}
_held_lock = threading.Lock()


class OutputExistsError(ValueError):
    """The output already holds a model, run or result, and replacing it was not asked for.

    Args:
      argument: the argument that named the output, for the message ("run_dir", "--output").
      path: the folder or file.
      holds: what the folder holds; None for a file that exists.
      resumable: the writer could continue what is there (the message offers `resume`).
      flags: the words for resume and overwrite in the caller's terms. Default
        ("`resume`", "`overwrite`").

    Attributes:
      path: the folder or file.
      holds: what the folder holds, e.g. "a SavedModel (saved_model.pb)"; None for a file.
      resumable: whether the writer could continue it instead (`resume`).
    """

    def __init__(
        self,
        argument: str,
        path: Path | str,
        holds: str | None = None,
        resumable: bool = False,
        flags: tuple[str, str] = ("`resume`", "`overwrite`"),
    ) -> None:
        self.path, self.holds, self.resumable = path, holds, resumable
        super().__init__(f"`{argument}` {self.problem}: {self.remedy(*flags)}.")

    @property
    def problem(self) -> str:
        """What is in the way, e.g. "runs/x already holds a trained model or run (weights.npz)"."""
        return f"{self.path} already exists" if self.holds is None else f"{self.path} already holds {self.holds}"

    def remedy(self, resume: str, overwrite: str) -> str:
        """What would allow the write, in the words of the caller's arguments."""
        if self.resumable:
            return f"pass {resume} to continue it or {overwrite} to replace it"
        return f"pass {overwrite} to replace it"


class FolderInUseError(RuntimeError):
    """Another process (or thread) is writing to the folder."""


def existing(folder: str | os.PathLike, names: Sequence[str]) -> list[str]:
    """The `names` that exist in `folder`, in order."""
    folder = Path(folder)
    return [name for name in names if (folder / name).exists()]


def _owner() -> str:
    """This process, as the holder's record says it: pid, host, command, start time."""
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": _command(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    )


# The longest command line a holder's record keeps: room for every flag and long paths, yet a bounded message.
COMMAND_LIMIT = 1000


def _command() -> str:
    """This process's command line as typed: `python -m tfpvae train ...` shows as `tfpvae train ...`; one longer
    than COMMAND_LIMIT characters is cut there and ends with `...`."""
    if not sys.argv:
        return ""
    program = Path(sys.argv[0])
    name = program.parent.name if program.name == "__main__.py" else program.name
    command = " ".join([name, *sys.argv[1:]])
    return command if len(command) <= COMMAND_LIMIT else command[: COMMAND_LIMIT - 3] + "..."


def _holder(folder: Path) -> str:
    """The process holding `folder`'s lock, as far as its record says."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        return f"process {owner['pid']} on {owner['host']} ({owner['command']}, since {owner['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not yet written its process id)"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[bool]:
    """Holds the folder's lock; yields False when this thread held it already (nested writers).

    Raises:
      FolderInUseError: another process or thread holds it; names the holder's process id.
      StorageError: the folder cannot be created or the lock file written.
    """
    folder = make_folder(folder).resolve()
    me = threading.get_ident()
    with _held_lock:
        holder = _held.get(folder)
        if holder is None:
            _held[folder] = me
    if holder == me:
        yield False
        return
    if holder is not None:
        raise FolderInUseError(f"{folder} is in use by another thread of this process; wait for it to finish.")
    lock = FileLock(folder / LOCK_FILE, timeout=0)
    try:
        try:
            lock.acquire()
        except Timeout:
            raise FolderInUseError(
                f"{folder} is in use by {_holder(folder)}: wait for it to finish or choose another folder."
            ) from None
        except OSError as err:  # a read-only or full file system, a folder without write permission
            raise storage_error("lock", folder / LOCK_FILE, err) from err
        try:
            try:  # best effort: the lock holds without it, and a full disk should fail at the real write
                (folder / OWNER_FILE).write_text(_owner())
            except OSError:
                pass
            yield True
        finally:
            with contextlib.suppress(OSError):  # a file system gone read-only must not hide the real error
                (folder / OWNER_FILE).unlink(missing_ok=True)
            lock.release()
    finally:
        with _held_lock:
            _held.pop(folder, None)


@contextlib.contextmanager
def claim_folder(
    folder: str | os.PathLike,
    markers: Sequence[str],
    *,
    what: str,
    argument: str,
    overwrite: bool = False,
    resume: bool | None = None,
) -> Iterator[list[str]]:
    """Locks `folder` for writing and refuses it if it holds any of `markers`, unless asked.

    Args:
      folder: the folder to write (created if needed).
      markers: file names that mean the folder holds `what` (e.g. "weights.npz").
      what: what they are, for the message ("a trained model or run").
      argument: the argument that named the folder, for the message ("run_dir").
      overwrite: replace what is there (the caller removes or replaces it).
      resume: continue what is there; None for writers that cannot continue anything
        (the message then offers only `overwrite`).

    Yields:
      The markers found (empty when the folder held none; also when an enclosing claim of
      the same folder by this thread already decided).

    Raises:
      OutputExistsError: the folder holds `what` and neither `overwrite` nor `resume` was given.
      FolderInUseError: another process or thread writes to the folder.
    """
    with folder_lock(folder) as first:
        found = existing(folder, markers) if first else []
        if found and not (overwrite or resume):
            raise OutputExistsError(
                argument, Path(folder), f"{what} ({', '.join(found)})", resumable=resume is not None
            )
        yield found


def check_new_file(path: str | os.PathLike, argument: str, overwrite: bool = False) -> Path:
    """Returns `path` as a `Path`, refusing an existing file unless `overwrite`.

    Raises:
      OutputExistsError: the file exists and `overwrite` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(argument, path)
    return path


def remove_files(folder: str | os.PathLike, names: Sequence[str]) -> None:
    """Removes the files `names` from `folder` (those that exist): what an overwrite replaces."""
    for name in names:
        (Path(folder) / name).unlink(missing_ok=True)
