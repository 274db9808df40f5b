"""Pool-relative scores: raw terms per model, min-max normalised across the models ranked together.

ETran and NCTI do not score a model on its own: each model yields a few raw terms, and a model's
score is a weighted sum of its terms after each term is rescaled to ``[0, 1]`` over the pool of
models scored on the same target set. The pool therefore changes the score of every member.
"""

from __future__ import annotations

import warnings
from typing import Mapping

import numpy as np

__all__ = ["combine_min_max", "min_max"]


def min_max(values: Mapping[str, float], *, name: str = "min_max", term: str = "term") -> dict:
    r"""``x̃_m = (x_m − min x) / (max x − min x)`` over the models of ``values``.

    A pool of one model, or a term equal across the pool (the references divide by zero there),
    gives 0 for every model with a ``RuntimeWarning`` naming the term.
    """
    keys = list(values)
    x = np.array([float(values[k]) for k in keys], np.float64)
    if not np.all(np.isfinite(x)):
        bad = [k for k, v in zip(keys, x) if not np.isfinite(v)]
        raise ValueError(f"{name}: term {term!r} is not finite for models {bad}")
    lo, hi = (x.min(), x.max()) if x.size else (0.0, 0.0)
    if x.size < 2 or not hi > lo:
        why = "a pool of one model" if x.size < 2 else "it is equal for every model"
        warnings.warn(
            f"{name}: term {term!r} cannot be min-max normalised ({why}); it counts as 0",
            RuntimeWarning,
            stacklevel=3,
        )
        return {k: 0.0 for k in keys}
    return {k: float((v - lo) / (hi - lo)) for k, v in zip(keys, x)}


def combine_min_max(
    terms: Mapping[str, Mapping[str, float]],
    weights: Mapping[str, float],
    *,
    name: str = "combine_min_max",
) -> dict[str, float]:
    r"""Pooled score ``s_m = Σ_t w_t · x̃_{m,t}`` with each term min-max normalised over the models.

    Args:
      terms: ``{model: {term: raw value}}``; every model carries every weighted term.
      weights: ``{term: weight}`` (ETran: ``lda 0.85, energy 0.15``; NCTI: ``ncc 1, seli 1, vc −1``).
      name: the public function to name in messages.

    Returns:
      ``{model: pooled score}`` as Python floats, in the input order.

    Raises:
      ValueError: an empty pool, a model missing a weighted term, a non-finite term.
    """
    if not terms:
        raise ValueError(f"{name}: the pool of models is empty")
    models = list(terms)
    for m in models:
        missing = [t for t in weights if t not in terms[m]]
        if missing:
            raise ValueError(f"{name}: model {m!r} lacks the terms {missing}")
    out = {m: 0.0 for m in models}
    for t, w in weights.items():
        scaled = min_max({m: terms[m][t] for m in models}, name=name, term=t)
        for m in models:
            out[m] += float(w) * scaled[m]
    return out
