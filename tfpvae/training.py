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

import dataclasses
import io
import json
import math
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np

from tfpvae._keras import tf, tfk
from tfpvae._validation import check_choice, check_float, check_int
from tfpvae.schedules import DEFAULT_MIN_LR_FRACTION, LR_SCHEDULES, KLWarmup, LearningRateDecay
from tfpvae.serialization import _atomic_write

CHECKPOINT_FILE = "checkpoint.npz"
CHECKPOINT_FORMAT = 1


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
    """Keras' early stopping, except that `train` restores the best weights itself.

    Keras restores them in `on_train_end`, before `train` has saved an interrupted run's
    checkpoint, which would then pair the best weights with the last epoch's optimizer
    state and epoch count.
    """

    def on_train_end(self, logs=None):
        pass


def _state_arrays(model) -> dict[str, np.ndarray]:
    arrays = {f"w{i:04d}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    if model.optimizer is not None:
        # Build unconditionally (Keras returns at once when built): a new optimizer already
        # holds its iteration count, so "no variables yet" is not "unbuilt", and Adam's
        # moments would be left out of checkpoints and restores.
        model.optimizer.build(model.trainable_variables)
        arrays.update({f"o{i:04d}": v.numpy() for i, v in enumerate(model.optimizer.variables)})
    arrays["rng_state"] = model.binarize_rng.state.numpy()
    return arrays


def save_checkpoint(model, run_dir: str | Path, epoch: int) -> Path:
    """Atomically writes the full training state of `model` after `epoch` epochs.

    Args:
      model: a compiled `tfpvae.VAE`.
      run_dir: the run folder (created if needed).
      epoch: number of completed epochs the state corresponds to.

    Returns:
      Path of the checkpoint file.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "history": model.training_history,
        "config": model.config.to_dict(),
    }
    arrays = _state_arrays(model)
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

    def write(f):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        f.write(buffer.getvalue())

    path = run_dir / CHECKPOINT_FILE
    _atomic_write(path, write)
    return path


def read_checkpoint_meta(run_dir: str | Path) -> dict[str, Any]:
    """Returns a checkpoint's metadata (epoch, history, config) without building a model."""
    from tfpvae.datasets import load_npz_arrays

    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint in {run_dir}: {CHECKPOINT_FILE} is missing (nothing to resume).")
    arrays = load_npz_arrays(path)
    if "meta_json" not in arrays:
        raise ValueError(f"{path} is not a tfpvae checkpoint (no metadata).")
    meta = json.loads(arrays["meta_json"].tobytes().decode())
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} has checkpoint format {meta.get('format')!r}; expected {CHECKPOINT_FORMAT}.")
    meta["arrays"] = arrays
    return meta


def restore_checkpoint(model, run_dir: str | Path) -> int:
    """Loads weights, optimizer state, RNG state and history into `model`.

    Args:
      model: a compiled `tfpvae.VAE` built from the checkpoint's config.
      run_dir: the run folder holding `checkpoint.npz`.

    Returns:
      The number of completed epochs stored in the checkpoint.
    """
    meta = read_checkpoint_meta(run_dir)
    arrays = meta["arrays"]
    from tfpvae.config import VAEConfig

    # Compared as configs, not dicts: a checkpoint written before a field was added lacks
    # it, and means its default.
    if VAEConfig.from_dict(meta["config"]) != model.config:
        raise ValueError(f"The checkpoint in {run_dir} was written by a model with a different config.")
    weights = [arrays[f"w{i:04d}"] for i in range(len(model.weights))]
    model.set_weights(weights)
    if model.optimizer is None:
        model.compile()
    model.optimizer.build(model.trainable_variables)  # no-op when built; see _state_arrays
    variables = model.optimizer.variables
    saved = sorted(key for key in arrays if key[0] == "o" and key[1:].isdigit())
    if len(saved) != len(variables) or any(arrays[key].shape != tuple(v.shape) for key, v in zip(saved, variables)):
        raise ValueError(
            f"The optimizer state in {run_dir} ({len(saved)} arrays) does not match the model's optimizer "
            f"({len(variables)} variables)."
        )
    for key, v in zip(saved, variables):
        v.assign(arrays[key])
    model.binarize_rng.reset(arrays["rng_state"])
    model.training_history = meta["history"]
    return int(meta["epoch"])


class _RunGuard(tfk.callbacks.Callback):
    """Checkpoints each epoch, watches the loss for NaN/Inf and stops on SIGINT."""

    def __init__(self, run_dir: Path | None, every: int, start_epoch: int) -> None:
        super().__init__()
        self.run_dir, self.every = run_dir, every
        self.completed = self.checkpointed = start_epoch
        self.failure: str | None = None
        self.interrupted = False
        self.epoch_logs: dict[str, list[float]] = {}
        self.good_state: dict[str, np.ndarray] | None = None

    def on_train_begin(self, logs=None):
        self.good_state = _state_arrays(self.model)

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
        self.good_state = _state_arrays(self.model)
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
            save_checkpoint(self.model, self.run_dir, self.completed)
            self.model.save(self.run_dir)
            self.checkpointed = self.completed
        finally:
            self.model.training_history = history

    def restore_good_state(self) -> None:
        state = self.good_state
        self.model.set_weights([state[f"w{i:04d}"] for i in range(len(self.model.weights))])
        for i, v in enumerate(self.model.optimizer.variables):
            v.assign(state[f"o{i:04d}"])
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
) -> TrainingResult:
    """Trains `model` to `epochs` total epochs, checkpointing into `run_dir`.

    Args:
      model: a `tfpvae.VAE` (compiled or not; uncompiled models get Adam at
        `config.learning_rate`, with `clip_norm` if given).
      x: training images, array (n, H, W, C), a `tf.data.Dataset` of batches, or a
        distributed dataset (`tfpvae.distribute.file_dataset`).
      epochs: total number of epochs, counting those of a resumed run.
      batch_size: images per step for array input. Default 128.
      validation_data: images evaluated after each epoch. Default None.
      run_dir: folder for `checkpoint.npz` (the training state of the last completed
        epoch, to resume from) and the model files (`tfpvae.load` gives the model this
        returns: with `early_stopping`, the best epoch's weights). Default None: no files.
      checkpoint_every: epochs between checkpoints; the run's last epoch is always
        checkpointed. Default 1.
      resume: continue from `run_dir`'s checkpoint (weights, optimizer, RNG, history).
        Default False.
      clip_norm: clip the global gradient norm to this value. Default None (no clipping).
      seed: seeds shuffling (`tf.random.set_seed`) for reproducible runs; weight
        initialisation and binarisation follow `model.config.seed`. Default None.
      verbose: Keras verbosity: "auto", 0, 1 (progress bar) or 2 (a line per epoch).
      callbacks: more Keras callbacks. Default None.
      kl_warmup_epochs: raise `model.kl_weight` linearly over this many epochs, from
        beta / kl_warmup_epochs in the first to `config.beta` (`tfpvae.schedules.KLWarmup`).
        Default 0: no warm-up, the weight stays as it is.
      lr_schedule: per-epoch learning rate (`tfpvae.schedules.LearningRateDecay`):
        "constant" (default: the optimizer's rate is left alone), "cosine" or
        "exponential", which decay from `config.learning_rate` at the first epoch to
        `min_lr_fraction * config.learning_rate` at epoch `epochs`. The curve spans
        `epochs`: resume with the same `epochs` to continue it unchanged.
      min_lr_fraction: the decaying schedules' final rate as a fraction of the initial
        one, in (0, 1]. Default 0.05 (1/20).
      early_stopping: patience in epochs: stop when the validation loss has not improved
        for this many epochs, and leave the model with the weights of the epoch with the
        lowest validation loss (`TrainingResult.best_epoch`; the checkpoint keeps the last
        epoch's state, so `resume` continues where training stopped). Epochs of the KL
        warm-up are not compared, since their loss has a smaller KL weight. Needs
        `validation_data`, which must then not be the test set you report. Default None.
      steps_per_epoch: batches per epoch, for a repeating dataset (as
        `tfpvae.distribute.file_dataset` returns for several workers). Default None: one
        pass over `x`.

    Returns:
      A `TrainingResult`.

    Raises:
      TrainingDivergedError: the loss became NaN/Inf; the last good weights are restored
        in `model` and, with a `run_dir`, saved there.
    """
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every")
    if steps_per_epoch is not None:
        steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch")
    if clip_norm is not None:
        clip_norm = check_float(clip_norm, "clip_norm", minimum=0.0, min_inclusive=False)
    if resume and run_dir is None:
        raise ValueError("`resume=True` needs the `run_dir` to resume from.")
    kl_warmup_epochs = check_int(kl_warmup_epochs, "kl_warmup_epochs", minimum=0)
    lr_schedule = check_choice(lr_schedule, "lr_schedule", LR_SCHEDULES)
    stopper = None
    if early_stopping is not None:
        early_stopping = check_int(early_stopping, "early_stopping")
        if validation_data is None:
            raise ValueError("`early_stopping` needs `validation_data` to monitor (a split held out from training).")
        stopper = _EarlyStopping(
            monitor="val_loss", patience=early_stopping, restore_best_weights=True, start_from_epoch=kl_warmup_epochs
        )
    min_lr_fraction = check_float(min_lr_fraction, "min_lr_fraction", minimum=0.0, maximum=1.0, min_inclusive=False)
    schedules = [KLWarmup(kl_warmup_epochs)] if kl_warmup_epochs else []
    if lr_schedule != "constant":
        schedules.append(LearningRateDecay(lr_schedule, epochs, min_lr_fraction=min_lr_fraction))
    run_dir = None if run_dir is None else Path(run_dir)
    if seed is not None:
        tf.random.set_seed(check_int(seed, "seed", minimum=0))
    if model.optimizer is None:
        model.compile(tfk.optimizers.Adam(model.config.learning_rate, global_clipnorm=clip_norm))
    start = restore_checkpoint(model, run_dir) if resume else 0
    if start >= epochs:
        # Nothing left to train: the result is the finished run's model (with early stopping,
        # its best epoch's weights), which its folder holds, not the checkpoint's last epoch.
        from tfpvae.serialization import load

        model.set_weights(load(run_dir).get_weights())
        return TrainingResult(start, model.training_history)

    from tfpvae.distribute import is_chief

    # With several workers only the chief writes: the others would race on the same files.
    # The model's strategy, not the current one: `train` is called outside `strategy.scope()`.
    guard = _RunGuard(run_dir if is_chief(model.distribute_strategy) else None, checkpoint_every, start)
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
        model.fit(
            x,
            epochs=epochs,
            initial_epoch=start,
            batch_size=None if isinstance(x, (tf.data.Dataset, tf.distribute.DistributedDataset)) else batch_size,
            steps_per_epoch=steps_per_epoch,
            validation_data=validation_data,
            callbacks=[guard, *schedules, *([stopper] if stopper else []), *(callbacks or [])],
            verbose=verbose,
        )
    finally:
        if handler_installed:
            signal.signal(signal.SIGINT, previous)
        # Only completed epochs enter the history (fit also logs a stopped, partial one).
        model.training_history = {
            k: history_before.get(k, []) + guard.epoch_logs.get(k, [])
            for k in dict.fromkeys([*history_before, *guard.epoch_logs])
        }

    if guard.failure:
        guard.restore_good_state()
        if kl_warmup_epochs:
            model.kl_weight.assign(model.config.beta)  # as KLWarmup leaves it; a resume sets it again
        where = ""
        if guard.run_dir is not None:
            guard.save(merge_history=False)
            where = f" and saved to {run_dir}"
        raise TrainingDivergedError(
            f"Training stopped: {guard.failure}. Restored the weights of epoch {guard.completed}{where}. "
            "Try a lower learning rate, clip_norm, or a larger posterior_scale_floor."
        )
    if guard.run_dir is not None and (guard.interrupted or guard.checkpointed < guard.completed):
        # The last epoch whatever `checkpoint_every`, or after an interrupt the weights as
        # they are: no finished batch is lost.
        save_checkpoint(model, guard.run_dir, guard.completed)
    best_epoch = None
    if stopper is not None and stopper.best_weights is not None:
        model.set_weights(stopper.best_weights)
        best_epoch = stopper.best_epoch + 1
    if guard.run_dir is not None:
        # The run folder's model is the one returned: the best epoch's weights, and the KL
        # weight a warm-up cut short by the end of the run leaves at beta (KLWarmup).
        model.save(guard.run_dir)
    return TrainingResult(guard.completed, model.training_history, guard.interrupted, best_epoch)
