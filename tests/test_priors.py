import numpy as np
import pytest

from tfpvae._keras import tf, tfd
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


@pytest.mark.parametrize("kind", ["normal", "mixture"])
def test_a_temperature_that_overflows_the_codes_is_named(kind):
    prior = Prior(kind, 2, num_components=3).distribution
    assert np.isfinite(sample_prior(prior, 50, temperature=1e37, seed=0).numpy()).all()
    with pytest.raises(ValueError, match=r"^`temperature`=1e\+39 spreads the prior's codes beyond float32's range"):
        sample_prior(prior, 50, temperature=1e39, seed=0)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_codes_of_a_prior_with_nan_parameters_are_refused_whatever_the_temperature(temperature):
    from tfpvae._keras import tfd

    with pytest.raises(ValueError, match=r"^The prior drew codes that are not finite: its parameters \(or a flow's"):
        sample_prior(tfd.MultivariateNormalDiag(loc=[np.nan, 0.0]), 3, temperature=temperature, seed=0)


def test_unknown_kind_lists_valid_ones():
    with pytest.raises(ValueError, match="'normal', 'learned_normal', 'mixture', 'vamp'"):
        Prior("flat", 2)


def test_tf_import_is_keras2():
    import tf_keras

    from tfpvae._keras import tfk

    assert tfk is tf_keras and tf.__version__.startswith("2.")


def _diagonal_posterior(u):
    """A stand-in encoder: loc = (mean pixel, 2 * mean pixel), scale diag(0.5, 1.5)."""
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


# --------------------------------------------------------------------------- found in review


def test_a_prior_layer_may_state_exact_kl_in_init_or_as_a_class_attribute():
    from tfpvae._keras import tfd
    from tfpvae.priors import PriorLayer, uses_exact_kl

    class Stated(PriorLayer):
        def __init__(self, exact_kl, **kwargs):
            super().__init__(**kwargs)
            self.exact_kl = exact_kl  # raised AttributeError: the property had no setter
            self._normal = tfd.MultivariateNormalDiag(tf.zeros(2), tf.ones(2))

        @property
        def distribution(self):
            return self._normal

    class ClassStated(PriorLayer):
        exact_kl = False  # as VampPrior states it

        @property
        def distribution(self):
            return tfd.MultivariateNormalDiag(tf.zeros(2), tf.ones(2))

    # TFP has the closed form to a normal: only a stated False makes the model estimate it.
    assert Stated(None).exact_kl is True and uses_exact_kl(Stated(None))
    layer = Stated(False)
    assert layer.exact_kl is False and not uses_exact_kl(layer)
    layer.exact_kl = None  # back to working it out
    assert layer.exact_kl is True
    assert ClassStated().exact_kl is False and not uses_exact_kl(ClassStated())
    with pytest.raises(TypeError, match="`exact_kl` must be True, False or None; got 'no'"):
        Stated("no")


def _cauchy(config):
    from tfpvae._keras import tfd
    from tfpvae.priors import FixedPrior

    d = config.latent_dim
    return FixedPrior(tfd.Independent(tfd.Cauchy(tf.zeros(d), tf.ones(d)), 1, name="cauchy"), name="prior")


def test_a_prior_without_a_mean_samples_exactly_at_temperature_one_and_refuses_another():
    import tfpvae
    from tfpvae._keras import tfd, tfp

    tfpvae.register_prior("test_cauchy")(_cauchy)
    try:
        model = tfpvae.VAE(input_shape=(4, 4, 1), latent_dim=2, hidden_units=8, prior="test_cauchy", seed=0)
        images, z = model.sample(500, seed=0, return_latents=True)
        # Were all NaN ("`z` contains NaN or Inf values"): centre + 1 * (z - centre) with a NaN centre.
        expected = model.prior.sample(500, seed=tfp.random.split_seed(tf.constant([0, 0], tf.int32), 2)[0])
        np.testing.assert_array_equal(z, expected.numpy())
        assert np.isfinite(images).all() and 0.7 < np.median(np.abs(z)) < 1.3  # Cauchy(0, 1): median |z| is 1
        with pytest.raises(ValueError, match="`temperature` 0.5 needs a prior with a finite mean .* 'cauchy'"):
            model.sample(3, temperature=0.5, seed=0)
    finally:
        tfpvae.registry.priors.unregister("test_cauchy")
    # A mixture of Cauchy components: exact at temperature 1, refused at another.
    mixture = tfd.MixtureSameFamily(
        tfd.Categorical(logits=tf.zeros(3)), tfd.Independent(tfd.Cauchy(tf.zeros((3, 2)), tf.ones((3, 2))), 1)
    )
    assert np.isfinite(sample_prior(mixture, 100, seed=1).numpy()).all()
    with pytest.raises(ValueError, match="`temperature` 2.0 needs a prior with a finite mean"):
        sample_prior(mixture, 100, temperature=2.0, seed=1)


def test_an_autoencoder_refuses_a_registered_prior_with_trainable_weights():
    import tfpvae
    from tfpvae.config import VAEConfig
    from tfpvae.priors import LearnedNormalPrior, build_prior

    def learned(config):
        return LearnedNormalPrior(config.latent_dim, trainable=config.options.get("trainable", True))

    class LazyPrior(tfpvae.priors.PriorLayer):
        """Makes its weight on first use of `distribution`, against the documented advice."""

        def __init__(self, latent_dim):
            super().__init__()
            self.latent_dim, self.loc = latent_dim, None

        @property
        def distribution(self):
            if self.loc is None:
                self.loc = self.add_weight(name="loc", shape=(self.latent_dim,), initializer="zeros")
            return tfd.MultivariateNormalDiag(self.loc, tf.ones(self.latent_dim))

    tfpvae.register_prior("test_learned")(learned)
    tfpvae.register_prior("test_fixed_cauchy")(_cauchy)
    tfpvae.register_prior("test_lazy")(lambda config: LazyPrior(config.latent_dim))
    try:
        lazy = VAEConfig(latent_dim=2, prior="test_lazy", model_type="ae")
        with pytest.raises(ValueError, match="`prior='test_lazy'` has trainable weights, which model_type='ae'"):
            build_prior(lazy)
        assert len(build_prior(lazy.replace(model_type="vae")).trainable_weights) == 1
        config = VAEConfig(latent_dim=2, prior="test_learned", model_type="ae")  # known only once built
        with pytest.raises(ValueError, match="`prior='test_learned'` has trainable weights, which model_type='ae'"):
            build_prior(config)
        assert len(build_prior(config.replace(model_type="vae")).trainable_weights) == 2
        # Fixed priors suit an autoencoder: no weights, or weights that are not trained.
        assert not build_prior(config.replace(options={"trainable": False})).trainable_weights
        assert build_prior(config.replace(prior="test_fixed_cauchy")).distribution.event_shape == [2]
    finally:
        tfpvae.registry.priors.unregister("test_learned")
        tfpvae.registry.priors.unregister("test_fixed_cauchy")
        tfpvae.registry.priors.unregister("test_lazy")


def test_every_documented_default_of_a_prior_layer_is_its_signature_default():
    import inspect
    import re

    from tfpvae import priors

    for layer in (priors.LearnedNormalPrior, priors.MixturePrior, priors.VampPrior, priors.FlowPrior):
        doc = inspect.getdoc(layer).split("Args:")[1].split("Attributes:")[0]
        # One entry per argument: "name: text", continued on more deeply indented lines.
        entries = dict(re.findall(r"^  (\w+): (.*(?:\n    .*)*)", doc, flags=re.M))
        params = inspect.signature(layer.__init__).parameters
        for name, text in entries.items():
            if name in params and re.search(r"\bDefault\b", text):
                # VampPrior's said "Default 10" of an argument it required.
                assert params[name].default is not inspect.Parameter.empty, f"{layer.__name__}({name})"
