import importlib

import jax
import numpy as np
import pytest

import transferjax as tj
from transferjax import hub as hub_mod
from transferjax.registry import METRICS

nleep_mod = importlib.import_module("transferjax.metrics.nleep")


def _hub(n=80, widths=(5, 12, 33, 100), c=3, seed=0, regression=False):
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
    hub = {}
    for i, d in enumerate(widths):
        f = rng.normal(size=(n, d)) + 0.8 * np.eye(c, d)[y]
        hub[f"m{i}"] = np.maximum(f, 0) if i % 2 else f
    if regression:
        t = hub["m0"][:, :1] * 2 + 0.3 * rng.normal(size=(n, 1))
        return hub, t.astype(np.float64)
    return hub, y


def _one(info, f, y, key):
    kw = {"key": key} if info.needs_key else {}
    return float(info.fn(f, y, **kw))


FEATURE_METRICS = [n for n, m in METRICS.items() if m.inputs == "features"]
# compile-heavy metrics (EM / ODE / per-class loops): two widths still pad one model into the
# other's bucket; the bucketing itself is exercised by the cheap metrics (suite-time budget)
_TWO_WIDTHS = {"nleep", "ped_sfda", "ped_logme", "transrate", "disco"}


# Classification hubs of every registered metric are checked by tests/test_contract.py; here the
# four-width bucketing, chunking and regression targets.
@pytest.mark.parametrize(
    "metric",
    [m for m in FEATURE_METRICS if "regression" in METRICS[m].tasks and METRICS[m].uses_labels],
)
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_score_hub_equals_one_by_one(metric, task, key):
    info = METRICS[metric]
    if task == "classification" and metric != "logme":
        pytest.skip("classification hubs: tests/test_contract.py")
    with jax.enable_x64(True):
        widths = (5, 33) if metric in _TWO_WIDTHS else (5, 12, 33, 100)
        hub, y = _hub(widths=widths, regression=task == "regression")
        kw = {"key": key} if info.needs_key else {}
        scores = tj.score_hub(metric, hub, y, **kw)
        assert list(scores) == list(hub)
        for name, f in hub.items():
            np.testing.assert_allclose(float(scores[name]), _one(info, f, y, key), rtol=1e-5)
        # one padded width for all, and memory-bounded chunks of models: same numbers
        chunked = tj.score_hub(metric, hub, y, max_buckets=1, batch_size=3, **kw)
        for name in hub:
            np.testing.assert_allclose(float(chunked[name]), float(scores[name]), rtol=1e-5)


def test_warm_call_does_not_recompile():
    hub, y = _hub()
    tj.score_hub("logme", hub, y)
    fn = hub_mod._compiled("logme", 3, (), None, None)  # the cached scorer the call above used
    size = fn._cache_size()
    assert size >= 1
    hub2, y2 = _hub(seed=1)  # same shapes, new values and labels
    tj.score_hub("logme", hub2, y2)
    assert fn._cache_size() == size


def test_plan_buckets():
    groups = tj.plan_buckets([16, 200, 17, 18, 190], n=1000, max_buckets=2)
    assert sorted(map(sorted, groups)) == [[0, 2, 3], [1, 4]]
    assert tj.plan_buckets([8, 8, 8], n=10) == [[0, 1, 2]]
    assert len(tj.plan_buckets(list(range(8, 40)), n=100, max_buckets=3)) <= 3


def test_plan_buckets_auto_bounds_padding_waste():
    """Default bucket count: the fewest buckets whose padded cost is within 10% (+ slack)."""
    from transferjax.hub import _cost

    widths, n = [34, 50, 52, 72, 79, 90, 118, 127, 131, 155, 159, 221, 230, 253], 1000
    groups = tj.plan_buckets(widths, n)
    ideal = sum(_cost(n, d) for d in widths)

    def padded(gs):
        return sum(len(g) * _cost(n, max(widths[i] for i in g)) for g in gs)

    assert sorted(i for g in groups for i in g) == list(range(len(widths)))
    assert padded(groups) <= 1.1 * ideal + 1e7
    fewer = tj.plan_buckets(widths, n, max_buckets=len(groups) - 1)
    assert padded(fewer) > 1.1 * ideal + 1e7
    # tiny models: waste is negligible in absolute terms, so one compile
    assert len(tj.plan_buckets([8, 9, 10, 12], n=100)) == 1


def test_pad_features():
    padded, widths = tj.pad_features([np.ones((4, 2)), np.ones((4, 3))])
    assert padded.shape == (2, 4, 3) and list(widths) == [2, 3]
    assert padded[0, :, 2].sum() == 0


def test_bad_hubs():
    hub, y = _hub()
    with pytest.raises(ValueError, match="empty"):
        tj.score_hub("logme", {}, y)
    with pytest.raises(ValueError, match="same number of samples"):
        tj.score_hub("logme", {"a": hub["m0"], "b": hub["m1"][:-1]}, y)
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        tj.score_hub("nope", hub, y)
    bad = dict(hub, m1=np.full_like(hub["m1"], np.nan))
    with pytest.raises(ValueError, match="model 'm1'.*NaN"):
        tj.score_hub("logme", bad, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        tj.score_hub("logme", hub, np.zeros_like(y))


def test_nleep_hub_compiles_for_the_pca_rank(monkeypatch, key):
    """score_hub passes NLEEP the group's largest PCA rank (+1, bucketed) as max_dim, not the
    padded width min(n, d): same scores as one by one; a caller's max_dim wins."""
    rng = np.random.default_rng(3)
    n, c = 120, 3
    y = np.arange(n) % c
    hub = {}
    for name, d in (("a", 40), ("b", 60)):
        basis = rng.normal(size=(3, d))
        hub[name] = (np.eye(c)[y] * 3 + rng.normal(size=(n, c))) @ basis
        hub[name] += 1e-3 * rng.normal(size=(n, d))
    info = METRICS["nleep"]
    padded, _ = tj.pad_features(list(hub.values()))
    assert info.features_options(padded, {}) == {"max_dim": 16}
    assert info.features_options(padded, {"max_dim": 7}) == {}
    # the rank pass honours the hub's batch_size (memory: one model at a time is a loop of 2),
    # with the same answer
    asked = []
    max_rank = nleep_mod._pca_max_rank
    monkeypatch.setattr(
        nleep_mod, "_pca_max_rank", lambda x, e, b: asked.append(b) or max_rank(x, e, b)
    )
    assert info.features_options(padded, {}, batch_size=1) == {"max_dim": 16}
    assert asked == [1]
    loops = [
        str(jax.make_jaxpr(nleep_mod._pca_max_rank, static_argnums=2)(padded, 0.8, b)).count(
            "scan["
        )
        for b in (None, 1)
    ]
    assert loops == [0, 1]
    seen = []
    compiled = hub_mod._compiled

    def spy(*args):
        seen.append(dict(args[2]))
        return compiled(*args)

    monkeypatch.setattr(hub_mod, "_compiled", spy)
    with jax.enable_x64(True):
        scores = tj.score_hub("nleep", hub, y, key=key)
        assert [s["max_dim"] for s in seen] == [16]
        for name, f in hub.items():
            np.testing.assert_allclose(float(scores[name]), _one(info, f, y, key), rtol=1e-5)
        tj.score_hub("nleep", hub, y, key=key, max_dim=40)
        assert seen[-1]["max_dim"] == 40


@pytest.mark.parametrize("metric", ["logme", "gbc"])
def test_reduce_dim_equals_one_by_one(metric):
    """score_hub(reduce_dim=k) scores every candidate on its top-k components, like
    metric(tj.reduce_dim(f, k)) one by one; widths below k keep their own width."""
    with jax.enable_x64(True):
        hub, y = _hub(widths=(3, 12, 100))
        scores = tj.score_hub(metric, hub, y, reduce_dim=8)
        for name, f in hub.items():
            one = METRICS[metric].fn(tj.reduce_dim(f, 8), y)
            np.testing.assert_allclose(float(scores[name]), float(one), rtol=1e-8)
    z = tj.reduce_dim(hub["m2"], 8)
    assert z.shape == (80, 8) and tj.reduce_dim(hub["m0"], 8).shape == (80, 3)
    np.testing.assert_array_less(-1e-9, np.max(np.asarray(z), axis=0))  # sign convention
    with pytest.raises(ValueError, match="reduce_dim"):
        tj.score_hub("logme", hub, y, reduce_dim=0)
