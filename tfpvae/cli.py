"""The `tfpvae` command line: parses arguments and calls the library, nothing more.

A user error (bad argument, missing file, corrupt model) prints one line to stderr and
exits with status 2; TensorFlow is imported only after the arguments parse, so `--help`
is instant.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

DATASETS = ("digits", "mnist", "fashion_mnist", "binarized_mnist")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--dataset", choices=DATASETS, required=required, help="named dataset")
    p.add_argument("--data-dir", help="folder holding the dataset files (default: $TFPVAE_DATA_DIR, Keras cache)")
    p.add_argument("--limit", type=_positive_int, help="use only the first N images of each split")


def _load_data(args):
    from tfpvae.datasets import load

    (x_train, y_train), (x_test, y_test) = load(args.dataset, args.data_dir)
    if args.limit:
        x_train, x_test = x_train[: args.limit], x_test[: args.limit]
        y_train = None if y_train is None else y_train[: args.limit]
        y_test = None if y_test is None else y_test[: args.limit]
    return (x_train, y_train), (x_test, y_test)


def _write_history_csv(history: dict, path: Path) -> None:
    keys = list(history)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *keys])
        for i in range(len(history[keys[0]]) if keys else 0):
            writer.writerow([i + 1, *(history[k][i] for k in keys)])


_TRAIN_ARGS_FILE = "train_args.json"
# Arguments a resumed run takes from the original run rather than the command line.
_RESUMED_ARGS = ("dataset", "data_dir", "limit", "batch_size", "checkpoint_every", "clip_norm", "seed")


def _cmd_train(args) -> int:
    from tfpvae import plots
    from tfpvae.config import VAEConfig
    from tfpvae.model import VAE
    from tfpvae.training import TrainingDivergedError, read_checkpoint_meta, train

    if args.resume:
        run = Path(args.resume)
        saved = json.loads((run / _TRAIN_ARGS_FILE).read_text()) if (run / _TRAIN_ARGS_FILE).is_file() else None
        if saved is None:
            raise FileNotFoundError(
                f"`--resume` {run} has no {_TRAIN_ARGS_FILE}: it is not a run folder of tfpvae train."
            )
        for key in _RESUMED_ARGS:
            setattr(args, key, saved[key])
        args.epochs = args.epochs or saved["epochs"]
        config = VAEConfig.from_dict(read_checkpoint_meta(run)["config"])
    else:
        if not args.dataset or not args.out:
            raise ValueError("`--dataset` and `--out` are required unless `--resume RUN_DIR` is given.")
        run = Path(args.out)
        args.epochs = args.epochs or 10
    (x_train, _), (x_test, _) = _load_data(args)
    if not args.resume:
        config = VAEConfig(
            input_shape=x_train.shape[1:],
            latent_dim=args.latent_dim,
            architecture=args.architecture,
            prior=args.prior,
            num_components=args.num_components,
            beta=args.beta,
            model_type=args.model_type,
            binarize=args.binarize,
            learning_rate=args.learning_rate,
            posterior_scale_floor=args.posterior_scale_floor,
            seed=args.seed,
        )
        run.mkdir(parents=True, exist_ok=True)
        keep = {k: getattr(args, k) for k in (*_RESUMED_ARGS, "epochs")}
        (run / _TRAIN_ARGS_FILE).write_text(json.dumps(keep, indent=2))
    model = VAE(config)
    try:
        result = train(
            model,
            x_train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            validation_data=x_test,
            run_dir=run,
            checkpoint_every=args.checkpoint_every,
            resume=bool(args.resume),
            clip_norm=args.clip_norm,
            seed=args.seed,
            verbose=1 if args.progress else 2,
        )
    except TrainingDivergedError as err:
        print(f"tfpvae: error: {err}", file=sys.stderr)
        return 1
    model.save(run)
    _write_history_csv(model.training_history, run / "history.csv")
    plots.save_figure(plots.image_grid(model.sample(64, seed=args.seed), title="prior samples"), run / "samples.png")
    plots.save_figure(
        plots.reconstructions(x_test[:10], model.reconstruct(x_test[:10]), title="reconstructions (test)"),
        run / "reconstructions.png",
    )
    plots.save_figure(plots.training_curves(model.training_history), run / "training_curves.png")
    if result.interrupted:
        print(
            f"tfpvae: interrupted after {result.epochs_completed} epochs; saved; resume with "
            f"`tfpvae train --resume {run}`",
            file=sys.stderr,
        )
        return 130
    final = {k: v[-1] for k, v in model.training_history.items()}
    print(json.dumps({"run": str(run), "epochs": result.epochs_completed, **final}))
    return 0


def _cmd_sample(args) -> int:
    import numpy as np

    from tfpvae import plots
    from tfpvae.serialization import load

    model = load(args.model)
    images = model.sample(args.num_samples, temperature=args.temperature, seed=args.seed)
    out = Path(args.out)
    if out.suffix == ".npy":
        np.save(out, images, allow_pickle=False)
    elif out.suffix == ".png":
        plots.save_figure(plots.image_grid(images), out)
    else:
        raise ValueError(f"`--out` must end in .png or .npy; got {out.name!r}.")
    print(f"wrote {len(images)} samples to {out}")
    return 0


def _cmd_info(args) -> int:
    from tfpvae.serialization import read_metadata

    meta = read_metadata(args.model)
    config = json.loads((Path(args.model) / "config.json").read_text())
    history = meta.get("history", {})
    info = {
        "config": config,
        "num_parameters": meta.get("num_parameters"),
        "tfpvae_version": meta.get("tfpvae_version"),
        "epochs_trained": len(next(iter(history.values()), [])),
        "final_metrics": {k: v[-1] for k, v in history.items() if v},
    }
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of the `tfpvae` command."""
    from tfpvae.config import ACTIVATIONS, ARCHITECTURES, BINARIZE, MODEL_TYPES, PRIORS

    parser = argparse.ArgumentParser(prog="tfpvae", description="Variational autoencoders from TFP layers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model and write it with samples and plots")
    _add_data_args(p, required=False)
    p.add_argument("--out", help="run folder to write (required unless --resume)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--epochs", type=_positive_int, help="total passes over the data (default 10)")
    p.add_argument("--checkpoint-every", type=_positive_int, default=1, help="epochs between checkpoints (default 1)")
    p.add_argument("--clip-norm", type=float, help="clip the global gradient norm (default: no clipping)")
    p.add_argument("--posterior-scale-floor", type=float, default=1e-5, help="minimum posterior std (default 1e-5)")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="images per step (default 128)")
    p.add_argument("--latent-dim", type=_positive_int, default=16, help="latent dimension (default 16)")
    p.add_argument("--prior", choices=PRIORS, default="normal", help="prior kind (default normal)")
    p.add_argument("--num-components", type=_positive_int, default=10, help="mixture components (default 10)")
    p.add_argument("--architecture", choices=ARCHITECTURES, default="conv", help="network family (default conv)")
    p.add_argument("--model-type", choices=MODEL_TYPES, default="vae", help="vae or plain ae (default vae)")
    p.add_argument("--beta", type=float, default=1.0, help="KL weight (default 1.0)")
    p.add_argument("--binarize", choices=BINARIZE, default="dynamic", help="training binarisation (default dynamic)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam step size (default 1e-3)")
    p.add_argument("--activation", choices=ACTIVATIONS, default="swish", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible runs")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="one line per epoch, no bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="draw images from a trained model's prior")
    p.add_argument("--model", required=True, help="run folder written by train")
    p.add_argument("-n", "--num-samples", type=_positive_int, default=64, help="number of images (default 64)")
    p.add_argument("--temperature", type=float, default=1.0, help="prior spread multiplier (default 1.0)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    p.add_argument("--out", required=True, help="output .png (grid) or .npy (array)")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("info", help="print a model's config, metrics and parameter count")
    p.add_argument("--model", required=True, help="run folder written by train")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit status (0 ok, 2 user error)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"tfpvae: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tfpvae: interrupted", file=sys.stderr)
        return 130
