"""SFDA: Self-challenging Fisher Discriminant Analysis, and greedy ensemble selection with it."""

from __future__ import annotations

import functools
import math
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation
from .._dtypes import compute_dtype
from .._typing import Array, ArrayLike, DTypeLike
from ..linalg import after, eigh_psd, gram, matmul, safe_div
from ..registry import register
from ..stats import FeatureStats, class_residuals, empty_stats, feature_stats, merge_stats
from ..streaming import fold

__all__ = ["sfda", "sfda_ensemble", "SFDAEnsemble"]

_POWER_ROUNDS = 3  # the reference's iterative_A(max_iterations=3)
_EXP_FACTOR = 5.0  # shrinkage = max(exp(-5 λ̂), 1e-10)
_SHRINK_FLOOR = 1e-10


def _normalise(v: Array) -> Array:
    return safe_div(v, jnp.linalg.norm(v))


def _power_top_eigenvalue(matvec, start: Array) -> Array:
    """The reference's approximate top eigenvalue: three double steps of the power method."""

    def double_step(_, uv):
        u = _normalise(matvec(uv[1]))
        return u, _normalise(matvec(u))

    # a rolled loop: unrolling the six chained products costs seconds of XLA compile time
    u, v = jax.lax.fori_loop(0, _POWER_ROUNDS, double_step, (start, start))
    return jnp.dot(v, matvec(u))


def _min_eig_estimate(chol: Array, steps: int = 8) -> Array:
    """An estimate from above of ``λ_min(A)`` for ``A = LLᵀ``: inverse iteration, and pivots.

    ``steps`` rounds of inverse iteration (two triangular solves each, ``O(d²)``) from a fixed
    spread-out start; its Rayleigh quotient and every squared Cholesky pivot are ``≥ λ_min``, so
    the smaller of the two is returned.
    """
    d = chol.shape[0]
    v = jnp.cos(jnp.arange(d, dtype=chol.dtype) * 2.399963) + 0.5  # golden-angle pattern
    v = v / jnp.linalg.norm(v)

    def solve(u):
        return jax.scipy.linalg.cho_solve((chol, True), u)

    v = jax.lax.fori_loop(0, steps, lambda _, u: _normalise(solve(u)), v)
    rayleigh = safe_div(jnp.ones((), chol.dtype), jnp.dot(v, solve(v)))
    return jnp.minimum(rayleigh, jnp.min(jnp.diagonal(chol)) ** 2)


def _fit_cholesky(counts, means, n, trace, sw, width, shrinkage):
    """The classifier by one Cholesky solve of ``A``, and whether that solve is trustworthy.

    Columns that are exactly zero in ``S_w`` and in every class mean (zero padding, dead units
    after shifted centring) are decoupled and contribute nothing to the logits, so their diagonal
    is replaced by the scatter's scale before factorising: the rest must be well conditioned,
    ``λ_min(A) ≥ 10³·eps·‖A‖_F`` (estimated by :func:`_min_eig_estimate`), a regime where the
    Gram's rounding (``~eps·‖A‖``) moves the solve little; otherwise (near-null within-class
    directions, whose noise the ``1/ε`` part would amplify, or small ones that the rounding
    buries) the caller falls back to :func:`_fit`.
    """
    dtype = means.dtype
    d = sw.shape[0]
    present = counts > 0
    log_prior = jnp.where(present, jnp.log(jnp.where(present, counts / n, 1.0)), -jnp.inf)
    eps = shrinkage * trace / jnp.asarray(width, dtype)
    inert = (jnp.diagonal(sw) == 0) & jnp.all(means == 0, axis=0)
    scale = (1.0 - shrinkage) * jnp.linalg.norm(sw) + eps
    a = (1.0 - shrinkage) * sw + jnp.diag(jnp.where(inert, scale, eps))
    chol = jnp.linalg.cholesky(a)
    tol = 1e3 * float(jnp.finfo(dtype).eps)
    ok = jnp.all(jnp.isfinite(chol)) & (_min_eig_estimate(chol) >= tol * scale) & (scale > 0)
    chol = jnp.where(ok, chol, jnp.eye(d, dtype=dtype))  # keep the unused branch NaN-free
    coef = jax.scipy.linalg.cho_solve((chol, True), means.T).T  # [c, d] = M A⁻¹
    half_sq = 0.5 * jnp.sum(means * coef, axis=1)
    dist = jnp.zeros((means.shape[0],) * 2, dtype)
    return _FDA(coef, half_sq, log_prior, dist, eps), ok


def _fit_scatter(counts, means, n, trace, sw, width, shrinkage, null_tol, z=None, scale=None):
    """The classifier from the ``d×d`` scatter ``S_w``: one Cholesky solve when that is safe
    (see :func:`_fit_cholesky`), else exact null-space handling (:func:`_fit`) on ``S_w``'s
    eigenpairs. Those come from the SVD of the class-centred features ``z`` when given (see
    :func:`_within_basis`): a float32 ``S_w`` carries rounding of ``~eps·λ_max``, which buries
    the directions with ``λ ≲ 1e-6·λ_max`` that an ill-conditioned ``A`` weighs most, while the
    singular values of ``z`` resolve ``λ`` down to ``~eps²·λ_max``. Without ``z`` (statistics
    only): ``eigh(S_w)``. The same math; the Cholesky costs ``d³/3`` flops, the fallback an
    ``n×d`` QR and a ``d×d`` SVD (a few times an ``eigh``).
    """
    fast, ok = _fit_cholesky(counts, means, n, trace, sw, width, shrinkage)

    def slow(_):
        # never beside the Cholesky (see linalg.after)
        if z is None:
            lam, v = eigh_psd(after(sw, fast))
        else:
            lam, v = _within_basis(after(z, fast), scale, 4.0 * float(jnp.finfo(z.dtype).eps))
        return _fit(counts, means, n, trace, lam, v, width, shrinkage, null_tol)

    return jax.lax.cond(ok, lambda _: fast, slow, None)


def _within_basis(z: Array, scale: Array, floor: float | None = None):
    """Eigenpairs of ``S_w = ZᵀZ/n`` as ``(λ [k], V [d, k])``, ``k = min(n, d)``, from the thin
    SVD of the class-centred features ``Z`` (no Gram: that would square the condition number).

    Singular values below ``floor·max(σ_max, scale)`` (``scale``: the norm of the features ``Z``
    was computed from, which catches a ``Z`` that is zero up to rounding) are rounding noise and
    set to 0. When ``n − c < d`` the ``c`` structural zeros (rows of ``Z`` sum to zero in each
    class) are among them and must be told apart from small genuine directions: the default
    ``floor`` is ``4·√max(n, d)·eps``. When ``n − c ≥ d`` there are none, and the caller passes
    ``4·eps``, the rounding level of ``Z`` (see :func:`_residuals`).
    """
    n, d = z.shape
    # Tall Z: its d×d triangular factor has the same singular values and right vectors, and
    # skips the n×d left vectors (about half the SVD's time).
    r = jnp.linalg.qr(z, mode="r") if n > d else z
    _, sv, vt = jnp.linalg.svd(r, full_matrices=False)
    if floor is None:
        floor = 4.0 * math.sqrt(max(n, d)) * float(jnp.finfo(z.dtype).eps)
    keep = sv > floor * jnp.maximum(sv[0], scale)
    # S_w = 0 (every class a single sample): no direction is kept, and the singular vectors of a
    # zero matrix (arbitrary, possibly NaN) must not leak into the products.
    return jnp.where(keep, sv * sv / n, 0.0), jnp.where(keep[None, :], vt.T, 0.0)


def _residuals(x: Array, labels: Array, num_classes: int):
    """Class counts, means and residuals ``Z = X − M[y]``, centred twice.

    A float32 class mean is off by about ``eps·√n_c·|μ_c|`` (summation), an error shared by
    every row of the class that would stand in ``Z`` as a spurious direction of that size; the
    second pass takes the class means of ``Z`` (small, so accurate) out again, leaving ``Z`` at
    the rounding level of its entries.
    """
    counts, means, z = class_residuals(x, labels, num_classes)
    _, shift, z = class_residuals(z, labels, num_classes)
    return counts, means + shift, z


def _null_tol(x: Array) -> float:
    """Relative squared size below which a null-space distance between class means is noise."""
    n, d = x.shape
    return (4.0 * math.sqrt(max(n, d)) * float(jnp.finfo(x.dtype).eps)) ** 2


class _FDA(NamedTuple):
    """A fitted regularised-FDA classifier (see :func:`_fit`); a pytree."""

    coef: Array  # [c, d]  M A⁻¹ on the range of S_w
    half_sq: Array  # [c]  ½ μ_cᵀ A⁻¹ μ_c
    log_prior: Array  # [c]  log π_c (−inf for an empty class)
    dist: Array  # [c, c]  squared null-space distances between class means (noise → 0)
    eps: Array  # the ridge ε = s·tr(S_w)/d


def _adaptive_shrinkage(matvec, start: Array) -> Array:
    top = _power_top_eigenvalue(matvec, start)
    return jnp.maximum(jnp.exp(-_EXP_FACTOR * top), _SHRINK_FLOOR)


def _fit(counts, means, n, trace, lam, v, width, shrinkage, null_tol) -> _FDA:
    """The classifier from class counts/means (centred), ``tr(S_w)`` and ``S_w``'s eigenpairs."""
    dtype = means.dtype
    present = counts > 0
    log_prior = jnp.where(present, jnp.log(jnp.where(present, counts / n, 1.0)), -jnp.inf)
    eps = shrinkage * trace / jnp.asarray(width, dtype)
    keep = lam > 0
    inv_a = jnp.where(keep, 1.0 / jnp.where(keep, (1.0 - shrinkage) * lam + eps, 1.0), 0.0)
    coords = matmul(means, v) * keep[None, :]  # [c, k]: class means in the range of S_w
    coef = matmul(coords * inv_a[None, :], v.T)  # [c, d]: M A⁻¹ on the range
    null = means - matmul(coords, v.T)  # [c, d]: class means in the null space of S_w
    dist = jax.lax.map(lambda m: jnp.sum((null - m[None, :]) ** 2, axis=1), null)  # [c, c]
    # Rounding leaves ~eps·|μ| in every component of ``null``; its square divided by ε (1e-10 of
    # the scatter's scale) would swamp the logits in float32, so such distances count as zero.
    dist = jnp.where(dist > null_tol * jnp.max(jnp.sum(means * means, axis=1)), dist, 0.0)
    half_sq = 0.5 * jnp.sum(means * coef, axis=1)
    return _FDA(coef, half_sq, log_prior, dist, eps)


def _logits(fda: _FDA, x: Array, labels: Array) -> Array:
    """``x_iᵀA⁻¹μ_c − ½μ_cᵀA⁻¹μ_c + log π_c`` plus the exact null-space term, ``[n, c]``."""
    eps = fda.eps
    far = fda.dist[labels] > 0  # [n, c]
    null_term = jnp.where(
        eps > 0,
        -fda.dist[labels] * (0.5 / jnp.where(eps > 0, eps, 1.0)),
        jnp.where(far, -jnp.inf, 0.0),
    )
    null_term = jnp.where(far, null_term, 0.0)
    return (
        matmul(x, fda.coef.T)
        - fda.half_sq[None, :]
        + fda.log_prior[None, :]
        + null_term
    )


def _confmix(prob, present, means, x, labels):
    """Soften ``prob`` and pull each row towards the mean of the other present classes' means."""
    soft = jax.nn.softmax(jnp.where(present[None, :], prob, -jnp.inf), axis=1)
    a = jnp.take_along_axis(soft, labels[:, None], axis=1)  # [n, 1]
    num_present = jnp.sum(present.astype(x.dtype))
    total = jnp.sum(jnp.where(present[:, None], means, 0.0), axis=0, keepdims=True)
    others = safe_div(total - means, num_present - 1.0)
    return a * x + (1.0 - a) * others[labels]


def _posteriors(x, labels, width, shrinkage, *, num_classes, adaptive):
    """One regularised-FDA stage: ``(P [n, c], class means [c, d], shrinkage used, present [c])``.

    ``x`` must be centred (translation does not change SFDA; centring keeps float32 accurate).
    The logits ``x_iᵀA⁻¹μ_c − ½μ_cᵀA⁻¹μ_c + log π_c`` are split over the range of ``S_w``, where
    ``A`` has eigenvalues ``(1−s)λ_k + ε``, and its null space, where ``A = εI`` and every
    ``x_i`` coincides with its class mean; there they equal ``−‖μ_{y_i}^⊥ − μ_c^⊥‖²/(2ε)`` up to a
    per-row constant, computed from the class means directly (no cancellation at scale ``1/ε``).
    """
    n = x.shape[0]
    dtype = x.dtype
    counts, means, z = _residuals(x, labels, num_classes)
    present = counts > 0
    trace = jnp.sum(z * z) / n
    if adaptive:
        # S_w·v as two broadcast-reductions over Z (O(nd), never forms S_w): the same cost as two
        # matrix-vector products, and XLA compiles them in a fraction of the time of chained dots.
        def sw_matvec(v):
            t = jnp.sum(z * v[None, :], axis=1)
            return jnp.sum(z * t[:, None], axis=0) / n

        start = jnp.sum(z * jnp.sum(z, axis=1)[:, None], axis=0) / n  # S_w · 1
        shrinkage = _adaptive_shrinkage(sw_matvec, start)
    shrinkage = jnp.asarray(shrinkage, dtype)
    norm = jnp.sqrt(jnp.sum(x * x))
    if n - num_classes >= x.shape[1]:
        fda = _fit_scatter(counts, means, n, trace, gram(z) / n, width, shrinkage, _null_tol(x),
                           z, norm)
    else:
        lam, v = _within_basis(z, norm)
        fda = _fit(counts, means, n, trace, lam, v, width, shrinkage, _null_tol(x))
    return jax.nn.softmax(_logits(fda, x, labels), axis=1), means, shrinkage, present


@jax.jit(static_argnames=("num_classes", "adaptive"))
def _sfda_kernel(features, labels, width, shrinkage, *, num_classes, adaptive):
    # Shifted centring: constant columns (dead units) become exactly zero, hence inert.
    x = features - features[:1]
    x = x - jnp.mean(x, axis=0, keepdims=True)
    prob, means, s, present = _posteriors(
        x, labels, width, shrinkage, num_classes=num_classes, adaptive=adaptive
    )
    # ConfMix: soften (a softmax of the probabilities), then pull each sample towards the
    # unweighted mean of the other (present) classes' means by 1 − its softened true-class prob.
    mixed = _confmix(prob, present, means, x, labels)
    mixed = mixed - jnp.mean(mixed, axis=0, keepdims=True)
    prob2, _, _, _ = _posteriors(
        mixed, labels, width, s, num_classes=num_classes, adaptive=False
    )
    return jnp.mean(jnp.take_along_axis(prob2, labels[:, None], axis=1))


# ----------------------------------------------------------------------------- streamed SFDA


def _stats_fit(stats, width, shrinkage, *, adaptive):
    """One FDA stage from :class:`FeatureStats`: S_w from the within-class scatter (d×d eigh)."""
    n = stats.count
    d = stats.num_features
    dtype = stats.scatter.dtype
    counts = stats.class_counts
    present = counts > 0
    means = jnp.where(present[:, None], stats.class_means() - stats.mean[None, :], 0.0)
    sw = stats.within / n
    trace = jnp.trace(stats.within) / n
    if adaptive:
        shrinkage = _adaptive_shrinkage(lambda v: matmul(sw, v), jnp.sum(sw, axis=1))
    shrinkage = jnp.asarray(shrinkage, dtype)
    eps = float(jnp.finfo(dtype).eps)
    null_tol = (4.0 * jnp.sqrt(jnp.maximum(n, d)) * eps) ** 2
    fda = _fit_scatter(counts, means, n, trace, sw, width, shrinkage, null_tol)
    return fda, shrinkage, present, means


@jax.jit(static_argnames=("adaptive",))
def _sfda_stage1(stats, width, shrinkage, *, adaptive):
    return _stats_fit(stats, width, shrinkage, adaptive=adaptive)


@jax.jit
def _sfda_stage2(stats, width, shrinkage):
    return _stats_fit(stats, width, shrinkage, adaptive=False)[0]


def _mix_rows(x, y, mu, stage1):
    fda, _, present, means = stage1
    xc = x - mu[None, :]
    prob = jax.nn.softmax(_logits(fda, xc, y), axis=1)
    return _confmix(prob, present, means, xc, y)


@jax.jit(static_argnames=("num_classes",))
def _mix_update(state, x, y, w, mu, stage1, *, num_classes):
    mixed = jnp.where(w[:, None] > 0, _mix_rows(x, y, mu, stage1), 0.0)
    chunk = feature_stats(mixed, y, num_classes=num_classes, weights=w, dtype=x.dtype)
    return merge_stats(state, chunk)


@jax.jit
def _score_update(total, x, y, w, mu, stage1, mu2, fda2):
    mixed = _mix_rows(x, y, mu, stage1) - mu2[None, :]
    prob2 = jax.nn.softmax(_logits(fda2, mixed, y), axis=1)
    own = jnp.take_along_axis(prob2, y[:, None], axis=1)[:, 0]
    return total + jnp.sum(jnp.where(w > 0, own, 0.0))


def _sfda_streamed(stats, second_pass, width, shrinkage, *, chunk_size, check_inputs):
    name = "sfda"
    _validation.check_stats(stats, name=name)
    if second_pass is None:
        raise ValueError(
            f"{name}: stats= needs second_pass= (the (features, labels) chunks again, read twice): "
            "ConfMix and the final posteriors are per-sample"
        )
    d, c = stats.num_features, stats.num_classes
    dt = stats.scatter.dtype
    w = d if width is None else width
    adaptive = shrinkage is None
    stage1 = _sfda_stage1(stats, w, 0.0 if adaptive else shrinkage, adaptive=adaptive)
    s = stage1[1]
    kw = dict(name=name, width=d, num_classes=c, count=stats.count, dtype=dt,
              chunk_size=chunk_size, check_inputs=check_inputs, passes=2)
    mixed = fold(functools.partial(_mix_update, num_classes=c), empty_stats(d, c, 0, dt),
                 second_pass, args=(stats.mean, stage1), merge=merge_stats, **kw)
    fda2 = _sfda_stage2(mixed, w, s)
    total = fold(_score_update, jnp.zeros((), dt), second_pass,
                 args=(stats.mean, stage1, mixed.mean, fda2), **kw)
    return total / stats.count


def _prepare(features, labels, *, name, num_classes, check_inputs, dtype, width=None):
    x, targets = _validation.prepare(
        features, labels, name=name, num_classes=num_classes, check_inputs=check_inputs,
        allow_regression=False, dtype=dtype, width=width,
    )
    return x, targets.values, int(targets.num_classes)


@register(
    "sfda",
    tasks=("classification",),
    summary="self-challenging Fisher discriminant: mean true-class posterior after ConfMix",
    paper="Shao et al., ECCV 2022",
    streams=True,
)
def sfda(
    features: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    *,
    stats: FeatureStats | None = None,
    second_pass=None,
    chunk_size: int | None = None,
    shrinkage: float | ArrayLike | None = None,
    num_classes: int | None = None,
    width: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    check_inputs: bool = True,
) -> Array:
    r"""SFDA: mean true-class probability of a regularised FDA classifier after self-challenge.

    Stage 1 fits a shrunk Fisher discriminant with within-class scatter ``S_w = Σ_c π_c Σ_c``
    (biased class covariances, empirical priors ``π_c``) and class means ``μ_c``:

    .. math::
        A = (1-s)\,S_w + s\,\tfrac{\operatorname{tr} S_w}{d}\,I, \qquad
        p(c \mid x) = \operatorname{softmax}_c\bigl(x^\top A^{-1}\mu_c
          - \tfrac12 \mu_c^\top A^{-1}\mu_c + \log\pi_c\bigr),

    with ``s = max(exp(−5 λ̂), 1e-10)`` and ``λ̂`` the top eigenvalue of ``S_w`` from three rounds
    of the power method started at ``S_w·1``. ConfMix softens ``p̃ = softmax(p)`` and moves each
    sample towards the unweighted mean ``μ̄_{−y_i}`` of the other classes' means,
    ``x̃_i = a_i x_i + (1 − a_i) μ̄_{−y_i}`` with ``a_i = p̃(y_i | x_i)``; stage 2 refits on ``x̃``
    with the same ``s``, and

    .. math::
        \mathrm{SFDA} = \frac1n\sum_i p_2(y_i \mid \tilde x_i) \in (0, 1].

    Higher is better. The reference's Fisher eigenvectors cancel (``V Vᵀ = A⁻¹``), so a stage
    needs only ``A⁻¹ M``: one Cholesky solve when ``A`` is well conditioned, else the SVD of the
    class-centred features, which float32 resolves where a tiny ``s`` and a nearly singular
    ``S_w`` make ``A`` ill conditioned; on the null space of ``S_w``, where ``A = εI``
    (``ε = s·tr S_w/d``), the logits come from class-mean distances over ``ε`` exactly.

    Note:
      Matches ``TencentARC/SFDA`` ``SFDA_Score``, quirks included: ``s`` depends on the feature
      scale, stage 2 reuses stage 1's ``s``, and ConfMix takes a softmax of probabilities.
      Differences: the caller's array is not modified in place; null-space distances below
      ``(4·√max(n, d)·eps)²·max‖μ_c‖²`` count as zero (rounding); where the reference divides by
      zero, a vanishing power iterate gives ``s = 1`` and ``S_w = 0`` classifies by class-mean
      equality (distinct: probability 1; identical: shared by prior); classes with no sample
      (explicit ``num_classes``) are ignored. Invariant to sample order, class relabelling,
      column order and translation, not to rotation (the power start ``S_w·1``).

      Streaming: ``stats`` give the stage-1 classifier; ConfMix and the posteriors are per
      sample, so ``second_pass`` is read twice (statistics of the mixed features, then the mean
      posterior). That path decomposes the ``d×d`` within-class scatter (``eigh``), which float32
      resolves only to ``~eps·λ_max``: use x64 when ``s`` is tiny and ``S_w`` ill conditioned.

    Args:
      features: ``[n, d]`` features.
      labels: ``[n]`` integer labels ``0..c-1`` (classification only).
      stats: classification :class:`~transferjax.FeatureStats` of the samples, in place of
        ``features, labels`` (requires ``second_pass``).
      second_pass: with ``stats``: the same ``(features [b, d], labels [b])`` chunks again, as a
        callable returning a fresh iterable or a re-iterable sequence (read twice).
      chunk_size: rows per jitted update of the second pass (default: the first chunk's size).
      shrinkage: fixed shrinkage ``s`` in ``[0, 1]`` for both stages (may be traced); ``None``
        (default) estimates it adaptively as in the reference.
      num_classes: required when ``labels`` are traced (inside the caller's jit/vmap).
      width: true feature width when ``features`` are zero-padded (hub scoring; may be traced).
        Only ``tr(S_w)/d`` depends on it; the padded score equals the unpadded one.
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.
      check_inputs: run the eager checks (skipped automatically for traced values).

    Returns:
      Scalar score in ``(0, 1]`` (compute dtype). Higher is better.

    Raises:
      TypeError: float (regression) targets, boolean/complex inputs, traced labels without
        ``num_classes``.
      ValueError: features not 2-D / ``n < 2`` / ``d = 0`` / NaN or inf; labels of the wrong
        length, outside ``0..c-1``, fewer than two classes, or an empty class; both or neither
        of ``features, labels`` and ``stats``; ``stats`` without ``second_pass``, or a second
        pass of another width or sample count.

    References:
      Shao, Zhao, Ge, Wang, Wang, Chen, Wang, Luo. Not All Models Are Equal: Predicting Model
      Transferability in a Self-challenging Fisher Space. ECCV 2022 (arXiv:2207.03036).

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> rng = np.random.default_rng(0)
      >>> y = np.arange(120) % 3
      >>> good = rng.normal(size=(120, 8)) + 2.0 * np.eye(3, 8)[y]
      >>> bool(tj.sfda(good, y) > tj.sfda(rng.normal(size=(120, 8)), y))
      True
    """
    _validation.data_or_stats(features, labels, stats, name="sfda",
                              hint="stats= with second_pass=")
    if shrinkage is not None and _validation.is_concrete(shrinkage):
        s_val = np.asarray(shrinkage)
        if s_val.ndim != 0 or not np.isfinite(s_val) or not 0 <= float(s_val) <= 1:
            raise ValueError(f"sfda: shrinkage must be a number in [0, 1] or None, got {shrinkage!r}")
    if stats is not None:
        return _sfda_streamed(
            stats, second_pass, width, shrinkage, chunk_size=chunk_size, check_inputs=check_inputs
        )
    x, y, c = _prepare(
        features, labels, name="sfda", num_classes=num_classes, check_inputs=check_inputs,
        dtype=dtype, width=width,
    )
    w = x.shape[1] if width is None else width
    adaptive = shrinkage is None
    s = 0.0 if adaptive else shrinkage
    return _sfda_kernel(x, y, w, s, num_classes=c, adaptive=adaptive)


class SFDAEnsemble(NamedTuple):
    """Result of :func:`sfda_ensemble`.

    Attributes:
      models: the selected model names, in the order they were added.
      scores: ``[k]`` SFDA score of the concatenated features of the first ``j + 1`` models.
    """

    models: tuple[str, ...]
    scores: Array


@jax.jit(static_argnames=("num_classes",))
def _score_candidates(chosen, candidates, widths, labels, *, num_classes):
    """SFDA of ``[chosen | candidate_m]`` for every (zero-padded) candidate, vmapped."""

    def one(cand, w):
        x = jnp.concatenate([chosen, cand], axis=1)
        return _sfda_kernel(x, labels, chosen.shape[1] + w, 0.0, num_classes=num_classes,
                            adaptive=True)

    return jax.vmap(one)(candidates, widths)


def sfda_ensemble(
    features_by_model: Mapping[str, ArrayLike],
    labels: ArrayLike,
    k: int,
    *,
    dtype: DTypeLike | None = None,
) -> SFDAEnsemble:
    r"""Select ``k`` models for an ensemble by greedy forward selection on the SFDA score.

    Our design (the SFDA paper mentions ensemble selection, but no reference code exists): the
    joint score of a set ``S`` of models is :func:`sfda` of their features concatenated
    column-wise, and starting from ``S = ∅`` each step adds

    .. math::
        m^\star = \arg\max_{m \notin S} \mathrm{SFDA}\bigl([F_{S} \mid F_m]\bigr)

    (ties: the first model in ``features_by_model`` order). Each step scores every remaining
    candidate in one vmapped call, zero-padding candidates to the widest and passing their true
    widths. SFDA does not depend on the column order, so the result is a set.

    Note:
      Greedy selection is optimal for ``k = 1`` (the best single model) but not guaranteed to find
      the best ``k``-subset for ``k > 1``, and adding a model can lower the joint score (SFDA is
      not monotone in the feature set); ``scores`` shows the joint score after each addition.
      Features of different models are concatenated as they are (no rescaling), so the adaptive
      shrinkage reflects the combined scale.

    Args:
      features_by_model: ``{name: [n, d_m] features}``, all with the same ``n``.
      labels: ``[n]`` integer labels ``0..c-1``.
      k: number of models to select, ``1 <= k <= len(features_by_model)``.
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.

    Returns:
      :class:`SFDAEnsemble` ``(models, scores)``.

    Raises:
      TypeError: ``k`` not an int; float labels; non-numeric features.
      ValueError: no models, ``k`` out of range, features of different ``n``, any check of
        :func:`sfda`.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> rng = np.random.default_rng(0)
      >>> y = np.arange(90) % 3
      >>> hub = {"noise": rng.normal(size=(90, 4)),
      ...        "good": rng.normal(size=(90, 4)) + 3.0 * np.eye(3, 4)[y]}
      >>> tj.sfda_ensemble(hub, y, k=1).models
      ('good',)
    """
    name = "sfda_ensemble"
    if not isinstance(features_by_model, Mapping) or not features_by_model:
        raise ValueError(f"{name}: features_by_model must be a non-empty mapping name -> features")
    k = _validation.check_positive_int(k, name=name, arg="k")
    if k > len(features_by_model):
        raise ValueError(
            f"{name}: k={k} exceeds the number of models ({len(features_by_model)})"
        )
    names = list(features_by_model)
    feats = [
        _validation.check_features(features_by_model[m], name=name, arg=f"features of {m!r}")
        for m in names
    ]
    n = _validation.check_same_n(name, **{f"features of {m!r}": f for m, f in zip(names, feats)})
    targets = _validation.check_targets(labels, n, name=name, allow_regression=False)
    c = targets.num_classes
    dt = compute_dtype(feats[0], dtype)
    y = jnp.asarray(targets.values, jnp.int32)
    xs = [jnp.asarray(f, dt) for f in feats]
    d_max = max(f.shape[1] for f in xs)
    padded = jnp.stack([jnp.pad(f, ((0, 0), (0, d_max - f.shape[1]))) for f in xs])
    widths = jnp.asarray([f.shape[1] for f in xs], jnp.int32)

    chosen_idx: list[int] = []
    scores = []
    chosen = jnp.zeros((n, 0), dt)
    for _ in range(k):
        all_scores = _score_candidates(chosen, padded, widths, y, num_classes=c)
        taken = np.zeros(len(names), bool)
        taken[chosen_idx] = True
        cand = np.where(taken, -np.inf, np.asarray(all_scores, np.float64))
        best = int(np.argmax(cand))  # first maximum: ties go to the earlier model
        chosen_idx.append(best)
        scores.append(all_scores[best])
        chosen = jnp.concatenate([chosen, xs[best]], axis=1)
    return SFDAEnsemble(tuple(names[i] for i in chosen_idx), jnp.stack(scores))

