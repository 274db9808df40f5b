"""LogME over N = 10⁶ rows streamed from a generator: throughput, peak memory, float32 accuracy.

    python -m bench stream [--n 1000000] [--d 256] [--c 50] [--chunk 8192] [--no-write]

The generator makes each chunk on the fly (post-ReLU Gaussian features with class offsets), so the
full matrix (N·D·4 bytes: 1 GB at D=256) never exists. Peak RSS is read from getrusage. The float32
stream is compared with a float64 stream of the same chunks (the accuracy of the Chan merges).
"""

from __future__ import annotations

import argparse
import resource
import time

import jax
import numpy as np

import transferjax as tj

from .common import section_head, write_section


def chunks(n, d, c, size, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 0.3, (c, d)).astype(np.float32)
    for start in range(0, n, size):
        b = min(size, n - start)
        y = rng.integers(0, c, b)
        if start == 0:
            y[:c] = np.arange(c)
        x = rng.standard_normal((b, d), dtype=np.float32) + means[y]
        yield np.maximum(x, 0, out=x), y


def run(n, d, c, size):
    t0 = time.perf_counter()
    stats = tj.stream_stats(chunks(n, d, c, size), num_classes=c, check_inputs=False)
    score = float(tj.logme(stats=stats))
    return score, time.perf_counter() - t0


def gen_only(n, d, c, size):
    t0 = time.perf_counter()
    for _ in chunks(n, d, c, size):
        pass
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench stream",
                                 description=__doc__.splitlines()[0])  # fmt: skip
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--c", type=int, default=50)
    ap.add_argument("--chunk", type=int, default=8192)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    n, d, c, size = args.n, args.d, args.c, args.chunk
    run(4 * size, d, c, size)  # compile
    gen = gen_only(n, d, c, size)
    s32, t32 = run(n, d, c, size)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with jax.enable_x64(True):
        run(4 * size, d, c, size)
        s64, t64 = run(n, d, c, size)
    full_gb = n * d * 4 / 1e9
    head = section_head(f"Streamed LogME, N={n:,} D={d} C={c}, chunks of {size}")
    lines = [
        "| dtype | wall s (incl. generating data) | generating alone s | rows/s (stats+score) | peak RSS MB | full matrix GB | score | rel. diff vs float64 |",
        "|---|---|---|---|---|---|---|---|",
        f"| float32 | {t32:.1f} | {gen:.1f} | {n / max(t32 - gen, 1e-9):,.0f} | {rss_mb:.0f} | {full_gb:.2f} | {s32:.6f} | {abs(s32 / s64 - 1):.1e} |",
        f"| float64 | {t64:.1f} | {gen:.1f} | {n / max(t64 - gen, 1e-9):,.0f} | (same process) | {2 * full_gb:.2f} | {s64:.6f} | 0 |",
        "",
        "Peak RSS is the whole process (JAX runtime included) after the float32 pass.",
    ]
    write_section(head, lines, write=not args.no_write)
