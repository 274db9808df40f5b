"""H-score and its Ledoit–Wolf shrinkage variant: how much of the feature covariance the class
means explain."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _validation
from .._dtypes import compute_dtype
from .._typing import Array, ArrayLike, DTypeLike
from ..linalg import (
    center,
    eigh_psd,
    gram,
    ledoit_wolf_shrinkage,
    matmul,
    safe_div,
    spectrum,
    spectrum_from_gram,
)
from ..registry import register
from ..stats import FeatureStats, between_class_targets

__all__ = ["hscore", "shrinkage_hscore"]

_RCOND = 1e-15  # the reference's np.linalg.pinv cutoff (relative to the largest eigenvalue)


def _rcond(dtype) -> float:
    """The reference's cutoff, never below what the compute dtype resolves (one ulp of λ_max)."""
    return max(_RCOND, float(jnp.finfo(dtype).eps))


@jax.jit(static_argnames=("num_classes",))
def _hscore(features, labels, *, num_classes):
    x = center(features)
    # tr(S⁺B) = ‖P T‖_F² depends on F only through its column space, so rescaling columns to unit
    # norm changes nothing but the conditioning of the Gram. Constant columns (including zero
    # padding) are set exactly to zero instead of being blown up from rounding residue.
    varying = jnp.max(features, axis=0) > jnp.min(features, axis=0)
    norm = jnp.sqrt(jnp.sum(x * x, axis=0))
    scale = jnp.where(varying & (norm > 0), norm, 1.0)
    x = jnp.where(varying[None, :], x / scale[None, :], 0.0)
    t = between_class_targets(labels, num_classes, x.dtype)
    spec = spectrum(x, t, rtol=_rcond(x.dtype))
    return jnp.sum(spec.proj * spec.proj)


@jax.jit(static_argnames=("num_classes",))
def _shrinkage_hscore(features, labels, width, *, num_classes):
    x = center(features)
    n, d = x.shape
    t = between_class_targets(labels, num_classes, x.dtype)
    if n >= d:
        # Gram path: (v_kᵀ Fᵀ t)² directly, no division by σ_k.
        w, v = eigh_psd(gram(x), rtol=_rcond(x.dtype))
        q = jnp.sum(matmul(v.T, matmul(x.T, t)) ** 2, axis=1)
    else:
        # Kernel path: the nonzero spectrum of FFᵀ; (v_kᵀ Fᵀ t)² = λ_k (u_kᵀ t)².
        spec = spectrum(x, t)
        w = spec.eigvals
        q = w * jnp.sum(spec.proj * spec.proj, axis=1)
    ell = w / n  # eigenvalues of the ddof=0 covariance S
    sq = jnp.sum(x * x, axis=1)
    alpha, mu = ledoit_wolf_shrinkage(ell, jnp.sum(sq * sq), n, width)
    e = (1.0 - alpha) * ell + alpha * mu  # eigenvalues of cov_α on the spectrum's directions
    keep = e > _rcond(x.dtype) * jnp.max(e)
    total = jnp.sum(jnp.where(keep, safe_div(q, e), 0.0))
    return (1.0 - alpha) * total / (n - 1)


def _between_columns(stats: FeatureStats) -> Array:
    """``[c, d]`` rows ``√n_c (μ_c − μ)`` (0 for an empty class): ``B = MᵀM``, ``Mᵀ = X_cᵀ T``."""
    counts = stats.class_counts
    return (stats.class_means() - stats.mean[None, :]) * jnp.sqrt(counts)[:, None]


@jax.jit
def _hscore_stats(stats):
    s = stats.scatter
    dtype = s.dtype
    diag = jnp.maximum(jnp.diagonal(s), 0.0)
    # A constant column has a scatter of rounding residue only: its spread is below a few ulps of
    # its mean (zero-padded columns: exactly 0). Such columns are dropped, as in the data path.
    ulp = 16.0 * float(jnp.finfo(dtype).eps) * jnp.abs(stats.mean)
    varying = diag > stats.count * ulp * ulp
    scale = jnp.where(varying, jnp.sqrt(jnp.where(varying, diag, 1.0)), 1.0)
    keep2 = varying[:, None] & varying[None, :]
    sn = jnp.where(keep2, s / (scale[:, None] * scale[None, :]), 0.0)
    mt = jnp.where(varying[:, None], _between_columns(stats).T / scale[:, None], 0.0)
    y_sq = jnp.zeros(mt.shape[1:], dtype)  # the residual is not used
    spec = spectrum_from_gram(sn, mt, y_sq, rtol=_rcond(dtype))
    return jnp.sum(spec.proj * spec.proj)


@jax.jit
def _shrinkage_hscore_stats(stats, width):
    n = stats.count
    w, v = eigh_psd(stats.scatter, rtol=_rcond(stats.scatter.dtype))
    q = jnp.sum(matmul(v.T, _between_columns(stats).T) ** 2, axis=1)
    ell = w / n
    alpha, mu = ledoit_wolf_shrinkage(ell, stats.fourth, n, width)
    e = (1.0 - alpha) * ell + alpha * mu
    keep = e > _rcond(ell.dtype) * jnp.max(e)
    total = jnp.sum(jnp.where(keep, safe_div(q, e), 0.0))
    return (1.0 - alpha) * total / (n - 1)


def _prepare(name, features, labels, num_classes, dtype, check_inputs, width=None):
    x, targets = _validation.prepare(
        features, labels, name=name, num_classes=num_classes, check_inputs=check_inputs,
        allow_regression=False, dtype=dtype, width=width,
    )
    return x, targets.values, targets.num_classes


@register(
    "hscore",
    tasks=("classification",),
    summary="trace of inverse feature covariance times class-mean covariance",
    paper="Bao et al., ICIP 2019",
    streams=True,
    scale_invariant=True,
)
def hscore(
    features: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    *,
    stats: FeatureStats | None = None,
    num_classes: int | None = None,
    width: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    check_inputs: bool = True,
) -> Array:
    r"""H-score: the class-mean covariance measured in the metric of the feature covariance.

    .. math::
        \mathcal{H}(F) = \operatorname{tr}\bigl(\operatorname{cov}(F)^{+}\,
          \operatorname{cov}(\mathbb{E}[F \mid Y])\bigr)
          = \operatorname{tr}\bigl(S^{+} B\bigr),
        \quad S = \textstyle\sum_i (x_i - \mu)(x_i - \mu)^\top,\;
        B = \textstyle\sum_c n_c (\mu_c - \mu)(\mu_c - \mu)^\top

    (the ``1/(n-1)`` of both covariances cancels). It lies in ``[0, c − 1]``; higher is better.

    Note:
      Matches ``h_score`` of ``thuml/Transfer-Learning-Library`` (``np.cov`` with ``ddof=1`` on
      the raw features, ``pinv`` with ``rcond=1e-15``). The cut-off, ``max(1e-15, eps)`` relative
      to the largest eigenvalue, is applied to the spectrum of the column-standardised features
      (the score is invariant to that rescaling): in float32, directions below ``~1e-7 λ_max``
      count as null, and constant (e.g. zero-padded) columns drop out exactly. With ``n ≤ d`` the
      score is exactly ``c − 1``, as in the reference. ``S⁺`` is never formed:
      ``docs/numerics.md``; what ``stats=`` needs: ``docs/streaming.md``.

    Args:
      features: ``[n, d]`` features.
      labels: ``[n]`` integer labels ``0..c-1``.
      stats: classification :class:`~transferjax.FeatureStats` in place of ``features, labels``.
      num_classes: ``c``; required when ``labels`` are traced.
      width: true width of zero-padded features (accepted for the hub; not needed).
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.
      check_inputs: run the eager checks (skipped automatically for traced values).

    Returns:
      Scalar score (compute dtype). Higher is better.

    Raises:
      ValueError: malformed features or labels; both or neither of ``features, labels`` and
        ``stats``.
      TypeError: non-numeric features; float labels (no regression form); ``stats`` not
        classification statistics.

    References:
      Bao, Li, Huang, Liang, Li, Tao, Wong. An Information-Theoretic Approach to Transferability
      in Task Transfer Learning. ICIP 2019.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> y = np.arange(200) % 4
      >>> noise = np.random.default_rng(0).normal(size=(200, 8))
      >>> bool(tj.hscore(noise + 2 * np.eye(4, 8)[y], y) > tj.hscore(noise, y))
      True
    """
    # padded columns are constant: the kernel drops them, no count is needed (width is checked)
    if stats is not None:
        _validation.check_stats(stats, name="hscore", features=features, labels=labels)
        return _hscore_stats(stats)
    _validation.data_or_stats(features, labels, None, name="hscore")
    x, y, c = _prepare("hscore", features, labels, num_classes, dtype, check_inputs, width)
    return _hscore(x, y, num_classes=c)


@register(
    "shrinkage_hscore",
    tasks=("classification",),
    summary="H-score with a Ledoit-Wolf shrinkage estimate of the feature covariance",
    paper="Ibrahim et al., ECML-PKDD 2022",
    streams=True,
    scale_invariant=True,
)
def shrinkage_hscore(
    features: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    *,
    stats: FeatureStats | None = None,
    num_classes: int | None = None,
    width: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    check_inputs: bool = True,
) -> Array:
    r"""Shrinkage H-score: H-score with the Ledoit–Wolf covariance estimate.

    With centred features, ``S = FᵀF/n`` (``ddof = 0``), the Ledoit–Wolf shrinkage ``α`` and
    ``μ̂ = tr(S)/d`` (see :func:`transferjax.linalg.ledoit_wolf_shrinkage`) and
    ``cov_g = B/(n − 1)`` the covariance of the class-mean matrix:

    .. math::
        \mathcal{H}_\alpha(F) = \operatorname{tr}\bigl(\operatorname{cov}_\alpha^{+}\,
          (1 - \alpha)\operatorname{cov}_g\bigr),\quad
        \operatorname{cov}_\alpha = (1 - \alpha) S + \alpha\hat\mu I

    Higher is better.

    Note:
      Matches ``regularized_h_score`` of ``thuml/Transfer-Learning-Library`` with scikit-learn's
      ``LedoitWolf(assume_centered=False)``: ``cov_α`` has ``ddof = 0`` while ``cov_g`` has
      ``ddof = 1`` (so the score is not exactly scale-free in ``n``); the ``pinv`` cut-off
      ``rcond = 1e-15`` is ``max(1e-15, eps)`` here. For zero-padded features ``d`` is
      ``width`` and the padded score equals the unpadded one. How it is computed:
      ``docs/numerics.md``; what ``stats=`` needs: ``docs/streaming.md``.

    Args:
      features: ``[n, d]`` features.
      labels: ``[n]`` integer labels ``0..c-1``.
      stats: classification :class:`~transferjax.FeatureStats` in place of ``features, labels``.
      num_classes: ``c``; required when ``labels`` are traced.
      width: true feature width when ``features`` are zero-padded (may be traced).
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.
      check_inputs: run the eager checks (skipped automatically for traced values).

    Returns:
      Scalar score (compute dtype). Higher is better.

    Raises:
      ValueError: malformed features or labels; both or neither of ``features, labels`` and
        ``stats``.
      TypeError: non-numeric features; float labels (no regression form); ``stats`` not
        classification statistics.

    References:
      Ibrahim, Ponomareva, Mazumder. Newer is Not Always Better: Rethinking Transferability
      Metrics, Their Peculiarities, Stability and Performance. ECML-PKDD 2022 (arXiv:2110.06893).
      Ledoit, Wolf. A well-conditioned estimator for large-dimensional covariance matrices.
      J. Multivariate Analysis, 2004.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> y = np.arange(200) % 4
      >>> noise = np.random.default_rng(0).normal(size=(200, 8))
      >>> bool(tj.shrinkage_hscore(noise + 2 * np.eye(4, 8)[y], y) > tj.shrinkage_hscore(noise, y))
      True
    """
    if stats is not None:
        name = "shrinkage_hscore"
        _validation.check_stats(stats, name=name, features=features, labels=labels)
        return _shrinkage_hscore_stats(stats, stats.num_features if width is None else width)
    _validation.data_or_stats(features, labels, None, name="shrinkage_hscore")
    x, y, c = _prepare("shrinkage_hscore", features, labels, num_classes, dtype, check_inputs, width)
    w = x.shape[1] if width is None else width
    return _shrinkage_hscore(x, y, w, num_classes=c)
