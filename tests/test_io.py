import hashlib
import os

import numpy as np
import pytest

from tfpvae._io import atomic_write, atomic_write_text, load_npz_arrays, numbered_arrays, numbered_keys, sha256


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["f.json"]


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
