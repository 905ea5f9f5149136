"""Numbers per image and per set: `tfpvae evaluate`, `tfpvae score` and `tfpvae detect`."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tfpvae._arguments import UsageError, finite, float_in, int_at_least, positive_int
from tfpvae.cli._common import (
    DATA_DIR_HELP,
    add_data_args,
    add_scoring_args,
    as_input_error,
    example,
    images_for_scoring,
    load_model,
    test_images,
    typed,
)
from tfpvae.config import SCORES
from tfpvae.datasets import NAMES as DATASETS


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    """Adds `tfpvae evaluate`."""
    p = sub.add_parser(
        "evaluate",
        help="mean ELBO, IWAE NLL with standard errors, bits/dim (JSON)",
        **example("tfpvae evaluate --model runs/fashion --dataset fashion_mnist --limit 1000"),
    )
    add_scoring_args(p)
    add_data_args(p, split=True)
    p.set_defaults(func=evaluate, input=None)


def add_score(sub: argparse._SubParsersAction) -> None:
    """Adds `tfpvae score`."""
    p = sub.add_parser(
        "score",
        help="per-image anomaly scores to CSV",
        **example("tfpvae score --model runs/fashion --dataset mnist --limit 1000 --out mnist.csv"),
    )
    add_scoring_args(p)
    add_data_args(p, required=False, split=True)
    p.add_argument(
        "--input",
        metavar="FILES",
        help="images streamed from files instead of --dataset: a file, folder or quoted glob of PNG/JPEG files, "
        "TFRecord files of tf.train.Example (bytes feature 'image', optional int64 'label'), or .npy/.npz arrays",
    )
    p.add_argument("--out", required=True, help="CSV file to write (one row per image: id, label, scores)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out file (default: refuse an existing file)"
    )
    p.add_argument(
        "--score",
        nargs="+",
        choices=SCORES,
        default=[s for s in SCORES if s != "typicality"],
        help="scores to compute (default: all but typicality)",
    )
    p.add_argument("--typical-nll", type=finite, help="mean NLL of normal data (needed by the typicality score)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=1024,
        help="images read and scored at a time; memory holds one batch whatever the input size (default 1024)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip records that cannot be read, listing them with the reason in OUT.errors.csv (default: stop at "
        "the first, naming it)",
    )
    p.set_defaults(func=score, out_is_file=True)


def add_detect(sub: argparse._SubParsersAction) -> None:
    """Adds `tfpvae detect`."""
    p = sub.add_parser(
        "detect",
        help="fit a detector on held-out normal data and report metrics per score",
        **example("tfpvae detect --model runs/fashion --normal fashion_mnist --anomalous mnist \\\n    --limit 500"),
    )
    add_scoring_args(p)
    p.add_argument("--normal", choices=DATASETS, required=True, help="dataset the model takes as normal")
    p.add_argument("--anomalous", choices=DATASETS, required=True, help="dataset of anomalies")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument(
        "--limit",
        type=int_at_least(4),
        help="use N anomalous and 2N normal test images (N >= 4), spread evenly over each split",
    )
    p.add_argument(
        "--target-fpr",
        type=float_in(0.0, 1.0),
        default=0.05,
        help="largest false-positive rate of the threshold; with --batch-size also the level of the batch tests",
    )
    p.add_argument(
        "--batch-size",
        type=int_at_least(2),
        help="also test batches of N images (N >= 2) for a shift of the whole batch (typicality and MMD permutation "
        "tests) and report their false-positive rate and power at --target-fpr (default: per-image scores only)",
    )
    p.set_defaults(func=detect)


def evaluate(args: argparse.Namespace) -> int:
    """Prints the mean ELBO, IWAE NLL and bits/dim of a set of images as JSON."""
    import numpy as np

    from tfpvae.likelihood import nats_to_bits_per_dim

    model = load_model(args)
    x, _ = images_for_scoring(args, model)
    kw = dict(seed=args.seed, binarize_seed=args.binarize_seed, progress=False if args.quiet else None)
    estimator = model.estimator(args.precision)
    elbo = estimator.elbo(x, num_samples=1, **kw)
    log_p, mc_se = estimator.log_prob(x, num_samples=args.num_samples, return_stderr=True, **kw)
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
        "precision": estimator.precision,
    }
    print(json.dumps(result, indent=2))
    return 0


def _score_batches(args: argparse.Namespace, model: Any, bad: list | None) -> tuple[Iterable[Any], int | None, dict]:
    """(batches of images, their number if known, where they came from) for `tfpvae score`."""
    from tfpvae.bulk import iter_array_batches

    if args.input and args.dataset:
        raise UsageError(f"Give `--dataset` or `--input`, not both; got --dataset {args.dataset} --input {args.input}.")
    if args.input:
        from tfpvae.streaming import count_records, iter_batches, list_files

        try:  # listed now, so that a missing or unreadable input is a one-line error naming the flag
            files = list_files(args.input)
        except (ValueError, TypeError, FileNotFoundError) as err:
            raise as_input_error(err) from None
        batches = iter_batches(
            args.input,
            batch_size=args.batch_size,
            image_shape=model.config.input_shape,
            on_error=None if bad is None else bad.append,
            files=files,
        )
        total = None if args.quiet else count_records(files)
        source = {"input": args.input}
    elif args.dataset:
        x, y = images_for_scoring(args, model)  # in memory already: the named sets are small
        batches, total = iter_array_batches(x, y, args.batch_size), len(x)
        source = {"dataset": args.dataset, "split": args.split}
    else:
        raise UsageError("Give the images to score: `--dataset NAME` or `--input FILE/FOLDER/GLOB`.")
    if args.limit:
        batches = _first_images(batches, args.limit)
        total = args.limit if total is None else min(total, args.limit)
    return batches, total, source


def score(args: argparse.Namespace) -> int:
    """Writes per-image scores to a CSV file, batch by batch."""
    from tfpvae._keras import tfk
    from tfpvae.anomaly import available_scores
    from tfpvae.bulk import errors_path, score_to_csv
    from tfpvae.serialization import read_metadata
    from tfpvae.write_guard import check_new_file

    check_new_file(args.out, "--out", args.overwrite)  # before any work: hours of scores are not written over
    model = load_model(args)
    available = available_scores(model.likelihood)
    if not typed(args, "score"):  # the default list: the scores this model can give
        args.score = [s for s in available if s in args.score]
    for name in args.score:
        if name not in available:  # a plain autoencoder: distortion only
            try:
                model.likelihood.require_likelihood(name)
            except ValueError as err:
                raise UsageError(str(err)) from None
    if "typicality" in args.score and args.typical_nll is None:
        raise UsageError(
            "`--score typicality` needs `--typical-nll` (the mean NLL of normal data, e.g. from evaluate)."
        )
    bad = [] if args.skip_bad else None
    batches, total, source = _score_batches(args, model, bad)
    show = not args.quiet and total is not None and total > 1000 and sys.stdout.isatty()
    out = Path(args.out)
    estimator = model.estimator(args.precision)
    summary = score_to_csv(
        estimator,
        batches,
        out,
        args.score,
        num_samples=args.num_samples,
        seed=args.seed,
        binarize_seed=args.binarize_seed,
        typical_nll=args.typical_nll,
        bad_records=bad,
        settings={
            **source,
            "limit": args.limit,
            "precision": estimator.precision,
            "weights_sha256": read_metadata(args.model).get("weights_sha256"),
        },
        progress=tfk.utils.Progbar(total, unit_name="image") if show else None,
    )
    skipped = (
        f"; skipped {summary['bad_records']} bad records (listed in {errors_path(out)})" if bad is not None else ""
    )
    print(f"wrote {summary['rows']} rows of scores ({', '.join(summary['columns'])}) to {out}{skipped}")
    return 0


def _first_images(batches: Iterable[Any], limit: int) -> Iterator[Any]:
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


def detect(args: argparse.Namespace) -> int:
    """Fits one detector per score on half the held-out normal images; reports each on the rest."""
    import numpy as np

    from tfpvae.anomaly import FlagsNothingWarning, available_scores, detection_report, fit_detectors
    from tfpvae.subsets import spread

    model = load_model(args)
    normal, anomalous = test_images(args, "normal", model), test_images(args, "anomalous", model)
    if args.limit:  # spread over each split: a split stored in class order still gives every class
        normal, anomalous = spread(normal, None, 2 * args.limit)[0], spread(anomalous, None, args.limit)[0]
    # Held-out normal images: half calibrate the detectors, half are evaluated.
    order = np.random.default_rng(args.seed).permutation(len(normal))
    fit_part, eval_part = normal[order[: len(normal) // 2]], normal[order[len(normal) // 2 :]]
    if args.batch_size is not None:  # before the scoring work: refuse what the batch tests cannot do
        if model.config.model_type != "vae":
            raise UsageError(
                f"`--batch-size` tests batches by their likelihood, and `--model` {args.model} is a plain "
                "autoencoder (it has none); leave out --batch-size for its per-image scores."
            )
        _check_batch_size(args.batch_size, {"evaluated normal": eval_part, "anomalous": anomalous})
    names = available_scores(model.likelihood, detector=True)  # "combined" first; an autoencoder: "distortion"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FlagsNothingWarning)  # said below, in the command's terms
        detectors = fit_detectors(
            model,
            fit_part,
            names,
            num_samples=args.num_samples,
            target_fpr=args.target_fpr,
            seed=args.seed,
            binarize_seed=args.binarize_seed,
            progress=False if args.quiet else None,
            precision=args.precision,
        )
    report = detection_report(detectors, eval_part, anomalous)
    flags_nothing = [name for name, detector in detectors.items() if detector.flags_nothing_]
    if flags_nothing:
        print(
            f"tfpvae: note: the thresholds of {', '.join(flags_nothing)} flag no image (threshold null): their "
            f"calibration images are too few for --target-fpr {args.target_fpr}; use a larger --limit or "
            "--target-fpr.",
            file=sys.stderr,
        )
    for row in report.values():
        row["threshold"] = row["threshold"] if np.isfinite(row["threshold"]) else None  # JSON has no -Infinity
    settings = {
        "normal": args.normal,
        "anomalous": args.anomalous,
        "num_calibration": len(fit_part),
        # typicality and combined: of the calibration images, these fit the score, the rest its threshold
        **{
            f"num_{name}_reference": len(fit_part) - len(detectors[name].calibration_scores_)
            for name in ("combined", "typicality")
            if name in detectors
        },
        "num_normal_evaluated": len(eval_part),
        "num_anomalous": len(anomalous),
        "num_samples": args.num_samples,
        "seed": args.seed,
        "binarize_seed": args.binarize_seed,
        "target_fpr": args.target_fpr,
        "precision": model.estimator(args.precision).precision,
    }
    batch_test = (
        {} if args.batch_size is None else {"batch_test": _batch_report(args, model, fit_part, eval_part, anomalous)}
    )
    print(json.dumps({**settings, "scores": report, **batch_test}, indent=2))
    return 0


def _check_batch_size(n: int, images: dict[str, Any]) -> None:
    """Raises naming --batch-size when a set of `images` (kind -> array) holds fewer than one batch."""
    for kind, x in images.items():
        if len(x) < n:
            raise UsageError(
                f"`--batch-size {n}` is more than the {len(x)} {kind} images: give a smaller batch size "
                "or a larger `--limit`."
            )


def _batch_report(args: argparse.Namespace, model: Any, fit_part: Any, normal: Any, anomalous: Any) -> dict[str, Any]:
    """`tfpvae detect --batch-size`: the batch tests fitted on `fit_part`, on batches of the other images."""
    import numpy as np

    from tfpvae.batch_tests import TESTS, BatchShiftTest

    n = args.batch_size
    test = BatchShiftTest(
        model,
        num_samples=args.num_samples,
        seed=args.seed,
        binarize_seed=args.binarize_seed,
        progress=False if args.quiet else None,
        precision=args.precision,
    ).fit(fit_part)
    p_normal, p_anomalous = test.test_batches(normal, n), test.test_batches(anomalous, n)
    alpha = args.target_fpr
    return {
        "batch_size": n,
        "alpha": alpha,
        "num_normal_batches": len(p_normal["either"]),
        "num_anomalous_batches": len(p_anomalous["either"]),
        "num_reference": len(test.reference_nll_),
        "num_permutations": test.num_permutations,
        "tests": {
            name: {
                "fpr": float(np.mean(p_normal[name] <= alpha)),
                "power": float(np.mean(p_anomalous[name] <= alpha)),
                "median_p_normal": float(np.median(p_normal[name])),
                "median_p_anomalous": float(np.median(p_anomalous[name])),
            }
            for name in TESTS
        },
    }
