"""Sufficient statistics over any number of samples: streamed in chunks, sharded over devices.

Everything here reuses :func:`transferjax.stats.feature_stats` and :func:`merge_stats` (the Chan et
al. pairwise update, which keeps centred scatters accurate in float32): streaming merges one jitted
chunk at a time; sharding lets XLA partition the same one-pass computation over a device mesh
(JAX's own sharding; nothing hand-rolled). :func:`fold` is the one per-sample pass a metric makes
over the chunks again when its score is not a function of the statistics alone.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation, distributed
from ._dtypes import compute_dtype
from ._typing import Array, ArrayLike
from .stats import FeatureStats, LabelTable, empty_stats, feature_stats, merge_stats

__all__ = ["stream_stats", "sample_mesh", "shard_samples", "sharded_stats", "stream_label_table",
           "fold"]


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


def _pad_rows(a, size):
    """``a`` with zero rows appended up to ``size`` rows (NumPy stays NumPy, JAX stays JAX)."""
    b = a.shape[0]
    if b == size:
        return a
    xp = np if isinstance(a, np.ndarray) else jnp
    return xp.concatenate([a, xp.zeros((size - b,) + a.shape[1:], a.dtype)])


def _row_mask(b, size, dtype):
    """``[size]`` weights: 1 for the ``b`` real rows, 0 for the padding rows after them."""
    return jnp.asarray(np.arange(size) < b, dtype)


def _as(a, dtype):
    """``a`` in ``dtype``, staying on the host if it is a NumPy array (padded there, moved once)."""
    return np.asarray(a, dtype) if isinstance(a, np.ndarray) else jnp.asarray(a, dtype)


def _unpack(chunk, name, i, what="chunk"):
    """Chunk ``i`` as a ``(features, labels)`` pair of arrays (lists become NumPy arrays)."""
    try:
        x, y = chunk
    except (TypeError, ValueError):
        raise TypeError(
            f"{name}: {what} {i} must be a (features, labels) pair, got {type(chunk).__name__}"
        ) from None
    return tuple(a if hasattr(a, "shape") else np.asarray(a) for a in (x, y))


def _check_chunk_shapes(x, y, name, i, width, what="chunk"):
    """Always-on shape checks of chunk ``i``: ``[rows, width]`` features (``width`` None: any),
    and labels with one entry (or one target row) per feature row."""
    shape = tuple(np.shape(x))
    if len(shape) != 2:
        raise ValueError(f"{name}: {what} {i} has shape {shape}; expected 2-D features [rows, d]")
    if width is not None and shape[1] != width:
        raise ValueError(
            f"{name}: {what} {i} has shape {shape}; expected features of width {width} "
            f"[rows, {width}]"
        )
    _check_label_rows(y, shape[0], name, i, what)


def _check_label_rows(y, rows, name, i, what="chunk"):
    if tuple(np.shape(y))[:1] != (rows,):
        raise ValueError(
            f"{name}: {what} {i} has labels of shape {tuple(np.shape(y))} for {rows} rows, "
            f"expected {rows} labels"
        )


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
      ValueError: no chunk, chunks of different widths, labels whose length differs from their
        chunk's rows (both checked even with ``check_inputs=False``), bad values; or the merged
        labels have fewer than two classes present.

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
    for i, chunk in enumerate(batches):
        x, y = _unpack(chunk, name, i)
        if check_inputs:
            x = _validation.check_features(x, name=name, arg=f"features of chunk {i}", min_n=1)
        _check_chunk_shapes(x, y, name, i, width)
        if regression is None:
            regression = np.dtype(np.asarray(y[:1]).dtype).kind == "f"
        if not regression and num_classes is None:
            raise ValueError(f"{name}: num_classes is required for classification labels")
        if class_scatter and regression:
            raise ValueError(f"{name}: class_scatter=True needs integer class labels")
        width = x.shape[1]
        if check_inputs:
            _check_chunk_labels(y, x.shape[0], name, i, num_classes, regression)
        if state is None:
            state = empty_stats(width, num_classes or 0, _num_targets(y) if regression else 0, dt,
                                class_scatter=bool(class_scatter))
        if x.shape[0] == 0:
            continue
        size = size or x.shape[0]
        for xp, yp in _pieces(x, y, size):
            b = xp.shape[0]
            xp = _as(xp, dt)
            yp = np.asarray(yp, dt).reshape(b, -1) if regression else np.asarray(yp, np.int32)
            state = _update(
                state, jnp.asarray(_pad_rows(xp, size)), jnp.asarray(_pad_rows(yp, size)),
                _row_mask(b, size, dt), num_classes=0 if regression else int(num_classes),
                regression=bool(regression), class_scatter=bool(class_scatter),
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


def fold(
    step: Callable,
    init,
    source,
    *,
    name: str,
    width: int,
    num_classes: int,
    count=None,
    args: tuple = (),
    chunk_size: int | None = None,
    dtype=None,
    check_inputs: bool = True,
    passes: int = 1,
    merge: Callable | None = None,
):
    r"""Fold a jitted per-chunk update over ``(features, labels)`` chunks: one streamed pass.

    With the chunks cut and padded to ``B`` rows each (``X_k [B, width]``, ``y_k [B]`` int32,
    ``w_k [B]`` with 1 for a real row and 0 for a padding row)

    .. math::
        c_0 = \mathrm{init}, \qquad c_{k+1} = \mathrm{step}(c_k, X_k, y_k, w_k, *\mathrm{args}),

    and the result is the carry after the last chunk. Every call of ``step`` sees the same shapes,
    so a ``step`` jitted once compiles once (bind static options with :func:`functools.partial`;
    pass arrays it reads in ``args``, so they are traced). Padding rows are zero features with
    label 0: ``step`` must give them no weight (``jnp.where(w > 0, ...)`` wherever a zero row
    could produce a non-finite value). Over several processes each process folds its own chunks
    and every process returns the carry of all rows, combined by ``merge`` or else as sums
    (``init + Σ_p (c_p − init)``).

    Args:
      step: ``step(carry, x [B, width], labels [B], w [B], *args) -> carry``, jitted.
      init: the initial carry (any pytree the step accepts).
      source: a callable returning a fresh iterable of ``(features [b, width], labels [b])``
        chunks (``b`` may vary), or a re-iterable sequence; a one-shot iterator only when
        ``passes=1``.
      name: the public function reported in errors.
      width: the number of feature columns every chunk must have.
      num_classes: labels must be integers in ``0..num_classes-1``.
      count: the number of samples the pass must cover (checked when concrete; default ``None``).
      args: extra arguments passed to every ``step`` call after the weights.
      chunk_size: ``B`` (default: the rows of the first non-empty chunk).
      dtype: the features' dtype in ``step`` (default float32, float64 under x64).
      check_inputs: check each chunk's values (finite features, labels in range); shapes are
        always checked.
      passes: how many times the caller reads ``source`` (``> 1`` rejects a one-shot iterator).
      merge: how two processes' carries combine (e.g. :func:`~transferjax.merge_stats`); default
        ``None``: they add.

    Returns:
      The final carry.

    Raises:
      TypeError: ``source`` neither iterable nor callable, or a one-shot iterator with
        ``passes > 1``; a chunk that is not a ``(features, labels)`` pair; non-integer labels.
      ValueError: a chunk of another width, labels whose length differs from the chunk's rows,
        bad values, or a pass over another number of samples than ``count``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from transferjax.streaming import fold
      >>> @jax.jit
      ... def class_sums(carry, x, y, w):
      ...     return carry + jax.ops.segment_sum(x * w[:, None], y, num_segments=2)
      >>> x = np.arange(10.0).reshape(5, 2); y = np.array([0, 1, 0, 1, 0])
      >>> chunks = lambda: [(x[:3], y[:3]), (x[3:], y[3:])]
      >>> fold(class_sums, jnp.zeros((2, 2)), chunks, name="demo", width=2, num_classes=2,
      ...      count=5).tolist()
      [[12.0, 15.0], [8.0, 10.0]]
    """
    dt = compute_dtype(None, dtype)
    size, seen, carry = chunk_size, 0, init
    for i, chunk in enumerate(_fresh(source, name=name, passes=passes)):
        x, y = _unpack(chunk, name, i, "second_pass chunk")
        if check_inputs:
            x = _validation.check_features(
                x, name=name, arg=f"second_pass features of chunk {i}", min_n=1
            )
        _check_chunk_shapes(x, y, name, i, width, "second_pass chunk")
        if check_inputs:
            _check_chunk_labels(y, x.shape[0], name, i, num_classes, False)
        if x.shape[0] == 0:
            continue
        size = size or x.shape[0]
        for xp, yp in _pieces(x, y, size):
            b = xp.shape[0]
            seen += b
            xp = _pad_rows(_as(xp, dt), size)
            yp = _pad_rows(_as(yp, np.int32), size)
            carry = step(carry, xp, yp, _row_mask(b, size, dt), *args)
    if jax.process_count() > 1:
        carry = distributed.combine_across_processes(carry, init, merge=merge, name=name)
        seen = int(distributed.sum_across_processes(jnp.asarray(seen, jnp.int32), name=name))
    if count is not None and _validation.is_concrete(count):
        expected = float(np.asarray(count))
        if abs(seen - expected) > 0.5:
            raise ValueError(
                f"{name}: second_pass yielded {seen} samples but the statistics hold {expected:g}"
            )
    return carry


def _fresh(source, *, name: str, passes: int):
    """The chunks of ``source``: a callable's fresh iterable, or the iterable itself."""
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
    for i, chunk in enumerate(batches):
        src, y = _unpack(chunk, name, i)
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
        _check_label_rows(y, src_np.shape[0], name, i)
        if check_inputs:
            _check_chunk_labels(y, src_np.shape[0], name, i, num_classes, False)
        size = size or src_np.shape[0]
        for sp, yp in _pieces(src_np, np.asarray(y), size):
            b = sp.shape[0]
            count += b
            sp = _pad_rows(jnp.asarray(sp, jnp.int32 if hard else dt), size)
            yp = _pad_rows(jnp.asarray(yp, jnp.int32), size)
            joint = _table_update(joint, sp, yp, _row_mask(b, size, dt), num_classes=num_classes,
                                  num_source_classes=z, hard=bool(hard))
    if joint is None:
        raise ValueError(f"{name}: batches yielded no chunk")
    present = int(np.sum(np.asarray(joint).sum(axis=1) > 0))
    if present < 2:
        raise ValueError(f"{name}: labels need at least 2 classes, got {present}")
    return LabelTable(joint, jnp.asarray(count, dt), bool(hard))
