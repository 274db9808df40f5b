"""LogME: the log maximum evidence of a Bayesian linear model on the features."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .. import _validation
from .._dtypes import compute_dtype
from .._typing import Array, ArrayLike, DTypeLike
from ..linalg import Spectrum, spectrum, spectrum_from_gram
from ..loops import fixed_point
from ..registry import register
from ..stats import FeatureStats

__all__ = ["logme", "logme_evidence"]

_EPS = 1e-5  # the reference's additive guard in both updates


def logme_evidence(
    spec: Spectrum,
    n: Array | int,
    width: Array | int,
    *,
    max_iter: int = 11,
    tol: float = 1e-3,
) -> Array:
    r"""Per-target maximum log evidence ``L_t / n`` from a spectrum (the LogME kernel).

    Args:
      spec: ``σ_i² [k]``, ``x_{it} = u_iᵀ y_t [k, t]`` and the residual energy ``r_t``; zero
        eigenvalues beyond the reference's ``min(n, width)`` directions (padding, Gram of a wide
        matrix) must be exactly 0.
      n: number of samples (may be traced).
      width: the true feature width ``d`` (may be traced; padded hubs pass each model's width).
      max_iter, tol: the fixed point's cap and relative tolerance on ``t = α/β``.

    Returns:
      ``[t]`` evidences divided by ``n``.
    """
    lam = spec.eigvals[:, None]
    x2 = spec.proj**2
    r0 = spec.residual
    dtype = lam.dtype
    n = jnp.asarray(n, dtype)
    width = jnp.asarray(width, dtype)

    tiny = jnp.finfo(dtype).tiny
    live = lam > 0

    def step(state):
        alpha, beta, _, _ = state
        t = alpha / beta
        tt = t[None, :]
        # Zero eigenvalues contribute nothing to γ and mᵀm and their whole projection to the
        # residual; written with `where` so that all-zero features (α → 0) stay finite.
        den = jnp.where(live, lam + tt, 1.0)
        gamma = jnp.sum(jnp.where(live, lam / den, 0.0), axis=0)
        m2 = jnp.sum(jnp.where(live, lam * x2 / den**2, 0.0), axis=0)
        res2 = jnp.sum(jnp.where(live, x2 * (tt / den) ** 2, x2), axis=0) + r0
        alpha = jnp.maximum(gamma / (m2 + _EPS), tiny)
        beta = (n - gamma) / (res2 + _EPS)
        converged = jnp.abs(alpha / beta - t) / t <= tol
        return (alpha, beta, m2, res2), converged

    ones = jnp.ones(r0.shape, dtype)
    (alpha, beta, m2, res2), _, _ = fixed_point(step, (ones, ones, ones, ones), max_iter=max_iter)
    # Directions beyond the reference's min(n, width) are exact zeros: each adds log α to the sum.
    extra = spec.eigvals.shape[0] - jnp.minimum(n, width)
    logdet = jnp.sum(jnp.log(alpha[None, :] + beta[None, :] * lam), axis=0) - extra * jnp.log(alpha)
    evidence = (
        0.5 * width * jnp.log(alpha)
        + 0.5 * n * jnp.log(beta)
        - 0.5 * logdet
        - 0.5 * beta * res2
        - 0.5 * alpha * m2
        - 0.5 * n * math.log(2 * math.pi)
    )
    return evidence / n


@jax.jit(static_argnames=("num_classes", "regression", "max_iter"))
def _logme_features(features, labels, width, tol, *, num_classes, regression, max_iter):
    if regression:
        y = labels.astype(features.dtype)
    else:
        y = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)
    spec = spectrum(features, y)
    n = features.shape[0]
    return jnp.mean(logme_evidence(spec, n, width, max_iter=max_iter, tol=tol))


@jax.jit(static_argnames=("max_iter",))
def _logme_stats(stats, width, tol, *, max_iter):
    spec = spectrum_from_gram(stats.gram(), stats.targets_cross(), stats.targets_sq())
    ev = logme_evidence(spec, stats.count, width, max_iter=max_iter, tol=tol)
    return jnp.mean(ev)


@register(
    "logme",
    tasks=("classification", "regression"),
    summary="log maximum evidence of a Bayesian linear model",
    paper="You et al., ICML 2021",
    streams=True,
)
def logme(
    features: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    *,
    stats: FeatureStats | None = None,
    num_classes: int | None = None,
    width: ArrayLike | None = None,
    max_iter: int = 11,
    tol: float = 1e-3,
    dtype: DTypeLike | None = None,
    check_inputs: bool = True,
) -> Array:
    r"""LogME: mean log maximum evidence of Bayesian linear regression from features to targets.

    For each target column ``y`` (one-hot class indicators for integer labels; the columns of
    float targets for regression) with ``F = U diag(σ) Vᵀ`` it maximises over the prior precision
    ``α`` and noise precision ``β`` the evidence

    .. math::
        \mathcal{L}(\alpha, \beta) = \tfrac{d}{2}\log\alpha + \tfrac{n}{2}\log\beta
          - \tfrac12\sum_i\log(\alpha + \beta\sigma_i^2) - \tfrac{\beta}{2}\lVert F m - y\rVert^2
          - \tfrac{\alpha}{2} m^\top m - \tfrac{n}{2}\log 2\pi

    by the fixed point ``α ← γ/(mᵀm + 1e-5)``, ``β ← (n − γ)/(‖Fm − y‖² + 1e-5)``,
    ``γ = Σ σ_i²/(σ_i² + α/β)``, stopping when ``α/β`` moves by ``≤ tol`` relative or after
    ``max_iter`` steps, and returns the mean over targets of ``L/n``. Higher is better.

    Note:
      Matches ``thuml/LogME`` (``_fit_fixed_point``): features are not centred; ``d`` (not the
      rank) multiplies ``log α``; the evidence uses the final ``α, β`` with ``mᵀm`` and the
      residual of the last iteration; 11 iterations at most. Eigenvalues below ``eps·λ_max`` are
      set to 0 (rounding noise; they contribute ``log α`` as in the reference). All-zero features
      drive ``α`` to 0; it is floored at the smallest normal float, leaving the finite limit
      ``L = n/2·log β − β‖y‖²/2 − n/2·log 2π`` (``β = n/‖y‖²``) when ``n ≥ d`` (reference: NaN).

    Args:
      features: ``[n, d]`` features.
      labels: ``[n]`` integer labels ``0..c-1`` (classification) or ``[n]``/``[n, k]`` float
        targets (regression).
      stats: :class:`~transferjax.FeatureStats` in place of ``features, labels`` (exact: LogME
        needs only ``FᵀF``, ``FᵀY`` and ``‖y‖²``).
      num_classes: ``c``; required when ``labels`` are traced.
      width: true feature width when ``features`` are zero-padded (may be traced).
      max_iter, tol: fixed-point cap and relative tolerance (defaults 11 and 1e-3, the reference's).
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.
      check_inputs: run the eager checks (skipped automatically for traced values).

    Returns:
      Scalar score (compute dtype). Higher is better.

    Raises:
      ValueError: malformed features or targets; both or neither of ``features`` and ``stats``.
      TypeError: non-numeric or boolean inputs.

    References:
      You, Liu, Wang, Long. LogME: Practical Assessment of Pre-trained Models for Transfer
      Learning. ICML 2021. You et al., Ranking and Tuning Pre-trained Models, JMLR 2022
      (arXiv:2110.10545) for the fixed-point solver.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> rng = np.random.default_rng(0)
      >>> y = np.arange(100) % 3
      >>> f = rng.normal(size=(100, 8)) + y[:, None]
      >>> bool(tj.logme(f, y) > tj.logme(rng.normal(size=(100, 8)), y))
      True
    """
    name = "logme"
    _validation.data_or_stats(features, labels, stats, name=name)
    if stats is not None:
        if not isinstance(stats, FeatureStats):
            raise TypeError(f"{name}: stats must be a FeatureStats, got {type(stats).__name__}")
        w = stats.num_features if width is None else width
        return _logme_stats(stats, w, tol, max_iter=max_iter)
    x, targets = _validation.prepare(
        features, labels, name=name, num_classes=num_classes, check_inputs=check_inputs,
        dtype=dtype, width=width,
    )
    w = x.shape[1] if width is None else width
    return _logme_features(
        x,
        targets.values,
        w,
        tol,
        num_classes=targets.num_classes or 0,
        regression=targets.regression,
        max_iter=max_iter,
    )
