"""TransRate: the coding rate of the features minus their average coding rate within classes."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation
from .._dtypes import compute_dtype
from .._typing import Array, ArrayLike, DTypeLike
from ..linalg import after, center, logdet_eye_plus_gram, matmul, safe_div
from ..registry import register
from ..stats import FeatureStats, class_block, class_grams, sort_by_class
from ..streaming import fold

__all__ = ["transrate"]

_CLASS_WEIGHTS = ("uniform", "size")
_METHODS = ("auto", "cholesky", "svd")
_BLOCK_BUDGET = 2**25  # elements of the per-chunk class blocks (128 MiB in float32)


def _round_block(m: int, n: int) -> int:
    # Round the class block up to a multiple of 8 (fewer recompilations across data sets).
    return int(min(n, max(1, -(-m // 8) * 8)))


def _rank(z: Array, width) -> Array:
    """``rank(zᵀz)`` from the singular values of ``z`` (never its Gram, whose float32 noise floor
    ``~eps·λ_max`` hides genuine directions the reference counts).

    float64: NumPy's ``matrix_rank`` on the ``d×d`` Gram (the reference): ``σ² > σ²_max·d·eps``.
    float32: that cut (``σ/σ_max ≈ 1e-7``) is below float32 resolution, so NumPy's rule on ``z``
    itself is used, ``σ > σ_max·max(n, d)·eps``. ``d`` is the true ``width``.
    """
    n = z.shape[0]
    s = jnp.linalg.svd(z, compute_uv=False)
    dt = s.dtype
    eps = jnp.finfo(dt).eps
    width = jnp.asarray(width, dt)
    smax = jnp.max(s)
    if dt == jnp.float64:
        keep = s * s > smax * smax * width * eps
    else:
        keep = s > smax * jnp.maximum(width, n) * eps
    return jnp.sum(keep.astype(dt))


@jax.jit(
    static_argnames=(
        "num_classes", "block", "class_weight", "row_normalize", "rank_normalize", "method"
    )
)
def _transrate(
    features, labels, width, eps, *, num_classes, block, class_weight, row_normalize,
    rank_normalize, method,
):
    z = center(features)
    if row_normalize:
        norm = jnp.sqrt(jnp.sum(z * z, axis=1))
        z = safe_div(z, norm[:, None])
    n, d = z.shape
    dt = z.dtype
    eps = jnp.asarray(eps, dt)
    r_all = 0.5 * logdet_eye_plus_gram(z, 1.0 / (n * eps), method=method)

    # Per-class terms on class blocks [m, d] cut from the label-sorted rows; classes go through
    # lax.map in chunks of `chunk` (one batched determinant per chunk) to bound memory.
    rows, starts, counts = sort_by_class(z, labels, num_classes, block)
    rows = after(rows, r_all)  # class determinants after the overall one (see linalg.after)
    per_class = block * d + (block + d) * min(block, d)
    chunk = max(1, min(num_classes, _BLOCK_BUDGET // per_class))
    n_chunks = -(-num_classes // chunk)
    extra = n_chunks * chunk - num_classes
    starts_p = jnp.concatenate([starts, jnp.zeros((extra,), starts.dtype)]).reshape(n_chunks, chunk)
    counts_p = jnp.concatenate([counts, jnp.zeros((extra,), counts.dtype)]).reshape(n_chunks, chunk)

    def chunk_rates(args):
        st, cnt = args
        blocks = jax.vmap(lambda a, b: class_block(rows, a, b, block))(st, cnt)
        scale = safe_div(jnp.ones((), dt), cnt.astype(dt) * eps)  # empty class: log det I = 0
        return 0.5 * logdet_eye_plus_gram(blocks, scale, method=method)

    r_cls = jax.lax.map(chunk_rates, (starts_p, counts_p)).reshape(-1)[:num_classes]
    cnt = counts.astype(dt)
    if class_weight == "uniform":
        present = (cnt > 0).astype(dt)
        weights = present / jnp.sum(present)
    else:
        weights = cnt / n
    score = r_all - jnp.sum(weights * r_cls)
    if rank_normalize:
        score = safe_div(score, _rank(z, width))
    return score


# ----------------------------------------------------------------------------- from statistics


def _logdet_gram(g, s, method):
    """``log det(I + s·G)`` of a ``d×d`` PSD Gram (the statistics hold Grams, not rows).

    ``"cholesky"``: Cholesky of ``I + s·G``. ``"svd"``: ``Σ log1p(s·λ_i)`` from ``eigvalsh(G)``
    (clamped at 0; the Gram analogue of the data path's SVD: never NaN, but no more accurate than
    the Gram). ``"auto"``: Cholesky when ``eps·s·λ̂_max <= 0.05`` (``λ̂`` from 12 power steps),
    else the eigenvalues; a non-finite Cholesky result also falls back to them.
    """
    d = g.shape[-1]
    dt = g.dtype

    def chol(_):
        low = jnp.linalg.cholesky(jnp.eye(d, dtype=dt) + s * g)
        return 2.0 * jnp.sum(jnp.log(jnp.diagonal(low)))

    def eig(g):
        return jnp.sum(jnp.log1p(s * jnp.maximum(jnp.linalg.eigvalsh(g), 0.0)))

    if method == "cholesky":
        return chol(None)
    if method == "svd":
        return eig(g)
    v = jax.lax.fori_loop(
        0, 12, lambda _, u: safe_div(matmul(g, u), jnp.linalg.norm(matmul(g, u))),
        jnp.full((d,), 1.0 / math.sqrt(d), dt),
    )
    risk = jnp.finfo(dt).eps * s * jnp.dot(v, matmul(g, v))
    fast = chol(None)  # the eigenvalues only when it is unsafe or not finite, and after it
    use_fast = (risk <= 0.05) & jnp.isfinite(fast)
    return jax.lax.cond(use_fast, lambda _: fast, lambda _: eig(after(g, fast)), None)


@jax.jit(static_argnames=("class_weight", "rank_normalize", "method"))
def _transrate_grams(
    total, grams, dev, counts, n, width, eps, *, class_weight, rank_normalize, method
):
    """TrR from the Gram ``ZᵀZ`` and the class Grams ``Z_cᵀZ_c = grams[c] + dev[c] dev[c]ᵀ``."""
    dt = total.dtype
    eps = jnp.asarray(eps, dt)
    r_all = 0.5 * _logdet_gram(total, 1.0 / (n * eps), method)
    scale = safe_div(jnp.ones((), dt), counts * eps)  # empty class: log det I = 0

    def rate(args):
        g, u, s = args
        return 0.5 * _logdet_gram(g + jnp.outer(u, u), s, method)

    r_cls = jax.lax.map(rate, (after(grams, r_all), dev, scale))  # see linalg.after
    if class_weight == "uniform":
        present = (counts > 0).astype(dt)
        weights = present / jnp.sum(present)
    else:
        weights = counts / n
    score = r_all - jnp.sum(weights * r_cls)
    if rank_normalize:
        # NumPy's matrix_rank of the d×d Gram (the reference's rule): λ > λ_max·d·eps.
        lam = jnp.linalg.eigvalsh(total)
        top = jnp.max(lam)
        keep = lam > top * jnp.asarray(width, dt) * jnp.finfo(dt).eps
        score = safe_div(score, jnp.sum(keep.astype(dt)))
    return score


@functools.partial(
    jax.jit, static_argnames=("num_classes", "row_normalize"), donate_argnums=(0,)
)
def _gram_update(acc, x, y, w, mu, *, num_classes, row_normalize):
    r = x - mu[None, :]
    if row_normalize:
        r = safe_div(r, jnp.sqrt(jnp.sum(r * r, axis=1))[:, None])
    return class_grams(r, y, num_classes, w, init=acc)


def _transrate_streamed(
    stats, second_pass, width, eps, *, class_weight, row_normalize, rank_normalize, method,
    chunk_size, check_inputs,
):
    name = "transrate"
    d, c = stats.num_features, stats.num_classes
    dt = stats.scatter.dtype
    w = d if width is None else width
    counts = stats.class_counts
    kw = dict(class_weight=class_weight, rank_normalize=rank_normalize, method=method)
    if stats.has_class_scatter and not row_normalize:
        # Z_cᵀZ_c = W_c + n_c (μ_c − μ)(μ_c − μ)ᵀ for the globally centred rows of class c.
        dev = (stats.class_means() - stats.mean[None, :]) * jnp.sqrt(counts)[:, None]
        return _transrate_grams(
            stats.scatter, stats.class_scatter, dev, counts, stats.count, w, eps, **kw
        )
    if second_pass is None:
        what = (
            "row_normalize=True needs the rows again (they are normalised after centring)"
            if row_normalize else
            "the class coding rates need the per-class scatters, which these statistics lack"
        )
        fix = (
            "pass second_pass= (the (features, labels) chunks again)" if row_normalize else
            "compute the statistics with tj.stream_stats(..., class_scatter=True) (c·d² floats) "
            "or pass second_pass= (the (features, labels) chunks again)"
        )
        raise ValueError(f"{name}: with stats=, {what}: {fix}")
    grams = fold(
        functools.partial(_gram_update, num_classes=c, row_normalize=bool(row_normalize)),
        jnp.zeros((c, d, d), dt), second_pass, args=(stats.mean,), name=name, width=d,
        num_classes=c, count=stats.count, dtype=dt, chunk_size=chunk_size,
        check_inputs=check_inputs,
    )
    return _transrate_grams(
        jnp.sum(grams, axis=0), grams, jnp.zeros((c, d), dt), counts, stats.count, w, eps, **kw
    )


@register(
    "transrate",
    tasks=("classification",),
    summary="coding rate of the features minus the mean coding rate within classes",
    paper="Huang et al., ICML 2022",
    label_options=lambda y: {"max_class_size": int(np.bincount(np.asarray(y)).max())},
    streams=True,
)
def transrate(
    features: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    *,
    stats: FeatureStats | None = None,
    second_pass=None,
    chunk_size: int | None = None,
    eps: float = 1e-4,
    class_weight: str = "uniform",
    row_normalize: bool = False,
    rank_normalize: bool = False,
    method: str = "auto",
    max_class_size: int | None = None,
    num_classes: int | None = None,
    width: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    check_inputs: bool = True,
) -> Array:
    r"""TransRate: mutual information between features and labels as a coding-rate difference.

    With ``Z`` the globally centred features (``n`` rows) and ``Z_c`` its rows of class ``c``
    (``n_c`` rows, not re-centred),

    .. math::
        R(Z, \epsilon) = \tfrac12 \log\det\Bigl(I + \tfrac{1}{n\epsilon} Z^\top Z\Bigr),
        \qquad
        \mathrm{TrR} = R(Z, \epsilon) - \sum_{c} w_c\, R(Z_c, \epsilon)

    with ``w_c = 1/K`` over the ``K`` classes present. Higher is better.

    Note:
      The default is the paper's appendix code: ``1/(nε)`` inside the determinant (the theory has
      ``d/(nε²)``), ``ε = 1e-4``, global centring only, uniform class weights. The official
      repository (``Long-Kai/TransRate``) weights classes by ``n_c/n`` and, for its
      ``Z_centralized`` logs, L2-normalises the centred rows (``normalize=True``) and divides by
      ``rank(ZᵀZ/n)`` (``normalize_opt="rank"``): ``class_weight="size", row_normalize=True,
      rank_normalize=True``; its projected variant (not runnable as committed) is not provided.
      Deviations: an empty class is left out of the average (the reference divides by
      ``n_c = 0``); a zero row under ``row_normalize`` stays zero (reference: NaN).
      Log-determinant routes and float32 accuracy: ``docs/numerics.md``; what ``stats=`` needs:
      ``docs/streaming.md``.

    Args:
      features: ``[n, d]`` features.
      labels: ``[n]`` integer labels ``0..c-1``.
      stats: classification :class:`~transferjax.FeatureStats` in place of ``features, labels``,
        with ``class_scatter`` or with ``second_pass``.
      second_pass: the ``(features, labels)`` chunks again (an iterable or a callable returning
        one), for ``stats`` without ``class_scatter`` or with ``row_normalize``.
      chunk_size: rows per jitted update of the second pass (default: the first chunk's size).
      eps: the distortion ``ε > 0`` (default 1e-4; traced; the paper tunes 1e-5 … 5e-3).
      class_weight: ``"uniform"`` (default, ``1/K``) or ``"size"`` (``n_c/n``).
      row_normalize: L2-normalise the centred rows first (default False).
      rank_normalize: divide the score by ``rank(ZᵀZ/n)``, NumPy's tolerance (default False).
      method: log-determinant route, ``"auto"`` (default), ``"cholesky"`` or ``"svd"``.
      max_class_size: static class block size, at least the largest class (default: from
        concrete labels; with traced labels ``n``, correct but slower).
      num_classes: ``c``; required when ``labels`` are traced.
      width: true width of zero-padded features (only the rank tolerance reads it).
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.
      check_inputs: run the eager checks (skipped automatically for traced values).

    Returns:
      Scalar score (compute dtype). Higher is better.

    Raises:
      ValueError: malformed features or labels; ``eps <= 0``; ``max_class_size`` below the
        largest class; an unknown ``class_weight`` or ``method``; both or neither of
        ``features, labels`` and ``stats``; ``stats`` that need a ``second_pass`` without one.
      TypeError: non-numeric features; float labels (no regression form).

    References:
      Huang, Huang, Rong, Yang, Wei. Frustratingly Easy Transferability Estimation. ICML 2022.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> y = np.arange(200) % 4
      >>> noise = np.random.default_rng(0).normal(size=(200, 8))
      >>> bool(tj.transrate(noise + 2 * np.eye(4, 8)[y], y) > tj.transrate(noise, y))
      True
    """
    name = "transrate"
    if class_weight not in _CLASS_WEIGHTS:
        raise ValueError(f"{name}: class_weight must be one of {_CLASS_WEIGHTS}, got {class_weight!r}")
    if method not in _METHODS:
        raise ValueError(f"{name}: method must be one of {_METHODS}, got {method!r}")
    if max_class_size is not None:
        max_class_size = _validation.check_positive_int(
            max_class_size, name=name, arg="max_class_size"
        )
    if _validation.is_concrete(eps):
        e = float(np.asarray(eps))
        if not (math.isfinite(e) and e > 0):
            raise ValueError(f"{name}: eps must be a finite number > 0, got {eps!r}")
    if stats is not None:
        _validation.check_stats(stats, name=name, features=features, labels=labels)
        return _transrate_streamed(
            stats, second_pass, width, eps, class_weight=class_weight,
            row_normalize=bool(row_normalize), rank_normalize=bool(rank_normalize),
            method=method, chunk_size=chunk_size, check_inputs=check_inputs,
        )
    _validation.data_or_stats(features, labels, None, name=name)
    features, targets = _validation.prepare(
        features, labels, name=name, num_classes=num_classes, check_inputs=check_inputs,
        allow_regression=False, dtype=dtype, width=width,
    )
    y, c = targets.values, targets.num_classes
    n = int(np.shape(features)[0])
    if _validation.is_concrete(y):
        largest = int(np.bincount(np.asarray(y).astype(np.int64), minlength=c).max())
        if max_class_size is not None and int(max_class_size) < largest:
            raise ValueError(
                f"{name}: max_class_size={max_class_size} is smaller than the largest class "
                f"({largest} samples)"
            )
        block = _round_block(largest if max_class_size is None else int(max_class_size), n)
    else:
        block = n if max_class_size is None else _round_block(int(max_class_size), n)
    dt = compute_dtype(features, dtype)
    x = jnp.asarray(features, dt)
    w = x.shape[1] if width is None else width
    return _transrate(
        x, jnp.asarray(y), w, eps,
        num_classes=c, block=block, class_weight=class_weight, row_normalize=bool(row_normalize),
        rank_normalize=bool(rank_normalize), method=method,
    )
