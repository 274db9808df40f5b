"""How well do scores rank models? Weighted Kendall τ and friends against fine-tuning accuracies.

The field's protocol (SFDA / PED / ETran lineage): for one target dataset, the scores of the M
models of a hub are compared with their fine-tuned accuracies by ``scipy.stats.weightedtau`` with
its defaults (hyperbolic weigher, additive weights, ties included); papers average τ_w over
datasets. Implemented here in ``jnp`` (O(M²) pair masks, jittable, no SciPy at run time).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ._dtypes import compute_dtype
from ._typing import Array, ArrayLike

__all__ = [
    "weighted_kendall_tau",
    "kendall_tau",
    "pearson",
    "top_k_relative_accuracy",
    "evaluate",
    "compare",
    "static_scores",
    "finetune_accuracy",
]


def _check_pair(name, scores, accuracies, *, min_n=2):
    out = []
    for arg, v in (("scores", scores), ("accuracies", accuracies)):
        a = v if isinstance(v, jax.Array) else np.asarray(v)
        if a.dtype.kind not in "fiu" or a.dtype.kind == "b":
            raise TypeError(f"{name}: {arg} must be real numbers, got dtype {a.dtype}")
        if a.ndim != 1:
            raise ValueError(f"{name}: {arg} must be 1-D (one value per model), got {a.shape}")
        if not isinstance(a, jax.core.Tracer) and not bool(np.isfinite(np.asarray(a)).all()):
            raise ValueError(f"{name}: {arg} contains NaN or inf")
        out.append(a)
    if out[0].shape[0] != out[1].shape[0]:
        raise ValueError(
            f"{name}: scores has {out[0].shape[0]} models but accuracies has {out[1].shape[0]}"
        )
    if out[0].shape[0] < min_n:
        raise ValueError(f"{name}: needs at least {min_n} models, got {out[0].shape[0]}")
    dt = compute_dtype(None)
    return jnp.asarray(out[0], dt), jnp.asarray(out[1], dt)


def _ranks_desc(x: Array, y: Array) -> Array:
    """Rank (0 = most important) sorting by x desc, then y desc, then larger index first."""
    n = x.shape[0]
    idx = jnp.arange(n)
    order = jnp.lexsort((idx, y, x))[::-1]
    return jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))


def _tau_from_weights(x: Array, y: Array, w: Array) -> Array:
    sx = jnp.sign(x[:, None] - x[None, :])
    sy = jnp.sign(y[:, None] - y[None, :])
    upper = jnp.triu(jnp.ones(w.shape, bool), k=1)
    w = jnp.where(upper, w, 0.0)
    num = jnp.sum(w * sx * sy)
    den = jnp.sqrt(jnp.sum(w * (sx != 0)) * jnp.sum(w * (sy != 0)))
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.nan)


@jax.jit
def _weighted_tau(x: Array, y: Array) -> Array:
    def one(a, b):
        inv = 1.0 / (_ranks_desc(a, b).astype(a.dtype) + 1.0)
        return _tau_from_weights(a, b, inv[:, None] + inv[None, :])

    return 0.5 * (one(x, y) + one(y, x))


def weighted_kendall_tau(scores: ArrayLike, accuracies: ArrayLike) -> Array:
    r"""Weighted Kendall τ (Vigna 2015) as ``scipy.stats.weightedtau(scores, accuracies)[0]``.

    With a ranking ρ (0 = best; by score descending, ties by accuracy descending, remaining ties by
    larger index first) and additive hyperbolic weights :math:`w_{ij} = 1/(ρ_i+1) + 1/(ρ_j+1)`,

    .. math::
        τ(ρ) = \frac{\sum_{i<j} w_{ij}\,\mathrm{sgn}(x_i-x_j)\,\mathrm{sgn}(y_i-y_j)}
               {\sqrt{\sum_{i<j} w_{ij}[x_i \ne x_j]\;\sum_{i<j} w_{ij}[y_i \ne y_j]}},

    averaged over the rankings induced by the scores and by the accuracies. Top-ranked models
    weigh most, which is what model selection cares about. NaN when either input is constant
    (as SciPy). Symmetric in its arguments; 1 for identical rankings.

    Args:
      scores: ``[m]`` metric scores (higher = predicted better).
      accuracies: ``[m]`` ground-truth accuracies.

    Returns:
      Scalar τ_w in [-1, 1] (or NaN).

    References:
      Vigna, A Weighted Correlation Index for Rankings with Ties, WWW 2015. The evaluation
      protocol of Shao et al., SFDA, ECCV 2022 (``rank_correlation.w_kendall_metric``).

    Examples:
      >>> import transferjax as tj
      >>> float(tj.weighted_kendall_tau([0.1, 0.5, 0.3], [70.0, 90.0, 80.0]))
      1.0
    """
    x, y = _check_pair("weighted_kendall_tau", scores, accuracies)
    return _weighted_tau(x, y)


@jax.jit
def _kendall(x, y):
    return _tau_from_weights(x, y, jnp.ones((x.shape[0], x.shape[0]), x.dtype))


def kendall_tau(scores: ArrayLike, accuracies: ArrayLike) -> Array:
    r"""Kendall's τ-b (as ``scipy.stats.kendalltau``): concordance of all pairs, ties corrected.

    .. math:: τ_b = \frac{\sum_{i<j}\mathrm{sgn}(x_i-x_j)\mathrm{sgn}(y_i-y_j)}
              {\sqrt{(n_0-n_x)(n_0-n_y)}}

    with ``n_0 = m(m-1)/2`` and ``n_x``, ``n_y`` the pairs tied in each input.

    Examples:
      >>> import transferjax as tj
      >>> float(tj.kendall_tau([1, 2, 3], [3.0, 2.0, 1.0]))
      -1.0
    """
    x, y = _check_pair("kendall_tau", scores, accuracies)
    return _kendall(x, y)


@jax.jit
def _pearson(x, y):
    xc, yc = x - jnp.mean(x), y - jnp.mean(y)
    # scale first so products of tiny deviations do not underflow
    xc = xc / jnp.maximum(jnp.max(jnp.abs(xc)), jnp.finfo(x.dtype).tiny)
    yc = yc / jnp.maximum(jnp.max(jnp.abs(yc)), jnp.finfo(y.dtype).tiny)
    den = jnp.sqrt(jnp.sum(xc * xc) * jnp.sum(yc * yc))
    return jnp.where(den > 0, jnp.sum(xc * yc) / jnp.where(den > 0, den, 1.0), jnp.nan)


def pearson(scores: ArrayLike, accuracies: ArrayLike) -> Array:
    r"""Pearson correlation ``Σ(x-x̄)(y-ȳ) / sqrt(Σ(x-x̄)² Σ(y-ȳ)²)`` (NaN if either is constant).

    Examples:
      >>> import transferjax as tj
      >>> round(float(tj.pearson([1, 2, 3], [2.0, 4.0, 6.0])), 6)
      1.0
    """
    x, y = _check_pair("pearson", scores, accuracies)
    return _pearson(x, y)


def top_k_relative_accuracy(scores: ArrayLike, accuracies: ArrayLike, k: int = 1) -> Array:
    r"""Best accuracy among the ``k`` top-scored models divided by the best accuracy overall.

    .. math:: \mathrm{rel}_k = \max_{m \in \mathrm{top}_k(s)} a_m \,/\, \max_m a_m

    Ties in score are broken by position (a stable sort of the scores, descending: the earlier
    model wins), as the reference's ``rel_k``.

    Examples:
      >>> import transferjax as tj
      >>> round(float(tj.top_k_relative_accuracy([0.9, 0.1, 0.5], [80.0, 100.0, 90.0], k=2)), 6)
      0.9
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"top_k_relative_accuracy: k must be a positive int, got {k!r}")
    x, y = _check_pair("top_k_relative_accuracy", scores, accuracies, min_n=1)
    order = jnp.argsort(-x, stable=True)
    k = min(int(k), x.shape[0])
    return jnp.max(y[order[:k]]) / jnp.max(y)


def _aligned(name, scores_by_model, accuracies_by_model):
    if not isinstance(scores_by_model, Mapping) or not isinstance(accuracies_by_model, Mapping):
        raise TypeError(f"{name}: scores and accuracies must be mappings {{model: value}}")
    missing = sorted(set(scores_by_model) ^ set(accuracies_by_model))
    if missing:
        raise ValueError(f"{name}: models not in both scores and accuracies: {missing}")
    names = list(scores_by_model)
    out = []
    for arg, table in (("scores", scores_by_model), ("accuracies", accuracies_by_model)):
        vals = []
        for m in names:
            v = table[m]
            if isinstance(v, (str, bytes)) or np.ndim(v) != 0:
                raise TypeError(f"{name}: {arg}[{m!r}] must be a real number, got {v!r}")
            try:
                vals.append(float(v))
            except (TypeError, ValueError):
                raise TypeError(f"{name}: {arg}[{m!r}] must be a real number, got {v!r}") from None
        out.append(np.asarray(vals, np.float64))
    return names, out[0], out[1]


def _resamples(m: int, num: int, seed: int) -> np.ndarray:
    """``[num, m]`` model indices drawn with replacement (NumPy's PCG64, seeded)."""
    return np.random.default_rng(seed).integers(0, m, size=(num, m))


@jax.jit
def _boot_taus(x, y, idx):
    return jax.vmap(lambda i: _weighted_tau(x[i], y[i]))(idx)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(v, [(1 - confidence) / 2, (1 + confidence) / 2])
    return (float(lo), float(hi))


def evaluate(
    scores_by_model: Mapping[str, float],
    accuracies_by_model: Mapping[str, float],
    *,
    k: int = 3,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """All the numbers for one hub and dataset, aligning models by name, with intervals.

    Returns ``{"weighted_tau", "kendall_tau", "pearson", "top1_relative_accuracy",
    "top{k}_relative_accuracy", "num_models"}`` as Python floats and, with ``bootstrap > 0``,
    ``"weighted_tau_ci"``, ``"kendall_tau_ci"`` and ``"pearson_ci"``: percentile intervals at
    ``confidence`` over ``bootstrap`` resamples of the models with replacement (seeded, so the
    same call gives the same interval). A resample whose scores or accuracies are all equal has
    no τ and is left out. With a handful of models the interval is wide: that width is the point.

    Raises:
      ValueError: a model scored but without accuracy (or the reverse), named; fewer than two
        models; ``confidence`` outside (0, 1); a negative ``bootstrap``.
      TypeError: a score or accuracy that is not a real number (e.g. ``"90%"``).
    """
    names, s, a = _aligned("evaluate", scores_by_model, accuracies_by_model)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise ValueError(f"evaluate: bootstrap must be an int >= 0, got {bootstrap!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"evaluate: confidence must be in (0, 1), got {confidence!r}")
    out = {
        "weighted_tau": float(weighted_kendall_tau(s, a)),
        "kendall_tau": float(kendall_tau(s, a)),
        "pearson": float(pearson(s, a)),
        "top1_relative_accuracy": float(top_k_relative_accuracy(s, a, 1)),
        f"top{k}_relative_accuracy": float(top_k_relative_accuracy(s, a, k)),
        "num_models": len(names),
    }
    if bootstrap:
        dt = compute_dtype(None)
        x, y = jnp.asarray(s, dt), jnp.asarray(a, dt)
        idx = jnp.asarray(_resamples(len(names), int(bootstrap), seed))
        out["weighted_tau_ci"] = _interval(np.asarray(_boot_taus(x, y, idx)), confidence)
        kt = jax.vmap(lambda i: _kendall(x[i], y[i]))(idx)
        out["kendall_tau_ci"] = _interval(np.asarray(kt), confidence)
        pr = jax.vmap(lambda i: _pearson(x[i], y[i]))(idx)
        out["pearson_ci"] = _interval(np.asarray(pr), confidence)
    return out


def compare(
    scores_a: Mapping[str, float],
    scores_b: Mapping[str, float],
    accuracies: Mapping[str, float],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> float:
    """Paired-bootstrap probability that ranking A's weighted τ beats ranking B's.

    Both rankings are evaluated on the same resamples of the models (with replacement);
    returns the fraction of resamples where ``τ_w(A) > τ_w(B)``, ties counting one half and
    resamples where either τ is undefined left out. 0.5 means the hub cannot tell them apart;
    ``≥ 0.9`` is the usual bar for "A is better here".

    Raises:
      ValueError: the three mappings do not name the same models; fewer than two models.
      TypeError: a value that is not a real number.
    """
    names, sa, acc = _aligned("compare", scores_a, accuracies)
    names_b, sb_in, _ = _aligned("compare", scores_b, accuracies)
    sb = sb_in[[names_b.index(m) for m in names]]
    if len(names) < 2:
        raise ValueError(f"compare: needs at least 2 models, got {len(names)}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 1:
        raise ValueError(f"compare: bootstrap must be an int >= 1, got {bootstrap!r}")
    dt = compute_dtype(None)
    idx = jnp.asarray(_resamples(len(names), int(bootstrap), seed))
    ta = np.asarray(_boot_taus(jnp.asarray(sa, dt), jnp.asarray(acc, dt), idx))
    tb = np.asarray(_boot_taus(jnp.asarray(sb, dt), jnp.asarray(acc, dt), idx))
    ok = np.isfinite(ta) & np.isfinite(tb)
    if not ok.any():
        return float("nan")
    wins = (ta[ok] > tb[ok]).astype(np.float64) + 0.5 * (ta[ok] == tb[ok])
    return float(wins.mean())


def static_scores(table: Mapping[str, Mapping[str, float]], target: str) -> dict[str, float]:
    """The data-free baseline: each model's mean accuracy on the datasets other than ``target``.

    ``table`` is ``{dataset: {model: accuracy}}`` (e.g. ``finetune_accuracy("supervised")``). A
    ranking that looks at no target data at all: models that fine-tune well elsewhere are
    guessed to fine-tune well here. Any transferability metric should be read beside it. Returns
    ``{model: score}`` for the models of ``table[target]`` (a model's mean over the other datasets
    that list it).

    Raises:
      ValueError: ``target`` not in the table; a model of the target listed on no other dataset.
      TypeError: ``table`` is not a mapping of mappings.

    Examples:
      >>> import transferjax as tj
      >>> table = {"a": {"m1": 90.0, "m2": 80.0}, "b": {"m1": 70.0, "m2": 75.0},
      ...          "c": {"m1": 60.0, "m2": 50.0}}
      >>> tj.evaluation.static_scores(table, "a")
      {'m1': 65.0, 'm2': 62.5}
    """
    if not isinstance(table, Mapping) or not all(isinstance(v, Mapping) for v in table.values()):
        raise TypeError("static_scores: table must be {dataset: {model: accuracy}}")
    if target not in table:
        raise ValueError(f"static_scores: target {target!r} not in the table; known: {sorted(table)}")
    out = {}
    for m in table[target]:
        vals = [float(acc[m]) for ds, acc in table.items() if ds != target and m in acc]
        if not vals:
            raise ValueError(f"static_scores: model {m!r} has no accuracy outside {target!r}")
        out[m] = sum(vals) / len(vals)
    return out


def finetune_accuracy(group: str | None = None, dataset: str | None = None):
    """Published fine-tuning accuracies (%), shipped as package data.

    ``group``: ``"supervised"`` (11 torchvision ImageNet models; Shao et al., SFDA, ECCV 2022) or
    ``"self_supervised"``/the JSON's key (12 ResNet-50 self-supervised models; the table of the SFDA
    repository, reused by Li et al., PED, ICCV 2023). With no arguments: the whole table; with a
    group: ``{dataset: {model: acc}}``; with both: ``{model: acc}``.
    """
    data = json.loads(
        (resources.files("transferjax") / "data" / "finetune_accuracy.json").read_text()
    )
    table = data.get("tables", data)
    if group is None:
        return table
    if group not in table:
        raise ValueError(f"finetune_accuracy: unknown group {group!r}; known: {sorted(table)}")
    if dataset is None:
        return table[group]
    if dataset not in table[group]:
        raise ValueError(
            f"finetune_accuracy: unknown dataset {dataset!r}; known: {sorted(table[group])}"
        )
    return dict(table[group][dataset])
