"""Sufficient statistics over any number of samples: streamed in chunks, sharded over devices.

Everything here reuses :func:`transferjax.stats.feature_stats` and :func:`merge_stats` (the Chan et
al. pairwise update, which keeps centred scatters accurate in float32): streaming merges one jitted
chunk at a time; sharding lets XLA partition the same one-pass computation over a device mesh
(JAX's own sharding; nothing hand-rolled).
"""

from __future__ import annotations

import functools
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation, distributed
from ._dtypes import compute_dtype
from ._typing import Array, ArrayLike
from .stats import FeatureStats, LabelTable, empty_stats, feature_stats, merge_stats

__all__ = ["stream_stats", "sample_mesh", "shard_samples", "sharded_stats", "stream_label_table",
           "second_pass_batches", "fresh_batches", "check_pass_count"]


@functools.partial(jax.jit, static_argnames=("num_classes", "regression", "class_scatter"))
def _update(state, x, y, w, *, num_classes, regression, class_scatter=False):
    chunk = feature_stats(
        x, y, num_classes=num_classes, regression=regression, weights=w, dtype=x.dtype,
        class_scatter=class_scatter,
    )
    return merge_stats(state, chunk)


def _pieces(x, y, size):
    for start in range(0, x.shape[0], size):
        yield x[start : start + size], y[start : start + size]


def stream_stats(
    batches: Iterable[tuple[ArrayLike, ArrayLike]],
    num_classes: int | None = None,
    *,
    regression: bool | None = None,
    chunk_size: int | None = None,
    dtype=None,
    check_inputs: bool = True,
    class_scatter: bool = False,
) -> FeatureStats:
    r"""One pass over ``(features, labels)`` chunks → :class:`FeatureStats` of all samples.

    Each chunk's statistics (count, mean, centred scatter, class counts/sums or target
    cross-products) are merged into the running total by the pairwise update

    .. math:: S = S_a + S_b + \tfrac{n_a n_b}{n_a + n_b}(μ_b − μ_a)(μ_b − μ_a)^\top,

    so float32 accuracy does not degrade with N the way ``Σxxᵀ − nμμᵀ`` does. Chunks are cut or
    zero-padded (with a 0 weight mask) to one fixed size, so the jitted update compiles once.
    Memory is ``O(chunk·d + d²)`` whatever the number of samples.

    Args:
      batches: an iterable of ``(features [b, d], labels [b])`` (int labels) or ``(features,
        targets [b] / [b, k])`` (float targets), NumPy or JAX arrays; ``b`` may vary.
      num_classes: ``C`` for classification (required: a chunk need not contain every class).
      regression: force the task; default: from the first chunk's label dtype.
      chunk_size: rows per jitted update (default: the first chunk's size).
      dtype: compute dtype (default float32, float64 under x64).
      check_inputs: check each chunk (finite, shapes, labels in ``0..C-1``).
      class_scatter: also accumulate the per-class scatters ``[C, d, d]`` (opt-in: ``C·d²``
        floats, e.g. 200 MB at ``C=50, d=1024`` in float32, and ``O(d²)`` more flops per row),
        which :func:`~transferjax.transrate` and :func:`~transferjax.gbc` with ``pca_dim`` read.

    Returns:
      The merged :class:`FeatureStats`; pass it as ``stats=`` to statistics-based metrics.

    Raises:
      ValueError: no chunk, chunks of different widths, bad values; or the merged labels have
        fewer than two classes present.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> rng = np.random.default_rng(0)
      >>> chunks = [(rng.normal(size=(100, 4)), np.arange(100) % 3) for _ in range(5)]
      >>> stats = tj.stream_stats(chunks, num_classes=3)
      >>> int(stats.count)
      500
    """
    name = "stream_stats"
    dt = compute_dtype(None, dtype)
    state, width, size = None, None, chunk_size
    for i, (x, y) in enumerate(batches):
        if check_inputs:
            x = _validation.check_features(x, name=name, arg=f"features of chunk {i}", min_n=1)
        if regression is None:
            regression = np.dtype(np.asarray(y[:1]).dtype).kind == "f"
        if not regression and num_classes is None:
            raise ValueError(f"{name}: num_classes is required for classification labels")
        if class_scatter and regression:
            raise ValueError(f"{name}: class_scatter=True needs integer class labels")
        if width is None:
            width = x.shape[1]
            size = size or x.shape[0]
        elif x.shape[1] != width:
            raise ValueError(f"{name}: chunk {i} has width {x.shape[1]}, earlier chunks {width}")
        if check_inputs:
            _check_chunk_labels(y, x.shape[0], name, i, num_classes, regression)
        if state is None:
            state = empty_stats(width, num_classes or 0, _num_targets(y) if regression else 0, dt,
                           class_scatter=bool(class_scatter))
        for xp, yp in _pieces(x, y, size):
            b = xp.shape[0]
            xp = np.asarray(xp, dt) if isinstance(xp, np.ndarray) else jnp.asarray(xp, dt)
            yp = (np.asarray(yp, dt).reshape(b, -1) if regression else np.asarray(yp, np.int32))
            w = np.ones((size,), dt)
            if b < size:
                w[b:] = 0
                xp = jnp.concatenate([jnp.asarray(xp), jnp.zeros((size - b, width), dt)])
                yp = np.concatenate([yp, np.zeros((size - b,) + yp.shape[1:], yp.dtype)])
            state = _update(
                state, jnp.asarray(xp), jnp.asarray(yp), jnp.asarray(w),
                num_classes=0 if regression else int(num_classes), regression=bool(regression),
                class_scatter=bool(class_scatter),
            )
    if jax.process_count() > 1:  # every process streamed its own chunks: merge them all
        state = distributed.merge_stats_across_processes(state, name=name)
    elif state is None:
        raise ValueError(f"{name}: batches yielded no chunk")
    if not state.regression:
        present = int(jnp.sum(state.class_counts > 0))
        if present < 2:
            raise ValueError(f"{name}: labels need at least 2 classes, got {present}")
    return state


def _num_targets(y) -> int:
    return 1 if np.ndim(y) == 1 else int(np.shape(y)[1])


def _check_chunk_labels(y, n, name, i, num_classes, regression):
    arg = f"labels of chunk {i}"
    y_np = np.asarray(y)
    if y_np.shape[0] != n:
        raise ValueError(f"{name}: {arg} has {y_np.shape[0]} entries for {n} feature rows")
    if regression:
        if y_np.dtype.kind != "f" or not np.isfinite(y_np).all():
            raise ValueError(f"{name}: {arg} must be finite float regression targets")
        return
    if y_np.dtype.kind not in "iu" or y_np.ndim != 1:
        raise TypeError(f"{name}: {arg} must be 1-D integer labels, got {y_np.dtype} {y_np.shape}")
    if y_np.size and (y_np.min() < 0 or y_np.max() >= num_classes):
        raise ValueError(
            f"{name}: {arg} must be integers in 0..{num_classes - 1}; got min {y_np.min()}, "
            f"max {y_np.max()}"
        )


def sample_mesh(num_devices: int | None = None, axis: str = "data") -> jax.sharding.Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (default all), with ``Auto`` axis type
    so matmuls contracting the sharded sample axis reduce across devices automatically."""
    devices = jax.devices()[: num_devices or len(jax.devices())]
    return jax.make_mesh(
        (len(devices),), (axis,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def shard_samples(x: ArrayLike, mesh: jax.sharding.Mesh | None = None) -> Array:
    """Put ``x`` on ``mesh`` with its first (sample) axis split over the mesh's first axis.

    The sample count must be divisible by the number of devices (pad with zero-weight rows,
    as :func:`sharded_stats` does, otherwise).
    """
    mesh = mesh or sample_mesh()
    spec = jax.sharding.PartitionSpec(mesh.axis_names[0])
    return jax.device_put(x, jax.sharding.NamedSharding(mesh, spec))


def sharded_stats(
    features: ArrayLike,
    labels: ArrayLike,
    num_classes: int | None = None,
    *,
    mesh: jax.sharding.Mesh | None = None,
    dtype=None,
    class_scatter: bool = False,
) -> FeatureStats:
    """:class:`FeatureStats` with the sample axis sharded over a device mesh.

    The rows are padded to a multiple of the device count (zero weight), placed with
    :func:`shard_samples`, and the ordinary one-pass :func:`feature_stats` is jitted over them:
    XLA partitions it and inserts the cross-device reductions (the result is replicated). Equal to
    the unsharded statistics up to summation order. ``class_scatter=True`` adds the opt-in
    per-class scatters (see :func:`stream_stats`).

    Over several processes (``jax.distributed.initialize`` and a ``mesh`` spanning their devices)
    each process passes only its own rows (possibly none) and ``num_classes``; each computes its
    statistics on its own devices and the processes merge them
    (:func:`transferjax.distributed.merge_stats_across_processes`): every process returns the
    statistics of all rows.
    """
    name = "sharded_stats"
    if mesh is not None and distributed.is_multiprocess(mesh):
        return _multiprocess_stats(features, labels, num_classes, mesh, dtype, class_scatter)
    x = _validation.check_features(features, name=name)
    t = _validation.check_targets(labels, x.shape[0], name=name, num_classes=num_classes)
    return _local_stats(x, t, mesh or sample_mesh(), dtype, class_scatter)


def _local_stats(x, t, mesh, dtype, class_scatter) -> FeatureStats:
    ndev = mesh.devices.size
    dt = compute_dtype(None, dtype)
    n = x.shape[0]
    pad = (-n) % ndev
    xv = np.asarray(x, dt)
    yv = np.asarray(t.values, dt if t.regression else np.int32)
    w = np.ones((n + pad,), dt)
    if pad:
        w[n:] = 0
        xv = np.concatenate([xv, np.zeros((pad, xv.shape[1]), dt)])
        yv = np.concatenate([yv, np.zeros((pad,) + yv.shape[1:], yv.dtype)])
    fn = jax.jit(
        functools.partial(
            feature_stats, num_classes=t.num_classes or 0, regression=t.regression, dtype=dt,
            class_scatter=bool(class_scatter),
        )
    )
    return fn(shard_samples(xv, mesh), shard_samples(yv, mesh), weights=shard_samples(w, mesh))


def _multiprocess_stats(features, labels, num_classes, mesh, dtype, class_scatter):
    """This process's rows on its own devices, then merged with every other process's."""
    name = "sharded_stats"
    n = int(np.shape(features)[0])
    local = None
    if n:
        x = _validation.check_features(features, name=name, min_n=1)
        y = np.asarray(labels)
        regression = np.dtype(y.dtype).kind == "f"
        if not regression and num_classes is None:
            raise ValueError(
                f"{name}: over several processes num_classes is required (a process's rows "
                "need not hold every class)"
            )
        _check_chunk_labels(y, n, name, 0, num_classes, regression)
        values = y.reshape(n, -1) if regression else y
        t = _validation.Targets(values, regression, None if regression else int(num_classes))
        local = _local_stats(x, t, distributed.local_mesh(mesh), dtype, class_scatter)
    return distributed.merge_stats_across_processes(local, name=name)


# ----------------------------------------------------------------------------- second passes


def fresh_batches(source, *, name: str, passes: int = 1):
    """An iterable of chunks from ``second_pass=``: a callable returning a fresh iterable, or an
    iterable (a one-shot iterator such as a generator only when it is read once, ``passes=1``)."""
    if callable(source):
        return source()
    try:
        it = iter(source)
    except TypeError:
        raise TypeError(
            f"{name}: second_pass must be an iterable of (features, labels) chunks or a callable "
            f"returning one, got {type(source).__name__}"
        ) from None
    if passes > 1 and it is source:
        raise TypeError(
            f"{name}: second_pass is read {passes} times; pass a callable returning a fresh "
            "iterable (e.g. lambda: make_chunks()) or a re-iterable sequence, not a generator"
        )
    return source


def second_pass_batches(
    source,
    *,
    name: str,
    width: int,
    num_classes: int,
    dtype,
    chunk_size: int | None = None,
    check_inputs: bool = True,
    passes: int = 1,
):
    """Yield ``(x [b, width], labels [b] int32, w [b])`` with one fixed ``b`` (last chunk padded
    with zero-weight rows), so a jitted per-chunk update compiles once; check each chunk."""
    size = chunk_size
    for i, (x, y) in enumerate(fresh_batches(source, name=name, passes=passes)):
        if check_inputs:
            x = _validation.check_features(x, name=name, arg=f"second_pass features of chunk {i}",
                                           min_n=1)
        if np.ndim(x) != 2 or x.shape[1] != width:
            raise ValueError(
                f"{name}: second_pass chunk {i} has shape {tuple(np.shape(x))}; the statistics "
                f"have width {width}"
            )
        if check_inputs:
            _check_chunk_labels(y, x.shape[0], name, i, num_classes, False)
        size = size or x.shape[0]
        for xp, yp in _pieces(x, y, size):
            b = xp.shape[0]
            xp = jnp.asarray(xp, dtype)
            yp = jnp.asarray(yp, jnp.int32)
            w = jnp.ones((b,), dtype)
            if b < size:
                xp = jnp.concatenate([xp, jnp.zeros((size - b, width), dtype)])
                yp = jnp.concatenate([yp, jnp.zeros((size - b,), jnp.int32)])
                w = jnp.concatenate([w, jnp.zeros((size - b,), dtype)])
            yield xp, yp, w


def check_pass_count(seen, stats_count, *, name: str) -> None:
    """The second pass must cover the same samples as the statistics (compared when concrete)."""
    if _validation.is_concrete(stats_count) and _validation.is_concrete(seen):
        a, b = float(np.asarray(seen)), float(np.asarray(stats_count))
        if abs(a - b) > 0.5:
            raise ValueError(
                f"{name}: second_pass yielded {a:g} samples but the statistics hold {b:g}"
            )


# ----------------------------------------------------------------------------- label tables


@functools.partial(jax.jit, static_argnames=("num_classes", "num_source_classes", "hard"))
def _table_update(joint, src, y, w, *, num_classes, num_source_classes, hard):
    if hard:
        theta = jax.nn.one_hot(src, num_source_classes, dtype=joint.dtype)
    else:
        theta = src
    return joint + jax.ops.segment_sum(theta * w[:, None], y, num_segments=num_classes)


def stream_label_table(
    batches: Iterable[tuple[ArrayLike, ArrayLike]],
    num_classes: int,
    num_source_classes: int | None = None,
    *,
    chunk_size: int | None = None,
    dtype=None,
    check_inputs: bool = True,
) -> LabelTable:
    r"""One pass over ``(source, labels)`` chunks → the joint :class:`LabelTable` of LEEP / NCE.

    ``source`` is either ``[b, z]`` source-model probabilities (LEEP; the table sums them per
    target class) or ``[b]`` integer source labels (NCE; the table counts ``(y, z)`` pairs), the
    same kind in every chunk. The table is ``n·P̂(y, z)``; tables of disjoint sets add
    (:func:`~transferjax.stats.merge_label_tables`). Fixed-size jitted updates as in
    :func:`stream_stats`; memory ``O(chunk·z + c·z)``.

    Args:
      batches: iterable of ``(source_probs [b, z] or source_labels [b], labels [b])``.
      num_classes: ``c`` target classes.
      num_source_classes: ``z``; required for hard source labels (ignored for probabilities).
      chunk_size: rows per jitted update (default: the first chunk's size).
      dtype: compute dtype (default float32, float64 under x64).
      check_inputs: check each chunk (probabilities on the simplex, labels in range).

    Returns:
      :class:`~transferjax.stats.LabelTable` (``hard=True`` for source labels); pass it as
      ``table=`` to :func:`~transferjax.nce` or :func:`~transferjax.leep`.

    Raises:
      ValueError: no chunk, chunks of mixed kinds or widths, bad values, fewer than 2 classes.
      TypeError: ``num_source_classes`` missing for hard labels; non-integer labels.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> z = np.array([0, 0, 1, 1, 2, 2]); y = np.array([0, 0, 1, 1, 1, 0])
      >>> t = tj.stream_label_table([(z[:4], y[:4]), (z[4:], y[4:])], 2, 3)
      >>> t.joint.tolist()
      [[2.0, 0.0, 1.0], [0.0, 2.0, 1.0]]
    """
    name = "stream_label_table"
    num_classes = _validation.check_positive_int(num_classes, name=name, arg="num_classes")
    dt = compute_dtype(None, dtype)
    joint, hard, size, count = None, None, chunk_size, 0
    for i, (src, y) in enumerate(batches):
        src_np = src if isinstance(src, jax.Array) else np.asarray(src)
        kind_hard = np.dtype(src_np.dtype).kind in "iu"
        if hard is None:
            hard = kind_hard
            if hard and num_source_classes is None:
                raise TypeError(f"{name}: num_source_classes is required for hard source labels")
            z = int(num_source_classes) if hard else int(src_np.shape[-1])
            joint = jnp.zeros((num_classes, z), dt)
        elif kind_hard != hard:
            raise ValueError(f"{name}: chunk {i} mixes source labels and source probabilities")
        arg = f"source of chunk {i}"
        if hard:
            _validation.check_indices(src_np, int(src_np.shape[0]), name=name, arg=arg, num=z)
        else:
            _validation.check_features(src_np, name=name, arg=arg, min_n=1)
            if src_np.shape[1] != z:
                raise ValueError(f"{name}: chunk {i} has {src_np.shape[1]} source classes, "
                                 f"earlier chunks {z}")
            if check_inputs:
                pn = np.asarray(src_np, np.float64)
                if (pn < 0).any() or (np.abs(pn.sum(axis=1) - 1.0) > 1e-3).any():
                    raise ValueError(f"{name}: {arg} rows must be probabilities summing to 1")
        if check_inputs:
            _check_chunk_labels(y, src_np.shape[0], name, i, num_classes, False)
        size = size or src_np.shape[0]
        for sp, yp in _pieces(src_np, np.asarray(y), size):
            b = sp.shape[0]
            count += b
            sp = jnp.asarray(sp, jnp.int32 if hard else dt)
            yp = jnp.asarray(yp, jnp.int32)
            w = jnp.ones((b,), dt)
            if b < size:
                sp = jnp.concatenate([sp, jnp.zeros((size - b,) + sp.shape[1:], sp.dtype)])
                yp = jnp.concatenate([yp, jnp.zeros((size - b,), jnp.int32)])
                w = jnp.concatenate([w, jnp.zeros((size - b,), dt)])
            joint = _table_update(joint, sp, yp, w, num_classes=num_classes,
                                  num_source_classes=z, hard=bool(hard))
    if joint is None:
        raise ValueError(f"{name}: batches yielded no chunk")
    present = int(np.sum(np.asarray(joint).sum(axis=1) > 0))
    if present < 2:
        raise ValueError(f"{name}: labels need at least 2 classes, got {present}")
    return LabelTable(joint, jnp.asarray(count, dt), bool(hard))
