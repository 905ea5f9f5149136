"""Checkpoints, resume after SIGKILL, NaN recovery, SIGINT and seeded reproducibility."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tfpvae
from tfpvae._keras import tfk
from tfpvae.serialization import MODEL_FILES
from tfpvae.training import (
    CHECKPOINT_FILE,
    TrainingDivergedError,
    read_checkpoint_meta,
    restore_checkpoint,
    train,
)


@pytest.fixture(scope="module")
def x(digits):
    return digits[0][0][:256]


def _model(seed=0):
    return tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, seed=seed)


def test_resume_continues_epochs_and_history(x, tmp_path):
    m = _model()
    train(m, x, epochs=2, batch_size=32, run_dir=tmp_path, seed=0, verbose=0)
    first = read_checkpoint_meta(tmp_path)
    assert first["epoch"] == 2 and len(first["history"]["loss"]) == 2
    resumed = _model()
    result = train(resumed, x, epochs=4, batch_size=32, run_dir=tmp_path, resume=True, seed=0, verbose=0)
    assert result.epochs_completed == 4
    assert resumed.training_history["loss"][:2] == first["history"]["loss"]
    assert len(resumed.training_history["val_loss" if "val_loss" in resumed.training_history else "loss"]) == 4
    # The optimizer continued rather than restarting: Adam's step counter kept counting.
    assert int(resumed.optimizer.iterations.numpy()) == 4 * 8
    assert tfpvae.load(tmp_path).training_history == resumed.training_history


def test_resume_restores_the_optimizer_moments(x, tmp_path):
    # A compiled, unbuilt Adam already holds its iteration count; the restore must still
    # build it and load the first and second moments, or the resumed run takes oversized
    # steps (seen as a 4-nat jump in the loss of a long MNIST run).
    trained = _model()
    train(trained, x, epochs=2, batch_size=64, run_dir=tmp_path, verbose=0)
    resumed = _model()
    resumed.compile()
    assert restore_checkpoint(resumed, tmp_path) == 2
    saved, restored = trained.optimizer.variables, resumed.optimizer.variables
    assert len(restored) == len(saved) == 1 + 2 * len(trained.trainable_variables)  # iteration, m and v
    assert sum(float(np.abs(v.numpy()).sum()) for v in saved[1:]) > 0
    for a, b in zip(saved, restored):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    other = _model()
    other.compile(tfk.optimizers.SGD(0.01))  # no slots: the checkpoint's moments have no home
    with pytest.raises(ValueError, match="optimizer state .* does not match"):
        restore_checkpoint(other, tmp_path)


def test_same_seed_same_weights_and_samples(x):
    runs = []
    for _ in range(2):
        m = _model(seed=5)
        train(m, x, epochs=1, batch_size=32, seed=5, verbose=0)
        runs.append(m)
    for a, b in zip(runs[0].get_weights(), runs[1].get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(runs[0].sample(4, seed=1), runs[1].sample(4, seed=1))


class _PoisonAt(tfk.callbacks.Callback):
    """Sets a decoder kernel to NaN before a chosen batch: a divergence on demand."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.target, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.target:
            w = self.model.decoder.trainable_weights[0]
            w.assign(np.full(w.shape, np.nan, np.float32))


def test_nan_loss_restores_and_saves_last_good_weights(x, tmp_path):
    m = _model()
    train(m, x, epochs=1, batch_size=32, run_dir=tmp_path, verbose=0)
    good = [w.copy() for w in m.get_weights()]
    with pytest.raises(TrainingDivergedError, match="epoch 2, batch 3") as err:
        train(m, x, epochs=3, batch_size=32, run_dir=tmp_path, resume=True, verbose=0, callbacks=[_PoisonAt(1, 2)])
    assert "Restored the weights of epoch 1" in str(err.value)
    for a, b in zip(good, m.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert read_checkpoint_meta(tmp_path)["epoch"] == 1
    reloaded = tfpvae.load(tmp_path)
    for a, b in zip(good, reloaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_run_diverging_in_its_warmup_leaves_the_kl_weight_at_beta(x, tmp_path):
    m = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, beta=0.8, seed=0)
    with pytest.raises(TrainingDivergedError, match="epoch 2, batch 1"):
        poison = [_PoisonAt(1, 0)]
        train(m, x, epochs=4, batch_size=32, run_dir=tmp_path, kl_warmup_epochs=5, verbose=0, callbacks=poison)
    # The last good epoch (the first, at weight 0.16) is restored, but not its partial KL weight.
    assert float(m.kl_weight.numpy()) == float(tfpvae.load(tmp_path).kl_weight.numpy()) == pytest.approx(0.8)
    assert read_checkpoint_meta(tmp_path)["epoch"] == 1


class _InterruptAt(tfk.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 3 and len(self.model.training_history.get("loss", [])) == 0:
            os.kill(os.getpid(), signal.SIGINT)


def test_sigint_saves_and_returns_cleanly(x, tmp_path):
    m = _model()
    result = train(m, x, epochs=5, batch_size=32, run_dir=tmp_path, verbose=0, callbacks=[_InterruptAt()])
    assert result.interrupted and result.epochs_completed == 0
    assert read_checkpoint_meta(tmp_path)["epoch"] == 0
    # The checkpoint holds the weights after the interrupted batch: no finished batch is lost.
    for a, b in zip(m.get_weights(), tfpvae.load(tmp_path).get_weights()):
        np.testing.assert_array_equal(a, b)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.slow  # a training subprocess killed mid-epoch, then resumed: about 25 s on 2 cores
def test_sigkill_mid_epoch_loses_no_completed_epoch(tmp_path):
    run = tmp_path / "run"
    command = f"train --dataset digits --epochs 400 --batch-size 16 --latent-dim 2 --seed 0 --no-progress --out {run}"
    cmd = [sys.executable, "-m", "tfpvae", *command.split()]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if read_checkpoint_meta(run)["epoch"] >= 2:
                    break
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.2)
        else:
            pytest.fail("the training subprocess wrote no checkpoint within 120 s")
        time.sleep(0.35)  # land somewhere inside a later epoch
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = read_checkpoint_meta(run)
    done = before["epoch"]
    assert done >= 2 and len(before["history"]["loss"]) == done
    from tfpvae.cli import main

    assert main(f"train --resume {run} --epochs {done + 2} --no-progress".split()) == 0
    after = read_checkpoint_meta(run)
    assert after["epoch"] == done + 2
    assert after["history"]["loss"][:done] == before["history"]["loss"]
    model = tfpvae.load(run)
    assert len(model.training_history["loss"]) == done + 2
    assert json.loads((run / "train_args.json").read_text())["seed"] == 0
    assert np.isfinite(model.sample(2)).all()


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, x):
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        train(_model(), x, epochs=1, run_dir=tmp_path, resume=True, verbose=0)
    with pytest.raises(ValueError, match="`resume=True` needs the `run_dir`"):
        train(_model(), x, epochs=1, resume=True, verbose=0)


class _Schedules(tfk.callbacks.Callback):
    """Records kl_weight and the learning rate during each epoch; optionally stops after an epoch."""

    def __init__(self, stop_after=None):
        super().__init__()
        self.stop_after, self.kl, self.lr = stop_after, {}, {}

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.kl[self.epoch] = float(self.model.kl_weight.numpy())
        self.lr[self.epoch] = float(self.model.optimizer.learning_rate.numpy())

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.stop_after:
            self.model.stop_training = True


@pytest.mark.slow  # over 7 s; the fast tier skips it, CI runs it
def test_warmup_and_lr_schedule_continue_unchanged_after_resume(x, tmp_path):
    from tfpvae.schedules import kl_warmup_weight, learning_rate_at

    kw = dict(epochs=4, batch_size=64, seed=0, verbose=0, kl_warmup_epochs=3, lr_schedule="cosine")
    full = _Schedules()
    train(_model(), x, callbacks=[full], **kw)
    lr0 = _model().config.learning_rate
    np.testing.assert_allclose([full.kl[e] for e in range(4)], [kl_warmup_weight(e, 3) for e in range(4)], rtol=1e-6)
    np.testing.assert_allclose(
        [full.lr[e] for e in range(4)], [learning_rate_at(e, 4, lr0, "cosine") for e in range(4)], rtol=1e-6
    )
    # The same run killed after epoch 2, then resumed in a fresh model: epochs 3 and 4 get the same values.
    first = _Schedules(stop_after=2)
    train(_model(), x, run_dir=tmp_path, callbacks=[first], **kw)
    assert read_checkpoint_meta(tmp_path)["epoch"] == 2
    second = _Schedules()
    resumed = _model()
    result = train(resumed, x, run_dir=tmp_path, resume=True, callbacks=[second], **kw)
    assert result.epochs_completed == 4 and len(resumed.training_history["loss"]) == 4
    assert {**first.kl, **second.kl} == full.kl and {**first.lr, **second.lr} == full.lr
    assert float(resumed.kl_weight.numpy()) == 1.0  # config.beta after the warm-up


def test_iwae_training_run_resumes(x, tmp_path):
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, train_samples=3, seed=0)
    train(model, x, epochs=2, batch_size=32, run_dir=tmp_path, seed=0, verbose=0, lr_schedule="exponential")
    assert read_checkpoint_meta(tmp_path)["config"]["train_samples"] == 3
    resumed = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, train_samples=3, seed=0)
    train(resumed, x, epochs=3, batch_size=32, run_dir=tmp_path, resume=True, verbose=0, lr_schedule="exponential")
    assert len(resumed.training_history["loss"]) == 3 and np.isfinite(resumed.training_history["loss"]).all()


def test_checkpoint_without_a_later_config_field_still_resumes(x, tmp_path):
    m = _model()
    train(m, x, epochs=1, batch_size=64, run_dir=tmp_path, verbose=0)
    # Rewrite the checkpoint as an older version wrote it: no train_samples in its config.
    arrays = dict(np.load(tmp_path / "checkpoint.npz"))
    meta = json.loads(arrays["meta_json"].tobytes().decode())
    del meta["config"]["train_samples"]
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "checkpoint.npz", **arrays)
    assert train(_model(), x, epochs=2, batch_size=64, run_dir=tmp_path, resume=True, verbose=0).epochs_completed == 2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kl_warmup_epochs=-1), "`kl_warmup_epochs` must be an int >= 0"),
        (dict(lr_schedule="step"), "`lr_schedule` must be one of 'constant', 'linear', 'cosine', 'exponential'"),
        (dict(time_budget=0.0), "`time_budget` must be"),
        (dict(lr_schedule="cosine", min_lr_fraction=1.5), "`min_lr_fraction`"),
        (dict(early_stopping=2), "`early_stopping` needs `validation_data`"),
        (dict(early_stopping=0, validation_data=np.zeros((4, 8, 8, 1))), "`early_stopping` must be an int >= 1"),
    ],
)
def test_bad_schedule_arguments_are_clear_errors(x, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        train(_model(), x, epochs=1, verbose=0, **kwargs)


class _WeightsPerEpoch(tfk.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


def test_early_stopping_keeps_the_best_epoch_and_a_resumable_checkpoint(x, tmp_path):
    # Validation on noise: the better the model learns the digits, the worse it codes
    # noise, so the validation loss soon stops improving and training stops early.
    noise = (np.random.default_rng(0).random((64, 8, 8, 1)) < 0.5).astype(np.float32)
    m, record = _model(), _WeightsPerEpoch()
    result = train(
        m,
        x,
        epochs=30,
        batch_size=32,
        validation_data=noise,
        run_dir=tmp_path,
        early_stopping=2,
        seed=0,
        verbose=0,
        callbacks=[record],
        kl_warmup_epochs=1,
    )
    val = m.training_history["val_loss"]
    assert result.epochs_completed < 30 and len(val) == result.epochs_completed
    assert result.best_epoch == 2 + int(np.argmin(val[1:]))  # epoch 1 (the warm-up) is not compared
    assert result.epochs_completed == result.best_epoch + 2  # patience
    for got, best in zip(m.get_weights(), record.weights[result.best_epoch - 1]):
        np.testing.assert_array_equal(got, best)
    # The checkpoint keeps the last epoch's state, for resume; the run folder's model is the returned one.
    assert read_checkpoint_meta(tmp_path)["epoch"] == result.epochs_completed
    for got, best in zip(tfpvae.load(tmp_path).get_weights(), m.get_weights()):
        np.testing.assert_array_equal(got, best)
    # "Resuming" a finished run trains nothing and returns that run's model, the best epoch's weights.
    again = _model()
    done = train(again, x, epochs=result.epochs_completed, batch_size=32, run_dir=tmp_path, resume=True, verbose=0)
    assert done.epochs_completed == result.epochs_completed
    for got, best in zip(again.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(got, best)


def test_a_resumed_early_stopper_compares_with_the_best_epoch_before_the_resume(x, tmp_path):
    # The stopper's state and best weights travel in the checkpoint: after a resume the
    # best epoch is the best of the whole run, not the first epoch after the resume.
    noise = (np.random.default_rng(0).random((64, 8, 8, 1)) < 0.5).astype(np.float32)
    record = _WeightsPerEpoch()
    kw = dict(batch_size=32, validation_data=noise, run_dir=tmp_path, early_stopping=50, verbose=0, kl_warmup_epochs=1)
    m = _model()
    first = train(m, x, epochs=6, seed=0, callbacks=[record], **kw)
    saved = read_checkpoint_meta(tmp_path)["early_stopping"]
    val = list(m.training_history["val_loss"])
    assert saved["best_epoch"] + 1 == first.best_epoch == 2 + int(np.argmin(val[1:])) < 6  # noise gets worse
    assert saved["wait"] == 6 - first.best_epoch and saved["stopped"] is False
    weights = list(record.weights)
    resumed = _model()
    second = train(resumed, x, epochs=8, resume=True, callbacks=[record], **kw)
    weights += record.weights
    val = resumed.training_history["val_loss"]
    assert len(val) == len(weights) == 8
    assert second.best_epoch == 2 + int(np.argmin(val[1:])) == first.best_epoch  # not epoch 7
    for got, want in zip(resumed.get_weights(), weights[second.best_epoch - 1]):
        np.testing.assert_array_equal(got, want)


def test_a_stopped_run_stays_stopped_when_resumed(x, tmp_path):
    noise = (np.random.default_rng(0).random((64, 8, 8, 1)) < 0.5).astype(np.float32)
    kw = dict(batch_size=32, validation_data=noise, run_dir=tmp_path, early_stopping=2, verbose=0, kl_warmup_epochs=1)
    m = _model()
    result = train(m, x, epochs=40, seed=0, **kw)
    assert result.epochs_completed < 40 and read_checkpoint_meta(tmp_path)["early_stopping"]["stopped"]
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    again = _model()
    done = train(again, x, epochs=60, resume=True, **kw)  # more epochs asked: the run had stopped
    assert (done.epochs_completed, done.best_epoch) == (result.epochs_completed, result.best_epoch)
    for got, want in zip(again.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert read_checkpoint_meta(tmp_path)["epoch"] == result.epochs_completed
    assert tfpvae.load(tmp_path).get_weights()[0].tobytes() == m.get_weights()[0].tobytes()
    assert files[CHECKPOINT_FILE] == (tmp_path / CHECKPOINT_FILE).read_bytes()


@pytest.mark.parametrize(
    "state, arrays",
    [
        ({"best": 1.0, "best_epoch": "2", "wait": 0, "stopped": False}, False),  # a field of another type
        ({"best": "low", "best_epoch": 2, "wait": 0, "stopped": False}, False),
        ([1, 2], False),  # not a record
        ({"best": 1.0, "best_epoch": 2, "wait": 0, "stopped": False}, "part"),  # best weights in part
        ({"best": 1.0, "best_epoch": 2, "wait": 0, "stopped": False}, "shape"),  # of another model
    ],
)
def test_a_damaged_early_stopping_record_is_a_checkpoint_error(x, tmp_path, state, arrays):
    from tfpvae._io import numbered_arrays
    from tfpvae.training import CheckpointError, save_checkpoint

    m = _model()
    m.compile()
    weights = {} if not arrays else numbered_arrays(m.get_weights(), "b")
    if arrays == "part":
        weights.pop("b0001")
    elif arrays == "shape":
        weights["b0000"] = np.zeros((3, 3), np.float32)
    save_checkpoint(m, tmp_path, 1, early_stopping=(state, weights))
    with pytest.raises(CheckpointError, match="early-stopping record"):
        train(_model(), x, epochs=2, run_dir=tmp_path, resume=True, early_stopping=2, validation_data=x, verbose=0)


class _InterruptInSecondEpoch(tfk.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 3:
            os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupted_epoch_is_never_the_best_one(x, tmp_path):
    # Keras validates the epoch SIGINT cut short; the stopper must not count it (on the
    # training digits the validation loss improves every epoch, so it would be the best).
    m = _model()
    result = train(
        m, x, epochs=5, batch_size=32, validation_data=x[:64], run_dir=tmp_path, early_stopping=3, verbose=0,
        callbacks=[_InterruptInSecondEpoch()],
    )  # fmt: skip
    assert result.interrupted and result.epochs_completed == 1 and result.best_epoch == 1
    assert read_checkpoint_meta(tmp_path)["early_stopping"]["best_epoch"] == 0


@pytest.mark.parametrize("damage", ["model missing", "model older"])
def test_a_finished_run_whose_model_a_kill_left_behind_resumes_whole(x, tmp_path, damage):
    # A kill between a run's last checkpoint and its model files: resuming the finished
    # run returns the checkpoint's model and writes the folder's model again.
    older = tmp_path / "older"
    train(_model(), x, epochs=1, batch_size=32, run_dir=older, seed=0, verbose=0)
    run = tmp_path / "run"
    m = _model()
    train(m, x, epochs=2, batch_size=32, run_dir=run, seed=0, verbose=0)
    for name in MODEL_FILES:
        (run / name).unlink()
        if damage == "model older":
            (run / name).write_bytes((older / name).read_bytes())
    again = _model()
    done = train(again, x, epochs=2, batch_size=32, run_dir=run, resume=True, verbose=0)
    assert done.epochs_completed == 2 and len(tfpvae.load(run).training_history["loss"]) == 2
    for got, want, saved in zip(again.get_weights(), m.get_weights(), tfpvae.load(run).get_weights()):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(saved, want)


def test_clip_norm_clips_a_model_already_compiled(x, tmp_path):
    # A loaded model comes compiled. Adam's step hardly depends on the gradient's scale,
    # except below its epsilon (1e-7): gradients clipped to a norm of 1e-12 barely move the weights.
    train(_model(), x, epochs=1, batch_size=64, run_dir=tmp_path, verbose=0)
    moved = {}
    for clip in (None, 1e-12):
        model = tfpvae.load(tmp_path)
        before = model.get_weights()
        train(model, x, epochs=1, batch_size=64, clip_norm=clip, seed=0, verbose=0)
        assert model.optimizer.global_clipnorm == clip
        moved[clip] = max(float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), before))
    assert moved[1e-12] < 1e-3 * moved[None]


def test_the_run_folder_ends_at_the_last_epoch_and_a_cut_short_warmup_at_beta(x, tmp_path):
    # 3 epochs, a checkpoint every 2 and a 5-epoch warm-up: the run ends between checkpoints
    # and before the warm-up does.
    m = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, beta=0.8, seed=0)
    result = train(m, x, epochs=3, batch_size=32, run_dir=tmp_path, checkpoint_every=2, kl_warmup_epochs=5, verbose=0)
    assert result.epochs_completed == 3 and read_checkpoint_meta(tmp_path)["epoch"] == 3
    assert len(m.training_history["loss"]) == len(read_checkpoint_meta(tmp_path)["history"]["loss"]) == 3
    loaded = tfpvae.load(tmp_path)
    for got, want in zip(loaded.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert float(m.kl_weight.numpy()) == float(loaded.kl_weight.numpy()) == pytest.approx(0.8)
    # Resuming continues the warm-up where it was cut (epoch 4 of 5: weight 4/5 * beta), not at beta.
    resumed = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, beta=0.8, seed=0)
    weights = []
    record = tfk.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: weights.append(float(resumed.kl_weight.numpy())))
    train(
        resumed,
        x,
        epochs=4,
        batch_size=32,
        run_dir=tmp_path,
        resume=True,
        kl_warmup_epochs=5,
        verbose=0,
        callbacks=[record],
    )
    assert weights == [pytest.approx(0.8 * 4 / 5)]


def test_history_has_one_entry_per_epoch_without_a_run_folder(x):
    m = _model()
    result = train(m, x, epochs=3, batch_size=32, seed=0, verbose=0)
    assert len(result.history["loss"]) == len(m.training_history["loss"]) == 3
    train(m, x, epochs=2, batch_size=32, seed=0, verbose=0)  # two more epochs, continuing the history
    assert len(m.training_history["loss"]) == 5


def _weights_digest(folder):
    return json.loads((folder / "metadata.json").read_text())["weights_sha256"]


def test_a_folder_with_a_model_is_not_trained_over_unless_resumed_or_overwritten(x, tmp_path):
    from tfpvae.write_guard import OutputExistsError

    first = _model()
    train(first, x, epochs=1, batch_size=64, run_dir=tmp_path, verbose=0)
    before = _weights_digest(tmp_path), (tmp_path / "checkpoint.npz").read_bytes()
    with pytest.raises(OutputExistsError, match=r"already holds a trained model or run \(config.json, weights.npz"):
        train(_model(seed=1), x, epochs=1, batch_size=64, run_dir=tmp_path, verbose=0)
    assert (_weights_digest(tmp_path), (tmp_path / "checkpoint.npz").read_bytes()) == before
    other = _model(seed=1)
    train(other, x, epochs=1, batch_size=64, run_dir=tmp_path, overwrite=True, verbose=0)
    assert _weights_digest(tmp_path) != before[0]
    np.testing.assert_array_equal(tfpvae.load(tmp_path).get_weights()[0], other.get_weights()[0])
    # A folder VAE.save wrote is a model too.
    tfpvae.save(first, tmp_path / "saved")
    with pytest.raises(OutputExistsError):
        train(_model(), x, epochs=1, run_dir=tmp_path / "saved", verbose=0)


def _refuse_writes_after(monkeypatch, count, code=errno.ENOSPC):
    """Lets `count` file writes through, then refuses every one with `code` (at the flush to disk)."""
    calls = {"n": 0}
    real = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > count:
            raise OSError(code, os.strerror(code))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_a_refused_checkpoint_keeps_the_last_good_one_and_says_so(x, tmp_path, monkeypatch, code):
    from tfpvae._io import StorageError

    model = _model()
    train(model, x, epochs=1, batch_size=64, run_dir=tmp_path, verbose=0)
    kept = (tmp_path / "checkpoint.npz").read_bytes(), tfpvae.load(tmp_path).get_weights()
    _refuse_writes_after(monkeypatch, 0, code)
    with pytest.raises(StorageError) as info:
        train(_model(), x, epochs=3, batch_size=64, run_dir=tmp_path, resume=True, verbose=0)
    message = str(info.value)  # an epoch writes its model first, then its checkpoint
    assert message.startswith(f"cannot write {tmp_path / 'weights.npz'}: {os.strerror(code)}; ")
    assert message.endswith(
        f"{tmp_path} keeps its checkpoint of epoch 1 and a complete model: resume from it once "
        "the file system accepts writes"
    )
    monkeypatch.undo()
    assert (tmp_path / "checkpoint.npz").read_bytes() == kept[0]
    for a, b in zip(tfpvae.load(tmp_path).get_weights(), kept[1]):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    # Once the disk accepts writes again, the run resumes from the kept epoch.
    result = train(_model(), x, epochs=2, batch_size=64, run_dir=tmp_path, resume=True, verbose=0)
    assert result.epochs_completed == 2


def test_a_model_folder_is_written_whole_or_not_at_all(x, tmp_path, monkeypatch):
    from tfpvae._io import StorageError

    model = _model()
    train(model, x, epochs=1, batch_size=64, run_dir=tmp_path, verbose=0)
    files = {name: (tmp_path / name).read_bytes() for name in ("config.json", "weights.npz", "metadata.json")}
    train_more = _model()
    # The new weights pass (an epoch writes its model first); config.json, the model's second file, is refused.
    _refuse_writes_after(monkeypatch, 1)
    with pytest.raises(StorageError, match="cannot write .*config.json: No space left on device"):
        train(train_more, x, epochs=2, batch_size=64, run_dir=tmp_path, resume=True, verbose=0)
    monkeypatch.undo()
    assert {name: (tmp_path / name).read_bytes() for name in files} == files
    tfpvae.load(tmp_path)  # the checksum still matches
