"""Plain NumPy LogME (the reference's math, float64), the bench baseline.

``method="svd"`` takes a full thin SVD of the n×d data (what a straightforward implementation does);
``method="gram"`` decomposes FᵀF like the reference does when n > d.
"""

from __future__ import annotations

import numpy as np

DESCRIPTION = "NumPy, full SVD of the n×d data"

VARIANTS = [  # the same JAX call against the reference's own route (FᵀF when n > d)
    {"label": "logme (vs NumPy gram)", "reference_options": {"method": "gram"},
     "description": "NumPy, eigh of FᵀF (the reference's route when n > d)"},
]


def reference(f, y, *, method: str = "svd", max_iter: int = 11, tol: float = 1e-3) -> float:
    f = np.asarray(f, np.float64)
    n, d = f.shape
    if method == "svd" or n <= d:
        u, s, _ = np.linalg.svd(f, full_matrices=False)
    else:
        w, v = np.linalg.eigh(f.T @ f)
        s = np.sqrt(np.clip(w, 0, None))
        keep = s > 1e-10
        u = (f @ v[:, keep]) / s[keep]
        s = s[keep]
    lam = s**2
    y = np.asarray(y)
    if y.dtype.kind in "iu":
        targets = (y[:, None] == np.arange(y.max() + 1)).astype(np.float64)
    else:
        targets = y.reshape(n, -1).astype(np.float64)
    scores = []
    for col in targets.T:
        x2 = (u.T @ col) ** 2
        r0 = col @ col - x2.sum()
        alpha = beta = 1.0
        for _ in range(max_iter):
            t = alpha / beta
            gamma = np.sum(lam / (lam + t))
            m2 = np.sum(lam * x2 / (t + lam) ** 2)
            res2 = np.sum(x2 / (1 + lam / t) ** 2) + r0
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t <= tol:
                break
        ev = (
            d / 2 * np.log(alpha)
            + n / 2 * np.log(beta)
            - 0.5 * np.sum(np.log(alpha + beta * lam))
            - beta / 2 * res2
            - alpha / 2 * m2
            - n / 2 * np.log(2 * np.pi)
        )
        scores.append(ev / n)
    return float(np.mean(scores))
