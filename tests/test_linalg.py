"""Shared linear algebra (transferjax.linalg): PCA from the smaller-side Gram and its sign
conventions, squared distances, the eigenvalue floor."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transferjax import linalg


def _numpy_pca(x, k):
    xc = x - x.mean(0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    return s**2, u[:, :k] * s[:k], vt[:k].T


@pytest.mark.parametrize("shape", [(40, 6), (6, 40)])  # d×d scatter, n×n kernel
def test_principal_components_equal_an_svd(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape) * np.geomspace(4.0, 0.5, shape[1]) + 3.0
    k = 4
    with jax.enable_x64(True):
        w_ref, z_ref, v_ref = _numpy_pca(x, k)
        w, z = linalg.principal_components(jnp.asarray(x), k)
        np.testing.assert_allclose(w[: len(w_ref) - 1], w_ref[:-1], rtol=1e-10)
        assert z.shape == (shape[0], k)
        np.testing.assert_allclose(np.abs(z), np.abs(z_ref), rtol=1e-8, atol=1e-10)
        # scikit-learn >= 1.5: the largest-magnitude loading of each direction is positive
        flip = np.sign(v_ref[np.argmax(np.abs(v_ref), axis=0), np.arange(k)])
        _, z = linalg.principal_components(jnp.asarray(x), k, signs="loadings")
        np.testing.assert_allclose(z, z_ref * flip, rtol=1e-8, atol=1e-10)
        # before 1.5: the largest-magnitude score of each column is positive
        flip = np.sign(z_ref[np.argmax(np.abs(z_ref), axis=0), np.arange(k)])
        _, z = linalg.principal_components(jnp.asarray(x), k, signs="scores")
        np.testing.assert_allclose(z, z_ref * flip, rtol=1e-8, atol=1e-10)
        # the d×d route from a given scatter: same variances, descending
        w_axes, _ = linalg.principal_axes(linalg.gram(linalg.center(jnp.asarray(x))))
        np.testing.assert_allclose(w_axes[:k], w_ref[:k], rtol=1e-10)
        assert np.all(np.diff(np.asarray(w_axes)) <= 0)


def test_sqdist_and_sym():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    with jax.enable_x64(True):
        want = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        np.testing.assert_allclose(linalg.sqdist(a, b), want, rtol=1e-12)
        assert float(jnp.min(linalg.sqdist(a, a))) >= 0.0  # clamped, exact zeros on the diagonal
        m = rng.normal(size=(2, 3, 3))
        np.testing.assert_array_equal(linalg.sym(m), 0.5 * (m + m.transpose(0, 2, 1)))


def test_eig_floor_grows_with_the_size():
    eps = float(jnp.finfo(jnp.float32).eps)
    assert linalg.eig_floor(jnp.float32, 1) == eps
    assert linalg.eig_floor(jnp.float32, 16) == 4 * eps
    assert linalg.eig_floor(jnp.float32, 1024) == 10 * eps
    # a rank-deficient Gram: its zero eigenvalues come out as noise and are floored to 0, the
    # genuine small ones (λ/λ_max = 1e-5, far above the floor) are kept
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 6)) * np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    x[:, 3] *= np.sqrt(1e-5)
    w, _ = linalg.eigh_psd(linalg.gram(linalg.center(jnp.asarray(x, jnp.float32))))
    assert np.sum(np.asarray(w) > 0) == 4
