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
