"""NLEEP: PCA + Gaussian mixture (EM) + LEEP.

Parity (spec/nleep.md): the reference seeds k-means from NumPy's global RandomState, so its exact
values cannot be reproduced. What the spec makes testable, and what is tested here:
* ``init="spaced_rows"`` reproduces the golden ``variants.det_init`` (the reference EM from the
  same deterministic start) to the golden tolerance; in float32 the reference itself fails on
  the cases where ``variants.float32_as_stored`` is null (ill-defined covariances): there our
  Cholesky jitter changes the EM path and the tolerance is 3e-2 (measured 1.5e-2 on c3_wide).
* The k-means start with a fixed key lands in the reference's seed-to-seed band: inside
  ``mean ± 3·std`` or ``[min − std, max + std]`` of ``seed_stats`` (the spec's criterion),
  widened by the dtype's golden rtol for the std = 1e-16 case.
* The PCA dimension ``k`` equals a float64 NumPy computation of the same rule.
* Streamed (``stats=`` + ``second_pass=``, read once per iteration) equals the one-shot score for
  the same key in float64 (rtol 1e-5; measured <= 1e-13).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transferjax as tj
from tests import _golden
from tests._tol import GOLDEN_RTOL, PAD_RTOL, SAME_RTOL, rtol
from transferjax.metrics.nleep import _num_trials, _pca_scores_jit, _seeding_draws

DET_F32_FAILING_RTOL = 3e-2  # see module docstring
# float32 where the reference's float32 k-means start works: the broad deterministic start can
# still collapse a component to a covariance singular in float32 (c5_digits_pixels: eigenvalue
# ratio 3e-9), where the jitter applies; measured 1.3e-3 there, <= 1e-7 elsewhere.
DET_F32_RTOL = 3e-3


def _golden_entry(data, case, model):
    entry = data[case] if data is not None else None
    if entry is not None and model is not None:
        entry = entry[model]
    return entry


def _numpy_k(f, energy=0.8):
    x = np.asarray(f, np.float64)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    return int(np.searchsorted(np.cumsum(s) / s.sum(), energy, side="right") + 1)


def _band(stats, tol):
    mean, std = stats["mean"], stats["std"]
    lo = min(mean - 3 * std, stats["min"] - std) - tol * abs(mean)
    hi = max(mean + 3 * std, stats["max"] + std) + tol * abs(mean)
    return lo, hi


@pytest.mark.parametrize("case", _golden.cases("nleep.json"))
def test_golden(case, precision):
    name, model, _ = case
    gold = _golden.load_json("nleep.json")
    f, y, _ = _golden.load_input(name, model)
    dt = jnp.float64 if precision == "float64" else jnp.float32

    _, k = _pca_scores_jit(jnp.asarray(f, dt), 0.8)
    assert int(k) == _numpy_k(f)

    variants = gold.get("variants", {})
    det = _golden_entry(variants.get("det_init"), name, model)
    if det is not None:
        got = tj.nleep(f, y, init="spaced_rows")
        assert got.dtype == dt
        f32_ok = _golden_entry(variants.get("float32_as_stored"), name, model) is not None
        if dt == jnp.float64:
            tol = rtol(GOLDEN_RTOL, dt)
        else:
            tol = DET_F32_RTOL if f32_ok else DET_F32_FAILING_RTOL
        np.testing.assert_allclose(float(got), det, rtol=tol)

    stats = _golden_entry(gold.get("seed_stats"), name, model)
    if stats is not None:
        got = float(tj.nleep(f, y, key=jax.random.key(0)))
        lo, hi = _band(stats, rtol(GOLDEN_RTOL, dt))
        assert lo <= got <= hi, (got, lo, hi)
        assert 0.0 < got <= 1.0 + 1e-6


def _data(n=120, d=6, c=3, seed=0, sep=1.5):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    f = rng.normal(size=(n, d)) + sep * np.eye(c, d)[y] * np.arange(1, d + 1)[:c, None][y]
    return f.astype(np.float32), y


def test_constant_features_hand_checked(key):
    """All rows equal: every component is identical up to its weight, so p(y | z) is the class
    frequency and the score is Σ_c (n_c / n)²."""
    y = np.r_[np.zeros(6, int), np.ones(3, int), np.full(3, 2)]
    f = np.tile(np.array([[1.0, -2.0, 0.5]], np.float32), (12, 1))
    expected = (6 / 12) ** 2 + 2 * (3 / 12) ** 2
    # float32: the centred features are rounding noise (~1e-7), not exact zeros
    np.testing.assert_allclose(tj.nleep(f, y, key=key), expected, rtol=1e-5)
    np.testing.assert_allclose(tj.nleep(f, y, init="spaced_rows"), expected, rtol=1e-5)


def test_separated_clusters_score_one(key):
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    f = 0.01 * rng.normal(size=(90, 2)) + 100.0 * np.eye(3, 2)[y] - 50.0 * (y == 2)[:, None]
    got = tj.nleep(f, y, key=key, component_ratio=1)
    np.testing.assert_allclose(got, 1.0, rtol=1e-6)
    rand = tj.nleep(rng.normal(size=(90, 2)), y, key=key, component_ratio=1)
    assert float(rand) < 0.6


def test_deterministic_for_a_key(key):
    f, y = _data()
    a = tj.nleep(f, y, key=key)
    b = tj.nleep(f, y, key=jax.random.key(0))
    assert float(a) == float(b)
    # an int seed is taken as jax.random.key(seed)
    assert float(tj.nleep(f, y, key=0)) == float(a)


def test_jit_equals_eager(key):
    """Traced features: the kernel works in min(n, d) dimensions with the ones beyond k zeroed
    (exact), eager compiles for k rounded up to a bucket (also zeroed beyond k): same score."""
    f, y = _data()
    eager = tj.nleep(f, y, key=key)
    jitted = jax.jit(lambda a, b, kk: tj.nleep(a, b, key=kk, num_classes=3))(f, y, key)
    np.testing.assert_allclose(jitted, eager, rtol=rtol(SAME_RTOL, eager.dtype))


def test_vmap_equals_loop():
    fs = np.stack([_data(seed=s)[0] for s in range(3)])
    _, y = _data()
    keys = jax.random.split(jax.random.key(1), 3)
    batched = jax.vmap(lambda a, kk: tj.nleep(a, y, key=kk, num_classes=3))(fs, keys)
    loop = jnp.stack([tj.nleep(a, y, key=kk) for a, kk in zip(fs, keys)])
    np.testing.assert_allclose(batched, loop, rtol=rtol(SAME_RTOL, loop.dtype))


@pytest.mark.parametrize("shape", [(120, 6), (20, 30)])
def test_padding_invariance(shape, key):
    n, d = shape
    f, y = _data(n=n, d=d, c=2)
    ref = tj.nleep(f, y, key=key)
    padded = np.concatenate([f, np.zeros((n, 9), f.dtype)], axis=1)
    got = tj.nleep(padded, y, key=key, width=d)
    np.testing.assert_allclose(got, ref, rtol=rtol(PAD_RTOL, ref.dtype))
    two = jnp.stack([padded, padded])
    out = jax.vmap(lambda a, w: tj.nleep(a, y, key=key, width=w, num_classes=2))(
        two, jnp.array([d, d + 9])
    )
    np.testing.assert_allclose(out, jnp.stack([ref, ref]), rtol=rtol(PAD_RTOL, ref.dtype))


def test_float64_under_x64(key):
    f, y = _data()
    with jax.enable_x64(True):
        out = tj.nleep(f, y, key=key)
    assert out.dtype == jnp.float64
    assert tj.nleep(f, y, key=key).dtype == jnp.float32


@pytest.mark.parametrize("num_mix", [2, 15, 50])
def test_seeding_draws_are_the_plain_uniform_draw(num_mix, precision):
    """The k-means++ uniforms, drawn as a prefix of a bucketed flat draw (one RNG compile per
    bucket), are exactly ``jax.random.uniform(key, (K, t))``: results do not depend on the
    bucketing."""
    dt = jnp.float64 if precision == "float64" else jnp.float32
    key = jax.random.key(3)
    got = _seeding_draws(key, num_mix, dt)
    want = jax.random.uniform(key, (num_mix, _num_trials(num_mix)), dt)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_registered():
    info = tj.get_metric("nleep")
    assert info.fn is tj.nleep and info.needs_key and info.tasks == ("classification",)


@pytest.mark.parametrize(
    "features, labels, kw, err, match",
    [
        (np.full((10, 3), np.nan), np.arange(10) % 2, {}, ValueError, "NaN or inf"),
        (np.ones(10), np.arange(10) % 2, {}, ValueError, "2-D"),
        (np.ones((10, 3)), np.arange(9) % 2, {}, ValueError, "9 entries"),
        (np.random.rand(10, 3), np.zeros(10, int), {}, ValueError, "at least 2 classes"),
        (np.random.rand(10, 3), (np.arange(10) % 2) * 2, {}, ValueError, "no samples"),
        (np.random.rand(10, 3), np.arange(10) % 2 - 1, {}, ValueError, "0..C-1"),
        (np.random.rand(10, 3), np.random.rand(10), {}, TypeError, "no regression"),
        (np.random.rand(10, 3), np.arange(10) % 2 == 0, {}, TypeError, "dtype bool"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"key": None}, TypeError, "key= is required"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"key": "k"}, TypeError, "key must be"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"init": "random"}, TypeError, "init"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"component_ratio": 0}, ValueError, ">= 1"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"max_iter": 1.5}, TypeError, "max_iter"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"energy": 0.0}, ValueError, "energy"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"energy": 1.5}, ValueError, "energy"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"reg_covar": -1.0}, ValueError, "reg_covar"),
        (np.random.rand(10, 3), np.arange(10) % 2, {"tol": "x"}, TypeError, "tol"),
    ],
)
def test_bad_input(features, labels, kw, err, match):
    kw = {"key": jax.random.key(0), **kw}
    with pytest.raises(err, match="nleep: .*" + match):
        tj.nleep(features, labels, **kw)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: (r.normal(size=(20, 64)), np.arange(20) % 3),  # n < d
        lambda r: (r.normal(size=(40, 5)), np.r_[0, np.ones(39, int)]),  # singleton class
        lambda r: (np.c_[np.ones(40), r.normal(size=(40, 4))], np.arange(40) % 2),  # const col
        lambda r: (r.normal(size=(8, 3)), np.arange(8) % 2),  # K = 10 components > n = 8
        lambda r: (np.repeat(r.normal(size=(2, 6)), 15, 0), np.arange(30) % 3),  # 2 distinct rows
        # large scale, n < d (the first case's shapes and k bucket: no compile of its own)
        lambda r: (1e4 * r.normal(size=(20, 64)), np.arange(20) % 3),
    ],
)
@pytest.mark.parametrize("init", ["kmeans", "spaced_rows"])
def test_degenerate_inputs_are_finite(make, init, key):
    f, y = make(np.random.default_rng(0))
    got = float(tj.nleep(f, y, key=key, init=init))
    assert np.isfinite(got) and 0.0 < got <= 1.0 + 1e-6


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_invariances(seed):
    """Class relabelling (exact: labels only enter the LEEP table); rotation and translation of
    the features for the deterministic start (PCA scores are unchanged up to signs, EM is
    rotation invariant). With k-means the maths is rotation invariant too, but k-means++ picks
    candidates by comparing random draws with cumulative distances, so float32 rounding can
    change a pick and the local optimum. Sample order is not an invariance for a fixed key or
    the row-spaced start."""
    rng = np.random.default_rng(seed)
    n, d, c = 60, 5, 3
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
    f = (rng.normal(size=(n, d)) + 2.0 * rng.normal(size=(c, d))[y]).astype(np.float32)
    key = jax.random.key(seed % 7)
    for init in ("kmeans", "spaced_rows"):
        ref = float(tj.nleep(f, y, key=key, init=init))
        relabel = rng.permutation(c)
        np.testing.assert_allclose(tj.nleep(f, relabel[y], key=key, init=init), ref, rtol=1e-5)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    moved = (f @ q + rng.normal(size=(1, d))).astype(np.float32)
    np.testing.assert_allclose(tj.nleep(moved, y, init="spaced_rows"), ref, rtol=1e-3)


# ----------------------------------------------------------------------------- streamed


def _pieces(f, y, sizes):
    out, start = [], 0
    for s in sizes:
        out.append((f[start : start + s], y[start : start + s]))
        start += s
    assert start == len(y)
    return out


@pytest.mark.parametrize(
    "init, sizes, chunk_size, as_callable",
    [
        # list of uneven chunks cut to 50 rows: 50 | 13 (padded) | 50 | 7 (padded)
        ("kmeans", (50, 13, 57), None, False),
        # a callable returning a fresh iterator, 32-row pieces: 32 | 32 | 32 | 24 (padded)
        ("spaced_rows", (40, 40, 40), 32, True),
    ],
)
def test_streamed_equals_one_shot(init, sizes, chunk_size, as_callable):
    """stats= + second_pass= (read once per k-means / EM iteration) gives the one-shot score for
    the same key: same draws, candidates, iterations and stopping rules (float64)."""
    f, y = _data()
    key = jax.random.key(5)
    with jax.enable_x64(True):
        f64 = f.astype(np.float64)
        chunks = _pieces(f64, y, sizes)
        reads = []

        def fresh():
            reads.append(1)
            return iter(chunks)

        stats = tj.stream_stats(chunks, num_classes=3)
        got = tj.nleep(
            stats=stats, second_pass=fresh if as_callable else chunks, chunk_size=chunk_size,
            key=key, init=init,
        )
        want = tj.nleep(f64, y, key=key, init=init)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    if as_callable:  # spaced_rows: one gather pass, then at most max_iter + 1 EM passes
        assert 2 <= len(reads) <= 1 + 101


def test_streamed_errors():
    f, y = _data(n=40)
    chunks = _pieces(f, y, (25, 15))
    stats = tj.stream_stats(chunks, num_classes=3)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="nleep: stats= needs second_pass="):
        tj.nleep(stats=stats, key=key)
    with pytest.raises(ValueError, match="nleep: second_pass yielded 39 samples"):
        tj.nleep(stats=stats, second_pass=_pieces(f[:39], y[:39], (25, 14)), key=key)
    with pytest.raises(ValueError, match="nleep: pass either"):
        tj.nleep(f, y, stats=stats, second_pass=chunks, key=key)
    with pytest.raises(TypeError, match="nleep: second_pass is read"):
        tj.nleep(stats=stats, second_pass=(c for c in chunks), key=key)
    with pytest.raises(ValueError, match="nleep: second_pass chunk 0 has shape"):
        tj.nleep(stats=stats, second_pass=[(f[:, :4], y)], key=key)
    with pytest.raises(TypeError, match="nleep: key= is required"):
        tj.nleep(stats=stats, second_pass=chunks)
