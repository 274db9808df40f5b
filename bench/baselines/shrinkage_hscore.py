"""Plain NumPy shrinkage H-score (float64), the bench baseline: the reference's steps.

Centre, Ledoit–Wolf shrunk covariance (scikit-learn's estimate, from its definition), the class-mean
covariance scaled by ``1 - α``, ``np.linalg.pinv`` (an SVD of a d×d matrix) and a trace.
"""

from __future__ import annotations

import numpy as np

from .hscore import class_mean_cov, ledoit_wolf

DESCRIPTION = "NumPy, Ledoit–Wolf + pinv (d×d SVD)"


def reference(f, y) -> float:
    x = np.asarray(f, np.float64)
    x = x - x.mean(0)
    y = np.asarray(y)
    alpha, cov = ledoit_wolf(x)
    cov_g = class_mean_cov(x, y)
    return float(np.trace(np.linalg.pinv(cov, rcond=1e-15) @ ((1 - alpha) * cov_g)))
