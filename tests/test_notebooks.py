"""Runs the example notebooks in QUICK mode and checks the claims they make.

Each notebook reads `TFPVAE_NOTEBOOK_QUICK=1` in its first code cell and then trains on a few
thousand images for one to four epochs. Its last cell asserts its key claim and prints
`CHECKS {json}`, which these tests read back and check again.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

# Each notebook runs for about a minute in a kernel of its own: the slow tier, with the whole module.
pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TIMEOUT_S = 300  # per cell; a whole QUICK notebook takes about a minute on 2 CPU cores
IOPUB_TIMEOUT_S = 60  # for a cell's outputs after its reply


def _outputs(nb, output_type: str | None = None):
    for cell in nb.cells:
        if cell.cell_type == "code":
            for output in cell.outputs:
                if output_type is None or output.output_type == output_type:
                    yield output


def run_notebook(name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, nbformat.NotebookNode]:
    """Executes notebooks/NAME in QUICK mode with notebooks/ as the working folder; returns (checks, notebook)."""
    monkeypatch.setenv("TFPVAE_NOTEBOOK_QUICK", "1")  # the kernel inherits this process's environment
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
        # The kernel flushes stdout on a timer, so one print can arrive as several stream messages
        # ("CHECKS" and " {...}"): merge them per cell before reading lines.
        coalesce_streams=True,
        # On a loaded machine a cell's last output can come after its reply; by default nbclient waits
        # 4 s for it and then drops it with only a log line.
        iopub_timeout=IOPUB_TIMEOUT_S,
        raise_on_iopub_timeout=True,
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [f"{o.ename}: {o.evalue}" for o in _outputs(nb, "error")]
    assert not errors, errors
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert 'QUICK = os.environ.get("TFPVAE_NOTEBOOK_QUICK") == "1"' in first_code.source
    assert any("QUICK=True" in o.text for o in _outputs(nb, "stream")), "the notebook did not run in QUICK mode"
    lines = [line for o in _outputs(nb, "stream") if o.name == "stdout" for line in o.text.splitlines()]
    checks = [json.loads(line.removeprefix("CHECKS ")) for line in lines if line.startswith("CHECKS ")]
    assert len(checks) == 1, "the notebook's last cell prints one CHECKS line"
    return checks[0], nb


def count_images(nb, mime: str = "image/png") -> int:
    return sum(mime in o.get("data", {}) for o in _outputs(nb))


def test_notebooks_are_saved_with_outputs():
    """The committed notebooks carry their full-mode outputs, so the figures show on a code host."""
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01_quickstart.ipynb", "02_anomaly_scoring.ipynb", "03_latent_space.ipynb",
                     "04_autoencoder_vs_vae.ipynb", "05_own_network_and_prior.ipynb"]  # fmt: skip
    for name in names:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        assert count_images(nb) >= 5, f"{name} was saved without its figures"
        assert not list(_outputs(nb, "error")), f"{name} was saved with an error"
        assert any("QUICK=False" in o.text for o in _outputs(nb, "stream")), f"{name} was saved from a QUICK run"


def test_quickstart(monkeypatch):
    checks, nb = run_notebook("01_quickstart.ipynb", monkeypatch)
    assert checks["reload_max_abs_diff"] <= 1e-6  # the reloaded model gives the same log p(x)
    assert checks["reload_same_samples"]
    assert checks["mean_log_prob"] >= checks["mean_elbo"]  # IWAE is tighter than the ELBO
    assert count_images(nb) >= 7


def test_anomaly_scoring(monkeypatch):
    checks, nb = run_notebook("02_anomaly_scoring.ipynb", monkeypatch)
    auroc, reverse = checks["auroc"], checks["auroc_reversed"]
    # digits are likelier under the Fashion model than clothes are
    assert checks["mean_log_prob_mnist"] > checks["mean_log_prob_fashion"]
    assert auroc["log_prob"] < 0.5 and auroc["elbo"] < 0.5  # raw likelihood ranks the sets the wrong way round
    assert auroc["complexity"] > auroc["log_prob"] + 0.25  # the complexity score puts it right
    assert reverse["complexity"] > 0.8 and reverse["L(x) alone"] < 0.5  # complexity works both ways, L(x) not
    assert checks["fpr_at_alpha_0.05"]["complexity"] <= 0.15  # calibrated p-values hold the false-positive rate
    assert count_images(nb) >= 10


def test_latent_space(monkeypatch):
    checks, nb = run_notebook("03_latent_space.ipynb", monkeypatch)
    assert checks["gif_frames"] == checks["snapshots"] >= 3
    assert checks["knn_2d"] > 0.3 and checks["knn_16d"] >= checks["knn_2d"]  # codes cluster by digit (chance 0.1)
    assert count_images(nb, "image/gif") == 1  # the training animation is embedded
    assert count_images(nb) >= 10


def test_autoencoder_vs_vae(monkeypatch):
    checks, nb = run_notebook("04_autoencoder_vs_vae.ipynb", monkeypatch)
    std, nll, elbo = checks["code_std"], checks["recon_nll"], checks["elbo"]
    for d in (2, 16):
        assert std[f"AE, d={d}"] > 2 * std[f"VAE, d={d}"]  # without the KL term the codes spread out
        assert std[f"VAE β=1e-3, d={d}"] > 2 * std[f"VAE, d={d}"]  # and with a tiny KL weight too
        assert nll[f"AE, d={d}"] < nll[f"VAE, d={d}"]  # the autoencoder reconstructs better
        assert elbo[f"VAE, d={d}"] > elbo[f"VAE β=1e-3, d={d}"]  # but the VAE is the better generative model
    assert count_images(nb) >= 7


def test_own_network_and_prior(monkeypatch):
    checks, nb = run_notebook("05_own_network_and_prior.ipynb", monkeypatch)
    # only names and JSON settings are saved, and the reloaded model rebuilds through the registry
    assert checks["config"] == {
        "architecture": "tiny_resnet",
        "prior": "small_flow",
        "options": {"blocks": 1, "flow_layers": 2, "flow_units": 64, "width": 16},
    }
    assert checks["weight_dtypes"] == ["float32"]
    assert checks["reload_max_abs_diff"] <= 1e-6 and checks["reload_same_samples"]
    assert checks["unregistered_error_names_the_fix"]  # the one-line error names the decorator and --import
    assert not checks["prior_exact_kl"]  # the flow prior gets the Monte Carlo KL
    assert math.isfinite(checks["nll_iwae"]) and checks["nll_iwae"] <= checks["neg_elbo"]  # IWAE is tighter
    assert checks["sample_shape"] == [16, 32, 32, 3]
    assert checks["auroc"]["colour Fashion"] > 0.6  # the unchanged detector flags the shifted set
    assert count_images(nb) >= 9
