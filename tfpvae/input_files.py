"""Lists the files an input names (a file, folder, glob or list of those) and opens them.

Which reader a file gets is decided by its suffix alone (`file_kind`). Paths go through
`tf.io.gfile`, so gs:// and hdfs:// work wherever TensorFlow has the file system; local
files are opened by Python itself, which is faster per small file.

Examples:
  >>> list_files(["shards/*.tfrecord", "extra/"])
  ['extra/a.png', 'shards/part-0.tfrecord', 'shards/part-1.tfrecord']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, BinaryIO

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""Suffixes of image files, one PNG or JPEG image each (compared case-insensitively)."""
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfr")
"""Suffixes of TFRecord files of `tf.train.Example`."""
ARRAY_SUFFIXES = (".npy", ".npz")
"""Suffixes of NumPy array files."""
SUFFIXES = IMAGE_SUFFIXES + TFRECORD_SUFFIXES + ARRAY_SUFFIXES
"""Every suffix an input file may have."""

__all__ = [
    "ARRAY_SUFFIXES",
    "GLOB_CHARS",
    "IMAGE_SUFFIXES",
    "SUFFIXES",
    "TFRECORD_SUFFIXES",
    "check_suffix",
    "entry_kind",
    "file_kind",
    "is_remote",
    "is_single_array",
    "list_files",
    "open_binary",
    "spelling",
]

GLOB_CHARS = frozenset("*?[")
"""Characters that make an input entry that is not an existing file or folder a glob."""


def is_remote(path: str) -> bool:
    """Whether `path` names a file system Python cannot open (gs://, hdfs://, s3://, ram://)."""
    return "://" in path


def spelling(path: str) -> str:
    """How `list_files` spells a path: a local one without "." parts and doubled "/", a remote one as it is.

    "./png/a.png", "png//a.png" and "png/./a.png" are all "png/a.png", so one file named
    these ways is read once and gets one id. ".." is kept (behind a symbolic link it is not
    the folder before it), and so are other spellings of one file ("a.png" and its
    absolute path).
    """
    if is_remote(path):
        return path
    parts = [part for part in path.split("/") if part not in ("", ".")]
    return ("/" if path.startswith("/") else "") + "/".join(parts) or "."


def open_binary(path: str) -> BinaryIO:
    """Opens a file for reading bytes: with Python's `open` if local, else with `tf.io.gfile.GFile`.

    Args:
      path: a local path or a URL of a file system TensorFlow has.

    Returns:
      a binary file object (a context manager).
    """
    # Python's own file object is several times faster than GFile per small file; GFile is
    # needed only for file systems Python does not have (gs://, hdfs://, s3://).
    if is_remote(path):
        from tfpvae._keras import tf

        return tf.io.gfile.GFile(path, "rb")
    return open(path, "rb")


def file_kind(path: str) -> str | None:
    """The reader a file's suffix picks: "image", "tfrecord", "array", or None if unsupported."""
    lower = path.lower()
    for kind, suffixes in (("image", IMAGE_SUFFIXES), ("tfrecord", TFRECORD_SUFFIXES), ("array", ARRAY_SUFFIXES)):
        if lower.endswith(suffixes):
            return kind
    return None


def check_suffix(path: str, how: str) -> str:
    """`path`, if its suffix is one of `SUFFIXES`.

    Args:
      path: the file path.
      how: the start of the error message, saying where the path came from (e.g.
        "`files` holds"); the path follows it.

    Returns:
      `path`, unchanged.

    Raises:
      ValueError: the suffix is not supported; the message names `path`.
    """
    if file_kind(path) is None:
        raise ValueError(
            f"{how} {path!r}, which does not end in one of {', '.join(SUFFIXES)}; expected an image, "
            f"TFRecord or array file."
        )
    return path


def is_single_array(files: Sequence[str]) -> bool:
    """Whether an input of these files is exactly one array file, whose rows get bare row numbers as ids."""
    return len(files) == 1 and file_kind(files[0]) == "array"


def entry_kind(entry: str) -> str | None:
    """What one entry of an input is, decided as `list_files` decides it.

    Args:
      entry: one path or pattern of an input, as the user wrote it.

    Returns:
      "folder" or "file" for an existing one (checked first: a real file may have "[" in
      its name), else "glob" if it holds one of `GLOB_CHARS`, else None (it names nothing).
    """
    from tfpvae._keras import tf

    if tf.io.gfile.isdir(entry):
        return "folder"
    if tf.io.gfile.exists(entry):
        return "file"
    return "glob" if GLOB_CHARS & set(entry) else None


def _source_items(source: Any) -> list[str]:
    if isinstance(source, (str, os.PathLike)):
        items = [source]
    elif isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        items = list(source)
        if not items:
            raise ValueError("`source` is an empty list; expected at least one file, folder or glob.")
    else:
        raise TypeError(
            f"`source` must be a path, a glob or a list of those; got {source!r} ({type(source).__name__})."
        )
    out = []
    for item in items:
        text = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
        if not isinstance(text, str) or not text:
            raise TypeError(f"`source` entries must be non-empty str or os.PathLike paths; got {item!r}.")
        out.append(text)
    return out


def list_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The files of an input, sorted and de-duplicated.

    Args:
      source: a file; a folder (its files ending in one of `IMAGE_SUFFIXES`,
        `TFRECORD_SUFFIXES`, `ARRAY_SUFFIXES`, not recursive, other files ignored); a glob
        such as "data/*.tfrecord" (quote it on the command line so the shell leaves it to
        us); or a list of any of those. Paths go through `tf.io.gfile`, so gs:// and
        hdfs:// paths work where TensorFlow has the file system.

    Returns:
      list of file paths, sorted, each once, spelt by `spelling` (a local path normalised:
      "./a.png" is "a.png"). Folders are never listed, whatever their names end in.

    Raises:
      FileNotFoundError: a path does not exist, a glob matches nothing or a folder holds no
        supported file; the message names that entry.
      ValueError: a named file, or a file a glob matched, has an unsupported suffix; or
        `source` is an empty list.
      TypeError: `source` is not a path, glob or list of those.
    """
    from tfpvae._keras import tf

    gfile = tf.io.gfile
    found: set[str] = set()
    for item in _source_items(source):
        kind = entry_kind(item)
        if kind == "folder":
            names = [name for name in _folder_files(item) if file_kind(name) is not None]
            if not names:
                raise FileNotFoundError(
                    f"`source` folder {item!r} holds no file ending in one of {', '.join(SUFFIXES)}."
                )
            found.update(spelling(gfile.join(item, name)) for name in names)
        elif kind == "file":
            found.add(spelling(check_suffix(item, "`source` names")))
        elif kind == "glob":
            matches = [m for m in gfile.glob(item) if not _is_folder(m)]
            if not matches:
                raise FileNotFoundError(f"`source` pattern {item!r} matches no file.")
            found.update(spelling(check_suffix(m, f"`source` pattern {item!r} matched")) for m in matches)
        else:
            raise FileNotFoundError(f"`source` {item!r} does not exist; expected a file, a folder or a glob.")
    return sorted(found)


# Object stores, whose listings mark a "folder" by a trailing "/" and whose globs return
# objects only: no call per file is needed to tell files from folders there.
_OBJECT_STORES = ("gs://", "s3://")


def _folder_files(folder: str) -> list[str]:
    """Names of the files (not folders) in `folder`."""
    if is_remote(folder):
        from tfpvae._keras import tf

        names = [name for name in tf.io.gfile.listdir(folder) if not name.endswith("/")]
        if folder.startswith(_OBJECT_STORES):
            return names
        return [name for name in names if not tf.io.gfile.isdir(tf.io.gfile.join(folder, name))]
    with os.scandir(folder) as entries:
        return [entry.name for entry in entries if not entry.is_dir()]


def _is_folder(path: str) -> bool:
    """Whether a path a glob matched is a folder (never for an object store's match)."""
    if path.startswith(_OBJECT_STORES):
        return False
    if is_remote(path):
        from tfpvae._keras import tf

        return tf.io.gfile.isdir(path)
    return os.path.isdir(path)
