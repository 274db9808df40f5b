"""NCTI: the neural-collapse transferability index (three raw terms, pooled across models)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation
from .._typing import Array, ArrayLike, DTypeLike
from ..linalg import HIGHEST, after, center, gram, matmul, pca_scores, safe_div
from ..registry import register
from ..stats import class_residuals

__all__ = ["ncti_terms"]

_PCA_RTOL = 1e-10  # PCA variances at most this fraction of the largest count as null
_LDA_TOL = 1e-4  # the LDA svd solver's rank cutoffs (absolute within, relative between)
_TOP = 32  # the branch test sums the top-32 PCA variances
_LOG_1E10 = math.log(1e10)  # shrinkage max(exp(-sum), 1e-10) hits its floor at this sum
_DIVISORS = ("n-c", "n")


def _principal_components(x: Array, k: int, k_live: Array) -> tuple[Array, Array]:
    """Scores ``[n, k]`` on the top-``k`` principal directions and their variances ``[k]``.

    The one place NCTI decomposes the features (the Gram's eigenvectors, or the ``n×n`` kernel's
    when ``n < d``). Variances are the column variances of the scores (divisor ``n − 1``). A
    column counts as null, and is set to exactly 0 with its variance, when its index is
    ``>= k_live`` (zero padding, beyond the clamp) or its variance is at most
    ``max(1e-10, 16·eps)`` of the largest: in float64 the ``1e-10`` of the exact reference
    configuration; in float32 the rounding level of the decomposition, below which a direction
    is indistinguishable from a null one (its scores are mostly rounding from the leading
    directions), so that null directions never enter the LDA, which would rescale them.
    """
    n = x.shape[0]
    z = pca_scores(x, k)
    var = jnp.sum(z * z, axis=0) / (n - 1)
    rtol = max(_PCA_RTOL, 16.0 * float(jnp.finfo(x.dtype).eps))
    live = (jnp.arange(k) < k_live) & (var > rtol * jnp.max(var))
    return jnp.where(live[None, :], z, 0.0), jnp.where(live, var, 0.0)


def _lda_svd(z, counts, means, resid, live_classes, minus_classes):
    """Coordinates ``[n, min(c, k)]`` and logits ``[n, c]`` of the LDA ``svd`` solver.

    The within-class scatter is divided by ``n − minus_classes·c`` (1: scikit-learn < 1.9,
    0: scikit-learn ≥ 1.9).
    """
    n = z.shape[0]
    priors = counts / n
    zbar = matmul(priors, means)
    std = jnp.sqrt(jnp.mean(resid * resid, axis=0))
    std = jnp.where(std > 0, std, 1.0)
    div = n - minus_classes * live_classes
    scaled = resid / std[None, :] * jnp.sqrt(1.0 / jnp.maximum(div, 1.0))
    # Right singular vectors of the scaled residuals from their k×k Gram; the singular values
    # from the column norms of the projections, accurate to ~eps·s_max (the Gram's eigenvalues
    # are not, in float32, at the 1e-4 rank cutoff).
    _, q = jnp.linalg.eigh(gram(scaled))
    proj = matmul(scaled, q)
    s = jnp.sqrt(jnp.sum(proj * proj, axis=0))
    keep = s > _LDA_TOL
    w1 = jnp.where(keep[None, :], safe_div(q / std[:, None], s[None, :]), 0.0)  # [k, k]
    weight = jnp.sqrt(counts / jnp.maximum(live_classes - 1.0, 1.0))
    b = matmul(weight[:, None] * (means - zbar[None, :]), w1)  # [c, k]
    _, sb, vtb = jnp.linalg.svd(b, full_matrices=False)
    keep_b = sb > _LDA_TOL * sb[0]
    w = matmul(w1, jnp.where(keep_b[None, :], vtb.T, 0.0))  # [k, min(c, k)]
    coords = matmul(z - zbar[None, :], w)
    centres = matmul(means - zbar[None, :], w)
    logits = matmul(coords, centres.T) - 0.5 * jnp.sum(centres * centres, axis=1)[None, :]
    return coords, logits + _log_priors(priors)[None, :]


def _lda_eigen(z, counts, means, resid, live_classes, live_dims, shrinkage):
    """Coordinates ``[n, min(c, k)]`` and logits ``[n, c]`` of the shrinkage ``eigen`` solver.

    Dimensions outside ``live_dims`` (padding, beyond the clamp) are decoupled: their scores are
    zero, their within-class variance is a positive placeholder and their between-class variance
    0, so they take generalised eigenvalue 0 and contribute nothing.
    """
    n, k = z.shape
    c = counts.shape[0]
    dt = z.dtype
    priors = counts / n
    zbar = matmul(priors, means)
    dev = means - zbar[None, :]
    within = gram(resid) / n
    between = matmul((dev * priors[:, None]).T, dev)
    live = live_dims.astype(dt)
    k_live = jnp.sum(live)
    scale_w = jnp.trace(within) / k_live
    scale_b = jnp.trace(between) / k_live
    sw = (1.0 - shrinkage) * within + jnp.diag(shrinkage * scale_w * live)
    sb = (1.0 - shrinkage) * between + jnp.diag(shrinkage * scale_b * live)
    # No within-class spread at all (every class a single point): no discriminant is defined;
    # the identity keeps the algebra finite and the result is replaced below.
    ok = scale_w > 0
    sw = jnp.where(ok, sw + jnp.diag(scale_w * (1.0 - live)), jnp.eye(k, dtype=dt))
    omega, q = jnp.linalg.eigh(sw)
    omega = jnp.maximum(omega, float(jnp.finfo(dt).eps) * jnp.max(omega))
    inv_sqrt = matmul(q / jnp.sqrt(omega)[None, :], q.T)
    _, u = jnp.linalg.eigh(matmul(matmul(inv_sqrt, sb), inv_sqrt))
    v = matmul(inv_sqrt, u[:, ::-1])  # descending generalised eigenvalues, vᵀ Σ_w v = I
    m = min(c, k)
    coords = matmul(z, v[:, :m])
    coords = jnp.where(ok & (jnp.arange(m) < live_classes - 1)[None, :], coords, 0.0)
    prec_means = matmul(means, matmul(q / omega[None, :], q.T))  # rows Σ_w⁻¹ μ_c
    logits = matmul(z, prec_means.T) - 0.5 * jnp.sum(means * prec_means, axis=1)[None, :]
    return coords, jnp.where(ok, logits, 0.0) + _log_priors(priors)[None, :]


def _log_priors(priors):
    return jnp.where(priors > 0, jnp.log(jnp.where(priors > 0, priors, 1.0)), -jnp.inf)


def _nuclear_norms(p, labels, c):
    """``[c]`` nuclear norms of the blocks ``P_j = P[y == j]`` (``n_j × c``).

    Each block's Gram gives its right singular vectors ``V_j``; the singular values are then the
    column norms of ``P_j V_j``, taken from the rows themselves. Square roots of the Gram's
    eigenvalues would carry its rounding, ``~eps·σ_max²``, into every small singular value as
    ``~√eps·σ_max`` (blocks of confident posteriors are nearly rank one); the column norms are
    accurate to ``~eps·σ_max``. ``O(n·c²)`` flops, ``O(c³)`` memory.
    """
    tiles, cls = _class_tiles(p, labels, c)
    prod = functools.partial(jnp.einsum, precision=HIGHEST)
    grams = jax.ops.segment_sum(prod("gti,gtj->gij", tiles, tiles), cls, num_segments=c)
    _, v = jnp.linalg.eigh(grams)  # [c, c, c]
    proj = prod("gti,gij->gtj", tiles, v[cls])
    energy = jax.ops.segment_sum(jnp.sum(proj * proj, axis=1), cls, num_segments=c)
    return jnp.sum(jnp.sqrt(energy), axis=1)


def _class_tiles(rows, labels, c):
    """Rows sorted by label into tiles ``[g, t, k]`` of one class each, and the tiles' classes.

    A class's last tile is zero-padded; unused tiles are zero (class 0). ``t = clip(n // 2c, 1,
    64)`` rows, so ``g <= n/t + c`` tiles hold at most about ``n/2`` padded rows, and a product
    per tile with its class's ``[k, m]`` matrix costs ``O(n·k·m)`` in total.
    """
    n, k = rows.shape
    t = max(1, min(64, n // (2 * c)))
    num_tiles = -(-n // t) + c
    labels = labels.astype(jnp.int32)
    counts = jnp.bincount(labels, length=c).astype(jnp.int32)
    tiles_per = (counts + t - 1) // t
    tile_start = (jnp.cumsum(tiles_per) - tiles_per).astype(jnp.int32)
    row_start = (jnp.cumsum(counts) - counts).astype(jnp.int32)
    order = jnp.argsort(labels, stable=True)
    lab = labels[order]
    slot = tile_start[lab] * t + (jnp.arange(n, dtype=jnp.int32) - row_start[lab])
    buf = jnp.zeros((num_tiles * t, k), rows.dtype).at[slot].set(rows[order])
    tile_cls = jnp.zeros((num_tiles,), jnp.int32).at[slot // t].set(lab)
    return buf.reshape(num_tiles, t, k), tile_cls


@jax.jit(static_argnames=("num_classes", "k"))
def _ncti_terms(features, labels, width, minus_classes, *, num_classes, k):
    c = num_classes
    dt = features.dtype
    k_live = jnp.minimum(k, jnp.asarray(width, jnp.int32))  # = min(n_components, n, width)
    z, var = _principal_components(features, k, k_live)
    live_dims = jnp.arange(k) < k_live

    counts, means, resid = class_residuals(z, labels, c)
    # A within-class spread at the rounding level of the scores is none: as in exact arithmetic,
    # the LDA then has no within-class direction there (instead of rescaling rounding noise).
    spread = jnp.sqrt(jnp.mean(resid * resid, axis=0))
    noise = 16.0 * float(jnp.finfo(dt).eps) * jnp.sqrt(jnp.max(var))
    resid = jnp.where((spread > noise)[None, :], resid, 0.0)
    live_classes = jnp.sum((counts > 0).astype(dt))
    top = jnp.sum(var[:_TOP])
    shrinkage = jnp.maximum(jnp.exp(-top), 1e-10).astype(dt)
    use_svd = top >= _LOG_1E10

    minus_classes = jnp.asarray(minus_classes, dt)
    coords_s, logits_s = _lda_svd(z, counts, means, resid, live_classes, minus_classes)
    # Both branches run (one is selected per model, also under vmap); ordering the second after
    # the first keeps XLA from running batched LAPACK calls side by side (see linalg.after).
    resid_e = after(resid, coords_s, logits_s)
    coords_e, logits_e = _lda_eigen(z, counts, means, resid_e, live_classes, live_dims, shrinkage)
    coords = jnp.where(use_svd, coords_s, coords_e)
    logits = jnp.where(use_svd, logits_s, logits_e)

    seli = jnp.sum(jnp.linalg.svd(center(coords), compute_uv=False))
    p = jax.nn.softmax(logits, axis=1)
    ncc = jnp.mean(jnp.take_along_axis(p, labels[:, None], axis=1))
    vc = jnp.log(jnp.sum(_nuclear_norms(after(p, seli), labels, c)))
    return {"seli": seli, "ncc": ncc, "vc": vc}


@register(
    "ncti",
    tasks=("classification",),
    summary="neural-collapse terms (LDA-space nuclear norm, class fit, posterior spread), "
    "min-max pooled across models",
    paper="Wang et al., ICCV 2023",
    pool_weights={"ncc": 1.0, "seli": 1.0, "vc": -1.0},
)
def ncti_terms(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    n_components: int = 64,
    lda_divisor: str = "n-c",
    num_classes: int | None = None,
    width: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    check_inputs: bool = True,
) -> dict[str, Array]:
    r"""NCTI's three raw terms for one model: ``{"seli", "ncc", "vc"}``.

    The features are projected on their top ``k = min(n_components, n, d)`` principal components
    ``Z`` (centred, not whitened; variances ``λ_1 ≥ λ_2 ≥ …``). A linear discriminant analysis of
    ``Z`` gives coordinates ``T [n, min(c − 1, k)]`` and posteriors ``P [n, c]``: with
    ``t = max(exp(−Σ_{i≤32} λ_i), 10^{-10})``, scikit-learn's ``svd`` solver when ``t`` is at its
    floor, else its ``eigen`` solver with shrinkage ``t``. Then

    .. math::
        \mathrm{seli} = \lVert T - \bar T \rVert_*,\qquad
        \mathrm{ncc} = \frac1n \sum_i P_{i, y_i},\qquad
        \mathrm{vc} = \log \sum_c \lVert P_{\{i : y_i = c\}} \rVert_*

    (``‖·‖_*`` the nuclear norm). Higher ``seli`` and ``ncc`` and lower ``vc`` are better. NCTI is
    pool-relative: each term is min-max normalised over the models ranked on one target set and
    the score is ``ncc̃ + selĩ − vc̃ ∈ [−1, 2]`` (:func:`transferjax.pooling.combine_min_max`;
    :func:`~transferjax.score_hub` applies it).

    Note:
      Follows ``NCTI_Score`` of ``BUserName/NCTI`` (scikit-learn 1.2.2) with an exact PCA: the
      reference's randomized SVD is unseeded (its terms move by up to ~2 % between runs). Where
      the reference raises (``min(n, d) < 64``), ``k`` is clamped. PCA columns with variance at
      most ``1e-10·λ_1`` (``16·eps·λ_1`` in float32) are set to 0 and a within-class spread at
      rounding level counts as none, where the reference's LDA rescales rounding noise. Every
      class a single point (the reference fails): ``seli = 0`` and class-prior posteriors.
      Classes absent from the labels are left out, as the reference's ``np.unique`` does.
      ``width`` enters only through ``k``.

    Args:
      features: ``[n, d]`` features.
      labels: ``[n]`` integer labels ``0..c-1``.
      n_components: number of principal components (static; default 64, the reference's).
      lda_divisor: within-class scatter divisor of the ``svd`` solver: ``"n-c"`` (default;
        scikit-learn < 1.9, the reference) or ``"n"`` (scikit-learn ≥ 1.9; sharper posteriors).
      num_classes: ``c``; required when ``labels`` are traced.
      width: true feature width when ``features`` are zero-padded (may be traced).
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.
      check_inputs: run the eager checks (skipped automatically for traced values).

    Returns:
      ``{"seli", "ncc", "vc"}``: scalar arrays (compute dtype).

    Raises:
      ValueError: malformed features or labels; ``n <= c`` (the LDA needs ``n > c``); an unknown
        ``lda_divisor``; ``n_components < 1``.
      TypeError: non-numeric features; float labels; ``n_components`` not an int.

    References:
      Wang, Li, Li, Zhu, Wang, Zhang, Liu. How Far Pre-trained Models Are from Neural Collapse
      on the Target Dataset Informs their Transferability. ICCV 2023.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> y = np.arange(120) % 3
      >>> f = np.random.default_rng(0).normal(size=(120, 6)) + 3 * np.eye(3, 6)[y]
      >>> terms = tj.ncti_terms(f, y)
      >>> sorted(terms), bool(terms["ncc"] > 0.9)
      (['ncc', 'seli', 'vc'], True)
    """
    name = "ncti_terms"
    _validation.check_positive_int(n_components, name=name, arg="n_components")
    if lda_divisor not in _DIVISORS:
        raise ValueError(f"{name}: lda_divisor must be one of {_DIVISORS}, got {lda_divisor!r}")
    x, targets = _validation.prepare(
        features, labels, name=name, num_classes=num_classes, check_inputs=check_inputs,
        allow_regression=False, dtype=dtype, width=width,
    )
    y, c = targets.values, targets.num_classes
    n = x.shape[0]
    if _validation.is_concrete(y):
        present = c if num_classes is None else int(np.unique(np.asarray(y)).size)
        if n <= present:
            raise ValueError(
                f"{name}: needs more samples than classes (the LDA divides the within-class "
                f"scatter by n - c); got n={n} samples and c={present} classes"
            )
    w = x.shape[1] if width is None else width
    k = min(n_components, *x.shape)
    minus_classes = 1.0 if lda_divisor == "n-c" else 0.0
    return _ncti_terms(x, y, w, minus_classes, num_classes=c, k=k)
