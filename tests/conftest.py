"""Shared fixtures: the real datasets in ../shared/data and small models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("TFPVAE_DATA_DIR", str(DEFAULT_DATA))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["TFPVAE_DATA_DIR"])
    if not (path / "mnist").is_dir():
        pytest.fail(f"Test data not found at {path}: set TFPVAE_DATA_DIR to the shared data folder.")
    return path


@pytest.fixture(scope="session")
def digits():
    from tfpvae.datasets import load

    return load("digits")


@pytest.fixture(scope="session")
def mnist_small(data_dir):
    from tfpvae.datasets import load

    (x, y), (xt, yt) = load("mnist", data_dir)
    return (x[:2000], y[:2000]), (xt[:500], yt[:500])


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# A process that takes a folder's write lock, says so, and holds it until killed.
_HOLDER = """
import sys, time
from tfpvae.write_guard import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def hold_folder():
    """`hold_folder(folder)` starts a process that holds `folder`'s write lock; returns the `Popen`.

    Kill it with SIGKILL to leave its lock file and owner record behind; the fixture kills
    those still running at the end of the test.
    """
    holders = []

    def start(folder) -> subprocess.Popen:
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
        holders.append(holder)
        assert holder.stdout.readline().strip() == "held"
        return holder

    yield start
    for holder in holders:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        holder.stdout.close()


@pytest.fixture(scope="session")
def trained_digits(digits):
    """One small VAE trained once on digits for the whole test run; tests must not change it.

    8x8 images, a 2-D latent space (so latent figures and grids are exact planes), grey
    targets (binarize="none") so every score is deterministic given its seed.
    """
    from tfpvae import VAE

    (x, _), _ = digits
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, binarize="none", learning_rate=3e-3, seed=0)
    model.fit(x, epochs=20, batch_size=64, verbose=0, shuffle=False)
    return model


@pytest.fixture(scope="session")
def trained_digits_dir(trained_digits, tmp_path_factory) -> Path:
    """`trained_digits` saved as a model folder (read-only by convention)."""
    from tfpvae import save

    return save(trained_digits, tmp_path_factory.mktemp("trained_digits") / "model")


# Hypothesis profiles (tests/test_fuzz.py): "ci", the default, keeps the fuzz tests under a minute on
# two cores and is derandomized so that a run is repeatable; "fuzz" tries random cases for long runs
# (tools/fuzz.py). Choose one with HYPOTHESIS_PROFILE=fuzz or `pytest --hypothesis-profile fuzz`.
# No example database, and hypothesis' caches in the temporary folder: nothing is left in the repository.
def _register_hypothesis_profiles() -> None:
    import tempfile
    from datetime import timedelta

    from hypothesis import HealthCheck, settings
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "tfpvae-hypothesis")

    common = dict(
        database=None,
        deadline=timedelta(seconds=20),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )
    settings.register_profile("ci", max_examples=300, derandomize=True, **common)
    # max_examples is the size of one run; a timed fuzz run repeats runs with fresh seeds.
    settings.register_profile("fuzz", max_examples=500, **common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


_register_hypothesis_profiles()
