"""Batch-level shift tests (`tfpvae.batch_tests`): the statistics against direct computations,
the permutation p-values against exact enumeration, their validity on many normal batches, power
on shifted batches, argument errors, and `tfpvae detect --batch-size`."""

from __future__ import annotations

import itertools
import json
import math
import shlex

import numpy as np
import pytest

from tfpvae.batch_tests import (
    TESTS,
    BatchShiftTest,
    median_bandwidth,
    mmd2_unbiased,
    permutation_p_values,
    rbf_kernel,
    typicality_statistic,
)


# --------------------------------------------------------------------------- statistics, numpy only
def test_mmd2_unbiased_matches_a_double_loop():
    rng = np.random.default_rng(1)
    x, y, bandwidth = rng.normal(size=(3, 2)), rng.normal(1.0, 1.0, size=(4, 2)), 0.7

    def k(a, b):
        return math.exp(-sum((ai - bi) ** 2 for ai, bi in zip(a, b, strict=True)) / (2 * bandwidth**2))

    xx = sum(k(x[i], x[j]) for i in range(3) for j in range(3) if i != j) / (3 * 2)
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / (4 * 3)
    xy = sum(k(a, b) for a in x for b in y) / (3 * 4)
    assert mmd2_unbiased(x, y, bandwidth) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    assert rbf_kernel(x, y, bandwidth)[1, 2] == pytest.approx(k(x[1], y[2]), rel=1e-12)


def test_median_bandwidth_is_the_median_pairwise_distance():
    codes = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # distances 3, 4, 5
    assert median_bandwidth(codes) == pytest.approx(4.0)
    assert median_bandwidth(np.ones((5, 3))) == 1.0  # identical codes: any width, 1.0


def test_typicality_p_value_matches_a_hand_count():
    # Pool {0, 1, 2, 10, 11}, batch {10, 11}: |10.5 - 1| = 9.5, and of the C(5, 2) = 10 ways to
    # pick 2 of the 5 as the batch only the observed one reaches 9.5 ({0, 1}: |0.5 - 23/3| = 7.17).
    reference, batch = np.array([0.0, 1.0, 2.0]), np.array([10.0, 11.0])
    assert typicality_statistic(batch, reference) == 9.5
    codes = np.zeros((5, 1))  # identical codes: MMD sees nothing, every relabelling ties
    p = permutation_p_values(batch, codes[:2], reference, codes[:3], 1.0, num_permutations=20000, seed=0)
    assert p["typicality"] == pytest.approx(0.1, abs=4 * math.sqrt(0.1 * 0.9 / 20000))
    assert p["mmd"] == 1.0 and p["either"] == pytest.approx(min(1.0, 2 * p["typicality"]))


def test_permutation_p_values_match_exact_enumeration():
    # Random relabellings estimate the exact permutation p-value: the fraction of all C(9, 3)
    # batches whose statistic, computed directly, is at least the observed one.
    rng = np.random.default_rng(5)  # a case where both exact p-values lie well inside (0, 1)
    nll, codes, bandwidth = rng.normal(size=9), rng.normal(size=(9, 2)), 0.9
    nll[6:] += 0.8
    codes[6:] += 0.7
    ref, obs = np.arange(6), np.arange(6, 9)
    num_permutations = 20000
    p = permutation_p_values(nll[obs], codes[obs], nll[ref], codes[ref], bandwidth, num_permutations, seed=0)
    for name, statistic, data in (
        ("typicality", typicality_statistic, nll),
        ("mmd", lambda a, b: mmd2_unbiased(a, b, bandwidth), codes),
    ):
        observed = statistic(data[obs], data[ref])
        subsets = list(itertools.combinations(range(9), 3))
        at_least = [
            statistic(data[list(s)], data[[i for i in range(9) if i not in s]]) >= observed - 1e-12 for s in subsets
        ]
        exact = float(np.mean(at_least))
        assert 0.1 < exact < 0.3, (name, exact)
        assert p[name] == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / num_permutations)), name


@pytest.mark.parametrize("batch_size", [5, 40])
def test_false_positive_rate_stays_at_alpha_on_normal_batches(batch_size):
    # A fresh reference and batch from one distribution per trial: the trials are independent,
    # so the number of rejections is binomial with rate <= alpha if the p-values are valid.
    rng = np.random.default_rng(batch_size)
    trials, alpha = 300, 0.05
    rejected = {name: 0 for name in TESTS}
    p_typicality = []
    for t in range(trials):
        nll, codes = rng.gamma(3.0, 1.0, size=100 + batch_size), rng.normal(size=(100 + batch_size, 3))
        ref, batch = slice(0, 100), slice(100, None)
        bandwidth = median_bandwidth(codes[ref])
        p = permutation_p_values(nll[batch], codes[batch], nll[ref], codes[ref], bandwidth, 99, seed=t)
        p_typicality.append(p["typicality"])
        for name in TESTS:
            rejected[name] += p[name] <= alpha
    tolerance = 3 * math.sqrt(alpha * (1 - alpha) / trials)  # 3 standard errors: 0.038
    for name in TESTS:
        assert rejected[name] / trials <= alpha + tolerance, (name, rejected)
    # Valid and not degenerate: the p-values spread over (0, 1] (a test that never rejects is valid too).
    assert 0.35 < np.mean(p_typicality) < 0.65 and rejected["typicality"] >= 3, (np.mean(p_typicality), rejected)


def test_a_shifted_batch_is_rejected_by_each_test():
    rng = np.random.default_rng(0)
    ref_nll, ref_codes = rng.normal(size=200), rng.normal(size=(200, 4))
    bandwidth = median_bandwidth(ref_codes)
    # Shifted likelihood only, then shifted codes only: each test sees its own kind of shift.
    p = permutation_p_values(rng.normal(1.5, 1.0, 20), rng.normal(size=(20, 4)), ref_nll, ref_codes, bandwidth, 199)
    assert p["typicality"] <= 0.01 and p["either"] <= 0.02
    codes = rng.normal(size=(20, 4)) + np.array([1.5, 0, 0, 0])
    p = permutation_p_values(rng.normal(size=20), codes, ref_nll, ref_codes, bandwidth, 199)
    assert p["mmd"] <= 0.01 and p["either"] <= 0.02


def test_permutation_p_values_refuse_bad_samples():
    nll, codes = np.zeros(5), np.zeros((5, 2))
    cases = [
        ((nll[:1], codes[:1], nll, codes, 1.0), "`batch_nll` must be an array \\(n,\\) with n >= 2"),
        ((nll, codes[:4], nll, codes, 1.0), "`batch_codes` must be an array \\(5, d\\)"),
        ((nll, codes, nll, np.zeros((5, 3)), 1.0), "same width; got 2 and 3"),
        ((nll, codes, nll, codes, 0.0), "`bandwidth` must be a finite number > 0.0"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            permutation_p_values(*args)
    with pytest.raises(ValueError, match="`num_permutations`"):
        permutation_p_values(nll, codes, nll, codes, 1.0, num_permutations=0)


# --------------------------------------------------------------------------- with a model
@pytest.fixture(scope="module")
def digits_halves(digits):
    (_, _), (x_test, _) = digits
    order = np.random.default_rng(0).permutation(len(x_test))
    return x_test[order[:150]], x_test[order[150:]]


@pytest.fixture(scope="module")
def fitted(trained_digits, digits_halves):
    return BatchShiftTest(trained_digits, num_samples=8, num_permutations=199, progress=False).fit(digits_halves[0])


def test_fit_scores_every_image_as_the_per_image_scores_do(fitted, trained_digits, digits_halves):
    from tfpvae.anomaly import compute_scores

    x = digits_halves[0]
    ids = [f"reference:{i}" for i in range(len(x))]  # the reference's own ids (batches use row indices)
    log_p = compute_scores(trained_digits.likelihood, x, "log_prob", num_samples=8, seed=0, ids=ids, progress=False)
    np.testing.assert_allclose(np.sort(fitted.reference_nll_), np.sort(-log_p["log_prob"]), rtol=1e-6)
    np.testing.assert_allclose(
        np.sort(fitted.reference_codes_[:, 0]), np.sort(trained_digits.encode(x).mean().numpy()[:, 0]), rtol=1e-5
    )
    assert fitted.typical_nll_ == pytest.approx(-log_p["log_prob"].mean())
    assert fitted.bandwidth_ == pytest.approx(median_bandwidth(fitted.reference_codes_))


def test_batches_of_normal_and_of_inverted_digits(fitted, digits_halves):
    x = digits_halves[1]
    p = fitted.test_batches(x, 10)
    assert set(p) == set(TESTS) and all(len(v) == len(x) // 10 for v in p.values())
    # Batch i of test_batches is the batch p_values sees when given those images alone... with
    # its own relabellings, seeded (seed, i): the first batch is the same call.
    first = fitted.p_values(x[:10])
    assert first == {name: p[name][0] for name in TESTS}
    assert np.median(p["either"]) > 0.2  # normal batches: p-values spread over (0, 1]
    inverted = fitted.test_batches(1.0 - x[:40], 10)
    assert np.all(inverted["either"] <= 0.05), inverted


def test_bad_arguments_raise_naming_the_argument(trained_digits, fitted, digits_halves):
    x = digits_halves[0]
    cases = [
        (dict(num_permutations=0), ValueError, "num_permutations"),
        (dict(reference_size=1), ValueError, "reference_size"),
        (dict(num_samples=2.5), TypeError, "num_samples"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(precision="half"), ValueError, "precision"),
    ]
    for params, error, name in cases:
        with pytest.raises(error, match=f"`{name}`"):
            BatchShiftTest(trained_digits, **params).fit(x)
    with pytest.raises(TypeError, match="`model`"):
        BatchShiftTest(object()).fit(x)
    with pytest.raises(ValueError, match="`x` must hold at least 4"):
        BatchShiftTest(trained_digits, num_samples=2).fit(x[:3])
    with pytest.raises(ValueError, match="not fitted"):
        BatchShiftTest(trained_digits).p_values(x[:5])
    with pytest.raises(ValueError, match="`batch_size`"):
        fitted.test_batches(x[:5], 1)
    with pytest.raises(ValueError, match="`batch_size` must be at most the number of images \\(5\\)"):
        fitted.test_batches(x[:5], 6)
    with pytest.raises(ValueError, match="`x` must hold a batch of at least 2"):
        fitted.p_values(x[:1])
    with pytest.raises(ValueError, match="`batches`"):
        fitted.batch_p_values(fitted.image_statistics(x[:4]), np.array([[0, 9]]))


# --------------------------------------------------------------------------- tfpvae detect --batch-size
def test_detect_batch_size_adds_the_batch_test_section(trained_digits_dir, capsys):
    from tfpvae.cli import main
    from tfpvae.datasets import load_split
    from tfpvae.model import load
    from tfpvae.subsets import spread

    base = f"detect --model {trained_digits_dir} --normal digits --anomalous digits --limit 20 --num-samples 8 --quiet"
    capsys.readouterr()
    assert main(shlex.split(base)) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(shlex.split(f"{base} --batch-size 5 --target-fpr 0.3")) == 0
    result = json.loads(capsys.readouterr().out)
    section = result.pop("batch_test")
    assert set(result) == set(plain)  # the rest of the report keeps its shape
    assert {k: v for k, v in result.items() if k not in ("scores", "target_fpr")} == {
        k: v for k, v in plain.items() if k not in ("scores", "target_fpr")
    }
    assert section["batch_size"] == 5 and section["alpha"] == 0.3
    assert section["num_normal_batches"] == 4 and section["num_anomalous_batches"] == 4
    assert section["num_reference"] == 20 and set(section["tests"]) == set(TESTS)
    # The same numbers, computed independently: the calibration half of the 40 normal images fits
    # the test; the other half and the 20 "anomalous" images are cut into batches of 5.
    x, _ = load_split("digits", "test")
    normal, anomalous = spread(x, None, 40)[0], spread(x, None, 20)[0]
    order = np.random.default_rng(0).permutation(40)
    test = BatchShiftTest(load(trained_digits_dir), num_samples=8, progress=False).fit(normal[order[:20]])
    p_normal, p_anomalous = test.test_batches(normal[order[20:]], 5), test.test_batches(anomalous, 5)
    for name in TESTS:
        got = section["tests"][name]
        assert got["fpr"] == np.mean(p_normal[name] <= 0.3), name
        assert got["power"] == np.mean(p_anomalous[name] <= 0.3), name
        assert got["median_p_normal"] == pytest.approx(np.median(p_normal[name])), name
        assert got["median_p_anomalous"] == pytest.approx(np.median(p_anomalous[name])), name


def test_detect_batch_size_errors_name_the_flag(trained_digits_dir, capsys):
    from tfpvae.cli import main

    base = f"detect --model {trained_digits_dir} --normal digits --anomalous digits --limit 20 --quiet"
    assert main(shlex.split(f"{base} --num-samples 2 --batch-size 30")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`--batch-size 30` is more than the 20 evaluated normal images" in err[0], err
    with pytest.raises(SystemExit):
        main(shlex.split(f"{base} --batch-size 1"))
    assert "argument --batch-size: expected an integer >= 2, got '1'" in capsys.readouterr().err
