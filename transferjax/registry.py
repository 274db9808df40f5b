"""The one list of metrics: each registered once with the metadata the hub, CLI and evaluation read.

A *features* metric has the signature ``fn(features, labels, *, width=None, num_classes=None,
check_inputs=True, **options) -> scalar`` and works with traced ``features`` and ``width`` (so
:func:`transferjax.score_hub` can ``vmap`` it over zero-padded models). Other input kinds
(``source_probs``, ``source_labels``, ``source_task``) say what they need instead of features.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

__all__ = ["MetricInfo", "register", "get_metric", "metric_names", "METRICS"]

TASKS = ("classification", "regression")
INPUTS = ("features", "source_probs", "source_labels", "source_task")


@dataclasses.dataclass(frozen=True)
class MetricInfo:
    """Metadata of a registered metric.

    Attributes:
      name: registry key (``"logme"``).
      fn: the public function.
      tasks: subset of ``("classification", "regression")``.
      inputs: what the metric reads besides the target labels: ``"features"``, ``"source_probs"``
        (a source model's class probabilities), ``"source_labels"`` or ``"source_task"``.
      higher_is_better: orientation of ``fn``'s value (the hub and evaluation negate if False).
      needs_key: the metric takes a PRNG ``key=`` (e.g. a seeded mixture model).
      summary: one line for tables and ``--help``.
      paper: short citation.
      label_options: optional ``f(labels: np.ndarray) -> dict`` of static options derived from
        the concrete labels, which a caller that traces the labels (``score_hub``) passes
        explicitly (e.g. TransRate's block size, the largest class).
      features_options: optional ``f(padded: np.ndarray [m, n, d], options: dict, *,
        batch_size: int | None) -> dict`` of static options derived from the concrete,
        zero-padded features of the models that ``score_hub`` scores in one compiled call (e.g.
        NLEEP's mixture dimension, the largest PCA rank); ``batch_size`` is the hub's chunk of
        models (``None``: all ``m`` at once), which the hook honours to bound its memory like
        the kernel; options the caller passes win.
      uses_labels: ``False`` for label-free metrics (RankMe, α-ReQ): ``fn(features, *, width=None,
        check_inputs=True, **options)``; the hub and the CLI then need no labels.
      pool_weights: pool-relative metrics (ETran, NCTI) return a dict of raw terms per model; the
        hub min-max normalises each term across the models ranked together and sums them with these
        weights (:func:`transferjax.pooling.combine_min_max`).
      streams: the metric accepts ``stats=`` (sufficient statistics) in place of the data.
      scale_invariant: multiplying the features by a constant leaves the score unchanged in exact
        arithmetic (checked at extreme scales by the robustness tests).
      min_dim: the smallest ``min(n, d)`` the metric accepts: an int, or ``f(options) -> int``
        when an option sets it (α-ReQ's fit range). ``score_hub`` checks it for every candidate
        before anything is traced (a traced width cannot raise).
    """

    name: str
    fn: Callable
    tasks: tuple[str, ...]
    inputs: str = "features"
    higher_is_better: bool = True
    needs_key: bool = False
    summary: str = ""
    paper: str = ""
    label_options: Callable | None = None
    features_options: Callable | None = None
    uses_labels: bool = True
    pool_weights: Mapping[str, float] | None = None
    streams: bool = False
    scale_invariant: bool = False
    min_dim: int | Callable[[dict], int] = 1

    def smallest_dim(self, options: dict | None = None) -> int:
        """:attr:`min_dim` for these options."""
        m = self.min_dim
        return int(m(dict(options or {})) if callable(m) else m)


METRICS: dict[str, MetricInfo] = {}


def register(
    name: str,
    *,
    tasks: tuple[str, ...] = ("classification",),
    inputs: str = "features",
    higher_is_better: bool = True,
    needs_key: bool = False,
    summary: str = "",
    paper: str = "",
    label_options: Callable | None = None,
    features_options: Callable | None = None,
    uses_labels: bool = True,
    pool_weights: Mapping[str, float] | None = None,
    streams: bool = False,
    scale_invariant: bool = False,
    min_dim: int | Callable[[dict], int] = 1,
):
    """Decorator registering a public metric function under ``name`` (once)."""
    bad = set(tasks) - set(TASKS)
    if bad or not tasks:
        raise ValueError(f"register({name!r}): tasks must be a non-empty subset of {TASKS}")
    if inputs not in INPUTS:
        raise ValueError(f"register({name!r}): inputs must be one of {INPUTS}, got {inputs!r}")

    def deco(fn: Callable) -> Callable:
        if name in METRICS and METRICS[name].fn is not fn:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = MetricInfo(
            name, fn, tuple(tasks), inputs, higher_is_better, needs_key, summary, paper,
            label_options, features_options, uses_labels,
            None if pool_weights is None else dict(pool_weights), streams, scale_invariant,
            min_dim,
        )
        return fn

    return deco


def get_metric(name: str) -> MetricInfo:
    """The :class:`MetricInfo` for ``name``; ``ValueError`` listing the known names otherwise."""
    if isinstance(name, MetricInfo):
        return name
    try:
        return METRICS[name]
    except KeyError:
        known = ", ".join(sorted(METRICS))
        raise ValueError(f"unknown metric {name!r}; registered metrics: {known}") from None


def metric_names(*, inputs: str | None = None, task: str | None = None) -> list[str]:
    """Registered names, optionally only those reading ``inputs`` / supporting ``task``."""
    return sorted(
        n
        for n, m in METRICS.items()
        if (inputs is None or m.inputs == inputs) and (task is None or task in m.tasks)
    )
