"""The Beam transforms around the scoring: match an input's files, read their records, write CSV lines.

`match_files` lists an input on the workers and spells each path as
`tfpvae.streaming.list_files` does, since a record's id (and so its Monte Carlo draws)
is made from that path; `ReadRecords` reads and checks each file's records as
`tfpvae.streaming.iter_batches` does, sending bad ones to a dead-letter output;
`FormatRow` and `FormatError` turn rows and errors into the lines of the CSV shards.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import os
import posixpath
import re
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio

from tfpvae.beam_handler import METRICS_NAMESPACE, Row
from tfpvae.bulk import format_row
from tfpvae.input_files import GLOB_CHARS, entry_kind, file_kind, is_remote, spelling
from tfpvae.records import BadRecordError, image_problem
from tfpvae.streaming import read_records

__all__ = ["FormatError", "FormatRow", "ReadRecords", "csv_line", "match_files"]


def _beam_pattern(text: str) -> str:
    """`text` for MatchFiles: "./" in front of a relative glob with no folder ("*.png"), for
    which Beam, which lists a pattern's folder by the text before its first glob character,
    would find nothing."""
    first = min((text.index(c) for c in GLOB_CHARS if c in text), default=len(text))
    if "://" not in text and not text.startswith("/") and "/" not in text[:first] and first < len(text):
        return "./" + text
    return text


def _escape(path: str) -> str:
    # Beam's patterns cannot quote a glob character; "?" matches it (and any other
    # character), and `_Rename` keeps only the exact path.
    return "".join("?" if c in GLOB_CHARS else c for c in path)


def _tensorflow_glob(pattern: str) -> str:
    """`pattern` with each run of "*" as one: TensorFlow's "**" matches within one folder
    level, as "*" does, where Beam's crosses folders."""
    return re.sub(r"\*+", "*", pattern)


def _matches_per_level(pattern: str, path: str) -> bool:
    """Whether `path` matches `pattern` as `tf.io.gfile.glob` matches: level by level, so that
    no "*", "?" or "[...]" matches a "/" (Beam's "?" and "[...]" can)."""
    parts, names = pattern.split("/"), path.split("/")
    return len(parts) == len(names) and all(fnmatch.fnmatchcase(n, p) for n, p in zip(names, parts))


class _Rename:
    """Maps a path MatchFiles found for one input entry to the spelling `list_files` gives it, or drops it.

    Args:
      kind: "file", "folder" or "glob": what the entry is (as `list_files` decides).
      entry: the entry as the user wrote it.
      pattern: the pattern given to MatchFiles: a glob's matches are kept where TensorFlow's
        glob, which `list_files` uses, would match them too.
    """

    def __init__(self, kind: str, entry: str, pattern: str) -> None:
        self.kind, self.entry, self.pattern = kind, entry, pattern

    def __call__(self, metadata: Any) -> Iterator[str]:
        path = metadata.path
        if self.kind == "glob":
            if _matches_per_level(self.pattern, path):
                yield spelling(path)
            return
        path = spelling(path)
        if self.kind == "file":
            if path == spelling(self.entry):
                yield path
            return
        folder, name = posixpath.split(path)
        if folder == (spelling(self.entry).rstrip("/") or "/") and file_kind(name) is not None:
            if is_remote(self.entry):  # spelt as list_files joins a remote folder and a name
                from tfpvae._keras import tf

                path = tf.io.gfile.join(self.entry, name)
            yield path


def _entries(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """(kind, entry) for each entry of an input: "folder", "file" or "glob", decided as `list_files` does."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    return [(entry_kind(os.fspath(item)) or "glob", os.fspath(item)) for item in items]


def match_files(pipeline: beam.Pipeline, source: str | os.PathLike | Sequence[str | os.PathLike]) -> beam.PCollection:
    """Adds the listing of an input's files to `pipeline`, done by the workers with `fileio.MatchFiles`.

    Args:
      pipeline: the pipeline to add the transforms to (labels start "tfpvae/").
      source: a file, folder or glob, or a list of those, that `tfpvae.streaming.list_files`
        accepts (call it first: its errors are the ones to show).

    Returns:
      PCollection of file paths, each once, spelt as `list_files` spells them.
    """
    found = []
    for i, (kind, entry) in enumerate(_entries(source)):
        if kind == "folder":  # "png//" too: Beam finds nothing for "png//*"
            text = posixpath.join(_escape(entry.rstrip("/") or "/"), "*")
        else:
            text = _tensorflow_glob(entry) if kind == "glob" else _escape(entry)
        pattern = _beam_pattern(text)
        found.append(
            pipeline
            | f"tfpvae/Match{i}" >> fileio.MatchFiles(pattern)
            | f"tfpvae/Rename{i}" >> beam.FlatMap(_Rename(kind, entry, pattern))
        )
    if len(found) == 1:
        return found[0]
    # list_files reads a file named twice once.
    return found | "tfpvae/Flatten" >> beam.Flatten() | "tfpvae/Distinct" >> beam.Distinct()


class ReadRecords(beam.DoFn):
    """Path -> (id, float32 image in [0, 1], label) per good record; (id, reason) per bad one, tagged "errors".

    The checks and the uint8 conversion are `tfpvae.streaming.iter_batches`' own, so a
    record scores (or fails) here exactly as it does in `tfpvae score`.

    Args:
      single_array: whether the input is one array file, whose rows get bare row numbers
        as ids (`tfpvae.input_files.is_single_array` of the listed input).
      input_shape: (height, width, channels) every image must have: the model's.
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
                problem = image_problem(image, self.input_shape)
                image = image if problem is None else BadRecordError(record_id, problem)
            if isinstance(image, BadRecordError):
                self.bad.inc()
                yield beam.pvalue.TaggedOutput("errors", (image.id, image.reason))
            elif image.dtype == np.uint8:
                yield record_id, np.divide(image, scale, dtype=np.float32), label  # as iter_batches: uint8 / 255
            else:
                yield record_id, np.asarray(image, np.float32), label


def csv_line(fields: Sequence[Any]) -> str:
    """One CSV line without its line ending, quoted as the csv module quotes (ids may hold commas)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


class FormatRow(beam.DoFn):
    """(id, label, {column: value}) -> one CSV line of the score shards, as `tfpvae.bulk.format_row` makes it.

    Args:
      columns: the score columns, in the order of the header (after `id` and `label`).
    """

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self.rows = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "rows_written")

    def process(self, row: Row) -> Iterator[str]:
        self.rows.inc()
        image_id, label, values = row
        yield csv_line(format_row(image_id, label, values, self.columns))


class FormatError(beam.DoFn):
    """(id, reason) -> one CSV line of the dead-letter shards."""

    def __init__(self) -> None:
        self.errors = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "errors_written")

    def process(self, error: tuple[str, str]) -> Iterator[str]:
        self.errors.inc()
        yield csv_line(error)
