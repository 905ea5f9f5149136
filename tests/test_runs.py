import csv
import json

import numpy as np
import pytest

from tfpvae.config import VAEConfig
from tfpvae.runs import RunFolderError, RunSettings, read_settings, resumed_settings, train_run, write_history_csv


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    notes = []
    settings = RunSettings(dataset="digits", limit=120, epochs=2, seed=0)
    result = train_run(run, settings, VAEConfig(latent_dim=2), verbose=0, score_limit=40, note=notes.append)
    return run, result, notes


def test_a_run_folder_holds_the_model_settings_history_figures_and_scores(digits_run):
    import tfpvae

    run, result, notes = digits_run
    assert result.epochs_completed == 2 and not result.interrupted and result.chief and notes == []
    for name in ("samples.png", "manifold.png", "latent_scatter.png", "training_curves.png", "checkpoint.npz"):
        assert (run / name).is_file(), name
    loaded = tfpvae.load(run)
    assert loaded.config == VAEConfig(input_shape=(8, 8, 1), latent_dim=2, seed=0)  # shape from the data
    for a, b in zip(loaded.get_weights(), result.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert read_settings(run) == RunSettings(dataset="digits", limit=120, epochs=2, seed=0)
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    np.testing.assert_allclose([float(r["loss"]) for r in rows], loaded.training_history["loss"], rtol=1e-6)
    # evaluation.json summarises scores.csv: recomputed here from the rows.
    with open(run / "scores.csv") as f:
        log_prob = np.array([float(r["log_prob"]) for r in csv.DictReader(f)])
    summary = json.loads((run / "evaluation.json").read_text())
    assert summary["num_images"] == len(log_prob) == 40 and summary["split_images"] == 120
    np.testing.assert_allclose(summary["iwae_nll"], -log_prob.mean(), rtol=1e-6)


def test_resumed_settings_keep_the_run_and_name_what_they_ignore(digits_run):
    run, _, _ = digits_run
    settings, config, ignored = resumed_settings(run, {"latent_dim": 4, "batch_size": 128, "seed": 0, "epochs": 5})
    assert settings == RunSettings(dataset="digits", limit=120, epochs=5, seed=0)
    assert config.latent_dim == 2
    assert ignored == [("latent_dim", 4, 2)]  # batch_size and seed equal what the run has
    assert resumed_settings(run)[0].epochs == 2


def test_read_settings_refuses_folders_that_are_not_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no train_args.json: it is not a run folder"):
        read_settings(tmp_path)
    (tmp_path / "train_args.json").write_text(json.dumps({"dataset": "digits", "epochs": 3}))
    with pytest.raises(ValueError, match="lacks data_dir, limit, batch_size"):
        read_settings(tmp_path)
    (tmp_path / "train_args.json").write_text('{"dataset": "digits", "epo')  # cut short
    with pytest.raises(RunFolderError, match="train_args.json is not valid JSON"):
        read_settings(tmp_path)
    (tmp_path / "train_args.json").write_text("[1, 2]")
    with pytest.raises(RunFolderError, match="holds a list, not the settings object"):
        read_settings(tmp_path)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "`dataset` or `input` is required"),
        ({"dataset": "digits", "input": "x.npy"}, "`input` streams its own files; `dataset`"),
        ({"dataset": "digits", "validation_images": 0, "early_stopping": 2}, "`validation_images` 0 turns"),
        ({"input": "x.npy", "early_stopping": 2}, "needs `validation_input`"),
    ],
)
def test_settings_that_do_not_combine_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RunSettings(**kwargs)


def test_history_csv_has_one_row_per_epoch(tmp_path):
    write_history_csv({"loss": [3.0, 2.5], "kl": [1.0, 1.25]}, tmp_path / "h.csv")
    assert (tmp_path / "h.csv").read_text().splitlines() == ["epoch,loss,kl", "1,3.0,1.0", "2,2.5,1.25"]


def test_a_resume_cut_short_leaves_no_scores_of_the_older_model(digits_run, tmp_path, monkeypatch):
    """The scores of the finished segment described the model of its last epoch; a resume
    that trains on and is interrupted must not leave them beside the newer model."""
    import os
    import shutil
    import signal

    from tfpvae import runs
    from tfpvae._keras import tfk

    run = tmp_path / "run"
    shutil.copytree(digits_run[0], run)
    assert (run / "scores.csv").is_file() and (run / "evaluation.json").is_file()

    class Interrupt(tfk.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):  # the run's one batch per epoch
            os.kill(os.getpid(), signal.SIGINT)

    real = runs._extra_callbacks
    monkeypatch.setattr(runs, "_extra_callbacks", lambda *args: [*real(*args), Interrupt()])
    result = train_run(run, resume=True, epochs=4, verbose=0, score_limit=40, note=lambda text: None)
    assert result.interrupted
    assert not any((run / name).exists() for name in ("scores.csv", "scores.csv.json", "evaluation.json"))
    monkeypatch.setattr(runs, "_extra_callbacks", real)
    result = train_run(run, resume=True, epochs=4, verbose=0, score_limit=40, note=lambda text: None)
    assert result.epochs_completed == 4 and (run / "scores.csv").is_file() and (run / "evaluation.json").is_file()


def test_resuming_a_finished_run_with_evolution_notes_that_nothing_was_trained(digits_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_run[0], run)
    notes = []
    result = train_run(run, resume=True, evolution=True, verbose=0, score_limit=40, note=notes.append)
    assert result.epochs_completed == 2 and not (run / "evolution.gif").exists()
    assert notes == ["no evolution.gif: no epoch was trained in this call"]
