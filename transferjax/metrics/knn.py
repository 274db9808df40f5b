"""Leave-one-out k-nearest-neighbour accuracy of the features (the "1-NN CV" proxy)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .. import _validation
from .._typing import Array, ArrayLike, DTypeLike
from ..linalg import matmul
from ..loops import fold_pair_tiles
from ..registry import register

__all__ = ["knn"]

_NAME = "knn"
_BLOCK = 1024  # samples per tile side: O(_BLOCK²) distances at a time


def _nearest(old_d, old_i, dist, idx, k, axis):
    """Merge the candidates of ``dist [b, b]`` along ``axis`` (global indices ``idx [b]``) into
    the running ``k`` nearest ``(old_d, old_i) [b, k]`` of the samples along the other axis;
    equal distances keep the earlier (lower) index."""
    if k == 1:  # two plain reductions: the minimum, then its lowest index
        best = jnp.min(dist, axis=axis, keepdims=True)
        where = idx[None, :] if axis == 1 else idx[:, None]
        big = jnp.iinfo(jnp.int32).max
        pos = jnp.min(jnp.where(dist == best, where, big), axis=axis)[:, None]
        best = best.reshape(-1, 1)
        better = best < old_d  # strict: an equal distance keeps the lower index already held
        return jnp.where(better, best, old_d), jnp.where(better, pos, old_i)
    if axis == 0:
        dist = dist.T
    neg, pos = lax.top_k(-dist, k)  # stable: equal values in index order
    cand_d = jnp.concatenate([old_d, -neg], axis=1)
    cand_i = jnp.concatenate([old_i, idx[pos]], axis=1)
    neg, pos = lax.top_k(-cand_d, k)  # the running set first: it holds the lower indices
    return -neg, jnp.take_along_axis(cand_i, pos, axis=1)


@jax.jit(static_argnames=("k", "block"))
def _knn(features, labels, *, k, block):
    x = features
    n = x.shape[0]
    sq = jnp.sum(x * x, axis=1)

    def tile_update(carry, tile):
        best_d, best_i = carry
        b = tile.rows.shape[0]
        xi = lax.dynamic_slice_in_dim(x, tile.row_start, b)
        xj = lax.dynamic_slice_in_dim(x, tile.col_start, b)
        si = lax.dynamic_slice_in_dim(sq, tile.row_start, b)
        sj = lax.dynamic_slice_in_dim(sq, tile.col_start, b)
        dist = si[:, None] + sj[None, :] - 2.0 * matmul(xi, xj.T)  # squared Euclidean
        other = tile.rows[:, None] != tile.cols[None, :]  # the sample itself: +inf
        inf = jnp.asarray(jnp.inf, dist.dtype)
        # Rows of the row block see the columns their block owns, and the other way round.
        row_side = jnp.where(other & tile.cols_owned[None, :], dist, inf)
        col_side = jnp.where(other & tile.rows_owned[:, None], dist, inf)

        old_d = lax.dynamic_slice_in_dim(best_d, tile.row_start, b)
        old_i = lax.dynamic_slice_in_dim(best_i, tile.row_start, b)
        new_d, new_i = _nearest(old_d, old_i, row_side, tile.cols, k, axis=1)
        keep = tile.rows_owned[:, None]
        best_d = lax.dynamic_update_slice_in_dim(
            best_d, jnp.where(keep, new_d, old_d), tile.row_start, 0
        )
        best_i = lax.dynamic_update_slice_in_dim(
            best_i, jnp.where(keep, new_i, old_i), tile.row_start, 0
        )
        # The transposed side, except on a diagonal tile (its row side already saw every pair).
        old_d = lax.dynamic_slice_in_dim(best_d, tile.col_start, b)
        old_i = lax.dynamic_slice_in_dim(best_i, tile.col_start, b)
        new_d, new_i = _nearest(old_d, old_i, col_side, tile.rows, k, axis=0)
        keep = (tile.cols_owned & ~tile.diagonal)[:, None]
        best_d = lax.dynamic_update_slice_in_dim(
            best_d, jnp.where(keep, new_d, old_d), tile.col_start, 0
        )
        best_i = lax.dynamic_update_slice_in_dim(
            best_i, jnp.where(keep, new_i, old_i), tile.col_start, 0
        )
        return best_d, best_i

    init = (jnp.full((n, k), jnp.inf, x.dtype), jnp.zeros((n, k), jnp.int32))
    _, nearest = fold_pair_tiles(tile_update, init, n, block=block)
    votes = labels[nearest]  # [n, k]
    if k == 1:
        credit = (votes[:, 0] == labels).astype(jnp.int32)  # k · s_i
    else:
        count = jnp.sum(votes[:, :, None] == votes[:, None, :], axis=2)  # [n, k]
        top = jnp.max(count, axis=1)
        big = jnp.iinfo(jnp.int32).max
        mode = jnp.min(jnp.where(count == top[:, None], votes, big), axis=1)
        hits = jnp.sum(votes == labels[:, None], axis=1)
        credit = jnp.where(top >= 2, k * (mode == labels), hits)
    total = jnp.sum(credit).astype(x.dtype)
    return 100.0 * total / (n * k)


@register(
    "knn",
    tasks=("classification",),
    inputs="features",
    summary="leave-one-out k-nearest-neighbour accuracy in percent (1-NN CV)",
    paper="Bolya et al., NeurIPS 2021 (kNN baseline)",
    scale_invariant=True,
)
def knn(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    k: int = 1,
    num_classes: int | None = None,
    width: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    check_inputs: bool = True,
) -> Array:
    r"""Leave-one-out k-nearest-neighbour accuracy of the features, in percent.

    Each sample ``i`` is classified by its ``k`` nearest *other* samples in Euclidean distance
    (ties in distance: the lower index first). With ``m_i`` the most frequent of their labels
    (ties: the smallest label) and ``c_i`` its count,

    .. math::
        s_i = \begin{cases} \mathbb{1}[m_i = y_i] & c_i \ge 2 \\
          \tfrac1k\,\#\{\text{neighbours with label } y_i\} & c_i = 1 \end{cases},
        \qquad \mathrm{kNN} = \frac{100}{n}\sum_i s_i

    (for ``k = 1``: the share of samples whose nearest neighbour has their label). Higher is better.

    Note:
      Matches ``kNN`` of ``dbolya/parc`` (``kNN(k=1, metric='l2', n_dims=None)``, the PARC
      paper's "1-NN CV"), a percentage, including its vote: when all ``k`` neighbour labels
      differ, the sample gets the fractional credit above. The reference drops the first column
      of each sorted distance row as "the sample itself"; here the sample is excluded
      explicitly, which differs only when duplicates sort before it. Distances use the Gram
      expansion in the compute dtype (use float64 for features with a large common offset).
      Not invariant to relabelling the classes when ``k > 1``. Never forms the ``n×n`` matrix:
      ``docs/numerics.md``.

    Args:
      features: ``[n, d]`` features.
      labels: ``[n]`` integer labels ``0..c-1``.
      k: number of neighbours (default 1; at most ``n − 1``).
      num_classes: ``c``; required when ``labels`` are traced.
      width: true width of zero-padded features (accepted for the hub; not needed).
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.
      check_inputs: run the eager checks (skipped automatically for traced values).

    Returns:
      Scalar accuracy in percent, ``[0, 100]`` (compute dtype). Higher is better.

    Raises:
      ValueError: malformed features or labels; ``k < 1`` or ``k > n − 1``.
      TypeError: non-numeric features; float labels (no regression form); ``k`` not an int.

    References:
      Bolya, Mittapalli, Hoffman. Scalable Diverse Model Selection for Accessible Transfer
      Learning. NeurIPS 2021.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> f = np.array([[0.0], [0.1], [1.0], [1.2], [5.0], [5.1]])
      >>> y = np.array([0, 0, 1, 1, 1, 0])
      >>> round(float(tj.knn(f, y)), 2)  # samples 4 and 5: each other's nearest, other labels
      66.67
    """
    k = _validation.check_positive_int(k, name=_NAME, arg="k")
    x, targets = _validation.prepare(
        features, labels, name=_NAME, num_classes=num_classes, check_inputs=check_inputs,
        allow_regression=False, dtype=dtype, width=width,
    )
    n = x.shape[0]
    if k > n - 1:
        raise ValueError(
            f"{_NAME}: k={k} nearest neighbours need at least k + 1 = {k + 1} samples, got n={n}"
        )
    return _knn(x, targets.values, k=k, block=_BLOCK)
