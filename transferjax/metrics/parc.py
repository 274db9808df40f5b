"""PARC: how well the pairwise dissimilarities of the features agree with those of the labels."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from .. import _validation
from .._typing import Array, ArrayLike, DTypeLike
from ..linalg import matmul, principal_components, safe_div
from ..loops import fold_pair_tiles
from ..registry import register

__all__ = ["parc"]

_NAME = "parc"
_BLOCK = 1024  # samples per tile side: O(_BLOCK²) pair values at a time
_MAX_N = 65536  # pair counts are int32: n(n-1)/2 < 2^31
# Binning of the pair dissimilarities d ∈ [0, 2]: the float32 bit pattern of 1 + d ∈ [1, 3]
# (monotone in d) without its low `shift` mantissa bits, by compute dtype size: bins 2^-17 wide
# on [1, 2) in float32 (as coarse as float32 correlations are accurate), 2^-20 in float64, twice
# that on [2, 3]. Values that share a bin count as tied.
_SHIFT = {4: 6, 8: 3}
_ONE_BITS = 0x3F800000  # bits of float32 1.0
_THREE_BITS = 0x40400000  # bits of float32 3.0
_LANES = 1024  # the bins are summed in two stages of this many (float32 accuracy)
_REFINE = 2**15  # pairs sorted exactly in the one-tile case (those sharing a bin)


def _standardize(x: Array, width) -> tuple[Array, Array]:
    """Column z-scores (``ddof = 0``; a constant column becomes 0) and its true width."""
    xc = x - jnp.mean(x, axis=0, keepdims=True)
    # Each column is scaled to a largest magnitude of 1 before squaring: no column underflows
    # (tiny columns next to huge ones) or overflows.
    span = jnp.max(jnp.abs(xc), axis=0)
    varying = (jnp.max(x, axis=0) > jnp.min(x, axis=0)) & (span > 0)
    q = xc / jnp.where(varying, span, 1.0)[None, :]
    sd = jnp.sqrt(jnp.mean(q * q, axis=0))
    z = jnp.where(varying[None, :], q / jnp.where(varying, sd, 1.0)[None, :], 0.0)
    return z, width


def _reduce(x: Array, width, dims: int) -> tuple[Array, Array]:
    """Scores on the top ``min(dims, n, width)`` principal components, largest loading positive.

    Columns beyond that count (zero-padded features, the clamp) or with no variance are set to 0;
    the returned width is the count, so they act like zero padding downstream.
    """
    n, d = x.shape
    k = min(dims, n, d)
    z = principal_components(x, k, rtol=0.0, signs="loadings")[1]
    var = jnp.sum(z * z, axis=0)
    k_live = jnp.minimum(jnp.minimum(width, n), dims)
    live = (jnp.arange(k) < k_live) & (var > jnp.finfo(z.dtype).eps * jnp.max(var))
    return jnp.where(live[None, :], z, 0.0), k_live


def _row_units(x: Array, width, dims: int | None) -> tuple[Array, Array]:
    """Rows whose inner products are the row correlations of the standardised features.

    Returns ``(u [n, d'], a [n])`` with ``corr(z_i, z_j) = ⟨u_i, u_j⟩ − a_i a_j``: the rows are
    centred over their true width, and the ``pad = d' − width`` zero-padded entries of each row
    (``−m_i`` after centring) are taken out of the inner product by count,
    ``⟨z̃_i, z̃_j⟩ = ⟨z_i − m_i, z_j − m_j⟩ − pad·m_i m_j``.
    """
    dt = x.dtype
    if dims is not None:
        x, width = _reduce(x, width, dims)
    z, width = _standardize(x, width)
    w = jnp.asarray(width, dt)
    pad = z.shape[1] - w
    m = jnp.sum(z, axis=1) / w
    zc = z - m[:, None]
    sq = jnp.sum(zc * zc, axis=1) - pad * m * m
    # A row whose standardised features are all equal has no correlation: it gets 0 (d = 1).
    eps = jnp.finfo(dt).eps
    flat = sq <= 16.0 * eps * eps * jnp.sum(z * z, axis=1)
    inv = jnp.where(flat, 0.0, lax.rsqrt(jnp.where(flat, 1.0, sq)))
    return zc * inv[:, None], jnp.sqrt(pad) * m * inv


def _num_bins(shift: int) -> int:
    """Bins per label side: up to float32 3.0, padded to a multiple of ``_LANES``."""
    return ((_THREE_BITS - _ONE_BITS) >> shift) + _LANES


def _keys(corr: Array, yi: Array, yj: Array, keep: Array, shift: int) -> Array:
    """Histogram index of each pair: its bin, plus ``B`` (the bins per side) across classes;
    ``2B`` if not kept (the last slot collects the pairs a tile does not count)."""
    nb = _num_bins(shift)
    shifted = (2.0 - jnp.clip(corr, -1.0, 1.0)).astype(jnp.float32)  # 1 + d ∈ [1, 3]
    key = (lax.bitcast_convert_type(shifted, jnp.int32) - _ONE_BITS) >> shift
    key = key + nb * (yi[:, None] != yj[None, :]).astype(jnp.int32)
    return jnp.where(keep, key, 2 * nb)


def _histogram(keys: Array, hist: Array) -> Array:
    return hist.at[keys.ravel()].add(1)


@jax.jit(static_argnames=("dims", "block"))
def _parc(features, labels, width, *, dims, block):
    n = features.shape[0]
    dt = features.dtype
    shift = _SHIFT[jnp.dtype(dt).itemsize]
    nb = _num_bins(shift)
    empty = jnp.zeros(2 * nb + 1, jnp.int32)
    u, a = _row_units(features, width, dims)
    zero = jnp.zeros((), dt)
    if n <= block:  # one tile: the n×n correlations at once
        corr = matmul(u, u.T) - a[:, None] * a[None, :]
        idx = jnp.arange(n)
        keys = _keys(corr, labels, labels, idx[:, None] < idx[None, :], shift)
        hist = _histogram(keys, empty)
        same, diff = hist[:nb], hist[nb : 2 * nb]
        if jnp.dtype(dt).itemsize < 8:  # float32 correlations are as coarse as the bins
            return _from_counts(same, diff, zero, zero, dt)
        # Equal correlations computed along different paths differ by a few ulps: tie them.
        tol = 16.0 * math.sqrt(u.shape[1]) * float(jnp.finfo(dt).eps)
        return _from_counts(same, diff, *_within_bins(corr, keys, same, diff, tol, dt), dt)

    def tile_counts(hist, tile):
        b = tile.rows.shape[0]
        ui = lax.dynamic_slice_in_dim(u, tile.row_start, b)
        uj = lax.dynamic_slice_in_dim(u, tile.col_start, b)
        ai = lax.dynamic_slice_in_dim(a, tile.row_start, b)
        aj = lax.dynamic_slice_in_dim(a, tile.col_start, b)
        yi = lax.dynamic_slice_in_dim(labels, tile.row_start, b)
        yj = lax.dynamic_slice_in_dim(labels, tile.col_start, b)
        corr = matmul(ui, uj.T) - ai[:, None] * aj[None, :]
        keep = tile.rows_owned[:, None] & tile.cols_owned[None, :]
        keep = keep & (tile.rows[:, None] < tile.cols[None, :])
        return _histogram(_keys(corr, yi, yj, keep, shift), hist)

    hist = fold_pair_tiles(tile_counts, empty, n, block=block)
    return _from_counts(hist[:nb], hist[nb : 2 * nb], zero, zero, dt)


def _within_bins(corr: Array, keys: Array, same: Array, diff: Array, tol: float, dt):
    """Exact corrections to the binned rank sum and tie sum, from the bins holding 2+ pairs.

    The binned count credits each different-class pair with half of the same-class pairs of its
    bin and treats each bin as one tie group. Here the pairs of every bin holding two or more are
    sorted by their exact dissimilarity (at most ``_REFINE`` pairs; when there are more, only the
    bins holding both kinds, and ``Σ t³`` keeps the bins; when even those are more, no
    correction): each different-class pair is credited with the same-class pairs strictly below
    it in its bin plus half of those equal to it, and the true tie groups replace the bins in
    ``Σ t³``. Within a bin, sorted values less than ``tol`` apart are equal.

    Returns:
      ``(rank-sum correction, Σ t³ correction)``.
    """
    nb = same.shape[0]
    keys = keys.ravel()
    kept = keys < 2 * nb
    is_diff = keys >= nb
    bins = jnp.where(is_diff, keys - nb, keys)
    bins = jnp.where(kept, bins, 0)
    size = min(_REFINE, keys.shape[0])
    # Every bin of two or more pairs when they fit, else those holding both kinds (rank sum only)
    shared = kept & ((same + diff) >= 2)[bins]
    all_shared = jnp.sum(shared) <= size
    shared = jnp.where(all_shared, shared, kept & ((same > 0) & (diff > 0))[bins])
    count = jnp.sum(shared)
    slot = jnp.where(shared, jnp.cumsum(shared) - 1, size)  # the first `size` of them, in order
    every = jnp.arange(keys.shape[0], dtype=jnp.int32)
    pick = jnp.zeros(size, jnp.int32).at[slot].set(every, mode="drop")
    valid = jnp.arange(size) < count
    value = jnp.where(valid, -corr.ravel()[pick], jnp.inf)  # ascending d
    bins = jnp.where(valid, bins[pick], nb)
    is_same = valid & ~is_diff[pick]
    value, bins, is_same, valid = lax.sort((value, bins, is_same, valid), num_keys=1)
    i = jnp.arange(size, dtype=jnp.int32)
    step = (bins[1:] != bins[:-1]) | ~(value[1:] - value[:-1] <= tol)  # inf - inf: a step
    tie = jnp.cumsum(jnp.concatenate([jnp.ones(1, jnp.int32), step.astype(jnp.int32)])) - 1
    tie_first = jnp.full(size, size, jnp.int32).at[tie].min(i)[tie]
    bin_first = jnp.full(nb + 1, size, jnp.int32).at[bins].min(i)[bins]
    before = jnp.cumsum(is_same.astype(jnp.int32)) - is_same  # same-class pairs before i
    below = (before[tie_first] - before[bin_first]).astype(dt)
    equal = jnp.zeros(size, dt).at[tie].add(is_same.astype(dt))[tie]
    binned = same[jnp.minimum(bins, nb - 1)].astype(dt)
    credit = jnp.where(valid & ~is_same, below + 0.5 * equal - 0.5 * binned, 0.0)
    # Σ t³ over the true tie groups of those bins minus over the bins themselves
    tie_size = jnp.zeros(size, dt).at[tie].add(valid.astype(dt))
    total = (same + diff).astype(dt)
    cubes = jnp.sum(tie_size**3) - _sum(jnp.where(total >= 2, total**3, 0.0))
    fits = count <= size
    return jnp.where(fits, jnp.sum(credit), 0.0), jnp.where(all_shared, cubes, 0.0)


def _sum(v: Array) -> Array:
    return jnp.sum(jnp.sum(v.reshape(-1, _LANES), axis=1))


def _from_counts(same: Array, diff: Array, refine: Array, cubes: Array, dt) -> Array:
    """PARC from the binned counts of same-/different-class pairs, with exact corrections to
    the rank sum of the different-class pairs (``refine``) and to ``Σ t³`` (``cubes``)."""
    n0, n1 = jnp.sum(same), jnp.sum(diff)
    below = jnp.cumsum(same) - same
    above = n0 - below - same
    # Σ over different-class pairs of (#same-class pairs below − #above) = (2·AUC − 1)·n0·n1.
    n0f = jnp.maximum(n0, 1).astype(dt)
    n1f = jnp.maximum(n1, 1).astype(dt)
    spread = (below - above).astype(dt) / n0f
    gap = _sum(diff.astype(dt) * spread) / n1f + 2.0 * refine / n0f / n1f
    total = (n0 + n1).astype(dt)
    share = (same + diff).astype(dt) / total
    tied = 1.0 - _sum(share * share * share) - cubes / total**3  # 12 σ_r² / M², ties included
    balance = jnp.sqrt(n0.astype(dt) / total) * jnp.sqrt(n1.astype(dt) / total)
    return safe_div(100.0 * math.sqrt(3.0) * gap * balance, jnp.sqrt(jnp.maximum(tied, 0.0)))


def _check_dims(dims):
    if dims is None:
        return None
    return _validation.check_positive_int(dims, name=_NAME, arg="dims")


@register(
    "parc",
    tasks=("classification",),
    inputs="features",
    summary="Spearman correlation of pairwise feature and label dissimilarities (percent)",
    paper="Bolya et al., NeurIPS 2021",
    scale_invariant=True,
)
def parc(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    dims: int | None = None,
    num_classes: int | None = None,
    width: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    check_inputs: bool = True,
) -> Array:
    r"""PARC: rank agreement between the pairwise dissimilarities of features and of labels.

    Each feature column is standardised (``ddof = 0``), then every pair of samples ``i < j`` gets
    the dissimilarity ``d_ij = 1 − corr(z_i, z_j)`` (Pearson correlation of the two *rows*) and
    the label dissimilarity ``ℓ_ij`` (0 within a class, a constant above 0 across classes). PARC
    is 100 × the Spearman correlation of the ``M = n(n − 1)/2`` values of ``d`` and ``ℓ``. As
    ``ℓ`` takes two values this is a rank-sum statistic: with ``n₀``/``n₁`` the numbers of
    same-/different-class pairs and ``AUC = P(d_diff > d_same) + ½ P(tie)``,

    .. math::
        \mathrm{PARC} = 100\,\sqrt{n_0 n_1}\;\frac{\mathrm{AUC} - \tfrac12}{\sigma_r},
        \qquad \sigma_r^2 = \frac{M^2 - 1}{12} - \frac{\sum_t (t^3 - t)}{12 M}

    (``σ_r`` the standard deviation of the average ranks of ``d``, ``t`` the sizes of tie groups).
    Range ``[−100, 100]``; higher is better. The ceiling depends on the class balance (``AUC = 1``
    gives about ``100·√(3 n₀ n₁)/M``): compare models on one dataset, not datasets.

    Note:
      Matches ``PARC`` of ``dbolya/parc`` with ``n_dims=None`` (no reduction) when its labels are
      the exact same/different-class dissimilarity. Called with 1-D labels, the reference's
      ``np.corrcoef`` rounding splits the label ties by class index, shifting its value by up to
      ~10 %: not reproduced. ``dims=f`` uses an exact PCA (each component's largest-magnitude
      loading positive); the reference's benchmarks use ``f = 32`` with scikit-learn's
      *randomized* PCA, not reproduced (the two differ by up to tens of percent). Where the
      reference returns NaN this is finite: a row whose standardised features are all equal has
      correlation 0 with every other row; all ``d`` tied gives 0. Pairs are histogrammed, never
      stored: exactness and memory in ``docs/numerics.md``.

    Args:
      features: ``[n, d]`` features, ``n <= 65536``.
      labels: ``[n]`` integer labels ``0..c-1``.
      dims: reduce to this many principal components first (default ``None``: no reduction).
      num_classes: ``c``; required when ``labels`` are traced.
      width: true feature width when ``features`` are zero-padded (may be traced).
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.
      check_inputs: run the eager checks (skipped automatically for traced values).

    Returns:
      Scalar score in percent (compute dtype). Higher is better.

    Raises:
      ValueError: malformed features or labels; ``n > 65536``; ``dims < 1``.
      TypeError: non-numeric features; float labels (no regression form); ``dims`` not an int.

    References:
      Bolya, Mittapalli, Hoffman. Scalable Diverse Model Selection for Accessible Transfer
      Learning. NeurIPS 2021.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> y = np.arange(60) % 3
      >>> noise = np.random.default_rng(0).normal(size=(60, 8))
      >>> bool(tj.parc(noise + 3 * np.eye(3, 8)[y], y) > tj.parc(noise, y))
      True
    """
    dims = _check_dims(dims)
    x, targets = _validation.prepare(
        features, labels, name=_NAME, num_classes=num_classes, check_inputs=check_inputs,
        allow_regression=False, dtype=dtype, width=width,
    )
    n, d = x.shape
    if n > _MAX_N:
        raise ValueError(
            f"{_NAME}: features have n={n} samples; at most {_MAX_N} are supported (the "
            f"n(n-1)/2 pair counts are int32)"
        )
    w = d if width is None else width
    return _parc(x, targets.values, w, dims=dims, block=_BLOCK)
