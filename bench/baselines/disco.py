"""Plain NumPy DISCO (the reconstruction of shared/spec/disco.md, float64), the bench baseline.

Thin SVD of the centred features, rank by NumPy's ``matrix_rank`` rule, ``n_groups`` contiguous
groups of singular values, a nearest-centroid accuracy (classification) or R² (regression) per
group, weighted by the group's share of the singular values. A Python loop over groups, the
straightforward way to write it.
"""

from __future__ import annotations

import numpy as np

DESCRIPTION = "NumPy, thin SVD of the n×d data, loop over groups"

VARIANTS = [{"label": "disco-svd", "options": {"method": "svd"}, "reference": None}]


def reference(f, y, *, n_groups: int = 10, center: bool = True, ncc: str = "acc") -> float:
    f = np.asarray(f, np.float64)
    if center:
        f = f - f.mean(axis=0)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    k = int(np.sum(s > s[0] * max(n, d) * np.finfo(np.float64).eps))
    blocks = np.array_split(np.arange(k), min(n_groups, k))
    total = s[:k].sum()
    y = np.asarray(y)
    score = 0.0
    for idx in blocks:
        z = u[:, idx] * s[idx]
        if y.dtype.kind in "iu":
            classes, yi = np.unique(y, return_inverse=True)
            means = np.stack([z[yi == c].mean(axis=0) for c in range(len(classes))])
            dist = (z**2).sum(1)[:, None] - 2 * z @ means.T + (means**2).sum(1)[None, :]
            if ncc == "acc":
                task = np.mean(dist.argmin(axis=1) == yi)
            else:
                logits = -dist - (-dist).max(axis=1, keepdims=True)
                p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
                task = np.mean(p[np.arange(n), yi])
        else:
            t = y.reshape(n, -1).astype(np.float64)
            tc = t - t.mean(axis=0)
            design = np.c_[np.ones(n), z]
            coef, *_ = np.linalg.lstsq(design, t, rcond=None)
            resid = ((t - design @ coef) ** 2).sum(axis=0)
            tot = (tc**2).sum(axis=0)
            r2 = np.where(tot > 0, 1 - resid / np.where(tot > 0, tot, 1), 0.0)
            task = r2.mean()
        score += s[idx].sum() / total * task
    return float(score)
