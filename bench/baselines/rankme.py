"""Plain NumPy RankMe (float64), the bench baseline.

The reference's steps: centre the columns, take all singular values of the centred ``n×d`` matrix
(scikit-learn's ``PCA(svd_solver="full")`` is a full thin SVD), square them, keep the leading
``min(2048, n, d)``, normalise, add ``1e-7`` and exponentiate the entropy.
"""

from __future__ import annotations

import numpy as np

DESCRIPTION = "NumPy float64, SVD of the centred n×d data (the reference's PCA route)"


def spectrum(features) -> np.ndarray:
    """Eigenvalues of the centred covariance (squared singular values), descending, summing to 1."""
    x = np.asarray(features, np.float64)
    x = x - x.mean(axis=0)
    lam = np.linalg.svd(x, compute_uv=False) ** 2
    return lam / lam.sum()


def reference(features) -> float:
    lam = spectrum(features)[:2048]
    p = lam / lam.sum() + 1e-7
    return float(np.exp(-np.sum(p * np.log(p))))
