"""Export a trained VAE as a TensorFlow SavedModel with serving signatures; no tfpvae needed to load it.

Signatures (images float32 (n, H, W, C) in [0, 1]; outputs float32):

* `score(images, ids (n,) string, seed int32 scalar)` -> one (n,) tensor per score:
  `log_prob`, `log_prob_stderr`, `elbo`, `rate`, `distortion`, `complexity` (and
  `typicality` when exported with a typical NLL): the columns of `tfpvae score`'s CSV,
  computed by the same scoring core (`tfpvae.scoring.score_images`), so for the same ids
  and seed the served rows equal the CSV's. As there, every score is higher for more
  normal images: `rate` is -KL(q(z|x) || p(z)) and `distortion` is E_q log p(x|z);
* `log_prob(images, seed)` -> `{"log_prob": (n,)}`: the importance-weighted (IWAE)
  estimate of log p(x), with ids "0".."n-1";
* `elbo(images, seed)` -> `{"elbo": (n,)}`: the Monte Carlo ELBO of the same draws;
* `sample(num_samples int32 scalar, seed int32 scalar)` -> `{"images": (num_samples, H, W, C)}`:
  Bernoulli means of prior samples.

The number of importance samples (and, optionally, a fixed binarisation seed and the
typical NLL of normal data) are fixed at export time, and so is the decoder budget
`max_batch_elements` (`tfpvae.likelihood.default_batch_elements`: 16384 codes for an MLP,
1024 otherwise; a 28x28 conv decoder needs about 250 KB per code). Inside the graph,
`score`, `log_prob` and `elbo` go through a request in chunks of
max(1, max_batch_elements // s) images, where s is the samples per step (k when k fits
the budget, else at most max_batch_elements), one chunk after another; `sample` decodes
at most max_batch_elements codes at a time. So a request's working memory is bounded by
one chunk whatever its number of images n: only the request itself and its answer (and,
in `score`, one boolean per input pixel for the range check) grow with n. Draws are
stateless given the ids and seed, so the same request gives the same answer, and the
chunking leaves the answers as they were (to float32 rounding). Load with plain TensorFlow:

    served = tf.saved_model.load(path)
    ids = tf.constant(["a.png", "b.png"])
    served.signatures["score"](images=x, ids=ids, seed=tf.constant(0))
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tfpvae._io import StorageError, storage_error
from tfpvae._keras import tf
from tfpvae._validation import check_float, check_int, check_seed
from tfpvae.likelihood import default_batch_elements
from tfpvae.precision import networks_in, resolve_precision
from tfpvae.scoring import ScoringPlan, score_images
from tfpvae.write_guard import LOCK_FILE, OWNER_FILE, claim_folder

# What tf.saved_model.save writes into a folder.
# saved_model.pb first: `_move_into` moves an old SavedModel aside in this order.
_SAVED_MODEL_ENTRIES = ("saved_model.pb", "variables", "assets", "fingerprint.pb")
# The score signature's outputs: `tfpvae score`'s CSV columns (typicality only with a typical NLL).
SERVED_SCORES = ("log_prob", "log_prob_stderr", "elbo", "rate", "distortion", "complexity")


def _after(check: Any, value: tf.Tensor) -> tf.Tensor:
    """`value`, available only once the `check` op passed. A served call gets no Python
    checks, and in a graph an unconnected assert may run after the op it guards has failed."""
    with tf.control_dependencies([check]):
        return tf.identity(value)


class ServingModule(tf.Module):
    """The tf.Module behind the exported signatures (also callable in-process).

    Args:
      model: a trained `tfpvae.VAE` (model_type "vae").
      num_samples: importance samples per image in every score.
      binarize_seed: score the fixed binarisation keyed by (id, binarize_seed), as
        `tfpvae score --binarize-seed`. None: score the images as sent.
      typical_nll: mean -log p(x) of normal images; adds the `typicality` output.
      max_batch_elements: (image, sample) pairs per decoder batch; larger k is split into
        steps inside the graph, and a request into chunks of `chunk_images` images, one
        chunk at a time (`sample` decodes this many codes at a time). None:
        `tfpvae.likelihood.default_batch_elements(model)`, as for `LikelihoodEstimator.from_model`.
      precision: the networks' arithmetic in every signature, "float32",
        "bfloat16" or "auto" (decided here, on the exporting machine; see
        `LikelihoodEstimator.from_model`). The SavedModel runs it on any device; bfloat16
        is faster only where the hardware has native bfloat16 units.
    """

    def __init__(
        self,
        model: Any,
        num_samples: int = 64,
        *,
        binarize_seed: int | None = None,
        typical_nll: float | None = None,
        max_batch_elements: int | None = None,
        precision: str = "float32",
    ) -> None:
        super().__init__(name="tfpvae_serving")
        if model.config.model_type != "vae":
            raise ValueError("Only VAEs can be exported for likelihood serving; this model is an autoencoder.")
        self.num_samples = check_int(num_samples, "num_samples")
        self.binarize_seed = check_seed(binarize_seed, "binarize_seed", maximum=2**31 - 1)
        self.typical_nll = None if typical_nll is None else check_float(typical_nll, "typical_nll")
        budget = default_batch_elements(model) if max_batch_elements is None else max_batch_elements
        self.max_batch_elements = check_int(budget, "max_batch_elements")
        self.plan = ScoringPlan.make(self.num_samples, self.max_batch_elements)
        # Images per chunk: as many as share one decoder batch of the budget (the plan's
        # `images` when k fits it), so a chunk's codes never exceed max_batch_elements.
        self.chunk_images = max(1, self.max_batch_elements // self.plan.samples)
        self.score_names = SERVED_SCORES + (("typicality",) if self.typical_nll is not None else ())
        # Track only the variables: attaching the Keras models would make the SavedModel
        # serialise Keras layer metadata (and re-trace the KL regularizer), which plain
        # TensorFlow does not need. The networks are reached through a closure instead.
        self.variables_ = list(model.variables)
        self.precision = model.estimator(precision).precision if precision == "auto" else resolve_precision(precision)
        encoder, decoder = networks_in(self.precision, model.encoder, model.decoder)
        self._networks = lambda: (encoder, decoder, model.prior)
        h, w, c = self._image_shape = model.config.input_shape
        images = tf.TensorSpec([None, h, w, c], tf.float32, name="images")
        ids = tf.TensorSpec([None], tf.string, name="ids")
        seed = tf.TensorSpec([], tf.int32, name="seed")
        self.score = tf.function(self._score, input_signature=[images, ids, seed])
        self.log_prob = tf.function(self._log_prob, input_signature=[images, seed])
        self.elbo = tf.function(self._elbo, input_signature=[images, seed])
        self.sample = tf.function(self._sample, input_signature=[tf.TensorSpec([], tf.int32, name="num_samples"), seed])

    def _scores(self, images, ids, seed, names):
        """The scores `names` of a request, float32 (n,) each, computed chunk by chunk."""
        n = tf.shape(images)[0]
        checks = [
            tf.debugging.assert_positive(n, message="`images` must hold at least one image"),
            tf.debugging.assert_equal(tf.shape(ids)[0], n, message="`ids` must hold one id per image"),
            tf.debugging.assert_non_negative(seed, message="`seed` must be >= 0"),
            tf.debugging.Assert(
                tf.reduce_all((images >= 0.0) & (images <= 1.0)), ["`images` must be float32 in [0, 1]"]
            ),
        ]
        images = _after(tf.group(checks), images)
        encoder, decoder, prior = self._networks()
        binarize_seed = tf.constant(-1 if self.binarize_seed is None else self.binarize_seed, tf.int32)
        typical_nll = tf.constant(math.nan if self.typical_nll is None else self.typical_nll, tf.float64)

        def chunk(start, stop):
            # Every score is a function of (image, id, seed) alone: scoring a slice gives
            # the rows the whole request would, to float32 rounding.
            out = score_images(
                lambda x: encoder(x, training=False),
                lambda z: decoder(z, training=False),
                lambda: prior,
                images[start:stop],
                ids[start:stop],
                seed,
                binarize_seed,
                plan=self.plan,
                outputs=names,
                typical_nll=typical_nll,
            )
            return {name: tf.cast(out[name], tf.float32) for name in names}

        return self._in_chunks(chunk, n, self.chunk_images, {name: [] for name in names})

    @staticmethod
    def _in_chunks(compute: Any, n: tf.Tensor, size: int, shapes: dict[str, list[int]]) -> dict[str, tf.Tensor]:
        """`compute(start, stop)` over [0, n) in chunks of `size` rows, one after another, concatenated.

        Args:
          compute: (start, stop) int32 scalars -> dict name -> float32 (stop - start, *shape).
          n: int32 scalar, the rows in all (0 gives empty outputs).
          size: rows per chunk (the last one may be shorter).
          shapes: name -> the shape of one row of that output.

        Returns:
          dict name -> float32 (n, *shape).
        """
        count = (n + size - 1) // size
        arrays = {
            name: tf.TensorArray(tf.float32, size=count, infer_shape=False, element_shape=[None, *shape])
            for name, shape in shapes.items()
        }

        def body(i, arrays):
            start = i * size
            out = compute(start, tf.minimum(start + size, n))
            return i + 1, {name: arrays[name].write(i, out[name]) for name in arrays}

        # parallel_iterations=1: no chunk starts before the one before it has finished, which
        # is what bounds the memory (the chunks are independent, so TensorFlow would otherwise
        # run several at once).
        _, arrays = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), arrays), parallel_iterations=1)
        return {name: array.concat() for name, array in arrays.items()}

    def _score(self, images, ids, seed):
        out = self._scores(images, ids, seed, self.score_names)
        # Anomaly-score signs, as in `compute_scores` and the CSV: higher = more normal.
        return {**out, "rate": -out["rate"], "distortion": -out["distortion"]}

    @staticmethod
    def _row_ids(images):
        return tf.strings.as_string(tf.range(tf.shape(images)[0]))

    def _log_prob(self, images, seed):
        return self._scores(images, self._row_ids(images), seed, ("log_prob",))

    def _elbo(self, images, seed):
        return self._scores(images, self._row_ids(images), seed, ("elbo",))

    def _sample(self, num_samples, seed):
        checks = [
            tf.debugging.assert_non_negative(num_samples, message="`num_samples` must be >= 0"),
            tf.debugging.assert_non_negative(seed, message="`seed` must be >= 0"),  # as the scores'
        ]
        num_samples = _after(tf.group(checks), num_samples)
        _, decoder, prior = self._networks()
        # One draw of all the codes (num_samples x d, small beside the images), so the
        # samples are those of an unchunked call; only the decoding goes chunk by chunk.
        z = prior.sample(num_samples, seed=tf.stack([seed, 1]))

        def chunk(start, stop):
            return {"images": tf.cast(decoder(z[start:stop], training=False).mean(), tf.float32)}

        return self._in_chunks(chunk, num_samples, self.max_batch_elements, {"images": list(self._image_shape)})


def export(
    model: Any,
    path: str | os.PathLike,
    num_samples: int = 64,
    *,
    binarize_seed: int | None = None,
    typical_nll: float | None = None,
    precision: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Writes `model` as a SavedModel with `score`, `log_prob`, `elbo` and `sample` signatures.

    The SavedModel is written to a staging folder beside `path` and moved into `path` only
    when complete, so a failed export (a full disk, say) leaves `path` as it was.

    Args:
      model: a trained `tfpvae.VAE`.
      path: output folder (created if needed), locked while the export writes it.
      num_samples: importance samples per image fixed into every score.
      binarize_seed: serve the scores of the fixed binarisation keyed by (id,
        binarize_seed), as `tfpvae score --binarize-seed`.
      typical_nll: mean -log p(x) of normal data, to serve `typicality`.
      precision: "float32", "bfloat16" or "auto": see `ServingModule`.
      overwrite: replace a SavedModel already in `path`.

    Returns:
      The folder as a `Path`.

    Raises:
      OutputExistsError: `path` holds a SavedModel and `overwrite` is False.
      FolderInUseError: another process is writing to `path`.
      StorageError: the file system refused a write; `path` is unchanged.
    """
    path = Path(path)
    module = ServingModule(
        model, num_samples, binarize_seed=binarize_seed, typical_nll=typical_nll, precision=precision
    )
    signatures = {
        name: getattr(module, name).get_concrete_function() for name in ("score", "log_prob", "elbo", "sample")
    }
    # The module before the folder: arguments it refuses leave no folder behind.
    _export_into(path, module, signatures, overwrite, created=not path.exists())
    return path


def _export_into(path: Path, module: ServingModule, signatures: dict, overwrite: bool, created: bool) -> None:
    """Writes the SavedModel in a staging folder beside `path`, then moves it in (`_move_into`).

    A failed write leaves no folder behind that this call `created` (removed while its
    lock is still held, so never a folder another process has since claimed).
    """
    with claim_folder(path, ("saved_model.pb",), what="a SavedModel", argument="path", overwrite=overwrite):
        try:
            try:
                staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
            except OSError as err:
                raise storage_error("create a folder in", path.parent, err) from err
            try:
                try:
                    tf.saved_model.save(module, str(staging), signatures=signatures)
                except tf.errors.OpError as err:  # TensorFlow's file system reports its own errors
                    raise StorageError("write SavedModel", path, OSError(errno.EIO, err.message)) from err
                except OSError as err:
                    raise storage_error("write SavedModel", path, err) from err
                _move_into(staging, path)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            if created:
                _remove_if_unused(path)
            raise


def _remove_if_unused(path: Path) -> None:
    """Removes a folder that holds nothing but the write lock's file (best effort)."""
    try:
        if {p.name for p in path.iterdir()} <= {LOCK_FILE, OWNER_FILE}:
            shutil.rmtree(path)
    except OSError:
        pass


def _move_into(staging: Path, path: Path) -> None:
    """Moves a complete SavedModel from `staging` into `path`, replacing the one there.

    Renames only (no copying, nothing left half-written). The old saved_model.pb goes
    first and the new one last, so a reader finds a saved_model.pb only beside its own
    variables: a kill in between leaves a folder that is plainly not a SavedModel, never
    an old graph over new weights. A rename that fails puts the old parts back; one that
    cannot go back is kept beside `path`, named in the error.
    """
    new = sorted(os.listdir(staging), key=lambda name: name == "saved_model.pb")
    aside = []  # (old part's place, where it waits in staging)
    try:
        for name in _SAVED_MODEL_ENTRIES:  # the old SavedModel, saved_model.pb first, moved aside whole
            if (path / name).exists():
                os.replace(path / name, staging / f"old.{name}")
                aside.append((path / name, staging / f"old.{name}"))
        for name in new:
            os.replace(staging / name, path / name)
    except OSError as err:
        error = storage_error("move the SavedModel into", path, err)
        for name in new:  # what did come in goes back, and the old parts return
            if (path / name).exists() and not (staging / name).exists():
                with contextlib.suppress(OSError):
                    os.replace(path / name, staging / name)
        lost = []
        for place, waiting in reversed(aside):
            try:
                os.replace(waiting, place)
            except OSError:
                lost.append(place.name)
        if lost:  # the staging folder holds them: keep it (the caller removes `staging` only)
            kept = staging.with_name(staging.name.replace(".partial", ".old-export"))
            with contextlib.suppress(OSError):
                os.replace(staging, kept)
            error = error.keeping(f"the old export's {', '.join(lost)} could not go back and are in {kept} as old.*")
        raise error from err
