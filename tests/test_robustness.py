"""Every registered metric scores finite, or fails with one clear error, on awkward but real input.

Seeded generators over the registry (a metric registered later is held to the same promises):
extreme scales (1e-30 .. 1e30 in float32), half precision, constant and all-zero columns, N < D,
every class a single sample, mixed column magnitudes. Each case asserts "finite" (and, for
metrics registered ``scale_invariant``, "equal to the unscaled score") or "a ValueError /
TypeError naming the metric". Shapes are few and fixed so each metric compiles a handful of
kernels; the values vary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transferjax.registry import METRICS

# (n, d, c): ordinary, wide (N < D), every class a single sample (C = N).
SHAPES = {"ordinary": (30, 6, 3), "wide": (12, 20, 3), "singletons": (6, 4, 6)}
KEY = jax.random.key(0)
# Inputs other than features carry their own checks (test_contract); here the features side.
FEATURE_METRICS = sorted(m for m, i in METRICS.items() if i.inputs == "features")


def _base(shape, seed):
    n, d, c = SHAPES[shape]
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)].astype(np.int32)
    x = (rng.normal(size=(n, d)) + 1.5 * rng.normal(size=(c, d))[y]).astype(np.float32)
    return x, y


def _variants(x, rng):
    """``(label, features, scale)``: ``scale`` is set where the score must equal the base's."""
    big = x.copy()
    big[:, 0] *= 1e20
    const = x.copy()
    const[:, 0] = 7.0
    yield "scale 1e30", x * np.float32(1e30), 1e30
    yield "scale 1e-30", x * np.float32(1e-30), 1e-30
    yield f"scale {rng.choice([1e-12, 1e12])}", x * np.float32(1e12), 1e12
    yield "float16", x.astype(np.float16), None
    yield "bfloat16", np.asarray(jnp.asarray(x, jnp.bfloat16)), None
    yield "float64", x.astype(np.float64), None
    yield "constant column", const, None
    yield "one column 1e20 larger", big, None
    yield "all zero", np.zeros_like(x), None


def _call(info, x, y):
    kw = {"key": KEY} if info.needs_key else {}
    return info.fn(x, y, **kw) if info.uses_labels else info.fn(x, **kw)


def _finite(out) -> bool:
    return all(np.all(np.isfinite(np.asarray(v, np.float64))) for v in jax.tree.leaves(out))


def _close(a, b, tol=1e-3):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(float(u), float(v), rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("metric", FEATURE_METRICS)
def test_finite_or_one_clear_error(metric, shape):
    info = METRICS[metric]
    failures, cases = [], 0
    for seed in range(2):
        x, y = _base(shape, seed)
        try:
            base = _call(info, x, y)
        except ValueError as err:  # e.g. a metric needing more samples than classes
            assert info.fn.__name__ in str(err), err
            continue
        assert _finite(base), (metric, shape, "base", base)
        for label, xv, scale in _variants(x, np.random.default_rng(seed)):
            cases += 1
            try:
                out = _call(info, xv, y)
            except (ValueError, TypeError) as err:
                if info.fn.__name__ not in str(err):
                    failures.append(f"{label}: error without the function's name: {err}")
                continue
            if not _finite(out):
                failures.append(f"{label}: not finite: {out}")
            elif scale is not None and info.scale_invariant:
                try:
                    _close(out, base)
                except AssertionError as err:
                    failures.append(f"{label}: scale-invariant but changed: {err}")
    assert not failures, f"{metric} [{shape}]:\n" + "\n".join(failures)
    assert cases >= 9 or info.fn.__name__
