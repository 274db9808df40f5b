"""GBC: class overlap measured by the Bhattacharyya coefficient of per-class Gaussians."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation
from .._dtypes import compute_dtype
from .._typing import Array, ArrayLike, DTypeLike
from ..linalg import matmul, pca_scores, principal_axes
from ..registry import register
from ..stats import FeatureStats, class_moments
from ..streaming import fold

__all__ = ["gbc"]

_FLOOR = 1e-4  # the reference's variance floor, tf.maximum(variance, 1e-4)
_GAUSSIANS = ("spherical", "diagonal")
_PAIR_BUDGET = 2**22  # elements of one chunk of the [c, c, d] pair differences


@jax.jit(static_argnames=("num_classes", "gaussian", "pca_dim"))
def _gbc(features, labels, width, *, num_classes, gaussian, pca_dim):
    x = features
    if pca_dim is not None:
        x = pca_scores(x, pca_dim, method="svd")  # [n, k]: no padded columns are left
        width = pca_dim
    counts, means, var = class_moments(x, labels, num_classes)
    return _gbc_moments(counts, means, var, width, gaussian=gaussian)


def _gbc_moments(counts, means, var, width, *, gaussian):
    """The score from class counts ``[c]``, means ``[c, d]`` and population variances ``[c, d]``."""
    c, d = means.shape
    dt = means.dtype
    var = jnp.maximum(var, _FLOOR)
    width = jnp.asarray(width, dt)
    if gaussian == "spherical":
        # mean over the true width: each zero-padded column has variance exactly 0 -> floor.
        spread = (jnp.sum(var, axis=1) - (d - width) * _FLOOR) / width  # [c]
        log_spread = jnp.log(spread)
    else:
        log_var = jnp.log(var)

    def row(i):
        # Bhattacharyya distances D_B(i, ·) [c]; padded columns add exactly 0 to either form.
        diff2 = (means[i][None, :] - means) ** 2  # [c, d]
        if gaussian == "spherical":
            avg = 0.5 * (spread[i] + spread)
            mahal = jnp.sum(diff2, axis=1) / avg
            logs = jnp.log(avg) - 0.5 * log_spread[i] - 0.5 * log_spread
        else:
            avg = 0.5 * (var[i][None, :] + var)
            mahal = jnp.sum(diff2 / avg, axis=1)
            logs = jnp.sum(jnp.log(avg) - 0.5 * log_var[i][None, :] - 0.5 * log_var, axis=1)
        return mahal / 8.0 + 0.5 * logs

    batch = max(1, min(c, _PAIR_BUDGET // max(1, c * d)))
    dist = jax.lax.map(row, jnp.arange(c), batch_size=batch)  # [c, c]
    present = counts > 0
    pair = present[:, None] & present[None, :] & ~jnp.eye(c, dtype=bool)
    return -jnp.sum(jnp.where(pair, jnp.exp(-dist), 0.0))


# ----------------------------------------------------------------------------- from statistics


def _safe_counts(stats):
    cnt = stats.class_counts
    return jnp.where(cnt > 0, cnt, 1.0)[:, None]


def _pca_basis(stats, k):
    """Top-``k`` eigenvectors ``[d, k]`` of the centred scatter (descending): the PCA basis."""
    return principal_axes(stats.scatter)[1][:, :k]


@jax.jit(static_argnames=("gaussian", "pca_dim"))
def _gbc_stats(stats, width, *, gaussian, pca_dim):
    counts = stats.class_counts
    if pca_dim is None:
        return _gbc_moments(
            counts, stats.class_means(), stats.class_sq / _safe_counts(stats), width,
            gaussian=gaussian,
        )
    v = _pca_basis(stats, pca_dim)
    means = matmul(stats.class_means() - stats.mean[None, :], v)  # [c, k] PCA scores of μ_c
    # diag(Vᵀ W_c V) / n_c: class variances along the principal directions.
    var = jnp.sum(matmul(stats.class_scatter, v) * v[None], axis=1) / _safe_counts(stats)
    return _gbc_moments(counts, means, var, pca_dim, gaussian=gaussian)


@jax.jit(static_argnames=("num_classes",))
def _sq_update(acc, x, y, w, class_means, basis, *, num_classes):
    r = x - class_means[y]
    if basis is not None:
        r = matmul(r, basis)
    return acc + jax.ops.segment_sum(r * r * w[:, None], y, num_segments=num_classes)


@jax.jit(static_argnames=("gaussian",))
def _gbc_second(stats, sq, basis, *, gaussian):
    # the same basis as the second pass projected on (eigenvectors are not unique in sign)
    means = matmul(stats.class_means() - stats.mean[None, :], basis)
    return _gbc_moments(stats.class_counts, means, sq / _safe_counts(stats), basis.shape[1],
                        gaussian=gaussian)


def _gbc_streamed(stats, second_pass, width, *, gaussian, pca_dim, chunk_size, check_inputs):
    name = "gbc"
    d, c = stats.num_features, stats.num_classes
    if pca_dim is not None and _validation.is_concrete(stats.count):
        n = int(round(float(np.asarray(stats.count))))
        true_d = int(width) if width is not None and _validation.is_concrete(width) else d
        if pca_dim > min(n, true_d):
            raise ValueError(
                f"{name}: pca_dim={pca_dim} must be at most min(n, d) = {min(n, true_d)} "
                f"(n={n}, d={true_d})"
            )
    w = d if width is None else width
    if pca_dim is None or stats.has_class_scatter:
        if stats.class_sq.shape != (c, d):
            raise ValueError(
                f"{name}: stats lack the per-class sums of squares class_sq [c, d]; compute them "
                "with tj.stream_stats / tj.feature_stats (classification labels)"
            )
        return _gbc_stats(stats, w, gaussian=gaussian, pca_dim=pca_dim)
    if second_pass is None:
        raise ValueError(
            f"{name}: pca_dim with stats= needs the per-class variances along the principal "
            "directions: compute the statistics with tj.stream_stats(..., class_scatter=True) "
            f"(c·d² floats) or pass second_pass= (the (features, labels) chunks again; c·pca_dim "
            "floats)"
        )
    dt = stats.scatter.dtype
    basis = jax.jit(_pca_basis, static_argnums=1)(stats, pca_dim)
    sq = fold(
        functools.partial(_sq_update, num_classes=c), jnp.zeros((c, pca_dim), dt), second_pass,
        args=(stats.class_means(), basis), name=name, width=d, num_classes=c, count=stats.count,
        dtype=dt, chunk_size=chunk_size, check_inputs=check_inputs,
    )
    return _gbc_second(stats, sq, basis, gaussian=gaussian)


@register(
    "gbc",
    tasks=("classification",),
    summary="minus the summed Bhattacharyya coefficients between per-class Gaussians",
    paper="Pándy et al., CVPR 2022",
    streams=True,
)
def gbc(
    features: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    *,
    stats: FeatureStats | None = None,
    second_pass=None,
    chunk_size: int | None = None,
    gaussian: str = "spherical",
    pca_dim: int | None = None,
    num_classes: int | None = None,
    width: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    check_inputs: bool = True,
) -> Array:
    r"""GBC: how little the classes overlap, as Gaussians fitted per class.

    Each class ``c`` is modelled as ``N(μ_c, diag(σ²_c))`` with the per-dimension population
    variance floored, ``σ²_c ← max(σ²_c, 10⁻⁴)`` (``gaussian="diagonal"``), or as a spherical
    Gaussian whose variance is the mean of those over the ``d`` dimensions (``"spherical"``).
    With ``σ̄ = (σ²_{c_1} + σ²_{c_2})/2`` the Bhattacharyya distance and the score are

    .. math::
        D_B(c_1, c_2) = \tfrac18 \sum_{k=1}^{d} \frac{(\mu_{c_1 k} - \mu_{c_2 k})^2}{\bar\sigma_k}
          + \tfrac12 \Bigl(\sum \log\bar\sigma - \tfrac12\sum\log\sigma^2_{c_1}
          - \tfrac12\sum\log\sigma^2_{c_2}\Bigr),
        \qquad
        \mathrm{GBC} = -\sum_{c_1}\sum_{c_2 \ne c_1} e^{-D_B(c_1, c_2)}

    where the log sums run over the ``d`` dimensions for diagonal Gaussians and are single scalar
    terms for spherical ones. Higher (closer to 0) is better.

    Note:
      Matches ``get_gbc_score`` of ``google-research/stable_transfer``: ordered pairs (each
      unordered pair counted twice), ``ddof=0`` variances, the floor applied per dimension before
      the spherical average, the spherical log terms not multiplied by ``d``. The paper's
      experiments first project on 64 principal components (``pca_reduction=64``): pass
      ``pca_dim=64``. Without PCA (the default, the reference metric itself) well-separated
      classes drive ``exp(−D_B)`` to 0 and the score to ``−0.0`` (ties). A class absent from the
      labels (only with an explicit ``num_classes``) is left out, as the reference iterates over
      the classes present. How the PCA is computed: ``docs/numerics.md``; what ``stats=`` needs:
      ``docs/streaming.md``.

    Args:
      features: ``[n, d]`` features.
      labels: ``[n]`` integer labels ``0..c-1``.
      stats: classification :class:`~transferjax.FeatureStats` in place of ``features, labels``.
      second_pass: with ``stats`` and ``pca_dim`` when ``stats`` has no ``class_scatter``: the
        ``(features, labels)`` chunks again (an iterable or a callable returning one).
      chunk_size: rows per jitted update of the second pass (default: the first chunk's size).
      gaussian: ``"spherical"`` (default, as the paper) or ``"diagonal"``.
      pca_dim: project on this many principal components first (paper: 64; default ``None``, no
        projection); at most ``min(n, d)``, like scikit-learn.
      num_classes: ``c``; required when ``labels`` are traced.
      width: true feature width when ``features`` are zero-padded (may be traced).
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.
      check_inputs: run the eager checks (skipped automatically for traced values).

    Returns:
      Scalar score ``<= 0`` (compute dtype). Higher is better.

    Raises:
      ValueError: malformed features or labels; an unknown ``gaussian``; ``pca_dim > min(n, d)``;
        both or neither of ``features, labels`` and ``stats``; ``stats`` with ``pca_dim`` but
        neither ``class_scatter`` nor ``second_pass``.
      TypeError: non-numeric features; float labels (no regression form); a non-integer
        ``pca_dim``.

    References:
      Pándy, Agostinelli, Uijlings, Ferrari, Mensink. Transferability Estimation using
      Bhattacharyya Class Separability. CVPR 2022 (arXiv:2111.12780).

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> y = np.arange(200) % 4
      >>> noise = np.random.default_rng(0).normal(size=(200, 8))
      >>> bool(tj.gbc(noise + 2 * np.eye(4, 8)[y], y) > tj.gbc(noise, y))
      True
    """
    name = "gbc"
    if gaussian not in _GAUSSIANS:
        raise ValueError(f"{name}: gaussian must be one of {_GAUSSIANS}, got {gaussian!r}")
    if pca_dim is not None:
        pca_dim = _validation.check_positive_int(pca_dim, name=name, arg="pca_dim")
    if stats is not None:
        _validation.check_stats(stats, name=name, features=features, labels=labels)
        return _gbc_streamed(
            stats, second_pass, width, gaussian=gaussian, pca_dim=pca_dim,
            chunk_size=chunk_size, check_inputs=check_inputs,
        )
    _validation.data_or_stats(features, labels, None, name=name)
    features, targets = _validation.prepare(
        features, labels, name=name, num_classes=num_classes, check_inputs=check_inputs,
        allow_regression=False, dtype=dtype, width=width,
    )
    y, c = targets.values, targets.num_classes
    n, d = (int(s) for s in np.shape(features))
    if pca_dim is not None:
        true_d = int(width) if width is not None and _validation.is_concrete(width) else d
        if pca_dim > min(n, true_d):
            raise ValueError(
                f"{name}: pca_dim={pca_dim} must be at most min(n, d) = {min(n, true_d)} "
                f"(n={n}, d={true_d})"
            )
    dt = compute_dtype(features, dtype)
    x = jnp.asarray(features, dt)
    w = d if width is None else width
    return _gbc(x, jnp.asarray(y), w, num_classes=c, gaussian=gaussian, pca_dim=pca_dim)
