import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transferjax as tj
from tests import _golden
from tests._tol import PAD_RTOL, rtol
from transferjax.linalg import logdet_eye_plus_gram
from transferjax.stats import class_block, class_grams, sort_by_class

VARIANTS = {
    "official_nc_weighted": dict(class_weight="size"),
    "official_l2norm_rank": dict(class_weight="size", row_normalize=True, rank_normalize=True),
}


def _numpy_transrate(f, y, eps=1e-4, weight="uniform"):
    """The canonical formula with per-class boolean indexing and float64 slogdet (d×d)."""
    z = np.asarray(f, np.float64)
    z = z - z.mean(0)
    n, d = z.shape

    def rate(a):
        return 0.5 * np.linalg.slogdet(np.eye(d) + a.T @ a / (len(a) * eps))[1]

    classes = np.unique(y)
    w = [1 / len(classes) if weight == "uniform" else np.mean(y == c) for c in classes]
    return rate(z) - sum(wc * rate(z[y == c]) for wc, c in zip(w, classes))


def _rate_scale(f, eps=1e-4, row_normalize=False, rank_normalize=False, **_):
    """``R(Z, ε)`` of the whole (centred, optionally normalised) set: the size of the terms."""
    z = np.asarray(f, np.float64)
    z = z - z.mean(0)
    if row_normalize:
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n, d = z.shape
    rate = 0.5 * np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))[1]
    return rate / (np.linalg.matrix_rank(z) if rank_normalize else 1)


def _data(n=120, d=10, c=4, seed=0, sep=0.7):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    f = rng.normal(size=(n, d)).astype(np.float32) + sep * np.eye(c, d, dtype=np.float32)[y]
    return f, y


@pytest.mark.parametrize("case", _golden.cases("transrate.json", include_hub=False))  # hub: tests/test_golden_hub.py
def test_golden(case, precision):
    _golden.check_parity(tj.transrate, case)


@pytest.mark.parametrize("case", _golden.variant_cases("transrate.json", include_hub=False))
def test_golden_variants(case, precision):
    variant, name, model, expected = case
    _golden.check_parity(tj.transrate, (name, model, expected), **VARIANTS[variant])


@pytest.mark.parametrize("variant", _golden.hub_variants("transrate.json"))
def test_golden_variants_hub(variant, precision):
    expected = _golden.load_json("transrate.json")["variants"][variant]["hub"]
    _golden.check_hub("transrate", expected, **VARIANTS[variant])


@pytest.mark.parametrize(
    "weight, shape, methods",
    [("uniform", (90, 6), ("auto", "cholesky", "svd")),  # n_c > d
     ("size", (40, 25), ("auto", "svd"))],  # n_c < d
)
def test_matches_direct_slogdet(weight, shape, methods):
    rng = np.random.default_rng(2)
    n, d = shape
    y = np.r_[np.arange(3), rng.integers(0, 3, n - 3)]
    f = rng.normal(size=(n, d)) + np.eye(3, d)[y]
    want = _numpy_transrate(f, y, eps=1e-3, weight=weight)
    with jax.enable_x64(True):
        for method in methods:
            got = tj.transrate(f, y, eps=1e-3, class_weight=weight, method=method)
            np.testing.assert_allclose(float(got), want, rtol=1e-10)


def test_float32_large_scale_uses_accurate_route():
    # Unnormalised, anisotropic features: eps_f32·λ_max/(nε) >> 1, where a float32 Cholesky of
    # I + ZᵀZ/(nε) fails (NaN) and a Gram eigen-decomposition is off by percents.
    rng = np.random.default_rng(0)
    n, d = 400, 24
    y = np.r_[np.arange(4), rng.integers(0, 4, n - 4)]
    f = (rng.normal(size=(n, d)) * np.logspace(2.5, -1, d) + 30 * np.eye(4, d)[y]).astype(np.float32)
    want = _numpy_transrate(f, y)
    got = tj.transrate(f, y)
    np.testing.assert_allclose(float(got), want, rtol=1e-4)
    np.testing.assert_allclose(float(tj.transrate(f, y, method="svd")), want, rtol=1e-4)


@pytest.mark.parametrize(
    "kw, shape, x64",
    [({}, (120, 10), False), ({}, (30, 50), True),
     ({"class_weight": "size", "row_normalize": True, "rank_normalize": True}, (120, 10), True),
     ({"rank_normalize": True}, (30, 50), False)],
)
def test_padding_invariance(kw, shape, x64):
    # each variant in one precision (both precisions are covered across the four; test time)
    with jax.enable_x64(x64):
        _check_padding_invariance(kw, shape)


def _check_padding_invariance(kw, shape):
    n, d = shape
    f, y = _data(n=n, d=d)
    ref = tj.transrate(f, y, **kw)
    padded = np.concatenate([f, np.zeros((n, 70), f.dtype)], axis=1)
    tol = rtol(PAD_RTOL, ref.dtype)
    # TrR is a small difference of rates: float rounding is relative to the rates, not to TrR.
    atol = tol * _rate_scale(f, **kw)
    np.testing.assert_allclose(tj.transrate(padded, y, width=d, **kw), ref, rtol=tol, atol=atol)
    two = jnp.stack([padded, padded])
    widths = jnp.array([d, d + 70])
    out = jax.vmap(lambda a, w: tj.transrate(a, y, width=w, num_classes=4, **kw))(two, widths)
    np.testing.assert_allclose(out[0], ref, rtol=tol, atol=atol)
    np.testing.assert_allclose(out[1], tj.transrate(padded, y, **kw), rtol=tol, atol=atol)


def test_absent_class_is_left_out():
    f, y = _data()
    np.testing.assert_allclose(tj.transrate(f, y, num_classes=6), tj.transrate(f, y), rtol=1e-6)


def test_class_weight_matters_only_when_imbalanced():
    f, y = _data()  # balanced: 30 per class
    np.testing.assert_allclose(
        tj.transrate(f, y, class_weight="size"), tj.transrate(f, y), rtol=1e-6
    )
    yi = np.r_[np.zeros(60, int), np.arange(60) % 3 + 1]
    assert abs(float(tj.transrate(f, yi, class_weight="size")) - float(tj.transrate(f, yi))) > 1e-3


def test_better_features_score_higher():
    rng = np.random.default_rng(1)
    y = np.arange(300) % 3
    good = rng.normal(size=(300, 6)) + 3 * np.eye(3, 6)[y]
    bad = rng.normal(size=(300, 6))
    assert tj.transrate(good, y) > tj.transrate(bad, y)


@pytest.mark.parametrize(
    "features, labels, kw, err, match",
    [
        (np.random.rand(10, 3), np.arange(10) % 2, {"eps": 0.0}, ValueError, "eps"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"eps": np.inf}, ValueError, "eps"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"class_weight": "n"}, ValueError, "class_w"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"method": "qr"}, ValueError, "method"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"max_class_size": 4}, ValueError, "largest"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"max_class_size": 0}, ValueError, "max_cl"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"max_class_size": 5.0}, TypeError, "max_cl"),
    ],
)
def test_bad_input(features, labels, kw, err, match):
    with pytest.raises(err, match="transrate: .*" + match):
        tj.transrate(features, labels, **kw)


def _mirrored(rng):
    a = rng.normal(size=(20, 4))
    return np.r_[np.zeros((1, 4)), a, -a]


@pytest.mark.parametrize(
    "make",
    [
        lambda r: (r.normal(size=(20, 64)), np.arange(20) % 3),  # n < d
        lambda r: (r.normal(size=(40, 5)), np.r_[0, np.ones(39, int)]),  # singleton class
        lambda r: (np.c_[np.ones(40), r.normal(size=(40, 4))], np.arange(40) % 2),  # constant col
        lambda r: (np.ones((40, 4)), np.arange(40) % 2),  # all columns constant
        lambda r: (_mirrored(r), np.arange(41) % 2),  # a row at the mean: zero after centring
        lambda r: (r.normal(size=(40, 4)) * 1e4, np.arange(40) % 2),  # huge scale
    ],
)
def test_degenerate_inputs_are_finite(make):
    f, y = make(np.random.default_rng(0))
    assert np.isfinite(float(tj.transrate(f, y)))
    official = dict(class_weight="size", row_normalize=True, rank_normalize=True)
    assert np.isfinite(float(tj.transrate(f, y, **official)))


@pytest.mark.parametrize("shape", [(3, 30, 7), (2, 5, 12)])
def test_logdet_eye_plus_gram_methods(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    s = np.array([0.5, 2.0, 10.0])[: shape[0]]
    want = [np.linalg.slogdet(np.eye(shape[2]) + si * xi.T @ xi)[1] for si, xi in zip(s, x)]
    with jax.enable_x64(True):
        for method in ("auto", "cholesky", "svd"):
            got = logdet_eye_plus_gram(jnp.asarray(x), jnp.asarray(s), method=method)
            np.testing.assert_allclose(got, want, rtol=1e-12)


def test_sort_by_class_blocks():
    y = jnp.array([2, 0, 1, 2, 0, 2])
    x = jnp.arange(6.0)[:, None] + 1
    rows, starts, counts = sort_by_class(x, y, 4, pad=3)
    assert list(counts) == [2, 1, 3, 0]
    np.testing.assert_array_equal(class_block(rows, starts[2], counts[2], 3)[:, 0], [1, 4, 6])
    np.testing.assert_array_equal(class_block(rows, starts[0], counts[0], 3)[:, 0], [2, 5, 0])
    np.testing.assert_array_equal(class_block(rows, starts[3], counts[3], 3)[:, 0], [0, 0, 0])


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_invariances(seed):
    rng = np.random.default_rng(seed)
    n, d, c = 60, 6, 3
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
    f = (rng.normal(size=(n, d)) + rng.normal(size=(c, d))[y]).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    for kw in ({}, {"class_weight": "size", "row_normalize": True, "rank_normalize": True}):
        ref = float(tj.transrate(f, y, **kw))
        perm = rng.permutation(n)
        np.testing.assert_allclose(tj.transrate(f[perm], y[perm], **kw), ref, rtol=1e-4)
        relabel = rng.permutation(c)
        np.testing.assert_allclose(tj.transrate(f, relabel[y], **kw), ref, rtol=1e-4)
        shift = rng.normal(size=(1, d)).astype(np.float32) * 3
        np.testing.assert_allclose(tj.transrate(f + shift, y, **kw), ref, rtol=1e-4)
        rot = f @ q.astype(np.float32)
        np.testing.assert_allclose(tj.transrate(rot, y, **kw), ref, rtol=1e-4)


# ----------------------------------------------------------------------------- stats= (issue 7)
# One data set and two chunk sizes (97 for the statistics, 250 for second passes; neither divides
# n = 1003) throughout, so the jitted chunk updates compile once for the module.


def _stream_data(n=1003, d=12, c=5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
    x = rng.normal(size=(n, d)) * np.linspace(0.5, 2.0, d) + 3.0 + 0.5 * np.eye(c, d)[y]
    return x.astype(np.float32), y


def _chunks(x, y, size):
    for i in range(0, len(x), size):
        yield x[i : i + size], y[i : i + size]


def _numpy_options(f, y, eps=1e-4, class_weight="uniform", row_normalize=False,
                   rank_normalize=False):
    """float64 NumPy TrR with the official repo's options (reference for the variants)."""
    z = np.asarray(f, np.float64)
    z = z - z.mean(0)
    if row_normalize:
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n, d = z.shape

    def rate(a):
        return 0.5 * np.linalg.slogdet(np.eye(d) + a.T @ a / (len(a) * eps))[1]

    classes = np.unique(y)
    w = [1 / len(classes) if class_weight == "uniform" else np.mean(y == c) for c in classes]
    score = rate(z) - sum(wc * rate(z[y == c]) for wc, c in zip(w, classes))
    return score / (np.linalg.matrix_rank(z.T @ z / n) if rank_normalize else 1)


@pytest.mark.parametrize(
    "kw", [{}, {"class_weight": "size", "rank_normalize": True, "eps": 1e-3},
           {"class_weight": "size", "row_normalize": True, "rank_normalize": True}],
    ids=["canonical", "size-rank", "official_l2norm_rank"],
)
def test_stats_chunked_equals_one_shot(kw):
    x, y = _stream_data()
    with jax.enable_x64(True):
        # one-shot: the data path (canonical) or the float64 NumPy definition (variants)
        ref = float(tj.transrate(x, y)) if not kw else _numpy_options(x, y, **kw)
        plain = tj.stream_stats(_chunks(x, y, 97), num_classes=5)
        # a second pass over the chunks (the only route for row_normalize)
        got = tj.transrate(stats=plain, second_pass=lambda: _chunks(x, y, 250), **kw)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(float(got), ref, rtol=1e-5)
        if not kw.get("row_normalize"):  # opt-in per-class scatters: one pass
            st = tj.stream_stats(_chunks(x, y, 97), num_classes=5, class_scatter=True)
            np.testing.assert_allclose(float(tj.transrate(stats=st, **kw)), ref, rtol=1e-5)


def test_stats_float32_and_sharded():
    x, y = _stream_data()
    ref = float(tj.transrate(x, y))
    st = tj.stream_stats(_chunks(x, y, 97), num_classes=5, class_scatter=True)
    got = tj.transrate(stats=st)
    assert got.dtype == jnp.float32
    # float32: the score (0.17) is a difference of rates ~100× larger, each good to ~1e-6
    np.testing.assert_allclose(float(got), ref, rtol=5e-4)
    with jax.enable_x64(True):
        ref = float(tj.transrate(x, y))
        sh = tj.sharded_stats(x, y, mesh=tj.streaming.sample_mesh(4), class_scatter=True)
        np.testing.assert_allclose(float(tj.transrate(stats=sh)), ref, rtol=1e-5)


def test_class_scatter_field_is_opt_in_and_merges_exactly():
    x, y = _stream_data()
    assert tj.stream_stats(_chunks(x, y, 97), num_classes=5).class_scatter.shape == (0, 0, 0)
    with jax.enable_x64(True):
        st = tj.stream_stats(_chunks(x, y, 97), num_classes=5, class_scatter=True)
        xd = x.astype(np.float64)
        w = np.stack([(xd[y == k] - xd[y == k].mean(0)).T @ (xd[y == k] - xd[y == k].mean(0))
                      for k in range(5)])
        np.testing.assert_allclose(np.asarray(st.class_scatter), w, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(np.asarray(st.class_sq), np.einsum("cdd->cd", w),
                                   rtol=1e-10, atol=1e-9)
        g = jax.jit(class_grams, static_argnums=2)(jnp.asarray(xd[:40]), jnp.asarray(y[:40]), 6)
        ref = np.stack([xd[:40][y[:40] == k].T @ xd[:40][y[:40] == k] for k in range(6)])
        np.testing.assert_allclose(np.asarray(g), ref, rtol=1e-12, atol=1e-9)  # class 5 empty


def test_stats_errors():
    x, y = _stream_data()
    st = tj.stream_stats(_chunks(x, y, 97), num_classes=5)
    with pytest.raises(ValueError, match=r"class_scatter=True.*second_pass="):
        tj.transrate(stats=st)
    full = tj.stream_stats(_chunks(x, y, 97), num_classes=5, class_scatter=True)
    with pytest.raises(ValueError, match="row_normalize.*second_pass="):
        tj.transrate(stats=full, row_normalize=True)
    with pytest.raises(ValueError, match="not both"):
        tj.transrate(x, y, stats=full)
    with pytest.raises(ValueError, match="required"):
        tj.transrate(labels=y)
    with pytest.raises(ValueError, match="second_pass yielded"):
        tj.transrate(stats=st, second_pass=list(_chunks(x[:500], y[:500], 250)))
    with pytest.raises(ValueError, match="class_scatter=True needs integer class labels"):
        tj.stream_stats([(x, x[:, 0])], class_scatter=True)
