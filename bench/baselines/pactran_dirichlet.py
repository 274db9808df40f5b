"""Plain NumPy PACTran-Dirichlet (float64), the bench baseline.

The reference's ten variational passes (``calculate_pac_dir``), except that the per-label sums of
``q`` are taken with ``np.add.at`` instead of the reference's ``[n, c, z]`` einsum (same numbers;
the einsum needs 2 GB at p1 and 16 GB at p2 with z = 1000). Returns the negated bound (higher is
better), as ``transferjax.pactran_dirichlet`` does.
"""

from __future__ import annotations

import numpy as np

DESCRIPTION = "NumPy/SciPy float64, 10 passes, per-label sums by np.add.at (z=1000)"


def reference(source_probs, labels, *, alpha=1.0) -> float:
    import scipy.special

    s = np.asarray(source_probs, np.float64)
    y = np.asarray(labels).astype(np.int64)
    n, z = s.shape
    v = int(y.max()) + 1
    a0 = alpha * np.bincount(y, minlength=v).astype(np.float64) / n + 1e-10
    log_s = np.log(s + 1e-10)
    q = s
    for _ in range(10):
        a = np.repeat(a0[:, None], z, axis=1)
        np.add.at(a, y, q)
        logits = log_s + scipy.special.digamma(a)[y] - scipy.special.digamma(a.sum(0))[None]
        log_q = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
        q = np.exp(log_q)
    log_c0 = scipy.special.gammaln(a0.sum()) - scipy.special.gammaln(a0).sum()
    log_c = scipy.special.gammaln(a.sum(0)) - scipy.special.gammaln(a).sum(0)
    return float((z * log_c0 - log_c.sum() - np.sum(q * (log_q - log_s))) / (n * v))
