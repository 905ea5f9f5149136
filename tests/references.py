"""Independent numpy references that tests compare the library against.

Plain float64 numpy, no TensorFlow: each function is the textbook formula, written once.
Test modules import them as `from references import ...` (pytest's default "prepend" import
mode puts tests/, which has no __init__.py, on sys.path).
"""

from __future__ import annotations

import numpy as np


def gaussian_kl(
    loc_q: np.ndarray,
    cov_q: np.ndarray,
    loc_p: np.ndarray | None = None,
    cov_p: np.ndarray | None = None,
) -> np.ndarray:
    """KL(N(loc_q, cov_q) || N(loc_p, cov_p)) in nats, the closed form, in float64.

    KL = 0.5 * (tr(S_p^-1 S_q) + (m_p - m_q)^T S_p^-1 (m_p - m_q) - d + log det S_p - log det S_q).

    Args:
        loc_q: mean of q, shape (..., d).
        cov_q: covariance of q, shape (..., d, d), symmetric positive definite.
        loc_p: mean of p, shape (..., d); None for zeros.
        cov_p: covariance of p, shape (..., d, d), symmetric positive definite; None for the identity.

    Returns:
        The KL of each pair, float64 of the leading shapes (...) broadcast together; e.g. loc_q of
        shape (n, d) with one shared cov_q of shape (d, d) gives shape (n,).
    """
    loc_q = np.asarray(loc_q, np.float64)
    cov_q = np.asarray(cov_q, np.float64)
    d = loc_q.shape[-1]
    loc_p = np.zeros(d) if loc_p is None else np.asarray(loc_p, np.float64)
    cov_p = np.eye(d) if cov_p is None else np.asarray(cov_p, np.float64)
    if not cov_q.shape[-2:] == cov_p.shape[-2:] == (d, d) or loc_p.shape[-1] != d:
        raise ValueError(f"shapes do not fit one dimension d={d}: {cov_q.shape}, {loc_p.shape}, {cov_p.shape}")
    sign_q, logdet_q = np.linalg.slogdet(cov_q)
    sign_p, logdet_p = np.linalg.slogdet(cov_p)
    if np.any(sign_q <= 0) or np.any(sign_p <= 0):
        raise ValueError("covariances must be positive definite")
    diff = (loc_p - loc_q)[..., None]  # (..., d, 1)
    trace = np.trace(np.linalg.solve(cov_p, cov_q), axis1=-2, axis2=-1)
    mahalanobis = (diff * np.linalg.solve(cov_p, diff)).sum(axis=(-2, -1))
    return 0.5 * (trace + mahalanobis - d + logdet_p - logdet_q)


def kl_to_standard_normal(loc: np.ndarray, scale_tril: np.ndarray) -> np.ndarray:
    """KL(N(loc, L L^T) || N(0, I)) in nats, per distribution, in float64.

    The KL of a full-covariance Gaussian posterior q(z|x) = N(loc, L L^T), as
    `tfd.MultivariateNormalTriL(loc, scale_tril)` holds it, to the standard normal prior:
    `gaussian_kl(loc, L @ L.T)`.

    Args:
        loc: mean, shape (..., d).
        scale_tril: Cholesky factor L of the covariance, shape (..., d, d), lower triangular with a
            non-zero diagonal.

    Returns:
        float64 of shape (...), the leading shapes broadcast together: (n,) for a batch of n posteriors.
    """
    tril = np.asarray(scale_tril, np.float64)
    return gaussian_kl(loc, tril @ np.swapaxes(tril, -1, -2))
