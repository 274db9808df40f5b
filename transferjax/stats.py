"""Sufficient statistics of a labelled feature set: one pass, mergeable, shardable.

:class:`FeatureStats` carries ``(count, mean, centred scatter)`` of the features, per-class counts and
sums (classification) or centred cross-products with the targets (regression). Two statistics of
disjoint sample sets merge exactly with the pairwise update of Chan, Golub & LeVeque (1979), which
serves chunked streaming and cross-device reduction alike. Everything a Gram-based metric needs
(``FᵀF``, ``FᵀY``, ``‖y‖²``, class means, within/between scatter) is derived from it.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from ._typing import Array
from .linalg import matmul, sym

__all__ = ["FeatureStats", "feature_stats", "empty_stats", "merge_stats", "class_moments", "between_class_targets",
           "class_residuals", "class_grams", "sort_by_class", "class_block", "LabelTable",
           "merge_label_tables"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Sufficient statistics of ``n`` samples (a pytree; jit/vmap/psum friendly).

    Attributes:
      count: scalar, number of samples ``n`` (float, so weighted/masked rows are allowed).
      mean: ``[d]`` feature mean ``μ``.
      scatter: ``[d, d]`` centred scatter ``Σ (x-μ)(x-μ)ᵀ``.
      class_counts: ``[c]`` samples per class (``c = 0`` for regression).
      class_sums: ``[c, d]`` per-class feature sums.
      target_mean: ``[k]`` regression target means (``k = 0`` for classification).
      target_scatter: ``[k]`` per-target centred sums of squares ``Σ (y-ȳ)²``.
      cross: ``[d, k]`` centred cross-products ``Σ (x-μ)(y-ȳ)ᵀ``.
      within: ``[d, d]`` within-class scatter ``Σ_c Σ_{i∈c} (x-μ_c)(x-μ_c)ᵀ`` (``[0, 0]``
        without class labels), accumulated from class-centred rows and merged class by class
        (accurate in float32 even when the between-class scatter dominates).
      third: ``[d]`` ``Σ ‖x-μ‖² (x-μ)`` (the vector third moment; needed to merge ``fourth``).
      fourth: scalar ``Σ ‖x-μ‖⁴`` (Ledoit–Wolf shrinkage needs it).
      class_sq: ``[c, d]`` per-class, per-dimension centred sums of squares
        ``Σ_{i∈c} (x_i-μ_c)²`` (the diagonals of the per-class scatters; GBC's class variances),
        ``[0, d]`` without class labels. Always computed with class labels (``O(n·c·d)``, like
        ``class_sums``).
      class_scatter: ``[c, d, d]`` per-class centred scatters ``W_c = Σ_{i∈c} (x_i-μ_c)(x_i-μ_c)ᵀ``
        (TransRate; GBC with PCA), **opt-in** (``class_scatter=True`` in :func:`feature_stats`,
        :func:`~transferjax.stream_stats`, :func:`~transferjax.sharded_stats`): ``c·d²`` floats
        (200 MB at ``c=50, d=1024`` in float32). ``[0, 0, 0]`` when not requested.
    """

    count: Array
    mean: Array
    scatter: Array
    class_counts: Array
    class_sums: Array
    target_mean: Array
    target_scatter: Array
    cross: Array
    within: Array
    third: Array
    fourth: Array
    class_sq: Array
    class_scatter: Array

    @property
    def num_features(self) -> int:
        return self.mean.shape[-1]

    @property
    def num_classes(self) -> int:
        return self.class_counts.shape[-1]

    @property
    def regression(self) -> bool:
        return self.target_mean.shape[-1] > 0

    @property
    def has_class_scatter(self) -> bool:
        """Whether the opt-in per-class scatters ``[c, d, d]`` were computed."""
        return self.class_scatter.shape[-3] > 0 and self.num_classes > 0

    def gram(self) -> Array:
        """Uncentred ``FᵀF = S + n μμᵀ``."""
        return self.scatter + self.count * jnp.outer(self.mean, self.mean)

    def targets_cross(self) -> Array:
        """Uncentred ``FᵀY [d, t]``: class sums (one-hot targets) or ``C + n μ ȳᵀ``."""
        if self.regression:
            return self.cross + self.count * jnp.outer(self.mean, self.target_mean)
        return self.class_sums.T

    def targets_sq(self) -> Array:
        """``‖y_t‖²`` per target column: class counts, or ``Σ(y-ȳ)² + n ȳ²``."""
        if self.regression:
            return self.target_scatter + self.count * self.target_mean**2
        return self.class_counts

    def class_means(self) -> Array:
        """``[c, d]`` class means (0 for an empty class)."""
        cnt = self.class_counts[:, None]
        return self.class_sums / jnp.where(cnt > 0, cnt, 1.0)


def feature_stats(
    features: Array,
    labels: Array | None = None,
    *,
    num_classes: int = 0,
    regression: bool = False,
    weights: Array | None = None,
    dtype=None,
    class_scatter: bool = False,
) -> FeatureStats:
    """Statistics of one block of samples (pure, jittable; ``num_classes``/``regression`` static).

    Args:
      features: ``[n, d]``.
      labels: ``[n]`` int labels (classification, with ``num_classes``) or ``[n, k]`` float targets
        (``regression=True``); ``None`` for features only.
      weights: optional ``[n]`` 0/1 row mask (padding rows of the last chunk of a stream).
      dtype: compute dtype (default: the features' dtype).
      class_scatter: also compute the per-class scatters ``[c, d, d]`` (static; classification
        only): ``O(n·d²)`` more flops (:func:`class_grams`) and ``c·d²`` memory.
    """
    dtype = dtype or features.dtype
    x = features.astype(dtype)
    n, d = x.shape
    w = jnp.ones((n,), dtype) if weights is None else weights.astype(dtype)
    count = jnp.sum(w)
    safe_count = jnp.where(count > 0, count, 1.0)
    mean = matmul(w, x) / safe_count
    xd = x - mean[None, :]
    xc = xd * w[:, None]
    sq = jnp.sum(xd * xd, axis=1) * w  # ‖x_i − μ‖², 0 on masked rows
    third = matmul(sq, xd)
    fourth = jnp.sum(sq * jnp.sum(xd * xd, axis=1))
    # ``mean`` is rounded (by up to an ulp of |μ|); the third moment moves by tr(S)·δμ with the
    # centre, so take the rows' residual mean ε = Σ w(x − μ)/n into account (corrected two-pass).
    resid = matmul(w, xd) / safe_count
    zeros_k = jnp.zeros((0,), dtype)
    if class_scatter and (labels is None or regression):
        raise ValueError("feature_stats: class_scatter=True needs integer class labels")
    if labels is not None and regression:
        scatter = sym(matmul(xc.T, xd))
        y = labels.astype(dtype).reshape(n, -1)
        t_mean = matmul(w, y) / safe_count
        yc = y - t_mean[None, :]
        t_ss = matmul(w, yc**2)
        cross = matmul(xc.T, yc)
        third, fourth = _unshift_moments(count, scatter, third, fourth, resid)
        return FeatureStats(
            count, mean, scatter, jnp.zeros((0,), dtype), jnp.zeros((0, d), dtype),
            t_mean, t_ss, cross, jnp.zeros((0, 0), dtype), third, fourth,
            jnp.zeros((0, d), dtype), jnp.zeros((0, 0, 0), dtype),
        )
    if labels is not None:
        onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype) * w[:, None]
        class_counts = jnp.sum(onehot, axis=0)
        class_sums = matmul(onehot.T, x)
        # S = W + B: the within-class scatter from class-centred rows, the between-class scatter
        # from the class means (two PSD terms, no cancellation), one n·d² product as before.
        cmean = class_sums / jnp.where(class_counts > 0, class_counts, 1.0)[:, None]
        z = x - cmean[labels]
        within = sym(matmul((z * w[:, None]).T, z))
        dev = (cmean - mean[None, :]) * jnp.sqrt(class_counts)[:, None]
        scatter = within + sym(matmul(dev.T, dev))
        class_sq = matmul(onehot.T, z * z)
        if class_scatter:
            class_w = class_grams(z, labels, num_classes, w)
        else:
            class_w = jnp.zeros((0, 0, 0), dtype)
    else:
        scatter = sym(matmul(xc.T, xd))
        class_counts = jnp.zeros((0,), dtype)
        class_sums = jnp.zeros((0, d), dtype)
        within = jnp.zeros((0, 0), dtype)
        class_sq = jnp.zeros((0, d), dtype)
        class_w = jnp.zeros((0, 0, 0), dtype)
    third, fourth = _unshift_moments(count, scatter, third, fourth, resid)
    return FeatureStats(
        count, mean, scatter, class_counts, class_sums, zeros_k, zeros_k, jnp.zeros((d, 0), dtype),
        within, third, fourth, class_sq, class_w,
    )


def class_grams(
    rows: Array, labels: Array, num_classes: int, weights: Array | None = None,
    *, init: Array | None = None,
) -> Array:
    """Per-class Grams ``G_c = Σ_{i: y_i=c} w_i r_i r_iᵀ`` ``[c, d, d]`` in ``O(n·d²)`` flops.

    A one-hot weighted product would cost ``c·n·d²``. Instead the rows are sorted by label into
    tiles of ``t`` rows that each hold one class (a class's last tile is zero-padded); groups of
    ``g`` tiles are multiplied as one batched ``[g, t, d]ᵀ[g, t, d]`` product (``g·d² ≤ 2²⁴``
    elements of scratch) and scatter-added to their classes in a ``fori_loop`` over the groups.
    Shapes are static: ``⌈n/t⌉ + c`` tiles with ``t = clip(n // 2c, 1, 64)``, so at most about
    ``n/2`` padded rows are multiplied (thin tiles have little work per output element: more
    rows per class help). Pure, jittable, ``num_classes`` static. Rows for
    which the returned Gram should be centred must be centred by the caller (class-centred rows
    give the per-class scatters). ``init`` (``[c, d, d]``, symmetric) is added to, in place of a
    zero start (an accumulator, without a second ``c·d²`` buffer).
    """
    n, d = rows.shape
    c = num_classes
    t = max(1, min(64, n // (2 * c)))
    num_tiles = -(-n // t) + c
    group = max(1, min(num_tiles, 2**24 // max(1, t * d + d * d)))
    num_groups = -(-num_tiles // group)
    num_tiles = num_groups * group
    w = jnp.ones((n,), rows.dtype) if weights is None else weights.astype(rows.dtype)
    labels = labels.astype(jnp.int32)
    counts = jnp.bincount(labels, length=c).astype(jnp.int32)
    tiles_per = (counts + t - 1) // t
    tile_start = jnp.cumsum(tiles_per) - tiles_per
    row_start = jnp.cumsum(counts) - counts
    order = jnp.argsort(labels, stable=True)
    lab = labels[order]
    slot = tile_start[lab] * t + (jnp.arange(n, dtype=jnp.int32) - row_start[lab])
    buf = jnp.zeros((num_tiles * t, d), rows.dtype).at[slot].set(rows[order])
    wbuf = jnp.zeros((num_tiles * t,), rows.dtype).at[slot].set(w[order])
    tile_cls = jnp.zeros((num_tiles,), jnp.int32).at[slot // t].set(lab)
    buf = buf.reshape(num_groups, group, t, d)
    wbuf = wbuf.reshape(num_groups, group, t)
    tile_cls = tile_cls.reshape(num_groups, group)

    def body(j, acc):
        blk = buf[j]  # [g, t, d]
        left = blk * wbuf[j][:, :, None]
        g = jnp.einsum("gtd,gte->gde", left, blk, precision=jax.lax.Precision.HIGHEST)
        return acc.at[tile_cls[j]].add(g)

    acc = jnp.zeros((c, d, d), rows.dtype) if init is None else init
    return sym(jax.lax.fori_loop(0, num_groups, body, acc))


def _unshift_moments(count, scatter, third, fourth, e):
    """Inverse of :func:`_shift_moments`: moments about the exact mean from moments of ``r + e``."""
    tr = jnp.trace(scatter)
    se = matmul(scatter, e)
    ee = jnp.sum(e * e)
    t = third - tr * e - 2.0 * se - count * ee * e
    q = fourth - 4.0 * jnp.sum(e * t) - 4.0 * jnp.sum(e * se) - 2.0 * ee * tr - count * ee * ee
    return t, q


def _shift_moments(count, scatter, third, fourth, e):
    """``(Σ‖r+e‖²(r+e), Σ‖r+e‖⁴)`` from moments of rows ``r`` about their mean (``Σ r = 0``).

    With ``S = Σ r rᵀ``, ``T = Σ ‖r‖² r`` and ``Q = Σ ‖r‖⁴``:
    ``Σ‖r+e‖²(r+e) = T + tr(S) e + 2 S e + n‖e‖² e`` and
    ``Σ‖r+e‖⁴ = Q + 4 eᵀT + 4 eᵀS e + 2‖e‖² tr(S) + n‖e‖⁴``. An empty set stays 0.
    """
    tr = jnp.trace(scatter)
    se = matmul(scatter, e)
    ee = jnp.sum(e * e)
    t = third + tr * e + 2.0 * se + count * ee * e
    q = fourth + 4.0 * jnp.sum(e * third) + 4.0 * jnp.sum(e * se) + 2.0 * ee * tr + count * ee * ee
    live = count > 0
    return jnp.where(live, t, 0.0), jnp.where(live, q, 0.0)


def empty_stats(
    num_features: int, num_classes: int = 0, num_targets: int = 0, dtype=jnp.float32, *,
    class_scatter: bool = False,
) -> FeatureStats:
    """The statistics of no samples (``count`` 0): the neutral element of :func:`merge_stats`."""
    d, c, k = int(num_features), int(num_classes), int(num_targets)
    z = functools.partial(jnp.zeros, dtype=dtype)
    w = d if c else 0  # within-class scatter only with class labels
    cs = (c, d, d) if class_scatter and c else (0, 0, 0)  # opt-in per-class scatters
    return FeatureStats(
        z(()), z((d,)), z((d, d)), z((c,)), z((c, d)), z((k,)), z((k,)), z((d, k)), z((w, w)),
        z((d,)), z(()), z((c, d)), z(cs),
    )


def merge_stats(a: FeatureStats, b: FeatureStats) -> FeatureStats:
    """Statistics of the union of two disjoint sample sets (Chan et al. pairwise update)."""
    if a.class_scatter.shape != b.class_scatter.shape:
        raise ValueError(
            "merge_stats: both statistics must have the per-class scatters (class_scatter=True) "
            f"or neither; got shapes {a.class_scatter.shape} and {b.class_scatter.shape}"
        )
    n = a.count + b.count
    safe_n = jnp.where(n > 0, n, 1.0)
    frac = b.count / safe_n
    delta = b.mean - a.mean
    mean = a.mean + frac * delta
    coef = a.count * b.count / safe_n
    scatter = a.scatter + b.scatter + coef * jnp.outer(delta, delta)
    t_delta = b.target_mean - a.target_mean
    # Within-class scatter: the same pairwise update, class by class.
    within = a.within + b.within
    class_sq = a.class_sq + b.class_sq
    class_w = a.class_scatter + b.class_scatter
    if a.class_counts.shape[-1]:
        na, nb = a.class_counts, b.class_counts
        nc = na + nb
        live_a, live_b = na > 0, nb > 0
        mean_a = a.class_sums / jnp.where(live_a, na, 1.0)[:, None]
        mean_b = b.class_sums / jnp.where(live_b, nb, 1.0)[:, None]
        cdelta = (mean_b - mean_a) * jnp.sqrt(na * nb / jnp.where(nc > 0, nc, 1.0))[:, None]
        if a.within.shape[-1]:
            within = within + sym(matmul(cdelta.T, cdelta))
        class_sq = class_sq + cdelta * cdelta
        if a.class_scatter.shape[-3]:
            class_w = class_w + cdelta[:, :, None] * cdelta[:, None, :]
    third_a, fourth_a = _shift_moments(a.count, a.scatter, a.third, a.fourth, -frac * delta)
    third_b, fourth_b = _shift_moments(b.count, b.scatter, b.third, b.fourth, (1.0 - frac) * delta)
    return FeatureStats(
        count=n,
        mean=mean,
        scatter=scatter,
        class_counts=a.class_counts + b.class_counts,
        class_sums=a.class_sums + b.class_sums,
        target_mean=a.target_mean + frac * t_delta,
        target_scatter=a.target_scatter + b.target_scatter + coef * t_delta**2,
        cross=a.cross + b.cross + coef * jnp.outer(delta, t_delta),
        within=within,
        third=third_a + third_b,
        fourth=fourth_a + fourth_b,
        class_sq=class_sq,
        class_scatter=class_w,
    )


def class_moments(
    features: Array, labels: Array, num_classes: int
) -> tuple[Array, Array, Array]:
    """Per-class counts, means and per-dimension population variances (two-pass, centred).

    ``O(n·d)`` with segment sums (no ``[n, c]`` one-hot product); pure and jittable,
    ``num_classes`` static. An empty class gets count 0, mean 0 and variance 0.

    Args:
      features: ``[n, d]``.
      labels: ``[n]`` int labels in ``0..num_classes-1``.
      num_classes: ``c``.

    Returns:
      ``(counts [c], means [c, d], variances [c, d])``; ``variances`` are
      ``Σ_{i∈c}(x_i-μ_c)²/n_c`` per dimension (``ddof=0``).
    """
    x = features
    ones = jnp.ones(labels.shape, x.dtype)
    counts = jax.ops.segment_sum(ones, labels, num_segments=num_classes)
    safe = jnp.where(counts > 0, counts, 1.0)[:, None]
    means = jax.ops.segment_sum(x, labels, num_segments=num_classes) / safe
    dev = x - means[labels]
    variances = jax.ops.segment_sum(dev * dev, labels, num_segments=num_classes) / safe
    return counts, means, variances


def between_class_targets(labels: Array, num_classes: int, dtype) -> Array:
    """Normalised, centred class indicators ``T [n, c]`` that turn ``F`` into between-class scatter.

    ``T_ic = 1[y_i = c]/√n_c − √n_c/n``, so for any ``F [n, d]`` the product ``FᵀT`` has columns
    ``√n_c (μ_c − μ)`` and ``(FᵀT)(FᵀT)ᵀ = Σ_c n_c (μ_c − μ)(μ_c − μ)ᵀ`` is the between-class
    scatter ``B``; ``‖P T‖_F²`` for the projector ``P`` onto the column space of a centred ``F``
    equals ``tr(S⁺ B)`` with ``S`` its scatter. An empty class gives a zero column. Pure,
    jittable, ``num_classes`` static.
    """
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype)
    counts = jnp.sum(onehot, axis=0)
    root = jnp.sqrt(counts)
    scaled = onehot / jnp.where(counts > 0, root, 1.0)[None, :]
    return scaled - (root / labels.shape[0])[None, :]


def class_residuals(
    features: Array, labels: Array, num_classes: int
) -> tuple[Array, Array, Array]:
    """Per-class counts and means, and each sample minus its class mean.

    ``Z = X − M[y]`` has ``ZᵀZ = Σ_c Σ_{i∈c} (x_i − μ_c)(x_i − μ_c)ᵀ``, the within-class scatter,
    formed from class-centred rows (well conditioned in float32, unlike ``XᵀX − Σ n_c μ_c μ_cᵀ``);
    its rows sum to zero within every class. Pure, jittable, ``num_classes`` static; an empty
    class gets count 0 and mean 0.

    Returns:
      ``(counts [c], means [c, d], residuals [n, d])``.
    """
    x = features
    ones = jnp.ones(labels.shape, x.dtype)
    counts = jax.ops.segment_sum(ones, labels, num_segments=num_classes)
    safe = jnp.where(counts > 0, counts, 1.0)[:, None]
    means = jax.ops.segment_sum(x, labels, num_segments=num_classes) / safe
    return counts, means, x - means[labels]


def sort_by_class(
    features: Array, labels: Array, num_classes: int, pad: int
) -> tuple[Array, Array, Array]:
    """Rows sorted by label (stable) with ``pad`` zero rows appended, class starts and counts.

    Class ``c`` occupies rows ``starts[c] : starts[c] + counts[c]`` of the result, so any static
    block size ``m >= counts[c]`` can be cut out with :func:`class_block` without a ``[c, n]``
    mask product (``pad >= m`` keeps every slice in bounds). Pure, jittable, ``num_classes`` and
    ``pad`` static.

    Returns:
      ``(sorted_rows [n + pad, d], starts [c] int32, counts [c] int32)``.
    """
    order = jnp.argsort(labels, stable=True)
    counts = jnp.bincount(labels, length=num_classes).astype(jnp.int32)
    starts = (jnp.cumsum(counts) - counts).astype(jnp.int32)
    rows = features[order]
    rows = jnp.concatenate([rows, jnp.zeros((pad,) + rows.shape[1:], rows.dtype)], axis=0)
    return rows, starts, counts


def class_block(sorted_rows: Array, start: Array, count: Array, size: int) -> Array:
    """The rows of one class as a ``[size, d]`` block, rows ``>= count`` zeroed (``size`` static).

    ``sorted_rows, start, count`` come from :func:`sort_by_class` (its ``pad >= size``).
    """
    d = sorted_rows.shape[1]
    block = jax.lax.dynamic_slice(sorted_rows, (start, jnp.zeros((), start.dtype)), (size, d))
    keep = (jnp.arange(size) < count)[:, None]
    return jnp.where(keep, block, 0.0)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LabelTable:
    """Joint table of target labels and a source model's outputs (LEEP/NCE statistics; a pytree).

    Attributes:
      joint: ``[c, z]`` sums over the samples of target class ``y`` of the source probabilities
        ``θ_i`` (or of one-hot source labels when ``hard``): ``n·P̂(y, z)``.
      count: scalar, number of samples ``n``.
      hard: static; the table counts hard source labels (NCE's input) rather than probabilities.
    """

    joint: Array
    count: Array
    hard: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @property
    def num_classes(self) -> int:
        return self.joint.shape[-2]

    @property
    def num_source_classes(self) -> int:
        return self.joint.shape[-1]


def merge_label_tables(a: LabelTable, b: LabelTable) -> LabelTable:
    """The table of the union of two disjoint sample sets (plain sums)."""
    if a.hard != b.hard or a.joint.shape != b.joint.shape:
        raise ValueError("merge_label_tables: tables of different kinds or shapes")
    return LabelTable(a.joint + b.joint, a.count + b.count, a.hard)
