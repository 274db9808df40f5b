"""DISCO: transferability from the distribution of spectral components (reconstruction)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation
from .._typing import Array, ArrayLike, DTypeLike
from ..linalg import HIGHEST, center, gram, kernel_gram, matmul, principal_axes, safe_div
from ..registry import register
from ..stats import FeatureStats, class_moments
from ..streaming import fold

__all__ = ["disco"]

_NCC = ("acc", "prob")
_METHODS = ("gram", "svd")


# ----------------------------------------------------------------------------- spectrum


def _ritz_svd(x: Array, v: Array, floor: float) -> tuple[Array, Array, Array]:
    """Refine an orthonormal basis ``v [d, p]`` from a Gram ``eigh`` to SVD accuracy.

    ``Z = x v`` has nearly orthogonal columns. With ``W = Z diag(1/‖z_j‖) = Q L`` (Cholesky of the
    well-conditioned ``WᵀW ≈ I``, i.e. a CholeskyQR of ``Z``), ``Z = Q R`` where ``R = Lᵀ diag(‖z_j‖)``
    is a small ``p×p`` matrix whose SVD ``R = U_r Σ V_rᵀ`` gives the singular values of ``x`` and
    its right singular vectors ``v V_r`` with the accuracy of an SVD of ``x`` itself (``eps·σ₁``
    absolute) instead of the Gram's ``eps·σ₁²``. Columns with ``‖z_j‖ <= floor`` (noise of the
    Gram) are left out. Falls back to the unrefined basis if the Cholesky fails.

    Returns ``(σ [p] descending, Z' = x v V_r [n, p], v V_r)``.
    """
    z = matmul(x, v)
    s = jnp.sqrt(jnp.sum(z * z, axis=0))
    keep = s > floor
    w = jnp.where(keep[None, :], z / jnp.where(keep, s, 1.0)[None, :], 0.0)
    both = keep[:, None] & keep[None, :]
    b = jnp.where(both, gram(w), jnp.eye(s.shape[0], dtype=s.dtype))
    lower = jnp.linalg.cholesky(b)
    r = lower.T * jnp.where(keep, s, 0.0)[None, :]
    _, sig, vrt = jnp.linalg.svd(r)
    ok = jnp.all(jnp.isfinite(lower)) & jnp.all(jnp.isfinite(sig))
    order = jnp.argsort(-s)
    sig = jnp.where(ok, sig, s[order])
    rot = jnp.where(ok, vrt.T, jnp.eye(s.shape[0], dtype=s.dtype)[:, order])
    return sig, matmul(z, rot), matmul(v, rot)


def _components(x: Array, width, method: str) -> tuple[Array, Array, Array]:
    """Spectral components of ``x [n, d]``: ``σ`` descending, ``Z = U diag(σ)`` and the rank mask.

    ``method="gram"`` decomposes ``xᵀx`` (``n >= d``) or ``x xᵀ`` (``n < d``) with one ``eigh`` and
    refines the basis to SVD accuracy with a ``p×p`` SVD (:func:`_ritz_svd`, ``p = min(n, d)``);
    ``method="svd"`` takes the thin SVD of ``x``. Components count only if ``σ_i`` exceeds NumPy's
    ``matrix_rank`` tolerance ``σ₁·max(n, width)·eps`` and, on the Gram route, the Gram's
    resolution ``σ₁·√eps`` (below it a direction of ``xᵀx`` is rounding noise).
    """
    n, d = x.shape
    dtype = x.dtype
    eps = float(jnp.finfo(dtype).eps)
    if method == "svd":
        u, s, _ = jnp.linalg.svd(x, full_matrices=False)
        z = u * s[None, :]
        floor = 0.0
    else:
        floor = math.sqrt(eps)
        if n >= d:
            w, v = jnp.linalg.eigh(gram(x))
            top = jnp.sqrt(jnp.maximum(w[-1], 0.0))
            s, z, _ = _ritz_svd(x, v, floor * top)
        else:
            w, u = jnp.linalg.eigh(kernel_gram(x))
            top = jnp.sqrt(jnp.maximum(w[-1], 0.0))
            s, _, u = _ritz_svd(x.T, u, floor * top)
            z = u * s[None, :]
    top = s[0]
    rule = jnp.maximum(jnp.asarray(n, dtype), jnp.asarray(width, dtype)) * eps
    tol = top * jnp.maximum(rule, floor)
    valid = (s > tol) & (top > 0)
    return s, z, valid


def _groups(k: Array, n_groups: int, size: int) -> tuple[Array, Array, Array]:
    """Contiguous groups of the first ``k`` components, sized like ``np.array_split(range(k), G)``.

    ``G = min(n_groups, k)``. Returns the component indices ``idx [n_groups, S]`` of each group
    (clipped to ``0..size-1``), their mask ``[n_groups, S]`` and the group id of every component
    ``[size]`` (``n_groups`` for components beyond ``k``). ``S`` is a static bound on the group size.
    """
    bound = -(-size // min(n_groups, size))
    g_count = jnp.maximum(jnp.minimum(n_groups, k), 1)
    q = jnp.maximum(k // g_count, 1)
    rem = k % g_count
    big = rem * (q + 1)
    g = jnp.arange(n_groups)
    start = jnp.where(g < rem, g * (q + 1), big + (g - rem) * q)
    gsize = jnp.where(g < rem, q + 1, q) * (g < jnp.minimum(n_groups, k))
    t = jnp.arange(bound)
    idx = start[:, None] + t[None, :]
    mask = t[None, :] < gsize[:, None]
    i = jnp.arange(size)
    gid = jnp.where(i < big, i // (q + 1), rem + (i - big) // q)
    gid = jnp.where(i < k, gid, n_groups)
    return jnp.clip(idx, 0, size - 1), mask, gid


# ----------------------------------------------------------------------------- task scores


def _ncc_scores(z_g: Array, mask: Array, labels: Array, num_classes: int, ncc: str) -> Array:
    """Nearest-centroid score of every group: ``z_g [n, G, S]`` (zeros outside the mask)."""
    n, n_groups, s = z_g.shape
    counts, means, _ = class_moments(z_g.reshape(n, n_groups * s), labels, num_classes)
    means = means.reshape(num_classes, n_groups, s)
    return jnp.mean(_ncc_rows(z_g, means, counts > 0, labels, ncc), axis=1)


def _ncc_rows(z_g: Array, means: Array, present: Array, labels: Array, ncc: str) -> Array:
    """Per-row group scores ``[G, n]`` (hit, or own-class probability) for centroids ``means``
    ``[c, G, S]`` of the present classes."""
    n, n_groups, _ = z_g.shape
    # -||z - mu_c||^2 up to a per-sample constant: softmax and argmax only see differences.
    cross = jnp.einsum("ngs,cgs->gnc", z_g, means, precision=HIGHEST)
    sq = jnp.sum(means * means, axis=-1).T  # [G, c]
    logits = 2.0 * cross - sq[:, None, :]
    logits = jnp.where(present[None, None, :], logits, -jnp.inf)
    if ncc == "acc":
        hit = jnp.argmax(logits, axis=-1) == labels[None, :]
        return hit.astype(z_g.dtype)
    own = jnp.take_along_axis(logits, jnp.broadcast_to(labels[None, :, None], (n_groups, n, 1)), -1)
    logp = own[..., 0] - jax.nn.logsumexp(logits, axis=-1)
    return jnp.exp(logp)


def _r2_scores(z: Array, s: Array, gid: Array, z_g: Array, mask: Array, y: Array,
               n_groups: int, centered: bool) -> Array:
    """Mean R² over targets of the OLS (with intercept) of ``y [n, t]`` on each group."""
    yc = y - jnp.mean(y, axis=0, keepdims=True)
    total = jnp.sum(yc * yc, axis=0)  # [t]
    if centered:
        # Columns of U are orthogonal to 1 after centring: R² = Σ_{i∈g} (u_iᵀ yc)² / ‖yc‖².
        proj = safe_div(matmul(z.T, yc), s[:, None])  # [K, t]
        member = (gid[None, :] == jnp.arange(n_groups)[:, None]).astype(z.dtype)  # [G, K]
        explained = matmul(member, proj * proj)  # [G, t]
    else:
        # Uncentred components: project yc on the centred columns of each group (pseudo-inverse).
        zc = z_g - jnp.mean(z_g, axis=0, keepdims=True)
        c = jnp.einsum("ngs,ngr->gsr", zc, zc, precision=HIGHEST)
        b = jnp.einsum("ngs,nt->gst", zc, yc, precision=HIGHEST)
        explained = _explained(c, b)
    r2 = safe_div(explained, total[None, :])
    return jnp.mean(r2, axis=1)


def _explained(c: Array, b: Array) -> Array:
    """``bᵀ c⁺ b`` per group and target: ``c [G, S, S]`` covariances, ``b [G, S, t]``."""
    w, q = jnp.linalg.eigh(c)
    top = jnp.max(w, axis=-1, keepdims=True)
    eps = float(jnp.finfo(c.dtype).eps)
    keep = w > top * eps * c.shape[-1]
    qb = jnp.einsum("gsr,gst->grt", q, b, precision=HIGHEST)
    return jnp.sum(safe_div(qb * qb, jnp.where(keep, w, 0.0)[..., None]), axis=1)


# ----------------------------------------------------------------------------- sampling


def _hard_sample(x, labels, key, temperature, *, num_classes, regression, sample_size):
    """Indices of ``sample_size`` rows drawn without replacement, hard examples favoured.

    Classification: the nearest-centroid margin on the full features
    ``m_i = min_{c≠y_i} ‖x_i−μ_c‖² − ‖x_i−μ_{y_i}‖²`` (small or negative = hard) gives
    log-weights ``−m_i / (temperature · mean|m|)``; rows are drawn by Gumbel-top-k. Regression has
    no such margin: a uniform draw.
    """
    n = x.shape[0]
    gumbel = jax.random.gumbel(key, (n,), x.dtype)
    if regression:
        score = gumbel
    else:
        counts, means, _ = class_moments(x, labels, num_classes)
        logits = 2.0 * matmul(x, means.T) - jnp.sum(means * means, axis=1)[None, :]
        own_mask = jax.nn.one_hot(labels, num_classes, dtype=bool)
        usable = (counts > 0)[None, :] & ~own_mask
        own = jnp.sum(jnp.where(own_mask, logits, 0.0), axis=1)
        other = jnp.max(jnp.where(usable, logits, -jnp.inf), axis=1)
        margin = jnp.where(jnp.isfinite(other), own - other, 0.0)
        scale = temperature * jnp.mean(jnp.abs(margin))
        score = safe_div(-margin, scale) + gumbel
    _, idx = jax.lax.top_k(score, sample_size)
    return idx


# ----------------------------------------------------------------------------- kernel


@jax.jit(
    static_argnames=(
        "num_classes", "regression", "n_groups", "centered", "ncc", "method", "sample_size"
    )
)
def _disco_kernel(x, labels, width, key, temperature, *, num_classes, regression, n_groups,
                  centered, ncc, method, sample_size):
    if sample_size is not None:
        idx = _hard_sample(
            x, labels, key, temperature,
            num_classes=num_classes, regression=regression, sample_size=sample_size,
        )
        x, labels = x[idx], labels[idx]
    if centered:
        x = center(x)
    s, z, valid = _components(x, width, method)
    size = s.shape[0]
    k = jnp.sum(valid)
    idx, mask, gid = _groups(k, n_groups, size)
    sig = jnp.where(valid, s, 0.0)
    ratio = safe_div(jnp.sum(jnp.where(mask, sig[idx], 0.0), axis=1), jnp.sum(sig))  # [G]
    z_g = jnp.where(mask[None, :, :], z[:, idx], 0.0)  # [n, G, S]
    if regression:
        y = labels.astype(x.dtype)
        score = _r2_scores(z, s, gid, z_g, mask, y, n_groups, centered)
    else:
        score = _ncc_scores(z_g, mask, labels, num_classes, ncc)
    return jnp.sum(ratio * score)


# ----------------------------------------------------------------------------- statistics


@jax.jit(static_argnames=("n_groups", "centered"))
def _stats_spectrum(stats, width, *, n_groups, centered):
    """Components from one ``eigh`` of the (centred) Gram: ``σ`` descending, ``V``, groups."""
    g = stats.scatter if centered else stats.gram()
    dtype = g.dtype
    w, v = principal_axes(g, rtol=0.0)  # rtol=0: negative rounding clamped, nothing floored
    s = jnp.sqrt(w)
    eps = float(jnp.finfo(dtype).eps)
    top = s[0]
    rule = jnp.maximum(jnp.asarray(stats.count, dtype), jnp.asarray(width, dtype)) * eps
    valid = (s > top * jnp.maximum(rule, math.sqrt(eps))) & (top > 0)
    idx, mask, gid = _groups(jnp.sum(valid), n_groups, s.shape[0])
    sig = jnp.where(valid, s, 0.0)
    ratio = safe_div(jnp.sum(jnp.where(mask, sig[idx], 0.0), axis=1), jnp.sum(sig))
    return s, v, idx, mask, gid, ratio


@jax.jit(static_argnames=("n_groups", "centered"))
def _disco_regression_stats(stats, width, *, n_groups, centered):
    s, v, idx, mask, gid, ratio = _stats_spectrum(
        stats, width, n_groups=n_groups, centered=centered
    )
    cross = matmul(v.T, stats.cross)  # [d, t]: V_kᵀ X_cᵀ y_c
    if centered:
        proj = safe_div(cross, s[:, None])
        member = (gid[None, :] == jnp.arange(n_groups)[:, None]).astype(s.dtype)
        explained = matmul(member, proj * proj)
    else:
        cov = matmul(v.T, matmul(stats.scatter, v))  # centred covariance of the components
        both = mask[:, :, None] & mask[:, None, :]
        c = jnp.where(both, cov[idx[:, :, None], idx[:, None, :]], 0.0)
        b = jnp.where(mask[:, :, None], cross[idx], 0.0)
        explained = _explained(c, b)
    r2 = safe_div(explained, stats.target_scatter[None, :])
    return jnp.sum(ratio * jnp.mean(r2, axis=1))


@jax.jit(static_argnames=("n_groups", "centered"))
def _disco_ncc_setup(stats, width, *, n_groups, centered):
    _, v, idx, mask, _, ratio = _stats_spectrum(
        stats, width, n_groups=n_groups, centered=centered
    )
    present = stats.class_counts > 0
    means = stats.class_means() - (stats.mean[None, :] if centered else 0.0)
    mc = jnp.where(present[:, None], matmul(means, v), 0.0)  # [c, d] centroids in components
    means_g = jnp.where(mask[None, :, :], mc[:, idx], 0.0)  # [c, G, S]
    return v, idx, mask, ratio, means_g, present


@jax.jit(static_argnames=("centered", "ncc"))
def _disco_ncc_update(total, x, y, w, mu, setup, *, centered, ncc):
    v, idx, mask, _, means_g, present = setup
    z = matmul(x - mu[None, :], v) if centered else matmul(x, v)
    z_g = jnp.where(mask[None, :, :], z[:, idx], 0.0)
    rows = _ncc_rows(z_g, means_g, present, y, ncc)  # [G, b]
    return total + jnp.sum(jnp.where(w[None, :] > 0, rows, 0.0), axis=1)


def _disco_streamed(stats, second_pass, *, width, n_groups, center, ncc, method, sample_size,
                    chunk_size, check_inputs):
    name = "disco"
    _validation.check_stats(stats, name=name, regression=None)
    if method != "gram":
        raise ValueError(f"{name}: method={method!r} needs the data; stats= uses method='gram'")
    if sample_size is not None:
        raise ValueError(f"{name}: sample_size (hard-example sampling) needs the data, not stats=")
    w = stats.num_features if width is None else width
    kw = dict(n_groups=n_groups, centered=bool(center))
    if stats.regression:
        if second_pass is not None:
            raise ValueError(f"{name}: regression from stats= needs no second_pass")
        return _disco_regression_stats(stats, w, **kw)
    if second_pass is None:
        raise ValueError(
            f"{name}: classification from stats= needs second_pass= (the (features, labels) "
            "chunks again): the nearest-centroid scores are per-sample"
        )
    setup = _disco_ncc_setup(stats, w, **kw)
    dt = stats.scatter.dtype
    total = fold(
        functools.partial(_disco_ncc_update, centered=bool(center), ncc=ncc),
        jnp.zeros((n_groups,), dt), second_pass, args=(stats.mean, setup), name=name,
        width=stats.num_features, num_classes=stats.num_classes, count=stats.count, dtype=dt,
        chunk_size=chunk_size, check_inputs=check_inputs,
    )
    return jnp.sum(setup[3] * total / stats.count)


# ----------------------------------------------------------------------------- public


@register(
    "disco",
    tasks=("classification", "regression"),
    summary="task scores of spectral-component groups weighted by their singular-value share",
    paper="Zhang et al., AAAI 2025",
    streams=True,
    scale_invariant=True,
)
def disco(
    features: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    *,
    stats: FeatureStats | None = None,
    second_pass=None,
    chunk_size: int | None = None,
    n_groups: int = 10,
    center: bool = True,
    ncc: str = "acc",
    method: str = "gram",
    sample_size: int | None = None,
    key: Array | None = None,
    hardness_temperature: float = 1.0,
    num_classes: int | None = None,
    width: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    check_inputs: bool = True,
) -> Array:
    r"""DISCO: how the task is spread over groups of spectral components of the features.

    The (centred) features ``F = U diag(σ) Vᵀ`` of rank ``k`` are cut, in order of decreasing
    ``σ``, into ``G = min(n_groups, k)`` contiguous groups ``g`` (sizes as
    ``np.array_split(range(k), G)``). Each group has the singular-value share ``r_g`` and a task
    score ``s_g`` computed on its component coordinates ``Z_g = U_g diag(σ_g)``:

    .. math::
        \mathrm{DISCO} = \sum_{g=1}^{G} r_g\, s_g, \qquad
        r_g = \frac{\sum_{i \in g} \sigma_i}{\sum_{i \le k} \sigma_i}

    Classification: ``s_g`` is the resubstitution accuracy of the nearest-centroid classifier on
    ``Z_g`` (squared Euclidean distance, centroids from all ``n`` samples, ties to the lowest
    class), or with ``ncc="prob"`` the mean probability ``softmax_c(−‖z_i − μ_c‖²)[y_i]``.
    Regression: ``s_g`` is the mean over targets of the ``R²`` of ordinary least squares with
    intercept on ``Z_g``. Both lie in ``[0, 1]``, so does the score. Higher is better.

    Note:
      **A reconstruction** (no code is published): the paper states the ingredients (groups of
      singular values, their σ-shares, a nearest-centroid score for classification, a
      linear-regression score for regression); every other choice is ours and is an option:
      ``center``, ``n_groups``, equal-count groups, ``ncc``, resubstitution without a split,
      ``R²``, σ rather than σ² in ``r_g``. The rank ``k`` follows ``numpy.linalg.matrix_rank``
      (``σ_i > σ₁·max(n, d)·eps``). Classes without samples (only with an explicit
      ``num_classes``) are ignored. Features without spread raise eagerly and score 0 when traced.
      ``ncc="prob"`` is not scale-invariant. Hard-example sampling (``sample_size``; the paper's
      rule is not known) and the ``"gram"`` route's rank floor: ``docs/numerics.md``; what
      ``stats=`` needs: ``docs/streaming.md``.

    Args:
      features: ``[n, d]`` features.
      labels: ``[n]`` integer labels ``0..c-1`` (classification) or ``[n]``/``[n, k]`` float
        targets (regression).
      stats: :class:`~transferjax.FeatureStats` in place of ``features, labels``.
      second_pass: with classification ``stats``: the ``(features, labels)`` chunks again (an
        iterable or a callable returning one).
      chunk_size: rows per jitted update of the second pass (default: the first chunk's size).
      n_groups: number of spectral groups ``G`` (default 10; at most the rank is used).
      center: subtract the feature mean before the decomposition (default True).
      ncc: classification group score, ``"acc"`` (default, accuracy) or ``"prob"``.
      method: ``"gram"`` (default, one ``eigh`` of the smaller Gram) or ``"svd"`` (thin SVD).
      sample_size: score this many drawn rows, hard examples favoured (default ``None``: all).
      key: PRNG key, required with ``sample_size``.
      hardness_temperature: flatness of the hard-example weights (default 1; larger: more uniform).
      num_classes: ``c``; required when ``labels`` are traced.
      width: true feature width when ``features`` are zero-padded (may be traced).
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.
      check_inputs: run the eager checks (skipped automatically for traced values).

    Returns:
      Scalar score in ``[0, 1]`` (compute dtype). Higher is better.

    Raises:
      ValueError: malformed features or labels, or features without spread; a bad option; both
        or neither of ``features, labels`` and ``stats``; classification ``stats`` without
        ``second_pass``; ``sample_size`` or ``method="svd"`` with ``stats``.
      TypeError: non-numeric or boolean inputs; ``sample_size`` without ``key``.

    References:
      Zhang, Shu, Chen, Long, Guo, Yang. Assessing Pre-Trained Models for Transfer Learning
      Through Distribution of Spectral Components. AAAI 2025 (arXiv:2412.19085).

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> y = np.arange(200) % 4
      >>> noise = np.random.default_rng(0).normal(size=(200, 16))
      >>> bool(tj.disco(noise + 3 * np.eye(4, 16)[y], y) > tj.disco(noise, y))
      True
    """
    name = "disco"
    n_groups = _validation.check_positive_int(n_groups, name=name, arg="n_groups")
    if ncc not in _NCC:
        raise ValueError(f"{name}: ncc must be one of {_NCC}, got {ncc!r}")
    if method not in _METHODS:
        raise ValueError(f"{name}: method must be one of {_METHODS}, got {method!r}")
    if not isinstance(center, (bool, np.bool_)):
        raise TypeError(f"{name}: center must be a bool, got {center!r}")
    _validation.data_or_stats(features, labels, stats, name=name)
    if stats is not None:
        return _disco_streamed(
            stats, second_pass, width=width, n_groups=n_groups, center=center, ncc=ncc,
            method=method, sample_size=sample_size, chunk_size=chunk_size,
            check_inputs=check_inputs,
        )
    if sample_size is not None:
        sample_size = _validation.check_positive_int(sample_size, name=name, arg="sample_size")
        if sample_size < 2:
            raise ValueError(f"{name}: sample_size must be >= 2, got {sample_size}")
        if key is None:
            raise TypeError(f"{name}: sample_size needs a PRNG key= (jax.random.key(seed))")
    x, targets = _validation.prepare(
        features, labels, name=name, num_classes=num_classes, check_inputs=check_inputs,
        dtype=dtype, width=width,
    )
    if check_inputs and _validation.is_concrete(x):
        flat = bool(jnp.all(x == x[:1])) if center else not bool(jnp.any(x))
        if flat:
            what = "all rows are equal" if center else "all values are zero"
            raise ValueError(f"{name}: features have no spread ({what}): no spectrum")
    dt = x.dtype
    n = x.shape[0]
    if sample_size is not None and sample_size >= n:
        sample_size = None
    if sample_size is None:
        key = jax.random.key(0)  # unused placeholder keeps one kernel signature
    w = x.shape[1] if width is None else width
    return _disco_kernel(
        x,
        jnp.asarray(targets.values),
        w,
        key,
        jnp.asarray(hardness_temperature, dt),
        num_classes=targets.num_classes or 0,
        regression=targets.regression,
        n_groups=n_groups,
        centered=bool(center),
        ncc=ncc,
        method=method,
        sample_size=sample_size,
    )
