"""What a trained model gives: `tfpvae sample`, `info`, `plot`, `interpolate` and `export`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tfpvae._arguments import (
    UsageError,
    add_precision_arg,
    file_ending,
    finite,
    float_in,
    int_at_least,
    positive_int,
    seed,
)
from tfpvae.anomaly_maps import DEFAULT_METHOD as DEFAULT_MAP_METHOD
from tfpvae.anomaly_maps import METHODS as MAP_METHODS
from tfpvae.cli._common import (
    add_data_args,
    add_input_arg,
    as_usage_error,
    example,
    images_for_scoring,
    load_model,
    test_images,
)
from tfpvae.config import FIGURES
from tfpvae.datasets import NAMES as DATASETS


def add_sample(sub: argparse._SubParsersAction) -> None:
    """Adds `tfpvae sample`."""
    p = sub.add_parser(
        "sample",
        help="draw images from a trained model's prior",
        **example("tfpvae sample --model runs/fashion -n 64 --seed 0 --out samples.png"),
    )
    p.add_argument("--model", required=True, help="run folder written by train")
    p.add_argument("-n", "--num-samples", type=positive_int, default=64, help="number of images (default 64)")
    p.add_argument("--temperature", type=float_in(0.0), default=1.0, help="prior spread multiplier (default 1.0)")
    p.add_argument("--seed", type=seed, default=None, help="seed for reproducible samples")
    p.add_argument("--out", required=True, type=file_ending(".png", ".npy"), help="output .png (grid) or .npy (array)")
    p.set_defaults(func=sample, out_is_file=True)


def add_info(sub: argparse._SubParsersAction) -> None:
    """Adds `tfpvae info`."""
    p = sub.add_parser(
        "info",
        help="print a model's config, metrics and parameter count",
        **example("tfpvae info --model runs/fashion"),
    )
    p.add_argument("--model", required=True, help="run folder written by train")
    p.set_defaults(func=info)


def add_plot(sub: argparse._SubParsersAction) -> None:
    """Adds `tfpvae plot`."""
    p = sub.add_parser(
        "plot",
        help="draw one figure of a trained model to a PNG",
        **example("tfpvae plot traversal --model runs/fashion --dataset fashion_mnist \\\n    --out traversal.png"),
    )
    p.add_argument("kind", choices=FIGURES, metavar="KIND", help="one of: " + ", ".join(FIGURES))
    p.add_argument("--model", required=True, help="run folder written by train")
    add_data_args(p, required=False, split=True)
    add_input_arg(p)
    p.add_argument(
        "--anomalous", choices=DATASETS, help="anomalous dataset for the histogram and roc figures (its test split)"
    )
    p.add_argument("--out", required=True, type=file_ending(".png", ".pdf", ".svg"), help="output .png (or .pdf/.svg)")
    p.add_argument("--num-images", type=positive_int, default=8, help="images per row / rows (default 8)")
    p.add_argument(
        "--index",
        type=int,
        default=0,
        help="first image of the traversal, uncertainty and anomaly-map figures (default 0)",
    )
    p.add_argument("--grid-size", type=int_at_least(2), default=15, help="manifold grid cells per side (default 15)")
    p.add_argument(
        "--method", choices=("auto", "direct", "pca", "tsne"), default="auto", help="scatter embedding (default auto)"
    )
    p.add_argument(
        "--map-method",
        choices=MAP_METHODS,
        default=DEFAULT_MAP_METHOD,
        help=f"per-pixel score of the anomaly-map figure (default {DEFAULT_MAP_METHOD})",
    )
    p.add_argument("--num-samples", type=positive_int, default=64, help="Monte Carlo samples (default 64)")
    p.add_argument("--temperature", type=float_in(0.0), default=1.0, help="prior temperature for samples (default 1.0)")
    p.add_argument("--no-labels", action="store_true", help="ignore the dataset's labels")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random draws (default 0)")
    p.add_argument(
        "--binarize-seed",
        type=seed,
        help="histogram and roc: score a fixed binarisation of grey images drawn with this seed",
    )
    p.set_defaults(func=plot, out_is_file=True)


def add_interpolate(sub: argparse._SubParsersAction) -> None:
    """Adds `tfpvae interpolate`."""
    p = sub.add_parser(
        "interpolate",
        help="decode paths between pairs of images (PNG strips or .npz)",
        **example("tfpvae interpolate --model runs/fashion --dataset fashion_mnist --out paths.png"),
    )
    p.add_argument("--model", required=True, help="run folder written by train")
    add_data_args(p, required=False, split=True)
    add_input_arg(p)
    p.add_argument("--indices", type=int, nargs="+", help="pairs of image indices: i1 j1 i2 j2 ...")
    p.add_argument("--pairs", type=positive_int, default=6, help="random pairs when --indices is not given (default 6)")
    p.add_argument("--steps", type=int_at_least(2), default=10, help="images per path (default 10)")
    p.add_argument("--method", choices=("linear", "slerp"), default="slerp", help="path shape (default slerp)")
    p.add_argument("--seed", type=seed, default=0, help="seed for the random pairs (default 0)")
    p.add_argument(
        "--out",
        required=True,
        type=file_ending(".png", ".npz"),
        help="output .png (strips) or .npz (images, log_prior, latents)",
    )
    p.set_defaults(func=interpolate, out_is_file=True)


def add_export(sub: argparse._SubParsersAction) -> None:
    """Adds `tfpvae export`."""
    p = sub.add_parser(
        "export",
        help="write a TensorFlow SavedModel with score, log_prob, elbo and sample signatures",
        **example("tfpvae export --model runs/fashion --out runs/fashion-savedmodel"),
    )
    p.add_argument("--model", required=True, help="run folder written by train")
    p.add_argument("--out", required=True, help="folder for the SavedModel")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a SavedModel already in --out (default: refuse a folder that holds one)",
    )
    p.add_argument("--num-samples", type=positive_int, default=64, help="importance samples per image (default 64)")
    p.add_argument("--binarize-seed", type=seed, help="serve the scores of a fixed binarisation drawn with this seed")
    p.add_argument("--typical-nll", type=finite, help="mean NLL of normal data: also serve the typicality score")
    add_precision_arg(p, "every signature (auto decides on this machine)")
    p.set_defaults(func=export)


def sample(args: argparse.Namespace) -> int:
    """Draws images from the prior into a PNG grid or an .npy array."""
    import numpy as np

    from tfpvae import plots

    model = load_model(args)
    try:
        images = model.sample(args.num_samples, temperature=args.temperature, seed=args.seed)
    except ValueError as err:  # a temperature so large that the codes overflow
        raise as_usage_error(err, args) from None
    out = Path(args.out)  # .png or .npy: the parser checked
    if out.suffix.lower() == ".npy":
        with open(out, "wb") as f:  # a file, not a name: numpy would add ".npy" to "X.NPY"
            np.save(f, images, allow_pickle=False)
    else:
        plots.save_figure(plots.image_grid(images), out)
    print(f"wrote {len(images)} samples to {out}")
    return 0


def info(args: argparse.Namespace) -> int:
    """Prints the model's config, size and last metrics as JSON (without building the model)."""
    from tfpvae.serialization import ModelFormatError, read_config_text, read_metadata

    meta = read_metadata(args.model)
    text = read_config_text(args.model)
    try:  # parsed only, not built: info works without the modules of a user's own networks
        config = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ModelFormatError(f"{args.model}'s config.json is not valid JSON: {err}") from None
    history = meta.get("history", {})
    summary = {
        "config": config,
        "num_parameters": meta.get("num_parameters"),
        "tfpvae_version": meta.get("tfpvae_version"),
        "epochs_trained": len(next(iter(history.values()), [])),
        "final_metrics": {k: v[-1] for k, v in history.items() if v},
    }
    print(json.dumps(summary, indent=2))
    return 0


def plot(args: argparse.Namespace) -> int:
    """Draws one figure of the model."""
    from tfpvae import plots
    from tfpvae.figures import check_figure, make_figure, needs_data

    for flag, value in (("--binarize-seed", args.binarize_seed), ("--anomalous", args.anomalous)):
        if value is not None and args.kind not in ("histogram", "roc"):
            raise UsageError(f"`{flag}` applies to the histogram and roc figures, not to {args.kind!r}.")
    model = load_model(args)
    x = y = x_anomalous = None
    if needs_data(args.kind, model):
        if not (args.dataset or args.input):
            raise UsageError(f"Figure {args.kind!r} needs images: `--dataset NAME` or `--input FILE`.")
        x, y = images_for_scoring(args, model)
    if args.anomalous:
        x_anomalous = test_images(args, "anomalous", model)
        x_anomalous = x_anomalous[: args.limit] if args.limit else x_anomalous
    try:
        check_figure(args.kind, model, x, x_anomalous=x_anomalous, index=args.index, method=args.method)
        fig = make_figure(
            args.kind,
            model,
            x,
            None if args.no_labels else y,
            x_anomalous=x_anomalous,
            num_images=args.num_images,
            index=args.index,
            grid_size=args.grid_size,
            method=args.method,
            num_samples=args.num_samples,
            temperature=args.temperature,
            seed=args.seed,
            binarize_seed=args.binarize_seed,
            map_method=args.map_method,
        )
    except ValueError as err:  # what the images cannot give: too few for a PCA plane, an index beyond them
        raise as_usage_error(err, args) from None
    plots.save_figure(fig, args.out)
    print(f"wrote {args.kind} figure to {args.out}")
    return 0


def interpolate(args: argparse.Namespace) -> int:
    """Decodes latent paths between pairs of images."""
    import numpy as np

    from tfpvae import latent, plots

    model = load_model(args)
    x, _ = images_for_scoring(args, model)
    if len(x) < 2:
        raise UsageError(f"`interpolate` needs at least 2 images to pair; the input holds {len(x)}.")
    if args.indices:
        idx = np.asarray(args.indices)
        if len(idx) % 2 or idx.min() < 0 or idx.max() >= len(x):
            raise UsageError(f"`--indices` must be pairs of image indices in [0, {len(x) - 1}]; got {args.indices}.")
        pairs = idx.reshape(-1, 2)
    else:
        pairs = np.random.default_rng(args.seed).choice(len(x), size=(min(args.pairs, len(x) // 2), 2), replace=False)
    path = latent.interpolate(model, x[pairs[:, 0]], x[pairs[:, 1]], num_steps=args.steps, method=args.method)
    out = Path(args.out)  # .png or .npz: the parser checked
    if out.suffix.lower() == ".npz":
        with open(out, "wb") as f:  # a file, not a name: numpy would add ".npz" to "X.NPZ"
            np.savez(f, images=path.images, log_prior=path.log_prior, latents=path.latents, pairs=pairs)
    else:
        labels = [f"{a} -> {b}" for a, b in pairs]
        plots.save_figure(plots.interpolation_strips(path.images, path.log_prior, row_labels=labels), out)
    print(f"wrote {len(pairs)} interpolations of {args.steps} steps to {out}")
    return 0


def export(args: argparse.Namespace) -> int:
    """Writes a SavedModel that serves the scores."""
    from tfpvae.export import export as export_model

    model = load_model(args)
    if model.config.model_type != "vae":
        raise UsageError(f"`--model` {args.model} is a plain autoencoder: it has no likelihood to serve.")
    path = export_model(
        model,
        args.out,
        num_samples=args.num_samples,
        binarize_seed=args.binarize_seed,
        typical_nll=args.typical_nll,
        precision=args.precision,
        overwrite=args.overwrite,
    )
    print(
        f"wrote SavedModel with signatures score, log_prob, elbo, sample (k={args.num_samples}, "
        f"precision {args.precision}) to {path}"
    )
    return 0
