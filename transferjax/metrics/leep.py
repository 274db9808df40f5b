"""LEEP: log expected empirical prediction of a source classifier re-used on the target labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _validation
from .._dtypes import compute_dtype
from .._typing import Array, ArrayLike, DTypeLike
from ..linalg import safe_div
from ..registry import register
from ..stats import LabelTable
from ..streaming import fold

__all__ = ["leep"]


@jax.jit
def _leep_pass_update(total, theta, labels, w, joint):
    cond = safe_div(joint, jnp.sum(joint, axis=0, keepdims=True))
    eep = jnp.sum(theta * cond[labels], axis=1)
    logs = jnp.log(jnp.maximum(eep, jnp.finfo(eep.dtype).tiny))
    return total + jnp.sum(jnp.where(w > 0, logs, 0.0))


@jax.jit(static_argnames=("num_classes",))
def _leep(source_probs, labels, *, num_classes):
    theta = source_probs
    n = theta.shape[0]
    joint = jax.ops.segment_sum(theta, labels, num_segments=num_classes) / n  # P(y, z) [c, z]
    cond = safe_div(joint, jnp.sum(joint, axis=0, keepdims=True))  # P(y | z); 0 for empty z
    eep = jnp.sum(theta * cond[labels], axis=1)  # Σ_z θ_iz P(y_i | z)
    return jnp.mean(jnp.log(jnp.maximum(eep, jnp.finfo(eep.dtype).tiny)))


@register(
    "leep",
    tasks=("classification",),
    inputs="source_probs",
    summary="log expected empirical prediction of the source classifier",
    paper="Nguyen et al., ICML 2020",
)
def leep(
    source_probs: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    *,
    table: LabelTable | None = None,
    second_pass=None,
    num_classes: int | None = None,
    dtype: DTypeLike | None = None,
    check_inputs: bool = True,
) -> Array:
    r"""LEEP: mean log-likelihood of the target labels under the source model's "dummy" classifier.

    With ``θ [n, z]`` the source model's class probabilities on the target samples, the empirical
    joint ``P(y, z) = (1/n) Σ_{i: y_i = y} θ_{iz}`` and ``P(y | z) = P(y, z)/Σ_y P(y, z)``:

    .. math::
        \mathrm{LEEP}(\theta, y) = \frac1n \sum_{i=1}^{n}
          \log\Bigl(\sum_{z} \theta_{iz}\, P(y_i \mid z)\Bigr)

    Higher (closer to 0) is better.

    Note:
      Matches ``LEEP.py`` of ``thuml/LogME`` (``θ`` taken as given, ``max(y) + 1`` target
      classes). A source class with zero total probability (0/0 in the reference, never used by
      any sample) gets ``P(y | z) = 0``. The log is floored at the smallest normal float, so an
      underflowing prediction gives a large negative, finite score. Streamed: a label table and
      a second pass (``docs/streaming.md``).

    Args:
      source_probs: ``[n, z]`` source-model probabilities (rows on the simplex).
      labels: ``[n]`` integer target labels ``0..c-1``.
      table: :class:`~transferjax.stats.LabelTable` of the same samples
        (:func:`~transferjax.stream_label_table`) in place of ``source_probs, labels``.
      second_pass: with ``table``: the ``(source_probs, labels)`` chunks again (an iterable or
        a callable returning one).
      num_classes: ``c``; required when ``labels`` are traced.
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.
      check_inputs: run the eager checks (skipped automatically for traced values).

    Returns:
      Scalar score (compute dtype), ``<= 0``. Higher is better.

    Raises:
      ValueError: ``source_probs`` not 2-D, NaN/inf, negative or with a row not summing to 1
        within 1e-3; malformed labels; ``table`` without ``second_pass``.
      TypeError: non-numeric ``source_probs``; float labels (no regression form); ``table`` not
        a :class:`~transferjax.stats.LabelTable`.

    References:
      Nguyen, Hassner, Seeger, Archambeau. LEEP: A New Measure to Evaluate Transferability of
      Learned Representations. ICML 2020.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> y = np.array([0, 0, 1, 1])
      >>> informative = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9]])
      >>> uniform = np.full((4, 2), 0.5)
      >>> round(float(tj.leep(uniform, y)), 4)  # log(1/2): the source says nothing
      -0.6931
      >>> bool(tj.leep(informative, y) > tj.leep(uniform, y))
      True
    """
    name = "leep"
    if table is not None:
        return _leep_streamed(table, second_pass, source_probs, labels, dtype, check_inputs)
    if source_probs is None or labels is None:
        raise ValueError(f"{name}: source_probs and labels are required (or table=)")
    source_probs, y, c = _validation.prepare_probs(
        source_probs, labels, name=name, num_classes=num_classes, check_inputs=check_inputs
    )
    dt = compute_dtype(source_probs, dtype)
    return _leep(jnp.asarray(source_probs, dt), jnp.asarray(y), num_classes=c)


def _leep_streamed(table, second_pass, source_probs, labels, dtype, check_inputs):
    name = "leep"
    if source_probs is not None or labels is not None:
        raise ValueError(f"{name}: pass either source_probs and labels, or table=, not both")
    if not isinstance(table, LabelTable):
        raise TypeError(f"{name}: table must be a LabelTable, got {type(table).__name__}")
    if second_pass is None:
        raise ValueError(
            f"{name}: table= needs second_pass= (the (source_probs, labels) chunks again): the "
            "score averages a per-sample log, which the table alone does not determine"
        )
    joint = table.joint
    total = fold(
        _leep_pass_update, jnp.zeros((), joint.dtype), second_pass, args=(joint,), name=name,
        width=table.num_source_classes, num_classes=table.num_classes, count=table.count,
        dtype=joint.dtype, check_inputs=check_inputs,
    )
    return total / table.count
