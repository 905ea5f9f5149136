"""Named figures of a trained model: compute what each shows, then draw it with `tfpvae.plots`.

`make_figure(kind, model, x, y)` is what `tfpvae plot KIND` and `tfpvae train` call, so the
command line holds no plotting logic. Each kind returns a matplotlib Figure; `FIGURES`
names them all (defined in `tfpvae.config`, so the CLI's parser needs no TensorFlow). The
latent, uncertainty and anomaly-map figures compute their arrays with `tfpvae.latent`,
`tfpvae.uncertainty` and `tfpvae.anomaly_maps`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tfpvae import anomaly_maps, latent, plots, uncertainty
from tfpvae._validation import MAX_INT32_SEED, check_choice, check_int, check_labels, check_seed
from tfpvae.config import FIGURES as FIGURES
from tfpvae.protocols import latent_dim
from tfpvae.subsets import evenly_spaced

# Kinds that need images (and for some, labels) besides the model; see `needs_data`.
NEEDS_DATA = frozenset(FIGURES) - {"samples", "curves", "pseudo-inputs"}
# Mixture components of "aggregate-samples": one per class of the 10-class datasets.
AGGREGATE_COMPONENTS = 10


def needs_data(kind: str, model: Any) -> bool:
    """Whether figure `kind` of `model` needs images: `NEEDS_DATA`, except the manifold of a
    two-dimensional latent space, which is the latent plane itself (no PCA of codes)."""
    return kind in NEEDS_DATA and not (kind == "manifold" and latent_dim(model) == 2)


def min_images(kind: str, model: Any, method: str = "auto") -> tuple[int, str]:
    """The fewest images figure `kind` of `model` can be drawn from, and what it needs them for.

    Args:
      kind: one of `FIGURES`.
      model: the model the figure is of.
      method: the embedding of "scatter" ("auto", "direct", "pca" or "tsne").

    Returns:
      (count, reason): e.g. (2, "to pair") for "interpolation"; (1, "") for kinds that
      can be drawn from one image.
    """
    if kind == "interpolation":
        return 2, "to pair"
    if kind == "aggregate-samples":
        return AGGREGATE_COMPONENTS, f"to fit its {AGGREGATE_COMPONENTS}-component mixture to their codes"
    if kind == "manifold" and latent_dim(model) != 2:
        return 3, "for the PCA plane of their codes"
    if kind == "scatter" and method == "tsne":
        return 5, "for a t-SNE map"
    if kind == "scatter" and (method == "pca" or (method == "auto" and latent_dim(model) != 2)):
        return 2, "for a PCA projection"
    return 1, ""


def check_figure(
    kind: str,
    model: Any,
    x: np.ndarray | None = None,
    *,
    x_anomalous: np.ndarray | None = None,
    index: int = 0,
    method: str = "auto",
) -> None:
    """Raises ValueError, naming what is missing, if `make_figure` cannot draw `kind` from these inputs.

    Called by `make_figure` before any work; the command line calls it to tell a request that
    cannot be drawn (a user's mistake) from a failure while drawing.

    Args:
      kind: one of `FIGURES`.
      model: the model the figure is of.
      x: the images it is about, or None.
      x_anomalous: the anomalous images, or None.
      index: the image "traversal", "uncertainty", "pixel-likelihood" and "anomaly-map" start from.
      method: the embedding of "scatter", as in `make_figure`.
    """
    kind = check_choice(kind, "kind", FIGURES)
    if x is None and needs_data(kind, model):
        raise ValueError(f"Figure {kind!r} needs images: pass `x` (CLI: --dataset or --input).")
    # Checked here, before any work, rather than met deep inside as an empty pair list or
    # a mixture with more components than codes, in the words of another argument.
    need, why = min_images(kind, model, method)
    if x is not None and len(x) < need:
        raise ValueError(
            f"Figure {kind!r} needs >= {need} images {why}; got {len(x)} "
            "(CLI: more images in --input or --dataset, or a larger --limit)."
        )
    if kind in ("histogram", "roc") and x_anomalous is None:
        raise ValueError(f"Figure {kind!r} needs anomalous images: pass `x_anomalous` (CLI: --anomalous).")
    if kind == "pseudo-inputs" and not hasattr(getattr(model, "prior_layer", None), "pseudo_inputs"):
        raise ValueError(
            "Figure 'pseudo-inputs' needs a prior with pseudo-inputs (prior='vamp'); "
            f"this model's prior is {model.config.prior!r}."
        )
    if x is not None and kind in ("traversal", "uncertainty", "pixel-likelihood", "anomaly-map"):
        index = check_int(index, "index", minimum=0)
        if index >= len(x):
            raise ValueError(f"`index` must be < the number of images ({len(x)}); got {index}.")


def make_figure(
    kind: str,
    model: Any,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    *,
    x_anomalous: np.ndarray | None = None,
    num_images: int = 8,
    index: int = 0,
    grid_size: int = 15,
    method: str = "auto",
    max_points: int = 2000,
    num_samples: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
    binarize_seed: int | None = None,
    map_method: str = anomaly_maps.DEFAULT_METHOD,
) -> Figure:
    """Builds figure `kind` for `model`.

    Args:
      kind: one of `FIGURES`.
      model: a trained `tfpvae.VAE`.
      x: images (n, H, W, C) the figure is about (test data). Needed by all kinds but
        "samples", "curves" and "pseudo-inputs" (a VampPrior's learned pseudo-images, the
        first `num_images**2` of them).
      y: labels (n,) for per-class reconstructions and coloured scatters.
        Without labels, "reconstructions" shows num_images images evenly spread over x, and
        "manifold" takes its PCA plane from up to max_points images spread the same way.
      x_anomalous: anomalous images for "histogram" and "roc" (x is then the normal set).
      num_images: images per row or pairs/rows shown.
      index: which image of x "traversal", "uncertainty", "pixel-likelihood" and "anomaly-map"
        start from.
      grid_size: cells per side of the manifold grid.
      method: embedding for "scatter": "auto", "direct", "pca" or "tsne".
      max_points: points in the scatter.
      num_samples: Monte Carlo / importance samples.
      temperature: prior temperature for "samples".
      seed: seed for every random choice, int in [0, 2^31 - 1]. Default 0.
      binarize_seed: "histogram" and "roc" score a fixed binarisation of grey images drawn
        with this seed (as `tfpvae.anomaly.compute_scores` does). None: the grey values.
      map_method: the per-pixel score of "anomaly-map", one of `tfpvae.anomaly_maps.METHODS`
        (with that module's default healing and smoothing).

    Returns:
      the matplotlib figure, to show or to save with `savefig`.
    """
    check_figure(kind, model, x, x_anomalous=x_anomalous, index=index, method=method)
    num_images = check_int(num_images, "num_images")
    # Every kind's seed feeds a TensorFlow stateless seed or numpy: the smaller bound of the two.
    seed = check_seed(seed, "seed", maximum=MAX_INT32_SEED)
    request = _Request(
        model=model, x=x, y=y, x_anomalous=x_anomalous, num_images=num_images, index=index, grid_size=grid_size,
        method=method, max_points=max_points, num_samples=num_samples, temperature=temperature, seed=seed,
        binarize_seed=binarize_seed, map_method=check_choice(map_method, "map_method", anomaly_maps.METHODS),
    )  # fmt: skip
    return _DRAW[kind](request)


@dataclasses.dataclass(frozen=True)
class _Request:
    """The checked arguments of one `make_figure` call."""

    model: Any
    x: np.ndarray | None
    y: np.ndarray | None
    x_anomalous: np.ndarray | None
    num_images: int
    index: int
    grid_size: int
    method: str
    max_points: int
    num_samples: int
    temperature: float
    seed: int
    binarize_seed: int | None
    map_method: str


def _samples(r: _Request) -> Figure:
    images = r.model.sample(r.num_images * r.num_images, temperature=r.temperature, seed=r.seed)
    return plots.image_grid(images, ncols=r.num_images, title=f"prior samples (temperature {r.temperature:g})")


def _aggregate_samples(r: _Request) -> Figure:
    gmm = latent.fit_aggregate_posterior(r.model, r.x, num_components=AGGREGATE_COMPONENTS, seed=r.seed)
    images = latent.sample_aggregate_posterior(r.model, gmm, r.num_images * r.num_images, seed=r.seed)
    return plots.image_grid(images, ncols=r.num_images, title="samples from the aggregate posterior")


def _reconstructions(r: _Request) -> Figure:
    x, model = r.x, r.model
    if r.y is not None:
        # Only the first image of each class is shown: reconstruct just those.
        y = check_labels(r.y, len(x), "y")
        _, first = np.unique(y, return_index=True)
        sel = x[first]
        return plots.reconstructions(
            sel, model.reconstruct(sel), labels=y[first], title="reconstructions, one per class"
        )
    sel = x[evenly_spaced(len(x), r.num_images)]
    return plots.reconstructions(sel, model.reconstruct(sel), title="reconstructions")


def _interpolation(r: _Request) -> Figure:
    rng = np.random.default_rng(r.seed)
    pairs = rng.choice(len(r.x), size=(min(r.num_images, len(r.x) // 2), 2), replace=False)
    path = latent.interpolate(r.model, r.x[pairs[:, 0]], r.x[pairs[:, 1]], num_steps=10, method="slerp")
    return plots.interpolation_strips(path.images, path.log_prior, title="slerp interpolations")


def _traversal(r: _Request) -> Figure:
    t = latent.traverse(r.model, r.x[r.index], dims=list(range(min(latent_dim(r.model), r.num_images))))
    return plots.traversal_grid(t.images, t.dims, t.offsets, title=f"latent traversals around image {r.index}")


def _manifold(r: _Request) -> Figure:
    plane_data = None if latent_dim(r.model) == 2 else r.x[evenly_spaced(len(r.x), r.max_points)]
    grid = latent.manifold_grid(r.model, grid_size=r.grid_size, x=plane_data)
    return plots.manifold_grid(grid.images, grid.coords, grid.axis_labels, title="decoded latent manifold")


def _scatter(r: _Request) -> Figure:
    y = None if r.y is None else check_labels(r.y, len(r.x), "y")  # before the embedding's work
    emb = latent.embed_latents(r.model, r.x, method=r.method, max_points=r.max_points, seed=r.seed)
    labels = None if y is None else y[emb.indices]
    return plots.latent_scatter(emb.coords, labels=labels, axis_labels=emb.axis_labels, title="latent codes")


def _uncertainty(r: _Request) -> Figure:
    x = r.x[r.index : r.index + r.num_images]
    # Draws keyed by each image's index in x: the same image looks the same whatever --num-images.
    u = uncertainty.predictive_uncertainty(r.model, x, num_samples=r.num_samples, seed=r.seed, index_offset=r.index)
    maps = {"predictive mean": u.mean, "Bernoulli variance": u.aleatoric, "latent variance": u.epistemic}
    return plots.pixel_maps(x[:4], {k: v[:4] for k, v in maps.items()}, title="per-pixel predictive uncertainty")


def _pixel_likelihood(r: _Request) -> Figure:
    sel = r.x[r.index : r.index + min(r.num_images, 4)]
    lp = r.model.pixel_log_prob(sel, num_samples=r.num_samples, seed=r.seed)
    return plots.pixel_maps(
        sel,
        {"log p(x_ij | z)": lp},
        cmaps={"log p(x_ij | z)": "magma"},
        title="per-pixel log-likelihood (dark = poorly explained)",
    )


def _anomaly_map(r: _Request) -> Figure:
    sel = r.x[r.index : r.index + r.num_images]
    maps = anomaly_maps.anomaly_map(r.model, sel, r.map_method, num_samples=r.num_samples, seed=r.seed)
    labels = [str(i) for i in range(r.index, r.index + len(sel))]
    return plots.anomaly_overlay(sel, maps, labels=labels, title=f"where each image is abnormal ({r.map_method})")


def _curves(r: _Request) -> Figure:
    if not r.model.training_history:
        raise ValueError("Figure 'curves' needs a training history; this model has none (saved before any training).")
    return plots.training_curves(r.model.training_history, title="training curves")


def _pseudo_inputs(r: _Request) -> Figure:
    config = r.model.config
    u = r.model.prior_layer.pseudo_inputs.numpy()[: r.num_images * r.num_images]
    return plots.image_grid(
        u, ncols=r.num_images, title=f"VampPrior pseudo-inputs ({len(u)} of {config.num_components})"
    )


def _scores(r: _Request) -> tuple[tuple[str, ...], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(score names, scores of `x`, scores of `x_anomalous`) for the histogram and ROC figures."""
    from tfpvae.anomaly import available_scores, compute_scores

    likelihood = r.model.likelihood
    # Three complementary scores; a plain autoencoder has only its reconstruction term.
    names = tuple(n for n in ("log_prob", "elbo", "complexity") if n in available_scores(likelihood))
    names = names or ("distortion",)
    kw = dict(num_samples=r.num_samples, seed=r.seed, binarize_seed=r.binarize_seed)
    return names, compute_scores(likelihood, r.x, names, **kw), compute_scores(likelihood, r.x_anomalous, names, **kw)


def _histogram(r: _Request) -> Figure:
    names, normal, anomalous = _scores(r)
    return plots.score_histograms(
        {n: {"normal": normal[n], "anomalous": anomalous[n]} for n in names},
        title="anomaly scores (higher = more normal)",
    )


def _roc(r: _Request) -> Figure:
    _, normal, anomalous = _scores(r)
    return plots.roc_curves(normal, anomalous, higher_is_anomalous=False, title="ROC, normal vs anomalous")


_DRAW: dict[str, Callable[[_Request], Figure]] = {
    "samples": _samples,
    "aggregate-samples": _aggregate_samples,
    "reconstructions": _reconstructions,
    "interpolation": _interpolation,
    "traversal": _traversal,
    "manifold": _manifold,
    "scatter": _scatter,
    "uncertainty": _uncertainty,
    "pixel-likelihood": _pixel_likelihood,
    "anomaly-map": _anomaly_map,
    "curves": _curves,
    "pseudo-inputs": _pseudo_inputs,
    "histogram": _histogram,
    "roc": _roc,
}
