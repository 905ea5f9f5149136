"""Claiming an output: refusal of what exists, the folder lock between processes and threads."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from tfpvae.write_guard import (
    OWNER_FILE,
    FolderInUseError,
    OutputExistsError,
    check_new_file,
    claim_folder,
    folder_lock,
)

MARKERS = ("weights.npz", "checkpoint.npz")


def test_an_empty_or_unrelated_folder_is_claimed(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with claim_folder(tmp_path / "new", MARKERS, what="a run", argument="run_dir") as found:
        assert found == [] and (tmp_path / "new").is_dir()
    with claim_folder(tmp_path, MARKERS, what="a run", argument="run_dir") as found:
        assert found == []
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_folder_that_holds_a_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"old")
    with pytest.raises(OutputExistsError) as info:
        with claim_folder(tmp_path, MARKERS, what="a run", argument="run_dir", resume=False):
            pytest.fail("claimed a folder that holds a run")
    message = str(info.value)
    assert (
        message == f"`run_dir` {tmp_path} already holds a run (checkpoint.npz): pass `resume` to continue it or "
        "`overwrite` to replace it."
    )
    assert info.value.path == tmp_path and info.value.resumable
    for flags in ({"resume": True}, {"overwrite": True}):
        with claim_folder(tmp_path, MARKERS, what="a run", argument="run_dir", **flags) as found:
            assert found == ["checkpoint.npz"]
    assert (tmp_path / "checkpoint.npz").read_bytes() == b"old"  # the claim itself removes nothing


def test_a_writer_that_cannot_resume_offers_only_overwrite(tmp_path):
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(OutputExistsError, match=r"\(weights.npz\): pass `overwrite` to replace it\.$"):
        with claim_folder(tmp_path, MARKERS, what="a model", argument="path"):
            pass


def test_a_nested_claim_of_the_same_folder_by_the_same_thread_passes(tmp_path):
    with claim_folder(tmp_path, MARKERS, what="a run", argument="run_dir"):
        (tmp_path / "weights.npz").write_bytes(b"new")  # the outer writer's own files
        with claim_folder(tmp_path, MARKERS, what="a run", argument="run_dir") as found:
            assert found == []  # the outer claim decided
    with pytest.raises(OutputExistsError):  # released: a new claim checks again
        with claim_folder(tmp_path, MARKERS, what="a run", argument="run_dir"):
            pass


def test_another_thread_is_refused_while_the_folder_is_held(tmp_path):
    errors = []

    def other():
        try:
            with folder_lock(tmp_path):
                pass
        except FolderInUseError as err:
            errors.append(str(err))

    with folder_lock(tmp_path):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert errors == [f"{tmp_path.resolve()} is in use by another thread of this process; wait for it to finish."]
    with folder_lock(tmp_path):  # released
        pass


def test_another_process_is_refused_with_the_holders_pid_and_a_killed_holder_blocks_nothing(tmp_path, hold_folder):
    holder = hold_folder(tmp_path)
    try:
        with pytest.raises(FolderInUseError) as info:
            with folder_lock(tmp_path):
                pytest.fail("took a folder another process holds")
        assert f"in use by process {holder.pid} on " in str(info.value)
        assert "wait for it to finish or choose another folder" in str(info.value)
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # no clean-up: the lock file and its owner record stay
        holder.wait()
    assert (tmp_path / OWNER_FILE).exists()
    start = time.monotonic()
    with folder_lock(tmp_path) as first:  # the system released the dead process's lock
        assert first
        assert f'"pid": {os.getpid()}' in (tmp_path / OWNER_FILE).read_text()
    assert time.monotonic() - start < 5
    assert not (tmp_path / OWNER_FILE).exists()


def test_check_new_file(tmp_path):
    path = tmp_path / "scores.csv"
    assert check_new_file(path, "out") == path
    path.write_text("hours of scores")
    with pytest.raises(OutputExistsError, match=r"^`out` .*scores.csv already exists: pass `overwrite` to replace it"):
        check_new_file(path, "out")
    assert check_new_file(path, "out", overwrite=True) == path
    assert path.read_text() == "hours of scores"


def test_the_holders_command_is_kept_whole_up_to_its_limit(monkeypatch):
    from tfpvae import write_guard

    long_path = "/tmp/" + "d" * 300 + "/run"  # longer than a pytest-xdist worker's tmp paths, shorter than the limit
    monkeypatch.setattr(sys, "argv", ["/usr/bin/tfpvae", "train", "--out", long_path])
    assert write_guard._command() == f"tfpvae train --out {long_path}"
    monkeypatch.setattr(sys, "argv", ["/usr/bin/tfpvae", "train", "--out", "x" * 2000])
    cut = write_guard._command()
    assert len(cut) == write_guard.COMMAND_LIMIT and cut.startswith("tfpvae train --out xxx") and cut.endswith("...")
