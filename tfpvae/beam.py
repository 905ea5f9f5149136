"""Scores image files with Apache Beam: the rows of `tfpvae score --input`, computed on many workers.

The pipeline (`build_pipeline`), for the same inputs and flags as `tfpvae score`:

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

    python -m tfpvae.beam --model RUN --input 'shards/*.tfrecord' --output out/scores \\
        --num-samples 64 --direct_num_workers 2 --direct_running_mode multi_processing
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import posixpath
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.ml.inference.base import ModelHandler, RunInference

from tfpvae._validation import MAX_INT32_SEED, check_choice, check_float, check_int, check_seed
from tfpvae.bulk import DEFAULT_BATCH_SIZE, format_row, score_columns
from tfpvae.config import SCORES
from tfpvae.streaming import BadRecordError, _image_problem, _kind, list_files, read_records

__all__ = ["ERRORS_SUFFIX", "ScoringOutputs", "TfpvaeModelHandler", "build_parser", "build_pipeline", "run"]

# The dead-letter shards are PREFIX + this + "-SSSSS-of-NNNNN.csv".
ERRORS_SUFFIX = "-errors"
METRICS_NAMESPACE = "tfpvae.beam"
_GLOB_CHARS = frozenset("*?[")
_DIRECT_RUNNERS = ("directrunner", "direct", "switchingdirectrunner", "bundlebaseddirectrunner")

Example = tuple[str, np.ndarray, "int | None"]  # (id, float32 image (H, W, C) in [0, 1], label)
Row = tuple[str, "int | None", dict[str, float]]  # (id, label, column -> value)


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


# --------------------------------------------------------------------------- model


class _Model(NamedTuple):
    input_shape: tuple[int, int, int]
    defines_likelihood: bool


def _is_remote(path: str) -> bool:
    return "://" in path


@contextlib.contextmanager
def _local_model(model_dir: str) -> Iterator[str]:
    """`model_dir` itself, or for a remote one (gs://, hdfs://, ...) a temporary local copy of
    its files: `tfpvae.serialization` reads local folders, and every worker needs the model."""
    if not _is_remote(model_dir):
        yield model_dir
        return
    from tfpvae._keras import tf
    from tfpvae.serialization import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE, ModelFormatError

    if not tf.io.gfile.isdir(model_dir):
        raise ModelFormatError(f"Model folder {model_dir} does not exist (expected a folder written by VAE.save).")
    with tempfile.TemporaryDirectory(prefix="tfpvae-model-") as local:
        for name in (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE):
            source = tf.io.gfile.join(model_dir, name)
            if not tf.io.gfile.exists(source):
                raise ModelFormatError(f"Model folder {model_dir} is incomplete: {name} is missing.")
            try:
                tf.io.gfile.copy(source, os.path.join(local, name), overwrite=True)
            except tf.errors.OpError as err:
                raise ModelFormatError(f"Cannot copy {source}: {err.message}") from None
        yield local


def _is_saved_model(model_dir: str) -> bool:
    if _is_remote(model_dir):
        from tfpvae._keras import tf

        return tf.io.gfile.exists(tf.io.gfile.join(model_dir, "saved_model.pb"))
    return (Path(model_dir) / "saved_model.pb").is_file()


def _read_model(model_dir: str, name: str) -> _Model:
    """The image shape and kind of a run folder, from its config.json (no weights loaded)."""
    from tfpvae.serialization import CONFIG_FILE, read_metadata

    if _is_saved_model(model_dir):
        # Its signature serves float32 scores with k fixed at export: rows that could not
        # equal `tfpvae score`'s, which is what this pipeline promises.
        raise ValueError(
            f"{name} {model_dir} is a SavedModel (from `tfpvae export`); expected a run folder written by "
            f"`tfpvae train` (config.json, weights.npz, metadata.json)."
        )
    local = model_dir
    try:
        with _local_model(model_dir) as local:
            read_metadata(local)  # exists, complete, a format version this tfpvae reads
            config = json.loads((Path(local) / CONFIG_FILE).read_text())
        shape = tuple(int(v) for v in config["input_shape"])
        if len(shape) != 3:
            raise ValueError(f"input_shape {shape} is not (height, width, channels)")
    except (ValueError, TypeError, KeyError, OSError) as err:
        message = (str(err).strip() or type(err).__name__).replace(local, model_dir)
        raise ValueError(f"{name} {model_dir}: {message}") from None
    return _Model(shape, config.get("model_type", "vae") != "ae")


def _check_scores(scores: Sequence[str] | None, model: _Model, typical_nll: float | None, names: dict) -> tuple:
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


class _Scorer:
    """A loaded model and the settings it scores with: the object RunInference shares per process."""

    def __init__(self, model: Any, handler: TfpvaeModelHandler) -> None:
        self.model = model  # held here so the estimator's tf.function lives as long as the scorer
        self.handler = handler

    def __call__(self, images: np.ndarray, ids: list[str]) -> dict[str, np.ndarray]:
        from tfpvae.anomaly import compute_scores

        h = self.handler
        return compute_scores(
            self.model.likelihood,
            images,
            h.scores,
            num_samples=h.num_samples,
            seed=h.seed,
            binarize_seed=h.binarize_seed,
            ids=ids,
            typical_nll=h.typical_nll,
            progress=False,
            stderr="log_prob" in h.scores,
        )


class TfpvaeModelHandler(ModelHandler[Example, Row, _Scorer]):
    """RunInference's model handler for a tfpvae run folder: examples in, CSV values out.

    Each worker process loads the model once (RunInference shares the loaded model
    between the threads and bundles of a process) and scores each batch that
    `BatchElements` hands it with `tfpvae.anomaly.compute_scores`, keyed by the images'
    ids, so a row does not depend on which batch or worker scored it.

    Args:
      model_dir: run folder written by `tfpvae train` / `VAE.save`; a remote one
        (gs://, any file system `tf.io.gfile` has) is copied to a temporary folder first.
      scores: names from `tfpvae.anomaly.SCORES`.
      num_samples: importance samples per image, >= 1. Default 100.
      seed: Monte Carlo seed in [0, 2^31 - 1]. Default 0.
      binarize_seed: score the fixed binarisation keyed by (id, binarize_seed). Default None.
      typical_nll: mean NLL of normal data, needed by "typicality". Default None.
      batch_size: images per RunInference batch (`BatchElements`' min and max). Default 1024.
      intra_op_threads: TensorFlow intra-op threads per worker process. Default None
        (TensorFlow's default: one per core, which oversubscribes the CPU when several
        worker processes share a machine).

    Examples:
      >>> handler = TfpvaeModelHandler("runs/mnist", ("log_prob", "elbo"), num_samples=64)
      >>> rows = examples | RunInference(handler)  # examples: (id, image, label) tuples
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        scores: Sequence[str],
        num_samples: int = 100,
        seed: int = 0,
        binarize_seed: int | None = None,
        typical_nll: float | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        intra_op_threads: int | None = None,
    ) -> None:
        batch_size = check_int(batch_size, "batch_size")
        # min = max: the scoring cost is linear in the batch beyond one chunk of the core, so
        # Beam's adaptive sizing (which starts at 1 image) would only add small batches.
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size)
        self.model_dir = os.fspath(model_dir)
        self.scores = tuple(scores)
        self.columns = score_columns(self.scores)
        self.num_samples = check_int(num_samples, "num_samples")
        self.seed = check_seed(seed, "seed", maximum=MAX_INT32_SEED)
        self.binarize_seed = check_seed(binarize_seed, "binarize_seed", maximum=MAX_INT32_SEED)
        self.typical_nll = None if typical_nll is None else check_float(typical_nll, "typical_nll")
        self.intra_op_threads = None if intra_op_threads is None else check_int(intra_op_threads, "intra_op_threads")

    def load_model(self) -> _Scorer:
        """Loads the run folder (once per worker process) after setting TensorFlow's threads."""
        from tfpvae._keras import tf
        from tfpvae.serialization import load

        if self.intra_op_threads is not None:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(self.intra_op_threads)
            except RuntimeError:
                pass  # TensorFlow already ran an op in this process: its thread pool is fixed
        with _local_model(self.model_dir) as local:
            return _Scorer(load(local), self)

    def run_inference(
        self, batch: Sequence[Example], model: _Scorer, inference_args: dict[str, Any] | None = None
    ) -> list[Row]:
        """Scores a batch of (id, image, label); returns (id, label, {column: value}) per example, in order."""
        ids = [example[0] for example in batch]
        values = model(np.stack([example[1] for example in batch]), ids)
        return [
            (image_id, label, {c: float(values[c][i]) for c in self.columns})
            for i, (image_id, _, label) in enumerate(batch)
        ]

    def get_num_bytes(self, batch: Sequence[Example]) -> int:
        # The default pickles the whole batch only to measure it.
        return sum(example[1].nbytes for example in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE


# --------------------------------------------------------------------------- files


def _beam_pattern(text: str) -> tuple[str, bool]:
    """(`text` for MatchFiles, whether "./" was put in front).

    Beam lists a pattern's folder by the text before its first glob character and finds
    nothing for a relative pattern with no folder ("*.png"); TensorFlow spells those
    matches "./a.png", so "./" in front makes both list the same folder and spell alike.
    """
    first = min((text.index(c) for c in _GLOB_CHARS if c in text), default=len(text))
    if "://" not in text and not text.startswith("/") and "/" not in text[:first] and first < len(text):
        return "./" + text, True
    return text, False


def _escape(path: str) -> str:
    # Beam's patterns cannot quote a glob character; "?" matches it (and any other
    # character), and `_Rename` keeps only the exact path.
    return "".join("?" if c in _GLOB_CHARS else c for c in path)


class _Rename:
    """Maps a path MatchFiles found for one input entry to the spelling `list_files` gives it, or drops it.

    Args:
      kind: "file", "folder" or "glob": what the entry is (as `list_files` decides).
      entry: the entry as the user wrote it.
      dotted: whether the pattern got "./" in front (see `_beam_pattern`).
    """

    def __init__(self, kind: str, entry: str, dotted: bool) -> None:
        self.kind, self.entry, self.dotted = kind, entry, dotted

    def __call__(self, metadata: Any) -> Iterator[str]:
        path = metadata.path
        if self.kind == "glob":
            yield path  # TensorFlow and Beam both join the pattern's folder and the name
            return
        if self.dotted and path.startswith("./"):
            path = path[2:]
        if self.kind == "file":
            if path == self.entry:
                yield self.entry
            return
        folder, name = posixpath.split(path)
        if folder == (self.entry.rstrip("/") or "/") and _kind(name) is not None:
            from tfpvae._keras import tf

            yield tf.io.gfile.join(self.entry, name)  # list_files' own join


def _entries(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """(kind, entry) for each entry of an input: "folder", "file" or "glob", decided as `list_files` does."""
    from tfpvae._keras import tf

    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    out = []
    for item in items:
        entry = os.fspath(item)
        if tf.io.gfile.isdir(entry):
            out.append(("folder", entry))
        elif tf.io.gfile.exists(entry):  # before globbing, as list_files: a real file may have "[" in its name
            out.append(("file", entry))
        else:
            out.append(("glob", entry))
    return out


class _ReadRecords(beam.DoFn):
    """Path -> (id, float32 image in [0, 1], label) per good record; (id, reason) per bad one, tagged "errors".

    The checks and the uint8 conversion are `tfpvae.streaming.iter_batches`' own, so a
    record scores (or fails) here exactly as it does in `tfpvae score`.
    """

    def __init__(self, single_array: bool, input_shape: tuple[int, int, int]) -> None:
        self.single_array = single_array
        self.input_shape = tuple(input_shape)
        self.read = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "records_read")
        self.bad = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "bad_records")

    def process(self, path: str) -> Iterator[Any]:
        try:
            records = read_records(path, single_array=self.single_array)
        except ValueError as err:  # an unsupported suffix: a glob matched more than list_files would
            self.bad.inc()
            yield beam.pvalue.TaggedOutput("errors", (path, str(err)))
            return
        scale = np.float32(255.0)
        for record_id, image, label in records:
            self.read.inc()
            if not isinstance(image, BadRecordError):
                problem = _image_problem(image, self.input_shape)
                image = image if problem is None else BadRecordError(record_id, problem)
            if isinstance(image, BadRecordError):
                self.bad.inc()
                yield beam.pvalue.TaggedOutput("errors", (image.id, image.reason))
            elif image.dtype == np.uint8:
                yield record_id, np.divide(image, scale, dtype=np.float32), label  # as iter_batches: uint8 / 255
            else:
                yield record_id, np.asarray(image, np.float32), label


def _csv_line(fields: Sequence[Any]) -> str:
    """One CSV line without its line ending, quoted as the csv module quotes (ids may hold commas)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


class _FormatRow(beam.DoFn):
    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self.rows = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "rows_written")

    def process(self, row: Row) -> Iterator[str]:
        self.rows.inc()
        image_id, label, values = row
        yield _csv_line(format_row(image_id, label, values, self.columns))


class _FormatError(beam.DoFn):
    def __init__(self) -> None:
        self.errors = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "errors_written")

    def process(self, error: tuple[str, str]) -> Iterator[str]:
        self.errors.inc()
        yield _csv_line(error)


# --------------------------------------------------------------------------- pipeline


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


def _check_output(output: Any, name: str) -> str:
    if not isinstance(output, (str, os.PathLike)) or not os.fspath(output):
        raise TypeError(f"{name} must be a non-empty path prefix such as 'out/scores'; got {output!r}.")
    output = os.fspath(output)
    if "://" not in output:
        folder = Path(output).parent
        if not folder.is_dir():
            problem = "is a file, not a folder" if folder.exists() else "does not exist"
            raise NotADirectoryError(f"{name} {output}: folder {folder} {problem}.")
    return output


_API_NAMES = {
    "model_dir": "`model_dir`",
    "input": "`input`",
    "output": "`output`",
    "scores": "`scores`",
    "typical_nll": "`typical_nll`",
}
_CLI_NAMES = {
    "model_dir": "`--model`",
    "input": "`--input`",
    "output": "`--output`",
    "scores": "`--score`",
    "typical_nll": "`--typical-nll`",
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
    names: dict[str, str],
) -> ScoringOutputs:
    if not isinstance(pipeline, beam.Pipeline):
        raise TypeError(f"`pipeline` must be an apache_beam.Pipeline; got {type(pipeline).__name__}.")
    if not isinstance(model_dir, (str, os.PathLike)):
        raise TypeError(f"{names['model_dir']} must be a run folder path; got {model_dir!r}.")
    model_dir = os.fspath(model_dir)
    model = _read_model(model_dir, names["model_dir"])
    if typical_nll is not None:
        typical_nll = check_float(typical_nll, names["typical_nll"].strip("`"))
    scores = _check_scores(scores, model, typical_nll, names)
    output = _check_output(output, names["output"])
    handler = TfpvaeModelHandler(
        model_dir,
        scores,
        num_samples,
        seed,
        binarize_seed,
        typical_nll,
        batch_size=batch_size,
        intra_op_threads=_threads_per_worker(pipeline.options),
    )
    try:
        # Checked here as `tfpvae score` checks it, so that a missing input fails before any
        # worker starts; the listing also says whether ids of array rows are bare row numbers.
        listed = list_files(input)
        entries = _entries(input)
    except (ValueError, TypeError, FileNotFoundError) as err:
        message = str(err).replace("`source`", names["input"])
        raise type(err)(message) from None
    single_array = len(listed) == 1 and _kind(listed[0]) == "array"

    found = []
    for i, (kind, entry) in enumerate(entries):
        text = posixpath.join(_escape(entry), "*") if kind == "folder" else entry if kind == "glob" else _escape(entry)
        pattern, dotted = _beam_pattern(text)
        found.append(
            pipeline
            | f"tfpvae/Match{i}" >> fileio.MatchFiles(pattern)
            | f"tfpvae/Rename{i}" >> beam.FlatMap(_Rename(kind, entry, dotted))
        )
    paths = found[0] if len(found) == 1 else found | "tfpvae/Flatten" >> beam.Flatten()
    if len(found) > 1:
        paths = paths | "tfpvae/Distinct" >> beam.Distinct()  # list_files reads a file named twice once
    records = (
        paths
        | "tfpvae/Reshuffle" >> beam.Reshuffle()
        | "tfpvae/Read" >> beam.ParDo(_ReadRecords(single_array, model.input_shape)).with_outputs("errors", main="ok")
    )
    rows = records.ok | "tfpvae/Score" >> RunInference(handler)
    columns = handler.columns
    header = _csv_line(["id", "label", *columns])
    _ = (
        rows
        | "tfpvae/FormatRows" >> beam.ParDo(_FormatRow(columns))
        | "tfpvae/WriteRows" >> beam.io.WriteToText(output, file_name_suffix=".csv", header=header)
    )
    _ = (
        records.errors
        | "tfpvae/FormatErrors" >> beam.ParDo(_FormatError())
        | "tfpvae/WriteErrors"
        >> beam.io.WriteToText(output + ERRORS_SUFFIX, file_name_suffix=".csv", header="id,reason")
    )
    return ScoringOutputs(rows, records.errors, columns)


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
        Existing shards of the same names are replaced; shards of an earlier run with
        another shard count are not removed. A local prefix's folder must exist.
      scores: names from `tfpvae.anomaly.SCORES`. Default None: every score the model
        gives except "typicality" (as `tfpvae score`; name it, with `typical_nll`).
      num_samples: importance samples per image, >= 1. Default 100.
      seed: Monte Carlo seed in [0, 2^31 - 1]. Default 0.
      binarize_seed: score the fixed binarisation keyed by (id, binarize_seed), in
        [0, 2^31 - 1]. Default None (score the grey values).
      typical_nll: mean NLL of normal data, needed by "typicality". Default None.
      batch_size: images per scoring batch, >= 1. Default 1024.

    Returns:
      `ScoringOutputs`: the rows and errors PCollections (already written) and the
      score columns.

    Raises:
      ValueError, TypeError: a bad argument, or `model_dir` is not a readable run folder.
      FileNotFoundError: `input` names nothing (as `tfpvae.streaming.list_files`).
      NotADirectoryError: the folder of a local `output` does not exist.

    Examples:
      >>> with beam.Pipeline() as p:
      ...     build_pipeline(p, "runs/mnist", "shards/*.tfrecord", "out/scores", num_samples=64)
    """
    check_int(num_samples, "num_samples")
    check_seed(seed, "seed", maximum=MAX_INT32_SEED)
    check_seed(binarize_seed, "binarize_seed", maximum=MAX_INT32_SEED)
    check_int(batch_size, "batch_size")
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
        _API_NAMES,
    )


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The parser of tfpvae.beam's own flags: those of `tfpvae score --input`, plus --output."""
    # The `tfpvae` command's one-line parser and checked types, so both read flags alike.
    from tfpvae.cli import _arg_type, _Parser, _positive_int, _seed

    positive, seed = _positive_int, _seed
    finite = _arg_type(float, math.isfinite, "finite number")
    p = _Parser(
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
        "--score",
        nargs="+",
        choices=SCORES,
        help="scores (default: every score the model gives except typicality)",
    )
    p.add_argument("--num-samples", type=positive, default=100, help="importance samples (default 100)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the Monte Carlo draws (default 0)")
    p.add_argument("--binarize-seed", type=seed, help="score a fixed binarisation of grey images drawn with this seed")
    p.add_argument("--typical-nll", type=finite, help="mean NLL of normal data (needed by the typicality score)")
    p.add_argument(
        "--batch-size",
        type=positive,
        default=DEFAULT_BATCH_SIZE,
        help=f"images per scoring batch (default {DEFAULT_BATCH_SIZE})",
    )
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
      argv: the arguments, tfpvae.beam's flags and Beam pipeline options mixed. Default
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
