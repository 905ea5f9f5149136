"""What several commands share: the data and scoring flags, loading the images they name."""

from __future__ import annotations

import argparse
import re
from typing import Any

from tfpvae._arguments import UsageError, add_precision_arg, flag, positive_int, seed
from tfpvae.datasets import NAMES as DATASETS
from tfpvae.datasets import SPLITS

DATA_DIR_HELP = "folder holding the dataset files (default: $TFPVAE_DATA_DIR, Keras cache)"


def example(command: str) -> dict[str, Any]:
    """`add_parser` arguments that end a command's --help with one example call.

    The CLI reference (docs/cli.md) shows the same call, and the documentation tests run it.
    """
    return {"epilog": f"example:\n  {command}", "formatter_class": argparse.RawDescriptionHelpFormatter}


def typed(args: argparse.Namespace, key: str) -> bool:
    """Whether the flag of `key` (e.g. "latent_dim" for --latent-dim) was typed, not defaulted."""
    name = flag(key)
    return any(a == name or a.startswith(name + "=") for a in getattr(args, "argv", ()))


def as_flags(message: str, args: argparse.Namespace) -> str:
    """A library message with the argument names that are flags of the command as those flags:
    `data_dir` -> `--data-dir`. Other names (`x_anomalous`, which has no flag) stay as they are."""

    def named(match: re.Match) -> str:
        name = flag(match.group(1))
        return f"`{name}`" if name in getattr(args, "option_flags", ()) else match.group(0)

    return re.sub(r"`([a-z][a-z0-9_]*)`", named, message)


def as_usage_error(err: ValueError, args: argparse.Namespace) -> Exception:
    """A plain `ValueError` of the library (a setting the input cannot meet) as a one-line
    `UsageError` in the command's flags (`as_flags`); its own kinds (checkpoint, run folder,
    ...), which `main` reports each in its way, as they are."""
    return UsageError(as_flags(str(err), args)) if type(err) is ValueError else err


def as_input_error(err: Exception) -> Exception:
    """A reader's error about the input it was given as a `UsageError` naming `--input` (the
    readers call it `source` or `path`); any other error (a bad file or record, which names
    itself) as it is."""
    message = re.sub(r"`(source|path)`", "`--input`", str(err))
    return err if message == str(err) else UsageError(message)


def refused(err: Any) -> str:
    """An `OutputExistsError` in the CLI's terms: `--out`, which names every output, and the flags that allow it."""
    return f"`--out` {err.problem}: {err.remedy(f'`--resume {err.path}`', '`--overwrite`')}."


def add_data_args(p: argparse.ArgumentParser, required: bool = True, split: bool = False) -> None:
    """--dataset, --data-dir, --limit (and --split)."""
    p.add_argument("--dataset", choices=DATASETS, required=required, help="named dataset")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--limit", type=positive_int, help="use only the first N images of each split")
    if split:
        p.add_argument("--split", choices=SPLITS, default="test", help="split (default test)")


def add_input_arg(p: argparse.ArgumentParser) -> None:
    """--input: images from files instead of --dataset."""
    p.add_argument(
        "--input", help="images from files instead of --dataset: PNG/JPEG, TFRecord or .npy/.npz (file, folder, glob)"
    )


def add_scoring_args(p: argparse.ArgumentParser) -> None:
    """--model, --num-samples, --seed, --binarize-seed, --precision, --quiet."""
    p.add_argument("--model", required=True, help="run folder written by train")
    p.add_argument("--num-samples", type=positive_int, default=100, help="importance samples (default 100)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the Monte Carlo draws (default 0)")
    p.add_argument("--binarize-seed", type=seed, help="score a fixed binarisation of grey images drawn with this seed")
    add_precision_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: a bar for long jobs on a terminal)")


def load_model(args: argparse.Namespace) -> Any:
    """The model in --model."""
    from tfpvae.model import load

    return load(args.model)


def check_fits(model: Any, x: Any, source: str, model_dir: str) -> None:
    """Raises naming the flag when images `x` are not of the shape `model` was trained on."""
    have, want = tuple(x.shape[1:]), tuple(model.config.input_shape)
    if have != want:
        raise UsageError(
            f"`{source}` images are {'x'.join(map(str, have))} but the model in {model_dir} takes "
            f"{'x'.join(map(str, want))} images."
        )


def images_for_scoring(args: argparse.Namespace, model: Any) -> tuple[Any, Any]:
    """(images, labels) from --input FILE or --dataset NAME --split S, cut to --limit, of the
    image shape `model` takes."""
    from tfpvae.datasets import load_images, load_split

    if args.input and args.dataset:
        raise UsageError(f"Give `--dataset` or `--input`, not both; got --dataset {args.dataset} --input {args.input}.")
    if args.input:
        try:
            x, y = load_images(args.input)
        except (ValueError, TypeError, FileNotFoundError) as err:
            raise as_input_error(err) from None
    elif args.dataset:
        x, y = load_split(args.dataset, args.split, args.data_dir)
    else:
        raise UsageError("Give the images to score: `--dataset NAME` or `--input FILE`.")
    check_fits(model, x, f"--input {args.input}" if args.input else f"--dataset {args.dataset}", args.model)
    if args.limit:
        x, y = x[: args.limit], None if y is None else y[: args.limit]
    return x, y


def test_images(args: argparse.Namespace, name: str, model: Any) -> Any:
    """The test split of the dataset named by flag `name` (e.g. "anomalous"), checked to fit `model`."""
    from tfpvae.datasets import load_split

    dataset = getattr(args, name)
    x, _ = load_split(dataset, "test", args.data_dir)
    check_fits(model, x, f"--{name} {dataset}", args.model)
    return x


IMPORT_HELP = (
    "a module (dotted name, or a .py file) that registers a network or prior with "
    "@tfpvae.register_network / register_prior; imported before anything else (repeatable)"
)


def add_import_arg(p: argparse.ArgumentParser) -> None:
    """--import MODULE (repeatable)."""
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE", help=IMPORT_HELP)


def import_modules(argv: list[str]) -> None:
    """Imports the modules named by --import in `argv`, before the parser lists the registered names."""
    from tfpvae.registry import import_modules as import_named

    pre = argparse.ArgumentParser(add_help=False)
    add_import_arg(pre)
    try:
        import_named(pre.parse_known_args(argv)[0].imports, "--import")
    except ValueError as err:
        raise UsageError(str(err)) from None
