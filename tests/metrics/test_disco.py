import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transferjax as tj
from tests import _golden
from tests._tol import GOLDEN_RTOL, PAD_RTOL
from transferjax.metrics import disco as disco_mod

_VARIANTS = {"ncc_prob": {"ncc": "prob"}, "n_groups_1": {"n_groups": 1}, "no_center": {"center": False}}
# hub members of the variants: same code paths as their default cases (compile time)
_VARIANT_CASES = _golden.variant_cases("disco.json", include_hub=False) + _golden.variant_cases(
    "disco_reg.json", include_hub=False
)


def _data(n=90, d=8, c=3, seed=0, sep=1.5):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    f = rng.normal(size=(n, d)) * np.linspace(2.0, 0.3, d) + sep * np.eye(c, d)[y]
    return f.astype(np.float32), y


def _oracle(f, y, n_groups=10, center=True):
    """Float64 NumPy DISCO: thin SVD, np.array_split groups, loop over groups (test oracle)."""
    f = np.asarray(f, np.float64)
    f = f - f.mean(0) if center else f
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    k = int(np.sum(s > s[0] * max(n, d) * np.finfo(float).eps))
    total = 0.0
    for idx in np.array_split(np.arange(k), min(n_groups, k)):
        z = u[:, idx] * s[idx]
        if y.dtype.kind == "f":
            t = y.reshape(n, -1).astype(np.float64)
            a = np.c_[np.ones(n), z]
            res = t - a @ np.linalg.lstsq(a, t, rcond=None)[0]
            task = np.mean(1 - (res**2).sum(0) / ((t - t.mean(0)) ** 2).sum(0))
        else:
            mu = np.stack([z[y == c].mean(0) for c in range(y.max() + 1)])
            task = np.mean(((z[:, None] - mu[None]) ** 2).sum(-1).argmin(1) == y)
        total += s[idx].sum() / s[:k].sum() * task
    return total


# ----------------------------------------------------------------------------- golden


@pytest.mark.parametrize("case", _golden.cases("disco.json", include_hub=False))  # hub: tests/test_golden_hub.py
def test_golden_classification(case, precision):
    _golden.check_parity(tj.disco, case)


def _float_targets(f, y, _):
    assert y.dtype.kind == "f"
    return f, y


@pytest.mark.parametrize("case", _golden.cases("disco_reg.json"))
def test_golden_regression(case, precision):
    _golden.check_parity(tj.disco, case, inputs=_float_targets)


@pytest.mark.parametrize("entry", _VARIANT_CASES)
def test_golden_variants(entry):
    var, name, model, expected = entry
    # Parity caution of the reference: the accuracy variants are checked in float64, the smooth
    # ``prob`` variant in float32 (the default-settings cases above run in both). One precision
    # per variant keeps the file's compile time down.
    with jax.enable_x64(var != "ncc_prob"):
        _golden.check_parity(tj.disco, (name, model, expected), **_VARIANTS[var])


def test_golden_svd_method_float32():
    """Uncentred c6 has a genuine σ at 2.7e-4·σ₁, below the float32 Gram's resolution √eps·σ₁:
    the SVD route keeps it (parity), the Gram route treats it as rank deficiency (documented)."""
    if not _golden.available():
        pytest.skip(_golden.MISSING)
    expected = _golden.load_json("disco.json")["variants"]["no_center"]["c6_digits_relu"]
    f, y, _ = _golden.load_input("c6_digits_relu")
    got = tj.disco(f, y, center=False, method="svd")
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), expected, rtol=GOLDEN_RTOL[jnp.float32])


# ----------------------------------------------------------------------------- hand checks


def _hadamard8():
    h = np.array([[1.0]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])
    return h


def test_hand_checked_orthogonal_columns():
    """Orthogonal zero-mean columns of norms 3, 2, 1 (×√8): groups are the columns, r = 1/2, 1/3,
    1/6. The labels follow column 1 only: prob ≈ 1 there, exactly 1/2 on the other two."""
    h = _hadamard8()
    f = h[:, 1:4] * np.array([3.0, 2.0, 1.0])
    y = (h[:, 1] < 0).astype(np.int32)
    got = tj.disco(f, y, n_groups=3, ncc="prob")
    np.testing.assert_allclose(float(got), 0.5 + (1 / 3 + 1 / 6) * 0.5, rtol=1e-5)
    # regression: target = col1 + 0.5 col2 -> R² = 0.8, 0.2, 0 per group
    t = (h[:, 1] + 0.5 * h[:, 2]).astype(np.float32)
    got = tj.disco(f, t, n_groups=3)
    np.testing.assert_allclose(float(got), 0.5 * 0.8 + 0.2 / 3, rtol=1e-5)


def test_matches_oracle_small():
    with jax.enable_x64(True):
        f, y = _data(n=70, d=12, c=4, seed=5)
        for g in (1, 5, 30):
            np.testing.assert_allclose(float(tj.disco(f, y, n_groups=g)), _oracle(f, y, g), 1e-10)
        f, y = _data(n=20, d=40, c=3, seed=6)  # n < d: kernel route, rank n - 1
        np.testing.assert_allclose(float(tj.disco(f, y)), _oracle(f, y), 1e-10)
        t = np.c_[f[:, 0] * 2 + 0.3 * f[:, 5] ** 2, np.sin(f[:, 1])]
        for center in (True, False):
            np.testing.assert_allclose(
                float(tj.disco(f, t, center=center, n_groups=4)), _oracle(f, t, 4, center), 1e-9
            )


def test_svd_method_equals_gram():
    with jax.enable_x64(True):
        for shape in ((80, 10), (25, 40)):
            f, y = _data(*shape)
            a = tj.disco(f, y, method="svd", ncc="prob")
            b = tj.disco(f, y, ncc="prob")
            np.testing.assert_allclose(a, b, rtol=1e-10)


def test_absent_class_ignored():
    f, y = _data()
    np.testing.assert_allclose(tj.disco(f, y, num_classes=5), tj.disco(f, y), rtol=1e-6)


# ----------------------------------------------------------------------------- transforms


def test_padding_invariance_regression():
    f, _ = _data(n=60, d=9)
    t = f[:, :2] @ np.array([[1.0], [-0.5]], np.float32) + 0.1
    ref = tj.disco(f, t)
    padded = np.concatenate([f, np.zeros((60, 20), f.dtype)], axis=1)
    np.testing.assert_allclose(tj.disco(padded, t, width=9), ref, rtol=PAD_RTOL[jnp.float32])


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_invariances(seed):
    rng = np.random.default_rng(seed)
    n, d, c = 48, 6, 3
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
    f = rng.normal(size=(n, d)) * np.linspace(2, 0.5, d) + rng.normal(size=(c, d))[y]
    with jax.enable_x64(True):  # acc near-ties would make float32 flaky
        ref = float(tj.disco(f, y, n_groups=3))
        perm = rng.permutation(n)
        np.testing.assert_allclose(tj.disco(f[perm], y[perm], n_groups=3), ref, rtol=1e-9)
        relabel = rng.permutation(c)
        np.testing.assert_allclose(tj.disco(f, relabel[y], n_groups=3), ref, rtol=1e-9)
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        moved = 2.5 * (f @ q) + rng.normal(size=(1, d))
        np.testing.assert_allclose(tj.disco(moved, y, n_groups=3), ref, rtol=1e-9)


def test_better_features_score_higher():
    rng = np.random.default_rng(1)
    y = np.arange(300) % 3
    good = rng.normal(size=(300, 6)) + 3 * np.eye(3, 6)[y]
    bad = rng.normal(size=(300, 6))
    assert tj.disco(good, y) > tj.disco(bad, y)
    assert 0.0 <= float(tj.disco(bad, y)) <= 1.0


# ----------------------------------------------------------------------------- sampling


def test_hard_sampling_deterministic_with_key():
    f, y = _data(n=200, d=8, sep=1.0)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    a = tj.disco(f, y, sample_size=80, key=k1)
    np.testing.assert_array_equal(a, tj.disco(f, y, sample_size=80, key=k1))
    assert float(a) != float(tj.disco(f, y, sample_size=80, key=k2))
    # the whole set: no sampling
    np.testing.assert_array_equal(tj.disco(f, y, sample_size=200, key=k1), tj.disco(f, y))
    # inside jit and vmap
    fn = jax.jit(lambda a, k: tj.disco(a, y, num_classes=3, sample_size=80, key=k))
    np.testing.assert_allclose(fn(f, k1), a, rtol=1e-5)
    keys = jax.random.split(k1, 2)
    out = jax.vmap(lambda k: tj.disco(f, y, num_classes=3, sample_size=80, key=k))(keys)
    assert out.shape == (2,) and bool(jnp.all(jnp.isfinite(out)))
    t = f[:, 0] + 0.1 * f[:, 1]
    assert np.isfinite(float(tj.disco(f, t, sample_size=50, key=k1)))


def test_hard_sampling_favours_hard_examples():
    f, y = _data(n=400, d=6, sep=1.0)
    x, yj = jnp.asarray(f), jnp.asarray(y)
    idx = disco_mod._hard_sample(
        x, yj, jax.random.key(0), 1.0, num_classes=3, regression=False, sample_size=100
    )
    assert len(set(np.asarray(idx).tolist())) == 100
    mu = np.stack([f[y == c].mean(0) for c in range(3)])
    dist = ((f[:, None] - mu[None]) ** 2).sum(-1)
    own = dist[np.arange(400), y]
    other = np.where(np.eye(3, dtype=bool)[y], np.inf, dist).min(1)
    margin = other - own
    assert margin[np.asarray(idx)].mean() < margin.mean() - 0.5 * margin.std()


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "features, labels, kw, err, match",
    [
        (np.random.rand(10, 3), np.ones((10, 2, 1)), {}, ValueError, r"\[n\] or \[n, k\]"),
        (np.ones((10, 3)), np.arange(10) % 2, {}, ValueError, "no spread"),
        (np.zeros((10, 3)), np.arange(10) % 2, {"center": False}, ValueError, "no spread"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"n_groups": 0}, ValueError, "n_groups"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"n_groups": 2.0}, TypeError, "n_groups"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"ncc": "logp"}, ValueError, "ncc"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"method": "qr"}, ValueError, "method"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"center": "yes"}, TypeError, "center"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"sample_size": 5}, TypeError, "key"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"sample_size": 1, "key": 0}, ValueError,
         "sample_size"),
    ],
)
def test_bad_input(features, labels, kw, err, match):
    with pytest.raises(err, match="disco: .*" + match):
        tj.disco(features, labels, **kw)


def test_traced_labels_need_num_classes():
    f, y = _data()
    with pytest.raises(TypeError, match="num_classes"):
        jax.jit(lambda a, b: tj.disco(a, b))(f, y)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: (r.normal(size=(20, 64)), np.arange(20) % 3),  # n < d
        lambda r: (r.normal(size=(40, 5)), np.r_[0, np.ones(39, int)]),  # singleton class
        lambda r: (np.c_[np.ones(40), r.normal(size=(40, 4))], np.arange(40) % 2),  # constant col
        lambda r: (r.normal(size=(40, 3)), np.arange(40) % 2),  # rank 3 < n_groups
        lambda r: (np.c_[r.normal(size=(30, 1))] @ np.ones((1, 5)), np.arange(30) % 2),  # rank 1
        lambda r: (r.normal(size=(2, 4)), np.array([0, 1])),  # n = 2
        lambda r: (r.normal(size=(30, 4)), np.ones(30, np.float32)),  # constant target
    ],
)
def test_degenerate_inputs_are_finite(make):
    f, y = make(np.random.default_rng(0))
    v = float(tj.disco(f, y))
    assert np.isfinite(v) and -1e-6 <= v <= 1 + 1e-6


def test_degenerate_svd_method_finite():
    rng = np.random.default_rng(0)
    rank1 = rng.normal(size=(30, 1)) @ np.ones((1, 5))
    for f, y in ((rank1, np.arange(30) % 2), (rng.normal(size=(20, 64)), np.arange(20) % 3)):
        v = float(tj.disco(f, y, method="svd"))
        assert np.isfinite(v) and 0.0 <= v <= 1.0

