import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import transferjax as tj
from tests import _golden
from tests._tol import GOLDEN_RTOL

TERMS = ("seli", "ncc", "vc")
# The exact-PCA configuration of the reference (its randomized PCA is not reproduced), the
# same on features x 0.25 (which takes the LDA's shrinkage branch), and scikit-learn >= 1.9.
TABLES = {
    "deterministic": (("variants", "deterministic"), 1.0, {}),
    "eigen_branch": (("extra", "eigen_branch"), 0.25, {}),
    "sklearn_1.9.1_deterministic": (
        ("variants", "sklearn_1.9.1_deterministic"), 1.0, {"lda_divisor": "n"}
    ),
}


def _table(name):
    path, scale, kw = TABLES[name]
    data = _golden.load_json("ncti.json")
    for key in path:
        data = data[key]
    return data, scale, kw


def _golden_params(tables):
    if not _golden.available():
        return [pytest.param(None, marks=pytest.mark.skip(reason=_golden.MISSING))]
    params = []
    for name in tables:
        data, _, _ = _table(name)
        entries = [(case, None, v) for case, v in data["cases"].items()]
        entries += [("hub", model, v) for model, v in data["hub"].items()]
        for case, model, expected in entries:
            ident = f"{name}-{case}" + (f"-{model}" if model else "")
            marks = [pytest.mark.skip(reason="reference gives null")] if expected is None else []
            params.append(pytest.param((name, case, model, expected), id=ident, marks=marks))
    return params


def _features(case, model, scale):
    """Golden features (x ``scale``) and the ``width=`` option; the hub's models are zero-padded
    to the widest (200 columns) with ``width`` set, as the hub scores them (one compilation)."""
    f, y, data = _golden.load_input(case, model)
    f = np.asarray(f, np.float64) * scale
    if model is None:
        return f, y, {}
    wide = max(data[m].shape[1] for m in data.files if m.startswith("model"))
    return np.pad(f, ((0, 0), (0, wide - f.shape[1]))), y, {"width": f.shape[1]}


@pytest.mark.parametrize("case", _golden_params(["deterministic", "eigen_branch"]))
def test_golden_terms(case, precision):
    table, name, model, expected = case
    _, scale, kw = _table(table)
    f, y, pad = _features(name, model, scale)
    got = tj.ncti_terms(f, y, **kw, **pad)
    for t in TERMS:
        _golden.check(got[t], expected[t], err_msg=t)


@pytest.mark.parametrize("case", _golden_params(["sklearn_1.9.1_deterministic"]))
def test_golden_terms_sklearn_1_9_divisor(case):
    table, name, model, expected = case
    _, scale, kw = _table(table)
    f, y, pad = _features(name, model, scale)
    with jax.enable_x64(True):  # the divisor is traced: this reuses the float64 compilations
        got = tj.ncti_terms(f, y, **kw, **pad)
    for t in TERMS:
        np.testing.assert_allclose(float(got[t]), expected[t], rtol=GOLDEN_RTOL[jnp.float64])


@pytest.mark.skipif(not _golden.available(), reason=_golden.MISSING)
@pytest.mark.parametrize("table", ["deterministic", "eigen_branch"])
def test_golden_pooled_hub_score(table, precision):
    data, scale, kw = _table(table)
    expected = data["hub"]
    weights = tj.get_metric("ncti").pool_weights
    terms = {}
    for model in expected:
        f, y, pad = _features("hub", model, scale)
        terms[model] = {t: float(v) for t, v in tj.ncti_terms(f, y, **kw, **pad).items()}
    pooled = tj.pooling.combine_min_max(terms, weights)
    got = np.array([pooled[m] for m in expected])
    want = np.array([expected[m]["score"] for m in expected])
    # scores lie in [-1, 2]; the float32 terms carry ~1e-5 relative error into the min-max
    np.testing.assert_allclose(got, want, atol=1e-4 if precision == "float32" else 1e-9)


def test_registration():
    info = tj.get_metric("ncti")
    assert info.fn is tj.ncti_terms
    assert dict(info.pool_weights) == {"ncc": 1.0, "seli": 1.0, "vc": -1.0}


def _hand_case(a, delta):
    """Two classes of two points on a line: x = (-a-δ, -a+δ, a-δ, a+δ), labels (0, 0, 1, 1)."""
    x = np.array([[-a - delta], [-a + delta], [a - delta], [a + delta]])
    return x, np.array([0, 0, 1, 1])


def _hand_terms(x, log_odds_per_x, seli):
    """Terms of a two-class posterior with log-odds ``c·x``; each 2×2 class block P_c has
    ``‖P_c‖_* = sqrt(‖P_c‖_F² + 2|det P_c|)``."""
    x = x[:, 0]
    p1 = 1 / (1 + np.exp(-log_odds_per_x * x))
    p = np.stack([1 - p1, p1], 1)
    y = np.array([0, 0, 1, 1])
    ncc = p[np.arange(4), y].mean()
    nuc = sum(math.sqrt(np.sum(b * b) + 2 * abs(np.linalg.det(b))) for b in (p[:2], p[2:]))
    return {"seli": seli, "ncc": ncc, "vc": math.log(nuc)}


@pytest.mark.parametrize("divisor", ["n-c", "n"])
def test_hand_case_svd_branch(divisor):
    # a = δ = 3: x = (-6, 0, 0, 6), PCA variance 72/3 = 24 >= ln 1e10: the pooled-covariance LDA.
    # Class means ∓3, residuals ±3, within variance 36/(n - c) = 18 (or 36/n = 9 for "n"), so
    # the posterior log-odds are x·6/18 = x/3 (x·6/9) and the LDA coordinate is x/sqrt(18)
    # (x/3): seli = ‖x‖/sqrt(18) = 2 (‖x‖/3 = 2·sqrt(2)).
    x, y = _hand_case(3.0, 3.0)
    slope, seli = (1 / 3, 2.0) if divisor == "n-c" else (2 / 3, 2 * math.sqrt(2))
    want = _hand_terms(x, slope, seli)
    with jax.enable_x64(True):
        got = tj.ncti_terms(x, y, lda_divisor=divisor)
    for t in TERMS:
        np.testing.assert_allclose(float(got[t]), want[t], rtol=1e-12, err_msg=t)


def test_hand_case_eigen_branch():
    # x = (-0.6, 0, 0, 0.6): variance 0.24, shrinkage t = exp(-0.24), which in one dimension
    # leaves both covariances unchanged (tr/k = the variance itself). The within variance is
    # 0.36/n = 0.09: log-odds x·0.6/0.09, coordinate x/0.3, seli = ‖x‖/0.3 = 2·sqrt(2).
    x, y = _hand_case(0.3, 0.3)
    want = _hand_terms(x, 0.6 / 0.09, 2 * math.sqrt(2))
    with jax.enable_x64(True):
        got = tj.ncti_terms(x, y)
    for t in TERMS:
        np.testing.assert_allclose(float(got[t]), want[t], rtol=1e-12, err_msg=t)


def _data(seed=0, sep=0.8, scale=1.0):
    """Synthetic data of c1_small's shape (300×32, 5 classes): it shares that case's compilation."""
    n, d, c = 300, 32, 5
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
    f = (sep * rng.normal(size=(c, d))[y] + rng.normal(size=(n, d))) * scale
    return f.astype(np.float32), y


def test_svd_branch_is_scale_invariant_and_eigen_branch_is_not():
    f, y = _data()  # top-32 variance sum ~ 32·1.6 > ln 1e10: svd branch, also at 2x
    a, b = tj.ncti_terms(f, y), tj.ncti_terms(2 * f, y)
    for t in TERMS:
        np.testing.assert_allclose(a[t], b[t], rtol=1e-4, err_msg=t)
    small = tj.ncti_terms(0.1 * f, y)  # sum ~ 0.5: eigen branch with shrinkage ~ 0.6
    assert abs(float(small["seli"]) - float(a["seli"])) > 1e-2 * float(a["seli"])


def test_absent_class_is_left_out():
    f, y = _data()
    sparse = np.where(y == 4, 5, y)  # labels 0..3 and 5 of num_classes=6: class 4 is empty
    a, b = tj.ncti_terms(f, y), tj.ncti_terms(f, sparse, num_classes=6)
    for t in TERMS:
        np.testing.assert_allclose(a[t], b[t], rtol=1e-5, err_msg=t)


def test_components_clamped_to_the_data():
    # n_components above min(n, d) = 32 is the reference's error; here it is clamped to 32.
    f, y = _data()
    a = tj.ncti_terms(f, y)
    for k in (32, 1000):
        b = tj.ncti_terms(f, y, n_components=k)
        for t in TERMS:
            np.testing.assert_allclose(a[t], b[t], rtol=1e-6, err_msg=t)


def test_constant_features_give_the_chance_posterior():
    f, y = _data()
    f = np.full_like(f, 2.5)
    got = tj.ncti_terms(f, y)
    prior = np.bincount(y) / len(y)
    assert float(got["seli"]) == 0.0
    np.testing.assert_allclose(got["ncc"], np.sum(prior**2), rtol=1e-6)
    # every block is n_c copies of the prior row: nuclear norm sqrt(n_c)·‖π‖
    nuc = np.sum(np.sqrt(np.bincount(y))) * np.linalg.norm(prior)
    np.testing.assert_allclose(got["vc"], np.log(nuc), rtol=1e-6)


@pytest.mark.parametrize("scale", [10.0, 0.01])  # svd and eigen branch
def test_collapsed_classes_are_finite(scale):
    # every class a single point: no within-class spread; the reference fails on it
    f, y = _data()
    f = (scale * np.random.default_rng(0).normal(size=(5, f.shape[1]))[y]).astype(np.float32)
    got = tj.ncti_terms(f, y)
    assert float(got["seli"]) == 0.0
    prior = np.bincount(y) / len(y)
    np.testing.assert_allclose(got["ncc"], np.sum(prior**2), rtol=1e-6)


def test_more_samples_than_classes_required():
    f = np.random.default_rng(0).normal(size=(4, 3))
    with pytest.raises(ValueError, match="ncti_terms: needs more samples than classes"):
        tj.ncti_terms(f, np.arange(4))
    with pytest.raises(ValueError, match="ncti_terms: needs more samples than classes"):
        tj.ncti_terms(f, np.array([0, 1, 5, 6]), num_classes=8)


def test_option_errors():
    f, y = _data()
    with pytest.raises(ValueError, match="ncti_terms: lda_divisor"):
        tj.ncti_terms(f, y, lda_divisor="n-1")
    with pytest.raises(ValueError, match="ncti_terms: n_components"):
        tj.ncti_terms(f, y, n_components=0)
    with pytest.raises(TypeError, match="ncti_terms: n_components"):
        tj.ncti_terms(f, y, n_components=2.5)
    with pytest.raises(TypeError, match="ncti_terms"):
        tj.ncti_terms(f, y.astype(np.float32))
