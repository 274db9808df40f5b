"""Plain NumPy PED dynamics (float64), shared by the ``ped_logme`` and ``ped_sfda`` baselines.

``dynamics`` follows the reference's loop literally: every step re-standardises all ``n`` rows,
recomputes the class means and radii, forms the ``c × c × d`` pairwise push and moves every row
(``O(n·d + c²·d)`` per step, the ``c × c × d`` tensors held in memory).
"""

from __future__ import annotations

import numpy as np

DESCRIPTION = "NumPy, the reference's loop: all n rows every step"


def _one_step(x, y, c, mean, std, *, time_step, nsigma, constant):
    z = (x - mean) / std
    onehot = np.zeros((len(y), c))
    onehot[np.arange(len(y)), y] = 1.0
    counts = onehot.sum(0)
    mu = (onehot.T @ z) / counts[:, None]
    var = (onehot.T @ (z - mu[y]) ** 2) / counts[:, None]
    radius = np.sqrt(var.sum(1))
    diff = mu[None, :, :] - mu[:, None, :]  # [a, b] = mu_b - mu_a
    dist = np.sqrt((diff**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.where(dist[..., None] > 0, diff / dist[..., None], 0.0)
    overlap = np.maximum(abs(nsigma) * (radius[:, None] + radius[None, :]) - dist, 0.0)
    length = np.minimum(0.5 * time_step**2 * constant * overlap, overlap)
    np.fill_diagonal(length, 0.0)
    delta = -(length[..., None] * unit).sum(1)
    return (z + delta[y]) * std + mean, float(np.abs(delta).sum())


def dynamics(
    x,
    y,
    *,
    reference=None,
    time_step=0.1,
    exit_ratio=0.5,
    nsigma=0.6,
    constant=1.0,
    eps=1e-3,
    max_steps=6,
    return_info=False,
):
    """Moved features (float64); with ``return_info`` also ``(steps accepted, P per step)``."""
    x = np.asarray(x)
    y = np.asarray(y)
    g = x if reference is None else np.asarray(reference)
    mean = g.mean(0)
    std = np.maximum(g.std(0), eps)
    c = int(y.max()) + 1
    cur = x.astype(np.float64)
    changes = []
    p0 = None
    steps = 0
    while steps < max_steps:
        cand, p = _one_step(cur, y, c, mean, std, time_step=time_step, nsigma=nsigma,
                            constant=constant)
        changes.append(p)
        if p0 is None:
            p0 = p
        if p0 > 0 and p / p0 > exit_ratio:
            cur = cand
            steps += 1
        else:
            break
    if return_info:
        return cur, steps, changes
    return cur
