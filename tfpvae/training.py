"""Training runs that survive: checkpoints, resume, NaN recovery and Ctrl-C.

`train` wraps `VAE.fit` for runs that write to a folder. Every `checkpoint_every` epochs and
after the last it writes `checkpoint.npz` atomically (temporary file, then rename): model weights, optimizer
state, the binarisation RNG state, the epoch count and the history, all as plain arrays.
A killed run resumes from its last complete checkpoint; a NaN/Inf loss restores and saves
the last good weights and raises `TrainingDivergedError`; SIGINT stops at the end of the
current batch, saves, and returns with `interrupted=True`. `kl_warmup_epochs` and
`lr_schedule` add the callbacks of `tfpvae.schedules`, which compute each epoch's value
from its index, so a resumed run continues the same schedule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np

from tfpvae._io import numbered_arrays, numbered_keys
from tfpvae._keras import tf, tfk
from tfpvae._validation import check_choice, check_float, check_int
from tfpvae.checkpoints import (  # noqa: F401  (read_checkpoint_meta, restore_checkpoint: re-exported)
    CHECKPOINT_FILE,
    CheckpointError,
    StopperRecord,
    read_checkpoint_meta,
    restore_checkpoint,
    restore_training_state,
    save_checkpoint,
    saving,
    state_arrays,
)
from tfpvae.distribute import is_chief, num_workers
from tfpvae.model import load
from tfpvae.schedules import (
    DEFAULT_MIN_LR_FRACTION,
    LR_SCHEDULES,
    BudgetProgress,
    KLWarmup,
    LearningRateDecay,
    TimeBudget,
)
from tfpvae.serialization import MODEL_FILES
from tfpvae.write_guard import claim_folder

# The files that make a folder a model or a run: `train` does not write over them unasked.
RUN_MARKERS = (*MODEL_FILES, CHECKPOINT_FILE)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf; the last good weights were restored and saved."""


@dataclasses.dataclass
class TrainingResult:
    """What `train` did.

    Attributes:
      epochs_completed: total epochs the model has trained, over all resumed runs.
      history: per-epoch metrics over all runs (the same as `model.training_history`).
      interrupted: True when SIGINT stopped training early (the state was saved).
      best_epoch: with `early_stopping`, the 1-based epoch whose weights the model holds
        (lowest validation loss); None otherwise.
    """

    epochs_completed: int
    history: dict[str, list[float]]
    interrupted: bool = False
    best_epoch: int | None = None


class _EarlyStopping(tfk.callbacks.EarlyStopping):
    """Keras' early stopping, driven by `_RunGuard` and kept in the run's checkpoints.

    The guard calls it after each whole epoch only (a partial epoch, stopped by SIGINT or a
    non-finite loss, is never the best) and before that epoch's checkpoint, which then holds
    the stopper's state and best weights: a resumed run goes on comparing with the best
    epoch before it, and a stopped run stays stopped. `train` restores the best weights
    itself; Keras would in `on_train_end`, before an interrupted run's checkpoint is saved,
    pairing the best weights with the last epoch's optimizer state and epoch count.
    """

    resumed: tuple[dict[str, Any], list[np.ndarray] | None] | None = None  # `state()` of a checkpoint

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # resets the state, then the checkpoint's is put back
        if self.resumed is not None:
            state, self.best_weights = self.resumed
            self.best = np.inf if state["best"] is None else state["best"]
            self.best_epoch, self.wait = state["best_epoch"], state["wait"]

    def on_train_end(self, logs=None):
        pass

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The checkpoint's record: JSON-able metadata and the best weights as arrays "b0000", ...."""
        meta = {
            "best": float(self.best) if np.isfinite(self.best) else None,
            "best_epoch": int(self.best_epoch),
            "wait": int(self.wait),
            "stopped": bool(self.stopped_epoch > 0),
        }
        return meta, {} if self.best_weights is None else numbered_arrays(self.best_weights, "b")


class _RunGuard(tfk.callbacks.Callback):
    """Checkpoints each epoch, watches the loss for NaN/Inf and stops on SIGINT."""

    def __init__(
        self,
        run_dir: Path | None,
        every: int,
        start_epoch: int,
        budget: TimeBudget | None = None,
        stopper: _EarlyStopping | None = None,
    ) -> None:
        super().__init__()
        self.run_dir, self.every, self.stopper = run_dir, every, stopper
        self.completed = self.checkpointed = start_epoch
        self.failure: str | None = None
        self.interrupted = False
        self.epoch_logs: dict[str, list[float]] = {}
        self.good_state: dict[str, np.ndarray] | None = None
        self.budget = budget  # whose time spent each checkpoint records

    @property
    def budget_spent(self) -> float | None:
        """Seconds of the time budget spent (None without one), for the checkpoint."""
        return None if self.budget is None else self.budget.tick()

    def set_model(self, model):
        super().set_model(model)
        if self.stopper is not None:
            self.stopper.set_model(model)

    def on_train_begin(self, logs=None):
        self.good_state = state_arrays(self.model)
        if self.stopper is not None:
            self.stopper.on_train_begin(logs)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failure = f"loss became {float(loss)} at epoch {self.completed + 1}, batch {batch + 1}"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.failure or self.interrupted:
            return  # a partial epoch: not counted, its logs are not history
        if any(not math.isfinite(float(v)) for v in (logs or {}).values()):
            self.failure = f"a metric became non-finite at the end of epoch {epoch + 1}: {logs}"
            self.model.stop_training = True
            return
        self.completed = epoch + 1
        for key, value in (logs or {}).items():
            self.epoch_logs.setdefault(key, []).append(float(value))
        self.good_state = state_arrays(self.model)
        if self.stopper is not None:  # whole epochs only, and before the checkpoint that keeps its state
            self.stopper.on_epoch_end(epoch, logs)
        if self.run_dir is not None and (self.completed % self.every == 0 or self.model.stop_training):
            self.save()

    def save(self, merge_history: bool = True) -> None:
        history = self.model.training_history
        if merge_history:  # during fit, the model's history lacks this run's epochs
            merged = {
                k: history.get(k, []) + self.epoch_logs.get(k, []) for k in dict.fromkeys([*history, *self.epoch_logs])
            }
            self.model.training_history = merged
        try:
            with saving(self.run_dir):
                self.model.save(self.run_dir)  # the model first: a checkpoint is never newer than it
                self.checkpoint()
            self.checkpointed = self.completed
        finally:
            self.model.training_history = history

    def checkpoint(self) -> None:
        """Writes the model's training state after the completed epochs, with the stopper's."""
        stopper = None if self.stopper is None else self.stopper.state()
        seconds = self.budget_spent
        save_checkpoint(self.model, self.run_dir, self.completed, train_seconds=seconds, early_stopping=stopper)

    def fail(self, warmed_up: bool) -> None:
        """Restores (and with a run folder saves) the last good state, then raises."""
        self.restore_good_state()
        if warmed_up:
            self.model.kl_weight.assign(self.model.config.beta)  # as KLWarmup leaves it; a resume sets it again
        where = ""
        if self.run_dir is not None:
            self.save(merge_history=False)
            where = f" and saved to {self.run_dir}"
        raise TrainingDivergedError(
            f"Training stopped: {self.failure}. Restored the weights of epoch {self.completed}{where}. "
            "Try a lower learning rate, clip_norm, or a larger posterior_scale_floor."
        )

    def restore_good_state(self) -> None:
        state = self.good_state
        self.model.set_weights([state[k] for k in numbered_keys(len(self.model.weights), "w")])
        for key, v in zip(numbered_keys(len(self.model.optimizer.variables), "o"), self.model.optimizer.variables):
            v.assign(state[key])
        self.model.binarize_rng.reset(state["rng_state"])


def train(
    model,
    x: Any,
    *,
    epochs: int,
    batch_size: int = 128,
    validation_data: Any = None,
    run_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    clip_norm: float | None = None,
    seed: int | None = None,
    verbose: int | str = "auto",
    callbacks: list | None = None,
    kl_warmup_epochs: int = 0,
    lr_schedule: str = "constant",
    min_lr_fraction: float = DEFAULT_MIN_LR_FRACTION,
    early_stopping: int | None = None,
    steps_per_epoch: int | None = None,
    precision: str | None = None,
    overwrite: bool = False,
    time_budget: float | None = None,
) -> TrainingResult:
    """Trains `model` to `epochs` total epochs, checkpointing into `run_dir`.

    Args:
      model: a `tfpvae.VAE`; uncompiled models get Adam at `config.learning_rate`.
      x: training images, array (n, H, W, C), a `tf.data.Dataset` of batches, or a
        distributed dataset (`tfpvae.distribute.file_dataset`).
      epochs: total number of epochs, counting those of a resumed run (at most, with a budget).
      batch_size: images per step for array input.
      validation_data: images evaluated after each epoch.
      run_dir: folder for `checkpoint.npz` (the state of the last completed epoch) and the
        model files (`tfpvae.load` gives the model this returns). None: no files.
        A folder that holds a model or checkpoint is refused unless `resume` or
        `overwrite`, and the folder is locked while training writes it.
      checkpoint_every: epochs between checkpoints; the last is always written.
      resume: continue from `run_dir`'s checkpoint (weights, optimizer, RNG, history, time).
      clip_norm: clip the global gradient norm to this value, also for a model already
        compiled (a loaded one). None: no clipping, or a compiled model's own setting.
      seed: seeds shuffling (`tf.random.set_seed`); weight initialisation and binarisation
        follow `model.config.seed`.
      verbose: Keras verbosity: "auto", 0, 1 (progress bar) or 2 (a line per epoch).
      callbacks: more Keras callbacks.
      kl_warmup_epochs: raise `model.kl_weight` linearly from beta / n in the first epoch
        to `config.beta` at epoch n (`tfpvae.schedules.KLWarmup`). 0: none.
      lr_schedule: "constant", "linear", "cosine" or "exponential": decay from
        `config.learning_rate` to `min_lr_fraction` of it at epoch `epochs`, or at the end
        of `time_budget` (`tfpvae.schedules`); resume with the same `epochs`.
      min_lr_fraction: the decaying schedules' final fraction, in (0, 1]. Default 0.05.
      early_stopping: patience in epochs: stop when the validation loss has not improved
        for this many epochs (warm-up epochs not compared) and keep the best epoch's
        weights (`TrainingResult.best_epoch`; the checkpoint keeps the last epoch's state
        and the stopper's, so a resumed run compares with the best epoch before it and a
        stopped one stays stopped). Needs `validation_data` held out from training.
      steps_per_epoch: batches per epoch for a repeating dataset. None: one pass.
      precision: the training steps' arithmetic, "float32", "bfloat16" or "auto"
        (`tfpvae.VAE.set_training_precision`). None: the model's (see `compile`).
      overwrite: train into a `run_dir` that holds another model or run, replacing its
        model and checkpoint as epochs complete.
      time_budget: seconds of wall-clock training after which the run stops, within an
        epoch if need be (`tfpvae.schedules.TimeBudget`); a resumed run spends the rest.

    Returns:
      the epochs completed, the per-epoch history, whether SIGINT stopped training
      and, with `early_stopping`, the best epoch.

    Raises:
      TrainingDivergedError: the loss became NaN/Inf; the last good weights are restored
        in `model` and, with a `run_dir`, saved there.
      OutputExistsError: `run_dir` holds a model or checkpoint (pass `resume` or `overwrite`).
      FolderInUseError: another process is writing to `run_dir`.
      StorageError: a write failed (no space, ...); `run_dir` keeps its last checkpoint and model.
    """
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every")
    steps_per_epoch = None if steps_per_epoch is None else check_int(steps_per_epoch, "steps_per_epoch")
    clip_norm = None if clip_norm is None else check_float(clip_norm, "clip_norm", minimum=0.0, min_inclusive=False)
    if resume and run_dir is None:
        raise ValueError("`resume=True` needs the `run_dir` to resume from.")
    schedules, stopper, budget = _schedule_callbacks(
        epochs, kl_warmup_epochs, lr_schedule, min_lr_fraction, early_stopping, validation_data, time_budget, model
    )
    run_dir = None if run_dir is None else Path(run_dir)
    # Only the chief writes (workers would race); the model's strategy: `train` runs outside its scope.
    writer = run_dir if run_dir is not None and is_chief(model.distribute_strategy) else None
    with _claim(writer, overwrite, resume):
        _prepare(model, seed, clip_norm, precision)
        start, record, stopped = _resume(model, run_dir, budget, stopper) if resume else (0, None, False)
        if start >= epochs or stopped or (budget is not None and budget.exhausted):
            return _finished(model, run_dir, writer, start, record)
        guard = _RunGuard(writer, checkpoint_every, start, budget, stopper)
        callbacks = [guard, *schedules, *(callbacks or [])]
        fit = dict(epochs=epochs, initial_epoch=start, batch_size=batch_size, steps_per_epoch=steps_per_epoch)
        _fit_guarded(model, guard, x, callbacks=callbacks, validation_data=validation_data, verbose=verbose, **fit)
        if guard.failure:
            guard.fail(kl_warmup_epochs > 0)
        best_epoch = _finish(model, guard, stopper)
    return TrainingResult(guard.completed, model.training_history, guard.interrupted, best_epoch)


def _resume(model, run_dir: Path, budget: TimeBudget | None, stopper: _EarlyStopping | None) -> tuple:
    """Restores the checkpoint's state into `model`, the time spent into `budget` and the
    early stopper's state into `stopper`; returns the epochs done, the stopper's record and
    whether `stopper` is given and the checkpoint's run had been stopped by it."""
    start, record = restore_training_state(model, run_dir, budget)
    if stopper is not None:
        stopper.resumed = record
    return start, record, stopper is not None and record is not None and record[0]["stopped"]


def _finished(model, run_dir: Path, writer: Path | None, done: int, record: StopperRecord | None) -> TrainingResult:
    """A resumed run with nothing left to train: the model its checkpoint ends with (early
    stopping's best weights where it kept them), written to the run folder again, so that a
    folder that a kill left without its model, or with an older one, is whole."""
    if record is None:  # no early stopping, or a checkpoint written before tfpvae kept its state
        try:
            saved = load(run_dir)
        except (OSError, ValueError):  # no model, or an incomplete one
            saved = None
        if saved is not None and _epochs(saved.training_history) == done:  # its own, maybe a best epoch's
            model.set_weights(saved.get_weights())
            return TrainingResult(done, model.training_history)
    best_epoch = None
    if record is not None and record[1] is not None:
        model.set_weights(record[1])
        best_epoch = record[0]["best_epoch"] + 1
    if writer is not None:
        with saving(writer):
            model.save(writer)
    return TrainingResult(done, model.training_history, best_epoch=best_epoch)


def _epochs(history: dict[str, list[float]]) -> int:
    return max((len(v) for v in history.values()), default=0)


def _claim(run_dir: Path | None, overwrite: bool, resume: bool) -> contextlib.AbstractContextManager:
    """The run folder's lock and its check for a model or run already there (nothing without a folder)."""
    if run_dir is None:
        return contextlib.nullcontext()
    what = "a trained model or run"
    return claim_folder(run_dir, RUN_MARKERS, what=what, argument="run_dir", overwrite=overwrite, resume=resume)


def _prepare(model, seed: int | None, clip_norm: float | None, precision: str | None) -> None:
    """Seeds TensorFlow, compiles an uncompiled model (Adam) and sets the training precision."""
    if seed is not None:
        tf.random.set_seed(check_int(seed, "seed", minimum=0))
    if model.optimizer is None:
        model.compile(tfk.optimizers.Adam(model.config.learning_rate, global_clipnorm=clip_norm))
    elif clip_norm is not None and clip_norm != getattr(model.optimizer, "global_clipnorm", None):
        # A compiled model (every loaded one) clips as asked too; the step is traced again to read it.
        model.optimizer.clipnorm, model.optimizer.global_clipnorm = None, clip_norm  # at most one of the two
        model.train_function = None
    if precision is not None:
        model.set_training_precision(precision)


def _finish(model, guard: _RunGuard, stopper: _EarlyStopping | None) -> int | None:
    """Writes the last checkpoint and the run folder's model; returns the best epoch of early stopping."""
    if guard.run_dir is not None and (guard.interrupted or guard.checkpointed < guard.completed):
        # The last epoch whatever `checkpoint_every`, or after an interrupt the weights as
        # they are: no finished batch is lost.
        with saving(guard.run_dir):
            guard.checkpoint()
    best_epoch = None
    if stopper is not None and stopper.best_weights is not None:
        model.set_weights(stopper.best_weights)
        best_epoch = stopper.best_epoch + 1
    if guard.run_dir is not None:
        # The run folder's model is the one returned: the best epoch's weights, and the KL
        # weight a warm-up cut short by the end of the run leaves at beta (KLWarmup).
        with saving(guard.run_dir):
            model.save(guard.run_dir)
    return best_epoch


def _schedule_callbacks(
    epochs: int,
    kl_warmup_epochs: Any,
    lr_schedule: Any,
    min_lr_fraction: Any,
    early_stopping: Any,
    validation_data: Any,
    time_budget: Any,
    model: Any,
) -> tuple[list, _EarlyStopping | None, TimeBudget | None]:
    """The schedule callbacks (KL warm-up, learning rate by epoch or a `TimeBudget`) in the
    order they run, the early stopper (or None; `_RunGuard` drives it) and the budget (or
    None), all checked before any file is touched."""
    kl_warmup_epochs = check_int(kl_warmup_epochs, "kl_warmup_epochs", minimum=0)
    lr_schedule = check_choice(lr_schedule, "lr_schedule", LR_SCHEDULES)
    min_lr_fraction = check_float(min_lr_fraction, "min_lr_fraction", minimum=0.0, maximum=1.0, min_inclusive=False)
    if time_budget is not None:
        time_budget = check_float(time_budget, "time_budget", minimum=0.0, min_inclusive=False)
        if num_workers(model.distribute_strategy) > 1:
            # Each worker's clock would stop it at a different step, and the others would wait forever.
            raise ValueError("`time_budget` needs a single-worker strategy: workers' clocks do not agree.")

    stopper = None
    if early_stopping is not None:
        early_stopping = check_int(early_stopping, "early_stopping")
        if validation_data is None:
            raise ValueError("`early_stopping` needs `validation_data` to monitor (a split held out from training).")
        stopper = _EarlyStopping(
            monitor="val_loss", patience=early_stopping, restore_best_weights=True, start_from_epoch=kl_warmup_epochs
        )
    schedules = [KLWarmup(kl_warmup_epochs)] if kl_warmup_epochs else []
    budget = None
    if time_budget is not None:  # the budget, not the epochs, then decays the rate
        budget = TimeBudget(time_budget, lr_schedule, min_lr_fraction=min_lr_fraction)
        schedules += [budget, BudgetProgress(budget)]
    elif lr_schedule != "constant":
        schedules.append(LearningRateDecay(lr_schedule, epochs, min_lr_fraction=min_lr_fraction))
    return schedules, stopper, budget


def _fit_guarded(model, guard: _RunGuard, x: Any, **fit_kwargs: Any) -> None:
    """`model.fit` with SIGINT stopping at the end of a batch; the history keeps only whole epochs."""
    if isinstance(x, (tf.data.Dataset, tf.distribute.DistributedDataset)):
        fit_kwargs["batch_size"] = None  # a dataset comes in batches
    # A copy: `VAE.fit` extends the model's history in place, and the `finally` below
    # rebuilds it from this and the guard's completed epochs.
    history_before = {k: list(v) for k, v in model.training_history.items()}
    handler_installed = threading.current_thread() is threading.main_thread()
    if handler_installed:

        def on_sigint(signum, frame):
            guard.interrupted = True
            model.stop_training = True  # Keras checks this after every batch

        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        model.fit(x, **fit_kwargs)
    finally:
        if handler_installed:
            signal.signal(signal.SIGINT, previous)
        # Only completed epochs enter the history (fit also logs a stopped, partial one).
        model.training_history = {
            k: history_before.get(k, []) + guard.epoch_logs.get(k, [])
            for k in dict.fromkeys([*history_before, *guard.epoch_logs])
        }
