"""One process of the two-process test (tests/test_distributed.py), launched as docs/distributed.md
shows:

    python tests/distributed_worker.py --coordinator localhost:PORT --num-processes 2 --process-id I

Each process holds half of the rows of a golden case and half of the golden hub's models; it checks
that the merged statistics, LogME from them, SFDA's second pass and the hub scores equal what one
process computes from everything, then prints ``OK <process id>``. ``--disagree`` makes process 1
pass features of another width: every process must raise the same ValueError (no hang).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--num-processes", type=int, required=True)
    ap.add_argument("--process-id", type=int, required=True)
    ap.add_argument("--golden", required=True, help="the golden folder (inputs/*.npz)")
    ap.add_argument("--disagree", action="store_true")
    args = ap.parse_args()

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_num_cpu_devices", 2)
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )
    jax.config.update("jax_enable_x64", True)
    import transferjax as tj

    me, procs = jax.process_index(), jax.process_count()
    mesh = jax.make_mesh(
        (jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
    )
    data = np.load(Path(args.golden) / "inputs" / "c1_small.npz")
    x, y = data["features"].astype(np.float64), data["labels"]
    c = int(y.max()) + 1
    rows = np.array_split(np.arange(x.shape[0]), procs)[me]
    mine_x, mine_y = x[rows], y[rows]
    if args.disagree and me == 1:
        mine_x = mine_x[:, :-1]
    try:
        st = tj.sharded_stats(mine_x, mine_y, c, mesh=mesh)
    except ValueError as err:
        print(f"ValueError {me}: {err}", flush=True)
        return 3

    one = tj.feature_stats(jax.numpy.asarray(x), jax.numpy.asarray(y), num_classes=c)
    for field in ("count", "mean", "scatter", "class_counts", "class_sums", "within"):
        np.testing.assert_allclose(getattr(st, field), getattr(one, field), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(tj.logme(stats=st), tj.logme(x, y), rtol=1e-9)

    # a second pass over each process's own rows (SFDA's ConfMix statistics and score, GBC)
    local_pass = lambda: [(mine_x[i : i + 50], mine_y[i : i + 50]) for i in range(0, len(rows), 50)]  # noqa: E731
    np.testing.assert_allclose(
        tj.sfda(stats=st, second_pass=local_pass), tj.sfda(x, y), rtol=1e-8
    )
    full = tj.sharded_stats(mine_x, mine_y, c, mesh=mesh, class_scatter=True)
    np.testing.assert_allclose(
        tj.gbc(stats=full, pca_dim=4), tj.gbc(x, y, pca_dim=4), rtol=1e-8
    )

    # streamed: this process's rows in chunks of 64
    local = [(mine_x[i : i + 64], mine_y[i : i + 64]) for i in range(0, len(rows), 64)]
    streamed = tj.stream_stats(local, num_classes=c)
    np.testing.assert_allclose(tj.logme(stats=streamed), tj.logme(x, y), rtol=1e-9)
    # a process with no rows is legal: process 0 holds none, the last one holds all
    lopsided = (x[:0], y[:0]) if me == 0 else (x, y)
    st = tj.sharded_stats(*lopsided, c, mesh=mesh)
    np.testing.assert_allclose(tj.logme(stats=st), tj.logme(x, y), rtol=1e-9)
    chunks = [] if me == 0 else [(x[i : i + 100], y[i : i + 100]) for i in range(0, len(y), 100)]
    np.testing.assert_allclose(
        tj.logme(stats=tj.stream_stats(chunks, num_classes=c)), tj.logme(x, y), rtol=1e-9
    )

    # a hub: each process holds half of the models; every process gets every score
    hub = np.load(Path(args.golden) / "inputs" / "hub.npz")
    models = [k for k in hub.files if k.startswith("model")]
    mine_models = {k: hub[k] for k in np.array_split(np.array(models), procs)[me]}
    scores = tj.score_hub("logme", mine_models, hub["labels"], mesh=mesh)
    assert list(scores) == models, (list(scores), models)
    for k in models:
        np.testing.assert_allclose(scores[k], tj.logme(hub[k], hub["labels"]), rtol=1e-9)
    print(f"OK {me}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
