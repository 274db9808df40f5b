"""Past one machine: statistics and hub scores over the processes of JAX's multi-controller runtime.

With ``jax.distributed.initialize(...)`` every process runs the same program on its own rows (or
its own models). The statistics are mergeable (:func:`~transferjax.merge_stats`), so each process
computes them over its local rows and the processes exchange the small result with a collective
(``process_allgather``, JAX's own runtime: no sockets, files or RPC of ours); every process then
holds the same merged statistics. Hub scores are exchanged the same way. With one process every
function here is the identity.

Before anything is exchanged the processes compare their shapes (widths, classes, dtype): when
they disagree every process raises the same ``ValueError`` instead of hanging in a collective of
mismatched shapes.
"""

from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from .stats import FeatureStats, empty_stats, merge_stats

__all__ = [
    "is_multiprocess",
    "agree",
    "merge_stats_across_processes",
    "sum_across_processes",
    "combine_across_processes",
    "gather_mapping",
    "local_mesh",
]


def is_multiprocess(mesh: jax.sharding.Mesh | None = None) -> bool:
    """Whether more than one process takes part (the mesh's devices, or the runtime's)."""
    if mesh is not None:
        return len({d.process_index for d in mesh.devices.flat}) > 1
    return jax.process_count() > 1


def _allgather(x) -> np.ndarray:
    """``[num_processes, ...]``: every process's ``x`` (same shape and dtype everywhere)."""
    return np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=False))


def agree(name: str, **values: int) -> None:
    """Every process passes the same integers (shapes, class counts, dtype codes), else raise.

    Raises:
      ValueError: on every process, naming what differs and each process's value.
    """
    if jax.process_count() == 1:
        return
    keys = sorted(values)
    mine = np.asarray([int(values[k]) for k in keys], np.int64)
    table = _allgather(mine)
    for j, k in enumerate(keys):
        col = table[:, j]
        if np.any(col != col[0]):
            per = ", ".join(f"process {p}: {int(v)}" for p, v in enumerate(col))
            raise ValueError(f"{name}: the processes disagree on {k} ({per})")


def merge_stats_across_processes(stats: FeatureStats | None, *, name: str) -> FeatureStats:
    """The statistics of the rows of every process, identical on every process.

    Each process passes the statistics of its local rows, or ``None`` when it has none (its
    shapes are then taken from the others); the result equals the statistics of all rows (up to
    summation order).

    Raises:
      ValueError: on every process, when processes disagree on widths, classes, targets, the
        per-class scatters or the dtype, or when no process has rows.
    """
    if jax.process_count() == 1:
        if stats is None:
            raise ValueError(f"{name}: no rows")
        return stats
    meta = np.asarray(
        [0, 0, 0, 0, 0, 0] if stats is None else [
            1, stats.num_features, stats.num_classes, stats.target_mean.shape[-1],
            int(stats.class_scatter.shape[-3] > 0), jnp.dtype(stats.mean.dtype).itemsize * 8,
        ],
        np.int64,
    )
    table = _allgather(meta)
    rows = table[table[:, 0] == 1]
    if rows.shape[0] == 0:
        raise ValueError(f"{name}: no process has any rows")
    for j, what in enumerate(("width", "classes", "targets", "class_scatter", "dtype bits"), 1):
        col = rows[:, j]
        if np.any(col != col[0]):
            per = ", ".join(
                f"process {p}: {int(table[p, j])}" for p in range(table.shape[0]) if table[p, 0]
            )
            raise ValueError(f"{name}: the processes disagree on {what} ({per})")
    _, d, c, k, cs, bits = (int(v) for v in rows[0])
    if stats is None:
        stats = empty_stats(d, c, k, jnp.dtype(f"float{bits}"), class_scatter=bool(cs))
    leaves, tree = jax.tree.flatten(stats)
    gathered = [_allgather(leaf) for leaf in leaves]
    parts = [
        jax.tree.unflatten(tree, [jnp.asarray(g[p]) for g in gathered])
        for p in range(jax.process_count())
    ]
    return functools.reduce(merge_stats, parts)


def sum_across_processes(tree, *, name: str):
    """The elementwise sum over processes of a pytree of arrays (a second pass's carry)."""
    if jax.process_count() == 1:
        return tree
    leaves, struct = jax.tree.flatten(tree)
    agree(name, leaves=len(leaves), **{f"size{i}": np.size(x) for i, x in enumerate(leaves)})
    return jax.tree.unflatten(struct, [jnp.asarray(_allgather(x).sum(0)) for x in leaves])


def combine_across_processes(carry, init, *, merge=None, name: str):
    """Every process's ``carry`` combined: ``merge`` folded over processes, or summed as
    ``init + Σ_p (carry_p − init)`` (a second pass whose step adds to its carry)."""
    if jax.process_count() == 1:
        return carry
    leaves, struct = jax.tree.flatten(carry)
    agree(name, leaves=len(leaves), **{f"size{i}": np.size(x) for i, x in enumerate(leaves)})
    gathered = [_allgather(x) for x in leaves]
    parts = [
        jax.tree.unflatten(struct, [jnp.asarray(g[p], jnp.asarray(x).dtype)
                                    for g, x in zip(gathered, leaves)])
        for p in range(jax.process_count())
    ]
    if merge is not None:
        return functools.reduce(merge, parts)
    return jax.tree.map(lambda i, *ps: i + sum(p - i for p in ps), init, *parts)


def _gather_strings(items: list[str]) -> list[list[str]]:
    """Every process's list of strings, in process order."""
    code = np.frombuffer("\x00".join(items).encode(), np.uint8)
    length = _allgather(np.asarray([code.size, len(items)], np.int64))
    padded = np.zeros((max(int(length[:, 0].max()), 1),), np.uint8)
    padded[: code.size] = code
    codes = _allgather(padded)
    out = []
    for p in range(codes.shape[0]):
        text = bytes(codes[p, : int(length[p, 0])]).decode()
        out.append(text.split("\x00") if int(length[p, 1]) else [])
    return out


def gather_mapping(local: Mapping[str, object], *, name: str) -> dict:
    """``{model: value}`` of every process merged; every process receives the whole mapping.

    A value is a scalar (a score) or a flat ``{term: scalar}`` (a pool-relative metric's raw
    terms). A process may hold no models. The result is ordered by process, then as given.

    Raises:
      ValueError: a model held by two processes.
    """
    if jax.process_count() == 1:
        return dict(local)
    entries, values = [], []
    for k, v in local.items():
        if isinstance(v, Mapping):
            for t, x in v.items():
                entries.append(f"{k}\x01{t}")
                values.append(float(x))
        else:
            entries.append(str(k))
            values.append(float(v))
    all_entries = _gather_strings(entries)
    count = _allgather(np.asarray(len(values), np.int64))
    buf = np.zeros((max(int(count.max()), 1),), np.float64)
    buf[: len(values)] = values
    all_values = _allgather(buf)
    owners: dict = {}
    for p, ents in enumerate(all_entries):
        for e in ents:
            owners.setdefault(e.split("\x01", 1)[0], set()).add(p)
    dup = sorted(m for m, ps in owners.items() if len(ps) > 1)
    if dup:
        raise ValueError(f"{name}: models held by more than one process: {dup}")
    dt = jnp.result_type(float)
    out: dict = {}
    for p, ents in enumerate(all_entries):
        for j, e in enumerate(ents):
            value = jnp.asarray(all_values[p, j], dt)
            if "\x01" in e:
                m, t = e.split("\x01", 1)
                out.setdefault(m, {})[t] = value
            else:
                out[e] = value
    return out


def local_mesh(mesh: jax.sharding.Mesh) -> jax.sharding.Mesh:
    """The 1-D mesh of this process's devices of ``mesh`` (its first axis name)."""
    mine = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    return jax.make_mesh(
        (len(mine),), (mesh.axis_names[0],), axis_types=(jax.sharding.AxisType.Auto,),
        devices=mine,
    )
