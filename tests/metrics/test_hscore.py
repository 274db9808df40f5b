import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transferjax as tj
from tests import _golden
from transferjax.linalg import ledoit_wolf_shrinkage
from transferjax.stats import between_class_targets

METRICS = {"hscore": tj.hscore, "shrinkage_hscore": tj.shrinkage_hscore}
BOTH = pytest.mark.parametrize("name", list(METRICS))


def _data(n=120, d=10, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    f = rng.normal(size=(n, d)).astype(np.float32) + 0.7 * np.eye(c, d, dtype=np.float32)[y]
    return f, y


# Independent float64 NumPy versions, written from the spec (np.cov + pinv, the literal LW sums).
def _np_hscore(f, y):
    f = np.asarray(f, np.float64)
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(0)
    cov_f = np.atleast_2d(np.cov(f, rowvar=False))
    cov_g = np.atleast_2d(np.cov(g, rowvar=False))
    return np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ cov_g)


def _np_lw(x):
    n, d = x.shape
    s = x.T @ x / n
    mu = np.trace(s) / d
    delta = np.sum((s - mu * np.eye(d)) ** 2) / d
    beta = sum(np.sum((np.outer(r, r) - s) ** 2) for r in x) / (n * n * d)
    beta = min(beta, delta)
    return (0.0 if beta == 0 else beta / delta), mu


def _np_shrinkage_hscore(f, y):
    x = np.asarray(f, np.float64)
    x = x - x.mean(0)
    n, d = x.shape
    alpha, mu = _np_lw(x)
    cov = (1 - alpha) * x.T @ x / n + alpha * mu * np.eye(d)
    g = np.zeros_like(x)
    for c in np.unique(y):
        g[y == c] = x[y == c].mean(0)
    cov_g = np.atleast_2d(np.cov(g, rowvar=False))
    return np.trace(np.linalg.pinv(cov, rcond=1e-15) @ ((1 - alpha) * cov_g))


NUMPY = {"hscore": _np_hscore, "shrinkage_hscore": _np_shrinkage_hscore}


@pytest.mark.parametrize("case", _golden.cases("hscore.json", include_hub=False))  # hub: tests/test_golden_hub.py
def test_golden_hscore(case, precision):
    _golden.check_parity(tj.hscore, case)


@pytest.mark.parametrize("case", _golden.cases("hscore_reg.json", include_hub=False))  # hub: tests/test_golden_hub.py
def test_golden_shrinkage_hscore(case, precision):
    _golden.check_parity(tj.shrinkage_hscore, case)


@BOTH
@pytest.mark.parametrize("shape", [(40, 5), (15, 30)])
def test_matches_numpy_formula(name, shape):
    n, d = shape
    f, y = _data(n=n, d=d, c=3, seed=n + d)
    f = f @ np.random.default_rng(1).normal(size=(d, d)).astype(np.float32)  # anisotropic
    with jax.enable_x64(True):
        got = float(METRICS[name](f, y))
    np.testing.assert_allclose(got, NUMPY[name](f, y), rtol=1e-9)


def test_wide_data_gives_c_minus_one():
    # n <= d: the class means are always separable, H-score is exactly c - 1
    f, y = _data(n=30, d=50, c=5)
    np.testing.assert_allclose(tj.hscore(f, y), 4.0, rtol=1e-5)


def test_hscore_bounds():
    f, y = _data()
    s = float(tj.hscore(f, y))
    assert 0.0 < s < 3.0
    # features that are the one-hot class indicators explain everything: c - 1
    onehot = np.eye(4)[y]
    np.testing.assert_allclose(tj.hscore(onehot, y), 3.0, rtol=1e-5)


def test_ledoit_wolf_matches_literal_formula():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        for n, d in [(50, 7), (9, 20)]:
            x = rng.normal(size=(n, d)) * rng.uniform(0.1, 3, size=d)
            x = x - x.mean(0)
            ell = np.linalg.eigvalsh(x.T @ x / n).clip(0)
            norm4 = np.sum(np.sum(x * x, 1) ** 2)
            a, mu = ledoit_wolf_shrinkage(jnp.asarray(ell), norm4, n, d)
            ea, emu = _np_lw(x)
            np.testing.assert_allclose([a, mu], [ea, emu], rtol=1e-9)
            # a shorter (kernel, min(n, d)) or zero-padded spectrum with the same width
            short = np.sort(ell)[-min(n, d):]
            padded = np.r_[ell, np.zeros(13)]
            for spec in (short, padded):
                got = ledoit_wolf_shrinkage(jnp.asarray(spec), norm4, n, d)
                np.testing.assert_allclose(got, [ea, emu], rtol=1e-9)


def test_between_class_targets_give_between_scatter():
    f, y = _data(n=50, d=6, c=3)
    with jax.enable_x64(True):
        f = np.asarray(f, np.float64)
        t = between_class_targets(jnp.asarray(y), 3, jnp.float64)
        m = np.asarray(f.T @ t)
        mu = f.mean(0)
        b = sum((y == c).sum() * np.outer(f[y == c].mean(0) - mu, f[y == c].mean(0) - mu)
                for c in range(3))
        np.testing.assert_allclose(m @ m.T, b, rtol=1e-10, atol=1e-12)
        assert np.allclose(np.asarray(t).sum(0), 0)


@BOTH
def test_better_features_score_higher(name):
    rng = np.random.default_rng(1)
    y = np.arange(120) % 4
    good = rng.normal(size=(120, 10)) + 3 * np.eye(4, 10)[y]
    bad = rng.normal(size=(120, 10))
    assert METRICS[name](good, y) > METRICS[name](bad, y)


@BOTH
@pytest.mark.parametrize(
    "features, labels, err, match",
    [
        (np.random.rand(10, 3), np.linspace(0, 1, 10), TypeError, "no regression form"),
        (np.random.rand(10, 3), np.ones((10, 2), int), ValueError, "1-D"),
    ],
)
def test_bad_input(name, features, labels, err, match):
    with pytest.raises(err, match=f"{name}: .*" + match):
        METRICS[name](features, labels)


def test_traced_labels_need_num_classes():
    f, y = _data()
    with pytest.raises(TypeError, match="num_classes"):
        jax.jit(lambda a, b: tj.hscore(a, b))(f, y)


@BOTH
@pytest.mark.parametrize(
    "make",
    [
        lambda r: (r.normal(size=(20, 64)), np.arange(20) % 3),  # n < d
        lambda r: (r.normal(size=(40, 5)), np.r_[0, np.ones(39, int)]),  # singleton class
        lambda r: (np.c_[np.full(40, 0.1), r.normal(size=(40, 4))], np.arange(40) % 2),  # const
        lambda r: (np.c_[np.zeros(40), r.normal(size=(40, 4))], np.arange(40) % 2),  # zero col
        lambda r: (np.ones((40, 5)), np.arange(40) % 2),  # all columns constant
        lambda r: (np.repeat(r.normal(size=(1, 5)), 40, 0), np.arange(40) % 2),  # identical rows
        lambda r: (r.normal(size=(40, 1)), np.arange(40) % 2),  # d = 1
    ],
)
def test_degenerate_inputs_are_finite(name, make):
    f, y = make(np.random.default_rng(0))
    assert np.isfinite(float(METRICS[name](f, y)))


def test_constant_column_is_ignored_by_hscore():
    f, y = _data(n=40, d=4, c=2)
    with_const = np.c_[np.full(40, 1234.5, np.float32), f]
    np.testing.assert_allclose(tj.hscore(with_const, y), tj.hscore(f, y), rtol=1e-5)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_invariances(seed):
    rng = np.random.default_rng(seed)
    n, d, c = 60, 6, 3
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
    f = (rng.normal(size=(n, d)) + rng.normal(size=(c, d))[y]).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a = (q * rng.uniform(0.2, 5.0, size=d)).astype(np.float32)  # invertible, not orthogonal
    shift = rng.normal(size=(1, d)).astype(np.float32) * 3
    perm, relabel = rng.permutation(n), rng.permutation(c)
    for name, fn in METRICS.items():
        ref = float(fn(f, y))
        np.testing.assert_allclose(fn(f[perm], y[perm]), ref, rtol=1e-4)
        np.testing.assert_allclose(fn(f, relabel[y]), ref, rtol=1e-4)
        np.testing.assert_allclose(fn(f @ q.astype(np.float32) + shift, y), ref, rtol=1e-4)
        np.testing.assert_allclose(fn(3.0 * f, y), ref, rtol=1e-4)
    # only the plain H-score is invariant under any invertible linear map
    np.testing.assert_allclose(tj.hscore(f @ a, y), tj.hscore(f, y), rtol=1e-4)
