"""k-means (transferjax.cluster): against a plain NumPy k-means with the same draws, in memory
and streamed over chunks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transferjax import cluster
from transferjax.streaming import fold


def _numpy_kmeans(z, draws, k, tol):
    """scikit-learn's greedy k-means++ and Lloyd (float64), fed the given uniforms."""
    n = len(z)

    def sq(a, b):
        return np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :], 0)

    centers = np.zeros((k, z.shape[1]))
    centers[0] = z[min(int(draws[0, 0] * n), n - 1)]
    closest = sq(z, centers[:1])[:, 0]
    for j in range(1, k):
        cand = np.minimum(np.searchsorted(np.cumsum(closest), draws[j] * closest.sum()), n - 1)
        dist = np.minimum(closest[None, :], sq(z[cand], z))
        best = int(np.argmin(dist.sum(1)))
        centers[j], closest = z[cand[best]], dist[best]
    old = np.full(n, -1)
    for _ in range(cluster.MAX_ITER):
        d = sq(z, centers)
        lab = d.argmin(1)
        counts = np.bincount(lab, minlength=k).astype(float)
        sums = np.zeros_like(centers)
        np.add.at(sums, lab, z)
        far = np.argsort(-d[np.arange(n), lab], kind="stable")
        for j, i in zip(np.flatnonzero(counts == 0), far):
            sums[lab[i]] -= z[i]
            counts[lab[i]] -= 1
            sums[j], counts[j] = z[i], 1
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
        shift = ((new - centers) ** 2).sum()
        centers = new
        if np.array_equal(lab, old) or shift <= tol:
            break
        old = lab
    return centers


def _data(kind):
    rng = np.random.default_rng(0)
    if kind == "blobs":
        return rng.normal(size=(90, 3)) + 4.0 * rng.normal(size=(6, 3))[np.arange(90) % 6]
    return np.repeat(rng.normal(size=(2, 3)), 20, axis=0)  # two distinct rows: empty clusters


@functools.cache
def _jitted(step):
    return jax.jit(step)


def _streamed(z, draws, k, tol, size):
    chunks = [(z[i : i + size], np.zeros(len(z[i : i + size]), np.int64))
              for i in range(0, len(z), size)]

    def run(step, init, *args):
        return fold(_jitted(step), init, chunks, name="test", width=z.shape[1], num_classes=1,
                    args=args, dtype=z.dtype, passes=2)

    return cluster.kmeans_streamed(run, draws, k, len(z), z.shape[1], tol)


@pytest.mark.parametrize("kind", ["blobs", "two_rows"])
def test_kmeans_equals_numpy_and_streamed(kind):
    """Same draws, same centres: in memory, streamed in uneven padded chunks, and in NumPy."""
    k = 6
    with jax.enable_x64(True):
        z = _data(kind)
        draws = cluster.seeding_draws(jax.random.key(1), k, jnp.float64)
        tol = cluster.TOL * z.var(0).mean()
        want = _numpy_kmeans(z, np.asarray(draws), k, tol)
        got = jax.jit(cluster.kmeans, static_argnums=2)(jnp.asarray(z), draws, k, tol)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(_streamed(z, draws, k, tol, 32), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("num_clusters", [2, 50])
def test_seeding_draws_are_the_plain_uniform_draw(num_clusters, precision):
    """Drawn as a prefix of a bucketed flat draw (one RNG compile per bucket), the uniforms are
    exactly ``jax.random.uniform(key, (K, t))``: results do not depend on the bucketing."""
    dt = jnp.float64 if precision == "float64" else jnp.float32
    key = jax.random.key(3)
    got = cluster.seeding_draws(key, num_clusters, dt)
    want = jax.random.uniform(key, (num_clusters, cluster.num_trials(num_clusters)), dt)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
