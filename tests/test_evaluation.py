import jax
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

import transferjax as tj
from tests import _golden


def _wtau_cases():
    if not _golden.available():
        return [pytest.param(None, marks=pytest.mark.skip(reason=_golden.MISSING))]
    return [pytest.param(c, id=c["name"]) for c in _golden.load_json("wtau.json")["cases"]]


@pytest.mark.parametrize("case", _wtau_cases())
def test_golden_weighted_tau(case, precision):
    got = float(tj.weighted_kendall_tau(case["scores"], case["truth"]))
    if case["wtau"] is None:
        assert np.isnan(got)
    else:
        # float32: values near 0 (both_ties_n8 is -1.25e-3) need an absolute floor
        atol = 1e-12 if precision == "float64" else 1e-6
        np.testing.assert_allclose(got, case["wtau"], rtol=1e-6, atol=atol)
    np.testing.assert_allclose(
        float(tj.top_k_relative_accuracy(case["scores"], case["truth"], 1)), case["top1_rel"],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        float(tj.top_k_relative_accuracy(case["scores"], case["truth"], 3)), case["top3_rel"],
        rtol=1e-6,
    )


# A few sizes only (each size compiles once); small integers force ties. XLA flushes subnormal
# floats to zero, so they are left out.
_value = st.one_of(
    st.integers(0, 4),
    # values that underflow to 0 in float32 (1e-267) would tie there but not in SciPy's float64
    st.floats(-5, 5, allow_subnormal=False).filter(lambda v: v == 0 or abs(v) > 1e-30),
)
vectors = st.sampled_from([2, 5, 11, 30]).flatmap(
    lambda n: st.tuples(
        st.lists(_value, min_size=n, max_size=n), st.lists(_value, min_size=n, max_size=n)
    )
)


@settings(max_examples=50, deadline=None)
@given(vectors)
def test_matches_scipy(xy):
    x, y = (np.asarray(v, np.float64) for v in xy)
    with jax.enable_x64(True):
        ours = [float(f(x, y)) for f in (tj.weighted_kendall_tau, tj.kendall_tau, tj.pearson)]
        swapped = float(tj.weighted_kendall_tau(y, x))
    ref_w = scipy.stats.weightedtau(x, y)[0]
    ref_k = scipy.stats.kendalltau(x, y)[0] if len(set(x)) > 1 and len(set(y)) > 1 else np.nan
    ref_p = np.nan
    if np.ptp(x) > 0 and np.ptp(y) > 0:
        ref_p = np.corrcoef(x, y)[0, 1]
    for got, ref in zip(ours, (ref_w, ref_k, ref_p)):
        if np.isnan(ref):
            assert np.isnan(got)
        else:
            np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    # symmetric
    np.testing.assert_allclose(swapped, ours[0], rtol=1e-9, equal_nan=True)


def test_identical_rankings_and_jit():
    x = np.array([3.0, 1.0, 2.0, 5.0])
    assert float(tj.weighted_kendall_tau(x, x * 10)) == pytest.approx(1.0)
    assert float(tj.weighted_kendall_tau(x, -x)) == pytest.approx(-1.0)
    f = jax.jit(tj.weighted_kendall_tau)
    assert float(f(x, x + 1)) == pytest.approx(1.0)


def test_evaluate_aligns_by_name():
    out = tj.evaluate({"a": 1.0, "b": 2.0, "c": 0.5}, {"c": 60.0, "b": 90.0, "a": 80.0})
    assert out["weighted_tau"] == pytest.approx(1.0)
    assert out["top1_relative_accuracy"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not in both"):
        tj.evaluate({"a": 1.0, "b": 2.0}, {"a": 1.0})


@pytest.mark.parametrize(
    "s, a, match",
    [
        ([1.0, 2.0], [1.0], "2 models but accuracies has 1"),
        ([1.0], [1.0], "at least 2"),
        ([1.0, np.nan], [1.0, 2.0], "NaN"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "1-D"),
    ],
)
def test_bad_input(s, a, match):
    with pytest.raises(ValueError, match=match):
        tj.weighted_kendall_tau(s, a)


def test_finetune_tables():
    sup = tj.evaluation.finetune_accuracy("supervised", "cifar10")
    assert len(sup) == 11 and all(50 < v <= 100 for v in sup.values())
    assert len(tj.evaluation.finetune_accuracy("self_supervised", "dtd")) == 12
    if _golden.available():
        ref = _golden.load_json("finetune_accuracy.json")
        assert tj.evaluation.finetune_accuracy("supervised") == ref["supervised"]
    with pytest.raises(ValueError, match="unknown group"):
        tj.evaluation.finetune_accuracy("nope")


# ------------------------------------------------------------------ baseline and intervals


@pytest.mark.parametrize("group, expected", [("supervised", 0.837), ("self_supervised", 0.701)])
def test_static_baseline_reproduces_the_published_tables(group, expected):
    """Leave-one-dataset-out mean accuracy, a ranking that reads no target data, gets a mean
    weighted τ of 0.837 (supervised) and 0.701 (self-supervised) on the shipped tables."""
    table = tj.evaluation.finetune_accuracy(group)
    taus = []
    for ds, acc in table.items():
        static = tj.evaluation.static_scores(table, ds)
        assert set(static) == set(acc)
        taus.append(tj.evaluate(static, acc, bootstrap=0)["weighted_tau"])
    assert round(float(np.mean(taus)), 3) == expected


def test_static_scores_by_hand_and_errors():
    table = {"a": {"m1": 90.0, "m2": 80.0}, "b": {"m1": 70.0, "m2": 75.0}, "c": {"m1": 60.0}}
    assert tj.evaluation.static_scores(table, "a") == {"m1": 65.0, "m2": 75.0}
    with pytest.raises(ValueError, match="static_scores: target 'z'"):
        tj.evaluation.static_scores(table, "z")
    with pytest.raises(ValueError, match="m3"):
        tj.evaluation.static_scores({"a": {"m3": 1.0}, "b": {"m1": 2.0}}, "a")
    with pytest.raises(TypeError, match="static_scores"):
        tj.evaluation.static_scores([1, 2], "a")


def test_bootstrap_intervals_are_seeded_and_bracket():
    rng = np.random.default_rng(0)
    acc = {f"m{i}": float(v) for i, v in enumerate(rng.uniform(60, 90, 12))}
    noisy = {m: v + rng.normal(scale=5) for m, v in acc.items()}
    a = tj.evaluate(noisy, acc, bootstrap=200, seed=1)
    b = tj.evaluate(noisy, acc, bootstrap=200, seed=1)
    c = tj.evaluate(noisy, acc, bootstrap=200, seed=2)
    assert a == b and a["weighted_tau_ci"] != c["weighted_tau_ci"]
    for key in ("weighted_tau", "kendall_tau", "pearson"):
        lo, hi = a[f"{key}_ci"]
        assert -1 <= lo < hi <= 1
    # a perfect ranking stays perfect on every resample
    assert tj.evaluate(acc, acc, bootstrap=50)["weighted_tau_ci"][0] == pytest.approx(1.0)
    assert "weighted_tau_ci" not in tj.evaluate(noisy, acc, bootstrap=0)


def test_compare_is_a_paired_probability():
    rng = np.random.default_rng(0)
    acc = {f"m{i}": float(v) for i, v in enumerate(rng.uniform(60, 90, 10))}
    rev = {m: -v for m, v in acc.items()}
    assert tj.evaluation.compare(acc, rev, acc, bootstrap=100) == 1.0
    assert tj.evaluation.compare(rev, acc, acc, bootstrap=100) == 0.0
    assert tj.evaluation.compare(acc, acc, acc, bootstrap=100) == 0.5
    with pytest.raises(ValueError, match="compare: models not in both"):
        tj.evaluation.compare(acc, {"m0": 1.0}, acc)


@pytest.mark.parametrize("bad", ["90%", None, [1.0]])
def test_evaluate_rejects_non_numbers(bad):
    with pytest.raises(TypeError, match=r"evaluate: accuracies\['b'\] must be a real number"):
        tj.evaluate({"a": 1.0, "b": 2.0}, {"a": 50.0, "b": bad})
