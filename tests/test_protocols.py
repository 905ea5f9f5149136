import numpy as np

from tfpvae._keras import tf, tfd
from tfpvae.protocols import LatentModel, encode_in_chunks, latent_dim


class LinearGaussianModel:
    """A researcher's own model: no Keras, just the four things the protocol names."""

    image_shape = (2, 2, 1)

    def __init__(self):
        self.weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0
        self.prior = tfd.MultivariateNormalDiag(loc=tf.zeros(3), scale_diag=tf.ones(3))

    def encode(self, x):
        loc = np.asarray(x, np.float32).reshape(len(x), 4) @ self.weights
        return tfd.MultivariateNormalTriL(loc=loc, scale_tril=tf.linalg.diag(tf.fill([len(x), 3], 0.5)))

    def decode_mean(self, z):
        return (1.0 / (1.0 + np.exp(-np.asarray(z, np.float32) @ self.weights.T))).reshape(-1, 2, 2, 1)


def test_a_vae_and_a_plain_class_are_latent_models():
    from tfpvae.model import VAE

    assert isinstance(VAE(input_shape=(8, 8, 1), latent_dim=2), LatentModel)
    assert isinstance(LinearGaussianModel(), LatentModel)
    assert not isinstance(object(), LatentModel)
    assert latent_dim(LinearGaussianModel()) == 3


def test_encode_in_chunks_covers_every_image_once_in_order():
    model = LinearGaussianModel()
    x = np.random.default_rng(0).random((10, 2, 2, 1)).astype(np.float32)
    parts = list(encode_in_chunks(model, x, chunk=3))
    assert [int(q.batch_shape[0]) for q in parts] == [3, 3, 3, 1]
    np.testing.assert_allclose(np.concatenate([q.mean() for q in parts]), model.encode(x).mean(), rtol=1e-6)


def test_latent_and_uncertainty_tools_take_a_plain_model():
    from tfpvae import latent, uncertainty

    model = LinearGaussianModel()
    x = np.random.default_rng(1).random((4, 2, 2, 1)).astype(np.float32)
    path = latent.interpolate(model, x[:2], x[2:], num_steps=5, method="linear")
    start, end = model.encode(x[:2]).mean().numpy(), model.encode(x[2:]).mean().numpy()
    np.testing.assert_allclose(path.latents[:, 2], (start + end) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(path.images[:, 0], model.decode_mean(start), rtol=1e-5)
    u = uncertainty.posterior_uncertainty(model, x)
    # A diagonal Gaussian with scale 0.5: stddev 0.5, entropy d/2 (1 + log 2 pi) + d log 0.5.
    np.testing.assert_allclose(u.stddev, 0.5, rtol=1e-6)
    np.testing.assert_allclose(u.entropy, 1.5 * (1 + np.log(2 * np.pi)) + 3 * np.log(0.5), rtol=1e-6)
