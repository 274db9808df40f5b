"""Plain NumPy α-ReQ (float64), the bench baseline.

The reference's spectrum (see ``rankme.py`` here: a full SVD of the centred data), then the
weighted least-squares power-law fit of ``log λ_r`` on ``[−log r, 1]`` over ranks 11..100 with
weights ``1/r``, solved through the normal equations as the reference does. Returns the registered
score ``−|α − 1|``.
"""

from __future__ import annotations

import numpy as np

from .rankme import spectrum

DESCRIPTION = "NumPy float64, SVD of the centred n×d data + weighted least-squares fit; −|α − 1|"


def exponent(features, fit_range=(10, 100)) -> float:
    lam = spectrum(features)
    lo, hi = fit_range
    if lam.size < hi:
        raise ValueError(f"alpha_req baseline: needs min(n, d) >= {hi}, got {lam.size}")
    r = np.arange(lo + 1, hi + 1)
    x = np.stack([-np.log(r), np.ones(r.size)], axis=1)
    w = (1.0 / r.astype(np.float32)).astype(np.float64)[:, None]
    y = np.log(lam[lo:hi])
    coef = np.linalg.solve(x.T @ (w * x), (w * x).T @ y)
    return float(coef[0])


def reference(features, alpha0: float = 1.0) -> float:
    return -abs(exponent(features) - alpha0)
