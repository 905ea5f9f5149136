"""Matplotlib figures of images and training: each function returns a Figure, none shows it.

Uses the Agg backend when no display is configured, so figures render on servers and in
CI. Save with `fig.savefig("file.png")` or `save_figure`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import matplotlib

if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> None:
    """Saves `fig` to `path` (format from the suffix) and closes it to free memory."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def _show_image(ax, image: np.ndarray) -> None:
    image = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(
    images: np.ndarray,
    ncols: int | None = None,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    cell_size: float = 1.0,
) -> Figure:
    """Shows images in a grid.

    Args:
      images: array of shape (n, H, W, C) in [0, 1].
      ncols: columns. Default None: about sqrt(n).
      titles: one caption per image. Default None.
      title: figure title. Default None.
      cell_size: inches per image. Default 1.0.

    Returns:
      The Figure.
    """
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"`images` must have shape (n, H, W, C) with n >= 1; got {images.shape}.")
    n = len(images)
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(ncols * cell_size, nrows * cell_size + (0.4 if title else 0)), layout="constrained"
    )
    axes = np.atleast_1d(axes).ravel()
    for i, ax in enumerate(axes):
        if i < n:
            _show_image(ax, images[i])
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
        else:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig


def reconstructions(originals: np.ndarray, reconstructed: np.ndarray, title: str | None = None) -> Figure:
    """Originals (top row) over their reconstructions (bottom row).

    Args:
      originals: array (n, H, W, C) in [0, 1].
      reconstructed: array of the same shape.
      title: figure title. Default None.
    """
    originals, reconstructed = np.asarray(originals), np.asarray(reconstructed)
    if originals.shape != reconstructed.shape:
        raise ValueError(
            f"`originals` and `reconstructed` must have equal shapes; got {originals.shape} and {reconstructed.shape}."
        )
    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(n * 1.0, 2.3), squeeze=False, layout="constrained")
    for i in range(n):
        _show_image(axes[0, i], originals[i])
        _show_image(axes[1, i], reconstructed[i])
    axes[0, 0].set_ylabel("input", fontsize=8)
    axes[1, 0].set_ylabel("reconstruction", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def training_curves(history: dict[str, Sequence[float]], title: str | None = None) -> Figure:
    """Loss, nll, kl and elbo per epoch, training and validation.

    Args:
      history: dict of metric name -> per-epoch values (`VAE.training_history`).
      title: figure title. Default None.
    """
    metrics = [m for m in ("loss", "nll", "kl", "elbo") if m in history]
    if not metrics:
        raise ValueError(f"`history` has none of loss/nll/kl/elbo; got keys {sorted(history)}.")
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 2.8), squeeze=False, layout="constrained")
    for ax, name in zip(axes[0], metrics):
        epochs = np.arange(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker="o", ms=3, label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker="o", ms=3, label="validation")
        ax.set_title(name + (" (nats)" if name != "loss" else ""))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
