"""1 vs 2 processes: streamed LogME statistics over N×D rows (default 10⁶ × 256, C = 100).

    python -m bench distributed [--rows 1000000] [--width 256] [--processes 1 2] [--no-write]

Each process generates its share of the rows chunk by chunk (deterministic per chunk, so the
processes together see exactly the rows one process sees), streams them into
``tj.stream_stats`` (merged across processes by JAX's runtime) and scores LogME from the
statistics. Reports wall time of the whole stream + merge + score, rows/s and peak RSS per process.
The processes share this machine's cores, so two processes on two cores measure the overhead of
the multi-process merge, not a speed-up from more hardware. Appends to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository root: where `python -m bench` runs


def _worker(args) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if args.num_processes > 1:
        jax.distributed.initialize(
            coordinator_address=args.coordinator, num_processes=args.num_processes,
            process_id=args.process_id,
        )
    import numpy as np

    import transferjax as tj

    chunk, c = args.chunk, 100
    n_chunks = args.rows // chunk
    mine = range(args.process_id, n_chunks, args.num_processes)

    def chunks():
        for i in mine:
            rng = np.random.default_rng(i)
            y = rng.integers(0, c, chunk)
            x = rng.normal(size=(chunk, args.width)).astype(np.float32)
            x[:, :c] += 0.5 * np.eye(c, dtype=np.float32)[y][:, : args.width]
            yield x, y

    t0 = time.perf_counter()
    stats = tj.stream_stats(chunks(), num_classes=c)
    score = float(tj.logme(stats=stats))
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"process": args.process_id, "wall_s": wall, "rss_mb": rss,
                      "rows": len(mine) * chunk, "logme": score}), flush=True)


def _launch(nproc: int, args) -> list[dict]:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "bench", "distributed", "--worker",
           "--coordinator", f"localhost:{port}",
           "--num-processes", str(nproc), "--rows", str(args.rows), "--width", str(args.width),
           "--chunk", str(args.chunk)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen(cmd + ["--process-id", str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
             for i in range(nproc)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench distributed",
                                 description=__doc__.splitlines()[0])  # fmt: skip
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=10_000)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--coordinator")
    ap.add_argument("--num-processes", type=int, default=1)
    ap.add_argument("--process-id", type=int, default=0)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    from .common import section_head, write_section

    head = section_head(f"Streamed LogME statistics over processes, C=100, chunks of {args.chunk}")
    lines = [
        "| processes | rows × width | wall s (median) | rows/s | peak RSS MB per process | LogME |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(head + lines), flush=True)
    for nproc in args.processes:
        runs = [_launch(nproc, args) for _ in range(args.repeats)]
        walls = sorted(max(r["wall_s"] for r in run) for run in runs)
        med = walls[len(walls) // 2]
        rss = max(r["rss_mb"] for run in runs for r in run)
        row = (f"| {nproc} | {args.rows}×{args.width} | {med:.2f} | {args.rows / med:,.0f} | "
               f"{rss:.0f} | {runs[0][0]['logme']:.6f} |")  # fmt: skip
        print(row, flush=True)
        lines.append(row)
    lines.append(f"\nWall: stream + merge + score, the slowest process, median of {args.repeats} "
                 "launches; the processes share this machine's cores.")
    print(lines[-1])
    write_section(head, lines, write=not args.no_write, echo=False)
