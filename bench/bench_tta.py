"""TTA bench: fixed-transform bound and ``tta_optimize`` steps on p1 (a source/target metric, so it
has no row in ``python -m bench metrics``).

    python -m bench tta [--case p1] [--steps 1000] [--repeats 3] [--quick] [--ott] [--no-write]

The source/target task is derived from the case as the golden runner does: half/half split,
per-side standardisation, ridge head, B = column softmax of 4·[i mod Ct == j]. ``--ott`` adds
the class-wise W1 of ott-jax (if importable) next to ours and the exact LP. Appends a section to
bench/RESULTS.md. The reference's own timings on the same 2-core CPU: the bound on p1 1.34 s;
1001 optimisation epochs ≈ 8 min.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import transferjax as tj
from transferjax import ot
from transferjax.linalg import sqdist
from transferjax.stats import class_block, sort_by_class

from .common import section_head, time_call, write_section
from .inputs import make_case
from .numpy_tta import class_w1_numpy, tta_bound_numpy


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
    ap.add_argument("--ott", action="store_true", help="time ott-jax's class-wise W1 too")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        rng = np.random.default_rng(0)
        y = np.r_[np.arange(10), rng.integers(0, 10, 390)]
        x = rng.normal(size=(400, 32)).astype(np.float32) + np.eye(10, 32)[y]
        args.steps = min(args.steps, 20)
    else:
        x, y = make_case(args.case)
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
    if args.ott:
        rows += _w1_rows(xs, ys, xt, yt, bm, args.repeats)
    key = jax.random.key(0)
    settings = tj.TTASettings(steps=args.steps)
    opt = lambda: tj.tta_optimize(xs, ys, xt, yt, (w, c), key=key, settings=settings)  # noqa: E731
    t0 = time.perf_counter()
    jax.block_until_ready(opt())
    ofirst = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(opt())
    omed = time.perf_counter() - t0
    ref = "reference ≈ 480 s for 1001 epochs on p1"
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

    def floor_loss(p, xb, xtb):  # data as arguments: closed-over arrays would be constant-folded
        xn = xb @ p[0].T
        return (jnp.sum((p[0] @ p[1] - eye) ** 2) + jnp.sum((p[1] @ p[0] - eye) ** 2)
                + jnp.sum(xn * xtb))

    floor = jax.jit(jax.grad(floor_loss))
    pair = (eye + 0.01, eye - 0.01)
    ffirst, fmed = time_call(lambda: floor(pair, xb, xtb), repeats=max(args.repeats, 5))
    rows.append((f"floor: penalty + batch transform grads, × {args.steps} steps", ffirst,
                 fmed * args.steps, "—", "no plan; the reference's objective cannot cost less"))
    head = section_head(f"TTA{' (quick)' if args.quick else ''}")
    lines = [f"Case {args.case if not args.quick else 'quick'}: source {xs.shape}, target "
             f"{xt.shape}, Cs={w.shape[1]}, Ct={bm.shape[0]}", "",
             "| what | first call s | median s | NumPy s | baseline |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {b:.3f} | {m:.3f} | {n} | {d} |" for a, b, m, n, d in rows]
    write_section(head, lines, write=not args.no_write)


def _w1_rows(xs, ys, xt, yt, bm, repeats):
    """The bound's class-wise W1 (A = I) three ways: ours, ott-jax's Sinkhorn on the same padded
    class blocks (ε annealed to the same target, no rounding), the exact LP (HiGHS)."""
    try:
        from ott.geometry import costs, epsilon_scheduler, pointcloud
        from ott.problems.linear import linear_problem
        from ott.solvers.linear import acceleration, sinkhorn
    except ImportError:
        print("--ott: ott-jax is not importable; no ott rows")
        return []
    ct = bm.shape[0]
    hard = np.argmax(bm, axis=0)[ys]
    block = ot.class_block_sizes(hard, yt, ct)
    exact = class_w1_numpy(xs, hard, xt, yt, ct)
    x, y, hx, hy = (jnp.asarray(v) for v in (xs, xt, hard, yt))
    ours = jax.jit(lambda x, y: ot.class_wasserstein1(x, hx, y, hy, num_classes=ct, block=block))
    solver = sinkhorn.Sinkhorn(threshold=ot.default_tol(xs.dtype), max_iterations=3000,
                               momentum=acceleration.Momentum(value=1.5))
    m_x, m_y = block if block is not None else (len(xs), len(xt))

    def ott_one(bx, by, a, b):
        cost = jnp.sqrt(sqdist(bx, by))
        live = (a > 0)[:, None] & (b > 0)[None, :]
        target = 1e-3 * jnp.sum(jnp.where(live, cost, 0)) / jnp.sum(live)
        eps = epsilon_scheduler.Epsilon(target, init=jnp.max(cost) / target, decay=0.9)
        geom = pointcloud.PointCloud(bx, by, cost_fn=costs.Euclidean(), epsilon=eps)
        return jnp.sum(solver(linear_problem.LinearProblem(geom, a, b)).matrix * cost)

    def blocks(v, lab, m):
        rows, start, count = sort_by_class(v, lab, ct, m)
        pick = jax.vmap(lambda s, n: class_block(rows, s, n, m))
        n = jnp.maximum(count, 1)[:, None]
        return pick(start, count), (jnp.arange(m)[None, :] < n) / n

    @jax.jit
    def theirs(x, y):
        (bx, a), (by, b) = blocks(x, hx, m_x), blocks(y, hy, m_y)
        return jax.vmap(ott_one)(bx, by, a, b)

    out = []
    for label, fn in (("ours (transferjax.ot)", ours), ("ott-jax Sinkhorn", theirs)):
        first, med = time_call(lambda f=fn: f(x, y), repeats=repeats)  # noqa: B023
        live = exact > 0
        err = np.abs(np.asarray(fn(x, y), np.float64)[live] - exact[live]) / exact[live]
        out.append((f"class-wise W1, {label}", first, med, "—",
                    f"max rel. error vs exact LP {err.max():.1e} (mean {err.mean():.1e})"))
    return out


if __name__ == "__main__":
    main()
