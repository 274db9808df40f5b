import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transferjax as tj
from tests import _golden
from tests._tol import GOLDEN_RTOL, SAME_RTOL, rtol

needs_sfda = pytest.mark.skipif(not hasattr(tj, "sfda"), reason="sfda not implemented yet")


def _data(n=120, d=6, c=4, seed=0, sep=1.0):
    """Overlapping Gaussian classes (PED moves them in every step)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    centres = sep * rng.normal(size=(c, d))
    f = (rng.normal(size=(n, d)) + centres[y]).astype(np.float32)
    return f, y


def _dt(precision):
    return jnp.float64 if precision == "float64" else jnp.float32


# ---------------------------------------------------------------- golden parity


@pytest.mark.parametrize("case", _golden.cases("ped_logme.json", include_hub=False))  # hub: tests/test_golden_hub.py
def test_golden_ped_logme(case, precision):
    _golden.check_parity(tj.ped_score, case, metric="logme")


@needs_sfda
@pytest.mark.parametrize("case", _golden.cases("ped_sfda.json", include_hub=False))  # hub: tests/test_golden_hub.py
def test_golden_ped_sfda(case, precision):
    _golden.check_parity(tj.ped_score, case)  # the reference's default wrapped score is SFDA


def test_golden_steps_c1(precision):
    """Features after each step match the reference's, step by step (ped_features_c1.npz)."""
    if not _golden.available():
        pytest.skip(_golden.MISSING)
    ref = np.load(_golden.GOLDEN_DIR / "ped_features_c1.npz")
    x, y = ref["features_in"], ref["labels"]
    # The reference's first step standardises in float32: its moved features carry that
    # rounding (~4e-7 absolute here), identical in every step; the increments are exact.
    atol, inc_atol = (1e-6, 1e-9) if precision == "float64" else (5e-6, 5e-7)
    # Stop after k = 1..6 steps with the exit rule itself (exit ratio between the k-th and the
    # (k+1)-th step's ratio), all six runs in one vmapped call (exit_ratio is traced).
    r = np.r_[ref["change_ratio"], 0.5]
    exits = jnp.asarray((r[:-1] + r[1:]) / 2)
    runs = jax.vmap(lambda e: tj.ped(x, y, exit_ratio=e, num_classes=5, return_info=True))(exits)
    assert runs.num_steps.tolist() == [1, 2, 3, 4, 5, 6]
    prev_got = prev_ref = None
    for k in range(1, 7):
        got = np.asarray(runs.features[k - 1], np.float64)
        want = ref[f"step{k}_candidate"]
        np.testing.assert_allclose(got, want, rtol=0, atol=atol)
        if prev_got is not None:
            np.testing.assert_allclose(got - prev_got, want - prev_ref, rtol=0, atol=inc_atol)
        prev_got, prev_ref = got, want
    info = tj.ped(x, y, return_info=True)
    got = np.asarray(info.features, np.float64)
    np.testing.assert_allclose(got, ref["features_out"], rtol=0, atol=atol)
    assert int(info.num_steps) == int(ref["n_steps_accepted"])
    # P_0 uses the reference's float32 radii: 1e-6 relative; later steps agree to 2e-7.
    p_tol = 1e-5 if precision == "float64" else 1e-4
    np.testing.assert_allclose(info.position_change, ref["position_change"], rtol=p_tol)
    ratio = np.asarray(info.position_change) / float(info.position_change[0])
    np.testing.assert_allclose(ratio, ref["change_ratio"], rtol=p_tol)


def _p1():
    bench = _golden.GOLDEN_DIR.parent / "bench"
    if not (bench / "cases.py").is_file():
        pytest.skip(f"{bench}/cases.py (the perf cases) is absent")
    sys.path.insert(0, str(bench))
    try:
        from cases import make
    finally:
        sys.path.remove(str(bench))
    return make("p1")


def test_golden_p1_early_exit(precision):
    """p1 stops after 3 accepted steps (the 4th step's ratio 0.42 < 0.5 is discarded)."""
    if not _golden.available():
        pytest.skip(_golden.MISSING)
    extra = _golden.load_json("ped_logme.json")["extra"]["p1"]
    x, y = _p1()
    info = tj.ped(x, y, return_info=True)
    k = extra["n_steps_accepted"]
    assert int(info.num_steps) == k == 3
    p = np.asarray(info.position_change)
    # the reference's float32 first step: its P carry ~3e-7 relative rounding (as c1)
    tol = 1e-5 if precision == "float64" else GOLDEN_RTOL[jnp.float32]
    np.testing.assert_allclose(p[: k + 1], extra["position_change"], rtol=tol)
    np.testing.assert_allclose(p[: k + 1] / p[0], extra["change_ratio"], rtol=tol)
    assert np.all(p[k + 1 :] == 0)
    if precision == "float64":
        return  # the wrapped scores on p1 are checked once, in float32 (LogME at p1 size is slow)
    # the discarded step: exactly three steps' displacement, not four
    three = tj.ped(x, y, max_steps=3)
    np.testing.assert_array_equal(np.asarray(info.features), np.asarray(three))
    # (ped_sfda saturates at 1.0 on p1: a weak check for SFDA's D^3 cost, left to test_sfda)
    tol = GOLDEN_RTOL[jnp.float32]
    np.testing.assert_allclose(float(tj.logme(info.features, y)), extra["ped_logme"], rtol=tol)


# ---------------------------------------------------------------- hand-checkable dynamics


def test_two_balls_by_hand():
    """1-D, two classes: gap g_t obeys 1.2 - g_{t+1} = 0.99 (1.2 - g_t) in original units.

    Class 0 = {0, 2}, class 1 = {1, 3}: radii 1/s, centre gap 1/s, overlap (1.2 - 1)/s, each
    class moves by 0.005 x overlap per step, so after t steps each has moved 0.1 (1 - 0.99^t)
    (the scale s cancels) and the change ratio of step t is 0.99^t.
    """
    x = np.array([[0.0], [2.0], [1.0], [3.0]], np.float32)
    y = np.array([0, 0, 1, 1])
    info = tj.ped(x, y, return_info=True)
    move = 0.1 * (1 - 0.99**6)
    np.testing.assert_allclose(info.displacement[:, 0], [-move, move], rtol=1e-5)
    np.testing.assert_allclose(info.features[:, 0], x[:, 0] + move * np.array([-1, -1, 1, 1]),
                               rtol=1e-6, atol=1e-7)
    p = np.asarray(info.position_change)
    np.testing.assert_allclose(p / p[0], 0.99 ** np.arange(6), rtol=1e-5)
    s = np.sqrt(1.25)  # population std of {0, 1, 2, 3}
    np.testing.assert_allclose(p[0], 2 * 0.005 * 0.2 / s, rtol=1e-5)
    # exit rule: ratios 1, .99, .9801, .9703, .9606 -> the 5th step fails 0.97 and is discarded
    info = tj.ped(x, y, exit_ratio=0.97, return_info=True)
    assert int(info.num_steps) == 4
    np.testing.assert_allclose(info.displacement[1, 0], 0.1 * (1 - 0.99**4), rtol=1e-5)
    assert float(info.position_change[4]) > 0 and float(info.position_change[5]) == 0
    # the step cap
    info = tj.ped(x, y, max_steps=2, return_info=True)
    assert int(info.num_steps) == 2
    np.testing.assert_allclose(info.displacement[1, 0], 0.1 * (1 - 0.99**2), rtol=1e-5)
    # hyper-parameters enter as |nu| (R_a + R_b) and dt^2 k / 2
    a = tj.ped(x, y, nsigma=-0.6, time_step=0.2, constant=0.25, return_info=True)
    np.testing.assert_allclose(a.displacement, tj.ped(x, y, return_info=True).displacement,
                               rtol=1e-6)


def test_no_overlap_means_no_move():
    """Separated classes: P_0 = 0, the reference's nan ratio rejects step 0: nothing moves."""
    x = np.array([[0.0], [0.1], [10.0], [10.1]], np.float32)
    y = np.array([0, 0, 1, 1])
    info = tj.ped(x, y, return_info=True)
    assert int(info.num_steps) == 0
    np.testing.assert_array_equal(np.asarray(info.features), x)
    np.testing.assert_array_equal(np.asarray(info.position_change), 0)
    np.testing.assert_allclose(tj.ped_score(x, y, metric="logme"), tj.logme(x, y), rtol=1e-6)


def test_step_cap_binds_for_large_steps():
    """With k dt^2 / 2 >= 1 the step length is the overlap itself (min(., O))."""
    x = np.array([[0.0], [2.0], [1.0], [3.0]], np.float32)
    y = np.array([0, 0, 1, 1])
    a = tj.ped(x, y, time_step=2.0, max_steps=1, return_info=True)
    b = tj.ped(x, y, time_step=5.0, max_steps=1, return_info=True)
    np.testing.assert_allclose(a.displacement[1, 0], 0.2, rtol=1e-5)  # = the overlap
    np.testing.assert_allclose(a.displacement, b.displacement, rtol=1e-6)


def test_reference_features_default_is_the_features():
    f, y = _data()
    np.testing.assert_allclose(
        tj.ped(f, y), tj.ped(f, y, reference_features=f), rtol=1e-6, atol=1e-6
    )
    other = 3.0 * _data(n=50, seed=5)[0] + 1.0  # wider spread: classes look closer -> smaller move
    moved_default = np.asarray(tj.ped(f, y)) - f
    moved_other = np.asarray(tj.ped(f, y, reference_features=other)) - f
    assert not np.allclose(moved_default, moved_other)


def test_missing_class_exerts_no_force():
    f, y = _data()
    ref = tj.ped(f, y)
    got = tj.ped(f, y, num_classes=6)  # classes 4 and 5 are empty
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- wrapper and registry


def test_ped_score_is_metric_on_moved_features():
    f, y = _data()
    moved = tj.ped(f, y)
    np.testing.assert_allclose(
        tj.ped_score(f, y, metric="logme"), tj.logme(moved, y), rtol=rtol(SAME_RTOL, moved.dtype)
    )
    np.testing.assert_allclose(
        tj.ped_logme(f, y), tj.logme(moved, y), rtol=rtol(SAME_RTOL, moved.dtype)
    )
    seen = {}

    def spy(features, labels, *, num_classes, check_inputs, **kw):
        seen.update(kw, num_classes=num_classes, check_inputs=check_inputs)
        return jnp.sum(features)

    got = tj.ped_score(f, y, metric=spy, metric_options={"tag": 1})
    np.testing.assert_allclose(got, jnp.sum(moved), rtol=1e-6)
    assert seen == {"tag": 1, "num_classes": 4, "check_inputs": False}
    padded = np.concatenate([f, np.zeros((len(f), 3), f.dtype)], 1)
    tj.ped_score(padded, y, metric=spy, width=6)
    assert seen["width"] == 6
    # options reach the wrapped metric
    np.testing.assert_allclose(
        tj.ped_score(f, y, metric="logme", metric_options={"max_iter": 2}),
        tj.logme(moved, y, max_iter=2),
        rtol=1e-5,
    )


@needs_sfda
def test_default_metric_is_sfda():
    f, y = _data()
    want = tj.sfda(tj.ped(f, y), y)
    np.testing.assert_allclose(tj.ped_score(f, y), want, rtol=1e-5)
    np.testing.assert_allclose(tj.ped_sfda(f, y), want, rtol=1e-5)
    info = tj.get_metric("ped_sfda")
    assert info.fn is tj.ped_sfda and info.tasks == ("classification",)


# ---------------------------------------------------------------- jit, vmap, padding


def test_batched_kernel_traced_once():  # (a name with 'vmap.' confuses chex)
    fs = jnp.stack([jnp.asarray(_data(seed=s)[0]) for s in range(2)])
    _, y = _data()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(a, w):
        return jax.vmap(lambda b, v: tj.ped_logme(b, y, width=v, num_classes=4))(a, w)

    run(fs, jnp.array([6, 6]))
    run(fs + 1.0, jnp.array([5, 6]))


def test_differentiable():
    """The dynamics are a fixed-length scan: reverse-differentiable (LogME's loop is not)."""
    f, y = _data(n=40, d=4)
    loss = lambda a: jnp.sum(tj.ped(a, y, num_classes=4) ** 2)  # noqa: E731
    g = jax.grad(loss)(jnp.asarray(f))
    assert g.shape == f.shape and bool(jnp.all(jnp.isfinite(g)))


# ---------------------------------------------------------------- invariances


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_invariances(seed):
    rng = np.random.default_rng(seed)
    n, d, c = 60, 5, 3
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
    f = (rng.normal(size=(n, d)) + 0.8 * rng.normal(size=(c, d))[y]).astype(np.float32)
    ref = np.asarray(tj.ped(f, y), np.float64)
    atol = 1e-5
    perm = rng.permutation(n)
    np.testing.assert_allclose(tj.ped(f[perm], y[perm]), ref[perm], rtol=1e-5, atol=atol)
    relabel = rng.permutation(c)
    np.testing.assert_allclose(tj.ped(f, relabel[y]), ref, rtol=1e-5, atol=atol)
    cols = rng.permutation(d)
    np.testing.assert_allclose(tj.ped(f[:, cols], y), ref[:, cols], rtol=1e-5, atol=atol)
    shift = rng.normal(size=d).astype(np.float32)
    np.testing.assert_allclose(tj.ped(f + shift, y), ref + shift, rtol=1e-5, atol=atol)
    scale = rng.uniform(0.5, 2.0, size=d).astype(np.float32)  # std >> eps: scale-equivariant
    np.testing.assert_allclose(tj.ped(f * scale, y), ref * scale, rtol=1e-5, atol=atol)
    score = float(tj.ped_score(f, y, metric="logme"))
    np.testing.assert_allclose(
        tj.ped_score(f[perm], relabel[y][perm], metric="logme"), score, rtol=1e-4
    )
    # PED pushes classes apart: the class-mean spread never shrinks
    moved = ref
    spread = lambda a: np.var(np.stack([a[y == k].mean(0) for k in range(c)]), 0).sum()  # noqa
    assert spread(moved) >= spread(f.astype(np.float64)) - 1e-9


# ---------------------------------------------------------------- bad and degenerate input


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(labels=np.linspace(0, 1, 10)), TypeError, "no regression form"),
        (dict(features=np.full((10, 3), np.nan)), ValueError, "NaN or inf"),
        (dict(features=np.ones(10)), ValueError, "2-D"),
        (dict(labels=np.arange(9) % 2), ValueError, "9 entries"),
        (dict(labels=np.zeros(10, int)), ValueError, "at least 2 classes"),
        (dict(labels=(np.arange(10) % 2) * 2), ValueError, "no samples"),
        (dict(labels=np.arange(10) % 2 == 0), TypeError, "dtype bool"),
        (dict(reference_features=np.ones((5, 4))), ValueError, "3 columns"),
        (dict(reference_features=np.full((5, 3), np.inf)), ValueError, "reference_features"),
        (dict(eps=0.0), ValueError, "eps must be > 0"),
        (dict(nsigma=float("nan")), ValueError, "nsigma must be finite"),
        (dict(time_step="a"), TypeError, "time_step must be a real number"),
        (dict(exit_ratio=np.ones(2)), ValueError, "exit_ratio must be a scalar"),
        (dict(max_steps=0), ValueError, "max_steps must be >= 1"),
        (dict(max_steps=2.0), TypeError, "max_steps must be a positive int"),
        (dict(width=4), ValueError, "width must be in 1..3"),
        (dict(width=0), ValueError, "width must be in 1..3"),
    ],
)
def test_bad_input(kwargs, err, match):
    args = dict(features=np.random.default_rng(0).normal(size=(10, 3)), labels=np.arange(10) % 2)
    args.update(kwargs)
    with pytest.raises(err, match="ped: .*" + match):
        tj.ped(args.pop("features"), args.pop("labels"), **args)


@pytest.mark.parametrize(
    "metric, err, match",
    [
        ("nope", ValueError, "unknown metric 'nope'"),
        ("ped_logme", ValueError, "already applies PED"),
        (3, TypeError, "registered name or a callable"),
    ],
)
def test_bad_metric(metric, err, match):
    f, y = _data(n=20)
    with pytest.raises(err, match="ped_score: .*" + match):
        tj.ped_score(f, y, metric=metric)


def test_metric_without_classification_or_features_rejected():
    from transferjax.registry import METRICS, MetricInfo

    METRICS["_test_probs"] = MetricInfo("_test_probs", lambda *a, **k: 0.0, ("classification",),
                                        inputs="source_probs")
    try:
        f, y = _data(n=20)
        with pytest.raises(ValueError, match="must read features"):
            tj.ped_score(f, y, metric="_test_probs")
    finally:
        del METRICS["_test_probs"]


@pytest.mark.parametrize(
    "make",
    [
        lambda r: (r.normal(size=(20, 64)), np.arange(20) % 3),  # n < d
        lambda r: (r.normal(size=(40, 5)), np.r_[0, np.ones(39, int)]),  # singleton class
        lambda r: (np.c_[np.ones(40), r.normal(size=(40, 4))], np.arange(40) % 2),  # constant col
        lambda r: (np.c_[np.zeros(40), r.normal(size=(40, 4))], np.arange(40) % 2),  # zero col
        lambda r: (np.ones((40, 4)), np.arange(40) % 2),  # all columns constant
        lambda r: (np.repeat(r.normal(size=(1, 6)), 30, 0), np.arange(30) % 3),  # identical rows
        lambda r: (np.tile(r.normal(size=(10, 3)), (2, 1)), np.r_[np.zeros(10, int),
                                                                  np.ones(10, int)]),  # same mean
    ],
)
def test_degenerate_inputs_are_finite(make):
    f, y = make(np.random.default_rng(0))
    moved = tj.ped(f, y)
    assert bool(jnp.all(jnp.isfinite(moved)))
    assert np.isfinite(float(tj.ped_score(f, y, metric="logme")))


def test_coincident_class_means_do_not_push():
    """Two classes with the same centre (the reference gives NaN): no force between them."""
    rng = np.random.default_rng(0)
    block = rng.normal(size=(10, 3))
    f = np.concatenate([block, block]).astype(np.float32)
    y = np.r_[np.zeros(10, int), np.ones(10, int)]
    info = tj.ped(f, y, return_info=True)
    np.testing.assert_array_equal(np.asarray(info.features), f)
    assert int(info.num_steps) == 0
