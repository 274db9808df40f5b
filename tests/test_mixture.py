"""Gaussian mixtures (transferjax.mixture): scikit-learn's M-step and E-step of every covariance
type against NumPy, chunked statistics against all rows at once, inactive directions, and the
streamed EM driver against the in-memory one (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transferjax import mixture

TYPES = mixture.COVARIANCE_TYPES
REG = 1e-3


def _problem(n=60, p=3, k=4, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, p)) * np.array([3.0, 1.0, 0.3]) + rng.normal(size=(k, p))[
        np.arange(n) % k
    ]
    resp = rng.dirichlet(np.ones(k), size=n)
    return z, resp


def _numpy_params(z, resp, ct):
    """scikit-learn's ``_estimate_gaussian_parameters`` (float64)."""
    p = z.shape[1]
    nk = resp.sum(0) + 10 * np.finfo(np.float64).eps
    means = resp.T @ z / nk[:, None]
    if ct == "full":
        covs = np.stack([(resp[:, j] * (z - means[j]).T) @ (z - means[j]) / nk[j]
                         for j in range(len(nk))]) + REG * np.eye(p)
    elif ct == "tied":
        covs = (z.T @ z - (nk * means.T) @ means) / nk.sum() + REG * np.eye(p)
    else:
        avg = resp.T @ (z * z) / nk[:, None] - 2 * means * (resp.T @ z) / nk[:, None] + means**2
        covs = avg + REG if ct == "diag" else avg.mean(1) + REG
    return nk / nk.sum(), means, covs


def _numpy_log_resp(z, weights, means, covs, ct):
    n, p = z.shape
    out = np.empty((n, len(weights)))
    for j in range(len(weights)):
        if ct == "tied":
            cov = covs
        elif ct == "full":
            cov = covs[j]
        else:  # diag [K, p] or spherical [K]
            cov = np.diag(covs[j]) if ct == "diag" else covs[j] * np.eye(p)
        d = z - means[j]
        maha = np.sum(d * np.linalg.solve(cov, d.T).T, axis=1)
        out[:, j] = np.log(weights[j]) - 0.5 * (p * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1]
                                                 + maha)
    norm = np.logaddexp.reduce(out, axis=1)
    return norm, out - norm[:, None]


def _chunks(z, resp, size=25):
    """Rows in chunks of ``size``, the last one padded with zero rows of weight 0."""
    for lo in range(0, len(z), size):
        b = min(size, len(z) - lo)
        pad = ((0, size - b), (0, 0))
        w = (np.arange(size) < b).astype(np.float64)
        yield np.pad(z[lo : lo + b], pad), w, np.pad(resp[lo : lo + b], pad)


def _mixture(z, resp, ct, act=None):
    act = jnp.ones(z.shape[1]) if act is None else act
    return mixture.from_stats(mixture.chunk_stats(jnp.asarray(z), jnp.asarray(resp), ct), REG,
                              act, 1.0)


@pytest.mark.parametrize("ct", TYPES)
def test_m_and_e_step_equal_numpy(ct):
    with jax.enable_x64(True):
        z, resp = _problem()
        weights, means, covs = _numpy_params(z, resp, ct)
        mix = _mixture(z, resp, ct)
        np.testing.assert_allclose(np.exp(mix.log_weights), weights, rtol=1e-12)
        np.testing.assert_allclose(mix.means, means, rtol=1e-12)
        norm, log_resp = mixture.log_resp(jnp.asarray(z), mix, z.shape[1])
        want_norm, want_log_resp = _numpy_log_resp(z, weights, means, covs, ct)
        np.testing.assert_allclose(norm, want_norm, rtol=1e-10)
        np.testing.assert_allclose(log_resp, want_log_resp, rtol=1e-8, atol=1e-10)

        # a third, inactive direction (zero in the data, act = 0) changes nothing
        z3 = np.concatenate([z, np.zeros((len(z), 1))], axis=1)
        mix3 = _mixture(z3, resp, ct, act=jnp.array([1.0, 1.0, 1.0, 0.0]))
        np.testing.assert_allclose(mix3.log_det, mix.log_det, rtol=1e-12)
        norm3, _ = mixture.log_resp(jnp.asarray(z3), mix3, z.shape[1])
        np.testing.assert_allclose(norm3, norm, rtol=1e-12)


@pytest.mark.parametrize("ct", TYPES)
def test_chunked_statistics_and_streamed_em(ct):
    """Statistics merged over uneven chunks (padding rows with zero responsibility) equal those
    of all rows; EM driven one pass per iteration equals the in-memory EM."""
    with jax.enable_x64(True):
        z, resp = _problem()
        whole = mixture.chunk_stats(jnp.asarray(z), jnp.asarray(resp), ct)
        merged = mixture.empty_stats(resp.shape[1], z.shape[1], jnp.float64, ct)
        for zc, w, rc in _chunks(z, resp):
            merged = mixture.merge_stats(merged, mixture.chunk_stats(zc, rc * w[:, None], ct))
        for a, b in zip(jax.tree.leaves(merged), jax.tree.leaves(whole)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)

        act, k = jnp.ones(z.shape[1]), z.shape[1]
        mix0 = _mixture(z, resp, ct)
        args = (k, REG, 1e-6, act, 1.0)
        want = jax.jit(mixture.fit)(jnp.asarray(z), mix0, *args, 20).sum(0)
        step = jax.jit(mixture.em_step)

        def e_pass(mix):
            carry = (jnp.zeros(()), mixture.empty_stats(resp.shape[1], z.shape[1], jnp.float64, ct))
            mass = 0.0
            for zc, w, _ in _chunks(z, resp):
                carry, r = step(carry, jnp.asarray(zc), jnp.asarray(w), mix, k)
                mass = mass + r.sum(0)
            return carry[0], carry[1], mass

        got = mixture.fit_streamed(e_pass, mix0, 60, REG, 1e-6, act, 1.0, 20)
        np.testing.assert_allclose(got, want, rtol=1e-9)


def test_one_dimension_full_diag_spherical_agree():
    """In one dimension full, diagonal and spherical covariances are the same model."""
    with jax.enable_x64(True):
        z, resp = _problem(p=1)
        z = z[:, :1]
        fits = [
            jax.jit(mixture.fit)(jnp.asarray(z), _mixture(z, resp, ct), 1, REG, 1e-6,
                                 jnp.ones(1), 1.0, 30)
            for ct in ("full", "diag", "spherical")
        ]
        np.testing.assert_allclose(fits[1], fits[0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fits[2], fits[0], rtol=1e-9, atol=1e-12)
