"""Iteration drivers: fixed points to a tolerance with per-member early exit, and a tiled loop
over the sample pairs of an ``n×n`` matrix."""

from __future__ import annotations

from typing import Callable, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._typing import Array

__all__ = ["PairTile", "fixed_point", "fold_pair_tiles"]

S = TypeVar("S")


def _freeze(done: Array, old, new):
    def pick(o, n):
        mask = done.reshape(done.shape + (1,) * (n.ndim - done.ndim))
        return jnp.where(mask, o, n)

    return jax.tree.map(pick, old, new)


def fixed_point(
    step: Callable[[S], tuple[S, Array]],
    init: S,
    *,
    max_iter: int,
    done: Array | None = None,
) -> tuple[S, Array, Array]:
    """Iterate ``state, converged = step(state)`` at most ``max_iter`` times.

    ``converged`` is a bool array (``[]`` or a batch of independent members, e.g. one per target
    column). A member whose ``converged`` is true keeps the state of the step that converged and is
    not updated again; the loop stops when every member has converged or after ``max_iter`` steps.
    This reproduces a per-member Python ``for ...: ...; if converged: break`` exactly, vectorised.
    Under ``vmap`` the ``while_loop`` runs until the slowest member stops (finished ones are frozen).
    Forward only (``lax.while_loop`` is not reverse-differentiable).

    Returns:
      ``(state, done, num_iters)``.
    """
    if done is None:
        _, conv = jax.eval_shape(step, init)
        done = jnp.zeros(conv.shape, bool)

    def cond(carry):
        it, _, dn = carry
        return (it < max_iter) & ~jnp.all(dn)

    def body(carry):
        it, state, dn = carry
        new, conv = step(state)
        return it + 1, _freeze(dn, state, new), dn | conv

    it, state, done = lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), init, done))
    return state, done, it


class PairTile(NamedTuple):
    """One ``b×b`` tile of an ``n×n`` pairwise matrix, as :func:`fold_pair_tiles` hands it over.

    ``rows``/``cols`` ``[b]`` are the global sample indices of the tile (contiguous, starting at
    ``row_start``/``col_start``, the offsets for ``lax.dynamic_slice``); ``rows_owned`` and
    ``cols_owned`` ``[b]`` mark the indices that belong to the tile's own blocks (a clamped last
    block overlaps its predecessor: the overlap is owned by the earlier block); ``diagonal`` is
    true when the row and column blocks are the same block.
    """

    rows: Array
    cols: Array
    row_start: Array
    col_start: Array
    rows_owned: Array
    cols_owned: Array
    diagonal: Array


def fold_pair_tiles(
    body: Callable[[S, PairTile], S], init: S, n: int, *, block: int
) -> S:
    """``carry = body(carry, tile)`` over the upper-triangular tiles of an ``n×n`` pair matrix.

    The samples are cut into ``m = ceil(n / block)`` blocks of the static size
    ``b = ceil(n / m) <= block`` (the last block's start is clamped to ``n − b``, and indices it
    shares with the previous block are owned by that one). The tiles are the block pairs
    ``(I, J)`` with ``I <= J``, visited in lexicographic order by a ``lax.fori_loop``, so a pairwise
    computation touches each unordered pair once and holds ``O(b²)`` values at a time. Every pair
    ``r < c`` lies in exactly one tile with ``rows_owned[r] & cols_owned[c]`` (for a diagonal tile
    also ``r < c`` must be checked); every ordered pair ``(r, c)`` is then either on the row side
    (``r`` in ``rows``) or, for non-diagonal tiles, on the transposed side. A row receives its
    column blocks in increasing order (first as the column side of tiles ``(I, R)``, ``I < R``,
    then as the row side of ``(R, J)``, ``J >= R``): merging per-row candidates in visiting order
    breaks ties towards the lower index. The static tile size is ``tile.rows.shape[0]``.

    Returns:
      The final carry.
    """
    if n < 1 or block < 1:
        raise ValueError(f"fold_pair_tiles: need n >= 1 and block >= 1, got n={n}, block={block}")
    m = -(-n // block)
    b = -(-n // m)
    first, second = np.triu_indices(m)
    first = jnp.asarray(first, jnp.int32)
    second = jnp.asarray(second, jnp.int32)
    offsets = jnp.arange(b, dtype=jnp.int32)

    def step(t, carry):
        i, j = first[t], second[t]
        own_i, own_j = i * b, j * b
        start_i = jnp.minimum(own_i, n - b)
        start_j = jnp.minimum(own_j, n - b)
        rows = start_i + offsets
        cols = start_j + offsets
        tile = PairTile(rows, cols, start_i, start_j, rows >= own_i, cols >= own_j, i == j)
        return body(carry, tile)

    return lax.fori_loop(0, int(first.shape[0]), step, init)
