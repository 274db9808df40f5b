import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.spatial

import transferjax as tj
from tests import _golden
from transferjax.metrics import knn as knn_module

VARIANT = "parc_k3_l2"  # the reference at k = 3 (fractional credit when all 3 votes differ)
# c5_digits_pixels has exact distance ties, and at k = 3 one row's vote depends on which tied
# candidate is taken: the reference takes NumPy's (unstable) argsort order, this the lowest index.
TIE_DEPENDENT = {"c5_digits_pixels"}


def _numpy_knn(f, y, k):
    """Brute force: full float64 distance rows, self at +inf, a stable sort, the vote rule."""
    x = np.asarray(f, np.float64)
    dist = scipy.spatial.distance.cdist(x, x)
    np.fill_diagonal(dist, np.inf)
    credit = []
    for i, row in enumerate(np.argsort(dist, axis=1, kind="stable")[:, :k]):
        labels, counts = np.unique(y[row], return_counts=True)  # sorted: ties -> smallest
        if counts.max() >= 2:
            credit.append(float(labels[np.argmax(counts)] == y[i]))
        else:
            credit.append(np.mean(y[row] == y[i]))
    return 100.0 * np.mean(credit)


# hub: tests/test_golden_hub.py (through score_hub)
@pytest.mark.parametrize("case", _golden.cases("knn.json", include_hub=False))
def test_golden_knn(case, precision):
    _golden.check_parity(tj.knn, case)


@pytest.mark.parametrize("case", _golden.variant_cases("knn.json", [VARIANT], include_hub=False))
def test_golden_knn_k3(case):
    _, name, model, expected = case
    if name not in TIE_DEPENDENT:
        _golden.check_parity(tj.knn, (name, model, expected), k=3)
        return
    f, y, _ = _golden.load_input(name)
    got = float(tj.knn(f, y, k=3))
    # one row's credit apart, and equal to the stable-sort baseline
    assert abs(got - expected) <= 100.0 / len(y) + 1e-4
    np.testing.assert_allclose(got, _numpy_knn(f, y, 3), rtol=1e-6)


def test_hand_case_fractional_credit():
    # Points 0..4 on a line, labels (0, 1, 2, 0, 1), k = 3. Sample 0's neighbours 1, 2, 3 carry
    # labels 1, 2, 0 (all different: credit 1/3); likewise sample 4 (3, 2, 1: labels 0, 2, 1).
    # Samples 1, 2, 3 get a two-vote majority for a wrong label. Score 100 · (2/3) / 5.
    f = np.arange(5.0)[:, None]
    y = np.array([0, 1, 2, 0, 1])
    np.testing.assert_allclose(float(tj.knn(f, y, k=3)), 100 * (2 / 3) / 5, rtol=1e-6)
    np.testing.assert_allclose(float(tj.knn(f, y, k=3)), _numpy_knn(f, y, 3), rtol=1e-6)


def test_distance_ties_go_to_the_lower_index():
    # Sample 0 has samples 1 and 2 at distance 1: sample 1 (label 0) is taken, so sample 0 is
    # wrong; sample 1's nearest is 0 (wrong), sample 2's is 0 (right).
    f = np.array([[0.0], [-1.0], [1.0]])
    np.testing.assert_allclose(float(tj.knn(f, np.array([1, 0, 1]))), 100 / 3, rtol=1e-6)
    np.testing.assert_allclose(float(tj.knn(f, np.array([1, 1, 0]))), 200 / 3, rtol=1e-6)


def test_duplicates_are_neighbours_not_self():
    # Samples 0 and 1 coincide: each is the other's nearest neighbour (distance 0), never itself.
    f = np.array([[0.0], [0.0], [5.0], [5.5]])
    np.testing.assert_allclose(float(tj.knn(f, np.array([0, 1, 1, 1]))), 50.0)


@pytest.mark.parametrize("k", [1, 3])
def test_tiles_equal_one_block_and_numpy(k):
    # Integer features: many exact distance ties. The tiled route (4 blocks of 13, the last
    # clamped, candidates merged across tiles) gives the same neighbours as one tile and as a
    # stable sort of full distance rows.
    rng = np.random.default_rng(k)
    f = rng.integers(0, 3, size=(50, 4)).astype(np.float32)
    y = rng.integers(0, 4, size=50).astype(np.int32)
    x, yy = jnp.asarray(f), jnp.asarray(y)
    tiled = float(knn_module._knn(x, yy, k=k, block=16))
    whole = float(knn_module._knn(x, yy, k=k, block=1024))
    assert tiled == whole
    np.testing.assert_allclose(whole, _numpy_knn(f, y, k), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, labels, err, match",
    [
        ({"k": 12}, np.arange(12) % 2, ValueError, "k=12 nearest neighbours need at least"),
        ({"k": 0}, np.arange(12) % 2, ValueError, "k must be >= 1"),
        ({"k": 1.0}, np.arange(12) % 2, TypeError, "k must be a positive int"),
        ({}, np.linspace(0, 1, 12), TypeError, "no regression form"),
    ],
)
def test_bad_input(kwargs, labels, err, match):
    with pytest.raises(err, match="knn: .*" + match):
        tj.knn(np.random.default_rng(0).normal(size=(12, 3)), labels, **kwargs)


def test_largest_k():
    f = np.array([[0.0], [1.0], [3.0]])
    with jax.enable_x64(True):  # k = n − 1: every other sample votes
        np.testing.assert_allclose(float(tj.knn(f, np.array([0, 0, 1]), k=2)), 100 / 3)
