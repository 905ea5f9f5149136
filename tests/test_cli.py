import json
import subprocess
import sys

import numpy as np
import pytest

from tfpvae.cli import main


def test_train_sample_info_round_trip_on_digits(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--epochs",
                "2",
                "--limit",
                "300",
                "--latent-dim",
                "2",
                "--seed",
                "0",
                "--no-progress",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    for name in (
        "config.json",
        "weights.npz",
        "metadata.json",
        "history.csv",
        "samples.png",
        "reconstructions.png",
        "training_curves.png",
    ):
        assert (run / name).is_file(), name
    assert (run / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (run / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,loss,nll,kl,elbo") and len(lines) == 3

    assert main(["sample", "--model", str(run), "-n", "6", "--seed", "1", "--out", str(tmp_path / "s.npy")]) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (6, 8, 8, 1) and 0 <= samples.min() and samples.max() <= 1
    capsys.readouterr()
    assert main(["info", "--model", str(run)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["latent_dim"] == 2 and info["epochs_trained"] == 2 and info["num_parameters"] > 1000


@pytest.mark.parametrize(
    "argv,match",
    [
        (["sample", "--model", "/nonexistent/run", "--out", "x.png"], "does not exist"),
        (["train", "--dataset", "binarized_mnist", "--data-dir", "/nonexistent", "--out", "r"], "not found"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(argv, match, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TFPVAE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfpvae: error:") and match in err[0]


def test_argparse_errors_exit_2():
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "cifar", "--out", "r"])
    assert e.value.code == 2


def test_console_entry_point_and_module_help():
    out = subprocess.run([sys.executable, "-m", "tfpvae", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "train" in out.stdout and "sample" in out.stdout
