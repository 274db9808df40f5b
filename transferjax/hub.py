"""Score a hub of models with different feature widths in a few vmapped, jitted calls.

Each model's features are zero-padded to a shared width and scored with its true width passed as
a traced integer (every features metric is padding-invariant by construction, DESIGN.md principle
3), so one compiled kernel serves many models. Widths are grouped into a few *buckets* (one
compile each) chosen to bound the padding waste (STYLE.md 4.8).
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation
from ._dtypes import compute_dtype
from ._typing import Array, ArrayLike
from .registry import MetricInfo, get_metric

__all__ = ["pad_features", "plan_buckets", "score_hub"]


def pad_features(features: Sequence[ArrayLike], width: int | None = None, dtype=None):
    """Stack ``[n, d_m]`` feature matrices into ``[m, n, width]`` zero-padded, plus true widths.

    Returns ``(padded, widths)``: ``padded`` a NumPy array of ``dtype`` (default float32 / float64
    under x64), ``widths`` an ``int32 [m]`` array.
    """
    dtype = compute_dtype(None, dtype)
    widths = np.array([np.shape(f)[1] for f in features], np.int32)
    width = int(widths.max()) if width is None else int(width)
    n = np.shape(features[0])[0]
    out = np.zeros((len(features), n, width), dtype)
    for i, f in enumerate(features):
        out[i, :, : widths[i]] = np.asarray(f, dtype)
    return out, widths


def _cost(n: int, d: int) -> float:
    # Per-model cost model of a spectral metric: Gram (n·d²) plus a d×d eigh (≈10·d³ flops).
    k = min(n, d)
    return n * d * k + 10.0 * k**3


# Automatic bucket count: padded cost may exceed the unpadded one by this fraction plus this
# absolute amount (cost-model units ≈ flops; 1e7 is about a millisecond of CPU work).
_AUTO_RELATIVE_WASTE = 0.10
_AUTO_ABSOLUTE_WASTE = 1e7


def plan_buckets(widths: Sequence[int], n: int, max_buckets: int | None = None) -> list[list[int]]:
    """Partition models (by index) into width buckets minimising the padded cost.

    Sorted widths are split into at most ``max_buckets`` contiguous groups, each padded to its
    widest member, by dynamic programming on the cost model ``n·d² + 10·d³`` per model (a Gram
    and an eigh). Default (``max_buckets=None``): the fewest buckets whose padded cost is within
    10% of the unpadded cost plus a small absolute slack (``1e7``, a millisecond or so of CPU
    work, so hubs of tiny models are not split for nothing), i.e. warm calls cost about what a
    loop over the models costs while compiling far fewer kernels than the loop's one per distinct
    width. Measured choices are in ``bench/RESULTS.md`` (``bench/hub_bench.py``).
    """
    order = np.argsort(np.asarray(widths), kind="stable")
    w = [int(widths[i]) for i in order]
    distinct = len(set(w))
    auto = max_buckets is None
    k_max = distinct if auto else max(1, min(int(max_buckets), distinct))
    m = len(w)
    inf = float("inf")
    # best[k][j]: minimal cost of the first j models in k buckets
    best = [[inf] * (m + 1) for _ in range(k_max + 1)]
    cut = [[0] * (m + 1) for _ in range(k_max + 1)]
    best[0][0] = 0.0
    for k in range(1, k_max + 1):
        for j in range(1, m + 1):
            for i in range(k - 1, j):
                if best[k - 1][i] == inf:
                    continue
                c = best[k - 1][i] + (j - i) * _cost(n, w[j - 1])
                if c < best[k][j]:
                    best[k][j], cut[k][j] = c, i
    if auto:
        ideal = sum(_cost(n, d) for d in w)
        slack = _AUTO_RELATIVE_WASTE * ideal + _AUTO_ABSOLUTE_WASTE
        k = next(kk for kk in range(1, k_max + 1) if best[kk][m] <= ideal + slack)
    else:
        k = min(range(1, k_max + 1), key=lambda kk: best[kk][m])
    groups, j = [], m
    while k > 0:
        i = cut[k][j]
        if j > i:
            groups.append([int(order[t]) for t in range(i, j)])
        j, k = i, k - 1
    return groups[::-1]


@functools.lru_cache(maxsize=128)
def _compiled(metric: str, num_classes, options: tuple, batch_size: int | None):
    """The jitted, vmapped scorer for one metric configuration (cached: warm calls reuse it).

    Labels, widths and the key are arguments, not constants, so a new label set or hub with the
    same shapes reuses the compiled code.
    """
    info = get_metric(metric)
    kw = dict(options)

    def one(f, w, labels, key):
        extra = {"key": key} if info.needs_key else {}
        return info.fn(
            f, labels, width=w, num_classes=num_classes, check_inputs=False, **kw, **extra
        )

    many = jax.vmap(one, in_axes=(0, 0, None, None))
    if batch_size is None:
        return jax.jit(many)

    @jax.jit
    def chunked(f, w, labels, key):
        m = f.shape[0]
        f = f.reshape((m // batch_size, batch_size) + f.shape[1:])
        w = w.reshape(m // batch_size, batch_size)
        out = jax.lax.map(lambda fw: many(fw[0], fw[1], labels, key), (f, w))
        return out.reshape(-1)

    return chunked


def score_hub(
    metric: str | MetricInfo,
    features_by_model: Mapping[str, ArrayLike],
    labels: ArrayLike,
    *,
    batch_size: int | None = None,
    max_buckets: int | None = None,
    key: Array | None = None,
    progress: Callable[[int, int], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    **options,
) -> dict[str, Array]:
    r"""Score every model of a hub with one metric: ``{name: score}``.

    Features of width ``d_m`` are zero-padded to their bucket's width and the metric is ``vmap``-ed
    over the models of each bucket with each model's true width as a traced integer, so the result
    equals scoring the models one by one (the metrics are padding-invariant; tested for every
    registered features metric). Buckets (see :func:`plan_buckets`) bound both the number of
    compilations and the padding waste. Static options that a traced metric cannot derive
    itself come from the concrete inputs first: from the labels (TransRate's largest class) and
    from each bucket's features (NLEEP's mixture dimension, the largest PCA rank: it would
    otherwise work in ``min(n, d)`` dimensions); options passed by the caller win.

    Args:
      metric: a registered metric name (``tj.metric_names()``) or its :class:`MetricInfo`.
      features_by_model: ``{name: [n, d_m]}``, same ``n`` for all, widths may differ. For metrics
        reading source probabilities / source labels, the per-model arrays are those instead (scored
        one by one).
      labels: ``[n]`` integer labels (or float targets where the metric supports regression).
      batch_size: at most this many models are scored at once per bucket (``lax.map`` over chunks
        of a ``vmap``): bounds memory for large hubs. ``None``: the whole bucket at once.
      max_buckets: at most this many distinct padded widths (compilations); ``1`` pads everything
        to the widest model.
      key: PRNG key for metrics that need one (the same key is used for every model, so a model's
        score does not depend on its position in the hub).
      progress: optional callback ``progress(done_models, total_models)`` called after each bucket.
      mesh: shard the model axis over this device mesh's first axis (e.g.
        ``tj.streaming.sample_mesh()`` over all devices): each device scores its share of models.
      **options: keyword options of the metric.

    Returns:
      ``{name: scalar jax.Array}`` in the input order.

    Raises:
      ValueError: an empty hub, models with different ``n``, bad features or labels (the
        metric's own checks), an unknown metric.
    """
    info = get_metric(metric)
    name = f"score_hub[{info.name}]"
    if not features_by_model:
        raise ValueError(f"{name}: features_by_model is empty")
    if info.needs_key and key is None:
        raise ValueError(f"{name}: metric {info.name!r} needs key=")
    names = list(features_by_model)
    arrays = [features_by_model[k] for k in names]

    if info.inputs != "features":
        out = {}
        for i, (k, a) in enumerate(zip(names, arrays)):
            kw = dict(options, **({"key": key} if info.needs_key else {}))
            out[k] = info.fn(a, labels, **kw)
            if progress is not None:
                progress(i + 1, len(names))
        return out

    for k, a in zip(names, arrays):
        _validation.check_features(a, name=name, arg=f"features of model {k!r}")
    _validation.check_same_n(name, **{f"model {k!r}": a for k, a in zip(names, arrays)})
    n = int(np.shape(arrays[0])[0])
    targets = _validation.check_targets(
        labels, n, name=name, allow_regression="regression" in info.tasks
    )
    labels_j = jnp.asarray(targets.values)
    if info.label_options is not None and _validation.is_concrete(targets.values):
        options = {**info.label_options(np.asarray(targets.values)), **options}
    try:
        opts = tuple(sorted(options.items()))
        hash(opts)
    except TypeError:
        raise TypeError(f"{name}: metric options must be hashable (numbers, strings, tuples)")
    widths = [int(np.shape(a)[1]) for a in arrays]
    scores: dict[str, Array] = {}
    done = 0
    for group in plan_buckets(widths, n, max_buckets):
        padded, w = pad_features([arrays[i] for i in group])
        m = len(group)
        chunk = None if batch_size is None or batch_size >= m else int(batch_size)
        multiple = (chunk or 1) * (1 if mesh is None else mesh.devices.size)
        if m % multiple:
            # Fill with copies of the last model (fixed shapes, even shards); dropped below.
            fill = multiple - m % multiple
            padded = np.concatenate([padded, np.repeat(padded[-1:], fill, 0)])
            w = np.concatenate([w, np.repeat(w[-1:], fill)])
        fj, wj = jnp.asarray(padded), jnp.asarray(w)
        if mesh is not None:
            spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))
            fj, wj = jax.device_put(fj, spec), jax.device_put(wj, spec)
        group_opts = opts
        if info.features_options is not None:  # static options read from this bucket's models
            extra = info.features_options(padded[:m], dict(options), batch_size=chunk)
            group_opts = tuple(sorted({**extra, **options}.items()))
        fn = _compiled(info.name, targets.num_classes, group_opts, chunk)
        vals = fn(fj, wj, labels_j, key)
        for i, v in zip(group, list(vals)[:m]):
            scores[names[i]] = v
        done += m
        if progress is not None:
            progress(done, len(names))
    return {k: scores[k] for k in names}
