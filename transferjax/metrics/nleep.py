"""NLEEP: LEEP on the posteriors of a Gaussian mixture fitted to PCA-reduced features."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from .. import _validation
from .._dtypes import compute_dtype
from .._typing import Array, ArrayLike, DTypeLike
from ..linalg import center, eigh_psd, gram, kernel_gram, matmul, safe_div
from ..loops import fixed_point
from ..registry import register
from ..stats import FeatureStats

__all__ = ["nleep"]

_NAME = "nleep"
_INITS = ("kmeans", "spaced_rows")
_LOG_2PI = math.log(2.0 * math.pi)
# Bound on the elements of one lax.map batch of per-component [n, p] temporaries (memory, not
# speed: at the p1 size, K = 250 components of 5000×633 would be 3 GB at once in float32).
_MAP_ELEMS = 2**24
# scikit-learn's KMeans defaults (GaussianMixture's init_params="kmeans" uses them).
_KMEANS_MAX_ITER = 300
_KMEANS_TOL = 1e-4


def _pca_scores(x: Array, energy) -> tuple[Array, Array]:
    """Principal-component scores of ``x`` in decreasing-variance order and the "energy" rank.

    Returns ``z [n, m]`` (``m = min(n, d)``; ``z = (x − x̄) V``, not whitened) and ``k``, the
    smallest number of leading components whose cumulative explained-variance ratio is strictly
    greater than ``energy`` (scikit-learn's ``PCA(n_components=energy)``). Zero-padded feature
    columns add exact zero eigenvalues, which sort last and never change ``k`` or the leading
    scores.
    """
    n, d = x.shape
    xc = center(x)
    if n >= d:
        w, v = eigh_psd(gram(xc))
        w, v = w[::-1], v[:, ::-1]
        z = matmul(xc, v)
    else:  # the n×n kernel has the same nonzero spectrum; its eigenvectors give the scores
        w, u = eigh_psd(kernel_gram(xc))
        w, u = w[::-1], u[:, ::-1]
        z = u * jnp.sqrt(w)[None, :]
    cum = jnp.cumsum(w)
    ratio = safe_div(cum, cum[-1], fill=1.0)  # all-constant features: k = 1
    k = jnp.minimum(jnp.sum(ratio <= energy) + 1, w.shape[0])
    return z, k.astype(jnp.int32)


_pca_scores_jit = jax.jit(_pca_scores)


def _dim_bucket(k: int, cap: int) -> int:
    """The mixture dimension the eager path compiles for: the PCA rank ``k`` rounded up to a
    multiple of 16 (of ``2^(⌊log2 k⌋ − 3)`` above 255: at most 1/8 more), at most ``cap =
    min(n, d)``. The kernel zeroes the directions beyond ``k`` (exact: they add nothing to
    distances, Mahalanobis terms or log-determinants), so hub models and cases whose ``k`` are
    close share one compiled program."""
    step = max(16, 1 << max(0, k.bit_length() - 4))
    return min(cap, -(-k // step) * step)


def _sqdist(a: Array, b: Array) -> Array:
    """Squared Euclidean distances ``[len(a), len(b)]`` (expanded form, clamped at 0)."""
    aa = jnp.sum(a * a, axis=1)[:, None]
    bb = jnp.sum(b * b, axis=1)[None, :]
    return jnp.maximum(aa - 2.0 * matmul(a, b.T) + bb, 0.0)


def _num_trials(num_mix: int) -> int:
    return 2 + int(math.log(num_mix))  # candidates per k-means++ centre, as scikit-learn


@jax.jit(static_argnames=("size", "dtype"))
def _uniform_flat(key: Array, *, size: int, dtype) -> Array:
    return jax.random.uniform(key, (size,), dtype)


def _seeding_draws(key: Array, num_mix: int, dtype) -> Array:
    """The ``[K, 2 + ⌊ln K⌋]`` uniforms of the k-means++ seeding, ``jax.random.uniform(key,
    (K, t), dtype)``.

    Drawn outside the kernel and, with the (default) partitionable threefry, as the prefix of a
    flat draw whose length is rounded up to a power of two: element ``i`` of a flat draw depends
    only on ``key`` and ``i``, so the values are the same, and the RNG program (a sizeable part of
    the kernel's compile time) is compiled once per size bucket instead of once per data shape.
    """
    size = num_mix * _num_trials(num_mix)
    flat_size = size
    if jax.config.jax_threefry_partitionable:
        flat_size = max(64, 1 << (size - 1).bit_length())
    flat = _uniform_flat(key, size=flat_size, dtype=jnp.dtype(dtype))
    return flat[:size].reshape(num_mix, -1)


def _kmeans_plusplus(draws: Array, z: Array, num_mix: int) -> Array:
    """Greedy k-means++ seeding from ``draws [K, 2 + ⌊ln K⌋]`` uniforms (``2 + ⌊ln K⌋``
    candidates per centre, as scikit-learn)."""
    n, p = z.shape
    c0 = z[jnp.minimum((draws[0, 0] * n).astype(jnp.int32), n - 1)]
    closest = _sqdist(z, c0[None, :])[:, 0]
    centers = jnp.zeros((num_mix, p), z.dtype).at[0].set(c0)

    def body(carry, xs):
        centers, closest = carry
        u, idx = xs
        u = u * jnp.sum(closest)
        cand = jnp.searchsorted(jnp.cumsum(closest), u, method="compare_all")
        cand = jnp.minimum(cand, n - 1)
        dist = jnp.minimum(closest[None, :], _sqdist(z[cand], z))
        best = jnp.argmin(jnp.sum(dist, axis=1))
        return (centers.at[idx].set(z[cand[best]]), dist[best]), None

    (centers, _), _ = lax.scan(body, (centers, closest), (draws[1:], jnp.arange(1, num_mix)))
    return centers


def _assign(z: Array, centers: Array) -> tuple[Array, Array]:
    d = _sqdist(z, centers)
    labels = jnp.argmin(d, axis=1)
    return labels, jnp.take_along_axis(d, labels[:, None], axis=1)[:, 0]


def _kmeans_labels(draws: Array, z: Array, num_mix: int, k: Array) -> Array:
    """One k-means run (k-means++ seeding, Lloyd iterations); returns the ``[n]`` cluster labels.

    Lloyd stops when the labels repeat or the total squared centre shift is at most
    ``1e-4 · mean feature variance`` (scikit-learn's rule; the mean over the ``k`` active
    columns, not the zeroed ones beyond), after at most 300 iterations; empty
    clusters are re-seeded with the points farthest from their centres, as scikit-learn does.
    """
    n, _ = z.shape
    tol = _KMEANS_TOL * jnp.sum(jnp.var(z, axis=0)) / k
    n_far = min(num_mix, n)

    def step(state):
        c, old = state
        lab, dist = _assign(z, c)
        onehot = jax.nn.one_hot(lab, num_mix, dtype=z.dtype)
        counts = jnp.sum(onehot, axis=0)
        sums = matmul(onehot.T, z)
        empty = counts == 0
        rank = jnp.cumsum(empty) - 1
        _, far = lax.top_k(dist, n_far)
        pick = far[jnp.clip(rank, 0, n_far - 1)]
        take = empty & (rank < n_far)
        # the relocated points leave their clusters: [empty K, source K] indicator
        leave = jax.nn.one_hot(lab[pick], num_mix, dtype=z.dtype) * take[:, None]
        sums = sums - matmul(leave.T, z[pick])
        counts = counts - jnp.sum(leave, axis=0)
        sums = jnp.where(take[:, None], z[pick], sums)
        counts = jnp.where(take, 1.0, counts)
        new = jnp.where(counts[:, None] > 0, safe_div(sums, counts[:, None]), c)
        shift = jnp.sum((new - c) ** 2)
        return (new, lab.astype(jnp.int32)), jnp.all(lab == old) | (shift <= tol)

    init = (_kmeans_plusplus(draws, z, num_mix), jnp.full((n,), -1, jnp.int32))
    (centers, _), _, _ = fixed_point(step, init, max_iter=_KMEANS_MAX_ITER)
    return _assign(z, centers)[0]


class _Mixture(NamedTuple):
    """Full-covariance mixture: log weights ``[K]``, means ``[K, p]``, ``L⁻ᵀ [K, p, p]`` (the
    precision Cholesky factor, upper triangular) and ``Σ log diag L⁻ᵀ = −½ log det Σ [K]``."""

    log_weights: Array
    means: Array
    prec_chol: Array
    log_det: Array


def _map_batch(num_mix: int, n: int, p: int) -> int:
    return max(1, min(num_mix, _MAP_ELEMS // max(1, n * p)))


def _safe_cholesky(a: Array, act: Array, scale: Array) -> Array:
    """Cholesky of each ``a[k]``; where it fails (rounding in float32, or a rank-deficient
    covariance with too small a ``reg_covar``) retry with ``eps·scale_k·10^j`` added to the
    active diagonal, ``j = 0, 1, ...`` (scikit-learn raises instead)."""
    eps = jnp.finfo(a.dtype).eps
    eye = jnp.diag(act)[None, :, :]

    def cond(s):
        return jnp.any(s[1]) & (s[2] < 16)

    def body(s):  # pass j = -1 is the plain factorisation (one Cholesky in the program)
        c, b, j = s
        jitter = jnp.where(j < 0, 0.0, eps * scale * jnp.asarray(10.0, a.dtype) ** j)
        c = jnp.where(b[:, None, None], jnp.linalg.cholesky(a + jitter[:, None, None] * eye), c)
        return c, ~jnp.all(jnp.isfinite(c), axis=(-2, -1)), j + 1

    init = (jnp.zeros_like(a), jnp.ones(a.shape[:1], bool), jnp.asarray(-1, jnp.int32))
    return lax.while_loop(cond, body, init)[0]


def _mixture(weights: Array, means: Array, covs: Array, reg, act: Array, total) -> _Mixture:
    """Parameters from ``[K, p, p]`` covariances; ``reg`` on the active diagonal, 1 on the
    inactive one (dimensions beyond the PCA rank ``k``, exact zeros in the data: they then add
    nothing to the Mahalanobis distances or the log-determinants)."""
    num_mix, p = means.shape
    dt = means.dtype
    a = covs + jnp.diag(reg * act + (1.0 - act))[None, :, :]
    tr = jnp.trace(covs, axis1=-2, axis2=-1)
    scale = jnp.where(tr > 0, tr, jnp.where(total > 0, total, 1.0))
    chol = _safe_cholesky(a, act, scale)
    eye = jnp.broadcast_to(jnp.eye(p, dtype=dt), (num_mix, p, p))
    prec_chol = jnp.swapaxes(solve_triangular(chol, eye, lower=True), -1, -2)
    log_det = -jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return _Mixture(jnp.log(weights), means, prec_chol, log_det)


def _log_resp(z: Array, mix: _Mixture, k: Array, batch: int) -> tuple[Array, Array]:
    """``(per-sample log-likelihood [n], log responsibilities [n, K])``."""

    def maha(args):
        mu, pc = args
        y = matmul(z - mu[None, :], pc)
        return jnp.sum(y * y, axis=1)

    m = lax.map(maha, (mix.means, mix.prec_chol), batch_size=batch).T
    wlp = -0.5 * (k * _LOG_2PI + m) + (mix.log_det + mix.log_weights)[None, :]
    norm = logsumexp(wlp, axis=1)
    return norm, wlp - norm[:, None]


def _e_step(z: Array, mix: _Mixture, k: Array, batch: int) -> tuple[Array, Array]:
    """``(mean log-likelihood, log responsibilities [n, K])``."""
    norm, log_resp = _log_resp(z, mix, k, batch)
    return jnp.mean(norm), log_resp


def _m_step(z: Array, resp: Array, batch: int) -> tuple[Array, Array, Array]:
    """Weights ``[K]``, means ``[K, p]`` and biased covariances ``[K, p, p]`` from ``resp``."""
    eps = jnp.finfo(z.dtype).eps
    nk = jnp.sum(resp, axis=0) + 10.0 * eps
    means = matmul(resp.T, z) / nk[:, None]

    def cov(args):
        r, mu, c = args
        diff = z - mu[None, :]
        s = matmul((diff * r[:, None]).T, diff) / c
        return 0.5 * (s + s.T)

    covs = lax.map(cov, (resp.T, means, nk), batch_size=batch)
    return nk / jnp.sum(nk), means, covs


def _em(z, resp0, start, use_start, k, reg, tol, act, total, max_iter, *, batch: int):
    """scikit-learn's EM from ``resp0``, or from ``start = (weights, means, covs)`` where
    ``use_start``; returns the posteriors of the final E-step.

    Written as "M-step then E-step" per pass, so one M- and one E-step are compiled: pass ``j``
    computes the parameters of EM iteration ``j`` and the E-step of iteration ``j + 1``. EM
    converged at iteration ``j`` (``|ΔL| < tol``, known after pass ``j − 1``) makes pass ``j``'s
    E-step the final one; at most ``max_iter + 1`` passes.
    """

    def cond(c):
        it, _, _, _, stop = c
        return ~stop & (it <= max_iter)

    def body(c):
        it, resp, lower, converged, _ = c
        params = _m_step(z, resp, batch)
        first = use_start & (it == 0)
        params = jax.tree.map(lambda s, m: jnp.where(first, s, m), start, params)
        new_lower, log_resp = _e_step(z, _mixture(*params, reg, act, total), k, batch)
        return it + 1, jnp.exp(log_resp), new_lower, jnp.abs(new_lower - lower) < tol, converged

    dt = z.dtype
    false = jnp.asarray(False)
    init = (jnp.asarray(0, jnp.int32), resp0, jnp.asarray(-jnp.inf, dt), false, false)
    return lax.while_loop(cond, body, init)[1]


@jax.jit(static_argnames=("num_classes", "num_mix"))
def _nleep_scores(z, labels, k, draws, reg_covar, tol, kmeans, max_iter, *, num_classes, num_mix):
    """NLEEP from PCA scores ``z [n, p]`` (columns ``>= k`` are treated as absent); ``draws``
    are the k-means++ uniforms (:func:`_seeding_draws`).

    ``kmeans`` (a traced bool) picks the start, so one compiled program serves both.
    """
    n, p = z.shape
    dt = z.dtype
    act = (jnp.arange(p) < k).astype(dt)
    z = z * act[None, :]
    reg = jnp.asarray(reg_covar, dt)
    zc = center(z)
    total = jnp.sum(zc * zc) / n
    batch = _map_batch(num_mix, n, p)

    resp0 = lax.cond(
        kmeans,
        lambda: jax.nn.one_hot(_kmeans_labels(draws, z, num_mix, k), num_mix, dtype=dt),
        lambda: jnp.zeros((n, num_mix), dt),
    )
    # "spaced_rows": weights 1/K, means the rows ⌊jn/K⌋, every covariance that of all of z
    rows = (jnp.arange(num_mix) * n) // num_mix
    start = (jnp.full((num_mix,), 1.0 / num_mix, dt), z[rows], (gram(zc) / n)[None, :, :])
    resp = _em(
        z, resp0, start, ~kmeans, k, reg, tol, act, total, max_iter, batch=batch
    )

    onehot = jax.nn.one_hot(labels, num_classes, dtype=dt)
    joint = matmul(onehot.T, resp) / n  # P(y, z) [C, K]
    marginal = jnp.sum(joint, axis=0)  # P(z) [K]
    cond = safe_div(joint, marginal[None, :])  # P(y | z) [C, K]
    return jnp.mean(jnp.sum(resp * cond[labels], axis=1))


# ----------------------------------------------------------------------------- streamed NLEEP
#
# The same algorithm as ``_nleep_scores`` with the samples read in chunks, once per iteration.
# Nothing of size ``n`` is kept: each pass recomputes the PCA scores ``z = (x − μ) V_k`` of its
# chunk and accumulates what the step after it needs. Passes (``K`` components, ``t = 2 + ⌊ln K⌋``
# k-means++ candidates per centre):
#   1. gather row ``⌊u·n⌋`` (the first k-means++ centre)              1 pass
#   2. k-means++ centre j = 0..K−1: (j ≥ 1) locate + gather its
#      candidates, then (all j) sum their potentials                   2K − 1 passes
#   3. Lloyd iterations (counts, sums, farthest points, label changes) ≤ 300 passes
#   4. M-step statistics of the k-means labels                         1 pass
#   5. EM: E-step + next M-step statistics + log-likelihood + LEEP table ≤ max_iter + 1 passes
# ``init="spaced_rows"``: one gather pass for the rows ``⌊jn/K⌋``, then 5.


@jax.jit
def _pca_from_stats(scatter, energy):
    """``_pca_scores`` from the centred scatter: eigenvalues, eigenvectors (decreasing), ``k``."""
    w, v = eigh_psd(scatter)
    w, v = w[::-1], v[:, ::-1]
    cum = jnp.cumsum(w)
    ratio = safe_div(cum, cum[-1], fill=1.0)
    k = jnp.minimum(jnp.sum(ratio <= energy) + 1, w.shape[0])
    return w, v, k.astype(jnp.int32)


def _project(x, mean, basis):
    return matmul(x - mean[None, :], basis)


@jax.jit
def _gather_update(carry, x, w, mean, basis, idx):
    """Rows ``idx`` (global sample indices) of the PCA scores that fall in this chunk; ``start``
    counts the samples before it (padded rows come last in a chunk)."""
    rows, start = carry
    z = _project(x, mean, basis)
    nvalid = jnp.sum(w > 0).astype(start.dtype)
    local = idx - start
    inside = (local >= 0) & (local < nvalid)
    rows = jnp.where(inside[:, None], z[jnp.clip(local, 0, z.shape[0] - 1)], rows)
    return rows, start + nvalid


def _closest(z, centers, num):
    """Squared distance of each row to the nearest of the first ``num`` centres (``inf`` if 0)."""
    live = jnp.arange(centers.shape[0]) < num
    return jnp.min(jnp.where(live[None, :], _sqdist(z, centers), jnp.inf), axis=1)


@jax.jit
def _seed_potential(pot, x, w, mean, basis, centers, num, cands):
    """``Σ_i min(closest_i, ‖z_i − cand_t‖²)`` for each candidate ``t`` (k-means++ potential)."""
    z = _project(x, mean, basis)
    dist = jnp.minimum(_closest(z, centers, num)[None, :], _sqdist(cands, z))
    return pot + jnp.sum(jnp.where(w[None, :] > 0, dist, 0.0), axis=1)


@jax.jit
def _seed_locate(carry, x, w, mean, basis, centers, num, draws, potential):
    """The rows where the running ``cumsum(closest)`` first reaches each threshold
    ``u = draws[num] · potential`` (``searchsorted(cumsum, u)``; the last row when none does),
    gathered as they stream by."""
    offset, found, rows, last = carry
    u = draws[num] * potential
    z = _project(x, mean, basis)
    valid = w > 0
    closest = jnp.where(valid, _closest(z, centers, num), 0.0)
    cs = offset + jnp.cumsum(closest)
    pos = jnp.sum((cs[None, :] < u[:, None]) & valid[None, :], axis=1)  # [t]
    nvalid = jnp.sum(valid)
    hit = ~found & (pos < nvalid)
    rows = jnp.where(hit[:, None], z[jnp.minimum(pos, z.shape[0] - 1)], rows)
    last = jnp.where(nvalid > 0, z[jnp.maximum(nvalid - 1, 0)], last)
    return offset + jnp.sum(closest), found | hit, rows, last


@jax.jit
def _seed_pick(centers, num, carry, pot):
    """Centre ``num``: the candidate of least potential (the first on ties), and that potential.
    ``carry`` is :func:`_seed_locate`'s (``found``, ``rows``, ``last``)."""
    found, rows, last = carry
    cands = jnp.where(found[:, None], rows, last[None, :])
    best = jnp.argmin(pot)
    return centers.at[num].set(cands[best]), pot[best]


@jax.jit
def _seed_cands(carry):
    found, rows, last = carry
    return jnp.where(found[:, None], rows, last[None, :])


@jax.jit(static_argnames=("p",))
def _stream_setup(scatter, count, vecs, *, p):
    """The projection ``V_k``, the covariance of the scores (``gram(zc)/n``), its trace and the
    k-means tolerance ``1e-4 · mean variance``."""
    basis = vecs[:, :p]
    cov = matmul(basis.T, matmul(scatter, basis)) / count
    cov = 0.5 * (cov + cov.T)
    return basis, cov, jnp.trace(cov), _KMEANS_TOL * jnp.mean(jnp.diagonal(cov))


@jax.jit(static_argnames=("n_far",))
def _lloyd_update(carry, x, w, mean, basis, centers, prev, *, n_far):
    """One chunk of a Lloyd step: cluster counts and sums, the ``n_far`` points farthest from
    their centres (running ``top_k``; ties to the earlier sample, as one ``top_k`` over all), and
    the number of labels that changed since the previous centres."""
    counts, sums, changed, far_d, far_z, far_lab = carry
    num_mix = centers.shape[0]
    z = _project(x, mean, basis)
    valid = w > 0
    lab, dist = _assign(z, centers)
    lab = lab.astype(jnp.int32)
    onehot = jax.nn.one_hot(lab, num_mix, dtype=z.dtype) * w[:, None]
    counts = counts + jnp.sum(onehot, axis=0)
    sums = sums + matmul(onehot.T, z)
    moved = valid & (lab != _assign(z, prev)[0].astype(jnp.int32))
    changed = changed + jnp.sum(moved).astype(changed.dtype)
    top, idx = lax.top_k(jnp.concatenate([far_d, jnp.where(valid, dist, -jnp.inf)]), n_far)
    far_z = jnp.concatenate([far_z, z])[idx]
    far_lab = jnp.concatenate([far_lab, lab])[idx]
    return counts, sums, changed, top, far_z, far_lab


@jax.jit
def _lloyd_finish(counts, sums, far_z, far_lab, centers, tol):
    """The centre update of ``_kmeans_labels``'s step from the accumulated pass."""
    num_mix = centers.shape[0]
    n_far = far_z.shape[0]
    dt = centers.dtype
    empty = counts == 0
    rank = jnp.cumsum(empty) - 1
    sel = jnp.clip(rank, 0, n_far - 1)
    take = empty & (rank < n_far)
    leave = jax.nn.one_hot(far_lab[sel], num_mix, dtype=dt) * take[:, None]
    sums = sums - matmul(leave.T, far_z[sel])
    counts = counts - jnp.sum(leave, axis=0)
    sums = jnp.where(take[:, None], far_z[sel], sums)
    counts = jnp.where(take, 1.0, counts)
    new = jnp.where(counts[:, None] > 0, safe_div(sums, counts[:, None]), centers)
    return new, jnp.sum((new - centers) ** 2) <= tol


def _accumulate(acc, z, resp, shift, batch):
    """Add ``Σ r_ik``, ``Σ r_ik (z_i − m_k)`` and ``Σ r_ik (z_i − m_k)(z_i − m_k)ᵀ``; the shift
    ``m_k`` (the previous means) keeps the scatter free of cancellation."""
    nk, s1, s2 = acc

    def comp(args):
        r, m = args
        diff = z - m[None, :]
        wd = diff * r[:, None]
        return jnp.sum(wd, axis=0), matmul(wd.T, diff)

    a1, a2 = lax.map(comp, (resp.T, shift), batch_size=batch)
    return nk + jnp.sum(resp, axis=0), s1 + a1, s2 + a2


@jax.jit(static_argnames=("batch",))
def _kmeans_resp_update(acc, x, w, mean, basis, centers, *, batch):
    z = _project(x, mean, basis)
    lab = _assign(z, centers)[0]
    resp = jax.nn.one_hot(lab, centers.shape[0], dtype=z.dtype) * w[:, None]
    return _accumulate(acc, z, resp, centers, batch)


@jax.jit(static_argnames=("num_classes", "batch"))
def _em_update(carry, x, y, w, mean, basis, mix, k, *, num_classes, batch):
    """One chunk of ``E-step(params_p)``: log-likelihood sum, the M-step statistics of
    ``params_{p+1}`` and the LEEP table ``Σ_{i: y_i = c} π_ik``."""
    loglik, acc, joint = carry
    z = _project(x, mean, basis)
    valid = w > 0
    norm, log_resp = _log_resp(z, mix, k, batch)
    resp = jnp.where(valid[:, None], jnp.exp(log_resp), 0.0)
    loglik = loglik + jnp.sum(jnp.where(valid, norm, 0.0))
    acc = _accumulate(acc, z, resp, mix.means, batch)
    joint = joint + matmul(jax.nn.one_hot(y, num_classes, dtype=z.dtype).T, resp)
    return loglik, acc, joint


@jax.jit
def _m_from_stats(nk_raw, s1, s2, shift, reg, total):
    """``_m_step`` from the shifted statistics, then the mixture parameters."""
    eps = jnp.finfo(s1.dtype).eps
    nk = nk_raw + 10.0 * eps
    means = (s1 + nk_raw[:, None] * shift) / nk[:, None]
    d = means - shift  # μ − m
    outer = d[:, :, None] * s1[:, None, :]
    s = s2 - outer - jnp.swapaxes(outer, -1, -2) + nk_raw[:, None, None] * (
        d[:, :, None] * d[:, None, :]
    )
    covs = s / nk[:, None, None]
    covs = 0.5 * (covs + jnp.swapaxes(covs, -1, -2))
    act = jnp.ones(means.shape[1:], means.dtype)
    return _mixture(nk / jnp.sum(nk), means, covs, reg, act, total)


@jax.jit
def _spaced_mixture(rows, cov, reg, total):
    """The ``"spaced_rows"`` start: weights ``1/K``, means ``rows``, every covariance ``cov``."""
    num_mix, p = rows.shape
    weights = jnp.full((num_mix,), 1.0 / num_mix, rows.dtype)
    covs = jnp.broadcast_to(cov, (num_mix, p, p))
    return _mixture(weights, rows, covs, reg, jnp.ones((p,), rows.dtype), total)


@jax.jit
def _leep_from_joint(joint, n):
    """``(1/n) Σ_i Σ_k π_ik p(y_i | k) = Σ_{c,k} P̂(c, k) p(c | k)``."""
    joint = joint / n
    cond = safe_div(joint, jnp.sum(joint, axis=0)[None, :])
    return jnp.sum(joint * cond)


def _nleep_streamed(stats, second_pass, key, *, component_ratio, energy, reg_covar, tol,
                    max_iter, init, chunk_size, check_inputs):
    """NLEEP from :class:`FeatureStats` and passes over ``second_pass`` (see the Note of
    :func:`nleep`). Carries start as NumPy arrays and host-side scalars stay NumPy, so the only
    compiled programs are the jitted per-chunk updates and finishers above."""
    from ..streaming import check_pass_count, second_pass_batches

    _validation.check_stats(stats, name=_NAME)
    if second_pass is None:
        raise ValueError(
            f"{_NAME}: stats= needs second_pass= (the (features, labels) chunks again, read once "
            "per k-means and EM iteration): the mixture fit is per-sample"
        )
    if not (_validation.is_concrete(stats.count) and _validation.is_concrete(stats.scatter)):
        raise TypeError(f"{_NAME}: stats= must be concrete (the passes are driven from Python)")
    d, c = stats.num_features, stats.num_classes
    dt = np.dtype(stats.scatter.dtype)
    n = int(round(float(np.asarray(stats.count))))
    num_mix = component_ratio * c
    mean = stats.mean
    _, vecs, k = _pca_from_stats(stats.scatter, energy)
    p = min(int(k), n, d)  # the one-shot kernel has min(n, d) eigenvalues
    basis, cov_z, total, km_tol = _stream_setup(stats.scatter, stats.count, vecs, p=p)
    kk = np.int32(p)
    reg = np.asarray(reg_covar, dt)
    state = {"first": True, "batch": 1}

    def chunks():
        """One pass: fixed-size chunks (padded rows have weight 0); values are checked on the
        first pass, widths and the sample count on every pass."""
        kw = dict(name=_NAME, width=d, num_classes=c, dtype=dt, chunk_size=chunk_size,
                  check_inputs=check_inputs and state["first"], passes=2)
        state["first"] = False
        seen = 0.0
        for x, y, w in second_pass_batches(second_pass, **kw):
            state["batch"] = _map_batch(num_mix, x.shape[0], p)
            seen += float(np.sum(np.asarray(w)))
            yield x, y, w
        check_pass_count(seen, stats.count, name=_NAME)

    def zeros(*shape, dtype=dt):
        return np.zeros(shape, dtype)

    def gather(idx):
        carry = (zeros(len(idx), p), np.int32(0))
        for x, _, w in chunks():
            carry = _gather_update(carry, x, w, mean, basis, idx)
        return carry[0]

    def m_stats():
        return zeros(num_mix), zeros(num_mix, p), zeros(num_mix, p, p)

    if init == "kmeans":
        draws = _seeding_draws(key, num_mix, dt)
        trials = draws.shape[1]
        # the one-shot index (draws[0, 0] * n).astype(int32), in the same dtype
        first = min(int(np.asarray(draws)[0, 0] * dt.type(n)), n - 1)
        c0 = np.asarray(gather(np.array([first], np.int32)))[0]
        centers = zeros(num_mix, p)
        located = (np.ones((trials,), bool), np.broadcast_to(c0, (trials, p)), c0)
        potential = None
        for j in range(num_mix):
            if j > 0:  # locate and gather this centre's candidates
                carry = (zeros(), np.zeros((trials,), bool), zeros(trials, p), zeros(p))
                for x, _, w in chunks():
                    carry = _seed_locate(carry, x, w, mean, basis, centers, j, draws, potential)
                located = carry[1:]
            cands = _seed_cands(located) if j > 0 else located[1]
            pot = zeros(trials)
            for x, _, w in chunks():
                pot = _seed_potential(pot, x, w, mean, basis, centers, j, cands)
            centers, potential = _seed_pick(centers, j, located, pot)
        # Lloyd with scikit-learn's stopping rule, as _kmeans_labels
        n_far = min(num_mix, n)
        prev = centers
        for it in range(_KMEANS_MAX_ITER):
            carry = (zeros(num_mix), zeros(num_mix, p), np.int32(0),
                     np.full((n_far,), -np.inf, dt), zeros(n_far, p),
                     np.zeros((n_far,), np.int32))
            for x, _, w in chunks():
                carry = _lloyd_update(carry, x, w, mean, basis, centers, prev, n_far=n_far)
            counts, sums, changed, _, far_z, far_lab = carry
            new, small = _lloyd_finish(counts, sums, far_z, far_lab, centers, km_tol)
            prev, centers = centers, new
            if (it > 0 and int(changed) == 0) or bool(small):
                break
        acc = m_stats()
        for x, _, w in chunks():
            acc = _kmeans_resp_update(acc, x, w, mean, basis, centers, batch=state["batch"])
        mix = _m_from_stats(*acc, centers, reg, total)
    else:
        rows = gather(np.asarray((np.arange(num_mix) * n) // num_mix, np.int32))
        mix = _spaced_mixture(rows, cov_z, reg, total)

    lower, converged = dt.type(-np.inf), False
    for it in range(max_iter + 1):
        carry = (zeros(), m_stats(), zeros(c, num_mix))
        for x, y, w in chunks():
            carry = _em_update(carry, x, y, w, mean, basis, mix, kk, num_classes=c,
                               batch=state["batch"])
        loglik, acc, joint = carry
        if converged or it == max_iter:  # this pass's E-step was the final one
            break
        new_lower = np.asarray(loglik) / np.asarray(stats.count)
        converged = bool(abs(new_lower - lower) < dt.type(tol))
        lower = new_lower
        mix = _m_from_stats(*acc, mix.means, reg, total)
    return _leep_from_joint(joint, stats.count)


def _check_scalar(value, *, arg: str, lo: float, hi: float = math.inf, lo_open: bool = False):
    """A real option in range (skipped when traced: continuous options may be traced)."""
    if isinstance(value, jax.core.Tracer):
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{_NAME}: {arg} must be a real number, got {value!r}") from None
    if not ((v > lo if lo_open else v >= lo) and v <= hi):  # NaN fails both
        bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise ValueError(f"{_NAME}: {arg} must be in {bound}, got {value!r}")


def _as_key(key):
    if key is None:
        raise TypeError(
            f"{_NAME}: key= is required with init='kmeans' (a jax.random.key; the k-means++ "
            "seeding is random)"
        )
    if isinstance(key, (int,)) and not isinstance(key, bool):
        return jax.random.key(key)
    if not isinstance(key, jax.Array) or not (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.dtype == jnp.uint32
    ):
        raise TypeError(f"{_NAME}: key must be a jax.random.key (or an int seed), got {key!r}")
    return key


def _hub_options(padded: np.ndarray, options: dict, *, batch_size: int | None = None) -> dict:
    """``score_hub``'s static ``max_dim`` for the zero-padded models ``[m, n, d]`` it scores in
    one vmapped call: their largest PCA rank ``k`` (a batched PCA of the same padded input the
    kernel gets, ``batch_size`` models at a time like the kernel, one host sync), plus one (a
    guard against the kernel's fused program rounding ``k`` the other way at the ``energy``
    boundary), bucketed like the eager path. Without it the traced kernel works in ``min(n, d)`` dimensions: on a hub
    of 2,000 images and widths up to 1,280, a full-covariance EM in 1,280 dimensions where ``k``
    is a few dozen."""
    if options.get("max_dim") is not None:
        return {}
    _, n, d = padded.shape
    x = jnp.asarray(padded, compute_dtype(padded, options.get("dtype")))
    top = int(_pca_max_rank(x, options.get("energy", 0.8), batch_size))
    return {"max_dim": _dim_bucket(top + 1, min(n, d))}


@functools.partial(jax.jit, static_argnames="batch_size")
def _pca_max_rank(x: Array, energy, batch_size: int | None) -> Array:
    """The largest PCA rank of the models ``x [m, n, d]``, ``batch_size`` models at a time."""
    rank = lambda xi: _pca_scores(xi, energy)[1]  # noqa: E731
    if batch_size is None or batch_size >= x.shape[0]:
        return jnp.max(jax.vmap(rank)(x))
    return jnp.max(lax.map(rank, x, batch_size=batch_size))


@register(
    "nleep",
    tasks=("classification",),
    needs_key=True,
    summary="LEEP on the posteriors of a Gaussian mixture fitted to PCA-reduced features",
    paper="Li et al., CVPR 2021",
    features_options=_hub_options,
)
def nleep(
    features: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    *,
    stats: FeatureStats | None = None,
    second_pass=None,
    chunk_size: int | None = None,
    key: Array | int | None = None,
    component_ratio: int = 5,
    energy: float = 0.8,
    reg_covar: float = 1e-6,
    tol: float = 1e-3,
    max_iter: int = 100,
    init: str = "kmeans",
    max_dim: int | None = None,
    num_classes: int | None = None,
    width: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    check_inputs: bool = True,
) -> Array:
    r"""NLEEP: the LEEP score of a Gaussian mixture's component posteriors ("pseudo-labels").

    The centred features are projected on their ``k`` leading principal components, ``k`` the
    smallest number whose explained variance exceeds ``energy`` (80 %); a full-covariance Gaussian
    mixture with ``K = component_ratio · C`` components is fitted to the scores ``z_i`` by EM; its
    posteriors ``π_ik = p(k | z_i)`` replace the source-model probabilities of LEEP:

    .. math::
        \hat P(y, k) = \frac1n \sum_{i: y_i = y} \pi_{ik}, \qquad
        \mathrm{NLEEP} = \frac1n \sum_{i=1}^n \sum_{k=1}^K \pi_{ik}\,
          \frac{\hat P(y_i, k)}{\sum_{y'} \hat P(y', k)}

    The EM is scikit-learn's ``GaussianMixture`` defaults: ``reg_covar`` added to every covariance
    diagonal, stop when the mean log-likelihood changes by less than ``tol`` or after ``max_iter``
    iterations, then one final E-step; started from one k-means run (k-means++ seeding drawn from
    ``key``, Lloyd iterations). Range ``(0, 1]``; higher is better.

    Note:
      Matches the NLEEP of ``TencentARC/SFDA`` (also used by PED and ETran), which is what the
      published tables were computed with:

      * The score is the mean *probability* ``p(y_i | x_i)``, without the log of the LEEP paper
        (the reference drops it; so does its LEEP).
      * The reference seeds k-means from NumPy's global random state, so its values cannot be
        reproduced bit for bit: with the same ``key`` this function is deterministic, and across
        keys it has the reference's seed-to-seed distribution (golden ``seed_stats``).
        ``init="spaced_rows"`` starts EM deterministically instead (weights ``1/K``, means the
        rows ``⌊jn/K⌋`` of ``z``, every covariance the biased covariance of ``z`` plus
        ``reg_covar``), which reproduces the reference EM started the same way exactly; it
        stops earlier from this broad start, so it scores lower than k-means starts.
      * Where a covariance Cholesky fails (the reference raises ``ill-defined empirical
        covariance``; in float32 this happens on small or collapsed components, e.g. the golden
        c2_mid and c3_wide), ``eps · trace(Σ_k) · 10^j`` (``j = 0, 1, ...``) is added to that
        component's diagonal until it succeeds. float64 (``jax_enable_x64``) is closest to the
        reference, which computes in float64.
      * A component with no posterior mass contributes 0 instead of the reference's 0/0.
      * ``C`` is ``num_classes`` (the number of distinct labels when all are present).
      * PCA is padding-invariant (zero columns add zero-variance directions, which sort last), so
        ``width`` needs no correction and is accepted for the hub only. The mixture's dimension
        ``k`` is data-dependent: with concrete features it is computed eagerly and the kernel is
        compiled for ``k`` rounded up to a multiple of 16 (at most 1/8 more above 255; at most
        ``min(n, d)``), the directions beyond ``k`` zeroed (exact), so nearby ``k`` (models of a
        hub) share one compiled program; with traced features (inside ``jit``/``vmap``) the
        kernel works in ``max_dim`` (default ``min(n, d)``) dimensions and zeroes the directions
        beyond the traced ``k`` (exact, but slower); if ``k > max_dim`` only ``max_dim`` are
        used. :func:`~transferjax.score_hub` computes each model's ``k`` eagerly first and
        passes ``max_dim`` = the bucketed largest ``k + 1`` of the models it scores together.

      Streaming: NLEEP **needs per-iteration passes**; it is not a function of sufficient
      statistics. With ``stats=`` the PCA comes from the statistics' centred scatter (``d×d``
      ``eigh``; scores ``z = (x − μ) V_k``) and ``second_pass`` is read once per iteration, each
      chunk in one jitted fixed-shape update (the last piece padded with zero-weight rows);
      nothing of size ``n`` is kept, memory is ``O(chunk·d + d² + K·k²)``. With ``K``
      components the passes are: k-means++ seeding ``2K`` (one gathering the first centre
      ``⌊u·n⌋``; per centre one pass summing the potential ``Σ_i min(D_i, ‖z_i − c‖²)`` of each
      of its ``2 + ⌊ln K⌋`` candidates and, for every centre after the first, one pass before
      it that locates and gathers the candidates where the running ``cumsum D`` crosses the
      drawn thresholds, i.e. ``searchsorted`` on the stream), one per Lloyd iteration (cluster
      counts and sums, the farthest points for empty clusters, the number of changed labels;
      at most 300), one for the M-step statistics of the k-means labels, and one per EM
      iteration including the final E-step (at most ``max_iter + 1``: responsibility sums,
      weighted sums and scatters about the previous means, the log-likelihood, and the LEEP
      table). ``init="spaced_rows"``: one pass gathering the rows ``⌊jn/K⌋``, then EM. The
      draws, candidates, iterations and stopping rules are those of the one-shot call, so the
      result equals ``nleep(features, labels, key=key)`` up to rounding (≤ 1e-13 relative in
      float64 in the tests), except on exact ties of rounding-level differences.

    Args:
      features: ``[n, d]`` features.
      labels: ``[n]`` integer labels ``0..C-1``.
      stats: classification :class:`~transferjax.FeatureStats` of the samples
        (:func:`~transferjax.stream_stats`), in place of ``features, labels``; needs
        ``second_pass``. Must be concrete (the passes are driven from Python).
      second_pass: with ``stats``: the same ``(features [b, d], labels [b])`` chunks in the same
        order, as a callable returning a fresh iterable or a re-iterable sequence (read once per
        iteration, see Note).
      chunk_size: rows per jitted update of the passes (default: the first chunk's size).
      key: PRNG key for the k-means++ seeding (``jax.random.key``; an int is taken as a seed).
        Required unless ``init="spaced_rows"``.
      component_ratio: mixture components per class (reference 5; its driver uses 1 for some
        datasets).
      energy: fraction of the variance the PCA keeps (strictly exceeded), in ``(0, 1]``.
      reg_covar: added to each covariance diagonal (scikit-learn default ``1e-6``).
      tol: EM stops when the mean log-likelihood changes by less than this.
      max_iter: EM iteration cap (100).
      init: ``"kmeans"`` (reference) or ``"spaced_rows"`` (deterministic; ``key`` not needed).
      max_dim: mixture dimension when the features are traced (see Note).
      num_classes: required when ``labels`` are traced (inside the caller's jit/vmap).
      width: true feature width of zero-padded features (accepted; no correction is needed).
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.
      check_inputs: run the eager checks (skipped automatically for traced values).

    Returns:
      Scalar score in ``(0, 1]`` (compute dtype). Higher is better.

    Raises:
      ValueError: features not 2-D / n < 2 / d = 0 / NaN or inf; labels of the wrong length,
        outside 0..C-1, fewer than two classes, or an empty class; an option out of range.
      TypeError: non-numeric inputs, float (regression) targets, a missing or invalid ``key``,
        an unknown ``init``; ``second_pass`` a one-shot iterator (it is read many times).
      ValueError (streaming): both or neither of ``features, labels`` and ``stats``; ``stats``
        without ``second_pass``; a pass of another width or sample count than ``stats``.

    References:
      Li, Jia, Wang, Liu, Kuo, Chen, Ding, Li. Ranking Neural Checkpoints. CVPR 2021.
      Nguyen, Hassner, Seeger, Archambeau. LEEP: A New Measure to Evaluate Transferability of
      Learned Representations. ICML 2020.

    Examples:
      >>> import jax, numpy as np, transferjax as tj
      >>> rng = np.random.default_rng(0)
      >>> y = np.arange(200) % 2
      >>> good = rng.normal(size=(200, 4)) + 4.0 * y[:, None]
      >>> bad = rng.normal(size=(200, 4))
      >>> key = jax.random.key(0)
      >>> bool(tj.nleep(good, y, key=key) > tj.nleep(bad, y, key=key))
      True

      Streamed: statistics in one pass, then the chunks again once per iteration.

      >>> chunks = [(good[i : i + 64], y[i : i + 64]) for i in range(0, 200, 64)]
      >>> stats = tj.stream_stats(chunks, num_classes=2)
      >>> streamed = tj.nleep(stats=stats, second_pass=chunks, key=key)
      >>> bool(abs(streamed - tj.nleep(good, y, key=key)) < 1e-4)
      True
    """
    if init not in _INITS:
        raise TypeError(f"{_NAME}: init must be one of {_INITS}, got {init!r}")
    key = _as_key(key) if init == "kmeans" else jax.random.key(0) if key is None else _as_key(key)
    component_ratio = _validation.check_positive_int(
        component_ratio, name=_NAME, arg="component_ratio"
    )
    max_iter = _validation.check_positive_int(max_iter, name=_NAME, arg="max_iter")
    if max_dim is not None:
        max_dim = _validation.check_positive_int(max_dim, name=_NAME, arg="max_dim")
    _check_scalar(energy, arg="energy", lo=0.0, hi=1.0, lo_open=True)
    _check_scalar(reg_covar, arg="reg_covar", lo=0.0)
    _check_scalar(tol, arg="tol", lo=0.0)
    _validation.data_or_stats(features, labels, stats, name=_NAME,
                              hint="stats= with second_pass=")
    if stats is not None:
        if num_classes is not None and int(num_classes) != stats.num_classes:
            raise ValueError(
                f"{_NAME}: num_classes={num_classes} but the stats have {stats.num_classes}"
            )
        return _nleep_streamed(
            stats, second_pass, key, component_ratio=component_ratio, energy=energy,
            reg_covar=reg_covar, tol=tol, max_iter=max_iter, init=init, chunk_size=chunk_size,
            check_inputs=check_inputs,
        )
    if check_inputs:
        features = _validation.check_features(features, name=_NAME)
        n = features.shape[0]
        targets = _validation.check_targets(
            labels, n, name=_NAME, num_classes=num_classes, allow_regression=False
        )
        y, c = targets.values, targets.num_classes
    else:
        y = jnp.asarray(labels)
        c = int(jnp.max(y)) + 1 if num_classes is None else int(num_classes)
    del width  # PCA is padding-invariant: see Note
    dt = compute_dtype(features, dtype)
    x = jnp.asarray(features, dt)
    z, k = _pca_scores_jit(x, energy)
    if _validation.is_concrete(k):
        dim = _dim_bucket(int(k), z.shape[1])
    else:
        dim = z.shape[1] if max_dim is None else min(max_dim, z.shape[1])
    num_mix = component_ratio * c
    if init == "kmeans":
        draws = _seeding_draws(key, num_mix, dt)
    else:  # unused by the deterministic start
        draws = jnp.zeros((num_mix, _num_trials(num_mix)), dt)
    return _nleep_scores(
        z[:, :dim],
        jnp.asarray(y),
        k,
        draws,
        reg_covar,
        tol,
        init == "kmeans",
        max_iter,
        num_classes=c,
        num_mix=num_mix,
    )
