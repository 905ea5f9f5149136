"""The training state's file, `checkpoint.npz`: what a run folder resumes from.

One file, written atomically (temporary file, then rename), holds the full state after a
number of completed epochs as plain arrays: model weights, optimizer variables, the
binarisation RNG state, early stopping's state and best weights when the run has it, and
JSON metadata (epoch count, history, config, the time budget spent). Nothing in it is
executed or unpickled on reading. `tfpvae.training` writes it and resumes from it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tfpvae._io import StorageError, atomic_write, load_npz_arrays, make_folder, numbered_arrays, numbered_keys
from tfpvae.config import VAEConfig
from tfpvae.schedules import TimeBudget
from tfpvae.serialization import MODEL_FILES, is_history

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "read_checkpoint_meta",
    "restore_checkpoint",
    "restore_training_state",
    "save_checkpoint",
    "saving",
    "state_arrays",
]

CHECKPOINT_FILE = "checkpoint.npz"
CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A run folder's checkpoint is not one tfpvae wrote, or does not fit the model resuming from it."""


STOPPER_FIELDS = {"best_epoch": int, "wait": int, "stopped": bool}  # and "best": a float or None
# An early stopper's state and its best weights (None where it kept none), as a checkpoint holds them.
StopperRecord = tuple[dict[str, Any], "list[np.ndarray] | None"]


def state_arrays(model) -> dict[str, np.ndarray]:
    """The training state of `model` as named arrays: weights "w0000"..., optimizer variables
    "o0000"... and the binarisation RNG's "rng_state"."""
    arrays = numbered_arrays(model.get_weights(), "w")
    if model.optimizer is not None:
        # Build unconditionally (Keras returns at once when built): a new optimizer already
        # holds its iteration count, so "no variables yet" is not "unbuilt", and Adam's
        # moments would be left out of checkpoints and restores.
        model.optimizer.build(model.trainable_variables)
        arrays.update(numbered_arrays([v.numpy() for v in model.optimizer.variables], "o"))
    arrays["rng_state"] = model.binarize_rng.state.numpy()
    return arrays


def save_checkpoint(
    model,
    run_dir: str | Path,
    epoch: int,
    train_seconds: float | None = None,
    early_stopping: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None,
) -> Path:
    """Atomically writes the full training state of `model` after `epoch` epochs.

    Args:
      model: a compiled `tfpvae.VAE`.
      run_dir: the run folder (created if needed).
      epoch: number of completed epochs the state corresponds to.
      train_seconds: seconds of a time budget spent so far (`train(time_budget=...)`),
        which a resumed run continues from. None: not recorded.
      early_stopping: the early stopper's state (metadata, best-weight arrays) for a
        resumed run to continue from. None: the run has no early stopping.

    Returns:
      Path of the checkpoint file.
    """
    run_dir = make_folder(run_dir)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "history": model.training_history,
        "config": model.config.to_dict(),
    }
    if train_seconds is not None:
        meta["train_seconds"] = float(train_seconds)
    arrays = state_arrays(model)
    if early_stopping is not None:
        meta["early_stopping"], best_weights = early_stopping
        arrays.update(best_weights)
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

    def write(f):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        f.write(buffer.getvalue())

    path = run_dir / CHECKPOINT_FILE
    atomic_write(path, write)
    return path


def read_checkpoint_meta(run_dir: str | Path) -> dict[str, Any]:
    """Returns a checkpoint's metadata (epoch, history, config, and "train_seconds" where
    recorded) without building a model."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint in {run_dir}: {CHECKPOINT_FILE} is missing (nothing to resume).")
    try:
        arrays = load_npz_arrays(path)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    if "meta_json" not in arrays:
        raise CheckpointError(f"{path} is not a tfpvae checkpoint (no metadata).")
    try:
        meta = json.loads(arrays["meta_json"].tobytes().decode())
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, nested too deeply
        raise CheckpointError(f"{path} has metadata that is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path} has checkpoint format {found!r}; expected {CHECKPOINT_FORMAT}.")
    epoch, history, config = meta.get("epoch"), meta.get("history"), meta.get("config")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(f"{path} has epoch {epoch!r}; expected a count of completed epochs (an int >= 0).")
    if not isinstance(config, dict) or not isinstance(history, dict):
        raise CheckpointError(f"{path} lacks the config or history a tfpvae checkpoint holds.")
    if not is_history(history):
        raise CheckpointError(f"{path} has a history that is not a dict of lists of numbers.")
    seconds = meta.get("train_seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0.0 <= seconds < math.inf:
        raise CheckpointError(f"{path} has train_seconds {seconds!r}; expected the seconds spent (a number >= 0).")
    meta["arrays"] = arrays
    return meta


def restore_checkpoint(model, run_dir: str | Path, budget: TimeBudget | None = None) -> int:
    """Loads weights, optimizer state, RNG state and history into `model`.

    Args:
      model: a compiled `tfpvae.VAE` built from the checkpoint's config.
      run_dir: the run folder holding `checkpoint.npz`.
      budget: a time budget that continues from the seconds the checkpoint records as
        spent (0 where it records none: resume with the budget the run was trained with).

    Returns:
      The number of completed epochs stored in the checkpoint.
    """
    return restore_training_state(model, run_dir, budget)[0]


def restore_training_state(
    model, run_dir: str | Path, budget: TimeBudget | None = None
) -> tuple[int, StopperRecord | None]:
    """`restore_checkpoint`, and the early stopper's state and best weights it holds (None: the
    run had no early stopping, or a tfpvae before 0.2 wrote it)."""
    meta = read_checkpoint_meta(run_dir)
    arrays = meta["arrays"]
    path = Path(run_dir) / CHECKPOINT_FILE
    # Compared as configs, not dicts: a checkpoint written before a field was added lacks
    # it, and means its default.
    try:
        config = VAEConfig.from_dict(meta["config"])
    except ValueError as err:  # UnregisteredNameError too: the user's module was not imported
        raise CheckpointError(f"{path} holds a config this tfpvae cannot build: {err}") from None
    except TypeError as err:
        raise CheckpointError(f"{path} holds a config that is not valid: {err}") from None
    if config != model.config:
        raise CheckpointError(f"The checkpoint in {run_dir} was written by a model with a different config.")
    keys = numbered_keys(len(model.weights), "w")
    expected = {k: (tuple(w.shape), "f") for k, w in zip(keys, model.weights)}
    expected["rng_state"] = (tuple(model.binarize_rng.state.shape), "iu")
    wrong = [k for k, (shape, kinds) in expected.items() if k not in arrays or arrays[k].shape != shape]
    wrong += [k for k, (_, kinds) in expected.items() if k in arrays and arrays[k].dtype.kind not in kinds]
    if wrong:
        raise CheckpointError(f"{path} does not hold the state of this model: {wrong[0]} is missing or does not fit.")
    model.set_weights([arrays[k] for k in keys])
    if model.optimizer is None:
        model.compile()
    model.optimizer.build(model.trainable_variables)  # no-op when built; see state_arrays
    variables = model.optimizer.variables
    saved = sorted(key for key in arrays if key[0] == "o" and key[1:].isdigit())
    if len(saved) != len(variables) or any(
        arrays[key].shape != tuple(v.shape) or arrays[key].dtype.kind not in "fiu" for key, v in zip(saved, variables)
    ):
        raise CheckpointError(
            f"The optimizer state in {run_dir} ({len(saved)} arrays) does not match the model's optimizer "
            f"({len(variables)} variables)."
        )
    for key, v in zip(saved, variables):
        v.assign(arrays[key])
    model.binarize_rng.reset(arrays["rng_state"])
    model.training_history = meta["history"]
    if budget is not None:
        budget.spent = float(meta.get("train_seconds", 0.0))
    return int(meta["epoch"]), _stopper_record(meta, model, path)


def _stopper_record(meta: dict[str, Any], model, path: Path) -> StopperRecord | None:
    """A checkpoint's early-stopping state and best weights (None where it has none), checked."""
    state = meta.get("early_stopping")
    if state is None:
        return None
    arrays, keys = meta["arrays"], numbered_keys(len(model.weights), "b")
    kept = [key in arrays for key in keys]
    valid = isinstance(state, dict) and all(type(state.get(k)) is t for k, t in STOPPER_FIELDS.items())
    valid = valid and (state["best"] is None or type(state["best"]) in (int, float)) and all(kept) == any(kept)
    if not valid or not all(
        arrays[key].shape == tuple(w.shape) and arrays[key].dtype.kind == "f"
        for key, w in zip(keys, model.weights)
        if key in arrays
    ):
        raise CheckpointError(f"{path} holds an early-stopping record that is not valid.")
    return state, [arrays[key] for key in keys] if all(kept) else None


def kept_in(run_dir: Path) -> str:
    """What a run folder still holds after a failed write, for the error message."""
    try:
        epoch = int(read_checkpoint_meta(run_dir)["epoch"])
    except (OSError, ValueError):
        return f"{run_dir} holds no checkpoint yet"
    model = " and a complete model" if all((run_dir / name).is_file() for name in MODEL_FILES) else ""
    return f"{run_dir} keeps its checkpoint of epoch {epoch}{model}: resume from it once the file system accepts writes"


@contextlib.contextmanager
def saving(run_dir: Path) -> Iterator[None]:
    """Turns a failed write into a `StorageError` that also says what the run folder still holds."""
    try:
        yield
    except StorageError as err:
        raise err.keeping(kept_in(run_dir)) from err
