import numpy as np
import pytest

from tfpvae.subsets import evenly_spaced, spread


@pytest.mark.parametrize(
    ("n", "limit", "expected"),
    [(10, 4, [0, 3, 6, 9]), (10, 10, list(range(10))), (3, 5, [0, 1, 2]), (7, 1, [0]), (0, 3, []), (5, 2, [0, 4])],
)
def test_evenly_spaced_small_cases(n, limit, expected):
    idx = evenly_spaced(n, limit)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, expected)


@pytest.mark.parametrize(("n", "limit"), [(10000, 1000), (10000, 3), (359, 200), (1001, 1000), (2, 2)])
def test_evenly_spaced_covers_the_range_with_distinct_near_even_steps(n, limit):
    idx = evenly_spaced(n, limit)
    assert len(idx) == min(n, limit) and idx[0] == 0 and idx[-1] == n - 1
    steps = np.diff(idx)
    assert steps.min() >= 1  # distinct and increasing
    spacing = (n - 1) / (len(idx) - 1)
    assert np.all(np.abs(steps - spacing) <= 1)  # rounding moves a step by at most one


def test_evenly_spaced_refuses_bad_arguments():
    with pytest.raises(ValueError, match="`limit` must be an int >= 1"):
        evenly_spaced(10, 0)
    with pytest.raises(ValueError, match="`n` must be an int >= 0"):
        evenly_spaced(-1, 3)
    with pytest.raises(TypeError, match="`limit`"):
        evenly_spaced(10, 2.5)


def test_spread_keeps_images_labels_and_indices_together():
    x = np.arange(20, dtype=np.float32).reshape(20, 1, 1, 1)
    y = np.arange(20) % 10
    xs, ys, idx = spread(x, y, 5)
    np.testing.assert_array_equal(idx, evenly_spaced(20, 5))
    np.testing.assert_array_equal(xs[:, 0, 0, 0], idx)
    np.testing.assert_array_equal(ys, idx % 10)
    assert spread(x, None, 50)[1] is None and len(spread(x, None, 50)[0]) == 20


def test_random_subset_is_sorted_distinct_seeded_and_whole_when_small():
    from tfpvae.subsets import random_subset

    a, b = random_subset(1000, 50, seed=3), random_subset(1000, 50, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == 50 and np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 1000
    assert not np.array_equal(a, random_subset(1000, 50, seed=4))
    np.testing.assert_array_equal(random_subset(7, 50, seed=0), np.arange(7))
