"""Golden hub parity through :func:`transferjax.score_hub`: the five hub models of the golden
inputs (widths 16..200 over the same 600 samples) scored in one bucketed, vmapped call must equal
the reference's value for each model. This is both the parity test of the ``hub`` entries and the
padding contract on real data (one compile per bucket instead of one per model).
"""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from transferjax.registry import METRICS

from . import _golden
from ._tol import GOLDEN_RTOL

# metric -> (golden file, rtol table, atol); default: "<metric>.json", GOLDEN_RTOL, 0.
FILES = {"shrinkage_hscore": "hscore_reg.json"}
TOLERANCE = {"gbc": ({jnp.float32: 1e-3, jnp.float64: 1e-4}, 1e-6)}  # as tests/metrics/test_gbc.py
# Golden hub values made with other protocols, checked in their own test files: NLEEP's are
# seeded (a band), TTA's hub entries need a source task, pool-relative metrics pool the hub.
# alpha_req.json holds the raw exponent (tests/metrics/test_rankme.py scores the hub for it).
# pactran.json's cases are the reference's capped, lower-is-better bound (test_pactran.py checks
# the converged target, hub included).
ELSEWHERE = {"nleep", "tta", "alpha_req", "pactran"}


def _hub_metrics():
    if not _golden.available():
        return [pytest.param(None, marks=pytest.mark.skip(reason=_golden.MISSING))]
    out = []
    for name, info in sorted(METRICS.items()):
        if info.inputs != "features" or name in ELSEWHERE or info.pool_weights is not None:
            continue
        path = _golden.GOLDEN_DIR / FILES.get(name, f"{name}.json")
        if path.exists() and isinstance(_golden.load_json(path.name)["cases"].get("hub"), dict):
            out.append(name)
    return out


@pytest.mark.parametrize("metric", _hub_metrics())
def test_golden_hub_through_score_hub(metric, precision):
    expected = _golden.load_json(FILES.get(metric, f"{metric}.json"))["cases"]["hub"]
    table, atol = TOLERANCE.get(metric, (GOLDEN_RTOL, 0.0))
    _golden.check_hub(metric, expected, table=table, atol=atol)
