"""`tfpvae train`: its flags, and the call of `tfpvae.runs.train_run` they make."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from tfpvae._arguments import (
    UsageError,
    add_config_flags,
    add_precision_arg,
    config_fields,
    config_from_args,
    flag,
    float_in,
    non_negative_int,
    positive_int,
    seed,
)
from tfpvae.cli._common import add_data_args, as_flags, as_usage_error, example, typed
from tfpvae.config import LR_SCHEDULES, STRATEGIES, UNLIMITED_EPOCHS


def add_train(sub: argparse._SubParsersAction) -> None:
    """Adds `tfpvae train`."""
    p = sub.add_parser(
        "train",
        help="train a model and write it with samples and plots",
        **example("tfpvae train --dataset fashion_mnist --epochs 2 --seed 0 --out runs/fashion"),
    )
    add_data_args(p, required=False)
    p.add_argument(
        "--input",
        metavar="FILES",
        help="train on images streamed from files instead of --dataset (bounded memory): a file, folder or quoted "
        "glob of PNG/JPEG, TFRecord or .npy/.npz files; with --strategy multiworker each worker reads its share of "
        "the files",
    )
    p.add_argument(
        "--validation-input",
        metavar="FILES",
        help="held-out images (as --input) validated after each epoch and used for the run's figures and scores",
    )
    p.add_argument("--out", help="run folder to write (required unless --resume)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run or model already in --out: its files are removed first (default: refuse the folder)",
    )
    p.add_argument(
        "--epochs", type=positive_int, help="total passes over the data (default 10; with --time-budget, no limit)"
    )
    p.add_argument(
        "--time-budget",
        type=float_in(0.0),
        metavar="SECONDS",
        help="stop after SECONDS of training, within an epoch if need be; --lr-schedule then decays over the "
        "budget (linear or cosine: a lower NLL than constant in a fixed time); with --resume, a new total for "
        "the run (default: no budget)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=1,
        help="epochs between checkpoints; the last epoch is always checkpointed (default 1)",
    )
    p.add_argument("--clip-norm", type=float_in(0.0), help="clip the global gradient norm (default: no clipping)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per step (default 128)")
    add_config_flags(p)  # one flag per VAEConfig field, with its default: the CLI and Python agree
    p.add_argument(
        "--kl-warmup-epochs",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="raise the KL weight linearly from beta/N in the first epoch to --beta at epoch N (default 0: none)",
    )
    p.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default="constant",
        help="learning rate: linear, cosine and exponential decay to 1/20 of --learning-rate at the last of "
        "--epochs, or at the end of --time-budget (default constant)",
    )
    p.add_argument(
        "--early-stopping",
        type=positive_int,
        metavar="PATIENCE",
        help="stop when the validation loss has not improved for PATIENCE epochs and keep the best epoch's "
        "weights; validates on the dataset's valid split (binarized_mnist) or else on the last 10%% of the "
        "training images, which are then not trained on (default: no early stopping; validate on the test split)",
    )
    p.add_argument(
        "--validation-images",
        type=non_negative_int,
        metavar="N",
        help="validate after each epoch on only N validation images (the test split, or the "
        "--early-stopping hold-out), spread evenly over them; 0: no per-epoch validation (default: all of them)",
    )
    add_precision_arg(p, "the training steps")
    p.add_argument("--seed", type=seed, default=None, help="seed for reproducible runs")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="one line per epoch, no bar")
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="default",
        help="distribute training: mirrored (all local devices) or multiworker (TF_CONFIG) (default: one device)",
    )
    p.add_argument(
        "--evolution",
        action="store_true",
        help="also write evolution.gif (latent scatter by epoch) and reconstructions_by_epoch.png",
    )
    p.add_argument("--tensorboard", metavar="DIR", help="log metrics, learning rate and images for TensorBoard")
    p.add_argument(
        "--score-limit",
        type=positive_int,
        default=1000,
        help="test images scored into scores.csv, evenly spread over the split (default 1000)",
    )
    p.set_defaults(func=run)


def _json(value: Any) -> str:
    """An option's value as JSON text, as --option takes it and a saved config holds it: 1 is not true."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _settings(args: argparse.Namespace):
    """The `RunSettings` of the flags (a new run), as a usage error where they do not combine."""
    from tfpvae.runs import RunSettings

    if not (args.dataset or args.input) or not args.out:
        raise UsageError("`--dataset` (or `--input`) and `--out` are required unless `--resume RUN_DIR` is given.")
    names = [f.name for f in dataclasses.fields(RunSettings) if f.name != "epochs"]
    try:
        # With a time budget the clock ends the run; the epochs only cap it, and need not.
        epochs = args.epochs or (UNLIMITED_EPOCHS if args.time_budget else 10)
        return RunSettings(**{k: getattr(args, k) for k in names}, epochs=epochs)
    except ValueError as err:
        raise UsageError(as_flags(str(err), args)) from None


def _note_ignored(args: argparse.Namespace) -> None:
    """On --resume, a note for each typed flag whose value the resumed run does not take."""
    from tfpvae.runs import RunSettings, resumed_settings

    keys = [f.name for f in dataclasses.fields(RunSettings)] + [f.name for f in config_fields()]
    requested = {k: getattr(args, k) for k in keys if k not in ("epochs", "time_budget") and typed(args, k)}
    _, config, ignored = resumed_settings(args.resume, requested)
    for key, value, kept in ignored:
        print(f"tfpvae: note: {flag(key)} {value} ignored: the resumed run keeps its own ({kept}).", file=sys.stderr)
    # Each --option KEY=VALUE is a setting of its own, noted as a flag is (the last of a repeated KEY counts).
    for key, value in dict(args.options or []).items():
        kept = f"{key}={_json(config.options[key])}" if key in config.options else f"no {key}"
        if kept != f"{key}={_json(value)}":
            print(
                f"tfpvae: note: --option {key}={_json(value)} ignored: the resumed run keeps its own ({kept}).",
                file=sys.stderr,
            )


def run(args: argparse.Namespace) -> int:
    """Trains (or resumes) a run; prints its summary as JSON."""
    from tfpvae.runs import train_run
    from tfpvae.training import TrainingDivergedError

    if args.resume and args.overwrite:
        raise UsageError(f"Give `--resume {args.resume}` or `--overwrite`, not both: a run is continued or replaced.")
    if args.resume:
        _note_ignored(args)
        run_dir, settings, config = args.resume, None, None
    else:
        try:
            config = config_from_args(args, seed=args.seed)
        except ValueError as err:  # fields that do not combine, e.g. --train-samples 4 --model-type ae
            raise UsageError(as_flags(str(err), args)) from None
        run_dir, settings = args.out, _settings(args)
    try:
        result = train_run(
            run_dir,
            settings,
            config,
            resume=bool(args.resume),
            epochs=args.epochs,
            time_budget=args.time_budget if args.resume else None,
            strategy=args.strategy,
            evolution=args.evolution,
            tensorboard=args.tensorboard,
            score_limit=args.score_limit,
            verbose=1 if args.progress else 2,
            overwrite=args.overwrite,
        )
    except TrainingDivergedError as err:
        print(f"tfpvae: error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # settings the data cannot meet, e.g. --early-stopping with --limit 1
        raise as_usage_error(err, args) from None
    if not result.chief:
        return 0  # the chief writes the run folder
    if result.interrupted:
        print(
            f"tfpvae: interrupted after {result.epochs_completed} epochs; saved; resume with "
            f"`tfpvae train --resume {result.run_dir}`",
            file=sys.stderr,
        )
        return 130
    best = {} if result.best_epoch is None else {"best_epoch": result.best_epoch}
    print(json.dumps({"run": str(result.run_dir), "epochs": result.epochs_completed, **best, **result.final_metrics}))
    return 0
