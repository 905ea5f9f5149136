"""A Keras callback that logs a VAE's training to TensorBoard: metrics, learning rate and images.

Each epoch it writes the scalars loss, nll, kl and elbo (and their validation values), the
optimizer's learning rate, and image summaries of prior samples and of reconstructions of a
fixed set of images. View with `tensorboard --logdir DIR`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tfpvae._keras import tf, tfk
from tfpvae._validation import MAX_INT32_SEED, check_images, check_int, check_seed


class TensorBoardLogger(tfk.callbacks.Callback):
    """Logs scalars and image summaries of a `tfpvae.VAE` each epoch.

    Args:
      log_dir: folder for the event files (created if needed).
      images: images (n, H, W, C) whose reconstructions are logged; at most 8 are used.
        They must have the model's image shape (checked when training begins). None: no
        reconstruction summaries.
      num_samples: prior samples logged per epoch, >= 1. Default 8.
      seed: seed of the prior samples, int in [0, 2^31 - 1], so epochs show the same
        codes decoded. Default 0. None: fresh samples each epoch.

    Raises:
      ValueError, TypeError: a bad argument (at construction), or `images` of another
        shape than the model's (when `fit` begins, before the first epoch).
    """

    def __init__(self, log_dir: str | os.PathLike, images: Any = None, num_samples: int = 8, seed: int = 0) -> None:
        super().__init__()
        try:
            import tensorboard  # noqa: F401  (tf.summary writes nothing without it)
        except ImportError:
            raise ImportError(
                "TensorBoard logging needs the tensorboard package: pip install 'tfpvae[tensorboard]'."
            ) from None
        self.log_dir = str(log_dir)
        self.images = None if images is None else check_images(images, "images")[:8]
        self.num_samples = check_int(num_samples, "num_samples")
        # Checked now, not when the first epoch ends and the model draws its samples.
        self.seed = check_seed(seed, "seed", maximum=MAX_INT32_SEED)
        self._writer = None

    def on_train_begin(self, logs=None):
        if self.images is not None:
            # The model is known only now: fail before training, not after its first epoch.
            check_images(self.images, "images", self.model.image_shape)
        self._writer = tf.summary.create_file_writer(self.log_dir)

    def _learning_rate(self) -> float:
        lr = self.model.optimizer.learning_rate
        if isinstance(lr, tfk.optimizers.schedules.LearningRateSchedule):
            lr = lr(self.model.optimizer.iterations)
        return float(tf.convert_to_tensor(lr))

    def on_epoch_end(self, epoch, logs=None):
        step = epoch + 1
        with self._writer.as_default(step=step):
            for name, value in (logs or {}).items():
                tf.summary.scalar(name, float(value))
            tf.summary.scalar("learning_rate", self._learning_rate())
            samples = self.model.sample(self.num_samples, seed=self.seed)
            tf.summary.image("prior_samples", samples, max_outputs=self.num_samples)
            if self.images is not None:
                pairs = np.concatenate([self.images, self.model.reconstruct(self.images)], axis=2)
                tf.summary.image("reconstructions (input | reconstruction)", pairs, max_outputs=len(pairs))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
