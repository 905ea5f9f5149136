"""Scores image files with Apache Beam: the rows of `tfpvae score --input`, computed on many workers.

This module builds the pipeline (`build_pipeline`) and runs it from the command line
(`run`); the model handler lives in `tfpvae.beam_handler` (re-exported here) and the
other transforms in `tfpvae.beam_transforms`. For the same inputs and flags as
`tfpvae score`, the pipeline:

1. `fileio.MatchFiles` lists each file, folder or glob of the input on the workers,
   and each match is renamed to the spelling `tfpvae.streaming.list_files` gives it,
   because a record's id (and so its Monte Carlo draws) is made from that path;
2. `Reshuffle` spreads the files over the workers;
3. a DoFn reads each file's records with `tfpvae.streaming.read_records` and checks
   them as `tfpvae.streaming.iter_batches` does (shape against the model's
   config.json, values in [0, 1]); a record that fails goes to the dead-letter output
   with its reason, never dropped;
4. `RunInference` with `TfpvaeModelHandler` batches the images (`BatchElements`), loads
   the model once per worker process and scores each batch with
   `tfpvae.anomaly.compute_scores`;
5. `WriteToText` writes CSV shards `PREFIX-SSSSS-of-NNNNN.csv` (header
   `id,label,<columns>`, rows as `tfpvae.bulk.format_row` makes them) and
   `PREFIX-errors-SSSSS-of-NNNNN.csv` (header `id,reason`).

Every score depends only on (model, image, id, seed), never on the batch or worker, so
the union of the shards holds the rows `tfpvae score --input SAME --skip-bad` writes, in
another order.

Run it as a module; flags Beam knows (`--runner`, `--direct_num_workers`, ...) go to Beam:

    python -m tfpvae.beam --model RUN --input 'shards/*.tfrecord' \\
        --output out/scores --num-samples 64 \\
        --direct_num_workers 2 --direct_running_mode multi_processing
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

# `seed` renamed: it is also the name of the Monte Carlo seed argument of the functions below.
from tfpvae._arguments import Parser, add_precision_arg, finite, positive_int
from tfpvae._arguments import seed as seed_arg
from tfpvae._validation import MAX_INT32_SEED, check_choice, check_float, check_int, check_seed
from tfpvae.beam_handler import METRICS_NAMESPACE, Example, Row, RunFolder, TfpvaeModelHandler, read_run_folder
from tfpvae.beam_transforms import FormatError, FormatRow, ReadRecords, csv_line, match_files
from tfpvae.bulk import DEFAULT_BATCH_SIZE
from tfpvae.config import PRECISIONS, SCORES
from tfpvae.input_files import is_single_array
from tfpvae.registry import import_modules
from tfpvae.streaming import list_files
from tfpvae.write_guard import OutputExistsError

# The handler and its types are re-exported from tfpvae.beam_handler: code and docs import them from here.
__all__ = [
    "ERRORS_SUFFIX",
    "METRICS_NAMESPACE",
    "Example",
    "Row",
    "ScoringOutputs",
    "TfpvaeModelHandler",
    "build_parser",
    "build_pipeline",
    "run",
]

ERRORS_SUFFIX = "-errors"
"""The dead-letter shards are PREFIX + this + "-SSSSS-of-NNNNN.csv"."""
_DIRECT_RUNNERS = ("directrunner", "direct", "switchingdirectrunner", "bundlebaseddirectrunner")


class ScoringOutputs(NamedTuple):
    """What `build_pipeline` adds to a pipeline.

    Attributes:
      rows: PCollection of (id, label, {column: float}), one per scored image; label is
        an int or None.
      errors: PCollection of (id, reason), one per record that could not be scored.
      columns: the score columns of the CSV, after `id` and `label`.
    """

    rows: beam.PCollection
    errors: beam.PCollection
    columns: list[str]


def _check_scores(scores: Sequence[str] | None, model: RunFolder, typical_nll: float | None, names: dict) -> tuple:
    """The scores to compute: `tfpvae score`'s choice and checks, before any work is sent out."""
    available = SCORES if model.defines_likelihood else ("distortion",)
    if scores is None:  # as `tfpvae score`: every score the model gives but typicality, asked for by name
        return tuple(s for s in available if s != "typicality")
    if isinstance(scores, str) or not isinstance(scores, Sequence) or not scores:
        raise TypeError(f"{names['scores']} must be a non-empty list of names from {SCORES}; got {scores!r}.")
    for score in scores:
        check_choice(score, names["scores"].strip("`"), SCORES)
        if score not in available:
            raise ValueError(
                f"{names['scores']} {score!r} needs a VAE; {names['model_dir']} is a plain autoencoder, which defines "
                f"no likelihood: its only score is 'distortion'."
            )
    if "typicality" in scores and typical_nll is None:
        raise ValueError(
            f"{names['scores']} 'typicality' needs {names['typical_nll']}, the mean NLL of normal data "
            f"(e.g. from `tfpvae evaluate`)."
        )
    return tuple(scores)


def _threads_per_worker(options: Any) -> int | None:
    """TensorFlow threads per process when the DirectRunner runs several worker processes on this machine."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    runner = options.view_as(StandardOptions).runner
    direct = options.view_as(DirectOptions)
    if runner is not None and str(runner).lower() not in _DIRECT_RUNNERS:
        return None
    if direct.direct_running_mode != "multi_processing":
        return None
    cores = os.cpu_count() or 1
    workers = direct.direct_num_workers or cores  # 0 means one worker per core
    # Each process would otherwise size its intra-op pool for every core, and the processes
    # then fight over the same cores: measured with 2 processes on 2 cores, 1 thread each
    # spends about 10% less CPU time per image than the default.
    return max(1, cores // workers)


def _check_output(output: Any, overwrite: bool, names: dict[str, str]) -> str:
    """The output prefix, checked: a local folder that exists, and no shards there unless `overwrite`."""
    from apache_beam.io.filesystems import FileSystems

    name = names["output"]
    if not isinstance(output, (str, os.PathLike)) or not os.fspath(output):
        raise TypeError(f"{name} must be a non-empty path prefix such as 'out/scores'; got {output!r}.")
    output = os.fspath(output)
    if "://" not in output:
        folder = Path(output).parent
        if not folder.is_dir():
            problem = "is a file, not a folder" if folder.exists() else "does not exist"
            raise NotADirectoryError(f"{name} {output}: folder {folder} {problem}.")
    if not overwrite:  # on any file system Beam reaches (gs://...), as the shards will be written
        patterns = [f"{output}-?????-of-?????.csv", f"{output}{ERRORS_SUFFIX}-?????-of-?????.csv"]
        found = [m.path for result in FileSystems.match(patterns) for m in result.metadata_list]
        if found:
            holds = f"score shards ({os.path.basename(sorted(found)[0])}, ...)"
            raise OutputExistsError(name.strip("`"), output, holds, flags=("", names["overwrite"]))
    return output


_API_NAMES = {
    "model_dir": "`model_dir`",
    "input": "`input`",
    "output": "`output`",
    "scores": "`scores`",
    "typical_nll": "`typical_nll`",
    "imports": "`imports`",
    "overwrite": "`overwrite=True`",
}
_CLI_NAMES = {
    "model_dir": "`--model`",
    "input": "`--input`",
    "output": "`--output`",
    "scores": "`--score`",
    "typical_nll": "`--typical-nll`",
    "imports": "`--import`",
    "overwrite": "`--overwrite`",
}


def _build(
    pipeline: beam.Pipeline,
    model_dir: Any,
    input: Any,  # noqa: A002 - the documented name, as the CLI flag
    output: Any,
    scores: Sequence[str] | None,
    num_samples: int,
    seed: int,
    binarize_seed: int | None,
    typical_nll: float | None,
    batch_size: int,
    imports: Sequence[str],
    precision: str,
    overwrite: bool,
    names: dict[str, str],
) -> ScoringOutputs:
    if not isinstance(pipeline, beam.Pipeline):
        raise TypeError(f"`pipeline` must be an apache_beam.Pipeline; got {type(pipeline).__name__}.")
    if not isinstance(model_dir, (str, os.PathLike)):
        raise TypeError(f"{names['model_dir']} must be a run folder path; got {model_dir!r}.")
    model_dir = os.fspath(model_dir)
    import_modules(imports, names["imports"].strip("`"))  # here too: the folder's names are checked now
    model = read_run_folder(model_dir, names["model_dir"])
    if typical_nll is not None:
        typical_nll = check_float(typical_nll, names["typical_nll"].strip("`"))
    scores = _check_scores(scores, model, typical_nll, names)
    output = _check_output(output, overwrite, names)
    handler = TfpvaeModelHandler(
        model_dir,
        scores,
        num_samples,
        seed,
        binarize_seed,
        typical_nll,
        batch_size=batch_size,
        intra_op_threads=_threads_per_worker(pipeline.options),
        imports=imports,
        precision=precision,
    )
    try:
        # Checked here as `tfpvae score` checks it, so that a missing input fails before any
        # worker starts; the listing also says whether ids of array rows are bare row numbers.
        listed = list_files(input)
    except (ValueError, TypeError, FileNotFoundError) as err:
        message = str(err).replace("`source`", names["input"])
        raise type(err)(message) from None
    single_array = is_single_array(listed)
    paths = match_files(pipeline, input)
    # No file is read before the workers' listing is known to agree with this one, whose
    # count the ids of array rows rely on: a disagreement scores nothing.
    found = beam.pvalue.AsSingleton(paths | "tfpvae/CountFiles" >> beam.combiners.Count.Globally())
    records = (
        paths
        | "tfpvae/CheckListing" >> beam.Map(_listed_alike, len(listed), found)
        | "tfpvae/Reshuffle" >> beam.Reshuffle()
        | "tfpvae/Read" >> beam.ParDo(ReadRecords(single_array, model.input_shape)).with_outputs("errors", main="ok")
    )
    rows = records.ok | "tfpvae/Score" >> RunInference(handler)
    columns = handler.columns
    header = csv_line(["id", "label", *columns])
    _ = (
        rows
        | "tfpvae/FormatRows" >> beam.ParDo(FormatRow(columns))
        | "tfpvae/WriteRows" >> beam.io.WriteToText(output, file_name_suffix=".csv", header=header)
    )
    _ = (
        records.errors
        | "tfpvae/FormatErrors" >> beam.ParDo(FormatError())
        | "tfpvae/WriteErrors"
        >> beam.io.WriteToText(output + ERRORS_SUFFIX, file_name_suffix=".csv", header="id,reason")
    )
    return ScoringOutputs(rows, records.errors, columns)


def _listed_alike(path: str, listed: int, found: int) -> str:
    """`path`, once the files the workers matched are as many as the pipeline's build listed."""
    if found != listed:
        raise ValueError(
            f"The files Beam's workers matched are not those listed when the pipeline was built ({found} "
            f"matched, {listed} listed): the input changed while it ran, or it matches a folder named like "
            "an image file. Nothing was scored."
        )
    return path


def build_pipeline(
    pipeline: beam.Pipeline,
    model_dir: str | os.PathLike,
    input: str | os.PathLike | Sequence[str | os.PathLike],  # noqa: A002 - the name of `tfpvae score --input`
    output: str | os.PathLike,
    scores: Sequence[str] | None = None,
    num_samples: int = 100,
    seed: int = 0,
    binarize_seed: int | None = None,
    typical_nll: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    imports: Sequence[str] = (),
    precision: str = "float32",
    overwrite: bool = False,
) -> ScoringOutputs:
    """Adds the scoring of image files to `pipeline`: read, check, score, write CSV shards.

    The arguments are checked, the model's config.json read and the input listed here,
    before anything runs, so a mistake fails at once with a message naming the argument.

    Args:
      pipeline: the `beam.Pipeline` to add the transforms to (labels start "tfpvae/").
      model_dir: run folder written by `tfpvae train` / `VAE.save`, local or on any file
        system `tf.io.gfile` has (gs://...; each worker copies it to a temporary folder).
      input: a file, folder or glob of PNG/JPEG, TFRecord or .npy/.npz files, or a list
        of those, as `tfpvae.streaming.list_files` takes (ids as `tfpvae score --input`
        gives them; see `tfpvae.streaming`). Globs are matched on the workers by Beam,
        whose `**` also crosses folders.
      output: path prefix of the CSV shards: PREFIX-SSSSS-of-NNNNN.csv (header
        `id,label,<columns>`) and PREFIX-errors-SSSSS-of-NNNNN.csv (header `id,reason`).
        A prefix that already has shards is refused unless `overwrite`. A local
        prefix's folder must exist.
      scores: names from `tfpvae.anomaly.SCORES`. None: every score the model
        gives except "typicality" (as `tfpvae score`; name it, with `typical_nll`).
      num_samples: importance samples per image, >= 1.
      seed: Monte Carlo seed in [0, 2^31 - 1].
      binarize_seed: score the fixed binarisation keyed by (id, binarize_seed), in
        [0, 2^31 - 1]. None: score the grey values.
      typical_nll: mean NLL of normal data, needed by "typicality".
      batch_size: images per scoring batch, >= 1. Default 1024.
      imports: modules that register the model's network or prior, imported here and by
        each worker before it loads the model: dotted names (installed on the workers, e.g.
        with Beam's --setup_file) or .py paths (local runners).
      precision: the networks' arithmetic on the workers: "float32", "bfloat16"
        or "auto" (bfloat16 on workers with native bfloat16 units); see `tfpvae.precision`.
      overwrite: write over the shards of an earlier run with this prefix (shards of
        another shard count are not removed).

    Returns:
      `ScoringOutputs`: the rows and errors PCollections (already written) and the
      score columns.

    Raises:
      ValueError, TypeError: a bad argument, or `model_dir` is not a readable run folder.
      FileNotFoundError: `input` names nothing (as `tfpvae.streaming.list_files`).
      NotADirectoryError: the folder of a local `output` does not exist.
      OutputExistsError: `output` already has shards and `overwrite` is False.

    Examples:
      >>> with beam.Pipeline() as p:
      ...     build_pipeline(
      ...         p, "runs/mnist", "shards/*.tfrecord", "out/scores", num_samples=64
      ...     )
    """
    check_int(num_samples, "num_samples")
    check_seed(seed, "seed", maximum=MAX_INT32_SEED)
    check_seed(binarize_seed, "binarize_seed", maximum=MAX_INT32_SEED)
    check_int(batch_size, "batch_size")
    check_choice(precision, "precision", PRECISIONS)
    return _build(
        pipeline,
        model_dir,
        input,
        output,
        scores,
        num_samples,
        seed,
        binarize_seed,
        typical_nll,
        batch_size,
        imports,
        precision,
        overwrite,
        _API_NAMES,
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of tfpvae.beam's own flags: those of `tfpvae score --input`, plus --output."""
    # The `tfpvae` command's one-line parser and checked types, so both read flags alike.
    p = Parser(
        prog="tfpvae.beam",
        description="Score image files with Apache Beam into CSV shards (the rows of `tfpvae score --input`). "
        "Flags not listed here are Beam pipeline options (--runner, --direct_num_workers, ...).",
        allow_abbrev=False,  # an abbreviation could take a Beam flag meant for the pipeline
    )
    p.add_argument("--model", required=True, help="run folder written by `tfpvae train`")
    p.add_argument(
        "--input",
        required=True,
        metavar="FILES",
        help="a file, folder or quoted glob of PNG/JPEG files, TFRecord files of tf.train.Example (bytes feature "
        "'image', optional int64 'label'), or .npy/.npz arrays",
    )
    p.add_argument(
        "--output",
        required=True,
        metavar="PREFIX",
        help="CSV shards PREFIX-SSSSS-of-NNNNN.csv and, for unreadable records, PREFIX-errors-SSSSS-of-NNNNN.csv",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="write over the shards of an earlier run (default: refuse them)"
    )
    p.add_argument(
        "--score",
        nargs="+",
        choices=SCORES,
        help="scores (default: every score the model gives except typicality)",
    )
    p.add_argument("--num-samples", type=positive_int, default=100, help="importance samples (default 100)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the Monte Carlo draws (default 0)")
    p.add_argument(
        "--binarize-seed", type=seed_arg, help="score a fixed binarisation of grey images drawn with this seed"
    )
    p.add_argument("--typical-nll", type=finite, help="mean NLL of normal data (needed by the typicality score)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"images per scoring batch (default {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module (dotted name, or a .py file) that registers the model's network or prior; imported here "
        "and on every worker (repeatable)",
    )
    add_precision_arg(p)
    return p


def _pipeline_options(args: Sequence[str]) -> Any:
    """`PipelineOptions(args)`, checked now: a bad or unknown flag is a one-line ValueError.

    Beam would drop a flag it does not know with a log line, so a mistyped flag of ours
    (`--num-sample`) would be ignored silently; and a bad value of a Beam flag would print
    Beam's whole usage (hundreds of lines) before exiting.
    """
    import logging

    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(list(args))
    beam_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_log.level
    beam_log.setLevel(logging.ERROR)  # its "Discarding unparseable args" line: we say it in one line below
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            known = set(options.get_all_options())
            unknown = set(options.get_all_options(retain_unknown_options=True)) - known
    except SystemExit:
        lines = usage.getvalue().strip().splitlines() or ["invalid value"]
        raise ValueError(f"Beam pipeline option {lines[-1].split('error: ', 1)[-1]}") from None
    finally:
        beam_log.setLevel(level)
    flags = [a.split("=", 1)[0] for a in args if a.startswith("--")]
    typed = [flag for flag in dict.fromkeys(flags) if flag[2:].replace("-", "_") in unknown]
    if typed:
        raise ValueError(
            f"unrecognised flags {', '.join(typed)}: neither tfpvae.beam's (see `tfpvae.beam --help`) nor Beam "
            f"pipeline options."
        )
    return options


def _counter(result: Any, name: str) -> int | None:
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name))["counters"]
    except (NotImplementedError, AttributeError, KeyError):
        return None  # a runner without metrics
    values = [c.committed if c.committed is not None else c.attempted for c in found]
    return int(sum(v for v in values if v is not None)) if values else 0


def run(argv: Sequence[str] | None = None) -> int:
    """Runs `python -m tfpvae.beam`; returns the exit status (0 done, 2 a mistake in the flags).

    Args:
      argv: the arguments, tfpvae.beam's flags and Beam pipeline options mixed.
        None: `sys.argv[1:]`.
    """
    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:  # --help (0) or a usage error, already printed on one line (2)
        return 0 if exit_.code is None else int(exit_.code)
    try:
        pipeline = beam.Pipeline(options=_pipeline_options(rest))
        outputs = _build(
            pipeline,
            args.model,
            args.input,
            args.output,
            args.score,
            args.num_samples,
            args.seed,
            args.binarize_seed,
            args.typical_nll,
            args.batch_size,
            args.imports,
            args.precision,
            args.overwrite,
            _CLI_NAMES,
        )
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"tfpvae.beam: error: {message}", file=sys.stderr)
        return 2
    result = pipeline.run()
    result.wait_until_finish()
    rows, errors = _counter(result, "rows_written"), _counter(result, "errors_written")
    what = ", ".join(outputs.columns)
    print(
        f"wrote {'?' if rows is None else rows} rows of scores ({what}) to {args.output}-?????-of-?????.csv; "
        f"skipped {'?' if errors is None else errors} bad records (listed in "
        f"{args.output}{ERRORS_SUFFIX}-?????-of-?????.csv)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run())
