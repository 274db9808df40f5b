"""Linear-algebra primitives shared by the metrics: Grams, PSD eigh, safe ops, projections.

Everything here is pure and jittable; shapes decide code paths (static), values never do.
All Gram/covariance products use ``precision="highest"`` so GPUs do not silently use TF32.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._typing import Array

__all__ = [
    "HIGHEST",
    "matmul",
    "sym",
    "sqdist",
    "gram",
    "kernel_gram",
    "center",
    "eig_floor",
    "eigh_psd",
    "Spectrum",
    "spectrum",
    "spectrum_from_gram",
    "safe_div",
    "safe_log",
    "ledoit_wolf_shrinkage",
    "logdet_eye_plus_gram",
    "principal_axes",
    "principal_components",
    "pca_scores",
    "after",
]

HIGHEST = jax.lax.Precision.HIGHEST


def matmul(a: Array, b: Array) -> Array:
    """``a @ b`` at full float precision (no TF32/bf16 passes on accelerators)."""
    return jnp.matmul(a, b, precision=HIGHEST)


def after(x: Array, *deps) -> Array:
    """``x`` itself (bit for bit), but as data that depends on ``deps``, so XLA runs whatever
    consumes it only after ``deps`` are computed.

    Used to order two LAPACK calls that nothing else orders, such as a fast path and its
    fallback that ``vmap`` turns into "compute both, select". XLA:CPU may otherwise run them at
    the same time, and jaxlib's batched LAPACK kernels each block an intra-op pool thread while
    waiting for their batch items on that same pool: on a 2-core machine a batched Cholesky and a
    batched ``eigh`` side by side hung ``score_hub("ped_sfda")`` with every pool thread asleep
    (jax 0.10.2, a real hub of six 2000×1280 feature sets). ``lax.optimization_barrier`` is not
    enough: XLA:CPU drops it before the thunks are scheduled. The dependency is an exact zero,
    ``0·t`` for the first element ``t`` of each leaf of ``deps`` (zeroed when not finite), added
    to ``x``: XLA does not fold ``0·t`` for floats, and a failed (NaN) fast path cannot leak
    into ``x``.
    """
    zero = jnp.zeros((), x.dtype)
    for d in jax.tree_util.tree_leaves(deps):
        t = jnp.ravel(d)[0].astype(x.dtype)
        zero = zero + 0.0 * jnp.where(jnp.isfinite(t), t, 0.0)
    return x + zero


def sym(a: Array) -> Array:
    """The symmetric part ``(a + aᵀ)/2`` over the last two axes (rounding asymmetry removed)."""
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def sqdist(a: Array, b: Array) -> Array:
    """Squared Euclidean distances ``[len(a), len(b)]`` between the rows of ``a`` and ``b``.

    Expanded form ``‖a_i‖² − 2 a_i·b_j + ‖b_j‖²`` (one matrix product), clamped at 0 where
    rounding makes it negative.
    """
    aa = jnp.sum(a * a, axis=1)[:, None]
    bb = jnp.sum(b * b, axis=1)[None, :]
    return jnp.maximum(aa - 2.0 * matmul(a, b.T) + bb, 0.0)


def gram(x: Array) -> Array:
    """``xᵀx`` ``[d, d]``, symmetrised, at full precision."""
    return sym(matmul(x.T, x))


def kernel_gram(x: Array) -> Array:
    """``x xᵀ`` ``[n, n]`` (the linear kernel matrix), symmetrised, at full precision."""
    return sym(matmul(x, x.T))


def center(x: Array) -> Array:
    """Subtract the column means (do this before forming a covariance, never E[xxᵀ]−μμᵀ)."""
    return x - jnp.mean(x, axis=0, keepdims=True)


def eig_floor(dtype, size: int) -> float:
    """Relative eigenvalue floor of a ``size``×``size`` PSD Gram: ``eps · max(1, log2 size)``.

    Eigenvalues below it (times ``λ_max``) are rounding noise of forming and decomposing the
    Gram: the exact zeros of rank-deficient centred Grams come out of ``eigh`` at up to about
    ``2.5 · eps · λ_max`` in float32 and float64 alike, growing slowly with the size (measured
    for sizes 16 to 1024). The floor grows as ``log2(size)`` (4 ulps of ``λ_max`` at size 16, 11
    at 2048), well below a ``size``-proportional floor (NumPy's ``matrix_rank`` rule), which
    zeroes genuine directions of anisotropic float32 features (``λ/λ_max ≈ 4e-6`` at size 256).
    """
    return float(jnp.finfo(dtype).eps) * max(1.0, math.log2(max(int(size), 1)))


def eigh_psd(a: Array, *, rtol: float | None = None) -> tuple[Array, Array]:
    """Eigen-decomposition of a symmetric PSD matrix with noise eigenvalues set to exactly 0.

    Returns ``(w, v)`` (ascending, as ``jnp.linalg.eigh``) with ``w`` clamped at 0 and every
    eigenvalue ``<= rtol · max(w)`` replaced by 0 (``rtol`` defaults to :func:`eig_floor`). Directions
    are kept, not dropped: callers count them.
    """
    w, v = jnp.linalg.eigh(a)
    if rtol is None:
        rtol = eig_floor(a.dtype, a.shape[-1])
    top = jnp.max(w, axis=-1, keepdims=True)
    w = jnp.where(w > rtol * top, w, 0.0)
    return w, v


def safe_div(num: Array, den: Array, fill: float = 0.0) -> Array:
    """``num / den`` where ``den != 0``, else ``fill``; NaN-free values and gradients."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), fill)


def safe_log(x: Array, fill: float = 0.0) -> Array:
    """``log(x)`` where ``x > 0``, else ``fill``; NaN-free values and gradients."""
    ok = x > 0
    return jnp.where(ok, jnp.log(jnp.where(ok, x, 1.0)), fill)


class Spectrum(NamedTuple):
    """Squared singular values of ``F`` and the targets projected on its left singular vectors.

    ``eigvals [k]`` are ``σ_i²`` (noise floored to 0), ``proj [k, t]`` are ``u_iᵀ y_t`` (0 where
    ``σ_i = 0``), ``residual [t]`` is ``‖y_t‖² − Σ_i (u_iᵀ y_t)²``, the energy of each target outside
    the span of the nonzero directions (``>= 0``). ``k = min(n, d)`` for the features path, ``d``
    for the statistics path.
    """

    eigvals: Array
    proj: Array
    residual: Array


def spectrum_from_gram(
    g: Array, ft_y: Array, y_sq: Array, *, rtol: float | None = None
) -> Spectrum:
    """Spectrum from ``FᵀF [d, d]``, ``FᵀY [d, t]`` and ``‖y_t‖² [t]``: ``u_iᵀy = v_iᵀFᵀy / σ_i``."""
    w, v = eigh_psd(g, rtol=rtol)
    proj = safe_div(matmul(v.T, ft_y), jnp.sqrt(w)[:, None])
    residual = jnp.maximum(y_sq - jnp.sum(proj**2, axis=0), 0.0)
    return Spectrum(w, proj, residual)


def spectrum(features: Array, targets: Array, *, rtol: float | None = None) -> Spectrum:
    """Spectrum of ``F [n, d]`` with targets ``Y [n, t]`` projected, without an SVD of ``F``.

    Chooses by static shape: ``n >= d`` decomposes ``FᵀF`` (``O(n d² + d³)``); ``n < d``
    decomposes ``F Fᵀ`` (``O(n² d + n³)``), whose eigenvectors are the ``u_i`` themselves and form
    a complete basis, so the residual is summed over the zero directions instead of obtained by a
    cancelling subtraction. Either way ``k = min(n, d)`` directions come back.
    """
    n, d = features.shape
    if n >= d:
        y_sq = jnp.sum(targets * targets, axis=0)
        return spectrum_from_gram(gram(features), matmul(features.T, targets), y_sq, rtol=rtol)
    w, u = eigh_psd(kernel_gram(features), rtol=rtol)
    full = matmul(u.T, targets)
    keep = (w > 0)[:, None]
    residual = jnp.sum(jnp.where(keep, 0.0, full**2), axis=0)
    return Spectrum(w, jnp.where(keep, full, 0.0), residual)


def ledoit_wolf_shrinkage(
    eigvals: Array, sum_norm4: Array, n: Array | int, width: Array | int
) -> tuple[Array, Array]:
    r"""Ledoit–Wolf shrinkage ``α`` and target scale ``μ̂`` from a covariance spectrum.

    The same estimate as scikit-learn's ``ledoit_wolf_shrinkage`` (``LedoitWolf``): with ``S`` the
    ``ddof=0`` covariance of the centred rows ``x_i`` (eigenvalues ``ℓ_k``),
    ``μ̂ = tr(S)/d``, ``δ = ‖S − μ̂I‖_F²/d = Σ_k (ℓ_k − μ̂)²/d``,
    ``β = (Σ_i‖x_i‖⁴/n − ‖S‖_F²)/(d n)``, then ``β ← min(β, δ)`` and ``α = β/δ`` (0 when
    ``β = 0``). The shrunk covariance is ``(1 − α) S + α μ̂ I``. Only ``Σ_i‖x_i‖⁴`` is needed
    besides the spectrum, so it streams like a Gram.

    Padding- and shape-invariant: ``eigvals`` may hold any number of entries (``min(n, d)`` from a
    kernel, a zero-padded ``d_max``); the ``width − #{ℓ_k > 0}`` zero eigenvalues of the true
    ``d``-dimensional ``S`` are counted, not masked, and ``δ`` is a sum of squares (no
    cancellation).

    Args:
      eigvals: eigenvalues of ``S`` (clamped at 0; exact zeros for null/padded directions).
      sum_norm4: ``Σ_i ‖x_i‖⁴`` over the centred rows.
      n: number of samples.
      width: the true feature width ``d`` (may be traced).

    Returns:
      ``(α, μ̂)`` scalars in ``eigvals.dtype``.
    """
    dtype = eigvals.dtype
    d = jnp.asarray(width, dtype)
    n = jnp.asarray(n, dtype)
    mu = jnp.sum(eigvals) / d
    live = eigvals > 0
    zeros = d - jnp.sum(live.astype(dtype))
    delta = (jnp.sum(jnp.where(live, (eigvals - mu) ** 2, 0.0)) + zeros * mu * mu) / d
    beta = (sum_norm4 / n - jnp.sum(eigvals * eigvals)) / (d * n)
    beta = jnp.minimum(beta, delta)
    alpha = jnp.where(beta > 0, safe_div(beta, delta), 0.0)
    return alpha, mu


def _top_eig_estimate(x: Array, iters: int = 12) -> Array:
    """Lower estimate of ``λ_max(xᵀx)`` per batch member of ``x [..., n, d]`` (power iteration).

    The Rayleigh quotient after ``iters`` steps from the all-ones direction, and never below the
    largest squared column norm (a diagonal entry of ``xᵀx``). ``O(iters·n·d)``; no Gram formed.
    """
    d = x.shape[-1]
    xt = jnp.swapaxes(x, -1, -2)
    v = jnp.ones(x.shape[:-2] + (d, 1), x.dtype) / jnp.sqrt(jnp.asarray(d, x.dtype))

    def body(_, v):
        w = matmul(xt, matmul(x, v))
        norm = jnp.sqrt(jnp.sum(w * w, axis=(-2, -1), keepdims=True))
        return safe_div(w, norm)

    v = jax.lax.fori_loop(0, iters, body, v)
    xv = matmul(x, v)
    rayleigh = jnp.sum(xv * xv, axis=(-2, -1))
    col = jnp.max(jnp.sum(x * x, axis=-2), axis=-1)
    return jnp.maximum(rayleigh, col)


def logdet_eye_plus_gram(x: Array, scale: Array, *, method: str = "auto") -> Array:
    r"""``log det(I + s·xᵀx)`` for ``x [..., n, d]`` and ``s >= 0`` of shape ``x.shape[:-2]``.

    The determinant is taken on the smaller side (``det(I_d + s xᵀx) = det(I_n + s x xᵀ)``,
    chosen by static shape), so zero rows or zero columns of ``x`` (masked samples, zero-padded
    features) contribute exactly ``log 1 = 0``. Methods:

    - ``"cholesky"``: Cholesky of ``I + s·G`` for the Gram ``G``: the fastest, but forming ``G``
      squares the condition number, so in float32 it loses accuracy (and fails, giving NaN)
      once ``eps·s·λ_max(G)`` approaches 1.
    - ``"svd"``: ``Σ log1p(s·σ_i²)`` from the singular values of ``x``: never forms ``G``, so
      it stays accurate where the Gram route does not, and never NaN, at a few times the cost
      of the Cholesky route. (The R factor of the stacked ``[√s·x; I]`` is as accurate but
      slower: XLA's CPU QR of a tall matrix costs more than its SVD.)
    - ``"auto"``: Cholesky when ``eps·s·λ̂_max <= 0.05`` for every batch member (``λ̂`` from a
      short power iteration; always true in float64 for reasonable scales), else SVD for the
      whole batch, through ``lax.cond``. Under ``vmap`` the condition is batched, so both
      branches run.

    Args:
      x: ``[..., n, d]``.
      scale: ``s``, broadcastable to ``x.shape[:-2]`` (may be traced).
      method: ``"auto"``, ``"cholesky"`` or ``"svd"`` (static).

    Returns:
      ``x.shape[:-2]`` log-determinants (``>= 0``).
    """
    if method not in ("auto", "cholesky", "svd"):
        raise ValueError(f"logdet_eye_plus_gram: unknown method {method!r}")
    batch = x.shape[:-2]
    n, d = x.shape[-2:]
    s = jnp.broadcast_to(jnp.asarray(scale, x.dtype), batch)
    xt = jnp.swapaxes(x, -1, -2)
    tall = x if n >= d else xt  # [..., big, small]
    k = tall.shape[-1]
    eye = jnp.eye(k, dtype=x.dtype)

    def chol():
        g = sym(matmul(jnp.swapaxes(tall, -1, -2), tall))
        a = jnp.broadcast_to(eye, g.shape) + s[..., None, None] * g
        low = jnp.linalg.cholesky(a)
        return 2.0 * jnp.sum(jnp.log(jnp.diagonal(low, axis1=-2, axis2=-1)), axis=-1)

    def svd(tall=tall):
        sv = jnp.linalg.svd(tall, compute_uv=False)
        return jnp.sum(jnp.log1p(s[..., None] * sv * sv), axis=-1)

    if method == "cholesky":
        return chol()
    if method == "svd":
        return svd()
    eps = jnp.finfo(x.dtype).eps
    risk = eps * s * _top_eig_estimate(tall)
    fast = chol()  # cheap next to the SVD; ordered before it (see `after`)
    return jax.lax.cond(jnp.all(risk <= 0.05), lambda: fast, lambda: svd(after(tall, fast)))


_SIGNS = (None, "loadings", "scores")


def principal_axes(scatter: Array, *, rtol: float | None = None) -> tuple[Array, Array]:
    """:func:`eigh_psd` of a ``d×d`` scatter in decreasing order: ``(w [d], V [d, d])``.

    The principal variances (times ``n``) and directions of the samples the scatter was
    formed from; noise eigenvalues are floored to 0 as in :func:`eigh_psd` (``rtol=0.0`` only
    clamps negative ones).
    """
    w, v = eigh_psd(scatter, rtol=rtol)
    return w[..., ::-1], v[..., ::-1]


def principal_components(
    x: Array, k: int | None = None, *, rtol: float | None = None, signs: str | None = None
) -> tuple[Array, Array]:
    r"""PCA of ``x [n, d]`` from one ``eigh`` of its smaller-side Gram: ``(w [m], Z [n, k])``.

    With ``X_c`` the centred rows, ``w`` are the ``m = min(n, d)`` eigenvalues of the scatter
    ``X_cᵀX_c`` in decreasing order (noise floored to 0 as in :func:`eigh_psd`) and ``Z`` the
    scores on the ``k`` leading directions (default ``k = m``, static):

    .. math:: Z = X_c V_k = U_k \operatorname{diag}(\sqrt{w_k}),

    from the ``d×d`` scatter when ``n >= d`` (``X_c V_k``), else from the ``n×n`` kernel
    ``X_c X_cᵀ``, which has the same nonzero spectrum and whose eigenvectors ``U`` give the
    scores directly (the direction of each score column is ``v_i = X_cᵀu_i / √w_i`` either way).
    Zero-padded columns of ``x`` add exact zero eigenvalues, which sort last.

    ``signs`` fixes the arbitrary sign of each component: ``None`` keeps ``eigh``'s (metrics that
    see the scores only through squares or distances), ``"loadings"`` makes the largest-magnitude
    entry of each direction ``v_i`` positive (scikit-learn's PCA since 1.5), ``"scores"`` the
    largest-magnitude score of each column (scikit-learn before 1.5).
    """
    if signs not in _SIGNS:
        raise ValueError(f"principal_components: signs must be one of {_SIGNS}, got {signs!r}")
    n, d = x.shape
    m = min(n, d)
    k = m if k is None else min(int(k), m)
    xc = center(x)
    if n >= d:
        w, v = principal_axes(gram(xc), rtol=rtol)
        z = matmul(xc, v[:, :k])
    else:
        w, u = principal_axes(kernel_gram(xc), rtol=rtol)
        v = None
        z = u[:, :k] * jnp.sqrt(w[:k])[None, :]
    if signs is not None:
        ref = z if signs == "scores" else (v[:, :k] if v is not None else matmul(xc.T, z))
        top = jnp.take_along_axis(ref, jnp.argmax(jnp.abs(ref), axis=0)[None, :], axis=0)
        z = jnp.where(top < 0, -z, z)
    return w, z


def pca_scores(x: Array, k: int, *, method: str = "gram") -> Array:
    """Scores ``[n, k]`` of ``x [n, d]`` on its top-``k`` principal directions (PCA, centred).

    ``method="gram"``: :func:`principal_components` (``x_c V_k`` from the ``d×d`` scatter when
    ``n >= d``, else ``U_k diag(√λ_k)`` from the ``n×n`` kernel; negative eigenvalues clamped).
    ``method="svd"``: ``U_k diag(σ_k)`` from a thin SVD of the centred ``x`` (what scikit-learn's
    ``PCA(svd_solver="full")`` does): costlier, but the directions of small components stay
    accurate in float32 (the Gram route mixes components whose variances differ by less than
    ``~eps·λ_max``, which matters when the metric weights components separately).
    Columns are in decreasing order of variance. Signs are arbitrary (see
    :func:`principal_components` for the conventions): metrics built on these scores should see
    them only through squares. Zero-padded columns of ``x`` add exact zero eigenvalues and do not
    change the scores when ``k`` is at most the rank of the unpadded data.
    """
    if method not in ("gram", "svd"):
        raise ValueError(f"pca_scores: unknown method {method!r}")
    if method == "svd":
        u, s, _ = jnp.linalg.svd(center(x), full_matrices=False)
        return u[:, :k] * s[:k][None, :]
    return principal_components(x, k, rtol=0.0)[1]
