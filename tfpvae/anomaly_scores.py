"""`compute_scores`: every per-image anomaly score of a set of images, from one pass of importance draws.

The scores themselves (log_prob, elbo, rate, distortion, typicality, complexity) are
described in `tfpvae.anomaly`, which re-exports these names beside the detectors that use
them; `DETECTOR_SCORES` adds "combined", which needs fitting (`tfpvae.combined`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfpvae._validation import check_bool, check_choice, check_images, check_int
from tfpvae.compression import COMPRESSORS, compressed_bits
from tfpvae.scoring import SCORES

__all__ = ["DETECTOR_SCORES", "available_scores", "compute_scores"]

DETECTOR_SCORES = ("combined", *SCORES)  # "combined" is fitted on normal images (`tfpvae.combined`)


def available_scores(estimator: Any, detector: bool = False) -> tuple[str, ...]:
    """The scores an estimator can give.

    Args:
      estimator: a `LikelihoodEstimator`.
      detector: False: names of `SCORES` (what `compute_scores` gives); True: of
        `DETECTOR_SCORES` (what `AnomalyDetector` takes, "combined" first).

    Returns:
      all of them, or for a model without a likelihood (a plain autoencoder,
      `LikelihoodEstimator.defines_likelihood` False) only ("distortion",).
    """
    if not getattr(estimator, "defines_likelihood", True):
        return ("distortion",)
    return DETECTOR_SCORES if detector else SCORES


def compute_scores(
    estimator: Any,
    x: np.ndarray,
    scores: str | tuple[str, ...] | None = None,
    *,
    num_samples: int = 100,
    typical_nll: float | None = None,
    seed: int | None = 0,
    binarize_seed: int | None = None,
    ids: Sequence[Any] | None = None,
    index_offset: int = 0,
    progress: bool | None = None,
    compressor: str = "context",
    stderr: bool = False,
) -> dict[str, np.ndarray]:
    """Computes the named scores of every image from one set of posterior draws.

    Every score comes from the same k draws per image (`tfpvae.scoring.score_images`), keyed
    by each image's id and the seed, so a row does not depend on the batch, order or shard
    it is scored in.

    Args:
      estimator: a `tfpvae.likelihood.LikelihoodEstimator`.
      x: images (n, H, W, C) in [0, 1].
      scores: names from `SCORES` (or one name). None: every score the estimator
        gives (`available_scores`), with "typicality" only when `typical_nll` is given.
      num_samples: importance samples k per image, shared by every score.
      typical_nll: mean -log p(x) of normal data; required by "typicality".
      seed: seed for reproducible scores, in [0, 2^31 - 1].
      binarize_seed: score a fixed binarisation of grey images drawn with this seed
        (`tfpvae.likelihood.binarize`). None: score the grey values; the
        "complexity" score still uses a fixed binarisation drawn with `seed`, because its
        compressed length is that of one binary image.
      ids: one id per image (str or int), which keys its draws. None: the row
        index plus `index_offset`.
      index_offset: with the default ids, the position of x[0] in a larger set.
      progress: show a progress bar. None: automatic.
      compressor: the code length L(x) of "complexity": "context" (default, computed in
        the scoring graph) or "zlib"; see `compressed_bits`.
      stderr: also return "log_prob_stderr" (and "elbo_stderr") beside "log_prob" (and
        "elbo"), the Monte Carlo standard errors.

    Returns:
      dict name -> float64 array (n,), higher = more normal (the standard errors are
      spreads, not scores).
    """
    from tfpvae.likelihood import binarize, check_ids

    if scores is None:
        scores = tuple(s for s in available_scores(estimator) if s != "typicality" or typical_nll is not None)
    scores = (scores,) if isinstance(scores, str) else tuple(scores)
    for name in scores:
        check_choice(name, "score", SCORES)
    check_int(num_samples, "num_samples")
    check_choice(compressor, "compressor", COMPRESSORS)
    check_bool(stderr, "stderr")
    unavailable = [name for name in scores if name not in available_scores(estimator)]
    if unavailable:
        estimator.require_likelihood(unavailable[0])
    if "typicality" in scores and typical_nll is None:
        raise ValueError(
            "The 'typicality' score needs `typical_nll`, the mean -log p(x) of held-out normal images "
            "(AnomalyDetector(score='typicality').fit computes it as `typical_nll_`)."
        )
    x = check_images(x, "x", getattr(estimator, "image_shape", None))
    ids = check_ids(ids, len(x), check_int(index_offset, "index_offset", minimum=0))
    # One random seed for every pass below, as one graph call draws one (zlib's complexity too).
    seed = int(np.random.default_rng().integers(2**31)) if seed is None else seed
    outputs = [name for name in scores if not (name == "complexity" and compressor == "zlib")]
    if stderr:
        outputs += [f"{name}_stderr" for name in ("log_prob", "elbo") if name in scores]
    if "complexity" in scores and compressor == "zlib":
        outputs.append("log_prob")
    # The graph's scores are log-likelihoods and KLs; anomaly scores are higher = more normal.
    out = estimator.scores(
        x,
        tuple(dict.fromkeys(outputs)),
        num_samples,
        ids=ids,
        seed=seed,
        binarize_seed=binarize_seed,
        typical_nll=typical_nll,
        progress=progress,
    )
    for name in ("rate", "distortion"):
        if name in out:
            out[name] = -out[name]
    if "complexity" in scores and compressor == "zlib":
        xb = x if binarize_seed is None else binarize(x, binarize_seed, ids=ids)
        grey = ~np.all((xb == 0) | (xb == 1), axis=(1, 2, 3))
        if grey.any():
            # As the graph does: a grey image is scored as its fixed binarisation keyed by id and seed.
            xb = xb.copy()
            xb[grey] = binarize(xb[grey], seed, ids=ids[grey])
            log_pb = estimator.log_prob(xb, num_samples, ids=ids, seed=seed, progress=progress)
        else:
            log_pb = out["log_prob"]
        out["complexity"] = log_pb / math.log(2) + compressed_bits(xb, compressor="zlib")
    names = list(scores) + [name for name in outputs if name.endswith("_stderr")]
    return {name: np.asarray(out[name], np.float64) for name in names}
