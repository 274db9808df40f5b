"""Plain NumPy float64 TTA bound at fixed transforms (the baseline for bench_tta.py).

W1 per class is the exact LP (``scipy.optimize.linprog``, HiGHS) as the reference's ``ot.emd``;
τ is the deterministic max over all labels.
"""

import numpy as np


def _w1(cost):
    from scipy.optimize import linprog

    n, m = cost.shape
    rows = np.kron(np.eye(n), np.ones((1, m)))
    cols = np.kron(np.ones((1, n)), np.eye(m))
    res = linprog(cost.ravel(), A_eq=np.vstack([rows, cols]),
                  b_eq=np.r_[np.full(n, 1 / n), np.full(m, 1 / m)], bounds=(0, None))
    return res.fun


def class_w1_numpy(xs, hard, xt, yt, num_classes):
    """``[num_classes]`` exact W1 between the source points of hard label ``k`` and the target
    points of class ``k`` (0 where a side is empty)."""
    xs, xt = np.asarray(xs, np.float64), np.asarray(xt, np.float64)
    out = np.zeros(num_classes)
    for k in range(num_classes):
        a, b = xs[hard == k], xt[yt == k]
        if len(a) and len(b):
            cost = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
            out[k] = _w1(np.sqrt(np.maximum(cost, 0)))
    return out


def _softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def tta_bound_numpy(xs, ys, xt, yt, w, c, bmat):
    xs, xt, w, c, bmat = (np.asarray(a, np.float64) for a in (xs, xt, w, c, bmat))
    cs = w.shape[1]
    pi_s = np.bincount(ys, minlength=cs) / len(ys)
    logits = xs @ w + c
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    wsl = (lse - logits[np.arange(len(ys)), ys]).mean()  # D = π_S
    ce = -(pi_s * (bmat * np.log(bmat)).sum(0)).sum()
    hard = np.argmax(bmat[:, ys], 0)
    k = len(np.unique(hard))
    wd = class_w1_numpy(xs, hard, xt, yt, k).sum() / k
    tau = 0.0
    g = w.T @ w
    for z in (xs, xt):
        s = _softmax(z @ w + c)
        q = s @ bmat.T
        u = s[:, None, :] * (bmat[None] / q[:, :, None] - 1)
        tau = max(tau, np.sqrt(np.einsum("njk,kl,njl->nj", u, g, u).max()))
    return wsl + ce + tau * wd
