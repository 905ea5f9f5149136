"""Likelihood estimates against closed forms, chunking and seeding invariance, VAE wiring, bad input."""

import math

import numpy as np
import pytest
from references import gaussian_kl, kl_to_standard_normal
from scipy import stats

from tfpvae._keras import tf, tfd
from tfpvae.likelihood import LikelihoodEstimator, binarize, default_batch_elements, nats_to_bits_per_dim
from tfpvae.model import VAE

# A linear-Gaussian latent model on 2x2x1 "images": z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I_4).
SHAPE = (2, 2, 1)
D, LATENT, SIGMA = 4, 2, 0.1
_rng = np.random.default_rng(0)
W = _rng.normal(0.0, 0.2, (D, LATENT)).astype(np.float32)
B = np.full(D, 0.5, np.float32)
# Exact posterior: N(C W^T (x - b) / s^2, C) with C = (I + W^T W / s^2)^-1.
POST_COV = np.linalg.inv(np.eye(LATENT) + W.T @ W / SIGMA**2)
POST_GAIN = (POST_COV @ W.T / SIGMA**2).astype(np.float32)  # (LATENT, D)
POST_TRIL = np.linalg.cholesky(POST_COV).astype(np.float32)
# Proposal of the "imperfect encoder": shifted mean, 1.3x wider (weights stay light-tailed).
SHIFT, WIDEN = 0.15, 1.3


def exact_log_prob(x: np.ndarray) -> np.ndarray:
    """Exact log p(x) = log N(x; b, W W^T + s^2 I), in float64."""
    return stats.multivariate_normal(B, W @ W.T + SIGMA**2 * np.eye(D)).logpdf(x.reshape(len(x), D))


def gaussian_estimator(shift: float = 0.0, widen: float = 1.0, **kwargs) -> LikelihoodEstimator:
    def encode(x):
        loc = tf.matmul(tf.reshape(x, [-1, D]) - B, POST_GAIN, transpose_b=True) + shift
        return tfd.MultivariateNormalTriL(loc, widen * POST_TRIL)

    def decode(z):
        loc = tf.reshape(tf.matmul(z, W, transpose_b=True) + B, [-1, *SHAPE])
        return tfd.Independent(tfd.Normal(loc, SIGMA), reinterpreted_batch_ndims=3)

    return LikelihoodEstimator(encode, decode, tfd.MultivariateNormalDiag(tf.zeros(LATENT)), **kwargs)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).uniform(0.2, 0.8, (8, *SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def exact():
    return gaussian_estimator(image_shape=SHAPE)


@pytest.fixture(scope="module")
def perturbed():
    return gaussian_estimator(SHIFT, WIDEN, image_shape=SHAPE)


@pytest.fixture(scope="module")
def digit_batch(digits):
    (images, _), _ = digits
    return images[:16]


@pytest.fixture(scope="module")
def vae():
    return VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)


def test_exact_posterior_makes_every_estimate_exact(exact, x):
    ref = exact_log_prob(x)
    for k in (1, 7):
        lp, se = exact.log_prob(x, k, return_stderr=True, seed=0)
        assert lp.shape == (len(x),) and lp.dtype == np.float64
        np.testing.assert_allclose(lp, ref, atol=1e-4)
        np.testing.assert_allclose(exact.elbo(x, k, seed=0), ref, atol=1e-4)
        if k > 1:  # every weight equals p(x): no spread
            assert np.all(se < 1e-3)


@pytest.mark.slow  # over 7 s; the fast tier skips it, CI runs it
def test_iwae_tightens_with_k_and_bounds_the_elbo(perturbed, x):
    ref = exact_log_prob(x)
    means, ses = [], []
    for k in (10, 100, 5000):
        lp, se = perturbed.log_prob(x, k, return_stderr=True, seed=2, max_batch_elements=40_000)
        elbo = perturbed.elbo(x, k, seed=2, max_batch_elements=40_000)
        assert np.all(lp >= elbo - 1e-9), "log mean exp >= mean log for the same draws"
        means.append(lp.mean())
        ses.append(np.sqrt((se**2).sum()) / len(x))
    # The ELBO gap is KL(q || p(z|x)) > 0; the k=5000 bound is within a few hundredths.
    assert ref.mean() - elbo.mean() > 0.2
    np.testing.assert_allclose(lp, ref, atol=0.03)
    for (m1, s1), (m2, s2) in zip(zip(means, ses), zip(means[1:], ses[1:])):
        assert m2 > m1 - 3 * math.hypot(s1, s2), f"mean IWAE fell with k: {means}"
    assert ref.mean() - means[0] > ref.mean() - means[-1] > -3 * ses[-1]


def test_standard_errors_match_the_spread_over_draws(perturbed, x):
    copies = 25  # each copy of an image gets its own draws
    tiled = np.tile(x, (copies, 1, 1, 1))
    kw = dict(seed=3, return_stderr=True, max_batch_elements=copies * len(x) * 100)
    for method in (perturbed.log_prob, perturbed.elbo):
        est, se = (a.reshape(copies, len(x)) for a in method(tiled, 100, **kw))
        ratio = np.sqrt(est.var(axis=0, ddof=1).mean() / (se**2).mean())
        assert 0.8 < ratio < 1.25, f"{method.__name__}: spread / reported stderr = {ratio:.3f}"


def test_automatic_progress_bar_only_for_long_jobs_on_a_terminal(perturbed, x, capsys, monkeypatch):
    import tfpvae.likelihood as likelihood

    long_job = dict(seed=0, max_batch_elements=16)  # 5 images x 64 samples: 20 chunks of 16
    perturbed.log_prob(x[:5], 64, **long_job)
    assert capsys.readouterr().out == ""  # captured output is not a terminal
    monkeypatch.setattr(likelihood, "_on_terminal", lambda: True)
    perturbed.log_prob(x[:5], 64, **long_job)
    assert "image" in capsys.readouterr().out
    perturbed.log_prob(x[:5], 64, seed=0, max_batch_elements=64)  # 5 chunks: too short for a bar
    assert capsys.readouterr().out == ""


@pytest.mark.slow  # over 7 s; the fast tier skips it, CI runs it
@pytest.mark.parametrize("k,budgets", [(150, (300, 130, 16)), (10, (3,))])
def test_chunking_over_images_and_samples_leaves_results_unchanged(perturbed, x, k, budgets, capsys):
    # Budgets: 300 splits the images, 130 splits each image's 150 samples at a block edge,
    # 16 (and 3 for k=10) cuts inside blocks. The draws are the same; only float32
    # rounding of differently sized batches may differ.
    xs = x[:5]
    ref = perturbed.log_prob(xs, k, return_stderr=True, seed=4, max_batch_elements=10_000)
    ref_elbo = perturbed.elbo(xs, k, seed=4, max_batch_elements=10_000)
    ref_pix = perturbed.pixel_log_prob(xs, k, seed=4, max_batch_elements=10_000)
    for budget in budgets:
        got = perturbed.log_prob(xs, k, return_stderr=True, seed=4, max_batch_elements=budget, progress=True)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-4, atol=1e-6)
        assert "image" in capsys.readouterr().out  # the progress bar
        elbo = perturbed.elbo(xs, k, seed=4, max_batch_elements=budget)
        np.testing.assert_allclose(elbo, ref_elbo, rtol=1e-5, atol=1e-6)
    pix = perturbed.pixel_log_prob(xs, k, seed=4, max_batch_elements=budgets[-1])
    np.testing.assert_allclose(pix, ref_pix, rtol=1e-5, atol=1e-6)


def test_a_vae_scores_the_same_when_its_samples_take_several_steps(vae, digit_batch):
    # A Keras decoder's log p(x|z) has no static shape: the in-graph loop over sample
    # blocks (k > the budget) must still run, and give what one step gives.
    est = LikelihoodEstimator.from_model(vae)
    x, k = digit_batch[:3], 70
    one_step = est.scores(x, ("log_prob", "elbo", "rate"), k, seed=1, max_batch_elements=10_000)
    for budget in (64, 5):  # 2 steps (a partial block), 14 steps cutting inside blocks
        steps = est.scores(x, ("log_prob", "elbo", "rate"), k, seed=1, max_batch_elements=budget)
        for name, value in one_step.items():
            np.testing.assert_allclose(steps[name], value, rtol=1e-5, atol=1e-5, err_msg=name)


def test_seeds_make_draws_reproducible(perturbed, x):
    a = perturbed.log_prob(x, 10, seed=5)
    np.testing.assert_array_equal(a, perturbed.log_prob(x, 10, seed=5))
    assert not np.allclose(a, perturbed.log_prob(x, 10, seed=6))
    assert not np.allclose(perturbed.log_prob(x, 10), perturbed.log_prob(x, 10))


def test_bits_per_dim_is_the_scaled_negative_log_prob(perturbed, x):
    lp, se = perturbed.log_prob(x, 10, seed=7, return_stderr=True)
    bpd, bse = perturbed.bits_per_dim(x, 10, seed=7, return_stderr=True)
    np.testing.assert_allclose(bpd, -lp / (D * math.log(2)), rtol=1e-12)
    np.testing.assert_allclose(bse, se / (D * math.log(2)), rtol=1e-12)
    assert nats_to_bits_per_dim(784 * math.log(2) * 1.5, 784) == pytest.approx(1.5, rel=1e-12)
    np.testing.assert_allclose(nats_to_bits_per_dim([0.0, 4 * math.log(2)], 4), [0.0, 1.0])


def test_rate_plus_distortion_is_the_negative_elbo(perturbed, x):
    k, seed = 10, 8
    elbo = perturbed.elbo(x, k, seed=seed)
    mc = perturbed.rate_distortion(x, k, seed=seed, analytic_kl=False)
    np.testing.assert_allclose(mc["rate"] + mc["distortion"], -elbo, rtol=1e-10)
    # With the closed form: KL(N(m, S) || N(0, I)) per image, in numpy.
    loc = (x.reshape(len(x), D) - B) @ POST_GAIN.T + SHIFT
    kl = gaussian_kl(loc, WIDEN**2 * POST_COV)
    assert kl.shape == (len(x),)
    analytic = perturbed.rate_distortion(x, k, seed=seed)
    np.testing.assert_allclose(analytic["rate"], kl, rtol=1e-4)
    np.testing.assert_array_equal(analytic["distortion"], mc["distortion"])
    # Per-pixel log-probabilities sum over pixels to log p(x|z), averaged over the same draws.
    pix = perturbed.pixel_log_prob(x, k, seed=seed)
    assert pix.shape == x.shape and pix.dtype == np.float32
    np.testing.assert_allclose(pix.sum(axis=(1, 2, 3)), -mc["distortion"], rtol=1e-5)


def test_reference_gaussian_kl_matches_tfp_in_float64():
    # tests/references.py's closed form, checked once against TFP's own KL (float64, general
    # p and q, and the standard-normal special case every KL assertion above relies on).
    rng = np.random.default_rng(4)
    d = 3
    tril = np.tril(rng.normal(0.0, 0.4, (2, 5, d, d)), -1) + np.eye(d) * rng.uniform(0.3, 2.0, (2, 5, 1, d))
    locs = rng.normal(size=(2, 5, d))
    q = tfd.MultivariateNormalTriL(locs[0], tril[0])
    p = tfd.MultivariateNormalTriL(locs[1], tril[1])
    covs = tril @ np.swapaxes(tril, -1, -2)
    ours = gaussian_kl(locs[0], covs[0], locs[1], covs[1])
    assert ours.shape == (5,) and ours.dtype == np.float64 and np.all(ours > 0.1)
    np.testing.assert_allclose(ours, tfd.kl_divergence(q, p).numpy(), rtol=1e-10)
    standard = tfd.MultivariateNormalDiag(np.zeros(d))
    np.testing.assert_allclose(
        kl_to_standard_normal(locs[0], tril[0]), tfd.kl_divergence(q, standard).numpy(), rtol=1e-10
    )
    np.testing.assert_allclose(gaussian_kl(locs[0], covs[0], locs[0], covs[0]), 0.0, atol=1e-12)


def test_binarize_draws_bernoulli_pixels(perturbed, x):
    grey = np.full((200, 8, 8, 1), 0.3, np.float32)
    grey[0], grey[1] = 0.0, 1.0
    b = binarize(grey, seed=0)
    assert b.dtype == np.float32 and set(np.unique(b)) == {0.0, 1.0}
    assert np.all(b[0] == 0) and np.all(b[1] == 1)
    assert abs(b[2:].mean() - 0.3) < 0.02
    np.testing.assert_array_equal(b, binarize(grey, seed=0))
    np.testing.assert_array_equal(
        perturbed.elbo(x, 3, seed=1, binarize_seed=9), perturbed.elbo(binarize(x, seed=9), 3, seed=1)
    )
    # Shards binarise as the whole set: image i of a shard at offset o gets the whole set's draw
    # of image o + i, for even and odd numbers of skipped pixels (3x5 images: 15 per image).
    odd = np.random.default_rng(1).random((9, 3, 5, 1)).astype(np.float32)
    whole = binarize(odd, seed=3)
    for offset in range(9):
        np.testing.assert_array_equal(binarize(odd[offset:], seed=3, index_offset=offset), whole[offset:])
    shards = [perturbed.log_prob(x[i : i + 3], 5, seed=2, binarize_seed=9, index_offset=i) for i in (0, 3)]
    np.testing.assert_array_equal(np.concatenate(shards), perturbed.log_prob(x[:6], 5, seed=2, binarize_seed=9))
    # An int32 Bernoulli decoder refuses grey images (see the bad-input test) but scores binary ones.
    int_decoder = LikelihoodEstimator(perturbed._encode, _int_bernoulli_decoder, perturbed.prior)
    assert np.all(np.isfinite(int_decoder.elbo(x, 3, seed=1, binarize_seed=9)))


def test_from_model_scores_a_vae(vae, digit_batch):
    x = digit_batch
    est = LikelihoodEstimator.from_model(vae)
    lp = est.log_prob(x, 50, seed=0)
    elbo = est.elbo(x, 50, seed=0)
    assert lp.shape == (len(x),) and np.all(np.isfinite(lp)) and np.all(lp >= elbo)
    # Closed-form KL for the normal prior, and the Monte Carlo rate agreeing with it.
    q = vae.encode(x)
    ref_kl = kl_to_standard_normal(q.loc.numpy(), q.scale_tril.numpy())
    rd = est.rate_distortion(x, 50, seed=0)
    np.testing.assert_allclose(rd["rate"], ref_kl, rtol=1e-4)
    mc = est.rate_distortion(x, 50, seed=0, analytic_kl=False)
    assert abs(mc["rate"].mean() - ref_kl.mean()) < 0.05
    np.testing.assert_allclose(mc["rate"] + mc["distortion"], -elbo, rtol=1e-10)
    pix = est.pixel_log_prob(x, 50, seed=0)
    assert np.all(pix <= 0)
    np.testing.assert_allclose(pix.sum(axis=(1, 2, 3)), -rd["distortion"], rtol=1e-5)
    # Scoring in a tf.function must not leave graph tensors in the model's losses.
    vae(x)
    assert len(vae.losses) == 1 and np.isfinite(vae.losses[0].numpy())


def test_grey_bernoulli_log_prob_is_the_mean_over_binarisations(digit_batch):
    # The module docstring's claim: Bernoulli log p(x|z) is linear in x, so at grey x it is
    # the mean of log p(b|z) over binarisations b ~ Bernoulli(x).
    x0 = digit_batch[:1]
    logits = np.random.default_rng(2).normal(0.0, 2.0, x0.shape).astype(np.float32)
    px = tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), reinterpreted_batch_ndims=3)
    draws = px.log_prob(binarize(np.repeat(x0, 4000, axis=0), seed=0)).numpy()
    se = draws.std() / math.sqrt(len(draws))
    assert se > 0.01 and abs(draws.mean() - px.log_prob(x0).numpy()[0]) < 4 * se


def test_mixture_prior_falls_back_to_a_monte_carlo_rate(digit_batch):
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, prior="mixture", num_components=3, seed=0)
    est = LikelihoodEstimator.from_model(model)
    auto = est.rate_distortion(digit_batch, 4, seed=0)
    mc = est.rate_distortion(digit_batch, 4, seed=0, analytic_kl=False)
    np.testing.assert_array_equal(auto["rate"], mc["rate"])
    np.testing.assert_allclose(auto["rate"] + auto["distortion"], -est.elbo(digit_batch, 4, seed=0), rtol=1e-10)


def _sample_decoder(z):
    # Event (2, 2, 1) but not an Independent over pixels.
    return tfd.Sample(tfd.Normal(tf.reduce_sum(z, -1), 1.0), SHAPE)


def _int_bernoulli_decoder(z):
    # TFP's default Bernoulli dtype is int32: grey pixels would be truncated to 0.
    logits = tf.reshape(tf.tile(z, [1, 2]), [-1, *SHAPE])
    return tfd.Independent(tfd.Bernoulli(logits=logits), reinterpreted_batch_ndims=3)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda e, x: e.log_prob(x, 0), "`num_samples` must be an int >= 1; got 0"),
        (lambda e, x: e.elbo(x, 1.5), "`num_samples`"),
        (lambda e, x: e.log_prob(x[:, :1]), r"`x` images must have shape \(2, 2, 1\)"),
        (lambda e, x: e.elbo(x * 3), r"`x` float pixel values must lie in \[0, 1\]"),
        (lambda e, x: e.elbo(x, seed=-1), "`seed`"),
        (lambda e, x: e.elbo(x, binarize_seed="a"), "`binarize_seed`"),
        (lambda e, x: e.elbo(x, max_batch_elements=0), "`max_batch_elements`"),
        (lambda e, x: e.elbo(x, progress="yes"), "`progress`"),
        (lambda e, x: e.rate_distortion(x, analytic_kl="no"), "`analytic_kl`"),
        (lambda e, x: gaussian_estimator().elbo(x.reshape(-1, 4, 1, 1)), r"`x` images have shape \(4, 1, 1\)"),
        (lambda e, x: LikelihoodEstimator(e._encode, _sample_decoder, e.prior).pixel_log_prob(x, 2), "factorises"),
        (lambda e, x: LikelihoodEstimator(e._encode, _int_bernoulli_decoder, e.prior).elbo(x), "integer dtype"),
        (
            lambda e, x: LikelihoodEstimator(e._encode, _int_bernoulli_decoder, e.prior).pixel_log_prob(x),
            "integer dtype",
        ),
        (lambda e, x: LikelihoodEstimator("f", e._decode, e.prior), "`encode` must be callable"),
        (lambda e, x: LikelihoodEstimator(e._encode, e._decode, 0.0), "`prior` must be a tfd.Distribution"),
        (lambda e, x: LikelihoodEstimator.from_model(object()), "`model` must be a tfpvae.VAE"),
        (lambda e, x: nats_to_bits_per_dim(1.0, 0), "`num_dims`"),
        (lambda e, x: binarize(x, seed=1.5), "`seed`"),
        (lambda e, x: binarize(x, seed=1, index_offset=-1), "`index_offset`"),
        (lambda e, x: e.log_prob(x, 2, return_stderr="yes"), "`return_stderr` must be True or False; got 'yes'"),
        (lambda e, x: e.elbo(x, 2, return_stderr=1), "`return_stderr`"),
        (lambda e, x: LikelihoodEstimator(e._encode, e._decode, e.prior, image_shape=(2, 2)), "`image_shape` must be"),
        (lambda e, x: LikelihoodEstimator(e._encode, e._decode, e.prior, defines_likelihood=1), "`defines_likelihood`"),
    ],
)
def test_bad_input_is_a_clear_error(call, match, exact, x):
    with pytest.raises((ValueError, TypeError), match=match):
        call(exact, x)


def test_from_model_chunk_size_suits_the_decoder():
    from tfpvae.likelihood import DEFAULT_MAX_BATCH_ELEMENTS, MLP_MAX_BATCH_ELEMENTS
    from tfpvae.model import VAE

    mlp = VAE(input_shape=(8, 8, 1), latent_dim=2, architecture="mlp", seed=0)
    conv = VAE(input_shape=(8, 8, 1), latent_dim=2, architecture="conv", seed=0)
    assert LikelihoodEstimator.from_model(mlp).max_batch_elements == MLP_MAX_BATCH_ELEMENTS == 16384
    assert LikelihoodEstimator.from_model(conv).max_batch_elements == DEFAULT_MAX_BATCH_ELEMENTS == 1024
    assert default_batch_elements(mlp) == 16384 and default_batch_elements(conv) == 1024
    assert default_batch_elements(object()) == DEFAULT_MAX_BATCH_ELEMENTS  # no config: the conv-safe size
    assert LikelihoodEstimator.from_model(conv, max_batch_elements=64).max_batch_elements == 64
    with pytest.raises(ValueError, match="`max_batch_elements` must be an int >= 1"):
        LikelihoodEstimator.from_model(mlp, max_batch_elements=0)


def test_from_model_reads_only_what_encoder_decoder_model_names(perturbed, x):
    """Any object with encoder, decoder, prior and image_shape (no config) works, with the defaults."""
    from types import SimpleNamespace

    model = SimpleNamespace(
        encoder=lambda images, training: perturbed._encode(images),
        decoder=lambda codes, training: perturbed._decode(codes),
        prior=perturbed.prior,
        image_shape=SHAPE,
    )
    est = LikelihoodEstimator.from_model(model)
    assert est.defines_likelihood and est.max_batch_elements == default_batch_elements(model)
    np.testing.assert_array_equal(est.log_prob(x, 5, seed=1), perturbed.log_prob(x, 5, seed=1))


def test_scores_gives_each_output_once_and_shares_helpers_with_scoring(perturbed, x):
    import tfpvae.likelihood as likelihood
    import tfpvae.scoring as scoring

    out = perturbed.scores(x, ("elbo", "rate", "elbo"), 3, seed=0)
    assert list(out) == ["elbo", "rate"] and out["elbo"].shape == (len(x),)
    np.testing.assert_array_equal(out["elbo"], perturbed.elbo(x, 3, seed=0))
    assert likelihood.binarize is scoring.binarize and likelihood.check_ids is scoring.check_ids


def test_decode_gives_the_decoders_distribution(exact):
    z = np.zeros((3, 2), np.float32)
    px = exact.decode(z)
    assert tuple(px.batch_shape) == (3,) and tuple(px.event_shape) == SHAPE
    np.testing.assert_array_equal(px.mean(), exact._decode(tf.constant(z)).mean())
