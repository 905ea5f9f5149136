"""The combined anomaly score: its statistics against closed forms, its p-values' validity,
the score against its four parts, and the detector that uses it by default."""

import numpy as np
import pytest

from tfpvae.anomaly import AnomalyDetector, combined_statistics, detection_metrics, fit_detectors
from tfpvae.combined import (
    FEATURES,
    MAP_BLUR,
    MIN_SCALE,
    PREFIX,
    TESTS,
    CombinedScore,
    image_statistics,
    map_statistic,
)

_LOGIT = -2.0


def _estimator(column_logit: float | None = None, decoder: str = "bernoulli"):
    """An estimator whose log p(x) is exact: q(z|x) is the prior and p(x|z) ignores z.

    Every pixel has logit -2, except, with `column_logit`, the first column (the left edge),
    which makes the model's images face one way: a flipped image is less likely. `decoder`:
    "bernoulli" (float pixels), "integer" (TFP's default int32 Bernoulli, binary pixels
    only) or "sample" (the same pixels as a `tfd.Sample`, which does not factorise as an
    `Independent`).
    """
    from tfpvae._keras import tf, tfd
    from tfpvae.likelihood import LikelihoodEstimator

    logits = np.full((4, 4, 1), _LOGIT, np.float32)
    if column_logit is not None:
        logits[:, 0] = column_logit

    def encode(x):
        n = tf.shape(x)[0]
        return tfd.MultivariateNormalDiag(loc=tf.zeros([n, 1]), scale_diag=tf.ones([n, 1]))

    def decode(z):
        tiled = tf.tile(tf.constant(logits)[None], [tf.shape(z)[0], 1, 1, 1])
        if decoder == "sample":  # every pixel alike, so one Bernoulli sampled 16 times is the same model
            return tfd.Sample(tfd.Bernoulli(logits=tiled[:, 0, 0, 0], dtype=tf.float32), (4, 4, 1))
        return tfd.Independent(tfd.Bernoulli(logits=tiled, dtype=tf.float32 if decoder == "bernoulli" else tf.int32), 3)

    prior = tfd.MultivariateNormalDiag(loc=[0.0], scale_diag=[1.0])
    return LikelihoodEstimator(encode, decode, prior, image_shape=(4, 4, 1)), logits


def _exact_log_prob(x, logits):
    x = np.asarray(x, np.float64)
    log_on, log_off = -np.log1p(np.exp(-logits)), -np.log1p(np.exp(logits))
    return (x * log_on + (1 - x) * log_off).reshape(len(x), -1).sum(1)


def test_image_statistics_closed_forms():
    half = np.full((2, 3, 5, 1), 0.5, np.float32)
    np.testing.assert_allclose(image_statistics(half)["grey_entropy"], 15 * np.log(2.0))
    binary = (np.random.default_rng(0).random((3, 4, 4, 1)) < 0.5).astype(np.float32)
    np.testing.assert_allclose(image_statistics(binary)["grey_entropy"], 0.0, atol=1e-9)
    # One bright pixel in the middle of a 3x3 image: 4 edges of height 1 in each image.
    spot = np.zeros((1, 3, 3, 1), np.float32)
    spot[0, 1, 1] = 0.8
    stats = image_statistics(spot)
    assert stats["gradient"][0] == pytest.approx(4 * 0.8)
    assert stats["peak"][0] == pytest.approx(0.8)
    # Its Laplacian is 4 * 0.8 at the only interior pixel: sharpness 3.2 / 3.2 = 1.
    assert stats["sharpness"][0] == pytest.approx(1.0)
    assert image_statistics(half)["sharpness"] == pytest.approx([0.0, 0.0])  # no edges: 0, not 0/0


def test_sharpness_is_scale_free_and_falls_with_blur():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    x = (rng.random((4, 12, 12, 1)) < 0.3).astype(np.float64)
    sharp = image_statistics(x)["sharpness"]
    # A dimmed copy has the same sharpness: a ratio of two sums linear in the image.
    np.testing.assert_allclose(image_statistics(0.4 * x)["sharpness"], sharp, rtol=1e-12)
    blurred = ndimage.gaussian_filter(x, (0, 1, 1, 0))
    assert (image_statistics(blurred)["sharpness"] < sharp).all()
    # A ramp has a gradient but no Laplacian inside: its sharpness is 0.
    ramp = np.broadcast_to(np.linspace(0, 1, 6)[None, :, None, None], (1, 6, 6, 1))
    assert image_statistics(ramp)["sharpness"][0] == pytest.approx(0.0, abs=1e-6)  # float32 rounding
    with pytest.raises(ValueError, match="`x`"):
        image_statistics(np.zeros((2, 4)))


def test_statistics_of_an_exact_model():
    estimator, logits = _estimator()
    x = np.random.default_rng(1).random((6, 4, 4, 1)).astype(np.float32)
    stats = combined_statistics(estimator, x, num_samples=4, seed=3)
    assert set(stats) == {PREFIX + name for name in (*FEATURES, "pose", "map")}
    from tfpvae.scoring import binarize

    xb = binarize(x, 3)  # binarize_seed None: the images are binarised with `seed`
    log_p = _exact_log_prob(xb, logits)
    np.testing.assert_allclose(stats[PREFIX + "kl"], log_p + image_statistics(x)["grey_entropy"], rtol=1e-5)
    np.testing.assert_allclose(stats[PREFIX + "distortion"], log_p, rtol=1e-5)
    np.testing.assert_allclose(stats[PREFIX + "rate"], 0.0, atol=1e-5)  # q(z|x) is the prior
    # Every pixel alike: flips change no likelihood, so the pose statistic is 0.
    np.testing.assert_allclose(stats[PREFIX + "pose"], 0.0, atol=1e-4)
    # The map: per pixel the KL from Bernoulli(x) to Bernoulli(sigmoid(-2)), blurred, at its largest.
    np.testing.assert_allclose(stats[PREFIX + "map"], _map_by_hand(x), rtol=1e-4)
    again = combined_statistics(estimator, xb, num_samples=4, seed=3, binarize_seed=11)
    np.testing.assert_allclose(again[PREFIX + "distortion"], log_p, rtol=1e-5)  # binary images are their own


def _map_by_hand(x, logit=_LOGIT):
    """The map statistic of images x under pixels of one logit: KL per pixel, channel mean, blur, max."""
    from scipy import ndimage
    from scipy.special import expit, rel_entr

    p = expit(logit)
    kl = (rel_entr(x, p) + rel_entr(1 - x, 1 - p)).mean(axis=-1).astype(np.float64)
    return ndimage.gaussian_filter(kl, (0, MAP_BLUR, MAP_BLUR), mode="nearest").max(axis=(1, 2))


def test_map_statistic_averages_channels_then_blurs():
    x = np.random.default_rng(5).random((3, 6, 5, 3))
    logit = 0.7
    log_p = x * -np.log1p(np.exp(-logit)) + (1 - x) * -np.log1p(np.exp(logit))  # log Bernoulli(x; sigmoid(0.7))
    np.testing.assert_allclose(map_statistic(x, log_p), _map_by_hand(x, logit), rtol=1e-10)
    # A local defect raises it: one pixel far from the model's prediction.
    spot = np.full((1, 9, 9, 1), 0.5)
    fit = np.full(spot.shape, -np.log(2.0))
    bad = fit.copy()
    bad[0, 4, 4] = -20.0
    assert map_statistic(spot, fit)[0] == pytest.approx(0.0, abs=1e-12)
    assert map_statistic(spot, bad)[0] > 0.3


def test_the_map_reads_what_the_decoder_can_score():
    """A decoder of integer pixels maps the binarisation x~; one that does not factorise has no map (0)."""
    from tfpvae.scoring import binarize

    x = np.random.default_rng(6).random((5, 4, 4, 1)).astype(np.float32)
    grey = combined_statistics(_estimator()[0], x, num_samples=2, seed=1)
    integer = combined_statistics(_estimator(decoder="integer")[0], x, num_samples=2, seed=1)
    np.testing.assert_allclose(integer[PREFIX + "map"], _map_by_hand(binarize(x, 1)), rtol=1e-4)
    for name in (*FEATURES, "pose"):  # every other statistic reads x~ (or x itself) alike
        np.testing.assert_allclose(integer[PREFIX + name], grey[PREFIX + name], rtol=1e-5, atol=1e-5)
    sample = combined_statistics(_estimator(decoder="sample")[0], x, num_samples=2, seed=1)
    np.testing.assert_array_equal(sample[PREFIX + "map"], 0.0)
    np.testing.assert_allclose(sample[PREFIX + "distortion"], grey[PREFIX + "distortion"], rtol=1e-5)


def test_pose_statistic_is_the_likelihood_lost_to_the_worst_flip():
    estimator, logits = _estimator(column_logit=2.0)  # the left column is usually ink
    left = np.zeros((2, 4, 4, 1), np.float32)
    left[:, :, 0] = 1.0
    right = left[:, :, ::-1].copy()  # the flipped pose
    pose = {
        name: combined_statistics(estimator, x, num_samples=2)[PREFIX + "pose"]
        for name, x in (("left", left), ("right", right))
    }
    log_p = {name: _exact_log_prob(x, logits) for name, x in (("left", left), ("right", right))}
    # The normal pose: its vertical flip is as likely (0), its horizontal flip less (> 0): min is 0.
    np.testing.assert_allclose(pose["left"], 0.0, atol=1e-4)
    # The flipped pose loses log p(left) - log p(right) to its flip back.
    np.testing.assert_allclose(pose["right"], log_p["right"] - log_p["left"], rtol=1e-5)
    assert np.all(pose["right"] < -10)


def _synthetic(rng, n, density_shift=0.0, pose_shift=0.0):
    """Statistics of `n` images: standard normal features, shifted where asked."""
    stats = {PREFIX + name: rng.normal(size=n) + density_shift for name in FEATURES}
    stats[PREFIX + "pose"] = rng.normal(size=n) - pose_shift
    stats[PREFIX + "map"] = rng.normal(size=n)
    return stats


def test_the_score_is_fishers_sum_of_its_four_p_values():
    rng = np.random.default_rng(0)
    score = CombinedScore(_synthetic(rng, 200))
    test = _synthetic(rng, 400)
    for name, values in test.items():
        values[:5] += 6.0 if name == PREFIX + "map" else -6.0  # a few far outside the reference, in every statistic
    parts = score.log_parts(test)
    assert tuple(parts) == TESTS
    np.testing.assert_allclose(score(test), sum(parts[name] for name in TESTS))
    # Each p-value by hand, (1 + #reference <= value) / (m + 1), where the value is within the reference.
    for name, value in (
        ("pose", test[PREFIX + "pose"]),
        ("complexity", test[PREFIX + "complexity"]),
        ("map", -test[PREFIX + "map"]),  # a larger map is less normal
        ("density", score.log_density(test)),
    ):
        reference = score.references_[name]
        inside = value >= reference[0]
        by_hand = [(1 + np.sum(reference <= v)) / 201 for v in value[inside]]
        np.testing.assert_allclose(np.exp(parts[name][inside]), by_hand)
        # Below it, the tail goes on falling: one nat per mean spacing of the lowest 20 values.
        below = np.sort(value[~inside])[::-1]
        assert below.size > 0
        spacing = (reference[20] - reference[0]) / 20
        np.testing.assert_allclose(np.sort(parts[name][~inside])[::-1], -np.log(201) - (reference[0] - below) / spacing)
    # A non-finite statistic is as abnormal as can be.
    test[PREFIX + "rate"][0] = np.nan
    test[PREFIX + "map"][1] = np.nan
    test[PREFIX + "gradient"][2] = np.inf  # the scaler refuses infinities: the density must not see them
    parts = score.log_parts(test)
    assert parts["density"][0] == parts["density"][2] == parts["map"][1] == -np.inf


def test_the_tail_starts_below_the_smallest_finite_reference_value():
    from tfpvae.combined import _log_p_values

    reference = np.r_[-np.inf, -np.inf, np.arange(20.0)]  # two failed statistics among 22
    values = np.array([5.0, -1.0, -3.0, -np.inf])
    log_p = _log_p_values(reference, values)
    assert log_p[0] == pytest.approx(np.log((1 + 2 + 6) / 23))  # the -infs count in the rank
    # Below 0: from (1 + 2) / 23, one nat per spacing (1: the lowest tenth of the 20 finite values).
    np.testing.assert_allclose(log_p[1:3], np.log(3 / 23) - np.array([1.0, 3.0]))
    assert log_p[3] == -np.inf


def test_a_tail_over_tied_reference_values_falls_at_their_mean_spacing_or_not_at_all():
    """Ties in the lowest tenth made a spacing of 0, floored to 1e-12: the tail fell by 1e12 nats
    per unit and the other tests no longer counted (2 reference images, whose cross-fitted
    densities are equal, did it)."""
    from tfpvae.combined import _log_p_values

    reference = np.r_[np.zeros(5), np.arange(1.0, 16.0)]  # 20 values, the lowest tenth tied at 0
    # All 20 spread over 15 units: 15 / 19 per step.
    np.testing.assert_allclose(_log_p_values(reference, np.array([-3.0])), np.log(1 / 21) - 3 * 19 / 15)
    tied = np.sort(np.float32([-17.4155843, np.nextafter(np.float32(-17.4155843), 0)]))  # one float32 step apart
    np.testing.assert_allclose(_log_p_values(tied.astype(np.float64), np.array([-18.0, -1e6])), np.log(1 / 3))
    # A large value at the top does not make the low end's real spacing a tie.
    spread = np.r_[np.arange(0.0, 1.0, 0.05), 1e8]
    np.testing.assert_allclose(_log_p_values(spread, np.array([-1.0])), np.log(1 / 22) - 1 / 0.05)
    np.testing.assert_allclose(_log_p_values(np.array([2.0]), np.array([1.0, 3.0])), np.log([1 / 2, 1]))


def test_two_reference_images_give_scores_of_the_size_of_their_tests():
    rng = np.random.default_rng(3)
    score = CombinedScore(_synthetic(rng, 2))
    new = _synthetic(rng, 50)
    parts = score.log_parts(new)
    assert all(np.all(parts[name] <= 0) for name in parts)
    # Each test's log p-value is at least the rank's log(1/3) less its tail over the other
    # reference value's spacing: nothing like the 1e14 nats the ties gave.
    assert np.all(np.isfinite(score(new))) and np.min(score(new)) > -1e4


def test_a_constant_statistic_is_scaled_by_min_scale():
    """The peak of contrast-stretched images is 1 in every one: a dimmed image must stand out, and
    an unseen 254/255 must not."""
    rng = np.random.default_rng(7)
    stats = _synthetic(rng, 200)
    stats[PREFIX + "peak"] = np.ones(200)
    score = CombinedScore(stats)
    assert score.scaler_.scale_[FEATURES.index("peak")] == MIN_SCALE
    test = _synthetic(rng, 3)
    test[PREFIX + "peak"] = np.array([1.0, 254 / 255, 0.5])
    for name in FEATURES:
        if name != "peak":
            test[PREFIX + name] = np.zeros(3)  # the middle of the reference
    density = score.log_parts(test)["density"]
    assert density[0] > np.log(0.5) and density[1] > np.log(0.05)  # one scale off: still ordinary
    assert density[2] < -1000  # 127.5 scales off


def test_reference_densities_are_cross_fitted():
    """Each reference image's log-density comes from a density fitted on the other folds."""
    from sklearn.neighbors import KernelDensity

    rng = np.random.default_rng(4)
    stats = _synthetic(rng, 53)
    stats[PREFIX + "rate"][7] = np.inf  # left out of every fit; its density is -inf
    score = CombinedScore(stats, folds=4)
    features = np.stack([stats[PREFIX + name] for name in FEATURES], axis=1)
    finite = np.flatnonzero(np.isfinite(features).all(axis=1))
    scaled = (features[finite] - features[finite].mean(0)) / np.maximum(features[finite].std(0), MIN_SCALE)
    own = [-np.inf]
    for fold in np.array_split(np.random.default_rng(0).permutation(len(finite)), 4):
        rest = np.setdiff1d(np.arange(len(finite)), fold)
        own.extend(KernelDensity(bandwidth="scott").fit(scaled[rest]).score_samples(scaled[fold]))
    np.testing.assert_allclose(score.references_["density"], np.sort(own))
    # The density itself is fitted on every finite image, and scores them higher than the cross-fits did.
    assert score.density_.tree_.data.shape == (52, len(FEATURES))
    assert np.mean(score.log_density(stats)[finite]) > np.mean(np.sort(own)[1:])
    with pytest.raises(ValueError, match="`reference_stats`.*at least 2"):
        CombinedScore({k: v[7:9] for k, v in stats.items()})  # one finite image
    with pytest.raises(ValueError, match="`folds`"):
        CombinedScore(stats, folds=1)


def test_the_combined_score_catches_what_any_part_catches():
    rng = np.random.default_rng(1)
    score = CombinedScore(_synthetic(rng, 400))
    normal = _synthetic(rng, 500)
    # Half the anomalies are off in their features, half in their pose.
    off_density, off_pose = _synthetic(rng, 250, density_shift=1.5), _synthetic(rng, 250, pose_shift=3.0)
    anomalies = {k: np.r_[off_density[k], off_pose[k]] for k in normal}
    auroc = {
        name: detection_metrics(fn(normal), fn(anomalies))["auroc"]
        for name, fn in (
            ("combined", score),
            ("density", lambda s: score.log_parts(s)["density"]),
            ("pose", lambda s: score.log_parts(s)["pose"]),
            ("complexity", lambda s: score.log_parts(s)["complexity"]),
            ("map", lambda s: score.log_parts(s)["map"]),
        )
    }
    assert auroc["combined"] > max(auroc["density"], auroc["pose"], auroc["complexity"], auroc["map"]) + 0.05, auroc
    # Each part alone does catch its own kind.
    assert detection_metrics(score.log_parts(normal)["pose"], score.log_parts(off_pose)["pose"])["auroc"] > 0.95


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_detector_p_values_keep_the_false_positive_rate(alpha):
    """Over many fits on normal data, P(p <= alpha) <= alpha for new normal images."""
    rng = np.random.default_rng(2)
    rates = []
    for seed in range(60):
        fit, new = _synthetic(rng, 120), _synthetic(rng, 200)
        detector = AnomalyDetector(estimator=object(), seed=seed, target_fpr=alpha)._calibrate(None, fit)
        detector.score_samples = lambda x, new=new, detector=detector: detector._score_of(new)
        rates.append(np.mean(detector.p_values(None) <= alpha))
        # predict flags exactly the images whose p-value is at most alpha.
        np.testing.assert_array_equal(detector.predict(None) == -1, detector.p_values(None) <= alpha)
    # The mean over 60 x 200 images: its standard error is under 0.01 at these alphas.
    assert np.mean(rates) <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / (60 * 200)) + 0.01
    assert np.mean(rates) >= alpha - 0.05  # and not trivially conservative


def test_the_fit_images_are_split_into_calibration_and_reference():
    rng = np.random.default_rng(3)
    fit = _synthetic(rng, 101)
    detector = AnomalyDetector(estimator=object(), calibration_fraction=0.5)._calibrate(None, fit)
    assert len(detector.calibration_scores_) == 50  # round(0.5 * 101)
    for name in TESTS:
        assert len(detector.combined_.references_[name]) == 51  # every other image
    assert detector.combined_.density_.tree_.data.shape == (51, len(FEATURES))
    tiny = AnomalyDetector(estimator=object(), calibration_fraction=1.0)._calibrate(None, _synthetic(rng, 4))
    assert len(tiny.calibration_scores_) == 2  # two images are kept to cross-fit the density
    broken = _synthetic(rng, 4)
    broken[PREFIX + "kl"][:] = np.nan
    with pytest.raises(ValueError, match="`x`: of the 2 fit images outside the calibration part"):
        AnomalyDetector(estimator=object(), calibration_fraction=0.5)._calibrate(None, broken)


def test_the_detector_uses_the_combined_score_by_default(trained_digits, digits):
    (x, _), (xt, _) = digits
    detector = AnomalyDetector(trained_digits, num_samples=8, progress=False)
    assert detector.score == "combined"
    detector.fit(xt[:200])
    assert isinstance(detector.combined_, CombinedScore)
    normal, inverted = detector.score_samples(xt[200:]), detector.score_samples(1.0 - xt[200:])
    assert detection_metrics(normal, inverted)["auroc"] > 0.95
    p = detector.p_values(xt[200:])
    assert 0.0 < np.mean(p <= 0.05) < 0.2
    # fit_detectors fits it beside the other scores, and scores it as the detector alone does.
    detectors = fit_detectors(trained_digits, xt[:200], ("log_prob", "combined"), num_samples=8, progress=False)
    np.testing.assert_allclose(detectors["combined"].score_samples(xt[200:]), normal, rtol=1e-6)
    assert "combined" in fit_detectors(trained_digits, xt[:40], num_samples=2, progress=False)


def test_a_row_does_not_depend_on_the_batch_it_is_scored_in(trained_digits, digits):
    (_, _), (xt, _) = digits
    estimator = trained_digits.likelihood
    batch = combined_statistics(estimator, xt[:6], num_samples=4, progress=False)
    alone = combined_statistics(estimator, xt[3:4], num_samples=4, index_offset=3, progress=False)
    named = combined_statistics(estimator, xt[3:4], num_samples=4, ids=["3"], progress=False)
    for key, values in batch.items():
        np.testing.assert_allclose(alone[key][0], values[3], rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(named[key][0], values[3], rtol=1e-5, err_msg=key)
    with pytest.raises(ValueError, match="`binarize_seed`"):
        combined_statistics(estimator, xt[:2], binarize_seed=-1)
