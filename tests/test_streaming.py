import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import transferjax as tj
from transferjax.registry import METRICS


def _data(n=1003, d=24, c=5, seed=0, offset=3.0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
    x = (rng.normal(size=(n, d)) + offset + np.eye(c, d)[y]).astype(np.float32)
    return x, y


def _chunks(x, y, size):
    for i in range(0, len(x), size):
        yield x[i : i + size], y[i : i + size]


def _stats_metrics():
    # every registered metric that accepts stats= (LogME at least)
    return [n for n, m in METRICS.items() if "stats" in inspect.signature(m.fn).parameters]


# options fitting the d = 24 features of _data (α-ReQ's default fit reads ranks up to 100)
_SMALL_D_OPTIONS = {"alpha_req": {"fit_range": (2, 20)}}


# NLEEP's streamed path (dozens of passes) has its own tests in tests/metrics/test_nleep.py.
@pytest.mark.parametrize("metric", [m for m in _stats_metrics() if m != "nleep"])
@pytest.mark.parametrize("size", [97, 4000])  # many chunks, the last one partial; one padded chunk
def test_chunked_equals_one_shot(metric, size, precision):
    if precision == "float32" and size == 4000:
        pytest.skip("one padded chunk: float64 checks it (float32 runs the many-chunk case)")
    x, y = _data()
    fn = METRICS[metric].fn
    kw = {"key": jax.random.key(0)} if METRICS[metric].needs_key else {}
    kw.update(_SMALL_D_OPTIONS.get(metric, {}))
    ref = fn(x, y, **kw) if METRICS[metric].uses_labels else fn(x, **kw)  # RankMe: no labels
    if "second_pass" in inspect.signature(fn).parameters:  # a per-sample pass besides the stats
        kw["second_pass"] = lambda: _chunks(x, y, size)
    got = fn(stats=tj.stream_stats(_chunks(x, y, size), num_classes=5), **kw)
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-5 if precision == "float64" else 1e-4)


def test_stream_stats_fields_exact_in_x64():
    x, y = _data()
    with jax.enable_x64(True):
        st = tj.stream_stats(_chunks(x, y, 128), num_classes=5)
        one = tj.feature_stats(jnp.asarray(x, jnp.float64), jnp.asarray(y), num_classes=5)
        for a, b in zip(jax.tree.leaves(st), jax.tree.leaves(one)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-8)


def test_float32_scatter_accuracy_with_large_offset():
    # Mean 100× the spread: a naive Σxxᵀ − nμμᵀ loses most digits in float32; Chan merges do not.
    x, y = _data(n=20000, d=8, offset=300.0)
    st = tj.stream_stats(_chunks(x, y, 1000), num_classes=5)
    xd = x.astype(np.float64)
    ref = (xd - xd.mean(0)).T @ (xd - xd.mean(0))
    np.testing.assert_allclose(np.asarray(st.scatter), ref, rtol=2e-4, atol=1e-2 * np.abs(ref).max() * 1e-3)


def test_regression_stream():
    x, _ = _data()
    t = (x[:, :2] @ np.array([[1.0, 0.5], [-0.3, 2.0]]) + np.random.default_rng(1).normal(size=(len(x), 2))).astype(np.float32)
    ref = tj.logme(x, t)
    got = tj.logme(stats=tj.stream_stats(_chunks(x, t, 300)))
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-4)


def test_stream_errors():
    x, y = _data(n=100)
    with pytest.raises(ValueError, match="num_classes is required"):
        tj.stream_stats(_chunks(x, y, 10))
    with pytest.raises(ValueError, match="no chunk"):
        tj.stream_stats(iter([]), num_classes=5)
    with pytest.raises(ValueError, match="width"):
        tj.stream_stats([(x, y), (x[:, :3], y)], num_classes=5)
    with pytest.raises(ValueError, match=r"0\.\.4"):
        tj.stream_stats([(x, y + 1)], num_classes=5)
    with pytest.raises(ValueError, match="NaN"):
        tj.stream_stats([(np.full_like(x, np.nan), y)], num_classes=5)
    with pytest.raises(ValueError, match="at least 2 classes"):
        tj.stream_stats([(x, np.zeros_like(y))], num_classes=5)


def test_sharded_stats_equals_unsharded(precision):
    assert len(jax.devices()) >= 4, "conftest sets 4 host devices"
    x, y = _data(n=1002)  # not divisible by 4: padded with zero-weight rows
    mesh = tj.streaming.sample_mesh(4)
    sh = tj.sharded_stats(x, y, mesh=mesh)
    dt = jnp.float64 if precision == "float64" else jnp.float32
    one = tj.feature_stats(jnp.asarray(x, dt), jnp.asarray(y), num_classes=5)
    for a, b in zip(jax.tree.leaves(sh), jax.tree.leaves(one)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(float(tj.logme(stats=sh)), float(tj.logme(x, y)), rtol=1e-5)


def test_score_hub_sharded_over_models():
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    hub = {f"m{i}": rng.normal(size=(90, d)) + np.eye(3, d)[y] for i, d in enumerate([4, 6, 7, 9, 12])}
    mesh = tj.streaming.sample_mesh(4, axis="models")
    a = tj.score_hub("logme", hub, y, mesh=mesh, max_buckets=1)
    b = tj.score_hub("logme", hub, y)
    for k in hub:
        np.testing.assert_allclose(float(a[k]), float(b[k]), rtol=1e-5)


# ----------------------------------------------------------------------------- issue 7: more
# stats= metrics (H-score, SFDA, DISCO) and label tables (LEEP, NCE)


def test_moment_fields_merge_exactly(precision):
    # Σ‖x−μ‖⁴ (shrinkage H-score), Σ‖x−μ‖²(x−μ) and the within-class scatter merge exactly,
    # also in float32 with a mean 100× the spread.
    x, y = _data(n=1003, d=6, offset=300.0)
    st = tj.stream_stats(_chunks(x, y, 97), num_classes=5)
    xd = x.astype(np.float64)
    r = xd - xd.mean(0)
    sq = np.sum(r * r, axis=1)
    means = np.stack([xd[y == k].mean(0) for k in range(5)])
    z = xd - means[y]
    rtol = 1e-10 if precision == "float64" else 2e-4
    np.testing.assert_allclose(float(st.fourth), np.sum(sq * sq), rtol=rtol)
    scale = np.sum(sq * np.sqrt(sq))  # Σ‖r‖³: the size of the cancelling terms of the 3rd moment
    np.testing.assert_allclose(np.asarray(st.third), sq @ r, rtol=0, atol=scale * rtol * 10)
    np.testing.assert_allclose(np.asarray(st.within), z.T @ z, rtol=rtol, atol=rtol * len(x))


@pytest.mark.parametrize(
    "metric,kw",
    [("sfda", {}), ("sfda", {"shrinkage": 0.3}), ("disco", {}), ("disco", {"ncc": "prob"})],
)
def test_two_pass_metrics_equal_one_shot(metric, kw, precision):
    if precision == "float32" and kw:
        pytest.skip("options change no float32 path: the default options run in float32")
    x, y = _data(n=403, d=8)
    fn = METRICS[metric].fn
    ref = fn(x, y, **kw)
    st = tj.stream_stats(_chunks(x, y, 97), num_classes=5)
    got = fn(stats=st, second_pass=lambda: _chunks(x, y, 130), **kw)
    assert got.dtype == (jnp.float64 if precision == "float64" else jnp.float32)
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-10 if precision == "float64" else 1e-4)


def test_disco_regression_is_pure_statistics(precision):
    x, _ = _data(n=403, d=8)
    t = (x[:, :2] @ np.array([[1.0, 0.5], [-0.3, 2.0]])
         + np.random.default_rng(1).normal(size=(len(x), 2))).astype(np.float32)
    st = tj.stream_stats(_chunks(x, t, 97))
    np.testing.assert_allclose(
        float(tj.disco(stats=st)), float(tj.disco(x, t)),
        rtol=1e-10 if precision == "float64" else 1e-4,
    )


def test_hscore_stats_padding_jit_and_wide():
    x, y = _data(n=203, d=8)
    xp = np.pad(x, ((0, 0), (0, 5)))
    st = tj.stream_stats(_chunks(x, y, 50), num_classes=5)
    stp = tj.stream_stats(_chunks(xp, y, 50), num_classes=5)
    for fn in (tj.hscore, tj.shrinkage_hscore):
        a = float(fn(stats=st))
        np.testing.assert_allclose(float(fn(stats=stp, width=8)), a, rtol=1e-5)
        np.testing.assert_allclose(float(jax.jit(lambda s: fn(stats=s))(st)), a, rtol=1e-6)
    with jax.enable_x64(True):  # n < d: the d×d scatter is rank-deficient (H-score = c − 1)
        xw, yw = _data(n=12, d=20)
        sw = tj.stream_stats(_chunks(xw, yw, 5), num_classes=5)
        np.testing.assert_allclose(float(tj.hscore(stats=sw)), float(tj.hscore(xw, yw)), rtol=1e-6)
        np.testing.assert_allclose(
            float(tj.shrinkage_hscore(stats=sw)), float(tj.shrinkage_hscore(xw, yw)), rtol=1e-6
        )


def _source(n=403, z=7, seed=0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(5), rng.integers(0, 5, n - 5)]
    p = rng.dirichlet(np.full(z, 0.5), size=n) * 0.8 + 0.2 * np.eye(z)[y]
    return p.astype(np.float32), y


@pytest.mark.parametrize("size", [41, 403])
def test_label_tables_equal_one_shot(size, precision):
    p, y = _source()
    z = p.argmax(1)
    rtol = 1e-10 if precision == "float64" else 1e-5
    hard = tj.stream_label_table(_chunks(z, y, size), 5, 7)
    assert hard.hard and float(hard.count) == len(y)
    np.testing.assert_allclose(float(tj.nce(table=hard)), float(tj.nce(z, y)), rtol=rtol)
    soft = tj.stream_label_table(_chunks(p, y, size), 5)
    got = tj.leep(table=soft, second_pass=_chunks(p, y, 100))
    np.testing.assert_allclose(float(got), float(tj.leep(p, y)), rtol=rtol)
    half = len(y) // 2
    merged = tj.merge_label_tables(
        tj.stream_label_table([(p[:half], y[:half])], 5),
        tj.stream_label_table([(p[half:], y[half:])], 5),
    )
    np.testing.assert_allclose(np.asarray(merged.joint), np.asarray(soft.joint), rtol=1e-5)


def test_stats_and_second_pass_errors():
    x, y = _data(n=100, d=4)
    st = tj.stream_stats(_chunks(x, y, 30), num_classes=5)
    with pytest.raises(ValueError, match="second_pass"):
        tj.sfda(stats=st)
    with pytest.raises(ValueError, match="second_pass"):
        tj.disco(stats=st)
    with pytest.raises(TypeError, match="callable"):
        tj.sfda(stats=st, second_pass=_chunks(x, y, 30))  # a generator cannot be read twice
    with pytest.raises(ValueError, match="width"):
        tj.disco(stats=st, second_pass=[(x[:, :3], y)])
    with pytest.raises(ValueError, match="samples"):
        tj.disco(stats=st, second_pass=[(x[:50], y[:50])])
    with pytest.raises(ValueError, match="sample_size"):
        tj.disco(stats=st, second_pass=[(x, y)], sample_size=10, key=jax.random.key(0))
    with pytest.raises(ValueError, match="not both"):
        tj.hscore(x, y, stats=st)
    with pytest.raises(TypeError, match="FeatureStats"):
        tj.shrinkage_hscore(stats=(x, y))
    with pytest.raises(TypeError, match="regression"):
        tj.hscore(stats=tj.stream_stats(_chunks(x, x[:, 0], 30)))
    p, yp = _source(n=60)
    soft = tj.stream_label_table([(p, yp)], 5)
    with pytest.raises(TypeError, match="hard"):
        tj.nce(table=soft)
    with pytest.raises(ValueError, match="second_pass"):
        tj.leep(table=soft)
    with pytest.raises(TypeError, match="num_source_classes"):
        tj.stream_label_table([(p.argmax(1), yp)], 5)
    with pytest.raises(ValueError, match="mixes"):
        tj.stream_label_table([(p, yp), (p.argmax(1), yp)], 5, 7)


# ----------------------------------------------------------------------------- fold


_TRACES = []


@jax.jit
def _moments_step(carry, x, y, w, shift):
    """Per-class row counts, sums and the total of squares of ``x − shift``: a carry pytree."""
    _TRACES.append(x.shape)  # runs only while tracing: counts compilations
    r = (x - shift[None, :]) * w[:, None]
    counts = jax.ops.segment_sum(w, y, num_segments=5)
    sums = jax.ops.segment_sum(r, y, num_segments=5)
    return {"counts": carry["counts"] + counts, "sums": carry["sums"] + sums,
            "sq": carry["sq"] + jnp.sum(r * (x - shift[None, :]))}


def _moments_init(d=6):
    return {"counts": jnp.zeros(5), "sums": jnp.zeros((5, d)), "sq": jnp.zeros(())}


def test_fold_carry_equals_one_shot():
    x, y = _data(n=203, d=6)
    shift = x.mean(0)
    r = x.astype(np.float64) - shift
    _TRACES.clear()
    for sizes, chunk_size in [((50, 50, 50, 50, 3), None), ((203,), 64), ((7, 100, 96), 40)]:
        cuts = np.cumsum((0,) + sizes)
        chunks = [(x[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
        got = tj.streaming.fold(
            _moments_step, _moments_init(), lambda: chunks, args=(jnp.asarray(shift),),
            name="demo", width=6, num_classes=5, count=203, chunk_size=chunk_size,
        )
        np.testing.assert_array_equal(np.asarray(got["counts"]), np.bincount(y, minlength=5))
        sums = np.stack([r[y == k].sum(0) for k in range(5)])
        np.testing.assert_allclose(np.asarray(got["sums"]), sums, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(float(got["sq"]), np.sum(r * r), rtol=1e-5)
    # one compile per chunk size (50, 64, 40), however many chunks and partial chunks
    assert sorted(s[0] for s in _TRACES) == [40, 50, 64]


def test_fold_pads_the_last_piece_with_zero_weight_rows():
    x, y = _data(n=23, d=3)
    seen = []

    def record(carry, xc, yc, w):  # a plain function: fold needs no more than a callable
        seen.append((np.asarray(xc), np.asarray(yc), np.asarray(w)))
        return carry + 1

    # chunks of 10 and 13 rows cut into pieces of 10: 10 | 10, 3 (padded to 10)
    pieces = tj.streaming.fold(record, 0, [(x[:10], y[:10]), (x[10:], y[10:])], name="demo",
                               width=3, num_classes=5, count=23)
    assert pieces == 3
    assert all(xc.shape == (10, 3) and yc.shape == (10,) and yc.dtype == np.int32
               for xc, yc, _ in seen)
    xc, yc, w = seen[-1]
    np.testing.assert_array_equal(w, [1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(xc[:3], x[20:])
    assert not xc[3:].any() and not yc[3:].any()
    np.testing.assert_array_equal(np.concatenate([s[2] for s in seen]).sum(), 23)


def test_fold_errors():
    x, y = _data(n=40, d=4)
    kw = dict(name="mymetric", width=4, num_classes=5, count=40)

    def run(source, **extra):
        return tj.streaming.fold(lambda c, *_: c, 0, source, **{**kw, **extra})

    run([(x, y)])  # well-formed: no error
    with pytest.raises(ValueError, match=r"mymetric: second_pass chunk 1 .*\(20, 3\).*width 4"):
        run([(x[:20], y[:20]), (x[20:, :3], y[20:])])
    for check in (True, False):  # labels of another length: checked even without check_inputs
        with pytest.raises(ValueError, match=r"mymetric: second_pass chunk 0 .*\(39,\) for 40"):
            run([(x, y[:39])], check_inputs=check)
    with pytest.raises(ValueError, match="mymetric: second_pass yielded 20 samples but the "
                                         "statistics hold 40"):
        run([(x[:20], y[:20])])
    with pytest.raises(ValueError, match=r"mymetric: .*labels of chunk 0.*0\.\.4"):
        run([(x, y + 1)])
    with pytest.raises(TypeError, match="mymetric: second_pass is read 2 times"):
        run(_chunks(x, y, 10), passes=2)
    with pytest.raises(TypeError, match="mymetric: second_pass chunk 0 must be a"):
        run([x])
    with pytest.raises(TypeError, match="mymetric: second_pass must be an iterable"):
        run(3)


def test_stream_stats_chunk_shape_errors():
    x, y = _data(n=40, d=4)
    for check in (True, False):
        with pytest.raises(ValueError, match=r"stream_stats: chunk 1 .*\(20, 3\).*width 4"):
            tj.stream_stats([(x[:20], y[:20]), (x[20:, :3], y[20:])], num_classes=5,
                            check_inputs=check)
        with pytest.raises(ValueError, match=r"stream_stats: chunk 1 .*\(19,\) for 20 rows"):
            tj.stream_stats([(x[:20], y[:20]), (x[20:], y[21:])], num_classes=5,
                            check_inputs=check)
    p, yp = _source(n=60)
    with pytest.raises(ValueError, match=r"stream_label_table: chunk 0 .*\(59,\) for 60 rows"):
        tj.stream_label_table([(p, yp[:59])], 5, check_inputs=False)
