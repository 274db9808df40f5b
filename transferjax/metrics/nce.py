"""NCE: negative conditional entropy of the target labels given the source model's hard labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation
from .._dtypes import compute_dtype
from .._typing import Array, ArrayLike, DTypeLike
from ..linalg import safe_div
from ..registry import register
from ..stats import LabelTable

__all__ = ["nce"]

_TINY = 1e-20  # the reference adds this to every P(y | z) before taking p log p


@jax.jit(static_argnames=("num_classes", "num_source_classes", "dtype"))
def _nce(source_labels, labels, *, num_classes, num_source_classes, dtype):
    n = labels.shape[0]
    cell = labels * num_source_classes + source_labels
    ones = jnp.ones(labels.shape, dtype)
    counts = jax.ops.segment_sum(ones, cell, num_segments=num_classes * num_source_classes)
    return _nce_from_counts(counts.reshape(num_classes, num_source_classes), n)


@jax.jit
def _nce_table(table):
    return _nce_from_counts(table.joint, table.count)


def _nce_from_counts(counts, n):
    joint = counts / n  # P(y, z) [c, z]
    p_z = jnp.sum(joint, axis=0)
    p = safe_div(joint, p_z[None, :]) + _TINY  # P(y | z)
    entropy = -jnp.sum(p * jnp.log(p), axis=0)  # H(Y | z) [z]
    return -jnp.sum(jnp.where(p_z > 0, p_z * entropy, 0.0))


@register(
    "nce",
    tasks=("classification",),
    inputs="source_labels",
    summary="negative conditional entropy of target labels given source labels",
    paper="Tran et al., ICCV 2019",
)
def nce(
    source_labels: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    *,
    table: LabelTable | None = None,
    num_classes: int | None = None,
    num_source_classes: int | None = None,
    dtype: DTypeLike | None = None,
    check_inputs: bool = True,
) -> Array:
    r"""NCE: negative conditional entropy ``−H(Y | Z)`` of target labels given source labels.

    With the empirical joint ``P(y, z) = #\{i: y_i = y, z_i = z\}/n`` of target labels ``y`` and the
    source model's hard predictions ``z`` on the same samples:

    .. math::
        \mathrm{NCE}(z, y) = -H(Y \mid Z)
          = \sum_{z:\,P(z) > 0} P(z) \sum_{y} P(y \mid z) \log P(y \mid z)

    Higher (closer to 0) is better; 0 when the source labels determine the target labels.

    Note:
      Matches ``NCE.py`` of ``thuml/LogME``, including its ``+1e-20`` on every ``P(y | z)`` before
      ``p log p`` (a ``~5e-19`` shift per cell). Source classes that no sample uses are masked
      out, so ``num_source_classes`` only fixes the table's shape. Pass hard labels (e.g. the
      ``argmax`` of the source probabilities), not probabilities. Streamed exactly from the count
      table (``docs/streaming.md``).

    Args:
      source_labels: ``[n]`` integer source-model labels ``0..z-1`` (need not all occur).
      labels: ``[n]`` integer target labels ``0..c-1``.
      table: a hard-label :class:`~transferjax.stats.LabelTable`
        (:func:`~transferjax.stream_label_table`) in place of ``source_labels, labels``.
      num_classes: ``c``; required when ``labels`` are traced.
      num_source_classes: ``z`` (default ``max(z) + 1``, or the number of distinct ids when that
        exceeds ``n``); required when ``source_labels`` are traced.
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.
      check_inputs: run the eager checks (skipped automatically for traced values).

    Returns:
      Scalar score (compute dtype), ``<= 0``. Higher is better.

    Raises:
      ValueError: label arrays not 1-D or of different lengths; source labels outside
        ``0..num_source_classes-1``; malformed target labels.
      TypeError: non-integer source labels; float target labels; ``table`` not a hard-label
        :class:`~transferjax.stats.LabelTable`.

    References:
      Tran, Nguyen, Hassner. Transferability and Hardness of Supervised Classification Tasks.
      ICCV 2019.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> y = np.array([0, 0, 1, 1])
      >>> round(float(tj.nce(np.array([3, 3, 5, 5]), y)), 4) + 0.0  # z determines y
      0.0
      >>> round(float(tj.nce(np.array([0, 1, 0, 1]), y)), 4)  # independent: -log 2
      -0.6931
    """
    name = "nce"
    if table is not None:
        if source_labels is not None or labels is not None:
            raise ValueError(f"{name}: pass either source_labels and labels, or table=, not both")
        if not isinstance(table, LabelTable) or not table.hard:
            raise TypeError(
                f"{name}: table must be a LabelTable of hard source labels "
                "(stream_label_table over (source_labels, labels) chunks)"
            )
        return _nce_table(table)
    if source_labels is None or labels is None:
        raise ValueError(f"{name}: source_labels and labels are required (or table=)")
    if check_inputs:
        labels = _validation.check_targets(
            labels,
            int(jnp.shape(labels)[0]) if jnp.ndim(labels) else 0,
            name=name,
            num_classes=num_classes,
            allow_regression=False,
        )
        y, c = labels.values, labels.num_classes
        z, zc = _validation.check_indices(
            source_labels, y.shape[0], name=name, arg="source_labels", num=num_source_classes
        )
        if num_source_classes is None and zc > y.shape[0] and _validation.is_concrete(z):
            # Sparse source ids (e.g. 2**40): NCE only sees which samples share a source class,
            # so renumber the ids that occur instead of allocating a table of max(z) + 1 columns.
            uniq, z = np.unique(np.asarray(z), return_inverse=True)
            zc = int(uniq.size)
    else:
        y, z = labels, source_labels
        c = num_classes if num_classes is not None else int(jnp.max(jnp.asarray(y))) + 1
        zc = num_source_classes
        if zc is None:
            zc = int(jnp.max(jnp.asarray(z))) + 1
    dt = compute_dtype(None, dtype)
    return _nce(
        jnp.asarray(z), jnp.asarray(y), num_classes=c, num_source_classes=zc, dtype=dt
    )
