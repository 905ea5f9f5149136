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


@pytest.mark.parametrize(
    "seed, error, match",
    [
        (-1, ValueError, r"`seed` must be an int in \[0, 2147483647\]; got -1\."),
        (2**31, ValueError, r"`seed` must be an int in \[0, 2147483647\]; got 2147483648\."),
        ("abc", TypeError, r"`seed` must be an int in \[0, 2147483647\]; got 'abc' \(str\)\."),
    ],
)
def test_a_bad_seed_is_refused_at_construction(tmp_path, seed, error, match):
    with pytest.raises(error, match=match):
        TensorBoardLogger(tmp_path, seed=seed)
    assert TensorBoardLogger(tmp_path, seed=None).seed is None  # fresh samples each epoch


def test_images_of_another_shape_fail_before_the_first_epoch_naming_images(digits, tmp_path):
    (x, _), _ = digits
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    before = [w.copy() for w in model.get_weights()]
    logger = TensorBoardLogger(tmp_path, images=np.zeros((2, 4, 4, 1), np.float32))
    with pytest.raises(
        ValueError, match=r"`images` images must have shape \(8, 8, 1\) to match the model; got \(4, 4, 1\)"
    ):
        model.fit(x[:128], epochs=2, batch_size=64, verbose=0, callbacks=[logger])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # not one step trained
    assert not glob.glob(f"{tmp_path}/events.out.tfevents.*")
