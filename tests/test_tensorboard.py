"""TensorBoard event files hold the epoch metrics, the learning rate and image summaries."""

import glob

import numpy as np
import pytest

import tfpvae
from tfpvae._keras import tf
from tfpvae.tensorboard import TensorBoardLogger


def _read_events(log_dir):
    scalars, images = {}, {}
    for path in glob.glob(f"{log_dir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tensor = tf.make_ndarray(value.tensor)
                if value.metadata.plugin_data.plugin_name == "images":
                    images.setdefault(value.tag, []).append((event.step, tensor))
                else:
                    scalars.setdefault(value.tag, []).append((event.step, float(tensor)))
    return scalars, images


def test_logs_metrics_learning_rate_and_images(digits, tmp_path):
    (x, _), (xt, _) = digits
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0, learning_rate=2e-3)
    model.compile()
    hist = model.fit(
        x[:256],
        epochs=2,
        batch_size=64,
        validation_data=xt[:64],
        verbose=0,
        callbacks=[TensorBoardLogger(tmp_path, images=xt[:4], num_samples=3)],
    ).history
    scalars, images = _read_events(tmp_path)
    for name in ("loss", "nll", "kl", "elbo", "val_loss", "val_nll", "val_kl", "val_elbo"):
        assert [s for s, _ in scalars[name]] == [1, 2]
        np.testing.assert_allclose([v for _, v in scalars[name]], hist[name], rtol=1e-6)
    assert [v for _, v in scalars["learning_rate"]] == pytest.approx([2e-3, 2e-3])
    steps = images["prior_samples"]
    assert [s for s, _ in steps] == [1, 2]
    # Each image summary holds width, height and then one encoded PNG per image.
    assert len(steps[0][1]) == 2 + 3
    assert len(images["reconstructions (input | reconstruction)"][0][1]) == 2 + 4
