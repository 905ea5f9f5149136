"""Named figures of a trained model: compute what each shows, then draw it with `tfpvae.plots`.

`make_figure(kind, model, x, y)` is what `tfpvae plot KIND` and `tfpvae train` call, so the
command line holds no plotting logic. Each kind returns a matplotlib Figure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tfpvae import plots
from tfpvae._validation import check_choice, check_int, check_labels
from tfpvae.datasets import evenly_spaced

FIGURES = (
    "samples",
    "aggregate-samples",
    "reconstructions",
    "interpolation",
    "traversal",
    "manifold",
    "scatter",
    "uncertainty",
    "pixel-likelihood",
    "curves",
    "pseudo-inputs",
    "histogram",
    "roc",
)
# Kinds that need images (and for some, labels) besides the model; see `needs_data`.
NEEDS_DATA = frozenset(FIGURES) - {"samples", "curves", "pseudo-inputs"}


def needs_data(kind: str, model: Any) -> bool:
    """Whether figure `kind` of `model` needs images: `NEEDS_DATA`, except the manifold of a
    two-dimensional latent space, which is the latent plane itself (no PCA of codes)."""
    return kind in NEEDS_DATA and not (kind == "manifold" and model.config.latent_dim == 2)


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
) -> Figure:
    """Builds figure `kind` for `model`.

    Args:
      kind: one of `FIGURES`.
      model: a trained `tfpvae.VAE`.
      x: images (n, H, W, C) the figure is about (test data). Needed by all kinds but
        "samples", "curves" and "pseudo-inputs" (a VampPrior's learned pseudo-images, the
        first num_images**2 of them).
      y: labels (n,) for per-class reconstructions and coloured scatters. Default None.
        Without labels, "reconstructions" shows num_images images evenly spread over x, and
        "manifold" takes its PCA plane from up to max_points images spread the same way.
      x_anomalous: anomalous images for "histogram" and "roc" (x is then the normal set).
      num_images: images per row or pairs/rows shown. Default 8.
      index: which image of x "traversal", "uncertainty" and "pixel-likelihood" start from.
      grid_size: cells per side of the manifold grid. Default 15.
      method: embedding for "scatter": "auto", "direct", "pca" or "tsne". Default "auto".
      max_points: points in the scatter. Default 2000.
      num_samples: Monte Carlo / importance samples. Default 64.
      temperature: prior temperature for "samples". Default 1.0.
      seed: seed for every random choice. Default 0.
      binarize_seed: "histogram" and "roc" score a fixed binarisation of grey images drawn
        with this seed (as `tfpvae.anomaly.compute_scores` does). Default None: the grey values.

    Returns:
      The Figure.
    """
    kind = check_choice(kind, "kind", FIGURES)
    num_images = check_int(num_images, "num_images")
    if x is None and needs_data(kind, model):
        raise ValueError(f"Figure {kind!r} needs images: pass `x` (CLI: --dataset or --input).")
    if kind in ("histogram", "roc") and x_anomalous is None:
        raise ValueError(f"Figure {kind!r} needs anomalous images: pass `x_anomalous` (CLI: --anomalous).")
    if x is not None and kind in ("traversal", "uncertainty", "pixel-likelihood"):
        index = check_int(index, "index", minimum=0)
        if index >= len(x):
            raise ValueError(f"`index` must be < the number of images ({len(x)}); got {index}.")

    if kind == "samples":
        images = model.sample(num_images * num_images, temperature=temperature, seed=seed)
        return plots.image_grid(images, ncols=num_images, title=f"prior samples (temperature {temperature:g})")
    if kind == "aggregate-samples":
        model.fit_aggregate_posterior(x, seed=seed)
        images = model.sample(num_images * num_images, seed=seed, source="aggregate")
        return plots.image_grid(images, ncols=num_images, title="samples from the aggregate posterior")
    if kind == "reconstructions":
        if y is not None:
            # Only the first image of each class is shown: reconstruct just those.
            y = check_labels(y, len(x), "y")
            _, first = np.unique(y, return_index=True)
            sel = x[first]
            return plots.reconstructions(
                sel, model.reconstruct(sel), labels=y[first], title="reconstructions, one per class"
            )
        sel = x[evenly_spaced(len(x), num_images)]
        return plots.reconstructions(sel, model.reconstruct(sel), title="reconstructions")
    if kind == "interpolation":
        rng = np.random.default_rng(seed)
        pairs = rng.choice(len(x), size=(min(num_images, len(x) // 2), 2), replace=False)
        path = model.interpolate(x[pairs[:, 0]], x[pairs[:, 1]], num_steps=10, method="slerp")
        return plots.interpolation_strips(path.images, path.log_prior, title="slerp interpolations")
    if kind == "traversal":
        t = model.traverse(x[index], dims=list(range(min(model.config.latent_dim, num_images))))
        return plots.traversal_grid(t.images, t.dims, t.offsets, title=f"latent traversals around image {index}")
    if kind == "manifold":
        plane_data = None if model.config.latent_dim == 2 else x[evenly_spaced(len(x), max_points)]
        grid = model.manifold_grid(grid_size=grid_size, x=plane_data)
        return plots.manifold_grid(grid.images, grid.coords, grid.axis_labels, title="decoded latent manifold")
    if kind == "scatter":
        emb = model.embed(x, method=method, max_points=max_points, seed=seed)
        labels = None if y is None else np.asarray(y)[emb.indices]
        return plots.latent_scatter(emb.coords, labels=labels, axis_labels=emb.axis_labels, title="latent codes")
    if kind == "uncertainty":
        u = model.predictive_uncertainty(x[index : index + num_images], num_samples=num_samples, seed=seed)
        maps = {"predictive mean": u.mean, "Bernoulli variance": u.aleatoric, "latent variance": u.epistemic}
        return plots.pixel_maps(
            x[index : index + min(num_images, 4)],
            {k: v[:4] for k, v in maps.items()},
            title="per-pixel predictive uncertainty",
        )
    if kind == "pixel-likelihood":
        sel = x[index : index + min(num_images, 4)]
        lp = model.pixel_log_prob(sel, num_samples=num_samples, seed=seed)
        return plots.pixel_maps(
            sel,
            {"log p(x_ij | z)": lp},
            cmaps={"log p(x_ij | z)": "magma"},
            title="per-pixel log-likelihood (dark = poorly explained)",
        )
    if kind == "curves":
        return plots.training_curves(model.training_history, title="training curves")
    if kind == "pseudo-inputs":
        if model.config.prior != "vamp":
            raise ValueError(
                f"Figure 'pseudo-inputs' needs a model with prior='vamp'; this one has {model.config.prior!r}."
            )
        u = model.prior_layer.pseudo_inputs.numpy()[: num_images * num_images]
        return plots.image_grid(
            u, ncols=num_images, title=f"VampPrior pseudo-inputs ({len(u)} of {model.config.num_components})"
        )
    from tfpvae.anomaly import available_scores, compute_scores

    # Three complementary scores; a plain autoencoder has only its reconstruction term.
    names = tuple(n for n in ("log_prob", "elbo", "complexity") if n in available_scores(model.likelihood))
    names = names or ("distortion",)
    kw = dict(num_samples=num_samples, seed=seed, binarize_seed=binarize_seed)
    normal = compute_scores(model.likelihood, x, names, **kw)
    anomalous = compute_scores(model.likelihood, x_anomalous, names, **kw)
    if kind == "histogram":
        return plots.score_histograms(
            {n: {"normal": normal[n], "anomalous": anomalous[n]} for n in names},
            title="anomaly scores (higher = more normal)",
        )
    return plots.roc_curves(normal, anomalous, higher_is_anomalous=False, title="ROC, normal vs anomalous")
