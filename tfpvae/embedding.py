"""Posterior means of many images, and their 2-D embeddings for scatter plots.

`posterior_means` encodes an image array in chunks; `embed_latents` turns the codes of
(a random subset of) the images into 2-D coordinates: the codes themselves, their top two
principal components or a t-SNE map. `tfpvae.latent` and `tfpvae.evolution` build on both;
every name here is also importable from `tfpvae.latent`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from tfpvae._validation import check_choice, check_images, check_int
from tfpvae.protocols import ENCODE_CHUNK, LatentModel, encode_in_chunks, latent_dim
from tfpvae.subsets import random_subset

# Largest seed scikit-learn's `random_state` (numpy's legacy RandomState) takes: 2^32 - 1.
MAX_SKLEARN_SEED = 2**32 - 1


class Embedding(NamedTuple):
    """Result of `embed_latents`.

    Attributes:
      coords: 2-D coordinates, float32 (m, 2).
      indices: which rows of `x` they belong to, int64 (m,), sorted (all of `x` when it
        has at most `max_points` images).
      axis_labels: names of the two coordinates, e.g. ("$z_0$", "$z_1$") or ("PC 1 (62%)", ...).
    """

    coords: np.ndarray
    indices: np.ndarray
    axis_labels: tuple[str, str]


def posterior_means(model: LatentModel, x: Any, batch_size: int = ENCODE_CHUNK) -> np.ndarray:
    """Means of q(z|x), encoded `batch_size` images at a time.

    Args:
      model: a `LatentModel` (e.g. a trained `tfpvae.VAE`).
      x: images (n, H, W, C) in [0, 1] (or uint8 0..255).
      batch_size: images per encoder call, >= 1. Default `tfpvae.protocols.ENCODE_CHUNK` (1024).

    Returns:
      float32 array (n, latent_dim).
    """
    x = check_images(x, "x", model.image_shape)
    batch_size = check_int(batch_size, "batch_size")
    parts = [q.mean().numpy() for q in encode_in_chunks(model, x, chunk=batch_size)]
    return np.concatenate(parts).astype(np.float32)


def embed_latents(
    model: LatentModel,
    x: Any,
    method: str = "auto",
    max_points: int = 2000,
    seed: int = 0,
) -> Embedding:
    """2-D coordinates of the posterior means of `x`, for a latent scatter plot.

    Args:
      model: a `LatentModel` (e.g. a trained `tfpvae.VAE`) with latent_dim >= 2.
      x: images (n, H, W, C).
      method: "direct" (the codes themselves; latent_dim 2 only), "pca" (top two
        principal components), "tsne" (t-SNE, initialised with PCA; slow beyond a few
        thousand points) or "auto": "direct" for latent_dim 2, else "pca".
      max_points: at most this many images are embedded, a random subset without
        replacement when n is larger, >= 2.
      seed: seed of the subset and of PCA / t-SNE, int in [0, 2^32 - 1]. Default 0.
        t-SNE starts from the PCA projection (reproducible, and it keeps the global
        layout), so with every image embedded the seed does not change its picture.

    Returns:
      An `Embedding` (coords float32 (m, 2), indices into `x` (m,), axis_labels); use
      `y[embedding.indices]` to colour by class.

    Examples:
      >>> from tfpvae import plots
      >>> emb = embed_latents(model, x_test, method="pca")
      >>> labels = y_test[emb.indices]
      >>> plots.latent_scatter(emb.coords, labels=labels, axis_labels=emb.axis_labels)
    """
    method = check_choice(method, "method", ("auto", "direct", "pca", "tsne"))
    max_points = check_int(max_points, "max_points", minimum=2)
    seed = check_int(seed, "seed", minimum=0, maximum=MAX_SKLEARN_SEED)
    d = latent_dim(model)
    if d < 2:
        raise ValueError(f"A 2-D embedding needs latent_dim >= 2; the model has latent_dim {d}.")
    if method == "auto":
        method = "direct" if d == 2 else "pca"
    if method == "direct" and d != 2:
        raise ValueError(f'`method="direct"` needs latent_dim 2; got {d}. Use "pca" or "tsne".')
    x = check_images(x, "x", model.image_shape)
    indices = random_subset(len(x), max_points, seed)
    z = posterior_means(model, x[indices]).astype(np.float64)
    coords, axis_labels = project(z, method, seed)
    return Embedding(coords, indices, axis_labels)


def project(z: np.ndarray, method: str, seed: int = 0) -> tuple[np.ndarray, tuple[str, str]]:
    """(coords float32 (m, 2), axis labels) of codes z (m, d) by the resolved method."""
    if method == "direct":
        return z.astype(np.float32), ("$z_0$", "$z_1$")
    if method == "pca":
        from sklearn.decomposition import PCA

        if len(z) < 2:
            raise ValueError(f"PCA needs at least 2 points; got {len(z)}.")
        pca = PCA(n_components=2, random_state=seed)
        coords = pca.fit_transform(z)
        r = pca.explained_variance_ratio_
        return coords.astype(np.float32), (f"PC 1 ({r[0]:.0%} of variance)", f"PC 2 ({r[1]:.0%})")
    from sklearn.manifold import TSNE

    if len(z) < 5:
        raise ValueError(f"t-SNE needs at least 5 points; got {len(z)}.")
    # Perplexity must stay below the number of points; 30 is sklearn's default.
    tsne = TSNE(n_components=2, init="pca", perplexity=min(30.0, (len(z) - 1) / 3), random_state=seed)
    return tsne.fit_transform(z).astype(np.float32), ("t-SNE 1", "t-SNE 2")
