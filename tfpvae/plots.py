"""Matplotlib figures of images, latent walks, latent scatters, pixel and anomaly maps; none shows itself.

Every function takes numpy arrays (the outputs of `tfpvae.latent`, `tfpvae.uncertainty`
or a model's methods; images in [0, 1], or uint8 0..255, which is scaled) and returns a
Figure; none imports TensorFlow. Training curves,
score histograms and ROC curves live in `tfpvae.charts` and are importable from here too.

The library never picks a matplotlib backend: it uses whatever matplotlib would (set by
`MPLBACKEND` or `matplotlib.use`; set `MPLBACKEND=Agg` on a server without a display).
Save with `fig.savefig("file.png")` or `save_figure`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tfpvae._class_labels import class_name, distinct_classes
from tfpvae._io import atomic_write
from tfpvae._validation import check_int, check_labels
from tfpvae.charts import roc_curves as roc_curves
from tfpvae.charts import score_histograms as score_histograms
from tfpvae.charts import training_curves as training_curves

# More classes than this get a colour bar rather than a legend in `latent_scatter`.
_MAX_LEGEND_CLASSES = 20


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> None:
    """Saves `fig` to `path` (format from the suffix, PNG without one) and closes it to free memory.

    The file is written whole or not at all (`tfpvae._io.atomic_write`).

    Raises:
      StorageError: the file could not be written (an old file is left as it was).
    """
    kind = Path(path).suffix[1:].lower() or "png"
    try:
        atomic_write(path, lambda f: fig.savefig(f, format=kind, dpi=dpi, bbox_inches="tight"))
    finally:
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
      images: array of shape (n, H, W, C) in [0, 1] (uint8 0..255 is scaled).
      ncols: columns. None: about sqrt(n).
      titles: one caption per image.
      title: figure title.
      cell_size: inches per image.

    Returns:
      the matplotlib figure, to show or to save with `savefig`.
    """
    images = _pixels(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"`images` must have shape (n, H, W, C) with n >= 1; got {images.shape}.")
    n = len(images)
    _check_count(titles, n, "titles", "image")
    ncols = math.ceil(math.sqrt(n)) if ncols is None else check_int(ncols, "ncols")
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


def reconstructions(
    originals: np.ndarray,
    reconstructed: np.ndarray,
    title: str | None = None,
    labels: Sequence[Any] | None = None,
    class_names: Mapping[Any, str] | None = None,
) -> Figure:
    """Originals (top row) over their reconstructions (bottom row).

    Args:
      originals: array (n, H, W, C) in [0, 1].
      reconstructed: array of the same shape.
      title: figure title.
      labels: class of each image, (n,). If given, only the first image of each class
        is shown, one column per class in sorted order, captioned with the class.
        None: every image, in order.
      class_names: captions for the classes, e.g. {0: "T-shirt"}. None: the labels.
    """
    originals, reconstructed = _pixels(originals), _pixels(reconstructed)
    if originals.shape != reconstructed.shape:
        raise ValueError(
            f"`originals` and `reconstructed` must have equal shapes; got {originals.shape} and {reconstructed.shape}."
        )
    captions = None
    if labels is not None:
        labels = check_labels(labels, len(originals), "labels")
        classes, first = distinct_classes(labels)
        originals, reconstructed = originals[first], reconstructed[first]
        captions = [class_name(c, class_names) for c in classes]
    n = len(originals)
    fig, axes = plt.subplots(
        2, n, figsize=(n * 1.0, 2.3 + (0.2 if captions else 0)), squeeze=False, layout="constrained"
    )
    for i in range(n):
        _show_image(axes[0, i], originals[i])
        _show_image(axes[1, i], reconstructed[i])
        if captions:
            axes[0, i].set_title(captions[i], fontsize=8)
    axes[0, 0].set_ylabel("input", fontsize=8)
    axes[1, 0].set_ylabel("reconstruction", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------- shared helpers
def _pixels(images: Any) -> np.ndarray:
    """`images` as float32: uint8 0..255 scaled to [0, 1], as the models take them (others clipped when drawn)."""
    images = np.asarray(images)
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def _check_image_rows(images: Any, name: str = "images") -> np.ndarray:
    images = _pixels(images)
    if images.ndim != 5 or 0 in images.shape[:2]:
        raise ValueError(
            f"`{name}` must have shape (rows, columns, H, W, C) with rows, columns >= 1; got {images.shape}."
        )
    return images


def _check_count(labels: Sequence[Any] | None, n: int, name: str, what: str) -> None:
    """Raises ValueError unless `labels` is None or holds exactly n entries, one per `what`."""
    if labels is not None and len(labels) != n:
        raise ValueError(f"`{name}` must have {n} entries, one per {what}; got {len(labels)}.")


def _tile(images: np.ndarray, pad: int) -> np.ndarray:
    """One picture from a (rows, cols, H, W, C) array, with `pad` blank pixels between cells.

    The blank is 0 for grey images (drawn white by the reversed grey map) and 1 for
    colour images (white).
    """
    r, c, h, w, ch = images.shape
    blank = 0.0 if ch == 1 else 1.0
    out = np.full((r * h + (r - 1) * pad, c * w + (c - 1) * pad, ch), blank, dtype=np.float32)
    for i in range(r):
        for j in range(c):
            out[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = images[i, j]
    return np.clip(out, 0.0, 1.0)


def _show_tiled(ax, images: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws the tiled picture on `ax`; returns the pixel x and y centres of the columns and rows."""
    _show_image(ax, _tile(images, pad))
    r, c, h, w, _ = images.shape
    xs = np.arange(c) * (w + pad) + (w - 1) / 2
    ys = np.arange(r) * (h + pad) + (h - 1) / 2
    for spine in ax.spines.values():
        spine.set_visible(False)
    return xs, ys


def image_rows(
    images: np.ndarray,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    cell_size: float = 0.7,
    pad: int = 1,
) -> Figure:
    """Shows a (rows, columns) array of images as one picture with labelled rows and columns.

    Args:
      images: array (rows, columns, H, W, C) in [0, 1].
      row_labels: one label per row, drawn on the left.
      col_labels: one label per column, drawn on top.
      title: figure title.
      cell_size: inches per image.
      pad: blank pixels between images.

    Returns:
      The Figure: one axes holding the tiled picture, row labels as y ticks, column labels
      as x ticks on top.
    """
    images = _check_image_rows(images)
    r, c = images.shape[:2]
    _check_count(row_labels, r, "row_labels", "row")
    _check_count(col_labels, c, "col_labels", "column")
    extra_w = 0.9 if row_labels is not None else 0.1
    extra_h = (0.3 if col_labels is not None else 0.05) + (0.35 if title else 0.0)
    fig, ax = plt.subplots(figsize=(c * cell_size + extra_w, r * cell_size + extra_h), layout="constrained")
    xs, ys = _show_tiled(ax, images, pad)
    if row_labels is not None:
        ax.set_yticks(ys, [str(s) for s in row_labels], fontsize=8)
        ax.tick_params(axis="y", length=0)
    if col_labels is not None:
        ax.xaxis.tick_top()
        ax.set_xticks(xs, [str(s) for s in col_labels], fontsize=7)
        ax.tick_params(axis="x", length=0)
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------- latent walks
def interpolation_strips(
    images: np.ndarray,
    log_prior: np.ndarray | None = None,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    cell_size: float = 0.7,
) -> Figure:
    """One row of decoded images per interpolation path, with log p(z) along each path below.

    Args:
      images: array (n_paths, num_steps, H, W, C), e.g. `latent.interpolate(...).images`.
      log_prior: log p(z) at each step, (n_paths, num_steps). If given, a line panel
        under the strips shows it per path (the step index is the column).
      row_labels: one label per path. None: "path 1", "path 2", ...
      title: figure title.
      cell_size: inches per image.

    Returns:
      The Figure: the strips, and with `log_prior` a second axes of one curve per path
      whose points sit under the images of their step.
    """
    images = _check_image_rows(images)
    n, s = images.shape[:2]
    _check_count(row_labels, n, "row_labels", "path")
    row_labels = [f"path {i + 1}" for i in range(n)] if row_labels is None else list(row_labels)
    if log_prior is None:
        return image_rows(images, row_labels, [str(i) for i in range(s)], title=title, cell_size=cell_size)
    log_prior = np.asarray(log_prior, dtype=np.float64)
    if log_prior.shape != (n, s):
        raise ValueError(f"`log_prior` must have shape ({n}, {s}) to match `images`; got {log_prior.shape}.")
    strip_h = n * cell_size
    fig = plt.figure(figsize=(s * cell_size + 1.4, strip_h + 2.0 + (0.35 if title else 0)), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[strip_h, 1.6])
    xs, ys = _show_tiled(top, images, pad=1)
    top.set_yticks(ys, row_labels, fontsize=8)
    top.tick_params(axis="y", length=0)
    colors = plt.get_cmap("tab10")
    for i in range(n):
        # Colour each row label like its curve, so strip and line pair up at a glance.
        top.get_yticklabels()[i].set_color(colors(i % 10))
        bottom.plot(xs, log_prior[i], marker="o", ms=3, color=colors(i % 10), label=row_labels[i])
    bottom.set_xlim(top.get_xlim())
    bottom.set_xticks(xs, [str(i) for i in range(s)])
    bottom.set_xlabel("step", fontsize=8)
    bottom.set_ylabel("log p(z)", fontsize=8)
    bottom.tick_params(labelsize=7)
    bottom.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    # Lay out once, then freeze and give the curve panel the strip's exact width, so each
    # point sits under its image (the strip keeps square pixels, so it is narrower).
    fig.canvas.draw()
    fig.set_layout_engine("none")
    strip, curve = top.get_position(), bottom.get_position()
    bottom.set_position([strip.x0, curve.y0, strip.width, curve.height])
    return fig


def traversal_grid(
    images: np.ndarray,
    dims: Sequence[int] | None = None,
    offsets: Sequence[float] | None = None,
    unit: str = "σ",
    title: str | None = None,
    cell_size: float = 0.7,
) -> Figure:
    """Latent traversals: row k varies one latent dimension, columns are the steps.

    Args:
      images: array (n_dims, num_steps, H, W, C), e.g. `latent.traverse(...).images`.
      dims: the latent dimension of each row, labels "z_k". None: 0, 1, ...
      offsets: the step of each column in std units, (num_steps,). None: no
        column labels.
      unit: suffix of the column labels.
      title: figure title.
      cell_size: inches per image.

    Returns:
      The Figure (an `image_rows` picture): rows labelled "z_k", columns by offset.
    """
    images = _check_image_rows(images)
    n, s = images.shape[:2]
    _check_count(dims, n, "dims", "row")
    dims = list(range(n)) if dims is None else [int(k) for k in dims]
    col_labels = None
    if offsets is not None:
        offsets = np.asarray(offsets, dtype=np.float64)
        if offsets.shape != (s,):
            raise ValueError(f"`offsets` must have shape ({s},), one per column; got {offsets.shape}.")
        # 3 significant digits: ".2g" showed 2.25 as 2.2 and 150 as 1.5e+02 (an exponent from 1000 on now).
        col_labels = [f"{o:+.3g}{unit}" if o != 0 else "0" for o in offsets]
    return image_rows(images, [f"$z_{{{k}}}$" for k in dims], col_labels, title=title, cell_size=cell_size)


def manifold_grid(
    images: np.ndarray,
    coords: np.ndarray,
    axis_labels: Sequence[str] = ("$z_0$", "$z_1$"),
    title: str | None = None,
    size: float = 7.0,
) -> Figure:
    """A decoded grid of a latent plane as one picture, with the latent coordinates on the axes.

    Args:
      images: array (g_rows, g_cols, H, W, C) from `latent.manifold_grid`; `images[i, j]`
        was decoded at `(coords[0][j], coords[1][i])`.
      coords: (2, g): horizontal coordinates of the columns and vertical coordinates of
        the rows (top row first). Ticks sit at the centre of each image.
      axis_labels: names of the horizontal and vertical coordinate.
      title: figure title.
      size: width of the picture in inches.

    Returns:
      the matplotlib figure, to show or to save with `savefig`.
    """
    images = _check_image_rows(images)
    r, c = images.shape[:2]
    _check_count(axis_labels, 2, "axis_labels", "axis")
    coords = [np.asarray(a, dtype=np.float64).ravel() for a in coords]
    if len(coords) != 2 or coords[0].shape != (c,) or coords[1].shape != (r,):
        raise ValueError(
            f"`coords` must be (columns ({c},), rows ({r},)) to match `images`; got shapes {[a.shape for a in coords]}."
        )
    h, w = images.shape[2:4]
    fig, ax = plt.subplots(figsize=(size, size * (r * h) / (c * w) + 0.4 + (0.3 if title else 0)), layout="constrained")
    xs, ys = _show_tiled(ax, images, pad=0)
    # Label every tick while they fit (about 12 per side); beyond that every k-th one.
    step_x, step_y = max(1, math.ceil(c / 12)), max(1, math.ceil(r / 12))
    ax.set_xticks(xs, [f"{v:.2f}" if i % step_x == 0 else "" for i, v in enumerate(coords[0])], fontsize=7)
    ax.set_yticks(ys, [f"{v:.2f}" if i % step_y == 0 else "" for i, v in enumerate(coords[1])], fontsize=7)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    ax.tick_params(length=3)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    if title:
        ax.set_title(title)
    return fig


def latent_scatter(
    coords: np.ndarray,
    labels: Sequence[Any] | None = None,
    values: Sequence[float] | None = None,
    axis_labels: Sequence[str] = ("$z_0$", "$z_1$"),
    title: str | None = None,
    class_names: Mapping[Any, str] | None = None,
    values_label: str | None = None,
    limits: Sequence[Sequence[float]] | None = None,
    dpi: int = 100,
) -> Figure:
    """Scatter of 2-D latent coordinates, coloured by class (legend) or by a value (colour bar).

    Args:
      coords: (n, 2), e.g. `latent.embed_latents(...).coords`.
      labels: class of each point, (n,), drawn in distinct colours with a class legend
        (numeric labels of more than 20 classes get a colour bar instead; names keep it).
      values: a number per point, (n,) (a score, a log-likelihood), drawn with a colour bar.
        Pass at most one of `labels` and `values`.
      axis_labels: names of the two coordinates.
      title: axes title.
      class_names: legend names for the classes, e.g. {0: "T-shirt"}.
      values_label: colour bar label.
      limits: ((xmin, xmax), (ymin, ymax)) to fix the axes, e.g. for animation frames.
        None: fitted to the points.
      dpi: figure resolution.

    Returns:
      the matplotlib figure, to show or to save with `savefig`.
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0:
        raise ValueError(f"`coords` must have shape (n, 2) with n >= 1; got {coords.shape}.")
    if labels is not None and values is not None:
        raise ValueError("Pass `labels` (classes, legend) or `values` (numbers, colour bar), not both.")
    _check_count(axis_labels, 2, "axis_labels", "axis")
    n = len(coords)
    size = float(np.clip(12000.0 / n, 5.0, 30.0))  # smaller points when there are many
    fig, ax = plt.subplots(figsize=(6.2, 5.0), dpi=dpi, layout="constrained")
    if labels is not None:
        labels = check_labels(labels, n, "labels")
        classes, _ = distinct_classes(labels)
        if len(classes) > _MAX_LEGEND_CLASSES and labels.dtype.kind in "biuf":
            # Too many for a legend: colour numbers by value with a colour bar instead (names keep it).
            values, values_label, labels = labels.astype(np.float64), values_label or "class", None
    if labels is not None:
        m = len(classes)  # beyond 20 classes (names), a distinct colour each from a continuous map
        cmap = plt.get_cmap("tab10") if m <= 10 else plt.get_cmap("tab20") if m <= 20 else plt.get_cmap("turbo", m)
        for k, c in enumerate(classes):
            sel = labels == c
            ax.scatter(
                *coords[sel].T, s=size, color=cmap(k % cmap.N), alpha=0.7, lw=0, label=class_name(c, class_names)
            )
        fig.legend(
            loc="outside right center", title="class", markerscale=max(1.0, 7.0 / math.sqrt(size)), frameon=False,
            fontsize=8, title_fontsize=8, ncols=math.ceil(len(classes) / 25),  # columns of <= 25 names
        )  # fmt: skip
    elif values is not None:
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (n,):
            raise ValueError(f"`values` must have shape ({n},), one per point; got {values.shape}.")
        points = ax.scatter(*coords.T, c=values, s=size, cmap="viridis", alpha=0.8, lw=0)
        fig.colorbar(points, ax=ax, label=values_label)
    else:
        ax.scatter(*coords.T, s=size, alpha=0.6, lw=0)
    if limits is not None:
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.grid(alpha=0.25)
    if title:
        ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------- per-pixel maps
def _as_maps(value: Any, n: int, hw: tuple[int, int], what: str) -> np.ndarray:
    """Per-pixel values (n, H, W[, C]), or of one image (H, W[, C]), as (n, H, W): channels averaged."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 4:
        arr = arr.mean(-1)  # several channels: their mean
    elif arr.ndim == 3 and arr.shape[1:] != hw:
        arr = arr.mean(-1)[None]  # one (H, W, C) map
    elif arr.ndim == 2:
        arr = arr[None]
    if arr.shape != (n, *hw):
        raise ValueError(f"{what} must have shape ({n}, {hw[0]}, {hw[1]}[, C]) like the images; got {np.shape(value)}.")
    return arr


def _check_image_batch(images: Any) -> np.ndarray:
    """`images` as float32 (n, H, W, C), one image (H, W, C) as a batch of one, or raises."""
    images = _pixels(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"`images` must have shape (n, H, W, C) or (H, W, C); got {images.shape}.")
    return images


def pixel_maps(
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    cmaps: Mapping[str, str] | None = None,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    cell_size: float = 1.6,
) -> Figure:
    """Each image beside per-pixel maps of it (log-likelihood, predictive variance, ...).

    Args:
      images: array (n, H, W, C) in [0, 1], or one image (H, W, C).
      maps: column title -> per-pixel values shaped like the images ((n, H, W, C),
        (n, H, W), or for one image (H, W[, C])); several channels are averaged.
      cmaps: column title -> matplotlib colour map. None: "viridis" for every map.
      row_labels: one label per image.
      title: figure title.
      cell_size: inches per panel.

    Returns:
      The Figure: one row per image; each map column shares one colour scale and colour
      bar, so rows can be compared.
    """
    images = _check_image_batch(images)
    if not isinstance(maps, Mapping) or not maps:
        raise ValueError("`maps` must be a non-empty dict of title -> per-pixel values.")
    n, hw = len(images), images.shape[1:3]
    arrays = {name: _as_maps(v, n, hw, f"`maps[{name!r}]`") for name, v in maps.items()}
    _check_count(row_labels, n, "row_labels", "image")
    ncols = 1 + len(arrays)
    fig, axes = plt.subplots(
        n, ncols, figsize=(ncols * cell_size + 0.4, n * cell_size + 0.9 + (0.3 if title else 0)),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    for i in range(n):
        _show_image(axes[i, 0], images[i])
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
    axes[0, 0].set_title("image", fontsize=9)
    for j, (name, arr) in enumerate(arrays.items(), start=1):
        finite = arr[np.isfinite(arr)]
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        vmax = max(vmax, vmin + 1e-12)  # a constant map still needs a range
        cmap = (cmaps or {}).get(name, "viridis")
        for i in range(n):
            im = axes[i, j].imshow(arr[i], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[0, j].set_title(name, fontsize=9)
        bar = fig.colorbar(im, ax=axes[:, j], location="bottom", shrink=0.9, aspect=12)
        bar.ax.tick_params(labelsize=7)
        bar.ax.xaxis.set_major_locator(MaxNLocator(3))
    if title:
        fig.suptitle(title)
    return fig


def anomaly_overlay(
    images: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    cmap: str = "turbo",
    cell_size: float = 1.4,
) -> Figure:
    """Images with their anomaly maps (`tfpvae.anomaly_maps.anomaly_map`) laid over them.

    Three rows, one column per image: the image, its map, and the image in grey with the
    map over it in colour, opaque where the map is high and clear where it is low. Every
    panel shares one colour scale, from the lowest value to the 99.5th percentile.

    Args:
      images: array (n, H, W, C) in [0, 1], or one image (H, W, C).
      maps: per-pixel anomaly scores (n, H, W) (or (n, H, W, C), averaged over channels;
        for one image (H, W[, C])), higher = more abnormal.
      masks: ground truth (n, H, W) of the abnormal pixels (for one image (H, W)), drawn as
        magenta outlines; None for none.
      labels: one label per image, above its column.
      title: figure title.
      cmap: matplotlib colour map of the scores. Default "turbo".
      cell_size: inches per panel.

    Returns:
      The Figure.
    """
    images = _check_image_batch(images)
    n, hw = len(images), images.shape[1:3]
    maps = _as_maps(maps, n, hw, "`maps`")
    masks = None if masks is None else _as_maps(masks, n, hw, "`masks`") > 0.5
    _check_count(labels, n, "labels", "image")
    finite = maps[np.isfinite(maps)]
    vmin, vmax = (float(finite.min()), float(np.percentile(finite, 99.5))) if finite.size else (0.0, 1.0)
    norm = plt.Normalize(vmin, max(vmax, vmin + 1e-12), clip=True)
    fig, axes = plt.subplots(
        3, n, figsize=(n * cell_size + 1.2, 3 * cell_size + 0.6 + (0.3 if title else 0)),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    for i in range(n):
        _show_image(axes[0, i], images[i])
        im = axes[1, i].imshow(maps[i], cmap=cmap, norm=norm, interpolation="nearest")
        grey = np.clip(images[i].mean(-1), 0.0, 1.0)  # faded, so that the colours stand out
        axes[2, i].imshow(grey, cmap="gray_r", vmin=0.0, vmax=2.0, interpolation="nearest")
        heat = plt.get_cmap(cmap)(norm(maps[i]))
        heat[..., 3] = 0.85 * norm(maps[i])  # clear where the score is low
        axes[2, i].imshow(heat, interpolation="nearest")
        for ax in axes[1:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
            if masks is not None and masks[i].any():
                ax.contour(masks[i], levels=[0.5], colors="magenta", linewidths=1.2)
        if labels is not None:
            axes[0, i].set_title(labels[i], fontsize=8)
    for row, name in enumerate(("image", "anomaly map", "overlay")):
        axes[row, 0].set_ylabel(name, fontsize=9)
    bar = fig.colorbar(im, ax=axes[1:, :], location="right", shrink=0.9, extend="max", label="more abnormal")
    bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    return fig
