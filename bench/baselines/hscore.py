"""Plain NumPy H-score (float64), the bench baseline, and the pieces the shrinkage H-score's
baseline reuses.

Both follow the reference's steps: covariance matrices, ``np.linalg.pinv`` (an SVD of a d×d
matrix) and a trace. The Ledoit–Wolf shrinkage is computed from its definition with matrix products
(``Σ‖x_i‖⁴`` from the row norms, ``‖S‖_F²`` from the covariance).
"""

from __future__ import annotations

import numpy as np

DESCRIPTION = "NumPy, np.cov + pinv (d×d SVD) as the reference"


def class_mean_cov(x, y):
    c = int(y.max()) + 1
    counts = np.bincount(y, minlength=c).astype(np.float64)
    sums = np.zeros((c, x.shape[1]))
    np.add.at(sums, y, x)
    means = sums / np.maximum(counts, 1)[:, None]
    dev = means - x.mean(0)
    return (dev.T * counts) @ dev / (len(y) - 1)  # cov of the class-mean matrix, ddof=1


def reference(f, y) -> float:
    x = np.asarray(f, np.float64)
    y = np.asarray(y)
    cov_f = np.cov(x, rowvar=False)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ class_mean_cov(x, y)))


def ledoit_wolf(x) -> tuple[float, np.ndarray]:
    """``(α, shrunk covariance)`` of already centred ``x`` (scikit-learn's estimate)."""
    n, d = x.shape
    s = x.T @ x / n
    mu = np.trace(s) / d
    delta = (np.sum(s * s) - 2 * mu * np.trace(s) + d * mu * mu) / d
    beta = (np.sum(np.sum(x * x, 1) ** 2) / n - np.sum(s * s)) / (d * n)
    beta = min(beta, delta)
    alpha = 0.0 if beta == 0 else beta / delta
    shrunk = (1 - alpha) * s
    shrunk[np.diag_indices(d)] += alpha * mu
    return alpha, shrunk
