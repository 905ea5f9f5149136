"""A run folder: what `tfpvae train` writes, from Python as from the command line.

`train_run` trains a model into a folder and leaves there everything a run should leave:
the model (`tfpvae.load(folder)`), `checkpoint.npz` to resume from, the settings
(`train_args.json`), `history.csv`, the main figures as PNGs, and the scores of held-out
images (`scores.csv`, one row per image) with their summary (`evaluation.json`).
`resumed_settings` says which settings a resumed run keeps from its folder.

Examples:
  >>> from tfpvae.runs import RunSettings, train_run
  >>> result = train_run("runs/digits", RunSettings(dataset="digits", epochs=5))
  >>> result.epochs_completed
  5
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tfpvae._io import atomic_write_text
from tfpvae._validation import check_choice, check_float
from tfpvae.bulk import iter_array_batches, score_to_csv
from tfpvae.config import PRECISIONS, VAEConfig
from tfpvae.serialization import MODEL_FILES
from tfpvae.subsets import spread
from tfpvae.write_guard import claim_folder, remove_files

TRAIN_ARGS_FILE = "train_args.json"
# A run folder written before a setting existed lacks it in train_args.json and used its
# default; these were there from the first version on.
_ALWAYS_WRITTEN = ("dataset", "data_dir", "limit", "batch_size", "checkpoint_every", "clip_norm", "seed", "epochs")
# What a run writes into its folder: any of them makes a folder taken, and an overwrite
# removes them all before the new run starts.
FIGURE_FILES = (
    "samples.png",
    "reconstructions.png",
    "training_curves.png",
    "manifold.png",
    "latent_scatter.png",
    "interpolation.png",
    "pseudo_inputs.png",
    "evolution.gif",
    "reconstructions_by_epoch.png",
)
_SCORE_FILES = ("scores.csv", "scores.csv.json", "evaluation.json")
RUN_OUTPUTS = (TRAIN_ARGS_FILE, "checkpoint.npz", *MODEL_FILES, "history.csv", *_SCORE_FILES, *FIGURE_FILES)
# What makes a folder a run `train_run` does not write over unasked: settings alone are a
# run killed before its first checkpoint, with nothing to keep.
_TAKEN_IF = tuple(name for name in RUN_OUTPUTS if name != TRAIN_ARGS_FILE)
# Share of the training images held out to monitor early stopping when the dataset has no
# valid split of its own.
HOLDOUT_FRACTION = 0.1
# Images of a file input (validation_input, else input) held in memory for the figures and scores.
FILE_EVAL_IMAGES = 2000
# The fixed binarisation a dynamically binarised model's test images are scored with, the
# same draw as `tfpvae evaluate --binarize-seed 0`.
SCORES_BINARIZE_SEED = 0
# Importance samples per image of scores.csv.
SCORES_NUM_SAMPLES = 100


class RunFolderError(ValueError):
    """A run folder holds settings that tfpvae train did not write."""


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How a run trains; stored in its folder so that a resumed run continues the same way.

    Attributes:
      dataset: a named dataset of `tfpvae.datasets` (or give `input`). Default None.
      input: images streamed from files (file, folder or glob; see `tfpvae.streaming`).
      validation_input: held-out images (as `input`) validated each epoch and scored.
      data_dir: folder of the dataset files. Default None ($TFPVAE_DATA_DIR, Keras cache).
      limit: use only the first N images of each split. Default None (all).
      batch_size: images per step. Default 128.
      checkpoint_every: epochs between checkpoints; the last is always written. Default 1.
      clip_norm: clip the global gradient norm. Default None.
      seed: seed of initialisation, shuffling and binarisation. Default None.
      kl_warmup_epochs: epochs of linear KL warm-up. Default 0.
      lr_schedule: "constant", "linear", "cosine" or "exponential". Default "constant".
      early_stopping: patience in epochs; validates on a split held out from training
        (binarized_mnist's valid split, else the last 10% of the training images).
      validation_images: validate on only N images each epoch, 0 for none. Default None (all).
      epochs: total epochs of the run. Default 10.
      precision: the training steps' arithmetic, "float32", "bfloat16" or "auto" (see
        `tfpvae.VAE.compile`). Default "float32".
      time_budget: seconds of training after which the run stops (`tfpvae.train`'s
        `time_budget`; `lr_schedule` then decays over the budget). `epochs` still caps the
        run: raise it (the command line sets no cap) so that the budget ends it and the
        rate reaches its floor. Default None (none).
    """

    dataset: str | None = None
    input: str | None = None
    validation_input: str | None = None
    data_dir: str | None = None
    limit: int | None = None
    batch_size: int = 128
    checkpoint_every: int = 1
    clip_norm: float | None = None
    seed: int | None = None
    kl_warmup_epochs: int = 0
    lr_schedule: str = "constant"
    early_stopping: int | None = None
    validation_images: int | None = None
    epochs: int = 10
    precision: str = "float32"
    time_budget: float | None = None

    def __post_init__(self) -> None:
        check_choice(self.precision, "precision", PRECISIONS)
        if self.time_budget is not None:
            check_float(self.time_budget, "time_budget", minimum=0.0, min_inclusive=False)
        if not (self.dataset or self.input):
            raise ValueError("`dataset` or `input` is required: the images to train on.")
        if self.input and (self.dataset or self.limit):
            name = "dataset" if self.dataset else "limit"
            raise ValueError(f"`input` streams its own files; `{name}` applies to named datasets only.")
        if self.validation_images == 0 and self.early_stopping:
            raise ValueError("`validation_images` 0 turns validation off, which `early_stopping` needs.")
        if self.input and self.early_stopping and not self.validation_input:
            raise ValueError("`early_stopping` with `input` needs `validation_input` images to monitor.")


@dataclasses.dataclass
class RunResult:
    """What `train_run` did.

    Attributes:
      run_dir: the run folder.
      epochs_completed: total epochs trained, over all resumed runs.
      final_metrics: each metric of the last epoch.
      best_epoch: with early stopping, the epoch whose weights the model holds.
      interrupted: SIGINT stopped the run (saved; resume it).
      chief: False on the non-chief workers of a multi-worker run, which write nothing.
      model: the trained `tfpvae.VAE`.
    """

    run_dir: Path
    epochs_completed: int
    final_metrics: dict[str, float]
    best_epoch: int | None
    interrupted: bool
    chief: bool
    model: Any


def read_settings(run_dir: str | os.PathLike) -> RunSettings:
    """The settings stored in a run folder's train_args.json.

    Raises:
      FileNotFoundError: the folder has no train_args.json (not a run folder).
      RunFolderError: the file is not valid JSON, or lacks settings every run folder has.
    """
    path = Path(run_dir) / TRAIN_ARGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {TRAIN_ARGS_FILE}: it is not a run folder of tfpvae train.")
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunFolderError(
            f"{path} is not valid JSON ({err}): it was damaged or not written by tfpvae train."
        ) from None
    if not isinstance(saved, dict):
        raise RunFolderError(f"{path} holds a {type(saved).__name__}, not the settings object tfpvae train writes.")
    missing = [k for k in _ALWAYS_WRITTEN if k not in saved]
    if missing:
        raise RunFolderError(f"{path} lacks {', '.join(missing)}: not written by tfpvae train.")
    known = {f.name for f in dataclasses.fields(RunSettings)}
    return RunSettings(**{k: v for k, v in saved.items() if k in known})


def resumed_settings(
    run_dir: str | os.PathLike, requested: dict[str, Any] | None = None
) -> tuple[RunSettings, VAEConfig, list[tuple[str, Any, Any]]]:
    """The settings and model config a resumed run keeps, and the requests it ignores.

    A resumed run keeps its own settings and config, except `epochs`, which may be raised
    (or lowered to no fewer than the epochs done), and `time_budget`, a new total of
    seconds (the checkpoint records those spent).

    Args:
      run_dir: a run folder with a checkpoint.
      requested: settings or config fields asked for now (e.g. the flags typed), by name.

    Returns:
      (settings, config, ignored), `ignored` a list of (name, requested value, kept value)
      for each request that differs from what the run keeps.
    """
    return _resume(run_dir, requested)[:3]


def _resume(run_dir: str | os.PathLike, requested: dict[str, Any] | None) -> tuple:
    """`resumed_settings`, plus the epochs the checkpoint holds and the stored total, from one read of each file."""
    from tfpvae.training import read_checkpoint_meta

    stored = read_settings(run_dir)
    try:
        meta = read_checkpoint_meta(run_dir)
    except FileNotFoundError:
        raise RunFolderError(
            f"{run_dir} holds the settings of a run stopped before its first checkpoint, and nothing to resume: "
            "start that run again, without resuming (its folder is not refused)."
        ) from None
    config = VAEConfig.from_dict(meta["config"])
    requested = dict(requested or {})
    epochs = requested.pop("epochs", None) or stored.epochs
    time_budget = requested.pop("time_budget", None) or stored.time_budget
    kept = {**dataclasses.asdict(stored), **config.to_dict()}
    ignored = [(k, v, kept[k]) for k, v in requested.items() if k in kept and _differs(v, kept[k])]
    resumed = dataclasses.replace(stored, epochs=epochs, time_budget=time_budget)
    return resumed, config, ignored, int(meta["epoch"]), stored


def _differs(a: Any, b: Any) -> bool:
    """Whether a requested value differs from a stored one (JSON turns tuples into lists)."""
    return (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b)


def train_run(
    run_dir: str | os.PathLike,
    settings: RunSettings | None = None,
    config: VAEConfig | None = None,
    *,
    resume: bool = False,
    epochs: int | None = None,
    time_budget: float | None = None,
    strategy: str = "default",
    evolution: bool = False,
    tensorboard: str | None = None,
    score_limit: int = 1000,
    verbose: int = 1,
    note: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> RunResult:
    """Trains a model into the folder `run_dir` and writes its figures and scores.

    Args:
      run_dir: the run folder (created if needed), locked while the run writes it.
      settings: how to train (`RunSettings`). With `resume`, the folder's own settings are
        used (see `resumed_settings`) and this may be None.
      config: the model's hyperparameters; the image shape is taken from the data.
        None: `VAEConfig()`. Ignored with `resume` (the checkpoint's config is kept).
      resume: continue the run in `run_dir` from its last checkpoint.
      epochs: with `resume`, the run's new total of epochs. None: its own.
      time_budget: with `resume`, the run's new total time budget (seconds). None: its own.
      strategy: "default", "mirrored" or "multiworker" (see `tfpvae.distribute`).
      evolution: also write evolution.gif and reconstructions_by_epoch.png.
      tensorboard: folder for TensorBoard logs.
      score_limit: test images scored into scores.csv, evenly spread.
      verbose: 1 a progress bar per epoch, 2 a line per epoch, 0 silent.
      note: called with one-line notes (a figure skipped, ...). None: print to stderr.
      overwrite: train into a folder that holds another run or model: its files
        (`RUN_OUTPUTS`) are removed first; other files are left alone.

    Returns:
      what the run did: its folder, epochs, final metrics and the trained model.

    Raises:
      TrainingDivergedError: the loss became NaN or Inf (the last good state is saved).
      OutputExistsError: `run_dir` holds a run or model; neither `resume` nor `overwrite`.
      FolderInUseError: another process is writing to `run_dir` (the message names it).
      StorageError: a write failed; the folder keeps its last complete checkpoint and model.
    """
    from tfpvae.distribute import is_chief, make_strategy
    from tfpvae.training import saving, train

    note = note or (lambda text: print(f"tfpvae: note: {text}", file=sys.stderr))
    run = Path(run_dir)
    if not resume and settings is None:
        raise ValueError("`settings` is required unless `resume=True`.")
    dist = make_strategy(strategy)
    chief = is_chief(dist)  # with several workers only the chief writes the run folder
    if resume:
        settings, config, _, done, stored = _resume(run, {"epochs": epochs, "time_budget": time_budget})
    data = _training_data(settings, dist)  # before the folder: unreadable data leaves none behind
    claim = contextlib.nullcontext([])
    if chief:
        claim = claim_folder(
            run, _TAKEN_IF, what="a trained model or run", argument="run_dir", overwrite=overwrite, resume=resume
        )
    with claim as found, saving(run):
        if resume and chief:
            _prepare_resume(run, settings, stored, done)
        elif not resume:
            config = config or VAEConfig()
            seed = config.seed if settings.seed is None else settings.seed
            config = config.replace(input_shape=data.input_shape, seed=seed)
            if chief:
                # An overwrite starts clean: no figure, score or checkpoint of the old run is left to mix in.
                remove_files(run, found)
                _write_settings(run, settings)
        model = _compiled_model(config, settings, dist)
        callbacks = _extra_callbacks(data, settings, evolution, tensorboard)
        result = train(
            model,
            data.train,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            validation_data=data.validation,
            run_dir=run,
            checkpoint_every=settings.checkpoint_every,
            resume=resume,
            clip_norm=settings.clip_norm,
            seed=settings.seed,
            verbose=verbose,
            callbacks=callbacks,
            kl_warmup_epochs=settings.kl_warmup_epochs,
            lr_schedule=settings.lr_schedule,
            early_stopping=settings.early_stopping,
            steps_per_epoch=data.steps_per_epoch,
            time_budget=settings.time_budget,
        )
        if chief:
            _write_outputs(model, run, data, settings, callbacks, result.interrupted, score_limit, note)
    final = {k: v[-1] for k, v in model.training_history.items() if v}
    return RunResult(run, result.epochs_completed, final, result.best_epoch, result.interrupted, chief, model)


def _prepare_resume(run: Path, settings: RunSettings, stored: RunSettings, done: int) -> None:
    """The run folder's settings and scores, before a resume trains on from epoch `done`."""
    if settings != stored and settings.epochs >= done:
        _write_settings(run, settings)  # the new totals, so a later resume continues to them
    if settings.epochs > done or settings.time_budget:
        # The scores describe epoch `done`'s model, which training now replaces: written
        # again when the run finishes, never left beside a newer model.
        remove_files(run, _SCORE_FILES)


def _compiled_model(config: VAEConfig, settings: RunSettings, strategy: Any) -> Any:
    """A new `VAE` of `config` in `strategy`'s scope, compiled with the run's optimizer and precision."""
    from tfpvae._keras import tfk
    from tfpvae.model import VAE

    with strategy.scope():
        model = VAE(config)
        optimizer = tfk.optimizers.Adam(config.learning_rate, global_clipnorm=settings.clip_norm)
        model.compile(optimizer, precision=settings.precision)
    return model


def _write_settings(run: Path, settings: RunSettings) -> None:
    atomic_write_text(run / TRAIN_ARGS_FILE, json.dumps(dataclasses.asdict(settings), indent=2))


@dataclasses.dataclass
class _RunData:
    """The data of a run: what it trains and validates on, and held-out images for its outputs."""

    train: Any
    validation: Any
    input_shape: tuple[int, int, int]
    steps_per_epoch: int | None
    x_test: np.ndarray
    y_test: np.ndarray | None


def _training_data(settings: RunSettings, strategy: Any) -> _RunData:
    """Loads (or opens streams of) the images `settings` names."""
    if settings.input:
        return _file_data(settings, strategy)
    from tfpvae.datasets import load

    (x_train, _), (x_test, y_test) = load(settings.dataset, settings.data_dir)
    if settings.limit:
        x_train, x_test = x_train[: settings.limit], x_test[: settings.limit]
        y_test = None if y_test is None else y_test[: settings.limit]
    x_valid = x_test
    if settings.early_stopping:
        x_train, x_valid = _early_stopping_split(settings, x_train)
    if settings.validation_images is not None:
        # Validation is a full forward pass per epoch (10,000 test images cost MNIST runs about
        # a sixth of their epoch time), so long runs may monitor a subset or nothing.
        x_valid = spread(x_valid, None, settings.validation_images)[0] if settings.validation_images else None
    return _RunData(x_train, x_valid, tuple(x_train.shape[1:]), None, x_test, y_test)


def _early_stopping_split(settings: RunSettings, x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(training images, validation images) for early stopping: never the test split."""
    from tfpvae.datasets import load_split

    if settings.dataset == "binarized_mnist":
        x_valid = load_split(settings.dataset, "valid", settings.data_dir)[0][: settings.limit]
        return x_train, x_valid
    n_valid = max(1, int(round(HOLDOUT_FRACTION * len(x_train))))
    if len(x_train) - n_valid < 1:
        raise ValueError(f"`early_stopping` needs at least 2 training images to hold some out; got {len(x_train)}.")
    return x_train[:-n_valid], x_train[-n_valid:]


def _file_data(settings: RunSettings, strategy: Any) -> _RunData:
    """Training data streamed from `input`; at most `FILE_EVAL_IMAGES` held-out images in memory."""
    from tfpvae.distribute import file_dataset
    from tfpvae.streaming import iter_batches, stream

    data, steps, shape = file_dataset(
        settings.input, global_batch_size=settings.batch_size, strategy=strategy, seed=settings.seed
    )
    held_out = settings.validation_input or settings.input
    first = next(iter_batches(held_out, batch_size=FILE_EVAL_IMAGES, image_shape=shape))
    valid = None
    if settings.validation_input and settings.validation_images != 0:
        valid = stream(settings.validation_input, image_shape=shape).map(lambda e: e["image"])
        if settings.validation_images:
            valid = valid.take(settings.validation_images)  # the first N: a stream has no "evenly spread"
        valid = valid.batch(settings.batch_size)
    labels = first.labels if first.labels is not None and bool((first.labels >= 0).all()) else None
    return _RunData(data, valid, shape, steps, first.images, labels)


def _extra_callbacks(data: _RunData, settings: RunSettings, evolution: bool, tensorboard: str | None) -> list:
    """The LatentEvolution recorder (first, when asked) and the TensorBoard logger."""
    callbacks = []
    seed = settings.seed or 0
    if evolution:
        from tfpvae.evolution import LatentEvolution

        callbacks.append(LatentEvolution(*spread(data.x_test, data.y_test, 1000)[:2], seed=seed))
    if tensorboard:
        from tfpvae.tensorboard import TensorBoardLogger

        callbacks.append(TensorBoardLogger(tensorboard, images=spread(data.x_test, None, 8)[0], seed=seed))
    return callbacks


def _write_outputs(model, run: Path, data: _RunData, settings: RunSettings, callbacks, interrupted, limit, note):
    """history.csv, the figures, the evolution files and (for a finished VAE) the scores."""
    from tfpvae import plots
    from tfpvae.evolution import LatentEvolution

    write_history_csv(model.training_history, run / "history.csv")
    write_figures(model, data.x_test, data.y_test, run, settings.seed or 0, note)
    for evolution in (c for c in callbacks if isinstance(c, LatentEvolution)):
        if not evolution.epochs:  # a finished run resumed, or stopped before its first epoch
            note("no evolution.gif: no epoch was trained in this call")
            continue
        evolution.save_gif(run / "evolution.gif")
        plots.save_figure(evolution.reconstructions_figure(), run / "reconstructions_by_epoch.png")
    if settings.input and not settings.validation_input:
        note("no scores.csv: pass --validation-input to score held-out images")
    elif model.config.model_type == "vae" and not interrupted:
        write_scores(model, data.x_test, data.y_test, run, limit, split_limit=settings.limit)


def write_history_csv(history: dict[str, list[float]], path: str | os.PathLike) -> None:
    """Writes per-epoch metrics as CSV: a column `epoch` (1-based), then one per metric."""
    keys = list(history)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["epoch", *keys])
    for i in range(len(history[keys[0]]) if keys else 0):
        writer.writerow([i + 1, *(history[k][i] for k in keys)])
    atomic_write_text(path, text.getvalue())


def write_figures(model, x_test, y_test, run: Path, seed: int, note: Callable[[str], None]) -> None:
    """The main figures of a trained model, as PNGs in its run folder."""
    from tfpvae import plots
    from tfpvae.figures import make_figure, min_images, needs_data

    kinds = {"samples": "samples", "reconstructions": "reconstructions", "curves": "training_curves"}
    if model.config.model_type == "vae":
        kinds.update({"manifold": "manifold", "scatter": "latent_scatter", "interpolation": "interpolation"})
    if hasattr(getattr(model, "prior_layer", None), "pseudo_inputs"):
        kinds["pseudo-inputs"] = "pseudo_inputs"
    x, y, _ = spread(x_test, y_test, 2000)
    for kind, name in kinds.items():
        needed = min_images(kind, model)[0] if needs_data(kind, model) else 0
        if len(x) < needed:  # a tiny --limit: the other figures and the scores still get written
            note(f"{name}.png skipped: it needs >= {needed} test images; got {len(x)}")
            continue
        fig = make_figure(kind, model, x, y, seed=seed, max_points=1000)
        plots.save_figure(fig, run / f"{name}.png")


def write_scores(model, x_test, y_test, run: Path, limit: int, split_limit: int | None = None) -> dict[str, Any]:
    """Scores of `limit` test images, evenly spread over the split, and their summary.

    Writes scores.csv (each image's index in the split as its id) and evaluation.json.

    Returns:
      The summary written to evaluation.json.
    """
    x, y, idx = spread(x_test, y_test, limit)
    # A model trained on Bernoulli draws of grey images models binary images: scoring the grey
    # values themselves gives a cross-entropy, not log p(x), and several nats above it.
    seed = SCORES_BINARIZE_SEED if model.config.binarize == "dynamic" else None
    # Ids are the split indices, so each image's draws (and binarisation) are those of
    # `score --dataset ... --binarize-seed 0`, and rows can be compared.
    batches = (type(b)(b.images, [str(idx[int(i)]) for i in b.ids], b.labels) for b in iter_array_batches(x, y))
    names = ("log_prob", "elbo", "rate", "distortion", "complexity")
    written = score_to_csv(
        model.likelihood,
        batches,
        run / "scores.csv",
        names,
        num_samples=SCORES_NUM_SAMPLES,
        seed=0,
        binarize_seed=seed,
    )
    scores = read_score_columns(run / "scores.csv", ("log_prob", "elbo"))
    n = len(x)
    summary = {
        "split": "test",
        "num_images": n,
        "split_images": len(x_test),  # after the run's limit
        "limit": split_limit,
        "selection": "all" if n == len(x_test) else "evenly spaced (indices in scores.csv)",
        "num_samples": SCORES_NUM_SAMPLES,
        "iwae_nll": float(-scores["log_prob"].mean()),
        "iwae_nll_stderr": float(scores["log_prob"].std(ddof=1) / np.sqrt(n)) if n > 1 else None,
        "elbo": float(scores["elbo"].mean()),
        "binarize_seed": seed,
        "rows": written["rows"],
    }
    atomic_write_text(run / "evaluation.json", json.dumps(summary, indent=2))
    return summary


def read_score_columns(path: str | os.PathLike, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Columns of a score CSV (as `tfpvae score` writes) as float64 arrays."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {c: np.array([float(r[c]) for r in rows]) for c in columns}
