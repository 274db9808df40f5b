"""Plain NumPy/SciPy PACTran-Gaussian (float64), the bench baseline.

The reference's procedure (``calculate_pac_gauss``): centre the features, start the softmax head
at ``W₀ = 0.03·N(0, 1)``, ``b₀ = 0`` (seeded), minimise the regularised empirical risk with
SciPy's L-BFGS-B (``maxiter=100``, ``tol=1e-6``), then add the curvature penalty. Returns the
negated bound (higher is better), as ``transferjax.pactran`` does. ``maxiter``/``tol`` reproduce
the reference's capped run by default; large values give the converged value.
"""

from __future__ import annotations

import numpy as np

DESCRIPTION = "NumPy/SciPy float64: L-BFGS-B from a random start, maxiter 100, tol 1e-6"


def reference(
    features, labels, *, lda_factor=1.0, s2_factor=100.0, seed=0, maxiter=100, tol=1e-6
) -> float:
    import scipy.optimize
    import scipy.special

    x = np.array(features, dtype=np.float64)  # a copy: the reference centres its input in place
    x -= x.mean(axis=0, keepdims=True)
    y = np.asarray(labels).astype(np.int64)
    n, d = x.shape
    k = int(y.max()) + 1
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0
    rho = lda_factor * n

    def loss_and_grad(theta):
        theta = theta.reshape(d + 1, k)
        w, b = theta[:d], theta[d]
        z = x @ w + b
        lse = scipy.special.logsumexp(z, axis=1)
        # log(1 + 1e-10): the reference's Σ y·log(y + 1e-10) term of the cross-entropy
        loss = np.mean(lse - z[np.arange(n), y]) + np.log1p(1e-10) + 0.5 * np.sum(w * w) / rho
        r = (np.exp(z - lse[:, None]) - onehot) / n
        grad = np.concatenate([x.T @ r + w / rho, r.sum(0)[None]])
        return loss, grad.ravel()

    theta0 = np.zeros((d + 1, k))
    theta0[:d] = 0.03 * np.random.RandomState(seed).normal(size=(d, k))
    res = scipy.optimize.minimize(
        loss_and_grad,
        theta0.ravel(),
        jac=True,
        method="L-BFGS-B",
        tol=tol,
        options={"maxiter": maxiter, "maxfun": 100 * maxiter},
    )
    theta = res.x.reshape(d + 1, k)
    p = scipy.special.softmax(x @ theta[:d] + theta[d], axis=1)
    curvature = np.sum((np.sum(x * x, axis=1) + 1.0) * np.sum(p * (1.0 - p), axis=1))
    bound = res.fun + k * s2_factor / (2 * rho) * np.log(1.0 + rho * curvature / (d * k) + 1e-10)
    return -float(bound)
