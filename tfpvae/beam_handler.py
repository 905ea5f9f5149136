"""RunInference's model handler for a tfpvae run folder, and the reading of that folder's config.

`TfpvaeModelHandler` loads the model once per worker process and scores the batches
`BatchElements` forms with `tfpvae.anomaly.compute_scores`; `read_run_folder` reads the
image shape and kind from config.json alone, so that `tfpvae.beam.build_pipeline` checks
the model before any worker starts. A remote folder (gs://, any file system `tf.io.gfile`
has) is copied to a temporary local folder first, as `tfpvae.model.load` reads local files.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from apache_beam.ml.inference.base import ModelHandler

from tfpvae._validation import MAX_INT32_SEED, check_choice, check_float, check_int, check_seed
from tfpvae.bulk import DEFAULT_BATCH_SIZE, score_columns
from tfpvae.config import PRECISIONS
from tfpvae.input_files import is_remote

__all__ = ["METRICS_NAMESPACE", "Example", "Row", "RunFolder", "TfpvaeModelHandler", "read_run_folder"]

METRICS_NAMESPACE = "tfpvae.beam"
"""The namespace of the pipeline's counters and of RunInference's own metrics."""

Example = tuple[str, np.ndarray, "int | None"]
"""What the handler scores: (id, float32 image (height, width, channels) in [0, 1], label or None)."""
Row = tuple[str, "int | None", dict[str, float]]
"""What the handler returns per example: (id, label or None, {score column: value})."""


class RunFolder(NamedTuple):
    """What a pipeline needs to know of a run folder before it runs, read from its config.json.

    Attributes:
      input_shape: (height, width, channels) of the images the model takes.
      defines_likelihood: False for a plain autoencoder, whose only score is "distortion".
    """

    input_shape: tuple[int, int, int]
    defines_likelihood: bool


@contextlib.contextmanager
def _local_model(model_dir: str) -> Iterator[str]:
    """`model_dir` itself, or for a remote one (gs://, hdfs://, ...) a temporary local copy of its files.

    `tfpvae.model.load` and `tfpvae.serialization` read local folders, and every worker needs the model.
    """
    if not is_remote(model_dir):
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
    """Whether `model_dir` holds a SavedModel (from `tfpvae export`) rather than a run folder."""
    if is_remote(model_dir):
        from tfpvae._keras import tf

        return tf.io.gfile.exists(tf.io.gfile.join(model_dir, "saved_model.pb"))
    return (Path(model_dir) / "saved_model.pb").is_file()


def read_run_folder(model_dir: str, name: str) -> RunFolder:
    """The image shape and kind of a run folder, from its config.json (no weights loaded).

    Args:
      model_dir: run folder written by `tfpvae train` / `VAE.save`, local or remote.
      name: how error messages name the folder, e.g. "`model_dir`" or "`--model`".

    Returns:
      `RunFolder`.

    Raises:
      ValueError: the folder is missing, incomplete, of a format version this tfpvae does
        not read, or a SavedModel from `tfpvae export`, or its network or prior is not
        registered in this process; the message starts with `name`.
    """
    from tfpvae.config import REGISTERED, VAEConfig
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
        for field, names in REGISTERED.items():  # before any worker starts: the workers would fail alike
            names.check(config.get(field, getattr(VAEConfig, field)))
    except (ValueError, TypeError, KeyError, OSError) as err:
        message = (str(err).strip() or type(err).__name__).replace(local, model_dir)
        raise ValueError(f"{name} {model_dir}: {message}") from None
    return RunFolder(shape, config.get("model_type", "vae") != "ae")


class _Scorer:
    """A loaded model and the settings it scores with: the object RunInference shares per process."""

    def __init__(self, model: Any, scores: tuple[str, ...], options: dict[str, Any], precision: str) -> None:
        self.model = model  # held here so the estimator's tf.function lives as long as the scorer
        self.estimator = model.estimator(precision)
        self.scores = scores
        # compute_scores' keyword arguments, the same for every batch.
        self.options = {**options, "progress": False, "stderr": "log_prob" in scores}

    def __call__(self, images: np.ndarray, ids: list[str]) -> dict[str, np.ndarray]:
        from tfpvae.anomaly import compute_scores

        return compute_scores(self.estimator, images, self.scores, ids=ids, **self.options)


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
      num_samples: importance samples per image, >= 1.
      seed: Monte Carlo seed in [0, 2^31 - 1].
      binarize_seed: score the fixed binarisation keyed by (id, binarize_seed).
      typical_nll: mean NLL of normal data, needed by "typicality".
      batch_size: images per RunInference batch (`BatchElements`' min and max). Default 1024.
      intra_op_threads: TensorFlow intra-op threads per worker process. None
        (TensorFlow's default: one per core, which oversubscribes the CPU when several
        worker processes share a machine).
      imports: modules that register the model's network or prior
        (`tfpvae.register_network`), imported by each worker before it loads the model;
        dotted names (installed on the workers) or .py paths.
      precision: the networks' arithmetic, "float32", "bfloat16" or "auto" (decided
        by each worker for its own hardware); see `tfpvae.likelihood.LikelihoodEstimator.from_model`.

    Examples:
      >>> scores = ("log_prob", "elbo")
      >>> handler = TfpvaeModelHandler("runs/mnist", scores, num_samples=64)
      >>> # examples: a PCollection of (id, image, label) tuples
      >>> rows = examples | RunInference(handler)
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
        imports: Sequence[str] = (),
        precision: str = "float32",
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
        if isinstance(imports, str):
            raise TypeError(f"`imports` must be a list of module names; got the string {imports!r}.")
        self.imports = tuple(imports)
        self.precision = check_choice(precision, "precision", PRECISIONS)

    def load_model(self) -> _Scorer:
        """Loads the run folder (once per worker process) after setting TensorFlow's threads."""
        from tfpvae._keras import tf
        from tfpvae.model import load
        from tfpvae.registry import import_modules

        import_modules(self.imports, "imports")  # a fresh worker process knows only the built-in names
        if self.intra_op_threads is not None:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(self.intra_op_threads)
            except RuntimeError:
                pass  # TensorFlow already ran an op in this process: its thread pool is fixed
        options = {key: getattr(self, key) for key in ("num_samples", "seed", "binarize_seed", "typical_nll")}
        with _local_model(self.model_dir) as local:
            return _Scorer(load(local), self.scores, options, self.precision)

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
