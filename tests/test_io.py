import errno
import hashlib
import os
import time

import numpy as np
import pytest

from tfpvae._io import (
    STALE_TEMPORARY_S,
    StorageError,
    atomic_write,
    atomic_write_files,
    atomic_write_text,
    load_npz_arrays,
    make_folder,
    numbered_arrays,
    numbered_keys,
    sha256,
)


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["f.json"]


def test_a_write_removes_the_temporaries_a_killed_writer_left(tmp_path):
    """Only those of this file, and only when old: a fresh one may be another writer's."""
    path = tmp_path / "f[1].json"
    names = (".f[1].json.ab12cd_3.tmp", ".f[1].json.cd34ef56.tmp", ".g.json.x1y2z3w4.tmp", ".f[1].json.x.ab12cd34.tmp")
    stale, fresh, other, longer = (tmp_path / name for name in names)  # longer: a file "f[1].json.x"'s
    for tmp in (stale, fresh, other, longer):
        tmp.write_text("half")
    long_ago = time.time() - 2 * STALE_TEMPORARY_S
    for tmp in (stale, other, longer):
        os.utime(tmp, (long_ago, long_ago))
    atomic_write_text(path, "new")
    assert sorted(os.listdir(tmp_path)) == sorted([path.name, fresh.name, other.name, longer.name])


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_sha256_equals_hashlib(tmp_path):
    data = os.urandom(3 << 20)  # more than one 1 MiB block
    (tmp_path / "d").write_bytes(data)
    assert sha256(tmp_path / "d") == hashlib.sha256(data).hexdigest()


def test_numbered_arrays_round_trip_through_npz_in_order(tmp_path):
    arrays = [np.arange(i + 1, dtype=np.float32) for i in range(12)]
    stored = numbered_arrays(arrays, "w")
    assert list(stored) == numbered_keys(12, "w") and numbered_keys(2, "o") == ["o0000", "o0001"]
    with open(tmp_path / "a.npz", "wb") as f:
        np.savez(f, **stored)
    back = load_npz_arrays(tmp_path / "a.npz")
    for key, a in zip(numbered_keys(12, "w"), arrays):
        np.testing.assert_array_equal(back[key], a)


def test_load_npz_refuses_pickles_and_truncated_files(tmp_path):
    with open(tmp_path / "p.npz", "wb") as f:
        np.savez(f, obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled objects"):
        load_npz_arrays(tmp_path / "p.npz")
    (tmp_path / "t.npz").write_bytes((tmp_path / "p.npz").read_bytes()[:20])
    with pytest.raises(ValueError, match="truncated or not an .npz"):
        load_npz_arrays(tmp_path / "t.npz")


@pytest.mark.parametrize(
    "code, reason",
    [
        (errno.ENOSPC, "No space left on device"),
        (errno.EACCES, "Permission denied"),
        (errno.EROFS, "Read-only file system"),
        (errno.EDQUOT, "Disk quota exceeded"),
    ],
)
def test_a_refused_write_names_the_operation_and_path_and_keeps_the_old_file(tmp_path, monkeypatch, code, reason):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"old")

    def refuse(fd):  # the data is flushed to the disk here: where a full disk shows
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", refuse)
    with pytest.raises(StorageError) as info:
        atomic_write_text(path, "new")
    assert str(info.value) == f"cannot write {path}: {reason}"
    assert info.value.errno == code and info.value.filename == str(path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["weights.npz"]
    assert str(info.value.keeping("the old model is unchanged")).endswith(f"{reason}; the old model is unchanged")


def test_files_that_belong_together_are_all_replaced_or_none(tmp_path, monkeypatch):
    for name in "abc":
        (tmp_path / name).write_text("old")

    def write_c(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    files = {
        tmp_path / "a": lambda f: f.write(b"new"),
        tmp_path / "b": lambda f: f.write(b"new"),
        tmp_path / "c": write_c,
    }
    with pytest.raises(StorageError, match=r"cannot write .*c: No space left on device"):
        atomic_write_files(files)
    assert [(tmp_path / n).read_text() for n in "abc"] == ["old"] * 3
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "c"]  # no temporary left
    atomic_write_files({tmp_path / "a": lambda f: f.write(b"A"), tmp_path / "b": lambda f: f.write(b"B")})
    assert [(tmp_path / n).read_text() for n in "abc"] == ["A", "B", "old"]


def test_a_missing_folder_and_a_file_in_the_way(tmp_path):
    with pytest.raises(StorageError, match=r"^cannot write .*missing/f: No such file or directory$"):
        atomic_write_text(tmp_path / "missing" / "f", "x")
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match=r"^cannot create folder .*file/run: (Not a directory|File exists)$"):
        make_folder(tmp_path / "file" / "run")
    assert make_folder(tmp_path / "a" / "b").is_dir()
