"""k-means with greedy k-means++ seeding, as scikit-learn's ``KMeans(n_init=1)``.

One algorithm, two drivers. Every step is written once as a per-chunk function
``step(carry, z, y, w, *args) -> carry`` over rows ``z [b, p]`` with weights ``w [b]`` (1 for a
sample, 0 for a padding row; ``y`` is not read here, it keeps the signature of the other
streamed steps). :func:`kmeans` runs them on all the samples at once, inside one jitted program;
:func:`kmeans_streamed` runs each as one pass over chunks through a caller's ``run(step, init,
*args)`` (e.g. :func:`transferjax.streaming.fold` over projected chunks), keeping nothing of size
``n``. Both make the same draws, candidates, iterations and stops, so they agree up to rounding.

Seeding (Arthur & Vassilvitskii 2007, greedy variant): the first centre is row ``⌊u·n⌋``; each
next one is the best of ``t = 2 + ⌊ln K⌋`` candidates drawn with probability proportional to
``D(z) = min_c ‖z − c‖²`` (``searchsorted(cumsum D, u·ΣD)``), best meaning the smallest potential
``Σ_i min(D_i, ‖z_i − cand‖²)``. Lloyd iterations then stop when no label changes or the total
squared centre shift is at most ``tol`` (scikit-learn: ``1e-4`` times the mean feature variance),
after at most 300; an empty cluster takes the point farthest from its centre.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._typing import Array
from .linalg import matmul, safe_div, sqdist
from .loops import fixed_point

__all__ = [
    "MAX_ITER",
    "TOL",
    "num_trials",
    "seeding_draws",
    "first_index",
    "assign",
    "gather_step",
    "locate_step",
    "potential_step",
    "Lloyd",
    "lloyd_init",
    "lloyd_step",
    "lloyd_update",
    "kmeans",
    "kmeans_streamed",
]

MAX_ITER = 300  # scikit-learn's KMeans defaults
TOL = 1e-4


def num_trials(num_clusters: int) -> int:
    """Candidates per k-means++ centre: ``2 + ⌊ln K⌋`` (scikit-learn)."""
    return 2 + int(math.log(num_clusters))


@jax.jit(static_argnames=("size", "dtype"))
def _uniform_flat(key: Array, *, size: int, dtype) -> Array:
    return jax.random.uniform(key, (size,), dtype)


def seeding_draws(key: Array, num_clusters: int, dtype) -> Array:
    """The ``[K, t]`` uniforms of the seeding, equal to ``jax.random.uniform(key, (K, t), dtype)``.

    Row ``j`` draws centre ``j`` (``[0, 0]`` the first row's index, ``[j, :]`` the candidates'
    thresholds). With the (default) partitionable threefry they are taken as the prefix of a flat
    draw whose length is rounded up to a power of two (element ``i`` of a flat draw depends only
    on ``key`` and ``i``): same values, and the RNG program compiles once per length bucket.
    """
    size = num_clusters * num_trials(num_clusters)
    flat_size = size
    if jax.config.jax_threefry_partitionable:
        flat_size = max(64, 1 << (size - 1).bit_length())
    flat = _uniform_flat(key, size=flat_size, dtype=jnp.dtype(dtype))
    return flat[:size].reshape(num_clusters, -1)


def first_index(draws: Array, n) -> Array:
    """The first centre's row ``min(⌊draws[0, 0]·n⌋, n − 1)`` (in the draws' dtype, as int32)."""
    return jnp.minimum((draws[0, 0] * n).astype(jnp.int32), n - 1)


def assign(z: Array, centers: Array) -> tuple[Array, Array]:
    """Nearest centre of every row and its squared distance: ``(labels [n] int32, d [n])``."""
    d = sqdist(z, centers)
    labels = jnp.argmin(d, axis=1).astype(jnp.int32)
    return labels, jnp.take_along_axis(d, labels[:, None], axis=1)[:, 0]


# ----------------------------------------------------------------------------- per-chunk steps


def gather_step(carry, z, y, w, idx):
    """Rows ``idx`` (global sample indices) of ``z`` as they stream by; ``carry = (rows [m, p],
    start)``, ``start`` counting the samples before this chunk (padding rows come last)."""
    del y
    rows, start = carry
    nvalid = jnp.sum(w > 0).astype(start.dtype)
    local = idx - start
    inside = (local >= 0) & (local < nvalid)
    rows = jnp.where(inside[:, None], z[jnp.clip(local, 0, z.shape[0] - 1)], rows)
    return rows, start + nvalid


def _closest(z: Array, centers: Array, num) -> Array:
    """``D``: squared distance of each row to the nearest of the first ``num`` centres."""
    live = jnp.arange(centers.shape[0]) < num
    return jnp.min(jnp.where(live[None, :], sqdist(z, centers), jnp.inf), axis=1)


def _locate(carry, z, w, closest, u):
    """The rows where the running ``cumsum D`` first reaches each threshold ``u [t]``
    (``searchsorted``; the last row when none does). ``carry = (offset, found [t], rows [t, p],
    last [p])``."""
    offset, found, rows, last = carry
    valid = w > 0
    closest = jnp.where(valid, closest, 0.0)
    cs = offset + jnp.cumsum(closest)
    pos = jnp.sum((cs[None, :] < u[:, None]) & valid[None, :], axis=1)
    nvalid = jnp.sum(valid)
    hit = ~found & (pos < nvalid)
    rows = jnp.where(hit[:, None], z[jnp.minimum(pos, z.shape[0] - 1)], rows)
    last = jnp.where(nvalid > 0, z[jnp.maximum(nvalid - 1, 0)], last)
    return offset + jnp.sum(closest), found | hit, rows, last


def _candidate_dist(z, closest, cands):
    """``min(D_i, ‖z_i − cand_j‖²)`` ``[t, b]``: each row's ``D`` once a candidate is a centre."""
    return jnp.minimum(closest[None, :], sqdist(cands, z))


def locate_step(carry, z, y, w, centers, num, u):
    """Locate centre ``num``'s candidates in a chunk (``D`` from the first ``num`` centres)."""
    del y
    return _locate(carry, z, w, _closest(z, centers, num), u)


def potential_step(pot, z, y, w, centers, num, cands):
    """Add each candidate's potential ``Σ_i min(D_i, ‖z_i − cand‖²)`` over this chunk."""
    del y
    dist = _candidate_dist(z, _closest(z, centers, num), cands)
    return pot + jnp.sum(jnp.where(w[None, :] > 0, dist, 0.0), axis=1)


def _locate_init(trials: int, dim: int, dtype):
    z = jnp.zeros((), dtype)
    return z, jnp.zeros((trials,), bool), jnp.zeros((trials, dim), dtype), jnp.zeros((dim,), dtype)


@jax.jit
def _candidates(located) -> Array:
    _, found, rows, last = located
    return jnp.where(found[:, None], rows, last[None, :])


class Lloyd(NamedTuple):
    """One Lloyd pass's accumulators: cluster ``counts [K]`` and ``sums [K, p]``, the number of
    labels that ``changed``, and the ``n_far`` rows farthest from their centres (``far_d``,
    ``far_z``, ``far_lab``; ties to the earlier row, as one ``top_k`` over all rows)."""

    counts: Array
    sums: Array
    changed: Array
    far_d: Array
    far_z: Array
    far_lab: Array


def lloyd_init(num_clusters: int, n_far: int, dim: int, dtype) -> Lloyd:
    """Empty :class:`Lloyd` accumulators (``n_far = min(K, n)``)."""
    return Lloyd(
        jnp.zeros((num_clusters,), dtype), jnp.zeros((num_clusters, dim), dtype),
        jnp.zeros((), jnp.int32), jnp.full((n_far,), -jnp.inf, dtype),
        jnp.zeros((n_far, dim), dtype), jnp.zeros((n_far,), jnp.int32),
    )


def lloyd_step(acc: Lloyd, z, y, w, centers, old) -> tuple[Lloyd, Array]:
    """Add a chunk to a Lloyd pass under ``centers``; ``old [b]`` are the rows' previous labels.
    Returns the accumulators and the new labels."""
    del y
    valid = w > 0
    lab, dist = assign(z, centers)
    onehot = jax.nn.one_hot(lab, centers.shape[0], dtype=z.dtype) * w[:, None]
    changed = acc.changed + jnp.sum(valid & (lab != old)).astype(jnp.int32)
    n_far = acc.far_d.shape[0]
    top, idx = lax.top_k(jnp.concatenate([acc.far_d, jnp.where(valid, dist, -jnp.inf)]), n_far)
    acc = Lloyd(
        acc.counts + jnp.sum(onehot, axis=0), acc.sums + matmul(onehot.T, z), changed, top,
        jnp.concatenate([acc.far_z, z])[idx], jnp.concatenate([acc.far_lab, lab])[idx],
    )
    return acc, lab


@jax.jit
def lloyd_update(acc: Lloyd, centers: Array, tol) -> tuple[Array, Array]:
    """The new centres of a finished pass (an empty cluster takes the farthest remaining point,
    which leaves its own cluster) and whether the squared shift is at most ``tol``."""
    num_clusters = centers.shape[0]
    n_far = acc.far_z.shape[0]
    empty = acc.counts == 0
    rank = jnp.cumsum(empty) - 1
    sel = jnp.clip(rank, 0, n_far - 1)
    take = empty & (rank < n_far)
    leave = jax.nn.one_hot(acc.far_lab[sel], num_clusters, dtype=centers.dtype) * take[:, None]
    sums = acc.sums - matmul(leave.T, acc.far_z[sel])
    counts = acc.counts - jnp.sum(leave, axis=0)
    sums = jnp.where(take[:, None], acc.far_z[sel], sums)
    counts = jnp.where(take, 1.0, counts)
    new = jnp.where(counts[:, None] > 0, safe_div(sums, counts[:, None]), centers)
    return new, jnp.sum((new - centers) ** 2) <= tol


@jax.jit
def _pick(centers, num, located, pot):
    """Centre ``num``: the candidate of least potential (the first on ties), and that potential."""
    best = jnp.argmin(pot)
    return centers.at[num].set(_candidates(located)[best]), pot[best]


# ----------------------------------------------------------------------------- drivers


def kmeans(z: Array, draws: Array, num_clusters: int, tol) -> Array:
    """k-means of the rows of ``z [n, p]`` in memory; returns the ``[K, p]`` centres.

    ``draws`` from :func:`seeding_draws`; ``tol`` the absolute bound on the squared centre shift.
    Pure and jittable (``num_clusters`` static).
    """
    n, p = z.shape
    w = jnp.ones((n,), z.dtype)
    y = jnp.zeros((n,), jnp.int32)
    c0 = z[first_index(draws, n)]
    closest = sqdist(z, c0[None, :])[:, 0]
    centers = jnp.zeros((num_clusters, p), z.dtype).at[0].set(c0)

    def seed(carry, xs):
        centers, closest = carry
        u, j = xs
        init = _locate_init(u.shape[0], p, z.dtype)
        cands = _candidates(_locate(init, z, w, closest, u * jnp.sum(closest)))
        dist = _candidate_dist(z, closest, cands)
        best = jnp.argmin(jnp.sum(dist, axis=1))
        return (centers.at[j].set(cands[best]), dist[best]), None

    steps = (draws[1:], jnp.arange(1, num_clusters))
    (centers, _), _ = lax.scan(seed, (centers, closest), steps)

    def lloyd(state):
        c, old = state
        acc, lab = lloyd_step(lloyd_init(num_clusters, min(num_clusters, n), p, z.dtype),
                              z, y, w, c, old)
        new, small = lloyd_update(acc, c, tol)
        return (new, lab), (acc.changed == 0) | small

    init = (centers, jnp.full((n,), -1, jnp.int32))
    (centers, _), _, _ = fixed_point(lloyd, init, max_iter=MAX_ITER)
    return centers


def _lloyd_pass_step(acc, z, y, w, centers, prev):
    """A streamed Lloyd pass: the previous labels are recomputed from the previous centres."""
    return lloyd_step(acc, z, y, w, centers, assign(z, prev)[0])[0]


def kmeans_streamed(run: Callable, draws: Array, num_clusters: int, n: int, dim: int, tol):
    """:func:`kmeans` with the ``n`` rows read in passes; returns the ``[K, p]`` centres.

    ``run(step, init, *args)`` runs one pass of a per-chunk step of this module over the rows
    (``dim`` columns) and returns the final carry. Passes: one gathering the first centre, per
    further centre one locating its candidates and one summing their potentials (``2K − 1``),
    one per Lloyd iteration.
    """
    draws_np = np.asarray(draws)
    dt = draws_np.dtype
    trials = draws_np.shape[1]
    first = jnp.asarray([int(first_index(draws_np, dt.type(n)))], jnp.int32)
    c0 = run(gather_step, (jnp.zeros((1, dim), dt), jnp.zeros((), jnp.int32)), first)[0][0]
    centers = jnp.zeros((num_clusters, dim), dt)
    located = (None, jnp.ones((trials,), bool), jnp.broadcast_to(c0, (trials, dim)), c0)
    potential = None
    for j in range(num_clusters):
        if j > 0:
            u = draws[j] * potential
            located = run(locate_step, _locate_init(trials, dim, dt), centers, j, u)
        pot = run(potential_step, jnp.zeros((trials,), dt), centers, j, _candidates(located))
        centers, potential = _pick(centers, j, located, pot)
    prev = centers
    for it in range(MAX_ITER):
        init = lloyd_init(num_clusters, min(num_clusters, n), dim, dt)
        acc = run(_lloyd_pass_step, init, centers, prev)
        new, small = lloyd_update(acc, centers, tol)
        prev, centers = centers, new
        if (it > 0 and int(acc.changed) == 0) or bool(small):
            break
    return centers
