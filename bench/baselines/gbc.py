"""Plain NumPy GBC (the reference's math, float64), the bench baseline.

Per-class means and floored ``ddof=0`` variances, then the Bhattacharyya distance of every ordered
class pair in a Python loop, like the reference (``google-research/stable_transfer``), but in NumPy.
"""

from __future__ import annotations

import numpy as np

DESCRIPTION = "NumPy, Python loop over the c² class pairs"

VARIANTS = [
    {"label": "gbc_diagonal", "options": {"gaussian": "diagonal"},
     "reference_options": {"gaussian": "diagonal"},
     "description": "NumPy, Python loop over the c² pairs"},
]


def reference(f, y, *, gaussian: str = "spherical") -> float:
    f = np.asarray(f, np.float64)
    y = np.asarray(y)
    classes = np.unique(y)
    means, variances = [], []
    for c in classes:
        fc = f[y == c]
        means.append(fc.mean(0))
        variances.append(np.maximum(fc.var(0), 1e-4))
    if gaussian == "spherical":
        variances = [np.array(v.mean()) for v in variances]
    total = 0.0
    for i in range(len(classes)):
        for j in range(len(classes)):
            if i == j:
                continue
            avg = (variances[i] + variances[j]) / 2
            first = np.sum((means[i] - means[j]) ** 2 / avg) / 8
            second = np.sum(np.log(avg)) - 0.5 * np.sum(np.log(variances[i]))
            second -= 0.5 * np.sum(np.log(variances[j]))
            total += np.exp(-(first + 0.5 * second))
    return float(-total)
