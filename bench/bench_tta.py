"""TTA bench: fixed-transform bound and ``tta_optimize`` steps on p1 (a source/target metric, so it
does not fit run.py's ``entries(x, y)``; standalone).

    python bench/bench_tta.py [--case p1] [--steps 1000] [--repeats 3] [--quick] [--no-write]

The source/target task is derived from the case as the golden runner does (tta.md): half/half
split, per-side standardisation, ridge head, B = column softmax of 4·[i mod Ct == j]. Appends a
table to bench/RESULTS.md. Reference timings (tta.md, same 2-core CPU): Tier A on p1 1.34 s;
1001 optimisation epochs ≈ 8 min.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent / "shared" / "bench"))

import transferjax as tj  # noqa: E402
from common import machine, time_call  # noqa: E402
from numpy_tta import tta_bound_numpy  # noqa: E402


def derive(x, y):
    x = np.asarray(x, np.float64)
    n, c = len(y), int(y.max()) + 1
    ct = max(2, c // 2)
    perm = np.random.default_rng(0).permutation(n)
    s, t = perm[: n // 2], perm[n // 2 :]

    def scale(a):
        sd = a.std(0)
        return ((a - a.mean(0)) / np.where(sd > 0, sd, 1.0)).astype(np.float32)

    xs, xt = scale(x[s]), scale(x[t])
    ys, yt = y[s], y[t] % ct
    oh = np.eye(c)[ys]
    x64 = xs.astype(np.float64)
    w = np.linalg.solve(x64.T @ x64 + np.eye(x.shape[1]), x64.T @ (oh - oh.mean(0)))
    lg = 4.0 * (np.arange(c)[None, :] % ct == np.arange(ct)[:, None])
    bm = np.exp(lg) / np.exp(lg).sum(0, keepdims=True)
    return xs, ys, xt, yt, w.astype(np.float32), oh.mean(0).astype(np.float32), bm


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="p1")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny shapes, 20 steps: a smoke run")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        rng = np.random.default_rng(0)
        y = np.r_[np.arange(10), rng.integers(0, 10, 390)]
        x = rng.normal(size=(400, 32)).astype(np.float32) + np.eye(10, 32)[y]
        args.steps = min(args.steps, 20)
    else:
        from cases import make

        x, y = make(args.case)
    xs, ys, xt, yt, w, c, bm = derive(x, y)
    bmj = bm.astype(np.float32)
    rows = []
    first, med = time_call(lambda: tj.tta_bound(xs, ys, xt, yt, (w, c), label_map=bmj),
                           repeats=args.repeats)
    t0 = time.perf_counter()
    tta_bound_numpy(xs, ys, xt, yt, w, c, bm)
    nmed = time.perf_counter() - t0
    rows.append(("tta_bound (fixed transforms)", first, med, f"{nmed:.3f}",
                 "NumPy f64 + scipy HiGHS LP per class; reference 1.34 s"))
    key = jax.random.key(0)
    opt = lambda: tj.tta_optimize(xs, ys, xt, yt, (w, c), steps=args.steps, key=key)  # noqa: E731
    t0 = time.perf_counter()
    jax.block_until_ready(opt())
    ofirst = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(opt())
    omed = time.perf_counter() - t0
    ref = "reference ≈ 480 s for 1001 epochs on p1 (tta.md)"
    if args.case == "p1" and not args.quick:
        ref += f": {480 * args.steps / 1001 / omed:.1f}× faster"
    rows.append((f"tta_optimize ({args.steps} steps + bound)", ofirst, omed, "—", ref))
    # The arithmetic floor of one step of the reference's objective, timed here: the A·Ā
    # invertibility penalty with its gradient (6 d×d×d products) and the batch transform x Aᵀ
    # with its gradient, at the reference's batch of 1000 (no transport plan at all).
    d = xs.shape[1]
    eye = jnp.eye(d, dtype=jnp.float32)
    xb = jnp.asarray(xs[: min(1000, len(xs))])
    xtb = jnp.asarray(xt[: min(1000, len(xt))])

    def floor_loss(p):
        xn = xb @ p[0].T
        return (jnp.sum((p[0] @ p[1] - eye) ** 2) + jnp.sum((p[1] @ p[0] - eye) ** 2)
                + jnp.sum(xn * xtb))

    floor = jax.jit(jax.grad(floor_loss))
    pair = (eye + 0.01, eye - 0.01)
    ffirst, fmed = time_call(lambda: floor(pair), repeats=max(args.repeats, 5))
    rows.append((f"floor: penalty + batch transform grads, × {args.steps} steps", ffirst,
                 fmed * args.steps, "—", "no plan; the reference's objective cannot cost less"))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## TTA {stamp}{' (quick)' if args.quick else ''}\n", f"Machine: {machine()}\n",
             f"Case {args.case if not args.quick else 'quick'}: source {xs.shape}, target "
             f"{xt.shape}, Cs={w.shape[1]}, Ct={bm.shape[0]}\n",
             "| what | first call s | median s | NumPy s | baseline |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {b:.3f} | {m:.3f} | {n} | {d} |" for a, b, m, n, d in rows]
    print("\n".join(lines))
    if not args.no_write:
        out = HERE / "RESULTS.md"
        prev = out.read_text() if out.exists() else "# Benchmark results\n\n"
        out.write_text(prev.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
