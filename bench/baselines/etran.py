"""Plain NumPy ETran raw terms (float64), the bench baseline.

The classification term as the reference's LDA reduces to (its eigen-step keeps a full basis, so
the posterior is the nearest-class-mean softmax of ``−½‖x − μ_c‖² + log π_c``; the ``[n, c]``
squared distances come from ``‖x‖² − 2x·μ_c + ‖μ_c‖²``), and the energy term: the mean of the
``max(1, ⌊5n/1000⌋)`` lowest row-wise log-sum-exp values. Returns ``{"lda", "energy"}``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

DESCRIPTION = "NumPy float64, class means + [n, c] posteriors, row log-sum-exp + partition"


def reference(features, labels, percent: float = 0.5) -> dict:
    x = np.asarray(features, np.float64)
    y = np.asarray(labels)
    n = x.shape[0]
    c = int(y.max()) + 1
    counts = np.bincount(y, minlength=c).astype(np.float64)
    means = np.zeros((c, x.shape[1]))
    np.add.at(means, y, x)
    means /= counts[:, None]
    dist = (x * x).sum(1)[:, None] - 2.0 * x @ means.T + (means * means).sum(1)[None, :]
    logits = -0.5 * dist + np.log(counts / n)[None, :]
    logp = logits - logsumexp(logits, axis=1, keepdims=True)
    lda = float(np.exp(logp[np.arange(n), y]).mean())
    k = max(1, int(n * percent // 100))
    e = logsumexp(x, axis=1)
    energy = float(np.partition(e, k - 1)[:k].mean())
    return {"lda": lda, "energy": energy}
