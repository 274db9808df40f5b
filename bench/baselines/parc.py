"""Plain NumPy PARC (float64), the bench baseline.

The reference's steps (``dbolya/parc``): standardise the columns, ``np.corrcoef`` between the
samples, the upper triangles of ``1 − corr`` for the features and for the exact same/different
class dissimilarity, and ``scipy.stats.spearmanr`` of the two (a global ranking of all
``n(n − 1)/2`` pairs). ``dims`` reduces by exact PCA first (each component's largest-magnitude
loading positive). Memory is several ``n×n`` float64 arrays: cases above ``MAX_ROWS`` are skipped.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

DESCRIPTION = "NumPy/SciPy, np.corrcoef + spearmanr over all n(n-1)/2 pairs as the reference"

MAX_ROWS = 5_000  # p2 (20000 samples): 2·10⁸ pairs, ~10 GB of float64 for corrcoef and ranks

VARIANTS = [
    {"label": "parc_dims32", "options": {"dims": 32}, "reference_options": {"dims": 32},
     "description": "NumPy/SciPy, exact PCA (thin SVD) to 32 components, then as above"},
]


def _pca(x, dims):
    xc = x - x.mean(0)
    k = min(dims, *x.shape)
    vt = np.linalg.svd(xc, full_matrices=False)[2]
    vt = vt[:k]
    pick = vt[np.arange(k), np.argmax(np.abs(vt), axis=1)]
    vt = vt * np.where(pick < 0, -1.0, 1.0)[:, None]
    return xc @ vt.T


def reference(f, y, *, dims=None) -> float:
    x = np.asarray(f, np.float64)
    y = np.asarray(y)
    if dims is not None:
        x = _pca(x, dims)
    sd = x.std(0)
    sd[sd == 0] = 1.0
    z = (x - x.mean(0)) / sd
    d_feat = 1.0 - np.corrcoef(z)
    upper = np.triu_indices(len(y), 1)
    # 1 − corr of the one-hot rows is 0 within a class and one constant across: only the order
    # matters to Spearman, so the exact binary dissimilarity stands in for it (no rounding ties).
    d_label = (y[upper[0]] != y[upper[1]]).astype(np.float64)
    rho = scipy.stats.spearmanr(d_feat[upper], d_label).statistic
    return float(100.0 * rho)
