"""RankMe and α-ReQ: golden parity, hand-checkable spectra, the fit-size limit, streaming."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import transferjax as tj
from tests import _golden
from tests._tol import GOLDEN_RTOL, PAD_RTOL, rtol
from transferjax.registry import METRICS


def _alpha_golden():
    data = _golden.load_json("alpha_req.json")
    variants = data["variants"]
    return data["cases"], variants["float64"]["cases"], variants["fit_range_clipped"]


def _lookup(table, case, model):
    v = table.get(case)
    return v.get(model) if isinstance(v, dict) else v


@pytest.mark.parametrize("case", _golden.cases("rankme.json"))
def test_golden_rankme_and_alpha(case, precision):
    """Both scores from one spectrum per golden case; float64 against the float64 variants.

    Spectra shorter than 100 (where reptrix's α fails) are checked against its fit over the
    clipped range ``10..min(100, m)−1`` instead (``c5``'s clipped value is float32 null-space
    round-off in the reference, so only its RankMe is checked).
    """
    name, model, expected = case
    f, _, _ = _golden.load_input(name, model)
    default, default64, clipped = _alpha_golden()
    x64 = precision == "float64"
    if x64:
        expected = _lookup(_golden.load_json("rankme.json")["variants"]["float64"]["cases"],
                           name, model)
    size = min(f.shape)
    if size >= 100:
        out = tj.rankme_and_alpha(f)
        want_alpha = _lookup(default64 if x64 else default, name, model)
    else:
        out = tj.rankme_and_alpha(f, fit_range=(10, size))
        want_alpha = None if name.startswith("c5") else _lookup(clipped["cases"], name, model)
    dt = jnp.float64 if x64 else jnp.float32
    assert out["rankme"].dtype == dt and out["alpha"].dtype == dt
    tol = rtol(GOLDEN_RTOL, dt)
    np.testing.assert_allclose(float(out["rankme"]), expected, rtol=tol)
    if want_alpha is not None:
        # the clipped variant was computed from the float32 spectrum: float32-level agreement
        a_tol = tol if size >= 100 else rtol(GOLDEN_RTOL, jnp.float32) / 100
        np.testing.assert_allclose(float(out["alpha"]), want_alpha, rtol=a_tol)


def test_golden_hub_alpha_through_score_hub():
    """The hub's two models wide enough for the fit, as one padded vmapped call: with
    ``alpha0=0`` the registered score is ``−α``."""
    if not _golden.available():
        pytest.skip(_golden.MISSING)
    _, _, data = _golden.load_input("hub", "model3")
    want = _golden.load_json("alpha_req.json")["cases"]["hub"]
    hub = {m: data[m] for m in ("model3", "model4")}
    got = tj.score_hub("alpha_req", hub, None, alpha0=0.0, max_buckets=1)
    for m in hub:
        np.testing.assert_allclose(-float(got[m]), want[m], rtol=1e-4, err_msg=m)


def _orthogonal(variances):
    """Features ``[2d, d]`` whose centred scatter is exactly ``diag(variances)``: rows ±s_r e_r."""
    s = np.sqrt(np.asarray(variances, np.float64) / 2.0)
    return np.concatenate([np.diag(s), -np.diag(s)])


def test_rankme_by_hand():
    f = _orthogonal([8.0, 2.0])  # normalised spectrum (0.8, 0.2)
    p = np.array([0.8, 0.2]) + 1e-7
    np.testing.assert_allclose(float(tj.rankme(f)), np.exp(-np.sum(p * np.log(p))), rtol=1e-6)
    # A flat spectrum of d values scores d (up to the 1e-7 smoothing)
    np.testing.assert_allclose(float(tj.rankme(_orthogonal(np.ones(5)))), 5.0, rtol=1e-5)


def test_alpha_of_an_exact_power_law():
    r = np.arange(1, 121)
    for a in (0.5, 1.0, 2.0):
        f = _orthogonal(r ** -a)
        np.testing.assert_allclose(float(tj.alpha_req_exponent(f)), a, rtol=1e-5)
        np.testing.assert_allclose(float(tj.alpha_req(f)), -abs(a - 1.0), atol=1e-5)
        np.testing.assert_allclose(float(tj.alpha_req(f, alpha0=a)), 0.0, atol=1e-5)


def test_alpha_needs_100_eigenvalues():
    f = np.random.default_rng(0).normal(size=(150, 99)).astype(np.float32)
    for fn in (tj.alpha_req, tj.alpha_req_exponent, tj.rankme_and_alpha):
        with pytest.raises(ValueError, match=rf"{fn.__name__}: .*min\(n, d\) >= 100"):
            fn(f)
        with pytest.raises(ValueError, match=fn.__name__):
            fn(f.T[:, :120])  # 99 samples
        with pytest.raises(ValueError, match=fn.__name__):
            fn(np.pad(f, ((0, 0), (0, 20))), width=99)
    with pytest.raises(ValueError, match="alpha_req: .*fit_range"):
        tj.alpha_req(f, fit_range=(10, 11))
    tj.rankme(f)  # RankMe has no such limit


def test_padded_traced_width_and_stats_equal_the_plain_call():
    """Zero padding with a traced width (the hub's layout), and the streamed statistics, give
    the plain call's RankMe and α; a traced width below the fit range gives NaN (documented)."""
    rng = np.random.default_rng(1)
    f = (rng.normal(size=(140, 110)) * np.arange(1, 111) ** -0.6).astype(np.float32)
    with jax.enable_x64(True):
        f = f.astype(np.float64)
        plain = tj.rankme_and_alpha(f)
        padded = np.pad(f, ((0, 0), (0, 40)))  # 150 columns > n: the n×n side
        fn = jax.jit(lambda x, w: tj.rankme_and_alpha(x, width=w, check_inputs=False))
        for k in plain:
            np.testing.assert_allclose(
                fn(padded, 110)[k], plain[k], rtol=rtol(PAD_RTOL, jnp.float64)
            )
        assert np.isnan(float(fn(padded, 99)["alpha"]))
        st = tj.feature_stats(jnp.asarray(f))
        streamed = tj.rankme_and_alpha(stats=st)
        for k in plain:
            np.testing.assert_allclose(streamed[k], plain[k], rtol=1e-9)
        with pytest.raises(ValueError, match="rankme: pass either features or stats="):
            tj.rankme(f, stats=st)
        with pytest.raises(ValueError, match="alpha_req: .*min"):
            tj.alpha_req(stats=tj.feature_stats(jnp.asarray(f[:99])))


def test_degenerate_spectra_stay_finite():
    f = np.ones((120, 110), np.float32)  # constant: zero spectrum (the reference divides by 0)
    np.testing.assert_allclose(float(tj.rankme(f)), np.exp(110 * 1e-7 * np.log(1e7)), rtol=1e-6)
    assert abs(float(tj.alpha_req_exponent(f))) < 1e-6
    rng = np.random.default_rng(2)
    low = rng.normal(size=(120, 3)) @ rng.normal(size=(3, 110))  # rank 3 < 100
    a = float(tj.alpha_req_exponent(low.astype(np.float32)))
    assert np.isfinite(a) and a > 0


def test_registered_label_free():
    for name, fn in (("rankme", tj.rankme), ("alpha_req", tj.alpha_req)):
        info = METRICS[name]
        assert info.fn is fn and not info.uses_labels and info.streams and info.higher_is_better
