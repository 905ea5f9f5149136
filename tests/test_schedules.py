"""KL warm-up, learning-rate schedules and the time budget: values per epoch and per second,
exact endpoints, resume-safety."""

import math

import numpy as np
import pytest

import tfpvae
from tfpvae._keras import tfk
from tfpvae.config import UNLIMITED_EPOCHS
from tfpvae.schedules import (
    DEFAULT_MIN_LR_FRACTION,
    BudgetProgress,
    KLWarmup,
    LearningRateDecay,
    TimeBudget,
    decayed_rate,
    kl_warmup_weight,
    learning_rate_at,
)


@pytest.fixture(scope="module")
def x(digits):
    return digits[0][0][:64]


class _Recorder(tfk.callbacks.Callback):
    """Reads kl_weight and the learning rate in each epoch's first batch (after the schedules set them)."""

    def __init__(self):
        super().__init__()
        self.kl, self.lr, self._epoch = {}, {}, None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.kl[self._epoch] = float(self.model.kl_weight.numpy())
            self.lr[self._epoch] = float(self.model.optimizer.learning_rate.numpy())


def _fit(model, x, epochs, callbacks, initial_epoch=0):
    recorder = _Recorder()
    model.fit(x, epochs=epochs, initial_epoch=initial_epoch, batch_size=32, callbacks=[*callbacks, recorder], verbose=0)
    return recorder


def test_kl_warmup_weight_per_epoch():
    assert [kl_warmup_weight(e, 4) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [kl_warmup_weight(e, 2, beta=0.5) for e in range(3)] == [0.25, 0.5, 0.5]
    assert kl_warmup_weight(0, 0, beta=0.3) == 0.3  # no warm-up
    assert kl_warmup_weight(99, 100) == 1.0 and kl_warmup_weight(0, 100) == 0.01


def test_kl_warmup_callback_sets_the_weight_and_resumes_by_epoch_index(x):
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, beta=0.8, seed=0)
    model.compile()
    full = _fit(model, x, 5, [KLWarmup(3)])
    np.testing.assert_allclose([full.kl[e] for e in range(5)], [0.8 / 3, 1.6 / 3, 0.8, 0.8, 0.8], rtol=1e-6)
    assert float(model.kl_weight.numpy()) == pytest.approx(0.8)  # left at config.beta afterwards
    # A run resumed at epoch 1 in a fresh model with a fresh callback sets epoch 1's value, not the first's.
    resumed = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, beta=0.8, seed=0)
    resumed.compile()
    part = _fit(resumed, x, 5, [KLWarmup(3)], initial_epoch=1)
    assert part.kl == {e: full.kl[e] for e in range(1, 5)}
    # An explicit beta overrides the config's, and a run shorter than the warm-up ends at beta.
    assert _fit(model, x, 1, [KLWarmup(2, beta=2.0)]).kl[0] == pytest.approx(1.0)
    assert float(model.kl_weight.numpy()) == pytest.approx(2.0)


def test_cosine_endpoints_are_exact_and_the_curve_falls():
    lr, epochs = 2e-3, 10
    values = [learning_rate_at(e, epochs, lr, "cosine") for e in range(epochs)]
    assert values[0] == lr and values[-1] == DEFAULT_MIN_LR_FRACTION * lr
    assert all(a > b for a, b in zip(values, values[1:]))
    mid = learning_rate_at(1, 3, lr, "cosine")  # half way: the mean of the endpoints
    assert mid == pytest.approx((lr + DEFAULT_MIN_LR_FRACTION * lr) / 2, rel=1e-12)
    assert learning_rate_at(25, epochs, lr, "cosine") == values[-1]  # past the end: the floor
    assert learning_rate_at(0, 1, lr, "cosine") == lr  # a one-epoch run does not decay


def test_exponential_and_constant_schedules():
    lr, epochs = 1e-3, 5
    values = [learning_rate_at(e, epochs, lr, "exponential", min_lr_fraction=0.1) for e in range(epochs)]
    assert values[0] == lr and values[-1] == 0.1 * lr
    ratios = np.asarray(values[1:]) / np.asarray(values[:-1])
    np.testing.assert_allclose(ratios, 0.1**0.25, rtol=1e-12)  # the same factor every epoch
    assert {learning_rate_at(e, epochs, lr) for e in range(epochs)} == {lr}


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: learning_rate_at(0, 10, 1e-3, "step"), "`schedule` must be one of"),
        (lambda: decayed_rate(-0.1, 1e-3, "linear"), "`progress`"),
        (lambda: TimeBudget(0.0), "`seconds`"),
        (lambda: TimeBudget(10.0, "cosine", spent=-1.0), "`spent`"),
        (lambda: learning_rate_at(0, 0, 1e-3, "cosine"), "`epochs` must be an int >= 1"),
        (lambda: learning_rate_at(0, 10, 1e-3, "cosine", min_lr_fraction=0.0), "`min_lr_fraction`"),
        (lambda: learning_rate_at(-1, 10, 1e-3), "`epoch` must be an int >= 0"),
        (lambda: kl_warmup_weight(0, -1), "`warmup_epochs` must be an int >= 0"),
        (lambda: KLWarmup(2, beta=-1.0), "`beta`"),
        (lambda: LearningRateDecay("cosine", 10, learning_rate=0.0), "`learning_rate`"),
    ],
)
def test_bad_values_name_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_learning_rate_callback_follows_the_epoch_index(x):
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, learning_rate=1e-3, seed=0)
    model.compile()
    full = _fit(model, x, 4, [LearningRateDecay("cosine", 4)])
    expected = [learning_rate_at(e, 4, 1e-3, "cosine") for e in range(4)]
    np.testing.assert_allclose([full.lr[e] for e in range(4)], expected, rtol=1e-6)
    # Resumed at epoch 2 (the optimizer's rate is already decayed, or fresh): the same values.
    part = _fit(model, x, 4, [LearningRateDecay("cosine", 4)], initial_epoch=2)
    assert part.lr == {2: full.lr[2], 3: full.lr[3]}
    assert math.isclose(full.lr[3], DEFAULT_MIN_LR_FRACTION * 1e-3, rel_tol=1e-6)


def test_learning_rate_callback_refuses_a_keras_schedule(x):
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    model.compile(tfk.optimizers.Adam(tfk.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.9)))
    with pytest.raises(ValueError, match="already a Keras LearningRateSchedule"):
        _fit(model, x, 1, [LearningRateDecay("cosine", 3)])


def test_linear_schedule_and_decayed_rate():
    lr, floor = 2e-3, DEFAULT_MIN_LR_FRACTION * 2e-3
    values = [learning_rate_at(e, 5, lr, "linear") for e in range(5)]
    np.testing.assert_allclose(np.diff(values), (floor - lr) / 4, rtol=1e-12)  # equal steps
    assert values[0] == lr and values[-1] == floor
    # decayed_rate is the same curve over a fraction of the run; past the end it keeps the floor.
    assert decayed_rate(0.25, lr, "linear") == pytest.approx(values[1], rel=1e-12)
    assert decayed_rate(1.7, lr, "cosine") == floor and decayed_rate(0.0, lr, "exponential") == lr
    assert decayed_rate(0.5, lr, "exponential", 0.01) == pytest.approx(lr * 0.1, rel=1e-12)
    assert decayed_rate(0.9, lr) == lr
    # The start is the initial rate exactly (floor + (lr - floor) would round above it).
    assert decayed_rate(0.0, 0.01, "linear", 0.1) == 0.01 and learning_rate_at(0, 1, 0.01, "cosine", 0.1) == 0.01


class _FakeClock(tfk.callbacks.Callback):
    """time.perf_counter for the time budget, in a world where every batch takes 1 s."""

    def __init__(self):
        super().__init__()
        self.now = 100.0

    def __call__(self):
        return self.now

    def on_train_batch_end(self, batch, logs=None):
        self.now += 1.0  # before the budget reads the clock: this callback comes first


class _RateRecorder(tfk.callbacks.Callback):
    """The learning rate each batch trains with (after the budget has set it)."""

    def __init__(self):
        super().__init__()
        self.lr = []

    def on_train_batch_begin(self, batch, logs=None):
        self.lr.append(float(self.model.optimizer.learning_rate.numpy()))


def test_time_budget_stops_at_the_first_batch_past_it_and_decays_by_time(x, monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(tfpvae.schedules.time, "perf_counter", clock)
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, learning_rate=1e-3, seed=0)
    model.compile()

    def fit(budget):
        seen = _RateRecorder()
        model.fit(x, epochs=50, batch_size=16, callbacks=[clock, budget, seen], verbose=0)
        return seen

    budget = TimeBudget(10.0, "linear")
    seen = fit(budget)
    # 64 images, 16 a batch: 4 batches an epoch; 10 batches of 1 s, so it stops in epoch 3.
    assert len(seen.lr) == 10 and budget.exhausted and budget.spent == pytest.approx(10.0)
    assert len(model.history.history["loss"]) == 3
    expected = [decayed_rate(i / 10, 1e-3, "linear") for i in range(10)]
    np.testing.assert_allclose(seen.lr, expected, rtol=1e-6)
    # A budget already partly spent trains only the rest; "constant" leaves the rate alone.
    model.optimizer.learning_rate = 5e-4
    seen = fit(TimeBudget(4.5, spent=2.0))
    assert len(seen.lr) == 3 and np.allclose(seen.lr, 5e-4)  # 2 + 3 x 1 s >= 4.5


@pytest.mark.parametrize("epochs", [50, UNLIMITED_EPOCHS])
def test_budget_progress_says_the_time_spent_instead_of_kerass_epoch_line(x, monkeypatch, capsys, epochs):
    clock = _FakeClock()
    monkeypatch.setattr(tfpvae.schedules.time, "perf_counter", clock)
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    model.compile()
    budget = TimeBudget(6.0)
    model.fit(x, epochs=epochs, batch_size=16, callbacks=[clock, budget, BudgetProgress(budget)], verbose=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch")]
    # 4 one-second batches an epoch: epoch 2 begins 4 s in, and the 6 s budget ends it.
    total = "" if epochs == UNLIMITED_EPOCHS else f"/{epochs}"
    assert lines == [f"Epoch 1{total}: 0 s of 6 s spent", f"Epoch 2{total}: 4 s of 6 s spent"]
    model.fit(x, epochs=2, batch_size=16, callbacks=[BudgetProgress(TimeBudget(60.0))], verbose=0)
    assert "Epoch" not in capsys.readouterr().out  # silent with verbose=0


def test_train_with_a_time_budget_resumes_with_the_rest(x, tmp_path):
    from tfpvae.training import read_checkpoint_meta, train

    def run(epochs, resume, budget):
        model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, learning_rate=1e-3, seed=0)
        seen = _RateRecorder()
        result = train(
            model, x, epochs=epochs, batch_size=16, run_dir=tmp_path, seed=0, verbose=0, resume=resume,
            lr_schedule="linear", time_budget=budget, callbacks=[seen],
        )  # fmt: skip
        return result, seen.lr

    # Ended by its epochs: the checkpoint records the seconds spent of the budget.
    result, lr = run(2, False, 1000.0)
    spent = read_checkpoint_meta(tmp_path)["train_seconds"]
    assert result.epochs_completed == 2 and len(lr) == 8 and 0.0 < spent < 1000.0
    assert lr[0] == pytest.approx(1e-3, rel=1e-6) and lr[-1] < lr[0]  # decayed by the time spent
    # Resumed with the same budget, the rate continues from the time spent, not from the start.
    result, lr = run(3, True, 1000.0)
    assert result.epochs_completed == 3
    latest, earliest = (decayed_rate(t / 1000, 1e-3, "linear") for t in (spent + 120.0, spent))
    assert latest < lr[0] <= earliest * (1 + 1e-6)  # the rate is stored in float32
    # A budget already spent trains nothing more; a tiny one stops after the first batch.
    spent = read_checkpoint_meta(tmp_path)["train_seconds"]
    result, lr = run(10, True, spent)
    assert result.epochs_completed == 3 and lr == []
    result, lr = run(10, True, spent + 1e-9)
    assert result.epochs_completed == 4 and len(lr) == 1  # the partial epoch counts as the last


def test_time_budget_refuses_a_keras_schedule(x):
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    model.compile(tfk.optimizers.Adam(tfk.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.9)))
    with pytest.raises(ValueError, match="decay it over a time budget"):
        model.fit(x, epochs=1, batch_size=32, callbacks=[TimeBudget(60.0, "linear")], verbose=0)


def test_a_checkpoint_with_bad_train_seconds_is_refused(x, tmp_path):
    from tfpvae.training import CheckpointError, read_checkpoint_meta, save_checkpoint

    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    model.compile()
    for bad in (float("nan"), -1.0):
        save_checkpoint(model, tmp_path, 0, train_seconds=bad)
        with pytest.raises(CheckpointError, match="train_seconds"):
            read_checkpoint_meta(tmp_path)
    save_checkpoint(model, tmp_path, 0, train_seconds=3.5)
    assert read_checkpoint_meta(tmp_path)["train_seconds"] == 3.5


def test_train_refuses_a_time_budget_with_several_workers(x, monkeypatch):
    from tfpvae import training

    monkeypatch.setattr(training, "num_workers", lambda strategy: 2)
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    with pytest.raises(ValueError, match="`time_budget` needs a single-worker strategy"):
        training.train(model, x, epochs=1, time_budget=5.0, verbose=0)
