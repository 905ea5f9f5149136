"""`LatentEvolution`: a Keras callback that records the latent scatter and reconstructions over training.

Each snapshot stores the posterior means of a fixed subset of images and the reconstructions
of a fixed set; `save_gif` animates the scatter and `reconstructions_figure` stacks the
reconstructions, one row per snapshot. The callback is also importable from `tfpvae.latent`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from tfpvae._io import atomic_write
from tfpvae._keras import tfk
from tfpvae._validation import check_float, check_images, check_int, check_labels
from tfpvae.embedding import posterior_means, project
from tfpvae.subsets import evenly_spaced, random_subset

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class LatentEvolution(tfk.callbacks.Callback):
    """Keras callback recording the latent scatter and reconstructions as training goes.

    At the start of each `fit` and after every epoch whose number is a multiple of
    `every` (and the last of each `fit`), it stores the posterior means of a fixed subset
    of `x` and the reconstructions of a fixed set of images. Snapshots carry Keras' epoch
    numbers: a `fit(initial_epoch=k)` (a resumed run) starts at epoch k, and a `fit` from
    epoch 0 after an earlier one continues the count where that one ended. For
    latent_dim > 2 the scatter is the PCA projection of each snapshot, with each
    component's sign chosen to agree with the previous frame, so the animation does not
    flip. The model it is attached to must be a `tfpvae.protocols.LatentModel` (e.g. a
    `tfpvae.VAE`); reconstructions are the decoded posterior means.

    Args:
      x: images (n, H, W, C) whose codes are scattered.
      y: class labels (n,) to colour the scatter.
      every: snapshot period in epochs, >= 1: after epochs every, 2 * every, ...
      x_reconstruct: images to reconstruct at each snapshot. None:
        `num_reconstructions` images of `x` spread evenly over it
        (`tfpvae.subsets.evenly_spaced`), so a set stored in class order shows every class.
      num_reconstructions: how many images when `x_reconstruct` is None.
      max_points: at most this many points in the scatter (a seeded random subset).
      seed: seed of the subset.

    Attributes:
      epochs: epoch number of each snapshot, list of int: the epochs completed when it
        was taken (0 = before any training; k = before a `fit(initial_epoch=k)` trains).
      latents: posterior means per snapshot, each float32 (m, latent_dim).
      reconstructions: reconstructions per snapshot, each float32 (k, H, W, C).
      indices: rows of `x` in the scatter, int64 (m,).
      labels: `y[indices]`, (m,), or None.
      x_reconstruct: the images reconstructed at each snapshot, (k, H, W, C).

    Examples:
      >>> evo = LatentEvolution(x_test, y_test)
      >>> model.fit(x_train, epochs=10, callbacks=[evo])
      >>> evo.save_gif("latents.gif")
      >>> evo.reconstructions_figure().savefig("rec.png")
    """

    def __init__(
        self,
        x: Any,
        y: Any = None,
        every: int = 1,
        x_reconstruct: Any = None,
        num_reconstructions: int = 8,
        max_points: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        x = check_images(x, "x")
        self.every = check_int(every, "every")
        num_reconstructions = check_int(num_reconstructions, "num_reconstructions")
        max_points = check_int(max_points, "max_points", minimum=2)
        self.indices = random_subset(len(x), max_points, check_int(seed, "seed", minimum=0))
        self._x = x[self.indices]
        self.labels = None
        if y is not None:
            self.labels = check_labels(y, len(x), "y")[self.indices]
        if x_reconstruct is None:
            self.x_reconstruct = x[evenly_spaced(len(x), num_reconstructions)]
        else:
            self.x_reconstruct = check_images(x_reconstruct)
        self.epochs: list[int] = []
        self.latents: list[np.ndarray] = []
        self.reconstructions: list[np.ndarray] = []
        self._epochs_seen = 0  # the last epoch number snapshotted or completed
        self._offset: int | None = None  # this fit's epoch numbers minus Keras' ones; None: not started

    def _snapshot(self, epoch: int) -> None:
        if self.epochs and self.epochs[-1] == epoch:
            return
        self.epochs.append(epoch)
        self.latents.append(posterior_means(self.model, self._x))
        codes = posterior_means(self.model, self.x_reconstruct)
        self.reconstructions.append(self.model.decode_mean(codes))

    def on_train_begin(self, logs=None):  # noqa: D102
        # Keras learns `initial_epoch` (a resumed run's) only after on_train_begin: the
        # first snapshot waits for on_epoch_begin, which gets the first epoch's number.
        self._offset = None

    def on_epoch_begin(self, epoch, logs=None):  # noqa: D102
        if self._offset is None:
            # fit(initial_epoch=k) numbers its epochs from k: keep them. A fit from epoch 0
            # after an earlier one (no initial_epoch) continues the count instead.
            self._offset = self._epochs_seen if epoch == 0 else 0
            self._epochs_seen = epoch + self._offset
            self._snapshot(self._epochs_seen)

    def on_epoch_end(self, epoch, logs=None):  # noqa: D102
        if self._offset is None:  # driven without on_epoch_begin: Keras' numbers
            self._offset = 0
        self._epochs_seen = epoch + 1 + self._offset
        last = self.params.get("epochs") if self.params else None
        if self._epochs_seen % self.every == 0 or epoch + 1 == last:
            self._snapshot(self._epochs_seen)

    def coordinates(self) -> tuple[list[np.ndarray], tuple[str, str]]:
        """2-D scatter coordinates of every snapshot, and their axis labels.

        Returns:
          (frames, axis_labels): one float array (m, 2) per snapshot (the codes themselves
          for latent_dim <= 2, padded with zeros for latent_dim 1; sign-aligned PCA
          projections above), and the names of the two coordinates.
        """
        if not self.latents:
            raise ValueError("No snapshots yet: pass the callback to `fit` first.")
        d = self.latents[0].shape[1]
        if d < 2:
            return [np.c_[z[:, 0], np.zeros(len(z))] for z in self.latents], ("$z_0$", "")
        if d == 2:
            return [z.copy() for z in self.latents], ("$z_0$", "$z_1$")
        frames: list[np.ndarray] = []
        for z in self.latents:
            coords, _ = project(z.astype(np.float64), "pca")
            if frames:
                # PCA fixes each axis only up to sign: keep the orientation of the last frame.
                signs = np.sign((coords * frames[-1]).sum(0))
                coords = coords * np.where(signs == 0, 1.0, signs)
            frames.append(coords)
        return frames, ("PC 1", "PC 2")

    def scatter_figure(self, index: int = -1, limits: Any = None, dpi: int = 100) -> Figure:
        """The latent scatter of one snapshot as a Figure.

        Args:
          index: which snapshot, as in `epochs`. -1: the last.
          limits: ((xmin, xmax), (ymin, ymax)) to fix the axes. None: fitted to the points.
          dpi: figure resolution.
        """
        from tfpvae import plots

        frames, axis_labels = self.coordinates()
        return plots.latent_scatter(
            frames[index],
            labels=self.labels,
            axis_labels=axis_labels,
            title=f"epoch {self.epochs[index]}",
            limits=limits,
            dpi=dpi,
        )

    def save_gif(self, path: str | os.PathLike, fps: float = 2.0, dpi: int = 80) -> None:
        """Writes the scatter over epochs as an animated GIF (fixed axes, loops forever).

        Args:
          path: output file, e.g. "latents.gif".
          fps: frames per second, > 0.
          dpi: resolution of each frame.

        Raises:
          StorageError: the file could not be written (an old file is left as it was).
        """
        import matplotlib.pyplot as plt
        from PIL import Image

        fps = check_float(fps, "fps", minimum=0.0, min_inclusive=False)
        frames, _ = self.coordinates()
        # One set of limits for every frame, from robust percentiles of all of them,
        # so the animation shows the codes moving rather than the axes rescaling.
        allc = np.concatenate(frames)
        lo, hi = np.percentile(allc, 0.5, axis=0), np.percentile(allc, 99.5, axis=0)
        pad = 0.05 * np.maximum(hi - lo, 1e-3)
        limits = ((lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1]))
        images = []
        for i in range(len(frames)):
            fig = self.scatter_figure(i, limits=limits, dpi=dpi)
            fig.canvas.draw()
            images.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB"))
            plt.close(fig)
        duration = int(round(1000 / fps))
        atomic_write(
            path,
            lambda f: images[0].save(
                f, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0, optimize=False
            ),
        )

    def reconstructions_figure(
        self, title: str | None = "reconstructions during training", max_rows: int = 12
    ) -> Figure:
        """Originals in the first row, then one row of reconstructions per snapshot.

        Args:
          title: figure title.
          max_rows: most snapshot rows shown; longer runs show evenly spaced snapshots,
            always including the first and the last.
        """
        from tfpvae import plots

        if not self.reconstructions:
            raise ValueError("No snapshots yet: pass the callback to `fit` first.")
        max_rows = check_int(max_rows, "max_rows", minimum=2)
        n = len(self.reconstructions)
        keep = evenly_spaced(n, max_rows)
        rows = np.stack([self.x_reconstruct, *(self.reconstructions[i] for i in keep)])
        labels = ["input", *(f"epoch {self.epochs[i]}" for i in keep)]
        return plots.image_rows(rows, row_labels=labels, title=title)
