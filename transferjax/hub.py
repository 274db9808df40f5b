"""Score a hub of models with different feature widths in a few vmapped, jitted calls.

Each model's features are zero-padded to a shared width and scored with its true width passed as
a traced integer (every features metric is padding-invariant by construction: wherever the
width enters, the true width is used, and sums over the padded spectrum are corrected by the count
of padded directions), so one compiled kernel serves many models. Widths are grouped into a few *buckets* (one
compile each) chosen to bound the padding waste.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation, distributed
from ._dtypes import compute_dtype
from ._typing import Array, ArrayLike
from .linalg import pca_scores
from .pooling import combine_min_max
from .registry import MetricInfo, get_metric

__all__ = [
    "aggregate_layers", "best_layers", "pad_features", "plan_buckets", "reduce_dim", "score_hub",
]


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
    width.
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
def _compiled(
    metric: str, num_classes, options: tuple, batch_size: int | None, reduce_to: int | None = None
):
    """The jitted, vmapped scorer for one metric configuration (cached: warm calls reuse it).

    Labels, widths and the key are arguments, not constants, so a new label set or hub with the
    same shapes reuses the compiled code.
    """
    info = get_metric(metric)
    kw = dict(options)

    def one(f, w, labels, key):
        extra = {"key": key} if info.needs_key else {}
        if reduce_to is not None:  # the same k dimensions for every candidate
            f = reduce_dim(f, reduce_to, width=w)
            w = jnp.minimum(w, reduce_to)
        if not info.uses_labels:
            return info.fn(f, width=w, check_inputs=False, **kw, **extra)
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
        return jax.tree.map(lambda a: a.reshape(-1), out)

    return chunked


def reduce_dim(features: ArrayLike, k: int, *, width: ArrayLike | None = None) -> Array:
    r"""Project features on their top-``k`` principal directions: ``[n, min(k, d)]`` scores.

    ``Z = X_c V_k`` (centred features on the leading eigenvectors of their scatter, computed from
    the smaller-side Gram), each column's sign fixed so that its largest-magnitude score is
    positive. Scoring every candidate of a hub in the same ``k`` dimensions removes the pull of
    width on most metrics (layers of one network differ in width by 10-40×, and most scores grow
    with width); ``score_hub(..., reduce_dim=k)`` applies it to every candidate. Directions
    beyond the rank of the data come out as zero columns.

    Args:
      features: ``[n, d]``.
      k: number of components (``>= 1``).
      width: true width of zero-padded features (traced in the hub); only bounds the output.

    Returns:
      ``[n, min(k, d)]`` in the features' floating dtype (zero-padded beyond ``min(k, width)``).

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> tj.reduce_dim(np.random.default_rng(0).normal(size=(50, 20)), 8).shape
      (50, 8)
    """
    _validation.check_positive_int(k, name="reduce_dim", arg="k")
    x = jnp.asarray(features)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(compute_dtype(None))
    k = min(int(k), x.shape[1])
    z = pca_scores(x, k)
    pick = jnp.take_along_axis(z, jnp.argmax(jnp.abs(z), axis=0)[None, :], axis=0)
    z = z * jnp.where(pick < 0, -1.0, 1.0).astype(z.dtype)
    if width is not None:  # components beyond the true width are rounding noise: zero them
        z = jnp.where(jnp.arange(k)[None, :] < width, z, 0.0)
    return z


_SEP = "\x02"  # joins model and layer names when candidates cross processes


def _flatten_hub(features_by_model, name: str):
    """``{model: features}`` or ``{model: {layer: features}}`` → flat ``{(model, layer): x}``.

    ``layer`` is ``None`` for a flat hub. Raises ``TypeError`` for anything but a mapping.
    """
    if not isinstance(features_by_model, Mapping):
        raise TypeError(
            f"{name}: features_by_model must be a mapping {{model: [n, d] features}} or "
            f"{{model: {{layer: [n, d] features}}}}, got {type(features_by_model).__name__}"
        )
    if not features_by_model:
        raise ValueError(f"{name}: features_by_model is empty")
    nested = [isinstance(v, Mapping) for v in features_by_model.values()]
    if any(nested) and not all(nested):
        raise TypeError(
            f"{name}: features_by_model mixes models given as arrays and as {{layer: features}} "
            f"mappings; give every model the same way"
        )
    flat = {}
    for model, v in features_by_model.items():
        if not nested[0]:
            flat[(model, None)] = v
            continue
        if not v:
            raise ValueError(f"{name}: model {model!r} has no layers")
        for layer, x in v.items():
            flat[(model, layer)] = x
    return flat, nested[0]


def score_hub(
    metric: str | MetricInfo,
    features_by_model: Mapping[str, ArrayLike] | Mapping[str, Mapping[str, ArrayLike]],
    labels: ArrayLike | None = None,
    *,
    batch_size: int | None = None,
    max_buckets: int | None = None,
    key: Array | None = None,
    progress: Callable[[int, int], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    reduce_dim: int | None = None,
    **options,
) -> dict:
    r"""Score every model (or every layer of every model) of a hub with one metric.

    Features of width ``d_m`` are zero-padded to their bucket's width (:func:`plan_buckets`) and
    the metric is ``vmap``-ed over the candidates of each bucket with their true widths traced:
    the result equals scoring the candidates one by one. Static options a traced metric cannot
    derive itself come from the concrete inputs (TransRate's largest class, NLEEP's mixture
    dimension); options passed by the caller win. A layer-wise hub ``{model: {layer: features}}``
    is scored as one pool of (model, layer) candidates (:func:`aggregate_layers` reduces the
    result to one score per model). Pool-relative metrics (ETran, NCTI) compute their raw terms
    per candidate, then min-max normalise each term over all candidates scored together
    (:mod:`transferjax.pooling`). Label-free metrics (RankMe, α-ReQ) take ``labels=None``.

    Args:
      metric: a registered metric name (``tj.metric_names()``) or its :class:`MetricInfo`.
      features_by_model: ``{name: [n, d_m]}`` or ``{name: {layer: [n, d_ml]}}``, same ``n`` for
        all, widths may differ. For metrics reading source probabilities / source labels, the
        per-model arrays are those instead (scored one by one).
      labels: ``[n]`` integer labels (or float targets where the metric supports regression);
        ``None`` for label-free metrics.
      batch_size: at most this many candidates scored at once per bucket (``lax.map`` over
        chunks of a ``vmap``; bounds memory). Default ``None``: the whole bucket at once.
      max_buckets: at most this many distinct padded widths (compilations); ``1`` pads everything
        to the widest model.
      key: PRNG key for metrics that need one (the same key for every model, so a score does not
        depend on the model's position in the hub).
      progress: optional callback ``progress(done, total)`` (candidates) called after each bucket.
      mesh: shard the model axis over this device mesh's first axis (e.g.
        ``tj.streaming.sample_mesh()``). Over several processes (``jax.distributed``) each
        process passes the models it holds and receives every score.
      reduce_dim: score every candidate on its top-``k`` principal components
        (:func:`reduce_dim`), a common dimension across widths. Features metrics only.
      **options: keyword options of the metric.

    Returns:
      ``{name: scalar jax.Array}`` in the input order, or ``{name: {layer: scalar}}`` for a
      layer-wise hub.

    Raises:
      TypeError: ``features_by_model`` is not a mapping; unhashable options.
      ValueError: an empty hub, models with different ``n``, bad features or labels (the
        metric's own checks), missing labels for a metric that uses them, an unknown metric.
    """
    info = get_metric(metric)
    name = f"score_hub[{info.name}]"
    if reduce_dim is not None:
        _validation.check_positive_int(reduce_dim, name=name, arg="reduce_dim")
        if info.inputs != "features":
            raise ValueError(f"{name}: reduce_dim applies to features metrics only")
    multi = mesh is not None and distributed.is_multiprocess(mesh)
    if multi and isinstance(features_by_model, Mapping) and not features_by_model:
        flat, layered = {}, False  # a process may hold none of the models
    else:
        flat, layered = _flatten_hub(features_by_model, name)
    if multi:
        mesh = distributed.local_mesh(mesh)
        distributed.agree(name, n=-1 if labels is None else int(np.shape(labels)[0]))
    if info.needs_key and key is None:
        raise ValueError(f"{name}: metric {info.name!r} needs key=")
    if info.uses_labels and labels is None:
        raise ValueError(f"{name}: metric {info.name!r} needs labels")
    cands = list(flat)
    arrays = [flat[c] for c in cands]
    label = [repr(m) if l is None else f"{m!r}/{l!r}" for m, l in cands]

    if not cands:
        raw = []
    elif info.inputs != "features":
        raw = []
        for i, a in enumerate(arrays):
            kw = dict(options, **({"key": key} if info.needs_key else {}))
            raw.append(info.fn(a, labels, **kw))
            if progress is not None:
                progress(i + 1, len(cands))
    else:
        raw = _score_features(
            info, name, arrays, label, labels, options, batch_size=batch_size,
            max_buckets=max_buckets, key=key, progress=progress, mesh=mesh, reduce_to=reduce_dim,
        )
    if multi:  # every process gets every process's candidates, in process order
        keyed = distributed.gather_mapping(
            {_SEP.join(map(str, c)) if c[1] is not None else c[0]: r
             for c, r in zip(cands, raw)},
            name=name,
        )
        cands = [tuple(k.split(_SEP, 1)) if _SEP in k else (k, None) for k in keyed]
        raw = list(keyed.values())
        layered = layered or any(layer is not None for _, layer in cands)
    if info.pool_weights is not None:
        pooled = combine_min_max(
            {c: {t: float(v) for t, v in r.items()} for c, r in zip(cands, raw)},
            info.pool_weights,
            name=name,
        )
        raw = [jnp.asarray(pooled[c]) for c in cands]
    if not layered:
        return {m: r for (m, _), r in zip(cands, raw)}
    out: dict = {}
    for (m, l), r in zip(cands, raw):
        out.setdefault(m, {})[l] = r
    return out


def _score_features(
    info, name, arrays, label, labels, options, *, batch_size, max_buckets, key, progress, mesh,
    reduce_to=None,
) -> list:
    """Scores (or term dicts) of features candidates, in order, by bucketed vmapped calls."""
    for k, a in zip(label, arrays):
        _validation.check_features(a, name=name, arg=f"features of model {k}")
    _validation.check_same_n(name, **{f"model {k}": a for k, a in zip(label, arrays)})
    n = int(np.shape(arrays[0])[0])
    smallest = info.smallest_dim(options)
    if smallest > 1:
        small = [k for k, a in zip(label, arrays)
                 if min(n, reduce_to or np.shape(a)[1], np.shape(a)[1]) < smallest]
        if small:
            raise ValueError(
                f"{name}: {info.name} needs min(n, d) >= {smallest}; too small: "
                f"{', '.join(small)} (n={n})"
            )
    num_classes = None
    labels_j = None
    if info.uses_labels:
        targets = _validation.check_targets(
            labels, n, name=name, allow_regression="regression" in info.tasks
        )
        labels_j = jnp.asarray(targets.values)
        num_classes = targets.num_classes
        if info.label_options is not None and _validation.is_concrete(targets.values):
            options = {**info.label_options(np.asarray(targets.values)), **options}
    try:
        opts = tuple(sorted(options.items()))
        hash(opts)
    except TypeError:
        raise TypeError(f"{name}: metric options must be hashable (numbers, strings, tuples)")
    widths = [int(np.shape(a)[1]) for a in arrays]
    scores: dict[int, object] = {}
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
        fn = _compiled(info.name, num_classes, group_opts, chunk, reduce_to)
        vals = fn(fj, wj, labels_j, key)
        for j, i in enumerate(group):
            scores[i] = jax.tree.map(lambda a, j=j: a[j], vals)
        done += m
        if progress is not None:
            progress(done, len(arrays))
    return [scores[i] for i in range(len(arrays))]


def aggregate_layers(
    scores: Mapping[str, Mapping[str, ArrayLike]], how: str = "best"
) -> dict[str, float]:
    """One score per model from a layer-wise hub's ``{model: {layer: score}}``.

    ``how``: ``"best"`` the model's highest layer score (pick the layer, then the model),
    ``"mean"`` the mean over its layers, ``"last"`` the layer given last (the usual penultimate
    tap). Returns ``{model: float}``; :func:`best_layers` names the layer ``"best"`` picks.

    Raises:
      ValueError: an unknown ``how``; a model without layers.
      TypeError: ``scores`` is not a mapping of mappings.
    """
    if how not in ("best", "mean", "last"):
        raise ValueError(f"aggregate_layers: how must be 'best', 'mean' or 'last', got {how!r}")
    if not isinstance(scores, Mapping) or not all(isinstance(v, Mapping) for v in scores.values()):
        raise TypeError("aggregate_layers: scores must be {model: {layer: score}}")
    out = {}
    for model, layers in scores.items():
        if not layers:
            raise ValueError(f"aggregate_layers: model {model!r} has no layers")
        vals = [float(v) for v in layers.values()]
        out[model] = max(vals) if how == "best" else (
            sum(vals) / len(vals) if how == "mean" else vals[-1]
        )
    return out


def best_layers(scores: Mapping[str, Mapping[str, ArrayLike]]) -> dict[str, str]:
    """``{model: layer}`` with the highest score per model (first one on ties)."""
    return {m: max(layers, key=lambda l: float(layers[l])) for m, layers in scores.items()}
