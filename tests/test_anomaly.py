"""Anomaly scores, detector thresholds and conformal p-values, and the evaluation metrics."""

import itertools
import math

import numpy as np
import pytest

import tfpvae
from tfpvae.anomaly import (
    CONTEXT_TEMPLATE,
    SCORES,
    AnomalyDetector,
    compressed_bits,
    compute_scores,
    context_code_length,
    evaluate,
)

_LOGIT = -2.0  # p(ink) = sigmoid(-2) for every pixel


def _known_estimator():
    """An estimator whose log p(x) is known in closed form: q(z|x) is the prior and p(x|z)
    ignores z, so every log-weight is log p(x) = ink log s(-2) + (16 - ink) log s(2)."""
    from tfpvae._keras import tf, tfd
    from tfpvae.likelihood import LikelihoodEstimator

    def encode(x):
        n = tf.shape(x)[0]
        return tfd.MultivariateNormalDiag(loc=tf.zeros([n, 1]), scale_diag=tf.ones([n, 1]))

    def decode(z):
        logits = tf.fill([tf.shape(z)[0], 4, 4, 1], _LOGIT)
        return tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), 3)

    prior = tfd.MultivariateNormalDiag(loc=[0.0], scale_diag=[1.0])
    return LikelihoodEstimator(encode, decode, prior, image_shape=(4, 4, 1))


def _known_log_prob(x):
    ink = np.asarray(x, np.float64).reshape(len(x), -1).sum(1)
    log_on, log_off = -np.log1p(np.exp(-_LOGIT)), -np.log1p(np.exp(_LOGIT))
    return ink * log_on + (16 - ink) * log_off


_FakeEstimator = _known_estimator


def _images(n, ink, seed):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 4, 4, 1)) < ink).astype(np.float32)


def test_evaluate_against_hand_computed_values():
    # Anomalous 0.0 ranks below all 3 normals, 1.5 below 2 of them: AUROC = 5/6.
    r = evaluate([3.0, 2.0, 1.0], [0.0, 1.5])
    assert r["auroc"] == pytest.approx(5 / 6)
    perfect = evaluate([5, 6, 7], [1, 2])
    assert perfect["auroc"] == 1.0 and perfect["auprc"] == 1.0 and perfect["fpr_at_95_tpr"] == 0.0
    assert evaluate([1, 2], [5, 6])["auroc"] == 0.0
    with pytest.raises(ValueError, match="`scores_anomalous`"):
        evaluate([1.0], [])
    with pytest.raises(ValueError, match="1 NaN"):
        evaluate([1.0, np.nan], [0.0])
    # An "impossible" image (-inf) ranks as the most anomalous.
    assert evaluate([1.0, 2.0], [-np.inf, 1.5])["auroc"] == pytest.approx(3 / 4)


def test_score_family_from_known_likelihood():
    x = _images(5, 0.3, 0)
    ink = x.reshape(5, -1).sum(1)
    log_p = _known_log_prob(x)
    s = compute_scores(_FakeEstimator(), x, SCORES, typical_nll=10.0, num_samples=8, stderr=True)
    np.testing.assert_allclose(s["log_prob"], log_p, rtol=1e-5)
    np.testing.assert_allclose(s["elbo"], log_p, rtol=1e-5)
    np.testing.assert_allclose(s["rate"], 0.0, atol=1e-6)  # q(z|x) is the prior
    np.testing.assert_allclose(s["distortion"], log_p, rtol=1e-5)
    np.testing.assert_allclose(s["typicality"], -np.abs(-log_p - 10.0), rtol=1e-5)
    np.testing.assert_allclose(s["complexity"], log_p / np.log(2) + compressed_bits(x), rtol=1e-5)
    # Equal weights: no Monte Carlo spread at all.
    np.testing.assert_allclose(s["log_prob_stderr"], 0.0, atol=1e-5)
    np.testing.assert_allclose(s["elbo_stderr"], 0.0, atol=1e-5)
    assert ink.max() > ink.min()  # the images differ, so the checks above compare something
    with pytest.raises(ValueError, match="typical_nll"):
        compute_scores(_FakeEstimator(), x, ("typicality",))
    with pytest.raises(ValueError, match="`score` must be one of 'log_prob'"):
        compute_scores(_FakeEstimator(), x, ("waic",))
    assert list(compute_scores(_FakeEstimator(), x, "rate")) == ["rate"]  # one name, not its letters
    # The default: every score, typicality only with its typical NLL.
    assert tuple(compute_scores(_FakeEstimator(), x)) == tuple(n for n in SCORES if n != "typicality")
    everything = compute_scores(_FakeEstimator(), x, typical_nll=10.0)
    assert tuple(everything) == SCORES
    np.testing.assert_allclose(everything["typicality"], s["typicality"])
    with pytest.raises(ValueError, match="`binarize_seed` must be"):
        compute_scores(_FakeEstimator(), x, ("log_prob",), binarize_seed=-1)


def test_shards_of_grey_images_score_as_the_whole_set():
    # Grey images: "complexity" scores a fixed binarisation, which a shard must draw as the whole set does.
    grey = np.random.default_rng(2).random((6, 4, 4, 1)).astype(np.float32)
    for kw in ({}, {"binarize_seed": 5}):
        whole = compute_scores(_FakeEstimator(), grey, ("complexity", "log_prob"), **kw)
        parts = [
            compute_scores(_FakeEstimator(), grey[i : i + 2], ("complexity", "log_prob"), index_offset=i, **kw)
            for i in (0, 2, 4)
        ]
        for name in whole:
            np.testing.assert_array_equal(np.concatenate([p[name] for p in parts]), whole[name])


@pytest.mark.parametrize("compressor", ["context", "zlib"])
def test_compressed_length_orders_simple_below_noisy(compressor):
    blank = np.zeros((1, 28, 28, 1), np.float32)
    noise = (np.random.default_rng(0).random((1, 28, 28, 1)) < 0.5).astype(np.float32)
    assert compressed_bits(blank, compressor=compressor)[0] < 0.2 * compressed_bits(noise, compressor=compressor)[0]
    assert compressed_bits(noise, compressor=compressor)[0] > 28 * 28 * 0.9  # random bits do not compress


def _context_code_length_by_hand(image, template, a):
    """Reference: one image, pixel by pixel, with a dict of counts (the definition)."""
    height, width, channels = image.shape
    counts, bits = {}, 0.0
    for ch, i, j in itertools.product(range(channels), range(height), range(width)):
        context = tuple(
            image[i + dy, j + dx, ch] if 0 <= i + dy < height and 0 <= j + dx < width else 0 for dy, dx in template
        )
        seen = counts.setdefault(context, [0, 0])
        value = int(image[i, j, ch])
        bits -= math.log2((seen[value] + a) / (sum(seen) + 2 * a))
        seen[value] += 1
    return bits


@pytest.mark.parametrize("template", [CONTEXT_TEMPLATE, ((0, -1),), ((0, -1), (0, -2), (-1, 0), (-2, 1), (-1, -2))])
@pytest.mark.parametrize("a", [0.5, 1.0])
def test_context_code_length_matches_its_definition(template, a):
    x = (np.random.default_rng(1).random((3, 6, 5, 2)) < [[[[0.2, 0.7]]]]).astype(np.float32)
    expected = [_context_code_length_by_hand(img, template, a) for img in x]
    np.testing.assert_allclose(context_code_length(x, template, pseudo_count=a), expected, rtol=1e-12)


def test_context_code_length_closed_form_and_kraft_equality():
    # A blank image puts every pixel in context 0: the Krichevsky-Trofimov code length of
    # N zeros, -log2(Gamma(N + 1/2) / (Gamma(1/2) Gamma(N + 1))).
    n = 28 * 28
    kt = -(math.lgamma(n + 0.5) - math.lgamma(0.5) - math.lgamma(n + 1)) / math.log(2)
    assert context_code_length(np.zeros((1, 28, 28))) == pytest.approx([kt], rel=1e-10)
    # A lossless code over all 2^9 images of 3x3 pixels: sum 2^-L(x) = 1 (Kraft equality).
    every = np.array(list(itertools.product((0, 1), repeat=9))).reshape(-1, 3, 3, 1)
    assert np.sum(2.0 ** -context_code_length(every)) == pytest.approx(1.0, rel=1e-10)


def test_compressor_input_errors():
    with pytest.raises(ValueError, match="`x` must be binary images"):
        context_code_length(np.full((1, 4, 4, 1), 0.5))
    with pytest.raises(ValueError, match="`template` offsets must point to earlier pixels"):
        context_code_length(np.zeros((1, 4, 4, 1)), ((0, 1),))
    with pytest.raises(ValueError, match="`pseudo_count`"):
        context_code_length(np.zeros((1, 4, 4, 1)), pseudo_count=0)
    with pytest.raises(ValueError, match="`compressor` must be one of"):
        compressed_bits(np.zeros((1, 4, 4, 1)), compressor="png")
    with pytest.raises(ValueError, match="binarize_threshold"):
        compressed_bits(np.zeros((1, 4, 4, 1)), binarize_threshold=None)
    with pytest.raises(ValueError, match="`compressor` must be one of"):
        AnomalyDetector(estimator=_FakeEstimator(), compressor="gzip")
    with pytest.raises(ValueError, match=r"`binarize_threshold` must be a finite number in \(0.0, 1.0\]"):
        compressed_bits(np.zeros((1, 4, 4, 1)), binarize_threshold=2.0)
    with pytest.raises(ValueError, match="`typical_nll` must be a finite number"):
        compute_scores(_FakeEstimator(), np.zeros((1, 4, 4, 1)), ("typicality",), typical_nll=float("nan"))
    # uint8 images are read as 0..255 (so 100 is below the 0.5 threshold), like everywhere else.
    grey = np.array([0, 100, 200, 255] * 4, np.uint8).reshape(1, 4, 4, 1)
    for compressor in ("context", "zlib"):
        np.testing.assert_array_equal(
            compressed_bits(grey, compressor=compressor), compressed_bits(grey / 255.0, compressor=compressor)
        )


def test_detector_threshold_fpr_and_conformal_p_values():
    normal = _images(4000, 0.3, 1)
    det = AnomalyDetector(estimator=_FakeEstimator(), target_fpr=0.1, seed=0).fit(normal)
    assert det.threshold_ == pytest.approx(np.quantile(det.calibration_scores_, 0.1))
    fresh = _images(4000, 0.3, 2)
    flagged = np.mean(det.predict(fresh) == -1)
    assert flagged <= 0.1 + 0.03  # ties at the threshold are inliers, so at most the target
    p = det.p_values(fresh)
    assert np.all((p > 0) & (p <= 1))
    for a in (0.05, 0.2, 0.5):  # conformal validity: P(p <= a) <= a, up to sampling noise
        assert np.mean(p <= a) <= a + 0.03
    heavy = np.ones((50, 4, 4, 1), np.float32)  # all ink: less likely than any normal image
    assert np.all(det.predict(heavy) == -1) and np.all(det.decision_function(heavy) < 0)
    assert det.p_values(heavy).max() <= 1 / (len(det.calibration_scores_) + 1) + 1e-12


def test_contamination_threshold_and_typicality():
    normal = _images(2000, 0.3, 4)
    det = AnomalyDetector(estimator=_FakeEstimator(), threshold="contamination", contamination=0.2).fit(normal)
    assert np.mean(det.calibration_scores_ < det.threshold_) == pytest.approx(0.2, abs=0.05)
    typ = AnomalyDetector(estimator=_FakeEstimator(), score="typicality").fit(normal)
    assert typ.typical_nll_ == pytest.approx(-_known_log_prob(np.full((1, 16), 0.3))[0], rel=0.05)
    # Only typicality holds images back for its reference; the other scores calibrate on all.
    assert len(det.calibration_scores_) == 2000 and len(typ.calibration_scores_) == 1000
    # Too little ink is atypical too: typicality flags it, raw likelihood prefers it.
    empty = np.zeros((10, 4, 4, 1), np.float32)
    assert np.all(typ.predict(empty) == -1)
    assert np.all(AnomalyDetector(estimator=_FakeEstimator()).fit(normal).predict(empty) == 1)


def test_detector_errors():
    det = AnomalyDetector(estimator=_FakeEstimator())
    with pytest.raises(RuntimeError, match="not fitted"):
        det.predict(_images(2, 0.3, 0))
    with pytest.raises(ValueError, match="at least 4"):
        det.fit(_images(3, 0.3, 0))
    with pytest.raises(ValueError, match="`score` must be one of"):
        AnomalyDetector(estimator=_FakeEstimator(), score="nope")
    for fpr in (1.5, 1.0, 0.0):  # open at both ends, as the CLI's --target-fpr
        with pytest.raises(ValueError, match=r"`target_fpr` must be a finite number in \(0.0, 1.0\)"):
            AnomalyDetector(estimator=_FakeEstimator(), target_fpr=fpr)
    with pytest.raises(ValueError, match="`seed` must be an int >= 0"):
        AnomalyDetector(estimator=_FakeEstimator(), seed=-1)
    with pytest.raises(TypeError, match="`binarize_seed` must be an int"):
        AnomalyDetector(estimator=_FakeEstimator(), binarize_seed=1.5)


def test_real_vae_flags_noise_images(digits):
    (x, _), (xt, _) = digits
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=4, seed=0)
    model.compile()
    model.fit(x, epochs=8, batch_size=32, verbose=0)
    noise = np.random.default_rng(0).random((100, 8, 8, 1)).astype(np.float32)
    det = AnomalyDetector(model, score="log_prob", num_samples=16).fit(xt[:200])
    normal_scores, noise_scores = det.score_samples(xt[200:]), det.score_samples(noise)
    assert evaluate(normal_scores, noise_scores)["auroc"] > 0.95
    np.testing.assert_array_equal(det.score_samples(xt[:5]), det.score_samples(xt[:5]))  # seeded
    assert np.mean(det.predict(xt[200:]) == -1) < 0.2


def test_detector_passes_progress_to_every_scoring_pass():
    calls = []

    estimator = _FakeEstimator()
    scores = estimator.scores

    def recording(x, outputs, num_samples=100, **kw):
        calls.append(kw["progress"])
        return scores(x, outputs, num_samples, **kw)

    estimator.scores = recording
    det = AnomalyDetector(estimator=estimator, score="typicality", progress=False).fit(_images(20, 0.3, 0))
    det.score_samples(_images(5, 0.3, 1))
    assert calls == [False, False, False]  # reference, calibration, new images
    with pytest.raises(TypeError, match="`progress`"):
        AnomalyDetector(estimator=_FakeEstimator(), progress="yes")
