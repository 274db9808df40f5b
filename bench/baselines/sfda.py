"""Plain NumPy SFDA (float64), the bench baseline: the same math as ``tj.sfda``, written directly.

Stage 1 forms the within-class scatter, estimates the shrinkage with three rounds of the power
method, solves ``A W = Mᵀ`` for the regularised FDA classifier and takes its posteriors; ConfMix
mixes every sample towards the mean of the other classes by its softened true-class probability;
stage 2 repeats the classifier (same shrinkage) on the mixed features. The Fisher eigenvectors of
the reference cancel (``V Vᵀ = A⁻¹``), so a linear solve replaces the generalised eigenproblem.
"""

from __future__ import annotations

import numpy as np

DESCRIPTION = "NumPy float64, within-class scatter + two solves"


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _within_scatter(x, y, c):
    counts = np.bincount(y, minlength=c).astype(np.float64)
    means = np.zeros((c, x.shape[1]))
    np.add.at(means, y, x)
    means /= counts[:, None]
    resid = x - means[y]
    return resid.T @ resid / len(y), means, counts / len(y)


def _power_top_eig(a, rounds=3):
    v = a.sum(axis=1)
    for _ in range(rounds):
        t = a @ v
        u = t / np.linalg.norm(t)
        t = a @ u
        v = t / np.linalg.norm(t)
    return v @ a @ u


def _posteriors(x, y, c, shrinkage=None):
    sw, means, priors = _within_scatter(x, y, c)
    d = x.shape[1]
    if shrinkage is None:
        shrinkage = max(np.exp(-5.0 * _power_top_eig(sw)), 1e-10)
    a = (1.0 - shrinkage) * sw + shrinkage * np.trace(sw) / d * np.eye(d)
    coef = np.linalg.solve(a, means.T).T  # [c, d]
    intercept = -0.5 * np.sum(means * coef, axis=1) + np.log(priors)
    return _softmax(x @ coef.T + intercept), means, shrinkage


def reference(x, y) -> float:
    x = np.asarray(x, np.float64)
    y = np.asarray(y)
    n, c = len(y), int(y.max()) + 1
    prob, means, s = _posteriors(x, y, c)
    prob = _softmax(prob)  # the reference's "soften" step: a softmax of the probabilities
    others = (means.sum(axis=0, keepdims=True) - means) / (c - 1)
    a = prob[np.arange(n), y][:, None]
    mixed = a * x + (1.0 - a) * others[y]
    prob2, _, _ = _posteriors(mixed, y, c, shrinkage=s)
    return float(prob2[np.arange(n), y].mean())
