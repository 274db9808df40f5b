"""score_hub vs a Python loop over the jitted single-model metric (issue: many models at once).

    python -m bench hub [--metric logme] [--repeats 15] [--only 0 1] [--no-write]

Hubs: 20 models N=1000 widths 32..256; 50 models N=1000 widths 8..32; 10 models p1-sized
(N=5000, widths 512..1024). Cold = the first call in a fresh compilation cache (what a user running
``transferjax rank`` once sees); warm = median of repeats afterwards. Appends to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

import transferjax as tj
from transferjax import hub as hub_mod

from .common import block, section_head, write_section


def make_hub(m, n, lo, hi, c, seed=0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
    widths = np.sort(rng.integers(lo, hi + 1, m))
    return {f"m{i:02d}_{d}": np.maximum(rng.normal(size=(n, d)).astype(np.float32)
                                        + 0.3 * np.eye(c, d, dtype=np.float32)[y], 0)
            for i, d in enumerate(widths)}, y


def loop(metric, hub, y):
    info = tj.get_metric(metric)
    return [block(info.fn(f, y) if info.uses_labels else info.fn(f)) for f in hub.values()]


def hub_call(metric, hub, y, **kw):
    return block(list(tj.score_hub(metric, hub, y, **kw).values()))


def cold_warm(fn, repeats):
    jax.clear_caches()
    hub_mod._compiled.cache_clear()
    t0 = time.perf_counter()
    fn()
    cold = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return cold, statistics.median(times)


HUBS = {
    "20 models, N=1000, d 32..256": (20, 1000, 32, 256, 10),
    "50 models, N=1000, d 8..32": (50, 1000, 8, 32, 10),
    "10 models, N=5000, d 512..1024 (p1-sized)": (10, 5000, 512, 1024, 50),
}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench hub", description=__doc__.splitlines()[0])
    ap.add_argument("--metric", default="logme")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--only", type=int, nargs="*", help="hub indices to run")
    args = ap.parse_args(argv)
    head = section_head(f"score_hub vs loop ({args.metric})")
    lines = [
        "| hub | variant | buckets | cold s | warm s | loop cold s | loop warm s | cold speed-up | "
        + "warm ÷ loop |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(head + lines))
    for i, (label, spec) in enumerate(HUBS.items()):
        if args.only and i not in args.only:
            continue
        hub, y = make_hub(*spec)
        widths = [f.shape[1] for f in hub.values()]
        lc, lw = cold_warm(lambda: loop(args.metric, hub, y), args.repeats)
        variants = {"auto buckets": {}, "one bucket (pad to max)": {"max_buckets": 1}}
        for vname, kw in variants.items():
            nb = len(tj.plan_buckets(widths, spec[1], kw.get("max_buckets")))
            hc, hw = cold_warm(lambda: hub_call(args.metric, hub, y, **kw), args.repeats)
            row = (f"| {label} | {vname} | {nb} | {hc:.2f} | {hw:.3f} | {lc:.2f} | {lw:.3f} | "
                   f"{lc / hc:.1f}× | {hw / lw:.2f} |")
            print(row)
            lines.append(row)
    lines.append(f"\nCold: first call after `jax.clear_caches()`; warm: median of {args.repeats}.")
    print(lines[-1])
    write_section(head, lines, write=not args.no_write, echo=False)
