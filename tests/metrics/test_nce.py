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
    src = np.where(rng.random(n) < 0.6, y * 2, rng.integers(0, z, n))
    return src, y


def _np_nce(z, y):
    # Independent float64 version: -H(Y|Z) from empirical frequencies, empty terms skipped.
    n = len(y)
    total = 0.0
    for zv in np.unique(z):
        sel = y[z == zv]
        p = np.bincount(sel) / len(sel)
        p = p[p > 0]
        total += len(sel) / n * np.sum(p * np.log(p))
    return total


@pytest.mark.parametrize("case", _golden.cases("nce.json"))
def test_golden(case, precision):
    _golden.check_parity(tj.nce, case, inputs=lambda _, y, data: (np.argmax(data["source_probs"], axis=1), y))


def test_matches_numpy():
    z, y = _data(seed=2)
    with jax.enable_x64(True):
        np.testing.assert_allclose(float(tj.nce(z, y)), _np_nce(z, y), rtol=1e-12)


def test_hand_checked():
    y = np.array([0, 0, 1, 1])
    assert float(tj.nce(np.array([3, 3, 5, 5]), y)) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(tj.nce(np.array([0, 1, 0, 1]), y), -np.log(2), rtol=1e-6)
    # a constant source label gives -H(Y)
    y = np.array([0, 0, 0, 1])
    h = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    np.testing.assert_allclose(tj.nce(np.zeros(4, int), y), -h, rtol=1e-6)


def test_num_source_classes_only_sets_the_table():
    z, y = _data()
    np.testing.assert_allclose(tj.nce(z, y, num_source_classes=40), tj.nce(z, y), rtol=1e-6)


_Z = np.arange(10) % 3
_Y = np.arange(10) % 2


@pytest.mark.parametrize(
    "src, labels, kw, err, match",
    [
        (_Z.astype(float), _Y, {}, TypeError, "source_labels must be integer"),
        (_Z == 0, _Y, {}, TypeError, "source_labels must be integer"),
        (_Z - 1, _Y, {}, ValueError, "source_labels must be integers in"),
        (_Z, _Y, {"num_source_classes": 2}, ValueError, "source_labels must be integers in 0..1"),
        (_Z[:9], _Y, {}, ValueError, "source_labels has 9 entries"),
        (_Z[:, None], _Y, {}, ValueError, "source_labels must be 1-D"),
        (_Z, _Y.astype(float), {}, TypeError, "no regression form"),
        (_Z, np.zeros(10, int), {}, ValueError, "at least 2 classes"),
        (_Z, _Y - 1, {}, ValueError, "0..C-1"),
    ],
)
def test_bad_input(src, labels, kw, err, match):
    with pytest.raises(err, match="nce: .*" + match):
        tj.nce(src, labels, **kw)


def test_traced_inputs_need_counts():
    z, y = _data()
    with pytest.raises(TypeError, match="num_classes"):
        jax.jit(lambda a, b: tj.nce(a, b, num_source_classes=7))(z, y)
    with pytest.raises(TypeError, match="source_labels are traced"):
        jax.jit(lambda a, b: tj.nce(a, b, num_classes=3))(z, y)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_invariances(seed):
    rng = np.random.default_rng(seed)
    z, y = _data(seed=seed % 1000)
    ref = float(tj.nce(z, y, num_source_classes=7))
    perm = rng.permutation(len(y))
    np.testing.assert_allclose(tj.nce(z[perm], y[perm], num_source_classes=7), ref, rtol=1e-5)
    np.testing.assert_allclose(tj.nce(z, rng.permutation(3)[y], num_source_classes=7), ref,
                               rtol=1e-5)
    np.testing.assert_allclose(tj.nce(rng.permutation(7)[z], y, num_source_classes=7), ref,
                               rtol=1e-5)
