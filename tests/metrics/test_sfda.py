import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transferjax as tj
from tests import _golden
from tests._tol import GOLDEN_RTOL, SAME_RTOL, rtol


def _data(n=120, d=10, c=4, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    f = rng.normal(size=(n, d)) + 0.8 * np.eye(c, d)[y]
    return (scale * f).astype(np.float32), y


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sfda_direct(x, y, shrinkage=None):
    """Independent float64 check: the classifier by a direct solve (fine when A is well posed)."""
    x = np.asarray(x, np.float64)
    n, d = x.shape
    c = int(y.max()) + 1

    def post(x, s):
        cnt = np.bincount(y, minlength=c)
        m = np.stack([x[y == k].mean(0) for k in range(c)])
        r = x - m[y]
        sw = r.T @ r / n
        if s is None:
            v = sw.sum(1)
            for _ in range(3):
                u = sw @ v / np.linalg.norm(sw @ v)
                v = sw @ u / np.linalg.norm(sw @ u)
            s = max(np.exp(-5 * (v @ sw @ u)), 1e-10)
        a = (1 - s) * sw + s * np.trace(sw) / d * np.eye(d)
        w = np.linalg.solve(a, m.T).T
        return _softmax(x @ w.T - 0.5 * (m * w).sum(1) + np.log(cnt / n)), m, s

    p, m, s = post(x, shrinkage)
    a = _softmax(p)[np.arange(n), y][:, None]
    others = (m.sum(0) - m) / (c - 1)
    p2, _, _ = post(a * x + (1 - a) * others[y], s)
    return p2[np.arange(n), y].mean()


@pytest.mark.parametrize("case", _golden.cases("sfda.json", include_hub=False))  # hub: tests/test_golden_hub.py
def test_golden(case, precision):
    name, model, expected = case
    f, y, _ = _golden.load_input(name, model)
    got = tj.sfda(f, y)
    assert got.dtype == (jnp.float64 if precision == "float64" else jnp.float32)
    np.testing.assert_allclose(float(got), expected, rtol=rtol(GOLDEN_RTOL, got.dtype))


@pytest.mark.parametrize("shape", [(150, 8), (40, 100)])
def test_unsaturated_matches_direct_solve(shape, precision):
    """Small features keep s off its floor (scores well below 1); both eigen paths (n-c >= d and
    the SVD path for n-c < d) must match a plain float64 solve."""
    n, d = shape
    f, y = _data(n=n, d=d, scale=0.15)
    want = _sfda_direct(f, y)
    got = tj.sfda(f, y)
    assert 0.2 < want < 0.99
    np.testing.assert_allclose(float(got), want, rtol=rtol(GOLDEN_RTOL, got.dtype))


def test_fixed_shrinkage_is_traced_and_matches():
    f, y = _data()
    fn = jax.jit(lambda s: tj.sfda(f, y, shrinkage=s, num_classes=4))
    for s in (0.05, 0.5, 1.0):
        np.testing.assert_allclose(float(fn(s)), _sfda_direct(f, y, shrinkage=s), rtol=1e-4)
    assert fn._cache_size() == 1


def test_traced_labels_need_num_classes():
    f, y = _data()
    with pytest.raises(TypeError, match="sfda: .*num_classes"):
        jax.jit(lambda b: tj.sfda(f, b))(y)
    with pytest.raises(TypeError, match="sfda: .*num_classes"):
        jax.jit(lambda b: tj.sfda(f, b, check_inputs=False))(y)


def test_width_changes_score_without_padding():
    """``width`` enters through tr(S_w)/d: a wrong width must show (the test above can fail)."""
    f, y = _data(scale=0.3)
    assert abs(float(tj.sfda(f, y, width=5)) - float(tj.sfda(f, y))) > 1e-4


def test_better_features_score_higher():
    rng = np.random.default_rng(1)
    y = np.arange(300) % 3
    good = rng.normal(size=(300, 6)) + 2 * np.eye(3, 6)[y]
    bad = rng.normal(size=(300, 6))
    assert tj.sfda(good, y) > tj.sfda(bad, y)


def test_empty_class_with_num_classes_is_ignored():
    f, y = _data(c=3)
    relabelled = np.where(y == 2, 3, y)  # class 2 absent, C=4 given
    np.testing.assert_allclose(
        tj.sfda(f, relabelled, num_classes=4), tj.sfda(f, y), rtol=rtol(SAME_RTOL, jnp.float32)
    )


@pytest.mark.parametrize(
    "features, labels, err, match",
    [
    ],
)
def test_bad_input(features, labels, err, match):
    with pytest.raises(err, match="sfda: .*" + match):
        tj.sfda(features, labels)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: (r.normal(size=(20, 64)), np.arange(20) % 3),  # n < d
        lambda r: (r.normal(size=(40, 5)), np.r_[0, np.ones(39, int)]),  # singleton class
        lambda r: (np.c_[np.full(40, 3.0), r.normal(size=(40, 4))], np.arange(40) % 2),  # const
        lambda r: (np.c_[np.zeros(40), r.normal(size=(40, 4))], np.arange(40) % 2),  # zero col
        lambda r: (np.ones((40, 4)), np.arange(40) % 2),  # all rows identical: S_w = 0
        lambda r: (np.c_[np.ones(40), -np.ones(40)] * r.normal(size=(40, 1)),
                   np.arange(40) % 2),  # columns t, -t: S_w · 1 = 0, the power start vanishes
    ],
)
def test_degenerate_inputs_are_finite(make):
    f, y = make(np.random.default_rng(0))
    out = float(tj.sfda(f, y))
    assert np.isfinite(out) and 0.0 < out <= 1.0 + 1e-6


def test_identical_class_means_finite_and_match():
    rng = np.random.default_rng(0)
    half = rng.normal(size=(50, 4))
    f = np.r_[half, -half]  # both classes have mean exactly 0
    y = np.r_[np.zeros(50, int), np.ones(50, int)]
    with jax.enable_x64(True):
        got = float(tj.sfda(f, y))
    np.testing.assert_allclose(got, _sfda_direct(f, y), rtol=1e-8)
    assert np.isfinite(float(tj.sfda(f, y)))


def test_zero_within_scatter():
    """S_w = 0 (every sample at its class mean; the reference gives NaN): distinct means are
    classified with certainty, identical means by prior."""
    y = np.r_[np.zeros(30, int), np.ones(30, int), 2 * np.ones(40, int)]
    points = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    np.testing.assert_allclose(float(tj.sfda(points[y], y)), 1.0, rtol=1e-6)
    same = np.array([[0.0, 1.0], [0.0, 1.0], [2.0, 2.0]])[y]
    # classes 0 and 1 share a point: each gets its prior share 1/2 of their joint probability
    want = (30 * 0.5 + 30 * 0.5 + 40 * 1.0) / 100
    np.testing.assert_allclose(float(tj.sfda(same, y)), want, rtol=1e-6)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_invariances(seed):
    rng = np.random.default_rng(seed)
    n, d, c = 60, 6, 3
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
    f = (0.3 * (rng.normal(size=(n, d)) + rng.normal(size=(c, d))[y])).astype(np.float32)
    ref = float(tj.sfda(f, y))
    perm = rng.permutation(n)
    np.testing.assert_allclose(tj.sfda(f[perm], y[perm]), ref, rtol=1e-4)
    relabel = rng.permutation(c)
    np.testing.assert_allclose(tj.sfda(f, relabel[y]), ref, rtol=1e-4)
    cols = rng.permutation(d)
    np.testing.assert_allclose(tj.sfda(f[:, cols], y), ref, rtol=1e-4)
    shift = rng.normal(size=(1, d)).astype(np.float32)
    np.testing.assert_allclose(tj.sfda(f + shift, y), ref, rtol=1e-4)


# ---------------------------------------------------------------- ensemble selection


def _hub(seed=0, n=90):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    noise = lambda d: rng.normal(size=(n, d))  # noqa: E731
    hub = {
        "noise": noise(3),
        "sep01": noise(3) + 2.5 * np.eye(4, 3)[y] * (y < 2)[:, None],  # tells 0 from 1 only
        "sep23": noise(2) + 2.5 * np.eye(4, 2)[np.maximum(y - 2, 0)] * (y >= 2)[:, None],
        "weak": noise(5) + 0.7 * np.eye(4, 5)[y],
    }
    return {k: (0.4 * v).astype(np.float32) for k, v in hub.items()}, y


def _joint(hub, names, y):
    """SFDA of the concatenation, zero-padded to the whole hub's width (one compile for all)."""
    x = np.concatenate([hub[m] for m in names], axis=1)
    total = sum(v.shape[1] for v in hub.values())
    padded = np.pad(x, ((0, 0), (0, total - x.shape[1])))
    return float(tj.sfda(padded, y, width=x.shape[1]))


def test_ensemble_k1_is_best_single_model():
    hub, y = _hub()
    res = tj.sfda_ensemble(hub, y, k=1)
    singles = {m: _joint(hub, [m], y) for m in hub}
    assert res.models == (max(singles, key=singles.get),)
    np.testing.assert_allclose(res.scores[0], singles[res.models[0]], rtol=1e-5)


@pytest.mark.parametrize("k", [2, 3])
def test_ensemble_greedy_against_brute_force(k):
    hub, y = _hub()
    res = tj.sfda_ensemble(hub, y, k=k)
    assert len(set(res.models)) == k and res.scores.shape == (k,)
    # scores[j] is the joint SFDA of the first j+1 selected models
    for j in range(k):
        np.testing.assert_allclose(res.scores[j], _joint(hub, res.models[: j + 1], y), rtol=1e-5)
    # each greedy step is the best extension of the previous selection
    for j in range(1, k):
        prefix = list(res.models[:j])
        best = max(_joint(hub, prefix + [m], y) for m in hub if m not in prefix)
        np.testing.assert_allclose(res.scores[j], best, rtol=1e-5)
    brute = max(_joint(hub, list(s), y) for s in itertools.combinations(hub, k))
    assert float(res.scores[-1]) <= brute + 1e-6
    # on this hub (complementary models) the chosen set beats every single model
    assert float(res.scores[-1]) > max(_joint(hub, [m], y) for m in hub)


def test_ensemble_column_order_does_not_matter():
    hub, y = _hub()
    a = _joint(hub, ["sep01", "sep23", "weak"], y)
    b = _joint(hub, ["weak", "sep23", "sep01"], y)
    np.testing.assert_allclose(a, b, rtol=1e-4)


@pytest.mark.parametrize(
    "hub, k, err, match",
    [
        ({}, 1, ValueError, "non-empty"),
        ({"a": np.ones((90, 2))}, 0, ValueError, ">= 1"),
        ({"a": np.random.rand(90, 2)}, 2, ValueError, "exceeds"),
        ({"a": np.random.rand(90, 2)}, 1.0, TypeError, "positive int"),
        ({"a": np.random.rand(90, 2), "b": np.random.rand(80, 2)}, 1, ValueError, "same number"),
    ],
)
def test_ensemble_bad_input(hub, k, err, match):
    y = np.arange(90) % 3
    with pytest.raises(err, match="sfda_ensemble: .*" + match):
        tj.sfda_ensemble(hub, y, k)


def test_ensemble_rejects_regression():
    with pytest.raises(TypeError, match="no regression"):
        tj.sfda_ensemble({"a": np.random.rand(20, 2)}, np.random.rand(20), 1)


def _stage_inputs(x, y):
    from transferjax.linalg import gram
    from transferjax.stats import class_residuals

    x = jnp.asarray(x)
    x = x - x[:1]
    x = x - jnp.mean(x, axis=0, keepdims=True)
    c = int(np.max(y)) + 1
    counts, means, z = class_residuals(x, jnp.asarray(y), c)
    sw = gram(z) / x.shape[0]
    return x, counts, means, sw


def _cholesky_ok(x, y, s=1e-10):
    from transferjax.metrics import sfda as impl

    x, counts, means, sw = _stage_inputs(x, y)
    s = jnp.asarray(s, x.dtype)
    _, ok = impl._fit_cholesky(counts, means, x.shape[0], jnp.trace(sw), sw, x.shape[1], s)
    return bool(ok)


def test_vmapped_fallback_is_ordered_after_the_cholesky():
    """Under vmap the Cholesky path and its SVD fallback are both computed. linalg.after makes
    the SVD's input depend on the Cholesky's output: two batched LAPACK calls side by side hung
    XLA:CPU's 2-thread pool (score_hub over six 2000×1280 models, jax 0.10.2). The compiled HLO
    lists instructions in dependency order; without the dependency it put each fallback first."""
    import re

    from transferjax.linalg import after

    fs = np.stack([_data(seed=s)[0] for s in range(2)])
    _, y = _data()
    fn = jax.jit(jax.vmap(lambda a: tj.sfda(a, y, num_classes=4, check_inputs=False)))
    text = fn.lower(fs).compile().as_text()
    calls = re.findall(r'custom_call_target="lapack_(spotrf|dpotrf|sgesdd|dgesdd)_ffi"', text)
    assert calls and calls[0] in ("spotrf", "dpotrf")
    assert all(a[1:] == "potrf" for a in calls[::2]) and all(b[1:] == "gesdd" for b in calls[1::2])
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(jax.jit(jax.vmap(lambda r: after(r, r.sum())))(x), x)
    np.testing.assert_array_equal(after(x, jnp.array([jnp.nan])), x)  # a failed dep: still x


def test_cholesky_path_equals_eigen_path(precision):
    """The fast Cholesky classifier and the eigen-decomposition classifier give the same logits."""
    from transferjax.linalg import eigh_psd
    from transferjax.metrics import sfda as impl

    x, y = _data(n=300, d=12, c=4, seed=3)
    dt = jnp.float64 if precision == "float64" else jnp.float32
    x, counts, means, sw = _stage_inputs(np.asarray(x, dt), y)
    n, d = x.shape
    s, yj = jnp.asarray(1e-10, x.dtype), jnp.asarray(y)
    fast, ok = impl._fit_cholesky(counts, means, n, jnp.trace(sw), sw, d, s)
    lam, v = eigh_psd(sw)
    slow = impl._fit(counts, means, n, jnp.trace(sw), lam, v, d, s, impl._null_tol(x))
    assert bool(ok)
    np.testing.assert_allclose(
        impl._logits(fast, x, yj), impl._logits(slow, x, yj), rtol=rtol(SAME_RTOL, dt) * 10,
        atol=1e-5
    )


def _relu_digits(seed, n=360, c=6, pixels=48, width=96):
    """Digit-like features: 0..16 pixel images (blank border pixels) of overlapping classes
    through a random ReLU layer (some units dead), plus rescaled copies of three units and two
    constant columns."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    protos = rng.integers(0, 17, size=(1, pixels)) + rng.integers(-3, 4, size=(c, pixels))
    pix = np.clip(protos[y] + rng.integers(-8, 9, size=(n, pixels)), 0, 16) / 16.0
    pix[:, :3] = 0.0
    w = rng.normal(size=(pixels, width)) * 3.0 / np.sqrt(pixels)
    h = np.maximum(pix @ w + rng.normal(size=width), 0.0)
    f = np.c_[h, h[:, :3] * rng.uniform(0.5, 2.0, 3), np.full((n, 2), 1.5)]
    return f.astype(np.float32), y


@pytest.mark.parametrize("seed", [1, 3])
def test_ill_conditioned_relu_features(seed, precision):
    """Near-collinear, constant and dead columns, s ≈ 1e-7 and 1e-9: the classifier weighs
    directions of S_w far below float32's eps·λ_max, which a float32 Gram cannot resolve (its
    eigen-decomposition was 0.32 and 0.44 off here); the SVD of the class-centred features
    resolves them."""
    f, y = _relu_digits(seed)
    got = tj.sfda(f, y)
    np.testing.assert_allclose(float(got), _sfda_direct(f, y), rtol=rtol(GOLDEN_RTOL, got.dtype))


def test_near_singular_scatter_falls_back():
    """A duplicated column makes S_w singular (not decoupled): the SVD path must be taken, and
    the score stays that of the features without the duplicate."""
    x, y = _data(n=300, d=12, c=4, seed=4)
    dup = np.concatenate([x, x[:, :1]], axis=1)
    assert _cholesky_ok(x, y)
    assert not _cholesky_ok(dup, y)
    np.testing.assert_allclose(tj.sfda(dup, y), tj.sfda(x, y), rtol=2e-3)


@pytest.mark.parametrize("fill", [0.0, 3.7])
def test_constant_and_padded_columns_keep_the_fast_path(fill):
    """Zero padding and constant columns (dead units) are inert: Cholesky still applies, and the
    score equals that without them."""
    x, y = _data(n=300, d=12, c=4, seed=5)
    wide = np.concatenate([x, np.full((300, 3), fill, np.float32)], axis=1)
    assert _cholesky_ok(wide, y)
    np.testing.assert_allclose(tj.sfda(wide, y, width=12), tj.sfda(x, y), rtol=1e-5)
