"""ETran: energy-based transferability, two raw terms per model pooled across the models ranked."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _validation
from .._typing import Array, ArrayLike, DTypeLike
from ..linalg import matmul, safe_div
from ..registry import register

__all__ = ["etran_terms"]

_WEIGHTS = {"lda": 0.85, "energy": 0.15}  # the reference's combination of the min-max terms


def _num_lowest(n: int, percent: float) -> int:
    """``k = ⌊n·percent/100⌋`` samples (the reference's count), at least one."""
    return max(1, int(n * percent // 100))


@jax.jit(static_argnames=("num_classes", "k"))
def _etran_terms(features, labels, width, *, num_classes, k):
    n, d = features.shape
    dt = features.dtype
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dt)
    counts = jnp.sum(onehot, axis=0)
    # Nearest-class-mean posterior: softmax_c(−½‖x − μ_c‖² + log π_c). Distances are unchanged by
    # a common shift, so x and μ_c are taken about the global mean (smaller products in float32);
    # −½‖x‖² is common to every class and drops out of the softmax.
    x = features - jnp.mean(features, axis=0, keepdims=True)
    means = safe_div(matmul(onehot.T, x), counts[:, None])
    ok = counts > 0  # an empty class (possible only with num_classes given) is never predicted
    log_prior = jnp.where(ok, jnp.log(jnp.where(ok, counts / n, 1.0)), -jnp.inf)
    logits = matmul(x, means.T) - 0.5 * jnp.sum(means * means, axis=1)[None, :]
    logits = logits + log_prior[None, :]
    true = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    lda = jnp.mean(jnp.exp(true - jax.nn.logsumexp(logits, axis=1)))
    # Energy: log-sum-exp of each row's entries over the true width (zero padding is appended
    # after the true columns, as the hub pads), then the mean of the k lowest.
    cols = jnp.arange(d) < width
    e = jax.nn.logsumexp(jnp.where(cols[None, :], features, -jnp.inf), axis=1)
    energy = -jnp.mean(jax.lax.top_k(-e, k)[0])
    return {"lda": lda, "energy": energy}


@register(
    "etran",
    tasks=("classification",),
    summary="energy + class-mean posterior terms, min-max pooled across the ranked models",
    paper="Gholami et al., ICCV 2023",
    pool_weights=_WEIGHTS,
)
def etran_terms(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    width: ArrayLike | None = None,
    percent: float = 0.5,
    dtype: DTypeLike | None = None,
    check_inputs: bool = True,
) -> dict[str, Array]:
    r"""ETran's two raw terms for one model: the classification term and the energy term.

    With class means ``μ_c``, class frequencies ``π_c = n_c/n`` and ``k = max(1, ⌊n·p/100⌋)``
    (``p = percent``):

    .. math::
        \mathrm{lda} = \frac1n\sum_i \operatorname{softmax}_c\bigl(
          -\tfrac12\lVert x_i - \mu_c\rVert^2 + \log\pi_c\bigr)_{y_i},\qquad
        \mathrm{energy} = \frac1k\sum_{i \in \text{k lowest}} e_i,\quad
        e_i = \log\sum_{j=1}^{d} e^{x_{ij}}

    Both are higher-is-better. ETran is **pool-relative**: a model's score is
    ``0.85·ldã + 0.15·energỹ``, each term min-max normalised over the models ranked on the same
    target set (:func:`transferjax.pooling.combine_min_max`; :func:`transferjax.score_hub` does
    this for ``"etran"``), so the score lies in ``[0, 1]`` and changes with the pool.

    Note:
      Matches ``LDA_Score`` and ``Energy_Score`` of ``mgholamikn/ETran`` on penultimate features.
      The reference's regularised LDA reduces exactly to the nearest-class-mean posterior above
      (``docs/numerics.md``). The terms depend on the feature scale. For ``n < 200`` the
      reference's ``k = ⌊5n/1000⌋`` is 0 and its energy NaN (poisoning the pool); here
      ``k >= 1`` (identical for ``n >= 200``). A term equal for every model of the pool counts as
      0 with a warning (the reference divides by zero). The paper's SVD term for regression is
      not included. For zero-padded features the energy sums over the first ``width`` columns.
      Not streamed (``docs/streaming.md``).

    Args:
      features: ``[n, d]`` penultimate features (not logits).
      labels: ``[n]`` integer labels ``0..c-1``.
      num_classes: ``c``; required when ``labels`` are traced.
      width: true feature width when ``features`` are zero-padded (may be traced).
      percent: share of samples, in percent, whose lowest log-sum-exp values are averaged
        (static; default 0.5, the reference's).
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.
      check_inputs: run the eager checks (skipped automatically for traced values).

    Returns:
      ``{"lda": scalar, "energy": scalar}`` (compute dtype), the raw terms.

    Raises:
      ValueError: malformed features or labels; ``percent`` outside ``(0, 100]``.
      TypeError: non-numeric features; float labels (no regression form).

    References:
      Gholami, Akbari, Wang, Vahdat, Zhang, Yang. ETran: Energy-Based Transferability Estimation.
      ICCV 2023.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> y = np.arange(200) % 4
      >>> f = np.random.default_rng(0).normal(size=(200, 8)) + 3 * np.eye(4, 8)[y]
      >>> t = tj.etran_terms(f, y)
      >>> sorted(t), bool(t["lda"] > 0.8)
      (['energy', 'lda'], True)
    """
    name = "etran_terms"
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not (
        0 < percent <= 100
    ):
        raise ValueError(f"{name}: percent must be a number in (0, 100], got {percent!r}")
    x, targets = _validation.prepare(
        features, labels, name=name, num_classes=num_classes, check_inputs=check_inputs,
        allow_regression=False, dtype=dtype, width=width,
    )
    n, d = x.shape
    w = d if width is None else width
    return _etran_terms(
        x, targets.values, w, num_classes=targets.num_classes, k=_num_lowest(n, percent)
    )
