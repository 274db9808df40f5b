"""The contract every registered metric keeps, checked over the registry.

A metric registered later is held to these tests without a line of its own: jit == eager,
vmap == loop, a ragged hub == scoring one by one (padding invariance), sample permutation and
class relabelling invariance, float64 under x64, the clear error for bad input, no input mutated,
and ``stats=`` == one-shot where the metric streams. Per-metric test files keep only what is
specific to a metric (parity with its reference, its math, its edge cases).
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import transferjax as tj
from transferjax.registry import METRICS

from ._tol import PAD_RTOL, SAME_RTOL, rtol

N, D, C = 48, 6, 3
ALL = sorted(METRICS)
# Compile-heavy metrics (EM, dynamics, transport): one shape per check keeps the suite in budget.
KEY = jax.random.key(0)

# Invariances a metric does not have, with the reason (everything else is checked).
NOT_PERMUTATION_INVARIANT = {
    "nleep": "k-means++ seeds draw samples by index from the key",
}
NOT_RELABEL_INVARIANT = {
    "knn": "vote ties break towards the smaller label",
}


def _data(seed=0, n=N, d=D, c=C):
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)].astype(np.int32)
    means = 1.5 * rng.normal(size=(c, d))
    f = (means[y] + rng.normal(size=(n, d))).astype(np.float32)
    return f, y


def _dims(info, n=N, d=D):
    """Sizes for ``info``: the defaults, raised to the metric's smallest ``min(n, d)``."""
    floor = info.smallest_dim()
    return (n, d) if floor <= 1 else (max(n, floor + 20), max(d, floor))


def _inputs(info, seed=0, n=N, d=D):
    """``(args, kwargs)`` of a call of ``info.fn`` on small, well-posed data."""
    n, d = _dims(info, n, d)
    f, y = _data(seed, n, d)
    kw = {"key": KEY} if info.needs_key else {}
    if not info.uses_labels:
        return (f,), kw
    if info.inputs == "features":
        return (f, y), kw
    rng = np.random.default_rng(seed + 1)
    if info.inputs == "source_probs":
        logits = f[:, :4] @ rng.normal(size=(4, 5))
        p = np.exp(logits - logits.max(1, keepdims=True))
        return (p / p.sum(1, keepdims=True), y), kw
    if info.inputs == "source_labels":
        return (((f[:, 0] > 0).astype(np.int32) + 2 * (f[:, 1] > 0)), y), kw
    if info.inputs == "source_task":
        fs, ys = _data(seed + 7, n, d)
        means = np.stack([fs[ys == k].mean(0) for k in range(C)])
        kw.update(source_features=fs, source_labels=ys, head=(means.T, np.zeros(C, np.float32)))
        return (f, y), kw
    raise AssertionError(info.inputs)


def _value(out):
    return {k: np.asarray(v) for k, v in out.items()} if isinstance(out, dict) else np.asarray(out)


def _close(a, b, tol, msg=""):
    a, b = _value(a), _value(b)
    if isinstance(a, dict):
        assert a.keys() == b.keys(), msg
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=tol, atol=tol, err_msg=f"{msg} [{k}]")
    else:
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=msg)


def _num_classes_kw(info):
    """The static sizes a traced call must be given (labels are not concrete under jit/vmap)."""
    kw = {"num_classes": C} if info.uses_labels else {}
    if "num_source_classes" in inspect.signature(info.fn).parameters:
        kw["num_source_classes"] = 4
    return kw


@pytest.mark.parametrize("metric", ALL)
def test_registered_metadata(metric):
    info = METRICS[metric]
    assert info.summary and info.paper, metric
    params = inspect.signature(info.fn).parameters
    assert "check_inputs" in params, metric
    if info.inputs == "features":
        assert "width" in params, f"{metric}: features metrics take width= (hub padding)"
    if info.streams:
        assert "stats" in params, metric
    assert info.fn.__doc__ and ">>>" in info.fn.__doc__, f"{metric}: docstring needs an example"


@pytest.mark.parametrize("metric", ALL)
def test_jit_equals_eager_and_no_mutation(metric):
    info = METRICS[metric]
    args, kw = _inputs(info)
    copies = [np.array(a, copy=True) for a in args]
    eager = info.fn(*args, **kw)
    for a, c in zip(args, copies):
        np.testing.assert_array_equal(a, c, err_msg=f"{metric} mutated its input")
    jitted = jax.jit(lambda *a: info.fn(*a, **kw, **_num_classes_kw(info)))(*args)
    _close(jitted, eager, rtol(SAME_RTOL, jnp.float32) * 10, metric)
    leaves = jax.tree.leaves(eager)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in leaves), metric
    assert all(np.asarray(v).shape == () for v in leaves), metric


@pytest.mark.parametrize("metric", ALL)
def test_vmap_equals_loop(metric):
    info = METRICS[metric]
    calls = [_inputs(info, seed=s) for s in (0, 1)]
    kw = calls[0][1]
    stacked = [np.stack(a) for a in zip(*(c[0] for c in calls))]
    if info.uses_labels:  # share the labels (the hub's layout): map over the first input only
        f = jax.vmap(lambda x: info.fn(x, calls[0][0][1], **kw, **_num_classes_kw(info)))
        out = f(stacked[0])
        calls = [((c[0][0], calls[0][0][1]), kw) for c in calls]
    else:
        out = jax.vmap(lambda x: info.fn(x, **kw))(stacked[0])
    for i, (args, kwi) in enumerate(calls):
        one = info.fn(*args, **kwi)
        _close(jax.tree.map(lambda a: a[i], out), one, rtol(SAME_RTOL, jnp.float32) * 10, metric)


@pytest.mark.parametrize("metric", [m for m in ALL if METRICS[m].inputs == "features"])
def test_ragged_hub_equals_one_by_one(metric):
    info = METRICS[metric]
    with jax.enable_x64(True):
        hub, y = {}, None
        n, floor = _dims(info)[0], info.smallest_dim()
        for i, d in enumerate((3, 8, 64)):  # 64 > n: the n×n side of the Gram
            f, y = _data(seed=i, n=n, d=d if floor <= 1 else floor + d)
            hub[f"m{i}"] = f.astype(np.float64)
        kw = {"key": KEY} if info.needs_key else {}
        labels = y if info.uses_labels else None
        scores = tj.score_hub(metric, hub, labels, **kw)
        assert list(scores) == list(hub)
        ones = {k: info.fn(*((f, y) if info.uses_labels else (f,)), **kw) for k, f in hub.items()}
        if info.pool_weights is not None:
            ones = tj.pooling.combine_min_max(
                {k: {t: float(v) for t, v in o.items()} for k, o in ones.items()},
                info.pool_weights,
            )
        for k in hub:
            _close(scores[k], ones[k], rtol(PAD_RTOL, jnp.float64) * 1e3, f"{metric} {k}")
        # layer-wise: the same candidates as {model: {layer: x}} give the same numbers
        layered = tj.score_hub(metric, {"a": hub}, labels, **kw)
        for k in hub:
            _close(layered["a"][k], scores[k], rtol(PAD_RTOL, jnp.float64) * 1e3, metric)


@pytest.mark.parametrize("metric", ALL)
def test_sample_permutation_invariance(metric):
    info = METRICS[metric]
    if metric in NOT_PERMUTATION_INVARIANT:
        pytest.skip(NOT_PERMUTATION_INVARIANT[metric])
    args, kw = _inputs(info)
    perm = np.random.default_rng(3).permutation(np.shape(args[0])[0])
    _close(
        info.fn(*[a[perm] for a in args], **kw), info.fn(*args, **kw), 1e-4, metric
    )


@pytest.mark.parametrize("metric", [m for m in ALL if METRICS[m].uses_labels])
def test_class_relabelling_invariance(metric):
    info = METRICS[metric]
    if metric in NOT_RELABEL_INVARIANT:
        pytest.skip(NOT_RELABEL_INVARIANT[metric])
    args, kw = _inputs(info)
    relabel = np.array([2, 0, 1], np.int32)
    new = args[:-1] + (relabel[args[-1]],)
    if info.inputs == "source_task":
        pytest.skip("target relabelling changes which source class each target class maps to")
    _close(info.fn(*new, **kw), info.fn(*args, **kw), 1e-4, metric)


@pytest.mark.parametrize("metric", ALL)
def test_float64_under_x64(metric):
    info = METRICS[metric]
    args, kw = _inputs(info)
    with jax.enable_x64(True):
        out = info.fn(*args, **kw)
    for v in jax.tree.leaves(out):
        assert v.dtype == jnp.float64, f"{metric}: {v.dtype}"


def _bad_inputs(info):
    """``(label, args, error type)``: each must raise, naming the metric."""
    args, _ = _inputs(info)
    x = args[0]
    nan = np.array(x, np.float64)
    nan[0] = np.nan
    out = [
        ("nan", (nan,) + args[1:], TypeError if info.inputs == "source_labels" else ValueError),
        ("3-D", (x[None],) + args[1:], ValueError),
        ("complex", (x.astype(np.complex64),) + args[1:], TypeError),
        ("bool", (np.asarray(x) > 0,) + args[1:], TypeError),
    ]
    if info.inputs == "features":
        out.append(("no columns", (x[:, :0],) + args[1:], ValueError))
    if info.uses_labels:
        y = args[-1]
        out += [
            ("short labels", args[:-1] + (y[:-1],), ValueError),
            ("negative label", args[:-1] + (np.where(np.arange(N) == 0, -1, y),), ValueError),
            ("one class", args[:-1] + (np.zeros_like(y),), ValueError),
            ("2-D labels", args[:-1] + (np.stack([y, y], 1),), ValueError),
            ("a class with no sample", args[:-1] + (2 * y,), ValueError),
            ("bool labels", args[:-1] + (y == 0,), TypeError),
            ("one sample", tuple(a[:1] for a in args), ValueError),
            ("huge label", args[:-1] + (np.where(np.arange(N) == 0, 2**40, y.astype(np.int64)),),
             ValueError),
        ]
        if "regression" not in info.tasks:
            out.append(("float labels", args[:-1] + (y.astype(np.float32),), TypeError))
    return out


@pytest.mark.parametrize("metric", ALL)
def test_bad_input_raises_one_clear_error(metric):
    info = METRICS[metric]
    good, kw = _inputs(info)
    cases = [(label, args, err, {}) for label, args, err in _bad_inputs(info)]
    if "width" in inspect.signature(info.fn).parameters:
        d = np.shape(good[0])[1]
        cases += [("width 0", good, ValueError, {"width": 0}),
                  ("width > d", good, ValueError, {"width": d + 1})]
    for label, args, err, extra in cases:
        try:
            info.fn(*args, **kw, **extra)
        except err as exc:
            # The message names the function the user called.
            assert info.fn.__name__ in str(exc), (label, exc)
        else:
            pytest.fail(f"{metric}: {label} did not raise {err.__name__}")


@pytest.mark.parametrize("metric", [m for m in ALL if METRICS[m].streams])
def test_stats_equal_one_shot(metric):
    info = METRICS[metric]
    args, kw = _inputs(info, n=60)
    with jax.enable_x64(True):
        x, y = np.asarray(args[0], np.float64), (args[1] if info.uses_labels else None)
        one = info.fn(*args, **kw)
        if info.uses_labels:
            st = tj.feature_stats(jnp.asarray(x), jnp.asarray(y), num_classes=C, class_scatter=True)
        else:
            st = tj.feature_stats(jnp.asarray(x))
        extra = {}
        if "second_pass" in inspect.signature(info.fn).parameters:
            extra["second_pass"] = lambda: [(x[:32], y[:32]), (x[32:], y[32:])]
        streamed = info.fn(stats=st, **kw, **extra)
    _close(streamed, one, 1e-6, metric)
