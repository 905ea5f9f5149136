import numpy as np
import pytest

from tfpvae._keras import tf
from tfpvae.priors import Prior, sample_prior


def test_normal_prior_is_standard_and_exact():
    p = Prior("normal", 3)
    assert p.exact_kl and not p.trainable_weights
    np.testing.assert_allclose(
        p.distribution.log_prob(np.zeros((1, 3), np.float32)), [-1.5 * np.log(2 * np.pi)], rtol=1e-6
    )


def test_learned_normal_starts_at_standard_normal():
    p = Prior("learned_normal", 4)
    np.testing.assert_allclose(p.distribution.covariance(), np.eye(4), atol=1e-5)
    assert len(p.trainable_weights) == 2


def test_mixture_log_prob_matches_hand_computed_mixture():
    p = Prior("mixture", 2, num_components=3, seed=0)
    z = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    locs, scales = p.locs.numpy(), np.log1p(np.exp(p.raw_scales.numpy()))
    comp = -0.5 * (((z[:, None] - locs) / scales) ** 2).sum(-1) - np.log(scales).sum(-1) - np.log(2 * np.pi)
    expected = np.log(np.exp(comp).mean(axis=1))  # equal weights at initialisation
    np.testing.assert_allclose(p.distribution.log_prob(z), expected, rtol=1e-5)


@pytest.mark.parametrize("kind", ["normal", "mixture"])
def test_temperature_scales_spread(kind):
    p = Prior(kind, 2, num_components=2, seed=0)
    z1 = sample_prior(p.distribution, 20000, 1.0, seed=3).numpy()
    z_half = sample_prior(p.distribution, 20000, 0.5, seed=3).numpy()
    # Same seed, same component draws: deviations from the component centre halve exactly.
    if kind == "normal":
        np.testing.assert_allclose(z_half, 0.5 * z1, atol=1e-6)
    assert z_half.std() < z1.std()


def test_seeded_samples_repeat():
    d = Prior("mixture", 3, seed=0).distribution
    np.testing.assert_array_equal(sample_prior(d, 5, seed=1), sample_prior(d, 5, seed=1))


def test_bad_temperature_and_seed_raise():
    with pytest.raises(ValueError, match="`temperature`"):
        sample_prior(Prior("normal", 2).distribution, 3, temperature=0.0)
    # A seed past int32 would wrap and repeat a smaller seed's draws: refused instead.
    with pytest.raises(ValueError, match=r"`seed` must be an int in \[0, 2147483647\]; got 4294967301"):
        sample_prior(Prior("normal", 2).distribution, 3, seed=2**32 + 5)


def test_unknown_kind_lists_valid_ones():
    with pytest.raises(ValueError, match="'normal', 'learned_normal', 'mixture', 'vamp'"):
        Prior("flat", 2)


def test_tf_import_is_keras2():
    import tf_keras

    from tfpvae._keras import tfk

    assert tfk is tf_keras and tf.__version__.startswith("2.")


def _diagonal_posterior(u):
    """A stand-in encoder: loc = (mean pixel, 2 * mean pixel), scale diag(0.5, 1.5)."""
    from tfpvae._keras import tfd

    m = tf.reduce_mean(u, axis=[1, 2, 3])
    loc = tf.stack([m, 2 * m], axis=-1)
    return tfd.MultivariateNormalTriL(loc=loc, scale_tril=tf.linalg.diag(tf.ones_like(loc) * [0.5, 1.5]))


def test_vamp_prior_is_the_mixture_of_the_pseudo_inputs_posteriors():
    p = Prior("vamp", 2, num_components=3, seed=0, input_shape=(4, 4, 1))
    assert not p.exact_kl and [w.name.split(":")[0] for w in p.trainable_weights][-1].endswith("pseudo_logits")
    u = p.pseudo_inputs.numpy()
    assert u.shape == (3, 4, 4, 1) and np.all((u > 0) & (u < 1)) and abs(u.mean() - 0.05) < 0.01
    p.attach_posterior(_diagonal_posterior)
    z = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    m = u.mean(axis=(1, 2, 3))
    locs, scales = np.stack([m, 2 * m], -1), np.array([0.5, 1.5])
    comp = -0.5 * (((z[:, None] - locs) / scales) ** 2).sum(-1) - np.log(scales).sum() - np.log(2 * np.pi)
    expected = np.log(np.exp(comp).mean(axis=1))  # equal weights 1/K
    np.testing.assert_allclose(p.distribution.log_prob(z), expected, rtol=1e-5)
    # Read afresh: moving the pseudo-images moves the prior.
    p.pseudo_logits.assign(p.pseudo_logits + 3.0)
    assert np.abs(p.distribution.log_prob(z).numpy() - expected).max() > 0.1


def test_vamp_prior_misuse_is_a_clear_error():
    with pytest.raises(ValueError, match="`input_shape`"):
        Prior("vamp", 2)
    p = Prior("vamp", 2, input_shape=(4, 4, 1))
    with pytest.raises(RuntimeError, match="attach_posterior"):
        _ = p.distribution
    with pytest.raises(TypeError, match="`posterior_fn` must be callable"):
        p.attach_posterior("encoder")
    # Only the VampPrior is made from the encoder, and only it has pseudo-inputs.
    assert not hasattr(Prior("mixture", 2), "attach_posterior")
    assert not hasattr(Prior("normal", 2), "pseudo_inputs")


def test_posterior_mixture_log_prob_matches_tfps_mixture():
    from tfpvae._keras import tfd
    from tfpvae.priors import PosteriorMixture

    rng = np.random.default_rng(0)
    k, d = 5, 3
    scale_tril = np.tril(rng.normal(size=(k, d, d)) * 0.3) + np.eye(d) * rng.uniform(0.5, 2.0, size=(k, 1, 1))
    parts = dict(
        mixture_distribution=tfd.Categorical(logits=rng.normal(size=k).astype(np.float32)),
        components_distribution=tfd.MultivariateNormalTriL(
            loc=rng.normal(size=(k, d)).astype(np.float32), scale_tril=scale_tril.astype(np.float32)
        ),
    )
    z = rng.normal(size=(4, 6, d)).astype(np.float32) * 2  # any leading shape
    fast, reference = PosteriorMixture(**parts).log_prob(z), tfd.MixtureSameFamily(**parts).log_prob(z)
    assert fast.shape == (4, 6)
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-5)


def _flow(latent_dim=2, seed=0):
    p = Prior("flow", latent_dim, seed=seed)
    # Larger weights than the initialisation's, so the flow is far from a standard normal.
    rng = np.random.default_rng(seed)
    for v in p.trainable_weights:
        v.assign(v + rng.normal(0, 0.1, size=v.shape).astype(np.float32))
        if v.constraint is not None:  # the MADE's masks, as the optimizer applies them after each step
            v.assign(v.constraint(v))
    return p


def test_flow_prior_density_integrates_to_one():
    p = _flow()
    step = 0.04
    grid = np.arange(-10, 10, step, dtype=np.float32) + step / 2
    zz = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    density = np.exp(p.distribution.log_prob(zz).numpy().astype(np.float64))
    np.testing.assert_allclose(density.sum() * step**2, 1.0, atol=5e-3)
    # ... and is not the standard normal it starts from.
    standard = np.exp(-0.5 * (zz**2).sum(-1)) / (2 * np.pi)
    assert np.abs(density - standard).sum() * step**2 > 0.1


def test_flow_prior_log_prob_is_the_change_of_variables_of_its_base():
    p = _flow(latent_dim=3, seed=1)
    flow = p.distribution
    z = sample_prior(flow, 50, seed=2).numpy()
    e = flow.bijector.inverse(z)
    # Jacobian of the inverse map by finite differences, independent of TFP's log-det.
    eps, jac = 1e-3, np.zeros((50, 3, 3))
    for i in range(3):
        dz = np.zeros(3, np.float32)
        dz[i] = eps
        jac[:, :, i] = (flow.bijector.inverse(z + dz).numpy() - flow.bijector.inverse(z - dz).numpy()) / (2 * eps)
    log_det = np.linalg.slogdet(jac)[1]
    expected = -0.5 * (e.numpy() ** 2).sum(-1) - 1.5 * np.log(2 * np.pi) + log_det
    np.testing.assert_allclose(flow.log_prob(z).numpy(), expected, atol=2e-2)


def test_flow_temperature_scales_the_base_draws():
    flow = _flow().distribution
    z1 = sample_prior(flow, 500, 1.0, seed=3)
    z_half = sample_prior(flow, 500, 0.5, seed=3)
    np.testing.assert_allclose(flow.bijector.inverse(z_half), 0.5 * flow.bijector.inverse(z1), atol=1e-4)


def test_flow_prior_has_its_layers_and_a_monte_carlo_kl():
    from tfpvae.config import VAEConfig
    from tfpvae.priors import build_prior

    p = build_prior(VAEConfig(latent_dim=3, prior="flow", flow_layers=3, flow_hidden_units=16, seed=0))
    assert len(p.mades) == 3 and not p.exact_kl
    # Each MADE: 3 -> 16 -> 16 -> 3 x 2 (shift and log-scale), with biases; all created at build.
    assert sum(int(np.prod(w.shape)) for w in p.trainable_weights) == 3 * (3 * 16 + 16 + 16 * 16 + 16 + 16 * 6 + 6)
