"""Plain NumPy TransRate (float64), the bench baselines.

``method="slogdet"``: the canonical formula with one ``d×d`` ``slogdet`` per class (what a
straightforward implementation does). ``method="svd_rank"``: the official repository's eigen route
(``Long-Kai/TransRate`` ``pre_transrate``: an SVD of every ``d×d`` class Gram plus a
``matrix_rank``, i.e. a second SVD, then ``½ Σ log(1 + λ/ε)``), the reference's cost profile.
"""

from __future__ import annotations

import numpy as np

DESCRIPTION = "NumPy, one d×d slogdet per class"

VARIANTS = [
    {"label": "transrate_svd", "options": {"method": "svd"},
     "reference_options": {"method": "svd_rank"},
     "description": "NumPy, the official repo's route (SVD + matrix_rank of each d×d Gram)"},
]


def reference(f, y, *, eps: float = 1e-4, method: str = "slogdet") -> float:
    z = np.asarray(f, np.float64)
    z = z - z.mean(0)
    y = np.asarray(y)
    d = z.shape[1]
    k = int(y.max()) + 1

    def rate(a):
        g = a.T @ a / len(a)
        if method == "svd_rank":
            lam = np.linalg.svd(g, compute_uv=False)
            np.linalg.matrix_rank(g)  # the reference computes (and stores) it on every block
            return 0.5 * np.sum(np.log(1 + lam / eps))
        return 0.5 * np.linalg.slogdet(np.eye(d) + g / eps)[1]

    return float(rate(z) - sum(rate(z[y == c]) for c in range(k)) / k)
