"""Access to ../shared/golden: reference outputs and their fixed inputs, and the parity checks.

Every case listed in a golden JSON becomes a test parameter (held-out files with more cases are
picked up as they are). Where the folder is absent the parameters are skipped with the reason.
A metric's test file declares its cases (:func:`cases`, :func:`variant_cases`) and checks each
with :func:`check_parity`; hub members go through one bucketed ``score_hub`` call
(:func:`check_hub`: one compilation per bucket instead of one per model).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import transferjax as tj
from transferjax.registry import METRICS

from ._tol import GOLDEN_RTOL, rtol

GOLDEN_DIR = Path(
    os.environ.get(
        "TRANSFERJAX_GOLDEN", Path(__file__).resolve().parents[1].parent / "shared" / "golden"
    )
)
MISSING = f"golden folder {GOLDEN_DIR} is absent (needs ../shared/golden beside the checkout)"


def available() -> bool:
    return GOLDEN_DIR.is_dir()


def load_json(name: str) -> dict:
    return json.loads((GOLDEN_DIR / name).read_text())


def cases(name: str, *, include_hub: bool = True):
    """``pytest.param((case, model, expected))`` for every case of ``<name>``.

    ``model`` is ``None`` for ordinary cases and the model key for the ``hub`` entries. Cases whose
    expected value is ``null`` (the reference fails there) are skipped, with the reason.
    """
    if not available():
        return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING), id="no-golden")]
    data = load_json(name)["cases"]
    params = []
    for case, value in data.items():
        if isinstance(value, dict):
            if not include_hub:
                continue
            for model, v in value.items():
                params.append(_param((case, model, v), f"{case}-{model}"))
        else:
            params.append(_param((case, None, value), case))
    return params


def _param(values, ident):
    if values[-1] is None:
        return pytest.param(values, id=ident, marks=pytest.mark.skip(reason="reference gives null"))
    return pytest.param(values, id=ident)


def load_input(case: str, model: str | None = None):
    """``(features, labels, npz)`` of a golden input (``model`` selects a hub member)."""
    data = np.load(GOLDEN_DIR / "inputs" / f"{case}.npz")
    feats = data[model] if model is not None else data["features"]
    return feats, data["labels"], data


def variant_cases(name: str, variants=None, *, include_hub: bool = True, only=None):
    """``pytest.param((variant, case, model, expected))`` for the ``variants`` of ``<name>``.

    ``variants``: the variant names to take (default: all, in file order); ``only``: the case
    names to take (default: all); ``include_hub=False`` leaves out the hub members (check them
    with :func:`check_hub`). A variant's cases sit under ``"cases"`` or directly under its name.
    Null expected values are skipped with the reason, as in :func:`cases`.
    """
    if not available():
        return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING), id="no-golden")]
    table = load_json(name).get("variants", {})
    params = []
    for variant in table if variants is None else variants:
        values = table[variant]
        values = values.get("cases", values)
        for case, v in values.items():
            if only is not None and case not in only:
                continue
            if isinstance(v, dict):
                if not include_hub:
                    continue
                items = v.items()
            else:
                items = [(None, v)]
            for model, expected in items:
                ident = f"{variant}-{case}" + (f"-{model}" if model else "")
                params.append(_param((variant, case, model, expected), ident))
    return params


def hub_variants(name: str, variants=None):
    """The variant names of ``<name>`` (default: all) whose ``hub`` entry is a dict of models."""
    if not available():
        return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING), id="no-golden")]
    table = load_json(name).get("variants", {})
    out = []
    for variant in table if variants is None else variants:
        values = table[variant]
        if isinstance(values.get("cases", values).get("hub"), dict):
            out.append(variant)
    return out


def compute_dtype():
    """The dtype a default call computes in: float64 under ``jax.enable_x64``, else float32."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def check(got, expected, *, table=GOLDEN_RTOL, atol: float = 0.0, err_msg: str = ""):
    """``got`` is a scalar of the compute dtype and equals the reference's ``expected`` to the
    ``table``'s rtol for that dtype (``_tol.GOLDEN_RTOL`` unless the metric's spec says otherwise)
    plus ``atol``."""
    dt = compute_dtype()
    assert got.dtype == dt, f"{err_msg}: {got.dtype} is not {jnp.dtype(dt)}"
    np.testing.assert_allclose(
        float(got), expected, rtol=rtol(table, dt), atol=atol, err_msg=err_msg
    )


def check_parity(metric_fn, case, *, inputs=None, table=GOLDEN_RTOL, atol: float = 0.0, **options):
    """One golden case ``(case, model, expected)`` (a parameter of :func:`cases`): the score
    ``metric_fn(*args, **options)`` passes :func:`check`. ``args`` is ``(features, labels)``, or
    ``inputs(features, labels, npz)`` for metrics reading another array of the input file."""
    name, model, expected = case
    feats, labels, data = load_input(name, model)
    args = (feats, labels) if inputs is None else inputs(feats, labels, data)
    label = name if model is None else f"{name}-{model}"
    check(metric_fn(*args, **options), expected, table=table, atol=atol, err_msg=label)


def check_hub(
    metric: str,
    expected: dict,
    *,
    table=GOLDEN_RTOL,
    atol: float = 0.0,
    max_buckets: int = 2,
    **options,
):
    """The golden hub's models, ``expected = {model: value}`` (null values left out), scored by
    one bucketed, vmapped :func:`transferjax.score_hub` call with ``options``: each passes
    :func:`check`. This is also the padding contract on real data."""
    data = np.load(GOLDEN_DIR / "inputs" / "hub.npz")
    models = [m for m, v in expected.items() if v is not None]
    assert models, f"{metric}: no hub model has a reference value"
    labels = data["labels"] if METRICS[metric].uses_labels else None
    scores = tj.score_hub(
        metric, {m: data[m] for m in models}, labels, max_buckets=max_buckets, **options
    )
    for m in models:
        check(scores[m], expected[m], table=table, atol=atol, err_msg=f"{metric} {m}")
