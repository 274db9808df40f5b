"""Batched, jitted feature extraction from Flax models.

The forward pass is compiled once for a fixed batch shape: the last batch is zero-padded to that
shape and its padded rows are dropped on the host. Features are pooled to ``[n, d]`` and returned
as a NumPy array, ready for any metric in :mod:`transferjax` or :func:`transferjax.score_hub`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._progress import progress_bar

__all__ = ["extract", "extract_module", "pool_features"]

_POOLS = ("mean", "max", "flatten")


def _check_images(images, name: str) -> np.ndarray | jax.Array:
    if not isinstance(images, (np.ndarray, jax.Array)):
        try:
            images = np.asarray(images)
        except Exception as err:  # pragma: no cover - exotic inputs
            raise TypeError(
                f"{name}: images must be an array, got {type(images).__name__}"
            ) from err
    if isinstance(images, jax.core.Tracer):
        raise TypeError(f"{name}: images must be concrete (call extraction outside jax.jit)")
    if np.dtype(images.dtype).kind != "f":
        raise TypeError(
            f"{name}: images must be floating point (normalised pixels, see "
            f"transferjax.features.data.normalize), got dtype {images.dtype}"
        )
    if images.ndim != 4:
        raise ValueError(
            f"{name}: images must be [n, height, width, channels] (NHWC), got shape "
            f"{tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name}: images is empty (n = 0); nothing to extract")
    if min(images.shape[1:]) == 0:
        raise ValueError(f"{name}: images has an empty spatial or channel axis: {images.shape}")
    return images


def pool_features(out: jax.Array, pool: str = "mean") -> jax.Array:
    """Pool a model output to ``[b, d]``.

    ``[b, d]`` is returned as is; ``[b, ..., d]`` (feature maps ``[b, h, w, d]`` or tokens
    ``[b, t, d]``) is averaged (``"mean"``) or maxed (``"max"``) over the middle axes, or
    flattened (``"flatten"``).
    """
    if pool not in _POOLS:
        raise ValueError(f"pool_features: pool must be one of {_POOLS}, got {pool!r}")
    if out.ndim < 2:
        raise ValueError(f"pool_features: model output must be [batch, ..., d], got {out.shape}")
    if out.ndim == 2:
        return out
    if pool == "flatten":
        return out.reshape(out.shape[0], -1)
    axes = tuple(range(1, out.ndim - 1))
    return out.mean(axis=axes) if pool == "mean" else out.max(axis=axes)


def _run(forward, params, images, *, batch_size, progress, mesh, name, dtype):
    """Shared driver: fixed-shape batches, optional sharding, finiteness check, host gather."""
    images = _check_images(images, name)
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool):
        raise TypeError(f"{name}: batch_size must be an int, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"{name}: batch_size must be >= 1, got {batch_size}")
    n = int(images.shape[0])
    b = min(int(batch_size), n)
    batch_sharding = None
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec

        axis = mesh.axis_names[0]
        shards = int(mesh.shape[axis])
        b = -(-b // shards) * shards  # a multiple of the device count
        batch_sharding = NamedSharding(mesh, PartitionSpec(axis))
        params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
    num_batches = -(-n // b)
    if callable(progress):
        report = progress
    elif progress:
        report = progress_bar(f"{name}: {n} images", unit="batch")
    else:
        report = None

    chunks: list = []
    for i in range(num_batches):
        batch = np.asarray(images[i * b : (i + 1) * b], dtype=dtype)
        rows = batch.shape[0]
        if rows < b:  # pad the last batch: one compiled shape for every call
            batch = np.concatenate([batch, np.zeros((b - rows,) + batch.shape[1:], dtype)])
        x = jax.device_put(batch, batch_sharding) if batch_sharding is not None else batch
        out = forward(params, x)
        batch_feats = {k: np.asarray(v)[:rows] for k, v in out.items()} if isinstance(
            out, dict) else {None: np.asarray(out)[:rows]}
        for key, feats in batch_feats.items():
            where = "" if key is None else f" (layer {key!r})"
            if feats.ndim != 2:
                raise ValueError(
                    f"{name}: pooled features must be [batch, d], got {feats.shape}{where}"
                )
            bad = ~np.isfinite(feats).all(axis=1)
            if bad.any():
                first = i * b + int(np.argmax(bad))
                raise ValueError(
                    f"{name}: the model returned non-finite features (NaN or inf){where} for "
                    f"{int(bad.sum())} image(s) of batch {i}, first at index {first}; check the "
                    "input normalisation and the weights"
                )
        chunks.append(batch_feats)
        if report is not None:
            report(i + 1, num_batches)
    merged = {k: np.concatenate([c[k] for c in chunks], axis=0) for k in chunks[0]}
    return merged[None] if list(merged) == [None] else merged


def extract(
    apply_fn: Callable[..., Any],
    params: Any,
    images: Any = None,
    *,
    batch_size: int = 256,
    layer: str | None = None,
    layers: Sequence[str] | None = None,
    pool: str = "mean",
    progress: bool | Callable[[int, int], None] = True,
    mesh: jax.sharding.Mesh | None = None,
    dtype: Any = np.float32,
) -> np.ndarray | dict[str, np.ndarray]:
    r"""Features ``[n, d]`` of ``images`` under a functional model ``apply_fn(params, batch)``.

    Runs ``apply_fn`` jitted over batches of a fixed shape ``[b, h, w, c]`` (the last batch is
    zero-padded and its padded rows dropped, so there is one compile), pools the output to
    ``[b, d]`` (:func:`pool_features`) and gathers the result on the host.

    ``layer`` selects the penultimate output for Linen-style functions: ``apply_fn(params, x,
    method=layer)`` (e.g. ``extract(model.apply, variables, x, layer="features")`` for a
    ``flax.linen`` module with a ``features`` method). For an ``nnx.Module`` use
    :func:`extract_module` (``extract(module, images, ...)`` forwards there).

    Args:
      apply_fn: ``apply_fn(params, batch) -> [b, ..., d]``; must be jittable and per-sample
        (no statistics across the batch: BatchNorm in inference mode).
      params: pytree of parameters (traced, so new weights do not recompile).
      images: ``[n, h, w, c]`` floating-point images (NHWC), already normalised for the model.
      batch_size: rows per forward pass (rounded up to a multiple of the device count when
        ``mesh`` is given; capped at ``n``).
      layer: method name passed as ``method=`` to ``apply_fn`` (Linen), or ``None``.
      layers: several taps from one forward pass, for a Linen ``Module.apply``: submodule paths
        (``"Dense_0"``, ``"backbone/stage3"``) read from ``capture_intermediates``; returns
        ``{layer: [n, d_layer]}``.
      pool: ``"mean"`` (global average pooling of feature maps), ``"max"`` or ``"flatten"``.
      progress: ``True`` draws a progress bar on stderr; a callable gets ``(done, total)``
        batches; ``False`` is silent.
      mesh: optional :class:`jax.sharding.Mesh`; each batch is sharded over its first axis
        (``NamedSharding(mesh, P(axis))``) and ``params`` are replicated.
      dtype: dtype the images are cast to before the forward pass (default float32).

    Returns:
      ``np.ndarray`` ``[n, d]`` (the model's output dtype).

    Raises:
      TypeError: images not floating point; ``batch_size`` not an int.
      ValueError: images not 4-D, empty; ``batch_size`` < 1; the model returned NaN/inf.

    Examples:
      >>> import numpy as np, jax.numpy as jnp
      >>> from transferjax.features import extract
      >>> apply = lambda w, x: jnp.tanh(x @ w)          # [b, h, w, 3] -> [b, h, w, 4]
      >>> x = np.random.default_rng(0).normal(size=(10, 8, 8, 3)).astype("float32")
      >>> extract(apply, jnp.ones((3, 4)), x, batch_size=4, progress=False).shape
      (10, 4)
    """
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is a core dependency today
        nnx = None
    if nnx is not None and isinstance(apply_fn, nnx.Module):
        if images is not None and params is not None:
            raise TypeError("extract: with an nnx.Module call extract(module, images, ...)")
        return extract_module(
            apply_fn,
            params if images is None else images,
            batch_size=batch_size,
            layer=layer,
            layers=layers,
            pool=pool,
            progress=progress,
            mesh=mesh,
            dtype=dtype,
        )
    if not callable(apply_fn):
        raise TypeError(f"extract: apply_fn must be callable, got {type(apply_fn).__name__}")
    if pool not in _POOLS:
        raise ValueError(f"extract: pool must be one of {_POOLS}, got {pool!r}")
    kwargs = {} if layer is None else {"method": layer}
    if layers is not None:
        if layer is not None:
            raise TypeError("extract: pass layer= or layers=, not both")
        if isinstance(layers, str) or not layers or not all(isinstance(t, str) for t in layers):
            raise TypeError(f"extract: layers must be a non-empty list of names, got {layers!r}")
        taps = tuple(dict.fromkeys(layers))

        @jax.jit
        def forward_taps(p, x):
            _, state = apply_fn(p, x, capture_intermediates=True, mutable=["intermediates"])
            return {t: pool_features(jnp.asarray(_linen_tap(state, t)), pool) for t in taps}

        out = _run(forward_taps, params, images, batch_size=batch_size, progress=progress,
                   mesh=mesh, name="extract", dtype=dtype)
        return {t: out[t] for t in taps}  # jit returns dicts in sorted key order

    @jax.jit
    def forward(p, x):
        return pool_features(jnp.asarray(apply_fn(p, x, **kwargs)), pool)

    return _run(
        forward,
        params,
        images,
        batch_size=batch_size,
        progress=progress,
        mesh=mesh,
        name="extract",
        dtype=dtype,
    )


def _module_forward(module, layer: str | None):
    """Pure function of the module calling the penultimate layer (or the named one)."""
    if layer is None:
        layer = "features" if callable(getattr(module, "features", None)) else "__call__"
    if "/" not in layer and "." not in layer and inspect.ismethod(getattr(module, layer, None)):
        return lambda m, x: getattr(m, layer)(x)
    # A nested layer such as "stage4" or "blocks.3.features": one tap of the captured pass.
    taps = _module_taps((layer,))
    return lambda m, x: taps(m, x)[layer]


def _linen_tap(state, layer: str):
    """The output of submodule ``layer`` ("a/b" or "a.b") in a Linen ``capture_intermediates``."""
    node = state.get("intermediates", {})
    for p in (q for q in layer.replace(".", "/").split("/") if q):
        if not hasattr(node, "get") or p not in node:
            raise ValueError(f"extract: layer {layer!r} is not a submodule that the forward "
                             "pass calls (capture_intermediates recorded no output for it)")
        node = node[p]
    if hasattr(node, "get") and "__call__" in node:
        node = node["__call__"]
    return node[-1] if isinstance(node, tuple) else node


def _module_taps(layers: tuple[str, ...]):
    """Pure function of the module returning ``{layer: output}`` for every tap, from one pass.

    The module's ``__call__`` runs once under ``nnx.capture(..., method_outputs=...)``, which
    records the output of every method and submodule call; each tap is read from that record.
    """
    from flax import nnx

    paths = {
        layer: tuple(int(p) if p.isdigit() else p for p in layer.replace("/", ".").split(".") if p)
        for layer in layers
    }

    def fn(m, x):
        _, inter = nnx.capture(m, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)
        out = {}
        for layer, path in paths.items():
            node = inter
            try:
                for p in path:
                    node = node[p]
                if not isinstance(node, nnx.Variable):
                    node = node["__call__"]
            except (KeyError, IndexError, TypeError) as err:
                raise ValueError(
                    f"extract_module: layer {layer!r} is not a method or submodule path whose "
                    "output the module's forward pass computes"
                ) from err
            value = node.get_value()
            out[layer] = value[-1] if isinstance(value, tuple) else value
        return out

    return fn


def extract_module(
    module: Any,
    images: Any,
    *,
    batch_size: int = 256,
    layer: str | None = None,
    layers: Sequence[str] | None = None,
    pool: str = "mean",
    progress: bool | Callable[[int, int], None] = True,
    mesh: jax.sharding.Mesh | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    r"""Features ``[n, d]`` of ``images`` under a ``flax.nnx.Module``.

    The module is split once (``graphdef, state = nnx.split(module)``); a jitted
    ``(state, batch) -> features`` merges it inside, switches the copy to inference mode
    (``.eval()``: BatchNorm running averages, no dropout; ``module`` itself is not changed) and
    calls the feature layer:

    * ``layer=None``: ``module.features(x)`` when the module has a ``features`` method (every zoo
      model does: the input of the classifier that fine-tuning re-initialises), else
      ``module(x)``;
    * ``layer="name"``: the method ``module.name(x)``;
    * ``layer="sub.path"``: the output of a submodule's ``__call__`` (or named method), recorded
      with ``nnx.capture(..., method_outputs=nnx.Intermediate)`` (never ``sow`` outside capture).

    * ``layers=[...]``: several taps from **one** forward pass (``module(x)`` under
      ``nnx.capture``), each pooled; returns ``{layer: [n, d_layer]}`` (zoo models list theirs
      with ``model.taps()``).

    Other arguments, return value and errors as :func:`extract`.

    Examples:
      >>> import numpy as np
      >>> from flax import nnx
      >>> from transferjax.features import extract_module
      >>> model = nnx.Linear(3, 5, rngs=nnx.Rngs(0))   # applied to the last axis, then pooled
      >>> x = np.zeros((7, 4, 4, 3), np.float32)
      >>> extract_module(model, x, batch_size=4, progress=False).shape
      (7, 5)
    """
    from flax import nnx

    if not isinstance(module, nnx.Module):
        raise TypeError(f"extract_module: module must be a flax.nnx.Module, got {type(module)}")
    if pool not in _POOLS:
        raise ValueError(f"extract_module: pool must be one of {_POOLS}, got {pool!r}")
    if layers is not None:
        if layer is not None:
            raise TypeError("extract_module: pass layer= or layers=, not both")
        if isinstance(layers, str) or not layers or not all(isinstance(t, str) for t in layers):
            raise TypeError(f"extract_module: layers must be a non-empty list of names, got {layers!r}")
        taps = tuple(dict.fromkeys(layers))
    graphdef, state = nnx.split(module)
    call = _module_taps(taps) if layers is not None else _module_forward(module, layer)

    @jax.jit
    def forward(st, x):
        m = nnx.merge(graphdef, st)
        m.eval()
        out = call(m, x)
        if isinstance(out, dict):
            return {k: pool_features(jnp.asarray(v), pool) for k, v in out.items()}
        return pool_features(jnp.asarray(out), pool)

    out = _run(
        forward,
        state,
        images,
        batch_size=batch_size,
        progress=progress,
        mesh=mesh,
        name="extract_module",
        dtype=dtype,
    )
    return out if layers is None else {t: out[t] for t in taps}  # jit sorts dict keys
