"""Score image sets of any size into CSV rows with bounded memory: the engine behind `tfpvae score`.

Images arrive as batches (`tfpvae.streaming.Batch`, or in-memory arrays cut into
batches), each image with a stable id; every batch goes through the one scoring core
(`tfpvae.anomaly.compute_scores`) and its rows are written at once, so memory holds one
batch whatever the number of images. The CSV has a header `id,label,<score columns>`;
the Beam pipeline (`tfpvae.beam`) writes the same rows with `format_row`.

The CSV is written to `OUT.partial` and renamed to `OUT` only when every image has been
scored, so an interrupted run never leaves a CSV that looks complete. Records that cannot
be read either stop the run (the default, naming the record) or, with `skip_bad`, are
listed with their reason in `OUT.errors.csv` and counted in the summary.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfpvae._io import atomic_write_text, storage_error
from tfpvae._validation import check_int

__all__ = ["errors_path", "format_row", "iter_array_batches", "score_columns", "score_to_csv", "settings_path"]

# Images scored per call of the core when streaming: large enough to amortise a call's
# fixed cost, small enough that a batch of 28x28 images stays in the low MBs.
DEFAULT_BATCH_SIZE = 1024


def score_columns(scores: Sequence[str], stderr: bool = True) -> list[str]:
    """The CSV's score columns for `scores`: each name once, with `log_prob_stderr` after `log_prob`."""
    columns = []
    for name in dict.fromkeys(scores):
        columns.append(name)
        if stderr and name == "log_prob":
            columns.append("log_prob_stderr")
    return columns


def format_row(image_id: str, label: Any, values: dict[str, Any], columns: Sequence[str]) -> list[str]:
    """One CSV row: the id, the label (blank for None: a record without one), then each column to 6 decimals."""
    label = "" if label is None else str(int(label))
    return [image_id, label, *(f"{float(values[c]):.6f}" for c in columns)]


def _record_labels(batch: Any) -> list[int | None]:
    """Each record's label, None for a record without one (a real label -1 stays -1)."""
    if batch.labels is None:
        return [None] * len(batch.ids)
    kept = [True] * len(batch.ids) if batch.labelled is None else batch.labelled
    return [int(label) if has else None for label, has in zip(batch.labels, kept)]


def settings_path(csv_path: str | os.PathLike) -> Path:
    """The settings file written beside a score CSV: scores.csv -> scores.csv.json."""
    path = Path(csv_path)
    return path.with_name(path.name + ".json")


def errors_path(csv_path: str | os.PathLike) -> Path:
    """The side file that lists skipped records: scores.csv -> scores.csv.errors.csv."""
    path = Path(csv_path)
    return path.with_name(path.name + ".errors.csv")


def iter_array_batches(
    x: np.ndarray, labels: np.ndarray | None = None, batch_size: int = DEFAULT_BATCH_SIZE, first_id: int = 0
) -> Iterator[Any]:
    """In-memory images as `tfpvae.streaming.Batch`es with row-index ids ("0", "1", ...)."""
    from tfpvae.streaming import Batch

    batch_size = check_int(batch_size, "batch_size")
    for i in range(0, len(x), batch_size):
        j = min(i + batch_size, len(x))
        ids = [str(first_id + r) for r in range(i, j)]
        yield Batch(x[i:j], ids, None if labels is None else np.asarray(labels[i:j], np.int64))


class _ErrorLog:
    """Writes the records a reader skipped (`BadRecordError`s it appends to a list) as CSV rows."""

    def __init__(self, path: Path, records: list | None) -> None:
        self.path, self.records, self.count = path, records, 0
        self.file = self.writer = None

    def __enter__(self) -> _ErrorLog:
        if self.records is not None:
            self.file = open(self.path, "w", newline="")
            self.writer = csv.writer(self.file)
            self.writer.writerow(["id", "reason"])
        return self

    def flush(self) -> None:
        """Moves the skipped records listed so far into the file."""
        if self.writer is None:
            return
        for err in self.records:
            self.writer.writerow([err.id, err.reason])
        self.count += len(self.records)
        self.records.clear()
        self.file.flush()

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.file.close()


def _publish(partial: Path, out: Path, errors_partial: Path | None) -> None:
    """Renames the finished CSV into place, and its errors file beside it.

    An earlier errors file goes before the new CSV comes in: a kill or a failure between
    the renames leaves a CSV without its errors file, never one beside another CSV's.
    """
    errors_path(out).unlink(missing_ok=True)
    os.replace(partial, out)
    if errors_partial is not None:
        os.replace(errors_partial, errors_path(out))


def score_to_csv(
    estimator: Any,
    batches: Iterable[Any],
    out: str | os.PathLike,
    scores: Sequence[str],
    *,
    num_samples: int = 100,
    seed: int = 0,
    binarize_seed: int | None = None,
    typical_nll: float | None = None,
    bad_records: list | None = None,
    settings: dict[str, Any] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Scores every batch and writes one CSV row per image, batch by batch.

    Args:
      estimator: a `tfpvae.likelihood.LikelihoodEstimator`.
      batches: iterable of `tfpvae.streaming.Batch` (images, ids, labels).
      out: the CSV to write (via `OUT.partial`, renamed when complete).
      scores: names from `tfpvae.anomaly.SCORES`.
      num_samples: importance samples per image.
      seed: Monte Carlo seed.
      binarize_seed: score a fixed binarisation keyed by (id, binarize_seed).
      typical_nll: for "typicality".
      bad_records: a list that the reader appends `BadRecordError`s to while it skips them
        (the `on_error` of `tfpvae.streaming.iter_batches`); they are written to
        `errors_path(out)` as they come. None: no skipping.
      settings: extra entries for the settings file beside the CSV.
      progress: an object with `update(n_done)` (e.g. a Keras Progbar).

    Returns:
      The summary also written to `settings_path(out)`: rows, bad records, scores and
      flags, and the SHA-256 of the ids and images scored.
    """
    from tfpvae.anomaly import compute_scores

    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    errors_partial = partial.with_name(errors_path(out).name + ".partial")
    columns = score_columns(scores)
    digest = hashlib.sha256()
    rows = 0
    try:
        with _ErrorLog(errors_partial, bad_records) as errors, open(partial, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "label", *columns])
            for batch in batches:
                errors.flush()
                if len(batch.ids) == 0:
                    continue
                values = compute_scores(
                    estimator,
                    batch.images,
                    tuple(scores),
                    num_samples=num_samples,
                    typical_nll=typical_nll,
                    seed=seed,
                    binarize_seed=binarize_seed,
                    ids=batch.ids,
                    progress=False,
                    stderr="log_prob" in scores,
                )
                labels = _record_labels(batch)
                for r, image_id in enumerate(batch.ids):
                    row_values = {c: values[c][r] for c in columns}
                    writer.writerow(format_row(image_id, labels[r], row_values, columns))
                    digest.update(image_id.encode() + b"\0")
                digest.update(np.ascontiguousarray(batch.images, np.float32).tobytes())
                rows += len(batch.ids)
                if progress is not None:
                    progress.update(rows + errors.count)
            errors.flush()  # records skipped after the last batch
        _publish(partial, out, errors_partial if bad_records is not None else None)
    except BaseException as err:
        # The old CSV and its errors file, if any, are left as they were; half a new one is
        # not left beside them (an OSError, a bad record, Ctrl-C).
        partial.unlink(missing_ok=True)
        errors_partial.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise storage_error("write", out, err) from err
        raise
    summary = {
        "rows": rows,
        "bad_records": errors.count,
        "errors_file": str(errors_path(out)) if bad_records is not None else None,
        "scores": list(scores),
        "columns": columns,
        "num_samples": num_samples,
        "seed": seed,
        "binarize_seed": binarize_seed,
        "typical_nll": typical_nll,
        "ids_and_images_sha256": digest.hexdigest(),
        **(settings or {}),
    }
    atomic_write_text(settings_path(out), json.dumps(summary, indent=2))
    return summary
