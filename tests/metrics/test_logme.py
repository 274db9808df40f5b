import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transferjax as tj
from tests import _golden
from tests._tol import GOLDEN_RTOL, rtol


def _data(n=120, d=10, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    f = rng.normal(size=(n, d)).astype(np.float32) + 0.7 * np.eye(c, d, dtype=np.float32)[y]
    return f, y


@pytest.mark.parametrize("case", _golden.cases("logme.json", include_hub=False))  # hub: tests/test_golden_hub.py
def test_golden_classification(case, precision):
    _golden.check_parity(tj.logme, case)


def _float_targets(f, y, _):
    assert y.dtype.kind == "f"
    return f, y


@pytest.mark.parametrize("case", _golden.cases("logme_reg.json"))
def test_golden_regression(case, precision):
    _golden.check_parity(tj.logme, case, inputs=_float_targets)


# one compile per chunk shape instead of one per primitive (test time)
_feature_stats = jax.jit(tj.feature_stats, static_argnames=("num_classes",))
_merge_stats = jax.jit(tj.merge_stats)


@pytest.mark.parametrize("case", _golden.cases("logme.json", include_hub=False))
def test_golden_from_stats(case, precision):
    """Statistics merged from uneven chunks give the golden score (Gram path, exact in x64)."""
    name, _, expected = case
    f, y, _ = _golden.load_input(name)
    dt = jnp.float64 if precision == "float64" else jnp.float32
    c = int(y.max()) + 1
    bounds = [0, 37, len(y) // 2, len(y)]
    parts = [
        _feature_stats(jnp.asarray(f[a:b], dt), jnp.asarray(y[a:b]), num_classes=c)
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    stats = parts[0]
    for p in parts[1:]:
        stats = _merge_stats(stats, p)
    got = tj.logme(stats=stats)
    # n < d (c3_wide) goes through the d×d Gram here: rank-deficient, so float32 is looser.
    tol = rtol(GOLDEN_RTOL, dt) if f.shape[0] >= f.shape[1] else 2e-3
    np.testing.assert_allclose(float(got), expected, rtol=max(tol, rtol(GOLDEN_RTOL, dt)))


def test_regression_1d_equals_column():
    f, _ = _data()
    t = (f[:, 0] * 2 + np.sin(f[:, 1])).astype(np.float32)
    np.testing.assert_allclose(tj.logme(f, t), tj.logme(f, t[:, None]), rtol=1e-6)


def test_regression_mean_over_columns():
    f, _ = _data()
    noise = np.random.default_rng(3).normal(size=(len(f), 2))
    t = (np.stack([f[:, 0], f[:, 1] ** 2], 1) + noise).astype(np.float32)
    both = tj.logme(f, t)
    each = (tj.logme(f, t[:, 0]) + tj.logme(f, t[:, 1])) / 2
    np.testing.assert_allclose(both, each, rtol=1e-5)


def test_better_features_score_higher():
    rng = np.random.default_rng(1)
    y = np.arange(300) % 3
    good = rng.normal(size=(300, 6)) + 3 * np.eye(3, 6)[y]
    bad = rng.normal(size=(300, 6))
    assert tj.logme(good, y) > tj.logme(bad, y)


@pytest.mark.parametrize(
    "features, labels, err, match",
    [
        (np.random.rand(10, 3), np.array([np.nan] + [1.0] * 9), ValueError, "NaN or inf"),
        (np.random.rand(10, 3), np.ones((10, 2, 1)), ValueError, r"\[n\] or \[n, k\]"),
    ],
)
def test_bad_input(features, labels, err, match):
    with pytest.raises(err, match="logme: .*" + match):
        tj.logme(features, labels)


def test_stats_and_features_exclusive():
    f, y = _data()
    st_ = tj.feature_stats(jnp.asarray(f), jnp.asarray(y), num_classes=4)
    with pytest.raises(ValueError, match="not both"):
        tj.logme(f, y, stats=st_)
    with pytest.raises(ValueError, match="required"):
        tj.logme(f)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: (r.normal(size=(20, 64)), np.arange(20) % 3),  # n < d
        lambda r: (r.normal(size=(40, 5)), np.r_[0, np.ones(39, int)]),  # singleton class
        lambda r: (np.c_[np.ones(40), r.normal(size=(40, 4))], np.arange(40) % 2),  # constant col
        lambda r: (np.c_[np.zeros(40), r.normal(size=(40, 4))], np.arange(40) % 2),  # zero col
        lambda r: (np.ones((40, 4)), np.arange(40) % 2),  # all columns constant
        lambda r: (np.repeat(r.normal(size=(1, 6)), 30, 0), np.arange(30) % 3),  # identical rows
    ],
)
def test_degenerate_inputs_are_finite(make):
    f, y = make(np.random.default_rng(0))
    assert np.isfinite(float(tj.logme(f, y)))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_invariances(seed):
    rng = np.random.default_rng(seed)
    n, d, c = 60, 6, 3
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
    f = (rng.normal(size=(n, d)) + rng.normal(size=(c, d))[y]).astype(np.float32)
    ref = float(tj.logme(f, y))
    perm = rng.permutation(n)
    np.testing.assert_allclose(tj.logme(f[perm], y[perm]), ref, rtol=1e-4)
    relabel = rng.permutation(c)
    np.testing.assert_allclose(tj.logme(f, relabel[y]), ref, rtol=1e-4)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    np.testing.assert_allclose(tj.logme(f @ q.astype(np.float32), y), ref, rtol=1e-4, atol=1e-5)
