"""Plain NumPy NCTI raw terms (float64), the bench baseline.

The steps of the reference ``NCTI_Score``: a 64-component PCA, then a linear discriminant analysis
(scikit-learn 1.2.2's ``svd`` solver, or its ``eigen`` solver with shrinkage ``t`` when the top-32
PCA variances sum to less than ``ln 1e10``), its posterior probabilities, and three terms: the
nuclear norm of the centred discriminant coordinates (``seli``), the mean posterior of the true
class (``ncc``) and the log of the summed per-class nuclear norms of the posteriors (``vc``).

``pca="auto"`` chooses the PCA solver as scikit-learn 1.2.2 does (a randomized SVD when
``max(n, d) > 500`` and ``64 < 0.8·min(n, d)``, seeded as ``np.random.seed(1)`` would seed it;
an exact SVD otherwise), which is what the reference costs. ``pca="full"`` is the deterministic
configuration that ``transferjax.ncti_terms`` computes: an exact SVD and PCA variances at most
``1e-10·λ₁`` set to 0. Either way the number of components is clamped to ``min(64, n, d)``.
"""

from __future__ import annotations

import numpy as np

DESCRIPTION = (
    "NumPy float64: PCA to 64 (scikit-learn 1.2.2 solver rule, seeded randomized SVD) + LDA "
    "(svd or shrinkage-eigen branch) + per-class nuclear norms of the posteriors"
)

_LN_1E10 = float(np.log(1e10))


def _lu_q(a):
    """The permuted unit-lower factor ``P·L`` of ``a = P L U`` (partial pivoting)."""
    import scipy.linalg

    q, _ = scipy.linalg.lu(a, permute_l=True)
    return q


def _randomized_pca(xc, k, rng):
    """``(scores [n, k], variances [k])`` by scikit-learn 1.2.2's ``randomized_svd``."""
    n, d = xc.shape
    m = xc.T if n < d else xc  # its "auto" transpose: work on the tall side
    size = k + 10
    n_iter = 7 if k < 0.1 * min(n, d) else 4
    q = rng.normal(size=(m.shape[1], size))
    for _ in range(n_iter):
        q = _lu_q(m @ q)
        q = _lu_q(m.T @ q)
    q, _ = np.linalg.qr(m @ q)
    u_hat, s, vt = np.linalg.svd(q.T @ m, full_matrices=False)
    u = q @ u_hat
    if n < d:  # scores are U·S of the untransposed matrix: its U is this V
        scores = vt[:k].T * s[:k]
    else:
        scores = u[:, :k] * s[:k]
    return scores, s[:k] ** 2 / (n - 1)


def _full_pca(xc, k, floor):
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    var = s[:k] ** 2 / (xc.shape[0] - 1)
    scores = u[:, :k] * s[:k]
    if floor:
        live = var > floor * var[0]
        scores = np.where(live[None, :], scores, 0.0)
        var = np.where(live, var, 0.0)
    return scores, var


def _softmax(a):
    a = a - a.max(axis=1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis=1, keepdims=True)


def _class_moments(z, y, c):
    """Counts, priors, class means, the prior-weighted grand mean and the class residuals."""
    counts = np.bincount(y, minlength=c).astype(np.float64)
    priors = counts / z.shape[0]
    means = np.zeros((c, z.shape[1]))
    np.add.at(means, y, z)
    means /= counts[:, None]
    return counts, priors, means, priors @ means, z - means[y]


def _lda_svd(z, y, c, divisor):
    n, k = z.shape
    counts, priors, means, zbar, r = _class_moments(z, y, c)
    std = r.std(axis=0)
    std[std == 0] = 1.0
    _, s, vt = np.linalg.svd(np.sqrt(1.0 / divisor) * (r / std), full_matrices=False)
    rank = int(np.sum(s > 1e-4))
    w1 = (vt[:rank] / std).T / s[:rank]
    b = (np.sqrt(counts / (c - 1)) * (means - zbar).T).T @ w1
    _, sb, vtb = np.linalg.svd(b, full_matrices=False)
    rank_b = int(np.sum(sb > 1e-4 * sb[0]))
    w = w1 @ vtb.T[:, :rank_b]
    t = (z - zbar) @ w
    centres = (means - zbar) @ w
    logits = t @ centres.T - 0.5 * np.sum(centres**2, axis=1) + np.log(priors)
    return t[:, : min(c - 1, k)], logits


def _lda_eigen(z, y, c, shrink):
    n, k = z.shape
    counts, priors, means, zbar, r = _class_moments(z, y, c)
    within = r.T @ r / n
    dev = means - zbar
    between = (dev.T * priors) @ dev
    eye = np.eye(k)
    sw = (1 - shrink) * within + shrink * np.trace(within) / k * eye
    sb = (1 - shrink) * between + shrink * np.trace(between) / k * eye
    low = np.linalg.cholesky(sw)
    li = np.linalg.inv(low)
    ev, u = np.linalg.eigh(li @ sb @ li.T)
    v = li.T @ u[:, np.argsort(ev)[::-1]]
    t = z @ v[:, : min(c - 1, k)]
    prec_means = np.linalg.solve(sw, means.T)  # Σ_w⁻¹ μ_c as columns
    logits = z @ prec_means - 0.5 * np.sum(means.T * prec_means, axis=0) + np.log(priors)
    return t, logits


def reference(features, labels, *, pca="auto", n_components=64, divisor="n-c", seed=1):
    """NCTI raw terms ``{"seli", "ncc", "vc"}`` as Python floats (float64 throughout).

    ``divisor``: ``"n-c"`` (scikit-learn 1.2.2's LDA ``svd`` solver) or ``"n"`` (≥ 1.9).
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(labels).astype(np.int64)
    n, d = x.shape
    c = int(y.max()) + 1
    if n <= c:
        raise ValueError("ncti reference: n must exceed the number of classes")
    k = min(n_components, n, d)
    xc = x - x.mean(axis=0)
    solver = pca
    if pca == "auto":
        big = max(n, d) > 500
        solver = "randomized" if big and k < 0.8 * min(n, d) else "exact"
    if solver == "randomized":
        z, var = _randomized_pca(xc, k, np.random.RandomState(seed))
    else:
        z, var = _full_pca(xc, k, 1e-10 if pca == "full" else 0.0)
    shrink = max(np.exp(-np.sum(var[:32])), 1e-10)
    if shrink == 1e-10:
        t, logits = _lda_svd(z, y, c, n - c if divisor == "n-c" else n)
    else:
        t, logits = _lda_eigen(z, y, c, shrink)
    t = t - t.mean(axis=0, keepdims=True)
    seli = np.sum(np.linalg.svd(t, compute_uv=False))
    p = _softmax(logits)
    ncc = np.mean(p[np.arange(n), y])
    vc = np.log(sum(np.sum(np.linalg.svd(p[y == j], compute_uv=False)) for j in range(c)))
    return {"seli": float(seli), "ncc": float(ncc), "vc": float(vc)}
