import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transferjax as tj
from tests import _golden
from tests._tol import GOLDEN_RTOL, PAD_RTOL, rtol
from transferjax.linalg import pca_scores

# The reference computes in float32; "Suggested tolerance: rtol 1e-4, atol 1e-6" (the
# atol covers scores that underflow towards -0.0). float32 keeps the looser project rtol.
GBC_RTOL = {jnp.float32: GOLDEN_RTOL[jnp.float32], jnp.float64: 1e-4}
GBC_ATOL = 1e-6

VARIANTS = {
    "diagonal_nopca": dict(gaussian="diagonal"),
    "spherical_pca64": dict(pca_dim=64),
    "diagonal_pca64": dict(gaussian="diagonal", pca_dim=64),
}


def _data(n=120, d=10, c=4, seed=0, sep=0.7):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    f = rng.normal(size=(n, d)).astype(np.float32) + sep * np.eye(c, d, dtype=np.float32)[y]
    return f, y


@pytest.mark.parametrize("case", _golden.cases("gbc.json", include_hub=False))  # hub: tests/test_golden_hub.py
def test_golden(case, precision):
    _golden.check_parity(tj.gbc, case, table=GBC_RTOL, atol=GBC_ATOL)


@pytest.mark.parametrize("case", _golden.variant_cases("gbc.json", include_hub=False))
def test_golden_variants(case, precision):
    variant, name, model, expected = case
    _golden.check_parity(
        tj.gbc, (name, model, expected), table=GBC_RTOL, atol=GBC_ATOL, **VARIANTS[variant]
    )


@pytest.mark.parametrize("variant", _golden.hub_variants("gbc.json"))
def test_golden_variants_hub(variant, precision):
    expected = _golden.load_json("gbc.json")["variants"][variant]["hub"]
    _golden.check_hub("gbc", expected, table=GBC_RTOL, atol=GBC_ATOL, **VARIANTS[variant])


@pytest.mark.parametrize("gaussian", ["spherical", "diagonal"])
def test_hand_checked_two_classes(gaussian):
    # 1-D: class 0 = {0, 2} (mean 1, var 1), class 1 = {4, 6} (mean 5, var 1):
    # D_B = 16 / 8 + 0 = 2 in both directions, GBC = -2 e^-2.
    f = np.array([[0.0], [2.0], [4.0], [6.0]])
    y = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(tj.gbc(f, y, gaussian=gaussian), -2 * math.exp(-2), rtol=1e-6)


def test_hand_checked_variance_floor_and_log_terms():
    # Class 0 constant (variance 0 -> floor 1e-4), class 1 = {-1, 1} (variance 1), same mean 0:
    # D_B = 0 + 1/2 (log s̄ - log(1e-4)/2 - log(1)/2), s̄ = (1e-4 + 1)/2.
    f = np.array([[0.0], [0.0], [-1.0], [1.0]])
    y = np.array([0, 0, 1, 1])
    avg = (1e-4 + 1) / 2
    db = 0.5 * (math.log(avg) - 0.5 * math.log(1e-4))
    with jax.enable_x64(True):
        np.testing.assert_allclose(tj.gbc(f, y), -2 * math.exp(-db), rtol=1e-10)


def test_spherical_differs_from_diagonal_and_pca_changes_score():
    f, y = _data(d=12)
    f[:, 3] *= 5.0  # anisotropic: spherical and diagonal models differ
    sph, diag = float(tj.gbc(f, y)), float(tj.gbc(f, y, gaussian="diagonal"))
    assert sph < 0 and diag < 0 and abs(sph - diag) > 1e-3 * abs(sph)
    assert abs(float(tj.gbc(f, y, pca_dim=3)) - sph) > 1e-3 * abs(sph)


@pytest.mark.parametrize(
    "kw, shape",
    [({}, (120, 10)), ({}, (30, 50)), ({"gaussian": "diagonal"}, (120, 10)),
     ({"gaussian": "diagonal"}, (30, 50)), ({"pca_dim": 6}, (120, 10))],
)
def test_padding_invariance(kw, shape, precision):
    n, d = shape
    f, y = _data(n=n, d=d, sep=2.0)
    ref = tj.gbc(f, y, **kw)
    assert abs(float(ref)) > 1e-3  # a score far from the underflow to -0.0
    padded = np.concatenate([f, np.zeros((n, 70), f.dtype)], axis=1)
    tol = rtol(PAD_RTOL, ref.dtype)
    np.testing.assert_allclose(tj.gbc(padded, y, width=d, **kw), ref, rtol=tol)
    two = jnp.stack([padded, padded])
    widths = jnp.array([d, d + 70])
    out = jax.vmap(lambda a, w: tj.gbc(a, y, width=w, num_classes=4, **kw))(two, widths)
    np.testing.assert_allclose(out[0], ref, rtol=tol)
    np.testing.assert_allclose(out[1], tj.gbc(padded, y, **kw), rtol=tol)


def test_padding_without_width_changes_spherical_score():
    # The width correction is what makes padding invisible: without it the mean variance shrinks.
    f, y = _data(sep=2.0)
    padded = np.concatenate([f, np.zeros((len(f), 30), f.dtype)], axis=1)
    assert abs(float(tj.gbc(padded, y)) - float(tj.gbc(f, y))) > 1e-3 * abs(float(tj.gbc(f, y)))


def test_absent_class_is_left_out():
    f, y = _data()
    np.testing.assert_allclose(tj.gbc(f, y, num_classes=6), tj.gbc(f, y), rtol=1e-6)


def test_better_features_score_higher():
    rng = np.random.default_rng(1)
    y = np.arange(300) % 3
    good = rng.normal(size=(300, 6)) + 3 * np.eye(3, 6)[y]
    bad = rng.normal(size=(300, 6))
    assert tj.gbc(good, y) > tj.gbc(bad, y)


@pytest.mark.parametrize(
    "features, labels, kw, err, match",
    [
        (np.random.rand(10, 3), np.arange(10) % 2, {"gaussian": "full"}, ValueError, "gaussian"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"pca_dim": 4}, ValueError, r"min\(n, d\) = 3"),
        (np.random.rand(10, 30), np.arange(10) % 2, {"pca_dim": 11}, ValueError, "= 10"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"pca_dim": 2.0}, TypeError, "pca_dim"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"pca_dim": 0}, ValueError, "pca_dim"),
        (np.random.rand(10, 8), np.arange(10) % 2, {"pca_dim": 6, "width": 5}, ValueError, "= 5"),
    ],
)
def test_bad_input(features, labels, kw, err, match):
    with pytest.raises(err, match="gbc: .*" + match):
        tj.gbc(features, labels, **kw)


@pytest.mark.parametrize("kw", [{}, {"gaussian": "diagonal"}])
@pytest.mark.parametrize(
    "make",
    [
        lambda r: (r.normal(size=(20, 64)), np.arange(20) % 3),  # n < d
        lambda r: (r.normal(size=(40, 5)), np.r_[0, np.ones(39, int)]),  # singleton class
        lambda r: (np.c_[np.ones(40), r.normal(size=(40, 4))], np.arange(40) % 2),  # constant col
        lambda r: (np.ones((40, 4)), np.arange(40) % 2),  # all columns constant
        lambda r: (np.repeat(r.normal(size=(1, 6)), 30, 0), np.arange(30) % 3),  # identical rows
    ],
)
def test_degenerate_inputs_are_finite(make, kw):
    f, y = make(np.random.default_rng(0))
    assert np.isfinite(float(tj.gbc(f, y, **kw)))


def test_identical_classes_give_minus_pairs():
    # Every class the same Gaussian: D_B = 0 for every ordered pair, GBC = -c(c-1).
    f = np.tile(np.array([[0.0, 1.0], [2.0, -1.0]]), (3, 1))
    y = np.repeat(np.arange(3), 2)
    np.testing.assert_allclose(tj.gbc(f, y), -6.0, rtol=1e-6)


def test_pca_scores_match_svd():
    rng = np.random.default_rng(0)
    for n, d in [(50, 8), (8, 30)]:
        x = rng.normal(size=(n, d)) * np.linspace(3, 0.5, d)
        xc = x - x.mean(0)
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        want = np.abs(u[:, :4] * s[:4])
        with jax.enable_x64(True):
            for method in ("gram", "svd"):
                got = np.abs(np.asarray(pca_scores(jnp.asarray(x), 4, method=method)))
                np.testing.assert_allclose(got, want, atol=1e-8)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_invariances(seed):
    rng = np.random.default_rng(seed)
    n, d, c = 60, 6, 3
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
    f = (rng.normal(size=(n, d)) + 0.8 * rng.normal(size=(c, d))[y]).astype(np.float32)
    for kw in ({}, {"gaussian": "diagonal"}):
        ref = float(tj.gbc(f, y, **kw))
        perm = rng.permutation(n)
        np.testing.assert_allclose(tj.gbc(f[perm], y[perm], **kw), ref, rtol=1e-4, atol=1e-7)
        relabel = rng.permutation(c)
        np.testing.assert_allclose(tj.gbc(f, relabel[y], **kw), ref, rtol=1e-4, atol=1e-7)
        shift = rng.normal(size=(1, d)).astype(np.float32) * 3
        np.testing.assert_allclose(tj.gbc(f + shift, y, **kw), ref, rtol=1e-4, atol=1e-7)
    # spherical Gaussians (raw or on PCA scores) are also rotation invariant
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    rot = f @ q.astype(np.float32)
    for kw in ({}, {"pca_dim": 4}):
        np.testing.assert_allclose(tj.gbc(rot, y, **kw), tj.gbc(f, y, **kw), rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------- stats= (issue 7)
# One data set and two chunk sizes (97 for the statistics, 250 for second passes; neither divides
# n = 1003) throughout, so the jitted chunk updates compile once for the module.


def _stream_data(n=1003, d=12, c=5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
    scale = np.linspace(0.5, 2.0, d)  # distinct principal variances: a well-defined PCA basis
    x = rng.normal(size=(n, d)) * scale + 3.0 + 0.5 * np.eye(c, d)[y]
    return x.astype(np.float32), y


def _chunks(x, y, size):
    for i in range(0, len(x), size):
        yield x[i : i + size], y[i : i + size]


@pytest.mark.parametrize("gaussian", ["spherical", "diagonal"])
@pytest.mark.parametrize("pca_dim", [None, 6])
def test_stats_chunked_equals_one_shot(gaussian, pca_dim):
    x, y = _stream_data()
    kw = dict(gaussian=gaussian, pca_dim=pca_dim)
    with jax.enable_x64(True):
        ref = float(tj.gbc(x, y, **kw))
        plain = tj.stream_stats(_chunks(x, y, 97), num_classes=5)
        if pca_dim is None:
            got = tj.gbc(stats=plain, **kw)
        else:  # the per-class variances along the PCA basis: opt-in class scatters ...
            st = tj.stream_stats(_chunks(x, y, 97), num_classes=5, class_scatter=True)
            got = tj.gbc(stats=st, **kw)
            assert got.dtype == jnp.float64
            np.testing.assert_allclose(float(got), ref, rtol=1e-5)
            # ... or a second pass over the chunks
            got = tj.gbc(stats=plain, second_pass=lambda: _chunks(x, y, 250), **kw)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(float(got), ref, rtol=1e-5)


def test_stats_float32():
    # (sharded statistics with class_scatter=True: see test_transrate.py)
    x, y = _stream_data()
    ref = float(tj.gbc(x, y, gaussian="diagonal"))
    st = tj.stream_stats(_chunks(x, y, 97), num_classes=5)
    got = tj.gbc(stats=st, gaussian="diagonal")
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), ref, rtol=1e-4)


def test_stats_errors():
    x, y = _stream_data()
    st = tj.stream_stats(_chunks(x, y, 97), num_classes=5)
    with pytest.raises(ValueError, match=r"class_scatter=True.*second_pass="):
        tj.gbc(stats=st, pca_dim=4)
    with pytest.raises(ValueError, match="not both"):
        tj.gbc(x, y, stats=st)
    with pytest.raises(ValueError, match="required"):
        tj.gbc(x)
    with pytest.raises(ValueError, match="pca_dim=13"):
        tj.gbc(stats=st, pca_dim=13)
    with pytest.raises(ValueError, match="width"):
        tj.gbc(stats=st, pca_dim=4, second_pass=[(x[:, :5], y)])
    with pytest.raises(ValueError, match="second_pass yielded"):
        tj.gbc(stats=st, pca_dim=4, second_pass=list(_chunks(x[:500], y[:500], 250)))
