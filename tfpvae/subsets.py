"""Subsets of a split: evenly spread ones that cover every class, and seeded random ones.

Some splits are stored in class order (binarized_mnist's test split is sorted by digit, so its
first 1,000 images are all zeros): a subset taken from the front shows one class only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfpvae._validation import check_int


def evenly_spaced(n: int, limit: int) -> np.ndarray:
    """Indices of at most `limit` of `n` items, evenly spread from the first to the last.

    Args:
      n: number of items, int >= 0.
      limit: most indices to return, int >= 1.

    Returns:
      int64 array of min(n, limit) increasing indices in [0, n): all of them when
      n <= limit, else round(i * (n - 1) / (limit - 1)) for i < limit (0 and n - 1 included).

    Examples:
      >>> evenly_spaced(10, 4)
      array([0, 3, 6, 9])
    """
    n = check_int(n, "n", minimum=0)
    limit = check_int(limit, "limit")
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    if limit == 1:
        return np.zeros(1, dtype=np.int64)
    # Spacing (n - 1) / (limit - 1) > 1 here, so the rounded indices are distinct.
    return np.round(np.linspace(0, n - 1, limit)).astype(np.int64)


def random_subset(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of at most `limit` of `n` items.

    Args:
      n: number of items, int >= 0.
      limit: most indices to return, int >= 1.
      seed: seed of the draw.

    Returns:
      int64 array of min(n, limit) increasing indices in [0, n): all of them when n <= limit.
    """
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False)).astype(np.int64)


def spread(x: np.ndarray, y: Any, limit: int) -> tuple[np.ndarray, Any, np.ndarray]:
    """At most `limit` images of `x` (and their labels), evenly spread over the split.

    Args:
      x: images, array of shape (n, H, W, C).
      y: labels, array of shape (n,), or None.
      limit: most images to keep, int >= 1.

    Returns:
      (images, labels or None, indices into `x` of shape (m,)), m = min(n, limit).
    """
    idx = evenly_spaced(len(x), limit)
    return x[idx], None if y is None else y[idx], idx
