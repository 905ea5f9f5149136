"""The scoring core's fast paths against TFP's own methods they replace."""

import numpy as np
import pytest

from tfpvae._keras import tf, tfd
from tfpvae.model import posterior_from_params
from tfpvae.scoring import ScoringPlan, _draw, _log_prob


@pytest.mark.parametrize("grey", [False, True])
def test_bernoulli_log_prob_equals_tfp(grey):
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 6.0, (5, 28, 28, 1)).astype(np.float32)
    x = rng.uniform(size=logits.shape).astype(np.float32)
    x = x if grey else np.round(x)
    px = tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), reinterpreted_batch_ndims=3)
    expected = px.log_prob(x).numpy()
    # Independent float64 reference: sum x log sigmoid(l) + (1 - x) log sigmoid(-l).
    l64, x64 = logits.astype(np.float64), x.astype(np.float64)
    reference = (x64 * -np.logaddexp(0, -l64) + (1 - x64) * -np.logaddexp(0, l64)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(_log_prob(px, x).numpy(), reference, rtol=1e-6, atol=2e-3)
    np.testing.assert_allclose(expected, reference, rtol=1e-6, atol=2e-3)


def test_other_distributions_keep_their_own_log_prob():
    px = tfd.Independent(tfd.Normal(tf.zeros([3, 4]), 1.0), reinterpreted_batch_ndims=1)
    x = tf.ones([3, 4])
    np.testing.assert_array_equal(_log_prob(px, x).numpy(), px.log_prob(x).numpy())
    probs = tfd.Independent(tfd.Bernoulli(probs=tf.fill([3, 4], 0.3), dtype=tf.float32), 1)
    np.testing.assert_array_equal(_log_prob(probs, x).numpy(), probs.log_prob(x).numpy())


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
