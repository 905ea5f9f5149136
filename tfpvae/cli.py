"""The `tfpvae` command line: parses arguments and calls the library, nothing more.

A user error (bad argument, missing file, corrupt model) prints one line to stderr and
exits with status 2; TensorFlow is imported only after the arguments parse, so `--help`
is instant.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tfpvae._validation import MAX_INT32_SEED

DATASETS = ("digits", "mnist", "fashion_mnist", "binarized_mnist")


def _arg_type(convert, ok, name: str):
    """An argparse type: `convert(text)` where `ok` accepts it, else an error naming `name`.

    `name` (e.g. "integer >= 1") is also how argparse and the CLI reference show the type.
    """
    article = "an" if name[0] in "aeiou" else "a"

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {article} {name}, got {text!r}")
        return value

    parse.__name__ = name
    return parse


def _int_at_least(minimum: int):
    return _arg_type(int, lambda v: v >= minimum, f"integer >= {minimum}")


_positive_int, _non_negative_int = _int_at_least(1), _int_at_least(0)
# Seeds reach TensorFlow's stateless ops, which take int32.
_seed = _arg_type(int, lambda v: 0 <= v <= MAX_INT32_SEED, f"integer in [0, {MAX_INT32_SEED}]")


def _float_in(low: float, high: float = float("inf")):
    """A number in the open interval (low, high)."""
    name = f"number > {low}" if high == float("inf") else f"number in ({low}, {high})"
    return _arg_type(float, lambda v: low < v < high, name)


def _file_ending(*suffixes: str):
    """A file name ending in one of `suffixes`, checked before any work."""
    return _arg_type(str, lambda v: Path(v).suffix.lower() in suffixes, f"file name ending in {' or '.join(suffixes)}")


def _typed(args, key: str) -> bool:
    """Whether the flag of `key` (e.g. "latent_dim" for --latent-dim) was typed, not defaulted."""
    flag = "--" + key.replace("_", "-")
    return any(a == flag or a.startswith(flag + "=") for a in getattr(args, "argv", ()))


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line, as every other user error of the CLI."""

    def __init__(self, *args, **kwargs) -> None:
        # No abbreviated flags: `--resume` must see which flags were typed (to note the ignored ones).
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


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
_RESUMED_ARGS = (
    "dataset",
    "input",
    "validation_input",
    "data_dir",
    "limit",
    "batch_size",
    "checkpoint_every",
    "clip_norm",
    "seed",
    "kl_warmup_epochs",
    "lr_schedule",
    "early_stopping",
    "validation_images",
)
# What a run folder written before an argument existed used: its train_args.json lacks it.
_RESUMED_ARG_DEFAULTS = {
    "input": None,
    "validation_input": None,
    "kl_warmup_epochs": 0,
    "lr_schedule": "constant",
    "early_stopping": None,
    "validation_images": None,
}
# Share of the training images held out to monitor --early-stopping when the dataset has
# no valid split of its own.
_HOLDOUT_FRACTION = 0.1


def _early_stopping_split(args, x_train):
    """(training images, validation images) for --early-stopping: never the test split."""
    from tfpvae.datasets import load_split

    if args.dataset == "binarized_mnist":
        x_valid = load_split(args.dataset, "valid", args.data_dir)[0][: args.limit]
        return x_train, x_valid
    n_valid = max(1, int(round(_HOLDOUT_FRACTION * len(x_train))))
    if len(x_train) - n_valid < 1:
        raise ValueError(f"`--early-stopping` needs at least 2 training images to hold some out; got {len(x_train)}.")
    return x_train[:-n_valid], x_train[-n_valid:]


def _cmd_train(args) -> int:
    from tfpvae import plots
    from tfpvae.config import VAEConfig
    from tfpvae.distribute import is_chief, make_strategy
    from tfpvae.model import VAE
    from tfpvae.serialization import _atomic_write
    from tfpvae.training import TrainingDivergedError, read_checkpoint_meta, train

    strategy = make_strategy(args.strategy)
    chief = is_chief(strategy)  # with several workers only the chief writes the run folder
    if args.resume:
        run = Path(args.resume)
        saved = json.loads((run / _TRAIN_ARGS_FILE).read_text()) if (run / _TRAIN_ARGS_FILE).is_file() else None
        if saved is None:
            raise FileNotFoundError(
                f"`--resume` {run} has no {_TRAIN_ARGS_FILE}: it is not a run folder of tfpvae train."
            )
        missing = [k for k in (*_RESUMED_ARGS, "epochs") if k not in saved and k not in _RESUMED_ARG_DEFAULTS]
        if missing:
            raise ValueError(
                f"`--resume` {run / _TRAIN_ARGS_FILE} lacks {', '.join(missing)}: not written by tfpvae train."
            )
        checkpoint = read_checkpoint_meta(run)
        config = VAEConfig.from_dict(checkpoint["config"])
        kept = {key: saved[key] if key in saved else _RESUMED_ARG_DEFAULTS[key] for key in _RESUMED_ARGS}
        kept.update((f.name, getattr(config, f.name)) for f in dataclasses.fields(config) if hasattr(args, f.name))
        for key, value in kept.items():
            if _typed(args, key) and getattr(args, key) != value:
                flag = "--" + key.replace("_", "-")
                print(
                    f"tfpvae: note: {flag} {getattr(args, key)} ignored: the resumed run keeps its own ({value}).",
                    file=sys.stderr,
                )
            setattr(args, key, value)
        args.epochs = args.epochs or saved["epochs"]
        if chief and args.epochs != saved["epochs"] and args.epochs >= checkpoint["epoch"]:
            # The new total, so that a later --resume without --epochs continues to it.
            text = json.dumps({**saved, "epochs": args.epochs}, indent=2).encode()
            _atomic_write(run / _TRAIN_ARGS_FILE, lambda f: f.write(text))
    else:
        if not (args.dataset or args.input) or not args.out:
            raise ValueError("`--dataset` (or `--input`) and `--out` are required unless `--resume RUN_DIR` is given.")
        run = Path(args.out)
        args.epochs = args.epochs or 10
    if args.validation_images == 0 and args.early_stopping:
        raise ValueError("`--validation-images 0` turns validation off, which `--early-stopping` needs.")
    steps_per_epoch = None
    if args.input:
        x_train, steps_per_epoch, input_shape, x_valid, (x_test, y_test) = _file_data(args, strategy)
    else:
        (x_train, _), (x_test, y_test) = _load_data(args)
        input_shape = x_train.shape[1:]
        x_valid = x_test
        if args.early_stopping:
            x_train, x_valid = _early_stopping_split(args, x_train)
        if args.validation_images is not None:
            # Validation is a full forward pass per epoch (10,000 test images cost MNIST runs about
            # a sixth of their epoch time), so long runs may monitor a subset or nothing.
            x_valid = _spread(x_valid, None, args.validation_images)[0] if args.validation_images else None
    if not args.resume:
        config = VAEConfig(
            input_shape=input_shape,
            latent_dim=args.latent_dim,
            architecture=args.architecture,
            prior=args.prior,
            num_components=args.num_components,
            beta=args.beta,
            model_type=args.model_type,
            binarize=args.binarize,
            learning_rate=args.learning_rate,
            posterior_scale_floor=args.posterior_scale_floor,
            train_samples=args.train_samples,
            hidden_units=args.hidden_units,
            filters=args.filters,
            activation=args.activation,
            dropout=args.dropout,
            seed=args.seed,
        )
        if chief:
            run.mkdir(parents=True, exist_ok=True)
            keep = {k: getattr(args, k) for k in (*_RESUMED_ARGS, "epochs")}
            (run / _TRAIN_ARGS_FILE).write_text(json.dumps(keep, indent=2))
    with strategy.scope():
        model = VAE(config)
        model.compile(_optimizer(config, args.clip_norm))
    evolution = None
    if args.evolution:
        from tfpvae.latent import LatentEvolution

        evolution = LatentEvolution(*_spread(x_test, y_test, 1000)[:2], seed=args.seed or 0)
    callbacks = [evolution] if evolution is not None else []
    if args.tensorboard:
        from tfpvae.tensorboard import TensorBoardLogger

        callbacks.append(TensorBoardLogger(args.tensorboard, images=_spread(x_test, None, 8)[0], seed=args.seed or 0))
    try:
        result = train(
            model,
            x_train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            validation_data=x_valid,
            run_dir=run,
            checkpoint_every=args.checkpoint_every,
            resume=bool(args.resume),
            clip_norm=args.clip_norm,
            seed=args.seed,
            verbose=1 if args.progress else 2,
            callbacks=callbacks,
            kl_warmup_epochs=args.kl_warmup_epochs,
            lr_schedule=args.lr_schedule,
            early_stopping=args.early_stopping,
            steps_per_epoch=steps_per_epoch,
        )
    except TrainingDivergedError as err:
        print(f"tfpvae: error: {err}", file=sys.stderr)
        return 1
    if not chief:
        return 0  # the chief writes the run folder
    _write_history_csv(model.training_history, run / "history.csv")
    _write_run_figures(model, x_test, y_test, run, args.seed or 0)
    if evolution is not None:
        evolution.save_gif(run / "evolution.gif")
        plots.save_figure(evolution.reconstructions_figure(), run / "reconstructions_by_epoch.png")
    if args.input and not args.validation_input:
        print("tfpvae: note: no scores.csv: pass --validation-input to score held-out images", file=sys.stderr)
    elif model.config.model_type == "vae" and not result.interrupted:
        _write_run_scores(model, x_test, y_test, run, args)
    if result.interrupted:
        print(
            f"tfpvae: interrupted after {result.epochs_completed} epochs; saved; resume with "
            f"`tfpvae train --resume {run}`",
            file=sys.stderr,
        )
        return 130
    final = {k: v[-1] for k, v in model.training_history.items()}
    best = {} if result.best_epoch is None else {"best_epoch": result.best_epoch}
    print(json.dumps({"run": str(run), "epochs": result.epochs_completed, **best, **final}))
    return 0


# Images of a file input (--validation-input, else --input) held in memory for the run's
# figures and scores.
_FILE_EVAL_IMAGES = 2000


def _file_data(args, strategy):
    """Training data streamed from --input: (dataset, steps per epoch, image shape, validation
    dataset or None, (images, labels) for the figures and scores, at most 2,000 of them)."""
    from tfpvae.distribute import file_dataset
    from tfpvae.streaming import iter_batches, stream

    if args.dataset or args.limit:
        flag = "--dataset" if args.dataset else "--limit"
        raise ValueError(f"`--input` streams its own files; `{flag}` applies to named datasets only.")
    if args.early_stopping and not args.validation_input:
        raise ValueError("`--early-stopping` with `--input` needs `--validation-input` images to monitor.")
    data, steps, shape = file_dataset(args.input, global_batch_size=args.batch_size, strategy=strategy, seed=args.seed)
    held_out = args.validation_input or args.input
    first = next(iter_batches(held_out, batch_size=_FILE_EVAL_IMAGES, image_shape=shape))
    valid = None
    if args.validation_input and args.validation_images != 0:
        valid = stream(args.validation_input, image_shape=shape).map(lambda e: e["image"])
        if args.validation_images:
            valid = valid.take(args.validation_images)  # the first N: a stream has no "evenly spread"
        valid = valid.batch(args.batch_size)
    labels = first.labels if first.labels is not None and bool((first.labels >= 0).all()) else None
    return data, steps, shape, valid, (first.images, labels)


def _optimizer(config, clip_norm):
    from tfpvae._keras import tfk

    return tfk.optimizers.Adam(config.learning_rate, global_clipnorm=clip_norm)


# Test images a run-folder figure needs: a PCA plane is spanned by >= 3 codes, an interpolation
# joins a pair, and a scatter of one point shows nothing.
_RUN_FIGURE_MIN_IMAGES = {"manifold": 3, "interpolation": 2, "scatter": 2}


def _write_run_figures(model, x_test, y_test, run: Path, seed: int) -> None:
    """The main figures of a trained model, as PNGs in its run folder."""
    from tfpvae import plots
    from tfpvae.figures import make_figure, needs_data

    kinds = {"samples": "samples", "reconstructions": "reconstructions", "curves": "training_curves"}
    if model.config.model_type == "vae":
        kinds.update({"manifold": "manifold", "scatter": "latent_scatter", "interpolation": "interpolation"})
    if model.config.prior == "vamp":
        kinds["pseudo-inputs"] = "pseudo_inputs"
    x, y, _ = _spread(x_test, y_test, 2000)
    for kind, name in kinds.items():
        needed = _RUN_FIGURE_MIN_IMAGES.get(kind, 1) if needs_data(kind, model) else 0
        if len(x) < needed:  # a tiny --limit: the other figures and the scores still get written
            print(f"tfpvae: note: {name}.png skipped: it needs >= {needed} test images; got {len(x)}", file=sys.stderr)
            continue
        fig = make_figure(kind, model, x, y, seed=seed, max_points=1000)
        plots.save_figure(fig, run / f"{name}.png")


# The fixed binarisation `tfpvae train` scores a dynamically binarised model's test images with,
# the same draw as `tfpvae evaluate --binarize-seed 0`.
_RUN_SCORES_BINARIZE_SEED = 0


def _spread(x, y, limit: int):
    """(images, labels, indices): at most `limit` of x, evenly spread over the split, so that a
    split stored in class order (binarized_mnist's test split) still shows every class."""
    from tfpvae.datasets import evenly_spaced

    idx = evenly_spaced(len(x), limit)
    return x[idx], None if y is None else y[idx], idx


def _write_run_scores(model, x_test, y_test, run: Path, args) -> None:
    """Scores of --score-limit test images, evenly spread over the split (scores.csv, with each
    image's index in the split as its id), and their summary (evaluation.json)."""
    import numpy as np

    from tfpvae.bulk import iter_array_batches, score_to_csv

    x, y, idx = _spread(x_test, y_test, args.score_limit)
    # A model trained on Bernoulli draws of grey images models binary images: scoring the grey
    # values themselves gives a cross-entropy, not log p(x), and several nats above it.
    seed = _RUN_SCORES_BINARIZE_SEED if model.config.binarize == "dynamic" else None
    # Ids are the split indices, so each image's draws (and binarisation) are those of
    # `score --dataset ... --binarize-seed 0`, and rows can be compared.
    batches = (type(b)(b.images, [str(idx[int(i)]) for i in b.ids], b.labels) for b in iter_array_batches(x, y))
    names = ("log_prob", "elbo", "rate", "distortion", "complexity")
    summary_csv = score_to_csv(
        model.likelihood, batches, run / "scores.csv", names, num_samples=100, seed=0, binarize_seed=seed
    )
    scores = _read_score_columns(run / "scores.csv", ("log_prob", "elbo"))
    n = len(x)
    summary = {
        "split": "test",
        "num_images": n,
        "split_images": len(x_test),  # after --limit
        "limit": args.limit,
        "selection": "all" if n == len(x_test) else "evenly spaced (indices in scores.csv)",
        "num_samples": 100,
        "iwae_nll": float(-scores["log_prob"].mean()),
        "iwae_nll_stderr": float(scores["log_prob"].std(ddof=1) / np.sqrt(n)) if n > 1 else None,
        "elbo": float(scores["elbo"].mean()),
        "binarize_seed": seed,
        "rows": summary_csv["rows"],
    }
    (run / "evaluation.json").write_text(json.dumps(summary, indent=2))


def _read_score_columns(path: Path, columns) -> dict:
    """Columns of a score CSV as float arrays."""
    import numpy as np

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {c: np.array([float(r[c]) for r in rows]) for c in columns}


def _cmd_sample(args) -> int:
    import numpy as np

    from tfpvae import plots
    from tfpvae.serialization import load

    model = load(args.model)
    images = model.sample(args.num_samples, temperature=args.temperature, seed=args.seed)
    out = Path(args.out)  # .png or .npy: the parser checked
    if out.suffix.lower() == ".npy":
        with open(out, "wb") as f:  # a file, not a name: numpy would add ".npy" to "X.NPY"
            np.save(f, images, allow_pickle=False)
    else:
        plots.save_figure(plots.image_grid(images), out)
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


def _images_for_scoring(args, model):
    """(images, labels) from --input FILE or --dataset NAME --split S, cut to --limit, of the
    image shape `model` takes."""
    from tfpvae.datasets import load_images, load_split

    if args.input and args.dataset:
        raise ValueError(f"Give `--dataset` or `--input`, not both; got --dataset {args.dataset} --input {args.input}.")
    if args.input:
        x, y = load_images(args.input)
    elif args.dataset:
        x, y = load_split(args.dataset, args.split, args.data_dir)
    else:
        raise ValueError("Give the images to score: `--dataset NAME` or `--input FILE`.")
    _check_fits(model, x, f"--input {args.input}" if args.input else f"--dataset {args.dataset}", args.model)
    if args.limit:
        x, y = x[: args.limit], None if y is None else y[: args.limit]
    return x, y


def _check_fits(model, x, source: str, model_dir: str) -> None:
    """Raises naming the flag when images `x` are not of the shape `model` was trained on, before
    any work is done with them."""
    have, want = tuple(x.shape[1:]), tuple(model.config.input_shape)
    if have != want:
        raise ValueError(
            f"`{source}` images are {'x'.join(map(str, have))} but the model in {model_dir} takes "
            f"{'x'.join(map(str, want))} images."
        )


def _cmd_evaluate(args) -> int:
    import numpy as np

    from tfpvae.likelihood import LikelihoodEstimator, nats_to_bits_per_dim
    from tfpvae.serialization import load

    model = load(args.model)
    x, _ = _images_for_scoring(args, model)
    est = LikelihoodEstimator.from_model(model)
    kw = dict(seed=args.seed, binarize_seed=args.binarize_seed, progress=False if args.quiet else None)
    elbo = est.elbo(x, num_samples=1, **kw)
    log_p, mc_se = est.log_prob(x, num_samples=args.num_samples, return_stderr=True, **kw)
    n, dims = len(x), int(np.prod(x.shape[1:]))
    result = {
        "num_images": n,
        "num_samples": args.num_samples,
        "elbo": float(elbo.mean()),
        "elbo_stderr": float(elbo.std(ddof=1) / np.sqrt(n)) if n > 1 else None,
        "iwae_nll": float(-log_p.mean()),
        "iwae_nll_stderr": float(log_p.std(ddof=1) / np.sqrt(n)) if n > 1 else None,
        "iwae_nll_mc_stderr": float(np.sqrt(np.sum(mc_se**2)) / n),
        "bits_per_dim": float(nats_to_bits_per_dim(-log_p.mean(), dims)),
        "binarized": args.binarize_seed is not None,
    }
    print(json.dumps(result, indent=2))
    return 0


def _cmd_score(args) -> int:
    from tfpvae._keras import tfk
    from tfpvae.anomaly import available_scores
    from tfpvae.bulk import errors_path, iter_array_batches, score_to_csv
    from tfpvae.serialization import load, read_metadata

    model = load(args.model)
    if not _typed(args, "score"):  # the default list: the scores this model can give
        args.score = [s for s in available_scores(model.likelihood) if s in args.score]
    if "typicality" in args.score and args.typical_nll is None:
        raise ValueError(
            "`--score typicality` needs `--typical-nll` (the mean NLL of normal data, e.g. from evaluate)."
        )
    bad = [] if args.skip_bad else None
    total = None
    if args.input and args.dataset:
        raise ValueError(f"Give `--dataset` or `--input`, not both; got --dataset {args.dataset} --input {args.input}.")
    if args.input:
        from tfpvae.streaming import count_records, iter_batches

        batches = iter_batches(
            args.input,
            batch_size=args.batch_size,
            image_shape=model.config.input_shape,
            on_error=None if bad is None else bad.append,
        )
        if not args.quiet:
            total = count_records(args.input)
        source = {"input": args.input}
    elif args.dataset:
        x, y = _images_for_scoring(args, model)  # in memory already: the named sets are small
        batches = iter_array_batches(x, y, args.batch_size)
        total = len(x)
        source = {"dataset": args.dataset, "split": args.split}
    else:
        raise ValueError("Give the images to score: `--dataset NAME` or `--input FILE/FOLDER/GLOB`.")
    if args.limit:
        batches = _first_images(batches, args.limit)
        total = args.limit if total is None else min(total, args.limit)
    show = not args.quiet and total is not None and total > 1000 and sys.stdout.isatty()
    out = Path(args.out)
    summary = score_to_csv(
        model.likelihood,
        batches,
        out,
        args.score,
        num_samples=args.num_samples,
        seed=args.seed,
        binarize_seed=args.binarize_seed,
        typical_nll=args.typical_nll,
        bad_records=bad,
        settings={**source, "limit": args.limit, "weights_sha256": read_metadata(args.model).get("weights_sha256")},
        progress=tfk.utils.Progbar(total, unit_name="image") if show else None,
    )
    skipped = (
        f"; skipped {summary['bad_records']} bad records (listed in {errors_path(out)})" if bad is not None else ""
    )
    print(f"wrote {summary['rows']} rows of scores ({', '.join(summary['columns'])}) to {out}{skipped}")
    return 0


def _first_images(batches, limit: int):
    """The batches cut to their first `limit` images in all."""
    left = limit
    for batch in batches:
        if left <= 0:
            return
        if len(batch.ids) > left:
            labels = None if batch.labels is None else batch.labels[:left]
            batch = type(batch)(batch.images[:left], batch.ids[:left], labels)
        left -= len(batch.ids)
        yield batch


def _cmd_detect(args) -> int:
    import numpy as np

    from tfpvae.anomaly import available_scores, compute_scores, evaluate
    from tfpvae.datasets import load_split
    from tfpvae.likelihood import LikelihoodEstimator
    from tfpvae.serialization import load

    model = load(args.model)
    normal, _ = load_split(args.normal, "test", args.data_dir)
    anomalous, _ = load_split(args.anomalous, "test", args.data_dir)
    _check_fits(model, normal, f"--normal {args.normal}", args.model)
    _check_fits(model, anomalous, f"--anomalous {args.anomalous}", args.model)
    if args.limit:  # spread over each split: a split stored in class order still gives every class
        normal, anomalous = _spread(normal, None, 2 * args.limit)[0], _spread(anomalous, None, args.limit)[0]
    # Held-out normal images: half calibrate (typical NLL, threshold), half are evaluated.
    order = np.random.default_rng(args.seed).permutation(len(normal))
    fit_part, eval_part = normal[order[: len(normal) // 2]], normal[order[len(normal) // 2 :]]
    est = LikelihoodEstimator.from_model(model)
    names = available_scores(est)  # a plain autoencoder has only "distortion"
    kw = dict(
        num_samples=args.num_samples,
        seed=args.seed,
        binarize_seed=args.binarize_seed,
        progress=False if args.quiet else None,
    )
    fit_scores = compute_scores(est, fit_part, tuple(n for n in names if n != "typicality"), **kw)
    typical_nll = None
    if "typicality" in names:
        # As AnomalyDetector does: one half of the calibration images gives the typical NLL,
        # the other half sets the threshold, so the threshold is not fitted to its own reference.
        half = len(fit_part) // 2
        typical_nll = float(-fit_scores["log_prob"][half:].mean())
        fit_scores["typicality"] = -np.abs(-fit_scores["log_prob"][:half] - typical_nll)
    normal_scores = compute_scores(est, eval_part, names, typical_nll=typical_nll, **kw)
    anomalous_scores = compute_scores(est, anomalous, names, typical_nll=typical_nll, **kw)
    report = {}
    for name in names:
        threshold = float(np.quantile(fit_scores[name], args.target_fpr))
        report[name] = {
            **evaluate(normal_scores[name], anomalous_scores[name]),
            "threshold": threshold,
            "fpr_at_threshold": float(np.mean(normal_scores[name] < threshold)),
            "tpr_at_threshold": float(np.mean(anomalous_scores[name] < threshold)),
        }
    settings = {
        "normal": args.normal,
        "anomalous": args.anomalous,
        "num_calibration": len(fit_part),
        # typicality: of the calibration images, these give the typical NLL, the rest its threshold
        **({"num_typicality_reference": len(fit_part) - len(fit_part) // 2} if "typicality" in names else {}),
        "num_normal_evaluated": len(eval_part),
        "num_anomalous": len(anomalous),
        "num_samples": args.num_samples,
        "seed": args.seed,
        "binarize_seed": args.binarize_seed,
        "target_fpr": args.target_fpr,
    }
    print(json.dumps({**settings, "scores": report}, indent=2))
    return 0


def _cmd_plot(args) -> int:
    from tfpvae import plots
    from tfpvae.datasets import load_split
    from tfpvae.figures import make_figure, needs_data
    from tfpvae.serialization import load

    if args.binarize_seed is not None and args.kind not in ("histogram", "roc"):
        raise ValueError(f"`--binarize-seed` applies to the histogram and roc figures, not to {args.kind!r}.")
    model = load(args.model)
    x = y = x_anomalous = None
    if needs_data(args.kind, model):
        if not (args.dataset or args.input):
            raise ValueError(f"Figure {args.kind!r} needs images: `--dataset NAME` or `--input FILE`.")
        x, y = _images_for_scoring(args, model)
    if args.anomalous:
        x_anomalous, _ = load_split(args.anomalous, "test", args.data_dir)
        _check_fits(model, x_anomalous, f"--anomalous {args.anomalous}", args.model)
        x_anomalous = x_anomalous[: args.limit] if args.limit else x_anomalous
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
    )
    plots.save_figure(fig, args.out)
    print(f"wrote {args.kind} figure to {args.out}")
    return 0


def _cmd_interpolate(args) -> int:
    import numpy as np

    from tfpvae import plots
    from tfpvae.serialization import load

    model = load(args.model)
    x, _ = _images_for_scoring(args, model)
    if args.indices:
        idx = np.asarray(args.indices)
        if len(idx) % 2 or idx.min() < 0 or idx.max() >= len(x):
            raise ValueError(f"`--indices` must be pairs of image indices in [0, {len(x) - 1}]; got {args.indices}.")
        pairs = idx.reshape(-1, 2)
    else:
        pairs = np.random.default_rng(args.seed).choice(len(x), size=(min(args.pairs, len(x) // 2), 2), replace=False)
    path = model.interpolate(x[pairs[:, 0]], x[pairs[:, 1]], num_steps=args.steps, method=args.method)
    out = Path(args.out)  # .png or .npz: the parser checked
    if out.suffix.lower() == ".npz":
        with open(out, "wb") as f:  # a file, not a name: numpy would add ".npz" to "X.NPZ"
            np.savez(f, images=path.images, log_prior=path.log_prior, latents=path.latents, pairs=pairs)
    else:
        labels = [f"{a} -> {b}" for a, b in pairs]
        plots.save_figure(plots.interpolation_strips(path.images, path.log_prior, row_labels=labels), out)
    print(f"wrote {len(pairs)} interpolations of {args.steps} steps to {out}")
    return 0


def _cmd_export(args) -> int:
    from tfpvae.export import export
    from tfpvae.serialization import load

    path = export(
        load(args.model),
        args.out,
        num_samples=args.num_samples,
        binarize_seed=args.binarize_seed,
        typical_nll=args.typical_nll,
    )
    print(f"wrote SavedModel with signatures score, log_prob, elbo, sample (k={args.num_samples}) to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of the `tfpvae` command."""
    from tfpvae.config import (
        ACTIVATIONS,
        ARCHITECTURES,
        BINARIZE,
        LR_SCHEDULES,
        MODEL_TYPES,
        PRIORS,
        SCORES,
        VAEConfig,
    )
    from tfpvae.figures import FIGURES

    parser = _Parser(prog="tfpvae", description="Variational autoencoders from TFP layers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model and write it with samples and plots")
    _add_data_args(p, required=False)
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
    p.add_argument("--epochs", type=_positive_int, help="total passes over the data (default 10)")
    p.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=1,
        help="epochs between checkpoints; the last epoch is always checkpointed (default 1)",
    )
    p.add_argument("--clip-norm", type=_float_in(0.0), help="clip the global gradient norm (default: no clipping)")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="images per step (default 128)")
    # Model flags take their defaults from VAEConfig, so the CLI and Python agree.
    d = VAEConfig()
    model_flags = [
        ("--latent-dim", dict(type=_positive_int), "latent_dim", "latent dimension"),
        ("--prior", dict(choices=PRIORS), "prior", "prior kind"),
        ("--num-components", dict(type=_positive_int), "num_components", "mixture components"),
        ("--architecture", dict(choices=ARCHITECTURES), "architecture", "network family"),
        ("--model-type", dict(choices=MODEL_TYPES), "model_type", "vae or plain autoencoder"),
        ("--hidden-units", dict(type=_positive_int), "hidden_units", "width of the dense layers"),
        ("--filters", dict(type=_positive_int), "filters", "channels of the first conv block"),
        ("--activation", dict(choices=ACTIVATIONS), "activation", "hidden activation"),
        ("--dropout", dict(type=float), "dropout", "fraction of hidden dense units dropped in training"),
        ("--beta", dict(type=float), "beta", "KL weight"),
        ("--binarize", dict(choices=BINARIZE), "binarize", "training binarisation"),
        ("--learning-rate", dict(type=float), "learning_rate", "Adam step size"),
        ("--posterior-scale-floor", dict(type=float), "posterior_scale_floor", "minimum posterior std"),
        (
            "--train-samples",
            dict(type=_positive_int, metavar="K"),
            "train_samples",
            "importance samples per image in the training loss: 1 trains on the ELBO, K > 1 on the tighter "
            "IWAE bound (K decoder passes per image)",
        ),
    ]
    for flag, kind, field, text in model_flags:
        p.add_argument(flag, default=getattr(d, field), help=f"{text} (default {getattr(d, field)})", **kind)
    p.add_argument(
        "--kl-warmup-epochs",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="raise the KL weight linearly from beta/N in the first epoch to --beta at epoch N (default 0: none)",
    )
    p.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default="constant",
        help="per-epoch learning rate: cosine and exponential decay to 1/20 of --learning-rate at the last of "
        "--epochs (default constant)",
    )
    p.add_argument(
        "--early-stopping",
        type=_positive_int,
        metavar="PATIENCE",
        help="stop when the validation loss has not improved for PATIENCE epochs and keep the best epoch's "
        "weights; validates on the dataset's valid split (binarized_mnist) or else on the last 10%% of the "
        "training images, which are then not trained on (default: no early stopping; validate on the test split)",
    )
    p.add_argument(
        "--validation-images",
        type=_non_negative_int,
        metavar="N",
        help="validate after each epoch on only N validation images (the test split, or the "
        "--early-stopping hold-out), spread evenly over them; 0: no per-epoch validation (default: all of them)",
    )
    p.add_argument("--seed", type=_seed, default=None, help="seed for reproducible runs")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="one line per epoch, no bar")
    p.add_argument(
        "--strategy",
        choices=("default", "mirrored", "multiworker"),
        default="default",
        help="distribute training: mirrored (all local devices) or multiworker (TF_CONFIG); default none",
    )
    p.add_argument(
        "--evolution",
        action="store_true",
        help="also write evolution.gif (latent scatter by epoch) and reconstructions_by_epoch.png",
    )
    p.add_argument("--tensorboard", metavar="DIR", help="log metrics, learning rate and images for TensorBoard")
    p.add_argument(
        "--score-limit",
        type=_positive_int,
        default=1000,
        help="test images scored into scores.csv, evenly spread over the split (default 1000)",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="draw images from a trained model's prior")
    p.add_argument("--model", required=True, help="run folder written by train")
    p.add_argument("-n", "--num-samples", type=_positive_int, default=64, help="number of images (default 64)")
    p.add_argument("--temperature", type=float, default=1.0, help="prior spread multiplier (default 1.0)")
    p.add_argument("--seed", type=_seed, default=None, help="seed for reproducible samples")
    p.add_argument("--out", required=True, type=_file_ending(".png", ".npy"), help="output .png (grid) or .npy (array)")
    p.set_defaults(func=_cmd_sample, out_is_file=True)

    p = sub.add_parser("info", help="print a model's config, metrics and parameter count")
    p.add_argument("--model", required=True, help="run folder written by train")
    p.set_defaults(func=_cmd_info)

    def add_scoring_args(p):
        p.add_argument("--model", required=True, help="run folder written by train")
        p.add_argument("--num-samples", type=_positive_int, default=100, help="importance samples (default 100)")
        p.add_argument("--seed", type=_seed, default=0, help="seed of the Monte Carlo draws (default 0)")
        p.add_argument(
            "--binarize-seed", type=_seed, help="score a fixed binarisation of grey images drawn with this seed"
        )
        p.add_argument(
            "--quiet", action="store_true", help="no progress bar (default: a bar for long jobs on a terminal)"
        )

    p = sub.add_parser("evaluate", help="mean ELBO, IWAE NLL with standard errors, bits/dim (JSON)")
    add_scoring_args(p)
    _add_data_args(p)
    p.add_argument("--split", choices=("train", "valid", "test"), default="test", help="split (default test)")
    p.set_defaults(func=_cmd_evaluate, input=None)

    p = sub.add_parser("score", help="per-image anomaly scores to CSV")
    add_scoring_args(p)
    _add_data_args(p, required=False)
    p.add_argument("--split", choices=("train", "valid", "test"), default="test", help="split (default test)")
    p.add_argument(
        "--input",
        metavar="FILES",
        help="images streamed from files instead of --dataset: a file, folder or quoted glob of PNG/JPEG files, "
        "TFRecord files of tf.train.Example (bytes feature 'image', optional int64 'label'), or .npy/.npz arrays",
    )
    p.add_argument("--out", required=True, help="CSV file to write (one row per image: id, label, scores)")
    p.add_argument(
        "--score", nargs="+", choices=SCORES, default=[s for s in SCORES if s != "typicality"], help="scores"
    )
    p.add_argument("--typical-nll", type=float, help="mean NLL of normal data (needed by the typicality score)")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=1024,
        help="images read and scored at a time; memory holds one batch whatever the input size (default 1024)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip records that cannot be read, listing them with the reason in OUT.errors.csv (default: stop at "
        "the first, naming it)",
    )
    p.set_defaults(func=_cmd_score, out_is_file=True)

    p = sub.add_parser("plot", help="draw one figure of a trained model to a PNG")
    p.add_argument("kind", choices=FIGURES, metavar="KIND", help="one of: " + ", ".join(FIGURES))
    p.add_argument("--model", required=True, help="run folder written by train")
    _add_data_args(p, required=False)
    p.add_argument("--split", choices=("train", "valid", "test"), default="test", help="split (default test)")
    p.add_argument(
        "--input", help="images from files instead of --dataset: PNG/JPEG, TFRecord or .npy/.npz (file, folder, glob)"
    )
    p.add_argument(
        "--anomalous", choices=DATASETS, help="anomalous dataset for the histogram and roc figures (its test split)"
    )
    p.add_argument("--out", required=True, type=_file_ending(".png", ".pdf", ".svg"), help="output .png (or .pdf/.svg)")
    p.add_argument("--num-images", type=_positive_int, default=8, help="images per row / rows (default 8)")
    p.add_argument("--index", type=int, default=0, help="image the traversal/uncertainty figures start from")
    p.add_argument("--grid-size", type=_int_at_least(2), default=15, help="manifold grid cells per side (default 15)")
    p.add_argument("--method", choices=("auto", "direct", "pca", "tsne"), default="auto", help="scatter embedding")
    p.add_argument("--num-samples", type=_positive_int, default=64, help="Monte Carlo samples (default 64)")
    p.add_argument("--temperature", type=float, default=1.0, help="prior temperature for samples (default 1.0)")
    p.add_argument("--no-labels", action="store_true", help="ignore the dataset's labels")
    p.add_argument("--seed", type=_seed, default=0, help="seed (default 0)")
    p.add_argument(
        "--binarize-seed",
        type=_seed,
        help="histogram and roc: score a fixed binarisation of grey images drawn with this seed",
    )
    p.set_defaults(func=_cmd_plot, out_is_file=True)

    p = sub.add_parser("interpolate", help="decode paths between pairs of images (PNG strips or .npz)")
    p.add_argument("--model", required=True, help="run folder written by train")
    _add_data_args(p, required=False)
    p.add_argument("--split", choices=("train", "valid", "test"), default="test", help="split (default test)")
    p.add_argument(
        "--input", help="images from files instead of --dataset: PNG/JPEG, TFRecord or .npy/.npz (file, folder, glob)"
    )
    p.add_argument("--indices", type=int, nargs="+", help="pairs of image indices: i1 j1 i2 j2 ...")
    p.add_argument("--pairs", type=_positive_int, default=6, help="random pairs when --indices is not given")
    p.add_argument("--steps", type=_int_at_least(2), default=10, help="images per path (default 10)")
    p.add_argument("--method", choices=("linear", "slerp"), default="slerp", help="path shape (default slerp)")
    p.add_argument("--seed", type=_seed, default=0, help="seed for the random pairs (default 0)")
    p.add_argument(
        "--out",
        required=True,
        type=_file_ending(".png", ".npz"),
        help="output .png (strips) or .npz (images, log_prior, latents)",
    )
    p.set_defaults(func=_cmd_interpolate, out_is_file=True)

    p = sub.add_parser("export", help="write a TensorFlow SavedModel with score, log_prob, elbo and sample signatures")
    p.add_argument("--model", required=True, help="run folder written by train")
    p.add_argument("--out", required=True, help="folder for the SavedModel")
    p.add_argument("--num-samples", type=_positive_int, default=64, help="importance samples per image (default 64)")
    p.add_argument("--binarize-seed", type=_seed, help="serve the scores of a fixed binarisation drawn with this seed")
    p.add_argument("--typical-nll", type=float, help="mean NLL of normal data: also serve the typicality score")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("detect", help="fit a detector on held-out normal data and report metrics per score")
    add_scoring_args(p)
    p.add_argument("--normal", choices=DATASETS, required=True, help="dataset the model takes as normal")
    p.add_argument("--anomalous", choices=DATASETS, required=True, help="dataset of anomalies")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument(
        "--limit",
        type=_int_at_least(4),
        help="use N anomalous and 2N normal test images (N >= 4), spread evenly over each split",
    )
    p.add_argument("--target-fpr", type=_float_in(0.0, 1.0), default=0.05, help="false-positive rate of the threshold")
    p.set_defaults(func=_cmd_detect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit status (0 ok, 2 user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # what was typed, to tell an explicit flag from its default
    try:
        folder = Path(args.out).parent if getattr(args, "out_is_file", False) else None
        if folder is not None and not folder.is_dir():  # checked first: the output comes after all the work
            problem = "is a file, not a folder" if folder.exists() else "does not exist"
            raise NotADirectoryError(f"`--out {args.out}`: folder {folder} {problem}.")
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"tfpvae: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tfpvae: interrupted", file=sys.stderr)
        return 130
