import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transferjax as tj
from tests import _golden


def _data(n=90, z=7, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
    logits = rng.normal(size=(n, z)) + 2.0 * np.eye(c, z)[y]
    p = np.exp(logits - logits.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).astype(np.float32), y


def _np_leep(theta, y):
    # Independent float64 loop over classes, written from the spec.
    theta = np.asarray(theta, np.float64)
    n, z = theta.shape
    c = int(y.max()) + 1
    joint = np.zeros((c, z))
    for k in range(c):
        joint[k] = theta[y == k].sum(0) / n
    cond = joint / joint.sum(0, keepdims=True)
    return np.mean([np.log(theta[i] @ cond[y[i]]) for i in range(n)])


@pytest.mark.parametrize("case", _golden.cases("leep.json"))
def test_golden(case, precision):
    _golden.check_parity(tj.leep, case, inputs=lambda _, y, data: (data["source_probs"], y))


def test_matches_numpy_loop():
    theta, y = _data(seed=3)
    with jax.enable_x64(True):
        np.testing.assert_allclose(float(tj.leep(theta, y)), _np_leep(theta, y), rtol=1e-12)


def test_uninformative_source_gives_log_class_frequency():
    _, y = _data()
    uniform = np.full((len(y), 5), 0.2)
    freq = np.bincount(y)[y] / len(y)
    np.testing.assert_allclose(tj.leep(uniform, y), np.mean(np.log(freq)), rtol=1e-6)


def test_hard_probabilities_equal_nce():
    theta, y = _data()
    z = theta.argmax(1)
    hard = np.eye(theta.shape[1], dtype=np.float32)[z]
    np.testing.assert_allclose(tj.leep(hard, y), tj.nce(z, y), rtol=1e-6)


def test_unused_source_class_changes_nothing():
    theta, y = _data()
    extra = np.c_[theta, np.zeros(len(y), np.float32)]
    out = tj.leep(extra, y)
    assert np.isfinite(float(out))
    np.testing.assert_allclose(out, tj.leep(theta, y), rtol=1e-6)


def test_better_source_scores_higher():
    good, y = _data()
    bad = _data(seed=5)[0]  # same shape, unrelated to y
    assert tj.leep(good, y) > tj.leep(bad, y)


_P = np.full((10, 2), 0.5)
_Y = np.arange(10) % 2


@pytest.mark.parametrize(
    "probs, labels, err, match",
    [
        (np.c_[np.full(10, 1.2), np.full(10, -0.2)], _Y, ValueError, "source_probs.*negative"),
        (np.full((10, 2), 0.6), _Y, ValueError, "source_probs rows must sum to 1"),
        (np.r_[_P[:9], [[0.5, 0.51]]], _Y, ValueError, "row 9 sums to 1.01"),
        (np.full((10, 2), np.nan), _Y, ValueError, "source_probs contains NaN"),
        (np.full(10, 1.0), _Y, ValueError, "source_probs must be 2-D"),
        (_P.astype(complex), _Y, TypeError, "source_probs must be a real numeric"),
        (_P, _Y[:9], ValueError, "9 entries"),
        (_P, _Y.astype(float), TypeError, "no regression form"),
        (_P, np.zeros(10, int), ValueError, "at least 2 classes"),
        (_P, _Y * 2, ValueError, "no samples"),
        (_P, _Y - 1, ValueError, "0..C-1"),
    ],
)
def test_bad_input(probs, labels, err, match):
    with pytest.raises(err, match="leep: .*" + match):
        tj.leep(probs, labels)


def test_rows_within_tolerance_accepted():
    p = np.r_[_P[:9], [[0.5, 0.5005]]]
    assert np.isfinite(float(tj.leep(p, _Y)))


def test_traced_labels_need_num_classes():
    theta, y = _data()
    with pytest.raises(TypeError, match="num_classes"):
        jax.jit(tj.leep)(theta, y)


@pytest.mark.parametrize(
    "make",
    [
        lambda th, y: (np.eye(th.shape[1], dtype=np.float32)[th.argmax(1)], y),  # one-hot
        lambda th, y: (np.ones((len(y), 1), np.float32), y),  # a single source class
        lambda th, y: (th, np.r_[0, np.ones(len(y) - 1, int)]),  # singleton target class
    ],
)
def test_degenerate_inputs_are_finite(make):
    theta, y = make(*_data())
    assert np.isfinite(float(tj.leep(theta, y)))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_invariances(seed):
    rng = np.random.default_rng(seed)
    theta, y = _data(seed=seed % 1000)
    ref = float(tj.leep(theta, y))
    perm = rng.permutation(len(y))
    np.testing.assert_allclose(tj.leep(theta[perm], y[perm]), ref, rtol=1e-5)
    np.testing.assert_allclose(tj.leep(theta, rng.permutation(3)[y]), ref, rtol=1e-5)
    np.testing.assert_allclose(tj.leep(theta[:, rng.permutation(7)], y), ref, rtol=1e-5)
