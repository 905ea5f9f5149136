"""The scoring core's fast paths against TFP's own methods they replace."""

import numpy as np
import pytest

from tfpvae._keras import tf, tfd
from tfpvae.model import posterior_from_params
from tfpvae.scoring import (
    ScoringPlan,
    _bernoulli_log_px_sum,
    _draw,
    _log_px,
    binarize_images,
    per_seed,
    seeds_from_keys,
    softplus_sum,
)


def _bernoulli(logits):
    return tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), reinterpreted_batch_ndims=3)


@pytest.mark.parametrize("grey", [False, True])
def test_bernoulli_log_px_equals_tfp(grey):
    rng = np.random.default_rng(0)
    b, s = 3, 4
    logits = rng.normal(0.0, 6.0, (b * s, 28, 28, 1)).astype(np.float32)
    x = rng.uniform(size=(b, 28, 28, 1)).astype(np.float32)
    x = x if grey else np.round(x)
    px = _bernoulli(logits)
    xr = np.repeat(x, s, axis=0)  # row r of the decoded batch belongs to image r // s
    expected = px.log_prob(xr).numpy().reshape(b, s)
    # Independent float64 reference: sum x log sigmoid(l) + (1 - x) log sigmoid(-l).
    l64, x64 = logits.astype(np.float64), xr.astype(np.float64)
    reference = (x64 * -np.logaddexp(0, -l64) + (1 - x64) * -np.logaddexp(0, l64)).sum(axis=(1, 2, 3)).reshape(b, s)
    np.testing.assert_allclose(_log_px(px, tf.constant(x), s).numpy(), reference, rtol=1e-6, atol=2e-3)
    np.testing.assert_allclose(expected, reference, rtol=1e-6, atol=2e-3)


def test_other_distributions_keep_their_own_log_prob():
    x = tf.ones([1, 4])
    for px in (
        tfd.Independent(tfd.Normal(tf.zeros([3, 4]), 1.0), reinterpreted_batch_ndims=1),
        tfd.Independent(tfd.Bernoulli(probs=tf.fill([3, 4], 0.3), dtype=tf.float32), 1),
    ):
        np.testing.assert_array_equal(_log_px(px, x, 3).numpy(), px.log_prob(tf.ones([3, 4])).numpy()[None])


@pytest.mark.parametrize("width", [784, 16, 5, 1, 37])
def test_softplus_sum_equals_the_sum_of_softplus(width):
    # Logits from -100 to 100, zeros and exact ties: every branch of the stable form.
    rng = np.random.default_rng(width)
    logits = np.concatenate([rng.normal(0.0, 8.0, (6, width)), rng.uniform(-100, 100, (2, width))]).astype(np.float32)
    logits[0] = 0.0
    reference = np.logaddexp(0.0, logits.astype(np.float64)).sum(axis=-1)
    total = softplus_sum(tf.constant(logits)).numpy()
    assert total.shape == (8,) and total.dtype == np.float32
    np.testing.assert_allclose(total, reference, rtol=2e-6, atol=1e-5)
    assert total[0] == pytest.approx(width * np.log(2.0), rel=1e-6)  # softplus(0) = log 2


def test_softplus_sum_keeps_infinities_and_its_gradient_is_the_sigmoid():
    logits = tf.constant([[np.inf, 0.0, -np.inf], [1.0, -2.0, 3.0]], tf.float32)
    np.testing.assert_allclose(
        softplus_sum(logits).numpy(), [np.inf, np.log1p(np.e) + np.log1p(np.exp(-2)) + np.log1p(np.exp(3))]
    )
    finite = tf.constant(np.random.default_rng(1).normal(0.0, 5.0, (4, 3, 50)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(finite)
        total = tf.reduce_sum(softplus_sum(finite) * tf.range(1.0, 4.0))  # a different weight per row
    np.testing.assert_allclose(
        tape.gradient(total, finite).numpy(), (tf.sigmoid(finite) * tf.range(1.0, 4.0)[:, None]).numpy(), rtol=1e-6
    )


def test_batched_gaussian_draws_equal_tfps_draws_image_by_image():
    params = tf.random.stateless_normal([3, 4 + 10], seed=[1, 2])
    q = posterior_from_params(params, 4)
    ids = tf.constant(["a", "b", "c"])
    plan = ScoringPlan.make(k=100, budget=1000, n=3)  # two blocks of 64 per image, 100 kept
    z, log_q = _draw(q, ids, tf.constant(7), tf.constant(0), plan)
    # The same q as a subclass, which takes the general path (a sliced q per image).
    generic = tfd.MultivariateNormalTriL(q.loc, q.scale.to_dense())
    generic.__class__ = type("OtherGaussian", (tfd.MultivariateNormalTriL,), {})
    z_ref, log_q_ref = _draw(generic, ids, tf.constant(7), tf.constant(0), plan)
    assert z.shape == (3, 100, 4) and log_q.shape == (3, 100)
    np.testing.assert_array_equal(z.numpy(), z_ref.numpy())
    np.testing.assert_allclose(log_q.numpy(), log_q_ref.numpy(), rtol=1e-6, atol=1e-5)
    # log q is the density of the draw.
    np.testing.assert_allclose(log_q.numpy(), q.log_prob(tf.transpose(z, [1, 0, 2])).numpy().T, atol=1e-4)


def test_softplus_sum_traces_with_an_unknown_width():
    fn = tf.function(softplus_sum, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    logits = np.random.default_rng(2).normal(0.0, 3.0, (2, 21)).astype(np.float32)
    np.testing.assert_allclose(fn(logits).numpy(), np.logaddexp(0.0, logits.astype(np.float64)).sum(-1), rtol=2e-6)


def test_softplus_sum_sums_half_precision_in_float32():
    # Logits near -8: each term is about 3e-4 nats, less than float16's spacing near 1
    # (5e-4), so sigmoids in float16 would lose them all; in float32 only the result rounds.
    logits = np.random.default_rng(7).uniform(-9.0, -7.0, (2, 784)).astype(np.float32)
    for dtype, rel in ((tf.float16, 1e-3), (tf.bfloat16, 8e-3)):
        half = tf.cast(logits, dtype)
        total = softplus_sum(half)
        assert total.dtype == dtype
        exact = np.logaddexp(0.0, half.numpy().astype(np.float64)).sum(-1)  # of the rounded logits
        np.testing.assert_allclose(total.numpy().astype(np.float64), exact, rtol=rel)


def test_an_infinite_logit_takes_tfps_exact_path():
    logits = np.zeros((2, 28, 28, 1), np.float32)
    logits[0, 0, 0, 0] = -np.inf  # x = 0 there: a certain pixel, log p = 0 for it, as in TFP
    logits[1, 0, 0, 0] = np.inf
    x = np.zeros((1, 28, 28, 1), np.float32)
    px = _bernoulli(logits)
    expected = px.log_prob(np.repeat(x, 2, axis=0)).numpy()[None]
    got = _log_px(px, tf.constant(x), 2).numpy()
    np.testing.assert_array_equal(got, expected)
    assert np.isfinite(got[0, 0]) and got[0, 1] == -np.inf


@pytest.mark.parametrize("grey", [False, True])
def test_bernoulli_log_px_sum_keeps_a_trained_models_logits_accurate(grey):
    # A trained model's logits: confident background (about -15) and strokes (about +8),
    # a few pixels on the wrong side. Sums of thousands of nats must not enter the result.
    rng = np.random.default_rng(6)
    b, s, p = 4, 8, 784
    x = (rng.uniform(size=(b, 1, p)) < 0.2).astype(np.float32)
    logits = np.where(x > 0, rng.normal(8.0, 3.0, (b, s, p)), rng.normal(-15.0, 3.0, (b, s, p)))
    logits[:, :, :20] *= -1  # wrong-side pixels
    if grey:
        x = np.clip(x + rng.uniform(-0.3, 0.3, x.shape), 0, 1).astype(np.float32)
    l64, x64 = logits.astype(np.float64), x.astype(np.float64)
    reference = (x64 * l64 - np.logaddexp(0.0, l64)).sum(-1)
    got = _bernoulli_log_px_sum(tf.constant(logits, tf.float32), tf.constant(x)).numpy()
    # Binary: about 100 nats, so float32 allows 1e-5; grey pixels are far from every
    # logit, about 1,000 nats, so float32's relative 1e-7. Splitting the sum lost 4e-3.
    np.testing.assert_allclose(got, reference, rtol=3e-7, atol=5e-5)


@pytest.mark.parametrize("grey", [False, True])
def test_bernoulli_log_px_gradient_is_pixels_minus_sigmoid(grey):
    rng = np.random.default_rng(4)
    b, s = 2, 3
    logits = tf.constant(rng.normal(0.0, 4.0, (b * s, 8, 8, 1)), tf.float32)
    x = rng.uniform(size=(b, 8, 8, 1)).astype(np.float32)
    x = x if grey else np.round(x)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        total = tf.reduce_sum(_log_px(_bernoulli(logits), tf.constant(x), s))
    expected = np.repeat(x, s, axis=0) - 1 / (1 + np.exp(-logits.numpy().astype(np.float64)))
    np.testing.assert_allclose(tape.gradient(total, logits).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1, 8, 13])
def test_per_seed_draws_what_one_op_per_seed_draws(n):
    seeds = seeds_from_keys(tf.constant([f"row {i}" for i in range(n)]))

    def draw(seed):
        return tf.random.stateless_normal([5, 3], seed=seed)

    expected = np.stack([draw(seeds[i]).numpy() for i in range(n)])
    np.testing.assert_array_equal(per_seed(draw, seeds, tf.float32).numpy(), expected)
    traced = tf.function(lambda s: per_seed(draw, s, tf.float32), input_signature=[tf.TensorSpec([None, 2], tf.int32)])
    np.testing.assert_array_equal(traced(seeds).numpy(), expected)


def test_binarize_images_draws_each_image_from_its_own_seed():
    x = np.random.default_rng(5).uniform(size=(11, 6, 6, 1)).astype(np.float32)
    ids = tf.constant([f"image {i}" for i in range(11)])
    got = binarize_images(tf.constant(x), ids, tf.constant(9)).numpy()
    seeds = seeds_from_keys(tf.strings.join([ids, "binarize", "9"], separator="\x1f"))
    u = np.stack([tf.random.stateless_uniform([6, 6, 1], seed=seeds[i]).numpy() for i in range(11)])
    np.testing.assert_array_equal(got, (u < x).astype(np.float32))
    # Any batch: the first three images alone get the same pixels.
    np.testing.assert_array_equal(binarize_images(tf.constant(x[:3]), ids[:3], tf.constant(9)).numpy(), got[:3])


class _NoLogProb(tfd.Independent):
    """An Independent(Bernoulli) whose log_prob fails: proves a call took the fast path."""

    def log_prob(self, value, **kwargs):
        raise AssertionError("took the exact path")


def test_bernoulli_log_px_takes_the_fast_path_and_keeps_the_logits_dtype():
    rng = np.random.default_rng(8)
    logits = rng.normal(0.0, 4.0, (6, 8, 8, 1)).astype(np.float32)
    x = np.round(rng.uniform(size=(2, 8, 8, 1))).astype(np.float32)
    fast = _NoLogProb(tfd.Bernoulli(logits=logits, dtype=tf.float32), reinterpreted_batch_ndims=3)
    got = _log_px(fast, tf.constant(x), 3).numpy()  # eager: only the branch taken runs
    np.testing.assert_allclose(
        got, _bernoulli(logits).log_prob(np.repeat(x, 3, axis=0)).numpy().reshape(2, 3), atol=2e-5
    )
    # float16 logits with float32 samples: both branches of the finite check give float16.
    half = tfd.Independent(tfd.Bernoulli(logits=tf.cast(logits, tf.float16), dtype=tf.float32), 3)
    traced = tf.function(lambda px, x: _log_px(px, x, 3))(half, tf.constant(x))
    assert traced.dtype == tf.float16
    np.testing.assert_allclose(traced.numpy(), got, rtol=2e-3)


def test_grey_pixels_with_an_infinite_logit_fall_back_to_tfp():
    logits = np.zeros((2, 4, 4, 1), np.float32)
    logits[:, 0, 0, 0] = [-np.inf, np.inf]
    x = np.full((1, 4, 4, 1), 0.25, np.float32)  # 0.25 * -inf: impossible pixels, log p = -inf
    px = _bernoulli(logits)
    got = _log_px(px, tf.constant(x), 2).numpy()
    np.testing.assert_array_equal(got, px.log_prob(np.repeat(x, 2, axis=0)).numpy()[None])
    assert (got == -np.inf).all()


def test_pixels_outside_0_and_1_are_not_taken_for_binary():
    logits = tf.constant([[[1.0, -2.0]]])
    for x in ([[[2.0, 0.0]]], [[[-1.0, 1.0]]]):
        expected = (np.array(x) * logits.numpy() - np.logaddexp(0.0, logits.numpy())).sum(-1)
        np.testing.assert_allclose(_bernoulli_log_px_sum(logits, tf.constant(x)).numpy(), expected, rtol=1e-6)


def test_bernoulli_log_px_sum_gradient_for_the_pixels_is_the_rows_logits():
    logits = tf.constant(np.random.default_rng(9).normal(0.0, 2.0, (2, 3, 5)), tf.float32)
    pixels = tf.constant(np.random.default_rng(10).uniform(size=(2, 1, 5)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(pixels)
        total = tf.reduce_sum(_bernoulli_log_px_sum(logits, pixels) * [[1.0, 2.0, 3.0]])
    expected = (logits.numpy() * np.array([1.0, 2.0, 3.0])[None, :, None]).sum(1, keepdims=True)
    np.testing.assert_allclose(tape.gradient(total, pixels).numpy(), expected, rtol=1e-6)


def test_per_seed_of_no_seeds_keeps_the_shape_of_one_draw():
    drawn = per_seed(lambda seed: tf.random.stateless_normal([5, 3], seed=seed), tf.zeros([0, 2], tf.int32), tf.float32)
    assert drawn.shape == (0, 5, 3)
