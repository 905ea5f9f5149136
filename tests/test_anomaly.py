"""Anomaly scores, detector thresholds and conformal p-values, and the detection metrics."""

import inspect
import itertools
import math
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV

import tfpvae
from tfpvae.anomaly import (
    CONTEXT_TEMPLATE,
    DETECTOR_SCORES,
    SCORES,
    AnomalyDetector,
    FlagsNothingWarning,
    compressed_bits,
    compute_scores,
    context_code_length,
    detection_metrics,
    detection_report,
    evaluate,
    fit_detectors,
    score_all,
)

_LOGIT = -2.0  # p(ink) = sigmoid(-2) for every pixel


def _known_estimator(**kwargs):
    """An estimator whose log p(x) is known in closed form: q(z|x) is the prior and p(x|z)
    ignores z, so every log-weight is log p(x) = ink log s(-2) + (16 - ink) log s(2).
    `kwargs` go to `LikelihoodEstimator`."""
    from tfpvae._keras import tf, tfd
    from tfpvae.likelihood import LikelihoodEstimator

    def encode(x):
        n = tf.shape(x)[0]
        return tfd.MultivariateNormalDiag(loc=tf.zeros([n, 1]), scale_diag=tf.ones([n, 1]))

    def decode(z):
        logits = tf.fill([tf.shape(z)[0], 4, 4, 1], _LOGIT)
        return tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), 3)

    prior = tfd.MultivariateNormalDiag(loc=[0.0], scale_diag=[1.0])
    return LikelihoodEstimator(encode, decode, prior, image_shape=(4, 4, 1), **kwargs)


def _known_log_prob(x):
    ink = np.asarray(x, np.float64).reshape(len(x), -1).sum(1)
    log_on, log_off = -np.log1p(np.exp(-_LOGIT)), -np.log1p(np.exp(_LOGIT))
    return ink * log_on + (16 - ink) * log_off


_FakeEstimator = _known_estimator


def _images(n, ink, seed):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 4, 4, 1)) < ink).astype(np.float32)


def test_detection_metrics_against_hand_computed_values():
    # Anomalous 0.0 ranks below all 3 normals, 1.5 below 2 of them: AUROC = 5/6.
    r = detection_metrics([3.0, 2.0, 1.0], [0.0, 1.5])
    assert r["auroc"] == pytest.approx(5 / 6)
    perfect = detection_metrics([5, 6, 7], [1, 2])
    assert perfect["auroc"] == 1.0 and perfect["auprc"] == 1.0 and perfect["fpr_at_95_tpr"] == 0.0
    assert detection_metrics([1, 2], [5, 6])["auroc"] == 0.0
    with pytest.raises(ValueError, match="`anomalous_scores`"):
        detection_metrics([1.0], [])
    with pytest.raises(ValueError, match="1 NaN"):
        detection_metrics([1.0, np.nan], [0.0])
    # An "impossible" image (-inf) ranks as the most anomalous.
    assert detection_metrics([1.0, 2.0], [-np.inf, 1.5])["auroc"] == pytest.approx(3 / 4)


def test_evaluate_is_a_deprecated_alias_of_detection_metrics():
    deprecation = (
        r"`tfpvae\.anomaly\.evaluate` is deprecated and will be removed in tfpvae 0\.3; "
        r"use `tfpvae\.anomaly\.detection_metrics\(normal_scores, anomalous_scores\)`"
    )
    with pytest.warns(FutureWarning, match=deprecation):
        r = evaluate([3.0, 2.0, 1.0], [0.0, 1.5])
    assert r == detection_metrics([3.0, 2.0, 1.0], [0.0, 1.5])
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="1 NaN"):
        evaluate(scores_normal=[1.0, np.nan], scores_anomalous=[0.0])  # the old keywords still work


@pytest.mark.slow  # over 7 s; the fast tier skips it, CI runs it
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


@pytest.mark.slow  # over 7 s; the fast tier skips it, CI runs it
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
        AnomalyDetector(estimator=_FakeEstimator(), compressor="gzip").fit(np.zeros((4, 4, 4, 1)))
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


@pytest.mark.slow  # over 7 s; the fast tier skips it, CI runs it
def test_detector_threshold_fpr_and_conformal_p_values():
    normal = _images(4000, 0.3, 1)
    det = AnomalyDetector(estimator=_FakeEstimator(), score="log_prob", target_fpr=0.1, seed=0).fit(normal)
    assert det.threshold_ == det.calibration_scores_[int(0.1 * 4001) - 1]  # the 400th of 4,000
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


@pytest.mark.parametrize("n", [4, 18, 19, 20, 57, 1000])
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.29])
def test_predict_flags_exactly_the_images_whose_p_value_is_at_most_target_fpr(n, alpha):
    rng = np.random.default_rng(n)
    calibration, new = np.round(rng.normal(size=n), 1), np.round(rng.normal(size=5000), 1)  # with ties
    det = AnomalyDetector(estimator=object(), score="log_prob", target_fpr=alpha)._calibrate(
        None, {"log_prob": calibration}
    )
    det.score_samples = lambda x: new
    np.testing.assert_array_equal(det.predict(None) == -1, det.p_values(None) <= alpha)
    assert (det.threshold_ == -np.inf) == (1 / (n + 1) > alpha)  # then no p-value is that small


def test_a_float32_target_fpr_and_infinite_scores_keep_predict_and_p_values_in_step():
    rng = np.random.default_rng(5)
    for n in range(1, 120):  # 0.04 in float32 is below 0.04: p = 1/25 is not <= it
        det = AnomalyDetector(estimator=object(), score="log_prob", target_fpr=np.float32(0.04))
        det._calibrate(None, {"log_prob": np.round(rng.normal(size=n), 1)})
        det.score_samples = lambda x: np.round(rng.normal(size=500), 1)
        new = det.score_samples(None)
        det.score_samples = lambda x, new=new: new
        np.testing.assert_array_equal(det.predict(None) == -1, det.p_values(None) <= np.float32(0.04))
    # 12 of 200 calibration scores -inf (statistics that failed): the threshold is -inf, and not
    # for want of images; no warning, and a margin of 0 (not NaN) for a -inf score.
    calibration = np.r_[np.full(12, -np.inf), rng.normal(size=188)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        det = AnomalyDetector(estimator=object(), score="log_prob")._calibrate(None, {"log_prob": calibration})
        det.score_samples = lambda x: np.array([-np.inf, -3.0, 0.0])
        assert det.threshold_ == -np.inf and not det.flags_nothing_
        np.testing.assert_array_equal(det.decision_function(None), [0.0, np.inf, np.inf])
        np.testing.assert_array_equal(det.predict(None), [1, 1, 1])


def test_fewest_calibration_images_is_where_the_smallest_p_value_reaches_target_fpr():
    from tfpvae.anomaly import _fewest_calibration_images

    for alpha in [1 / 49, 0.05, 0.1, 0.04, np.float32(0.04), 0.3, 0.5, 0.999, *np.random.default_rng(6).random(200)]:
        fewest = _fewest_calibration_images(alpha)
        assert 1.0 / (fewest + 1.0) <= float(alpha) and (fewest == 0 or 1.0 / fewest > float(alpha)), alpha
    assert _fewest_calibration_images(1 / 49) == 48 and _fewest_calibration_images(0.05) == 19


def test_fit_warns_when_its_detector_can_flag_nothing():
    normal = _images(30, 0.3, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AnomalyDetector(estimator=_FakeEstimator(), score="log_prob", target_fpr=0.05).fit(normal[:18])
        AnomalyDetector(estimator=_FakeEstimator(), score="log_prob", target_fpr=0.05).fit(normal[:19])
        fit_detectors(_FakeEstimator(), normal[:9], ("log_prob",), target_fpr=0.1)  # 1/10: enough
        fit_detectors(_FakeEstimator(), normal[:8], ("log_prob", "rate"), target_fpr=0.1)
    assert [(w.category, w.filename) for w in caught] == [(FlagsNothingWarning, __file__)] * 3  # the caller's line
    assert [str(w.message) for w in caught] == [
        "The 'log_prob' detector flags no image: with 18 calibration images no p-value can be as small as "
        "`target_fpr`=0.05 (the smallest is 1/19); this target_fpr needs at least 19 calibration images.",
        *[f"The {name!r} detector flags no image: with 8 calibration images no p-value can be as small as "
          "`target_fpr`=0.1 (the smallest is 1/9); this target_fpr needs at least 9 calibration images."
          for name in ("log_prob", "rate")],
    ]  # fmt: skip


def test_the_fpr_threshold_keeps_the_false_positive_rate_with_few_calibration_images():
    """A quantile of 20 calibration scores flagged about 1.8 times `target_fpr` (0.093 for 0.05)."""
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(400):  # normal scores N(0, 1): a threshold t flags the share Phi(t)
        det = AnomalyDetector(estimator=object(), score="log_prob", target_fpr=0.05)
        det._calibrate(None, {"log_prob": rng.normal(size=20)})
        rates.append(0.5 * (1 + math.erf(det.threshold_ / math.sqrt(2))))
    # The lowest of 20: 1/21 in expectation; the mean of 400 has a standard error of 0.0023.
    assert np.mean(rates) == pytest.approx(1 / 21, abs=0.008)


def test_contamination_threshold_and_typicality():
    normal = _images(2000, 0.3, 4)
    det = AnomalyDetector(estimator=_FakeEstimator(), score="log_prob", threshold="contamination", contamination=0.2)
    det.fit(normal)
    assert np.mean(det.calibration_scores_ < det.threshold_) == pytest.approx(0.2, abs=0.05)
    typ = AnomalyDetector(estimator=_FakeEstimator(), score="typicality").fit(normal)
    assert typ.typical_nll_ == pytest.approx(-_known_log_prob(np.full((1, 16), 0.3))[0], rel=0.05)
    # Only typicality (and combined) hold images back for their reference; the others calibrate on all.
    assert len(det.calibration_scores_) == 2000 and len(typ.calibration_scores_) == 1000
    # Too little ink is atypical too: typicality flags it, raw likelihood prefers it.
    empty = np.zeros((10, 4, 4, 1), np.float32)
    assert np.all(typ.predict(empty) == -1)
    assert np.all(AnomalyDetector(estimator=_FakeEstimator(), score="log_prob").fit(normal).predict(empty) == 1)


def test_detector_errors():
    det = AnomalyDetector(estimator=_FakeEstimator())
    with pytest.raises(NotFittedError, match="AnomalyDetector is not fitted yet"):
        det.predict(_images(2, 0.3, 0))
    with pytest.raises(ValueError, match="at least 4"):
        det.fit(_images(3, 0.3, 0))
    with pytest.raises(ValueError, match=r"`x` images must have shape \(4, 4, 1\)"):
        det.fit(np.zeros((5, 8, 8, 1)))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"score": "nope"}, "`score` must be one of 'combined'"),
        ({"num_samples": 0}, "`num_samples` must be an int >= 1; got 0"),
        ({"num_samples": "8"}, "`num_samples` must be an int >= 1; got '8'"),
        ({"threshold": "top"}, "`threshold` must be one of 'fpr', 'contamination'; got 'top'"),
        # open at both ends, as the CLI's --target-fpr
        *[({"target_fpr": fpr}, r"`target_fpr` must be a finite number in \(0.0, 1.0\)") for fpr in (1.5, 1.0, 0.0)],
        ({"contamination": 0.6}, r"`contamination` must be a finite number in \(0.0, 0.5\]; got 0.6"),
        ({"calibration_fraction": 0}, r"`calibration_fraction` must be a finite number in \(0.0, 1.0\]"),
        ({"seed": -1}, "`seed` must be an int >= 0"),
        ({"binarize_seed": 1.5}, "`binarize_seed` must be an int"),
        ({"compressor": "gzip"}, "`compressor` must be one of 'context', 'zlib'"),
        ({"progress": "yes"}, "`progress` must be True, False or None"),
        ({"estimator": None}, "`model` is None: pass a trained `model` or an `estimator`"),
        ({"estimator": None, "model": object()}, "`model` must be a tfpvae.VAE"),
        *[
            ({"estimator": bad}, rf"`estimator` must be a tfpvae.LikelihoodEstimator .* got {name}\. Pass a")
            for bad, name in (("log_prob", "str"), (np.zeros(3), "ndarray"))
        ],
    ],
)
def test_init_stores_parameters_and_fit_refuses_invalid_ones(params, message):
    params = {"estimator": _FakeEstimator(), **params}
    det = AnomalyDetector(**params)  # scikit-learn's rule: __init__ stores, fit checks
    for name, value in params.items():
        assert getattr(det, name) is value
    assert not hasattr(det, "threshold_") and not hasattr(det, "estimator_")
    with pytest.raises(ValueError, match=message) as raised:
        det.fit(_images(8, 0.3, 0))
    assert isinstance(raised.value, TypeError)  # a wrong type is a TypeError too, as in scikit-learn
    assert not hasattr(det, "threshold_")


def test_get_params_set_params_round_trip():
    est = _FakeEstimator()
    det = AnomalyDetector(estimator=est, score="typicality", num_samples=3, seed=7)
    names = list(inspect.signature(AnomalyDetector).parameters)
    params = det.get_params()
    assert list(params) == sorted(names)
    assert params["estimator"] is est and params["score"] == "typicality" and params["num_samples"] == 3
    assert params["model"] is None and params["target_fpr"] == 0.05 and params["seed"] == 7
    # Every parameter back in, unchanged; then changed by set_params, which returns the detector.
    assert AnomalyDetector(**params).get_params() == params
    assert det.set_params(score="elbo", target_fpr=0.2, threshold="contamination") is det
    assert det.get_params() == {**params, "score": "elbo", "target_fpr": 0.2, "threshold": "contamination"}
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        det.set_params(nope=1)
    # A refit after set_params learns afresh: no typical NLL left over from a typicality fit.
    x = _images(40, 0.3, 3)
    det.set_params(score="typicality", threshold="fpr").fit(x)
    assert det.typical_nll_ is not None and len(det.calibration_scores_) == 20
    det.set_params(score="log_prob").fit(x)
    assert det.typical_nll_ is None and len(det.calibration_scores_) == 40
    np.testing.assert_allclose(det.calibration_scores_, np.sort(_known_log_prob(x)), rtol=1e-5)


def test_clone_shares_the_model_and_forgets_the_fit(trained_digits, digits):
    (_, _), (xt, _) = digits
    det = AnomalyDetector(trained_digits, score="complexity", num_samples=4, target_fpr=0.1, seed=3, progress=False)
    det.fit(xt[:40])
    copy = clone(det)
    # The very same Keras model: never deep-copied (scikit-learn's default for a non-estimator
    # parameter, which a tfpvae.VAE refuses), so the copy shares its weights and traced graph.
    assert copy.model is trained_digits and copy is not det
    assert copy.get_params() == det.get_params()
    assert not any(hasattr(copy, a) for a in ("estimator_", "threshold_", "calibration_scores_", "typical_nll_"))
    copy.fit(xt[:40])
    assert copy.estimator_ is det.estimator_ is trained_digits.likelihood
    assert copy.threshold_ == det.threshold_
    np.testing.assert_array_equal(copy.calibration_scores_, det.calibration_scores_)
    est = _FakeEstimator()
    assert clone(AnomalyDetector(estimator=est, seed=5)).estimator is est


@pytest.mark.slow  # over 7 s; the fast tier skips it, CI runs it
def test_grid_search_picks_the_best_custom_score(trained_digits, digits):
    (_, _), (xt, _) = digits
    # 120 normal test digits and 60 digits shifted one pixel to the right (anomalies): y = +1 / -1.
    x = np.concatenate([xt[:120], np.roll(xt[120:180], 1, axis=2)])
    y = np.r_[np.ones(120, int), -np.ones(60, int)]
    # Each fold calibrates on normal images only and is scored on the other normals and half the anomalies.
    folds = [
        (np.arange(0, 60), np.r_[60:120, 120:150]),
        (np.arange(60, 120), np.r_[0:60, 150:180]),
    ]

    def auroc(detector, x, y):  # the custom scorer: AUROC, anomalies as the positive class
        return detection_metrics(detector.score_samples(x[y == 1]), detector.score_samples(x[y == -1]))["auroc"]

    grid = {"score": ["log_prob", "rate", "complexity"], "num_samples": [1, 4]}
    search = GridSearchCV(
        AnomalyDetector(trained_digits, progress=False), grid, scoring=auroc, cv=folds, refit=False, error_score="raise"
    )
    search.fit(x, y)
    # By hand: each candidate fitted on each fold's normal images, its mean AUROC on the test parts.
    by_hand = {}
    for params in search.cv_results_["params"]:
        fold_scores = []
        for train, test in folds:
            detector = AnomalyDetector(trained_digits, progress=False, **params).fit(x[train])
            fold_scores.append(auroc(detector, x[test], y[test]))
        by_hand[tuple(sorted(params.items()))] = np.mean(fold_scores)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], list(by_hand.values()), rtol=1e-12)
    ranked = sorted(by_hand.values(), reverse=True)
    assert ranked[0] > ranked[1]  # one best candidate, so the choice is a real one
    assert search.best_params_ == dict(max(by_hand, key=by_hand.get))
    assert search.best_score_ == pytest.approx(ranked[0])


@pytest.mark.slow  # over 7 s; the fast tier skips it, CI runs it
def test_real_vae_flags_noise_images(digits):
    (x, _), (xt, _) = digits
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=4, seed=0)
    model.compile()
    model.fit(x, epochs=8, batch_size=32, verbose=0)
    noise = np.random.default_rng(0).random((100, 8, 8, 1)).astype(np.float32)
    det = AnomalyDetector(model, score="log_prob", num_samples=16).fit(xt[:200])
    normal_scores, noise_scores = det.score_samples(xt[200:]), det.score_samples(noise)
    assert detection_metrics(normal_scores, noise_scores)["auroc"] > 0.95
    np.testing.assert_array_equal(det.score_samples(xt[:5]), det.score_samples(xt[:5]))  # seeded
    assert np.mean(det.predict(xt[200:]) == -1) < 0.2


@pytest.mark.filterwarnings("ignore::tfpvae.anomaly.FlagsNothingWarning")  # a few images: thresholds unused
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
    assert calls == [False, False]  # the fit images (reference and calibration at once), new images


def _counting(estimator):
    """`estimator` with a list of the outputs each `scores` pass (one set of k draws per image) computes."""
    passes, scores = [], estimator.scores

    def counted(x, outputs, num_samples=100, **kw):
        passes.append(tuple(outputs))
        return scores(x, outputs, num_samples, **kw)

    estimator.scores = counted
    return estimator, passes


def _assert_same_fit(a, b):
    assert a.get_params() == b.get_params() and a.estimator_ is b.estimator_
    assert a.threshold_ == b.threshold_ and a.typical_nll_ == b.typical_nll_
    np.testing.assert_array_equal(a.calibration_scores_, b.calibration_scores_)
    if a.score == "combined":  # the same density and reference p-values
        assert a.combined_.references_.keys() == b.combined_.references_.keys()
        for name, reference in a.combined_.references_.items():
            np.testing.assert_array_equal(reference, b.combined_.references_[name])


@pytest.mark.slow  # over 7 s; the fast tier skips it, CI runs it
def test_fit_detectors_equal_detectors_fitted_one_by_one(trained_digits, digits):
    (_, _), (xt, _) = digits
    x_fit, x_new = xt[:41], xt[41:60]  # odd: the typicality split rounds
    settings = dict(num_samples=4, seed=3, target_fpr=0.1, calibration_fraction=0.4, progress=False)
    detectors = fit_detectors(trained_digits, x_fit, **settings)
    assert list(detectors) == list(DETECTOR_SCORES)  # default: every score the model gives
    for name, detector in detectors.items():
        alone = AnomalyDetector(trained_digits, score=name, **settings).fit(x_fit)
        _assert_same_fit(detector, alone)
        assert detector.model is trained_digits and detector.score == name
        np.testing.assert_array_equal(detector.score_samples(x_new), alone.score_samples(x_new))
    typicality = detectors["typicality"]
    assert len(typicality.calibration_scores_) == round(0.4 * 41) == 16
    # The calibration scores are what score_samples gives those images: each is keyed by its row in x_fit.
    order = np.random.default_rng(3).permutation(41)
    np.testing.assert_array_equal(np.sort(typicality.score_samples(x_fit)[order[:16]]), typicality.calibration_scores_)
    log_p = detectors["log_prob"].score_samples(x_fit)
    assert typicality.typical_nll_ == pytest.approx(-log_p[order[16:]].mean(), rel=1e-12)
    # score_all: every detector's score_samples, from one pass.
    together = score_all(detectors, x_new)
    assert list(together) == list(detectors)
    for name, detector in detectors.items():
        np.testing.assert_array_equal(together[name], detector.score_samples(x_new))


def test_fit_detectors_score_all_and_report_score_each_image_set_once():
    est, passes = _counting(_FakeEstimator())
    normal, fresh, heavy = _images(40, 0.3, 5), _images(30, 0.3, 6), _images(20, 0.6, 7)
    detectors = fit_detectors(est, normal, ("log_prob", "typicality", "rate"), num_samples=2, target_fpr=0.2)
    assert passes == [("log_prob", "rate")]  # one pass for all three: typicality reads log_prob
    assert [d.estimator for d in detectors.values()] == [est] * 3
    for name, detector in detectors.items():
        _assert_same_fit(
            detector, AnomalyDetector(estimator=est, score=name, num_samples=2, target_fpr=0.2).fit(normal)
        )
    passes.clear()
    scores = score_all(detectors, fresh)
    assert passes == [("log_prob", "typicality", "rate")]
    np.testing.assert_allclose(scores["log_prob"], _known_log_prob(fresh), rtol=1e-5)
    np.testing.assert_allclose(
        scores["typicality"], -np.abs(-_known_log_prob(fresh) - detectors["typicality"].typical_nll_), rtol=1e-5
    )
    passes.clear()
    report = detection_report(detectors, fresh, heavy)
    assert len(passes) == 2  # the normal and the anomalous images, once each
    anomalous = score_all(detectors, heavy)
    for name, detector in detectors.items():
        t = detector.threshold_
        assert report[name] == {
            **detection_metrics(scores[name], anomalous[name]),
            "threshold": t,
            "fpr_at_threshold": np.mean(detector.predict(fresh) == -1),
            "tpr_at_threshold": np.mean(anomalous[name] < t),
        }
    # Heavier ink is less likely: log_prob and typicality catch it, rate (always 0) cannot.
    assert report["log_prob"]["auroc"] > 0.9 and report["log_prob"]["tpr_at_threshold"] > 0.5
    assert report["rate"]["auroc"] == 0.5


@pytest.mark.filterwarnings("ignore::tfpvae.anomaly.FlagsNothingWarning")  # a few images: thresholds unused
def test_fit_detectors_and_score_all_refuse_what_they_cannot_share():
    est, x = _FakeEstimator(), _images(12, 0.3, 8)
    with pytest.raises(TypeError, match="fit_detectors sets `score` itself"):
        fit_detectors(est, x, score="rate")
    with pytest.raises(ValueError, match="`score` must be one of"):
        fit_detectors(est, x, ("log_prob", "waic"))
    with pytest.raises(ValueError, match="`target_fpr`"):
        fit_detectors(est, x, "rate", target_fpr=2.0)
    assert list(fit_detectors(est, x, "rate")) == ["rate"]  # one name, not its letters
    a = AnomalyDetector(estimator=est, seed=1).fit(x)
    for other, setting in (
        (AnomalyDetector(estimator=est, seed=2), "seed"),
        (AnomalyDetector(estimator=est, seed=1, num_samples=5), "num_samples"),
        (AnomalyDetector(estimator=_FakeEstimator(), seed=1), "estimator_"),
    ):
        with pytest.raises(ValueError, match=f"`detectors` must share `{setting}`"):
            score_all({"a": a, "b": other.fit(x)}, x)
    typical = [AnomalyDetector(estimator=est, score="typicality", seed=s).fit(x) for s in (1, 4)]
    typical[1].seed = 1  # same scoring settings, but a different reference: two typical NLLs
    with pytest.raises(ValueError, match="different `typical_nll_`"):
        score_all(dict(enumerate(typical)), x)
    with pytest.raises(NotFittedError):
        score_all({"a": a, "b": AnomalyDetector(estimator=est, seed=1)}, x)
    with pytest.raises(ValueError, match="`detectors` is empty"):
        score_all({}, x)
    with pytest.raises(ValueError, match="`scores` is empty"):
        fit_detectors(est, x, ())
    # A plain autoencoder: by default only the score it gives; a likelihood score is refused.
    autoencoder = _known_estimator(defines_likelihood=False)
    assert list(fit_detectors(autoencoder, x)) == ["distortion"]
    with pytest.raises(ValueError, match="`log_prob` needs a VAE; this model is a plain autoencoder"):
        fit_detectors(autoencoder, x, ("distortion", "log_prob"))
    with pytest.raises(ValueError, match="plain autoencoder"):
        AnomalyDetector(estimator=autoencoder).fit(x)


def test_zlib_complexity_without_a_seed_binarises_with_the_seed_it_draws(trained_digits, digits, monkeypatch):
    """seed=None draws one seed for every pass: the zlib complexity binarised with seed 0 and
    drew its log p(x) with another, random, seed."""
    (x, _), _ = digits
    estimator = trained_digits.estimator()
    drawn = int(np.random.default_rng(123).integers(2**31))
    monkeypatch.setattr(np.random, "default_rng", lambda *a: np.random.Generator(np.random.PCG64(123)))
    unseeded = compute_scores(estimator, x[:6], ("complexity",), num_samples=4, seed=None, compressor="zlib")
    seeded = compute_scores(estimator, x[:6], ("complexity",), num_samples=4, seed=drawn, compressor="zlib")
    np.testing.assert_array_equal(unseeded["complexity"], seeded["complexity"])
