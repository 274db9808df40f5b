import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import transferjax as tj
from tests import _golden
from transferjax.metrics import parc as parc_module

VARIANT = "pca32_full_vsign"  # exact PCA to min(32, n, d), largest loading positive
# n > d, n < d (the kernel-side PCA), constant pixel columns; the hub test adds 5 more widths
VARIANT_CASES = ("c1_small", "c3_wide", "c5_digits_pixels")


def _spearman_parc(f, y, decimals=None):
    """The definition, literally: np.corrcoef of standardised rows, Spearman over all pairs
    (``decimals``: round the dissimilarities first, so that equal values are exactly tied)."""
    x = np.asarray(f, np.float64)
    sd = x.std(0)
    sd[sd == 0] = 1.0
    d = 1.0 - np.corrcoef((x - x.mean(0)) / sd)
    if decimals is not None:
        d = np.round(d, decimals)
    upper = np.triu_indices(len(y), 1)
    label = (y[upper[0]] != y[upper[1]]).astype(float)
    return 100.0 * scipy.stats.spearmanr(d[upper], label).statistic


def _data(n=40, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)].astype(np.int32)
    f = rng.normal(size=(n, d)) + rng.normal(size=(c, d))[y]
    return f.astype(np.float32), y


# hub: tests/test_golden_hub.py (through score_hub)
@pytest.mark.parametrize("case", _golden.cases("parc.json", include_hub=False))
def test_golden_parc(case, precision):
    _golden.check_parity(tj.parc, case)


@pytest.mark.parametrize(
    "case", _golden.variant_cases("parc.json", [VARIANT], include_hub=False, only=VARIANT_CASES)
)
def test_golden_parc_pca(case):
    # float64 (the reference's exact PCA); float32 is covered by the hub test below
    _, name, model, expected = case
    with jax.enable_x64(True):
        _golden.check_parity(tj.parc, (name, model, expected), dims=32)


@pytest.mark.skipif(not _golden.available(), reason=_golden.MISSING)
def test_golden_parc_pca_hub():
    # float32, widths 16..200 padded and vmapped; model0 (d = 16 < 32) keeps its 16 components
    expected = _golden.load_json("parc.json")["variants"][VARIANT]["cases"]["hub"]
    _golden.check_hub("parc", expected, dims=32)


def test_hand_case_perfect_separation():
    # Two tight, far-apart clusters of two: the 2 same-class pairs have the 2 smallest
    # dissimilarities, the 4 cross pairs are distinct and larger. Spearman of the ranks 1..6 with
    # the labels (0, 0, 1, 1, 1, 1) is √(24/35).
    f = np.array([[3.0, 0, 0], [3.1, 0.2, 0], [0, 3, 0.1], [0.3, 3, 0]])
    y = np.array([0, 0, 1, 1])
    with jax.enable_x64(True):
        np.testing.assert_allclose(float(tj.parc(f, y)), 100 * np.sqrt(24 / 35), rtol=1e-12)
        np.testing.assert_allclose(float(tj.parc(f, y)), _spearman_parc(f, y), rtol=1e-12)


# The float64 checks against the definition share one shape (one compilation).
@pytest.mark.parametrize("kind", ["plain", "ties", "constant columns"])
def test_matches_spearman_definition(kind):
    f, y = _data(seed=3)
    decimals = None
    if kind == "ties":  # few distinct values: large tie groups, equal up to rounding anywhere
        f = np.round(f).clip(-1, 1)
        decimals = 12
    if kind == "constant columns":  # unlike zero padding, they count in each row's mean
        f[:, 3:] = np.float32(2.5)
    with jax.enable_x64(True):
        want = _spearman_parc(f, y, decimals)
        np.testing.assert_allclose(float(tj.parc(f, y)), want, rtol=1e-10)


def test_tiles_count_every_pair_once():
    # The tiled route (3 blocks of 14, the last clamped to start at 26, owned index ranges)
    # against the one-tile route: equal up to the binning of the dissimilarities (the one-tile
    # route orders pairs within a bin exactly, a miscounted pair would move the score ~1e-3).
    f, y = _data(seed=4)
    with jax.enable_x64(True):
        x, yy = jnp.asarray(f, jnp.float64), jnp.asarray(y)
        tiled = parc_module._parc(x, yy, 6, dims=None, block=16)
        whole = parc_module._parc(x, yy, 6, dims=None, block=1024)
        np.testing.assert_allclose(float(tiled), float(whole), rtol=1e-7)
        np.testing.assert_allclose(float(whole), _spearman_parc(f, y), rtol=1e-10)


def test_width_padding_with_pca():
    # Zero-padded columns (without `dims`: the contract tests; a width below `dims`: the hub
    # golden test): the PCA keeps min(dims, n, width) components, the row mean divides by that
    f, y = _data(seed=5)
    padded = np.c_[f, np.zeros((40, 10), np.float32)]
    with jax.enable_x64(True):
        want = float(tj.parc(f, y, dims=4))
        np.testing.assert_allclose(float(tj.parc(padded, y, dims=4, width=6)), want, rtol=1e-9)


def test_edge_cases_are_finite_and_documented():
    y = np.array([0, 1])
    assert float(tj.parc(np.array([[0.0, 1.0], [1.0, 3.0]]), y)) == 0.0  # n = 2: one pair
    f, y = _data(d=1)
    assert float(tj.parc(f, y)) == 0.0  # d = 1: every row is constant after centring
    f, y = _data()
    f[3] = f.mean(0)  # standardised row of zeros: correlation 0 with everything
    assert np.isfinite(float(tj.parc(f, y)))


def test_better_features_score_higher():
    rng = np.random.default_rng(1)
    y = np.arange(40) % 4
    good = (rng.normal(size=(40, 6)) + 3 * np.eye(4, 6)[y]).astype(np.float32)
    bad = rng.normal(size=(40, 6)).astype(np.float32)
    assert tj.parc(good, y) > tj.parc(bad, y)


@pytest.mark.parametrize(
    "kwargs, labels, err, match",
    [
        ({}, np.linspace(0, 1, 12), TypeError, "no regression form"),
        ({}, np.zeros(12, int), ValueError, "at least 2 classes"),
        ({"dims": 0}, np.arange(12) % 2, ValueError, "dims must be >= 1"),
        ({"dims": 2.5}, np.arange(12) % 2, TypeError, "dims must be a positive int"),
    ],
)
def test_bad_input(kwargs, labels, err, match):
    with pytest.raises(err, match="parc: .*" + match):
        tj.parc(np.random.default_rng(0).normal(size=(12, 3)), labels, **kwargs)


def test_too_many_samples():
    with pytest.raises(ValueError, match="parc: .*at most 65536"):
        tj.parc(np.zeros((65537, 1), np.float32), np.arange(65537) % 2)
