"""Posterior spread per image and predictive variance per pixel, against closed forms and quadrature."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal, norm

from tfpvae import uncertainty
from tfpvae._keras import tfd
from tfpvae.model import VAE
from tfpvae.protocols import ENCODE_CHUNK


@pytest.fixture(scope="module")
def images(digits):
    (x, _), (xt, _) = digits
    return x, xt[:6]


def _assert_within(actual, expected, tolerance):
    excess = np.abs(actual - expected) - tolerance
    assert np.all(excess <= 0), f"{np.count_nonzero(excess > 0)} values off; worst by {excess.max():.3g}"


class _ProbitModel:
    """A stand-in model whose predictive moments have closed forms.

    q(z|x) = N(mu, s^2) in one dimension and every pixel's Bernoulli mean is
    p(z) = Phi(a z + b). With X = a z + b ~ N(m, v):
      E[p]   = Phi(m / sqrt(1 + v)),
      E[p^2] = P(Y1 <= X, Y2 <= X) = bivariate normal CDF at (m, m) / sqrt(1 + v) with
               correlation v / (1 + v).
    """

    image_shape = (2, 2, 1)

    def __init__(self, mu, s, a, b):
        self.mu, self.s = np.asarray(mu, np.float32), np.asarray(s, np.float32)
        self.a, self.b = np.asarray(a, np.float64), np.asarray(b, np.float64)

    def encode(self, x):
        # Image i is filled with the value i / 10: it tells the stub which posterior is meant.
        i = np.rint(np.asarray(x)[:, 0, 0, 0] * 10).astype(int)
        return tfd.MultivariateNormalTriL(loc=self.mu[i, None], scale_tril=self.s[i, None, None])

    def decode_mean(self, z):
        return norm.cdf(self.a * np.asarray(z, np.float64)[:, 0, None, None, None] + self.b).astype(np.float32)

    def exact(self):
        m = self.a * self.mu[:, None, None, None] + self.b
        v = (self.a * self.s[:, None, None, None]) ** 2
        r = np.sqrt(1.0 + v)
        ep = norm.cdf(m / r)
        ep2 = np.vectorize(lambda mm, rho: multivariate_normal.cdf([mm, mm], mean=[0, 0], cov=[[1, rho], [rho, 1]]))(
            m / r, v / (1.0 + v)
        )
        return ep, ep - ep2, ep2 - ep**2  # mean, aleatoric E[p - p^2], epistemic Var[p]


def test_predictive_moments_match_closed_forms():
    stub = _ProbitModel(
        mu=[0.3, -1.0, 0.0], s=[0.8, 0.5, 1.5], a=[[[2.0], [-1.0]], [[0.5], [3.0]]], b=[[[0.0], [0.4]], [[-1.0], [1.0]]]
    )
    x = np.broadcast_to(np.arange(3, dtype=np.float32)[:, None, None, None] / 10, (3, 2, 2, 1))
    k = 40_000
    r = uncertainty.predictive_uncertainty(stub, x, num_samples=k, seed=7)
    mean, aleatoric, epistemic = stub.exact()
    # Tolerances of 5 Monte Carlo standard errors from bounds on each term's per-draw
    # standard deviation: p and (p - m)^2 lie in [0, 1] (sd <= 0.5), p(1 - p) in [0, 1/4].
    se = 1 / np.sqrt(k)
    np.testing.assert_allclose(r.mean, mean, atol=5 * 0.5 * se)
    np.testing.assert_allclose(r.aleatoric, aleatoric, atol=5 * 0.125 * se)
    np.testing.assert_allclose(r.epistemic, epistemic, atol=5 * 0.5 * se)
    assert epistemic.max() > 0.1 and aleatoric.min() > 0.01  # both parts are non-trivial here
    # Law of total variance, exact for the draws themselves.
    np.testing.assert_allclose(r.aleatoric + r.epistemic, r.mean * (1 - r.mean), atol=1e-12)
    np.testing.assert_array_equal(r.total, r.aleatoric + r.epistemic)
    assert r.num_samples == k


def test_any_latent_model_is_encoded_in_bounded_chunks():
    """A stand-in `LatentModel` (not a VAE) works, and no encoder call gets more than ENCODE_CHUNK images."""
    stub = _ProbitModel(mu=[0.3, -1.0], s=[0.8, 0.5], a=np.ones((2, 2, 1)), b=np.zeros((2, 2, 1)))
    calls = []
    encode = stub.encode
    stub.encode = lambda x: calls.append(len(x)) or encode(x)
    x = np.zeros((2 * ENCODE_CHUNK + 3, 2, 2, 1), np.float32)
    x[1::2] = 0.1  # odd images are image 1 of the stub
    r = uncertainty.posterior_uncertainty(stub, x)
    assert calls == [ENCODE_CHUNK, ENCODE_CHUNK, 3]
    np.testing.assert_allclose(r.stddev[:4, 0], [0.8, 0.5, 0.8, 0.5], rtol=1e-6)
    np.testing.assert_allclose(r.mean[-2:, 0], [-1.0, 0.3], rtol=1e-6)  # images 2049 (odd) and 2050
    calls.clear()
    p = uncertainty.predictive_uncertainty(stub, x[:5], num_samples=4096, seed=0)  # 8192 // 4096 = 2 per call
    assert calls == [2, 2, 1] and p.mean.shape == (5, 2, 2, 1)


def test_predictive_on_a_1d_latent_vae_matches_gauss_hermite_quadrature(images):
    x, xt = images
    model = VAE(input_shape=(8, 8, 1), latent_dim=1, architecture="mlp", binarize="none", seed=4)
    model.fit(x, epochs=4, batch_size=64, verbose=0)
    q = model.encode(xt[:3])
    mu, s = q.mean().numpy()[:, 0].astype(np.float64), q.stddev().numpy()[:, 0].astype(np.float64)
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)  # probabilists' Hermite: N(0, 1)
    weights = weights / weights.sum()
    z = mu[:, None] + s[:, None] * nodes  # (3, 60)
    p = model.decode_mean(z.reshape(-1, 1)).astype(np.float64).reshape(3, 60, 8, 8, 1)
    w = weights[None, :, None, None, None]
    mean = (w * p).sum(1)
    epistemic = (w * (p - mean[:, None]) ** 2).sum(1)
    aleatoric = (w * p * (1 - p)).sum(1)
    sd_epi = np.sqrt((w * ((p - mean[:, None]) ** 2 - epistemic[:, None]) ** 2).sum(1))

    k = 4000
    r = uncertainty.predictive_uncertainty(model, xt[:3], num_samples=k, seed=1)
    assert r.mean.shape == (3, 8, 8, 1)
    # Within 5 Monte Carlo standard errors per pixel (Var[p(1-p)] <= Var[p] as |1 - 2p| <= 1).
    _assert_within(r.mean, mean, 5 * np.sqrt(epistemic / k) + 1e-5)
    _assert_within(r.epistemic, epistemic, 5 * sd_epi / np.sqrt(k) + 1e-5)
    _assert_within(r.aleatoric, aleatoric, 5 * np.sqrt(epistemic / k) + 1e-5)
    assert epistemic.max() > 1e-3  # the decoder does respond to z


def test_predictive_seeds_log_prob_and_autoencoder(images):
    x, xt = images
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    a = uncertainty.predictive_uncertainty(model, xt, num_samples=16, seed=3)
    b = uncertainty.predictive_uncertainty(model, xt, num_samples=16, seed=3)
    c = uncertainty.predictive_uncertainty(model, xt, num_samples=16, seed=4)
    np.testing.assert_array_equal(a.epistemic, b.epistemic)
    assert not np.array_equal(a.epistemic, c.epistemic)
    binary = (xt > 0.5).astype(np.float32)
    r = uncertainty.predictive_uncertainty(model, binary, num_samples=8, seed=0)
    expected = tfd.Bernoulli(probs=r.mean).log_prob(binary).numpy()
    np.testing.assert_allclose(r.log_prob, expected, rtol=1e-5, atol=1e-6)
    assert np.all(r.log_prob <= 0)

    ae = VAE(input_shape=(8, 8, 1), latent_dim=2, model_type="ae", seed=0)
    r = uncertainty.predictive_uncertainty(ae, xt, num_samples=4, seed=0)
    np.testing.assert_allclose(r.epistemic, 0.0, atol=1e-12)  # a point-mass code has no latent spread
    np.testing.assert_allclose(r.mean, ae.reconstruct(xt), atol=1e-6)
    with pytest.raises(ValueError, match="`num_samples`"):
        uncertainty.predictive_uncertainty(model, xt, num_samples=0)
    with pytest.raises(ValueError, match=r"`seed` must be an int in \[0, 2147483647\]"):
        uncertainty.predictive_uncertainty(model, xt, num_samples=2, seed=2**31)


class _DiagProbitModel(_ProbitModel):
    """`_ProbitModel` with a diagonal q(z|x): not a MultivariateNormalTriL, so drawn slice by slice."""

    def encode(self, x):
        i = np.rint(np.asarray(x)[:, 0, 0, 0] * 10).astype(int)
        return tfd.MultivariateNormalDiag(loc=self.mu[i, None], scale_diag=self.s[i, None])


def test_predictive_draws_of_an_image_do_not_depend_on_the_batch_or_chunks(images, monkeypatch):
    """Image i's draws are keyed by (seed, index_offset + i): the same rows in any call give the same result."""
    xt = images[1]
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    full = uncertainty.predictive_uncertainty(model, xt, num_samples=32, seed=3)  # 6 images, one chunk
    first = uncertainty.predictive_uncertainty(model, xt[:3], num_samples=32, seed=3)
    middle = uncertainty.predictive_uncertainty(model, xt[2:5], num_samples=32, seed=3, index_offset=2)
    monkeypatch.setattr(uncertainty, "_DECODE_BUDGET", 64)  # 2 images per chunk at 32 samples
    chunked = uncertainty.predictive_uncertainty(model, xt, num_samples=32, seed=3)
    for part, rows in ((first, slice(0, 3)), (middle, slice(2, 5)), (chunked, slice(0, 6))):
        for name in ("mean", "aleatoric", "epistemic"):
            np.testing.assert_allclose(getattr(part, name), getattr(full, name)[rows], rtol=0, atol=1e-6)
    assert full.epistemic.max() > 1e-4  # the draws matter: an equal result is not an accident
    shifted = uncertainty.predictive_uncertainty(model, xt[2:5], num_samples=32, seed=3)  # rows 0..2: other draws
    assert np.abs(shifted.mean - full.mean[2:5]).max() > 1e-4
    with pytest.raises(ValueError, match=r"`index_offset` must be an int >= 0; got -1"):
        uncertainty.predictive_uncertainty(model, xt, seed=3, index_offset=-1)

    # Any other posterior (drawn one image at a time) is keyed the same way.
    stub = _DiagProbitModel(mu=[0.3, -1.0], s=[0.8, 0.5], a=np.ones((2, 2, 1)), b=np.zeros((2, 2, 1)))
    x = np.zeros((5, 2, 2, 1), np.float32)
    x[1::2] = 0.1
    pairs = uncertainty.predictive_uncertainty(stub, x, num_samples=32, seed=1)  # budget 64: chunks of 2
    monkeypatch.setattr(uncertainty, "_DECODE_BUDGET", 8192)
    np.testing.assert_array_equal(uncertainty.predictive_uncertainty(stub, x, num_samples=32, seed=1).mean, pairs.mean)
    tail = uncertainty.predictive_uncertainty(stub, x[3:], num_samples=32, seed=1, index_offset=3)
    np.testing.assert_array_equal(tail.mean, pairs.mean[3:])
    assert not np.array_equal(pairs.mean[0], pairs.mean[2])  # the same posterior, its own draws


class _Unsliceable(tfd.MultivariateNormalDiag):
    """A posterior that cannot be sliced per image, as some flows cannot."""

    def __getitem__(self, slices):
        raise NotImplementedError("no slicing")


class _UnsliceableProbitModel(_ProbitModel):
    def encode(self, x):
        i = np.rint(np.asarray(x)[:, 0, 0, 0] * 10).astype(int)
        return _Unsliceable(loc=self.mu[i, None], scale_diag=self.s[i, None])


def test_a_posterior_that_cannot_be_sliced_is_drawn_whole_with_the_moments_it_should_have(monkeypatch):
    stub = _UnsliceableProbitModel(mu=[0.3, -1.0], s=[0.8, 0.5], a=np.ones((2, 2, 1)), b=np.zeros((2, 2, 1)))
    x = np.zeros((4, 2, 2, 1), np.float32)
    x[1::2] = 0.1
    monkeypatch.setattr(uncertainty, "_DECODE_BUDGET", 4 * 20000)  # the 4 images in one chunk
    result = uncertainty.predictive_uncertainty(stub, x, num_samples=20000, seed=2)
    mean, aleatoric, epistemic = stub.exact()
    rows = [0, 1, 0, 1]  # the posterior each image names
    _assert_within(result.mean, mean[rows], 0.01)
    _assert_within(result.epistemic, epistemic[rows], 0.005)
    # Drawn whole: the chunk's draws repeat with its seed, each image has its own within it,
    # and they depend on the chunk (its first image's key), unlike a sliceable posterior's.
    again = uncertainty.predictive_uncertainty(stub, x, num_samples=20000, seed=2)
    np.testing.assert_array_equal(again.mean, result.mean)
    assert not np.array_equal(result.mean[0], result.mean[2])
    tail = uncertainty.predictive_uncertainty(stub, x[2:], num_samples=20000, seed=2, index_offset=2)
    assert not np.array_equal(tail.mean, result.mean[2:])
    _assert_within(tail.mean, mean[rows[2:]], 0.01)


def test_posterior_spread_matches_closed_forms_from_scale_tril(images):
    xt = images[1]
    model = VAE(input_shape=(8, 8, 1), latent_dim=3, seed=5)
    r = uncertainty.posterior_uncertainty(model, xt, correlation=True)
    q = model.encode(xt)
    tril = q.scale_tril.numpy().astype(np.float64)
    assert np.abs(tril[:, 2, 0]).min() > 1e-4  # full covariance, not diagonal
    cov = tril @ np.swapaxes(tril, 1, 2)
    sign, logdet = np.linalg.slogdet(cov)
    assert np.all(sign > 0)
    np.testing.assert_allclose(r.log_det_cov, logdet, rtol=1e-10)
    np.testing.assert_allclose(r.entropy, 0.5 * (3 * np.log(2 * np.pi * np.e) + logdet), rtol=1e-10)
    np.testing.assert_allclose(r.entropy, q.entropy().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(r.stddev, np.sqrt(np.diagonal(q.covariance().numpy(), axis1=1, axis2=2)), rtol=1e-4)
    np.testing.assert_allclose(r.mean, q.mean().numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.diagonal(r.correlation, axis1=1, axis2=2), 1.0, rtol=1e-12)
    i, j = 0, 2
    expected = cov[:, i, j] / np.sqrt(cov[:, i, i] * cov[:, j, j])
    np.testing.assert_allclose(r.correlation[:, i, j], expected, rtol=1e-10)
    assert uncertainty.posterior_uncertainty(model, xt).correlation is None
    with pytest.raises(TypeError, match="`correlation` must be True or False; got 'no'"):
        uncertainty.posterior_uncertainty(model, xt, correlation="no")

    ae = VAE(input_shape=(8, 8, 1), latent_dim=2, model_type="ae", seed=0)
    with pytest.raises(ValueError, match="model_type 'ae'"):
        uncertainty.posterior_uncertainty(ae, xt)
