r"""Gaussian mixtures fitted by EM, as scikit-learn's ``GaussianMixture``: in memory or streamed.

A mixture of ``K`` Gaussians in ``p`` dimensions with weights ``π_k``, means ``μ_k`` and
covariances ``Σ_k`` of one of scikit-learn's four ``covariance_type``\ s: ``"full"`` (one
``p×p`` matrix per component), ``"tied"`` (one shared ``p×p`` matrix), ``"diag"`` (a diagonal
per component) or ``"spherical"`` (one variance per component). EM alternates

.. math::
    r_{ik} = \frac{π_k\,\mathcal N(z_i; μ_k, Σ_k)}{\sum_j π_j\,\mathcal N(z_i; μ_j, Σ_j)}
    \quad\text{(E)}, \qquad
    n_k = \sum_i r_{ik},\ μ_k = \frac{1}{n_k}\sum_i r_{ik} z_i,\
    Σ_k = \frac{1}{n_k}\sum_i r_{ik}(z_i − μ_k)(z_i − μ_k)^\top + λI \quad\text{(M)},

with scikit-learn's details: ``n_k`` is ``Σ_i r_ik + 10·eps`` (an empty component stays
finite), ``reg_covar = λ`` on every diagonal (``"tied"``: the components' scatters summed over
``Σ n_k``; ``"spherical"``: the mean of the diagonal), stop when the mean log-likelihood changes
by less than ``tol`` or after ``max_iter`` iterations, then one final E-step whose posteriors
are the result. Where a covariance is not positive definite scikit-learn raises; here a small
multiple of its trace is added to the diagonal (:func:`gaussians`).

The M-step's statistics (:class:`MixtureStats`: masses, weighted sums, scatters) are formed per
chunk of rows and merged with the pairwise update of Chan, Golub & LeVeque (1979), so
:func:`fit` (all rows at once) and :func:`fit_streamed` (one pass over chunks per iteration)
run the same arithmetic. Directions can be switched off with ``act [p]`` (0/1): their
coordinates must be 0 in the data, they get variance 1 and then add nothing to the Mahalanobis
distances or the log-determinants (a model of fewer dimensions inside a fixed shape).

References: Dempster, Laird & Rubin, Maximum Likelihood from Incomplete Data via the EM
Algorithm, JRSS B 1977; scikit-learn's ``sklearn.mixture.GaussianMixture``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from ._typing import Array
from .linalg import HIGHEST, matmul, safe_div, sym

__all__ = [
    "COVARIANCE_TYPES",
    "Mixture",
    "MixtureStats",
    "empty_stats",
    "chunk_stats",
    "merge_stats",
    "shared_covariance",
    "gaussians",
    "from_stats",
    "log_resp",
    "em_step",
    "fit",
    "fit_streamed",
]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
_LOG_2PI = math.log(2.0 * math.pi)
# Bound on the elements of one lax.map batch of per-component [n, p] temporaries (memory: K = 250
# components of 5000×633 would be 3 GB at once in float32).
_MAP_ELEMS = 2**24
_STATIC = {"static": True}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Mixture:
    """Mixture parameters (a pytree; ``covariance_type`` static).

    Attributes:
      log_weights: ``[K]`` ``log π_k``.
      means: ``[K, p]``.
      prec_chol: the precision's Cholesky factor ``L⁻ᵀ`` of ``Σ = LLᵀ`` (scikit-learn's
        ``precisions_cholesky_``): ``[K, p, p]`` upper triangular (full), ``[p, p]`` (tied),
        ``[K, p]`` ``1/σ`` (diag), ``[K]`` ``1/σ`` (spherical).
      log_det: ``[K]`` ``−½ log det Σ_k`` over the active directions.
      covariance_type: one of :data:`COVARIANCE_TYPES`.
    """

    log_weights: Array
    means: Array
    prec_chol: Array
    log_det: Array
    covariance_type: str = dataclasses.field(default="full", metadata=_STATIC)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MixtureStats:
    """Responsibility-weighted statistics of some rows (a pytree; mergeable).

    Attributes:
      counts: ``[K]`` masses ``Σ_i r_ik``.
      sums: ``[K, p]`` ``Σ_i r_ik z_i``.
      scatter: about the M-step means ``μ_k = sums_k / (counts_k + 10·eps)`` (scikit-learn's):
        ``Σ_i r_ik (z_i − μ_k)(z_i − μ_k)ᵀ`` ``[K, p, p]`` (full), its sum over ``k`` ``[p, p]``
        (tied), or its diagonal ``[K, p]`` (diag, spherical). Not symmetrised.
      covariance_type: one of :data:`COVARIANCE_TYPES`.
    """

    counts: Array
    sums: Array
    scatter: Array
    covariance_type: str = dataclasses.field(default="full", metadata=_STATIC)


def _map_batch(num_mix: int, n: int, p: int) -> int:
    return max(1, min(num_mix, _MAP_ELEMS // max(1, n * p)))


def _check_type(covariance_type: str) -> None:
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}"
        )


def empty_stats(num_mix: int, dim: int, dtype, covariance_type: str = "full") -> MixtureStats:
    """The statistics of no rows: the neutral element of :func:`merge_stats`."""
    _check_type(covariance_type)
    shape = {"full": (num_mix, dim, dim), "tied": (dim, dim)}.get(covariance_type, (num_mix, dim))
    return MixtureStats(
        jnp.zeros((num_mix,), dtype), jnp.zeros((num_mix, dim), dtype), jnp.zeros(shape, dtype),
        covariance_type,
    )


def chunk_stats(z: Array, resp: Array, covariance_type: str = "full") -> MixtureStats:
    """Statistics of the rows ``z [n, p]`` with responsibilities ``resp [n, K]`` (0 on padding
    rows); per-component ``[n, p]`` temporaries in memory-bounded ``lax.map`` batches."""
    _check_type(covariance_type)
    n, p = z.shape
    counts = jnp.sum(resp, axis=0)
    sums = matmul(resp.T, z)
    xs = (resp.T, _centres(counts, sums))
    batch = _map_batch(resp.shape[1], n, p)
    if covariance_type == "full":

        def one(args):
            r, m = args
            d = z - m[None, :]
            return matmul((d * r[:, None]).T, d)

        scatter = lax.map(one, xs, batch_size=batch)
    elif covariance_type == "tied":

        def add(acc, args):
            r, m = args
            d = z - m[None, :]
            return acc + matmul((d * r[:, None]).T, d), None

        scatter = lax.scan(add, jnp.zeros((p, p), z.dtype), xs)[0]
    else:

        def one(args):
            r, m = args
            d = z - m[None, :]
            return matmul(r, d * d)

        scatter = lax.map(one, xs, batch_size=batch)
    return MixtureStats(counts, sums, scatter, covariance_type)


def merge_stats(a: MixtureStats, b: MixtureStats) -> MixtureStats:
    """Statistics of the union of two disjoint row sets.

    About the exact means ``m = sums/counts`` the scatters add as ``S = S_a + S_b + (n_a n_b /
    n)·δδᵀ`` (``δ = m_b − m_a``; Chan, Golub & LeVeque); each is moved between its exact and its
    M-step mean by ``S(μ) = S(m) + n·(m − μ)(m − μ)ᵀ``. Merged with no rows (all counts 0),
    statistics come back unchanged.
    """
    ct = a.covariance_type
    counts, sums = a.counts + b.counts, a.sums + b.sums

    def offset(c, s):  # m − μ: the exact mean less the M-step mean
        return safe_div(s, c[:, None]) - _centres(c, s)

    delta = safe_div(b.sums, b.counts[:, None]) - safe_div(a.sums, a.counts[:, None])
    vecs = jnp.stack([offset(a.counts, a.sums), offset(b.counts, b.sums), delta,
                      offset(counts, sums)], axis=1)  # [K, 4, p]
    coefs = jnp.stack([-a.counts, -b.counts, safe_div(a.counts * b.counts, counts), counts], axis=1)
    scatter = a.scatter + b.scatter + _outer(vecs, coefs, ct)
    scatter = jnp.where(jnp.all(a.counts == 0), b.scatter,
                        jnp.where(jnp.all(b.counts == 0), a.scatter, scatter))
    return MixtureStats(counts, sums, scatter, ct)


def _outer(vecs: Array, coefs: Array, covariance_type: str) -> Array:
    """``Σ_j c_kj v_kj v_kjᵀ`` per component from ``vecs [K, m, p]`` and ``coefs [K, m]``, in the
    form the scatter of the type has (one batched product, no ``[K, m, p, p]`` temporary)."""
    scaled = vecs * coefs[:, :, None]
    if covariance_type == "full":
        return jnp.einsum("kmp,kmq->kpq", scaled, vecs, precision=HIGHEST)
    if covariance_type == "tied":
        return jnp.einsum("kmp,kmq->pq", scaled, vecs, precision=HIGHEST)
    return jnp.sum(scaled * vecs, axis=1)


def _centres(counts: Array, sums: Array) -> Array:
    """scikit-learn's M-step means ``sums / (counts + 10·eps)`` (the floor keeps an empty
    component finite)."""
    return sums / (counts + 10.0 * jnp.finfo(sums.dtype).eps)[:, None]


def shared_covariance(cov: Array, num_mix: int, act: Array, covariance_type: str = "full"):
    """One ``p×p`` covariance for every component, in the form ``covariance_type`` stores."""
    _check_type(covariance_type)
    if covariance_type == "full":
        return jnp.broadcast_to(cov, (num_mix,) + cov.shape)
    if covariance_type == "tied":
        return cov
    diag = jnp.diagonal(cov)
    if covariance_type == "diag":
        return jnp.broadcast_to(diag, (num_mix,) + diag.shape)
    return jnp.full((num_mix,), jnp.sum(diag * act) / jnp.sum(act), cov.dtype)


def _safe_cholesky(a: Array, act: Array, scale: Array) -> Array:
    """Cholesky of each ``a[k]``; where it fails (rounding in float32, or a rank-deficient
    covariance with too small a ``reg_covar``) retry with ``eps·scale_k·10^j`` added to the
    active diagonal, ``j = 0, 1, ...`` (scikit-learn raises instead)."""
    eps = jnp.finfo(a.dtype).eps
    eye = jnp.diag(act)[None, :, :]

    def cond(s):
        return jnp.any(s[1]) & (s[2] < 16)

    def body(s):  # pass j = -1 is the plain factorisation (one Cholesky in the program)
        c, bad, j = s
        jitter = jnp.where(j < 0, 0.0, eps * scale * jnp.asarray(10.0, a.dtype) ** j)
        c = jnp.where(bad[:, None, None], jnp.linalg.cholesky(a + jitter[:, None, None] * eye), c)
        return c, ~jnp.all(jnp.isfinite(c), axis=(-2, -1)), j + 1

    init = (jnp.zeros_like(a), jnp.ones(a.shape[:1], bool), jnp.asarray(-1, jnp.int32))
    return lax.while_loop(cond, body, init)[0]


@jax.jit(static_argnames=("covariance_type",))
def gaussians(weights, means, covariances, reg, act, total, *, covariance_type="full") -> Mixture:
    """Parameters from weights ``[K]``, means ``[K, p]`` and covariances in the type's form.

    ``reg`` is added to the active diagonal, 1 to the inactive one. A covariance that is not
    positive definite (float32 rounding, or ``reg = 0`` on a collapsed component) gets
    ``eps·scale·10^j`` more on its diagonal, the smallest ``j >= 0`` that works; ``scale`` is its
    trace, or ``total`` (the data's total variance) when that is 0 (scikit-learn raises instead).
    """
    _check_type(covariance_type)
    num_mix, p = means.shape
    dt = means.dtype
    fallback = jnp.where(total > 0, total, 1.0)
    if covariance_type in ("full", "tied"):
        covs = covariances if covariance_type == "full" else covariances[None]
        a = covs + jnp.diag(reg * act + (1.0 - act))[None, :, :]
        tr = jnp.trace(covs, axis1=-2, axis2=-1)
        chol = _safe_cholesky(a, act, jnp.where(tr > 0, tr, fallback))
        eye = jnp.broadcast_to(jnp.eye(p, dtype=dt), a.shape)
        prec = jnp.swapaxes(solve_triangular(chol, eye, lower=True), -1, -2)
        log_det = -jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        if covariance_type == "tied":
            prec, log_det = prec[0], jnp.broadcast_to(log_det, (num_mix,))
    else:
        k = jnp.sum(act)
        if covariance_type == "diag":
            spread = jnp.sum(covariances * act[None, :], axis=1, keepdims=True)
        else:
            spread = covariances
        var = covariances + reg
        var = jnp.where(var > 0, var, jnp.finfo(dt).eps * jnp.where(spread > 0, spread, fallback))
        if covariance_type == "diag":
            prec = jnp.where(act[None, :] > 0, lax.rsqrt(var), 1.0)
            log_det = jnp.sum(jnp.log(prec), axis=-1)
        else:
            prec = lax.rsqrt(var)
            log_det = k * jnp.log(prec)
    return Mixture(jnp.log(weights), means, prec, log_det, covariance_type)


@jax.jit
def from_stats(stats: MixtureStats, reg, act, total) -> Mixture:
    """The M-step: mixture parameters from the statistics of all rows."""
    ct = stats.covariance_type
    nk = stats.counts + 10.0 * jnp.finfo(stats.sums.dtype).eps
    means = _centres(stats.counts, stats.sums)
    if ct == "full":
        covs = sym(stats.scatter / nk[:, None, None])
    elif ct == "tied":
        covs = sym(stats.scatter / jnp.sum(nk))
    elif ct == "diag":
        covs = stats.scatter / nk[:, None]
    else:
        covs = jnp.sum(stats.scatter * act[None, :], axis=1) / (nk * jnp.sum(act))
    return gaussians(nk / jnp.sum(nk), means, covs, reg, act, total, covariance_type=ct)


def log_resp(z: Array, mix: Mixture, k) -> tuple[Array, Array]:
    """``(log p(z_i) [n], log r_ik [n, K])``; ``k`` the number of active directions."""
    n, p = z.shape
    num_mix = mix.means.shape[0]
    batch = _map_batch(num_mix, n, p)
    if mix.covariance_type == "full":

        def maha(args):
            mu, pc = args
            y = matmul(z - mu[None, :], pc)
            return jnp.sum(y * y, axis=1)

        xs = (mix.means, mix.prec_chol)
    else:
        if mix.covariance_type == "tied":
            y, mus = matmul(z, mix.prec_chol), matmul(mix.means, mix.prec_chol)
            scale = jnp.ones((num_mix, 1), z.dtype)
        else:
            y, mus = z, mix.means
            scale = mix.prec_chol if mix.prec_chol.ndim == 2 else mix.prec_chol[:, None]

        def maha(args):
            mu, s = args
            d = (y - mu[None, :]) * s[None, :]
            return jnp.sum(d * d, axis=1)

        xs = (mus, scale)
    m = lax.map(maha, xs, batch_size=batch).T
    wlp = -0.5 * (k * _LOG_2PI + m) + (mix.log_det + mix.log_weights)[None, :]
    norm = logsumexp(wlp, axis=1)
    return norm, wlp - norm[:, None]


def em_step(carry, z: Array, w: Array, mix: Mixture, k):
    """One chunk of an EM iteration: the E-step under ``mix`` and the next M-step's statistics.

    ``carry = (Σ log p(z_i), MixtureStats)`` over the rows so far (``None`` statistics: no rows
    yet); rows with ``w = 0`` are padding. Returns the carry and the posteriors ``[n, K]`` of this
    chunk (0 on padding).
    """
    loglik, stats = carry
    norm, lr = log_resp(z, mix, k)
    valid = w > 0
    resp = jnp.where(valid[:, None], jnp.exp(lr), 0.0)
    loglik = loglik + jnp.sum(jnp.where(valid, norm, 0.0))
    chunk = chunk_stats(z, resp, mix.covariance_type)
    return (loglik, chunk if stats is None else merge_stats(stats, chunk)), resp


def fit(z: Array, mix: Mixture, k, reg, tol, act, total, max_iter) -> Array:
    """EM on the rows ``z [n, p]`` from the parameters ``mix``; returns the posteriors ``[n, K]``
    of the final E-step. Pure and jittable; ``max_iter`` may be traced.

    One E-step and one M-step per ``while_loop`` pass: pass ``j`` evaluates the parameters of
    iteration ``j``; when iteration ``j − 1`` converged, or ``j = max_iter``, its E-step is the
    final one.
    """
    n = z.shape[0]
    num_mix = mix.means.shape[0]
    dt = z.dtype
    w = jnp.ones((n,), dt)

    def body(s):
        it, mix, lower, converged, _, _ = s
        (loglik, stats), resp = em_step((jnp.zeros((), dt), None), z, w, mix, k)
        new = loglik / n
        done = converged | (it >= max_iter)
        nxt = from_stats(stats, reg, act, total)
        return it + 1, nxt, new, jnp.abs(new - lower) < tol, resp, done

    false = jnp.asarray(False)
    init = (jnp.asarray(0, jnp.int32), mix, jnp.asarray(-jnp.inf, dt), false,
            jnp.zeros((n, num_mix), dt), false)
    return lax.while_loop(lambda s: ~s[-1], body, init)[4]


def fit_streamed(e_pass: Callable, mix: Mixture, count, reg, tol, act, total, max_iter: int):
    """:func:`fit` driven from Python, one pass over the rows per iteration.

    ``e_pass(mix) -> (Σ log p(z_i), MixtureStats, extra)`` runs :func:`em_step` over every chunk
    (and accumulates whatever else the caller needs from the posteriors in ``extra``). Returns
    the ``extra`` of the final pass. At most ``max_iter + 1`` passes.
    """
    dt = np.dtype(mix.means.dtype)
    lower = dt.type(-np.inf)
    for _ in range(max_iter):
        loglik, stats, _ = e_pass(mix)
        mix = from_stats(stats, reg, act, total)
        new = np.asarray(loglik) / np.asarray(count, dt)
        if abs(new - lower) < dt.type(tol):  # converged: one final E-step
            break
        lower = new
    return e_pass(mix)[2]
