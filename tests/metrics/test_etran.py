"""ETran: raw terms against the reference, the pooled hub score, the term definitions by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import transferjax as tj
from tests import _golden
from tests._tol import GOLDEN_RTOL, rtol
from transferjax.pooling import combine_min_max
from transferjax.registry import METRICS


def _golden_cases():
    if not _golden.available():
        return [pytest.param(None, marks=pytest.mark.skip(reason=_golden.MISSING))]
    return list(_golden.load_json("etran.json")["cases"].items())


@pytest.mark.parametrize("case", _golden_cases(), ids=lambda c: c[0] if c else "none")
def test_golden_terms(case, precision):
    name, expected = case
    f, y, _ = _golden.load_input(name)
    got = tj.etran_terms(f, y)
    assert set(got) == {"lda", "energy"}
    for term, value in expected.items():
        _golden.check(got[term], value, err_msg=term)


def test_golden_hub_pooled(precision):
    """Terms of model0..model4 one by one, pooled with the registered weights, and the same
    through ``score_hub`` (padded, vmapped): the reference's pooled scores."""
    if not _golden.available():
        pytest.skip(_golden.MISSING)
    hub_golden = _golden.load_json("etran.json")["hub"]
    _, y, data = _golden.load_input("hub", "model0")
    hub = {m: data[m] for m in hub_golden}
    dt = jnp.float64 if precision == "float64" else jnp.float32
    tol = rtol(GOLDEN_RTOL, dt)
    terms = {m: {k: float(v) for k, v in tj.etran_terms(f, y).items()} for m, f in hub.items()}
    for m, want in hub_golden.items():
        for t in ("lda", "energy"):
            np.testing.assert_allclose(terms[m][t], want[t], rtol=tol, err_msg=f"{m} {t}")
    pooled = combine_min_max(terms, METRICS["etran"].pool_weights)
    via_hub = tj.score_hub("etran", hub, y, max_buckets=1)
    for m, want in hub_golden.items():
        np.testing.assert_allclose(pooled[m], want["score"], rtol=tol, atol=tol, err_msg=m)
        np.testing.assert_allclose(float(via_hub[m]), want["score"], rtol=tol, atol=tol, err_msg=m)


def test_terms_by_hand():
    """Nearest-class-mean posterior and the lowest log-sum-exp, written out in NumPy."""
    f = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0], [0.5, 0.5]])
    y = np.array([0, 0, 1, 1, 0])
    mu = np.stack([f[y == c].mean(0) for c in (0, 1)])
    logits = -0.5 * ((f[:, None, :] - mu[None]) ** 2).sum(-1) + np.log([3 / 5, 2 / 5])
    post = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    lse = np.log(np.exp(f).sum(1))
    with jax.enable_x64(True):
        got = tj.etran_terms(f, y)
        np.testing.assert_allclose(float(got["lda"]), post[np.arange(5), y].mean(), rtol=1e-12)
        # n = 5 < 200: the reference's k = 0 (NaN); here k = 1, the lowest value
        np.testing.assert_allclose(float(got["energy"]), lse.min(), rtol=1e-12)
        # percent=100: every sample
        got = tj.etran_terms(f, y, percent=100)
        np.testing.assert_allclose(float(got["energy"]), lse.mean(), rtol=1e-12)


def test_k_lowest_and_empty_class():
    rng = np.random.default_rng(0)
    y = np.arange(400) % 3
    f = rng.normal(size=(400, 6)) + np.eye(3, 6)[y]
    lse = np.log(np.exp(f).sum(1))
    with jax.enable_x64(True):
        got = tj.etran_terms(f, y)
        np.testing.assert_allclose(float(got["energy"]), np.sort(lse)[:2].mean(), rtol=1e-12)
        # a declared class with no sample is never predicted: as if it did not exist
        more = jax.jit(lambda a, b: tj.etran_terms(a, b, num_classes=5))(f, y)
        for k in got:
            np.testing.assert_allclose(float(more[k]), float(got[k]), rtol=1e-12)


def test_bad_options():
    f = np.random.default_rng(0).normal(size=(30, 4))
    y = np.arange(30) % 2
    with pytest.raises(ValueError, match="etran_terms: percent"):
        tj.etran_terms(f, y, percent=0)
    with pytest.raises(TypeError, match="etran_terms: .*no regression"):
        tj.etran_terms(f, y.astype(np.float32))
    assert METRICS["etran"].pool_weights == {"lda": 0.85, "energy": 0.15}
