"""``python -m bench realhub-layers``: which model *and which layer*, and how sure.

Every tap of every zoo model (``model.taps()``: the end of each stage and the pooled features;
6 models, 29 candidates of widths 16-1280) is a candidate on each of the six targets of
:mod:`bench.realhub`. Ground truth: the linear probe of each candidate (L2 logistic regression,
penalty picked on the validation split), run as one jitted program per width bucket that maps over
the candidates and the penalties (``lax.map``: a vmapped L-BFGS was 14x slower, its line searches
run in lockstep). Every features metric scores all candidates of a target in
one layer-wise ``score_hub`` call, as given and with ``reduce_dim`` (every candidate projected on
its top-k principal directions first). The report (``LAYERS.md``) gives per metric the weighted τ
with a 95 % bootstrap interval over all candidates and over models with their best layer, the
best-layer agreement, the static baseline (each candidate's mean probe accuracy on the other
targets) and the paired-bootstrap probability that the metric beats it, and the rank correlation
between score and width.

    python -m bench realhub-layers                   # extract (cached), probe, score, report
    python -m bench realhub-layers --extract-only    # only fill the feature cache
    python -m bench realhub-layers --from-json       # rewrite LAYERS.md from layers.json
    python -m bench realhub-layers --tap-cost        # time 4 taps vs the penultimate alone
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import transferjax as tj
from transferjax.features import zoo

from .targets import (
    DIGITS_N,
    SEED,
    SIZE,
    TARGETS,
    cache_key,
    cache_root,
    load_source,
    pools_for,
    split_target,
    taps_for,
)
from .truths import _fit_logreg, _standardise

HERE = Path(__file__).resolve().parent
SIZES = (1000, 250, 500)  # train / validation / test images per target
PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # the probe's L2 grid (as ground truth (a))
PROTOCOL = 1  # bump when the probe's recipe changes: cached truths are keyed on it


# ------------------------------------------------------------------------------- features


def load_features(models, targets, args):
    """``feats[target][model][tap][part]`` and each target's labels ``{part: [n]}``."""
    sources = {s: load_source(s) for s in {t.source for t in targets}}
    splits = {t.name: split_target(t, sources[t.source]) for t in targets}
    pools = pools_for(targets, splits)
    print(
        "pools: " + ", ".join(f"{s}/{p} {v.size}" for (s, p), v in pools.items()), file=sys.stderr
    )
    feats: dict = {t.name: {} for t in targets}
    extract_s = {}
    for name in models:
        t0 = time.perf_counter()
        model = zoo.load(name)
        pooled = {
            key: taps_for(
                name,
                model,
                *key,
                sources[key[0]][key[1]][0],
                idx,
                batch_size=args.batch_size,
                quiet=args.quiet,
            )
            for key, idx in pools.items()
        }
        for t in targets:
            per_tap = feats[t.name].setdefault(name, {})
            for part, (split, idx, _) in splits[t.name].items():
                rows = np.searchsorted(pools[t.source, split], idx)
                for tap, x in pooled[t.source, split].items():
                    per_tap.setdefault(tap, {})[part] = x[rows]
        # the extraction time of the run that filled the cache, kept beside it
        record = cache_root() / f"taps_time_{name}_{cache_key(*pools.values(), SIZE)}.json"
        if not record.exists() or time.perf_counter() - t0 > 30:
            record.write_text(json.dumps(time.perf_counter() - t0))
        extract_s[name] = json.loads(record.read_text())
        print(f"taps {name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    labels = {t.name: {p: v[2] for p, v in splits[t.name].items()} for t in targets}
    return feats, labels, pools, extract_s


# ------------------------------------------------------------------- ground truth: probe


@functools.partial(jax.jit, static_argnames="num_classes")
def _probe_bucket(xtr, ytr, xva, yva, xte, yte, penalties, *, num_classes):
    """Test accuracy (%) of each candidate's probe, ``[k]``; inputs ``[k, n, d]`` standardised.

    Zero-padded columns stay exactly zero through L-BFGS (their gradient is zero), so padding a
    candidate into its bucket's width does not change its probe.
    """
    y1h = jax.nn.one_hot(ytr, num_classes, dtype=xtr.dtype)

    def one(a, va, te):
        def fit(lam):
            p = _fit_logreg(a, y1h, lam)
            acc_va = jnp.mean(jnp.argmax(va @ p["w"] + p["b"], 1) == yva)
            acc_te = jnp.mean(jnp.argmax(te @ p["w"] + p["b"], 1) == yte)
            return acc_va, acc_te

        acc_va, acc_te = jax.lax.map(fit, penalties)
        return 100.0 * acc_te[jnp.argmax(acc_va)]  # the first best penalty, as the loop did

    # lax.map, not vmap: a vmapped L-BFGS runs every line search to the batch's longest (about
    # 20x slower here); one compiled program still serves every candidate of the bucket
    return jax.lax.map(lambda a: one(*a), (xtr, xva, xte))


def _buckets(widths: dict) -> list[list]:
    """Candidates grouped by padded width (<= 128, <= 512, the rest): 3 compiles per target."""
    groups: dict = {}
    for cand, d in widths.items():
        cap = 128 if d <= 128 else 512 if d <= 512 else max(widths.values())
        groups.setdefault(cap, []).append(cand)
    return [groups[c] for c in sorted(groups)]


def probe_all(feats_t, labels_t, num_classes):
    """``{model: {tap: probe test accuracy (%)}}`` for one target."""
    cands = {(m, tap): v for m, taps in feats_t.items() for tap, v in taps.items()}
    widths = {c: v["train"].shape[1] for c, v in cands.items()}
    out: dict = {}
    for group in _buckets(widths):
        dmax = max(widths[c] for c in group)
        parts = {p: [] for p in ("train", "val", "test")}
        for c in group:
            std = [a.astype(np.float32) for a in _standardise(*(cands[c][p] for p in parts))]
            for p, a in zip(parts, std):
                parts[p].append(np.pad(a, ((0, 0), (0, dmax - a.shape[1]))))
        acc = _probe_bucket(
            jnp.asarray(np.stack(parts["train"])),
            jnp.asarray(labels_t["train"]),
            jnp.asarray(np.stack(parts["val"])),
            jnp.asarray(labels_t["val"]),
            jnp.asarray(np.stack(parts["test"])),
            jnp.asarray(labels_t["test"]),
            jnp.asarray(PENALTIES, jnp.float32),
            num_classes=num_classes,
        )
        for (m, tap), a in zip(group, np.asarray(acc)):
            out.setdefault(m, {})[tap] = round(float(a), 2)
    return {m: {tap: out[m][tap] for tap in feats_t[m]} for m in feats_t}


# ------------------------------------------------------------------------------- scoring


def score_target(metrics, hub, labels, reduce_to, cache: Path):
    """``{variant: {metric: {model: {tap: score}}}}`` and ``{variant: {metric: seconds}}``.

    ``variant`` is ``"as_is"`` or ``"reduce_dim"``; each entry is cached as soon as it is done.
    """
    done = json.loads(cache.read_text()) if cache.exists() else {}
    for variant, k in (("as_is", None), ("reduce_dim", reduce_to)):
        for m in metrics:
            key = f"{variant}/{m}"
            if key in done:
                continue
            kw = {"key": jax.random.key(SEED)} if tj.get_metric(m).needs_key else {}
            if k is not None:
                kw["reduce_dim"] = k
            lab = labels if tj.get_metric(m).uses_labels else None
            try:
                t0 = time.perf_counter()  # one call: compilation included (shapes repeat
                # across targets, so later targets mostly reuse the compiled buckets)
                s = tj.score_hub(m, hub, lab, **kw)
                s = {a: {b: float(v) for b, v in d.items()} for a, d in s.items()}
                done[key] = [s, time.perf_counter() - t0]
            except Exception as e:  # noqa: BLE001  (one failing metric must not stop the run)
                done[key] = [f"error: {type(e).__name__}: {str(e)[:200]}", float("nan")]
            print(f"score {key}: {done[key][1]:.2f}s", file=sys.stderr)
            cache.write_text(json.dumps(done))
    return done


# ------------------------------------------------------------------------------ tap cost


def tap_cost(args) -> int:
    """Median time of one extraction of 512 images: the penultimate alone vs its last 4 taps."""
    model = zoo.load(args.tap_model)
    taps = list(model.taps())[-4:]
    x = np.random.default_rng(SEED).uniform(-1, 1, (512, SIZE, SIZE, 3)).astype(np.float32)
    kw = {"batch_size": args.batch_size, "progress": False}
    runs = {
        "penultimate": lambda: tj.features.extract_module(model, x, **kw),
        "4 taps": lambda: tj.features.extract_module(model, x, layers=taps, **kw),
    }
    med = {}
    for name, fn in runs.items():
        jax.block_until_ready(fn())
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            ts.append(time.perf_counter() - t0)
        med[name] = float(np.median(ts))
    ratio = med["4 taps"] / med["penultimate"]
    print(
        f"{args.tap_model}, 512 images at {SIZE} px, batch {args.batch_size}, median of "
        f"{args.repeats} on {platform.node()} ({jax.default_backend()}): penultimate "
        f"{med['penultimate']:.2f} s, 4 taps {taps} {med['4 taps']:.2f} s, ratio {ratio:.3f}"
    )
    return 0


# --------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench realhub-layers", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--models", nargs="*", default=None, help="zoo model names (default: all)")
    ap.add_argument("--targets", nargs="*", default=None, help="target names (default: all)")
    ap.add_argument("--sizes", nargs=3, type=int, metavar=("TRAIN", "VAL", "TEST"), default=SIZES)
    ap.add_argument(
        "--reduce-dim",
        type=int,
        default=16,
        help="k of the common-dimension variant (default 16: the narrowest tap)",
    )
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=HERE, help="folder for LAYERS.md / layers.json")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--note", default="", help="a paragraph for LAYERS.md's header")
    ap.add_argument("--extract-only", action="store_true")
    ap.add_argument("--from-json", action="store_true", help="only rewrite LAYERS.md")
    ap.add_argument("--tap-cost", action="store_true", help="time 4 taps vs the penultimate")
    ap.add_argument("--tap-model", default="mobilenet_v2")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    if args.tap_cost:
        return tap_cost(args)
    from .layers_report import write_report

    if args.from_json:
        out = json.loads((args.out / "layers.json").read_text())
        out["note"] = args.note or out.get("note", "")
        (args.out / "layers.json").write_text(json.dumps(out, indent=1))
        write_report(args.out / "LAYERS.md", out, bootstrap=args.bootstrap)
        return 0

    t_start = time.perf_counter()
    models = args.models or zoo.names()
    ntr, nva, nte = args.sizes
    targets = [
        dataclasses.replace(
            t,
            n_train=min(ntr, DIGITS_N - nva - nte) if t.source == "digits" else ntr,
            n_val=nva,
            n_test=nte,
        )
        for t in TARGETS
        if args.targets is None or t.name in args.targets
    ]
    feats, labels, pools, extract_s = load_features(models, targets, args)
    if args.extract_only:
        return 0
    t_cached = time.perf_counter()

    metrics = tj.metric_names(inputs="features")
    truths, scores, times, walls = {}, {}, {}, {}
    sizes = [(t.name, t.n_train, t.n_val, t.n_test) for t in targets]
    gt_path = cache_root() / f"layer_truth_{cache_key(models, sizes, PENALTIES, PROTOCOL)}.json"
    cached = json.loads(gt_path.read_text()) if gt_path.exists() else {}
    for t in targets:
        c = len(set(t.classes.values()))
        t0 = time.perf_counter()
        if t.name not in cached:
            cached[t.name] = probe_all(feats[t.name], labels[t.name], c)
            gt_path.write_text(json.dumps(cached))
        truths[t.name] = cached[t.name]
        t1 = time.perf_counter()
        hub = {m: {tap: v["train"] for tap, v in taps.items()} for m, taps in feats[t.name].items()}
        key = cache_key(models, t.n_train, t.n_val, t.n_test, args.reduce_dim)
        done = score_target(
            metrics,
            hub,
            labels[t.name]["train"],
            args.reduce_dim,
            cache_root() / f"layer_scores_{t.name}_{key}.json",
        )
        scores[t.name] = {k: v[0] for k, v in done.items()}
        times[t.name] = {k: v[1] for k, v in done.items()}
        walls[t.name] = {"probe_s": t1 - t0, "score_s": time.perf_counter() - t1}
        print(
            f"{t.name}: probe {t1 - t0:.1f}s, scores {walls[t.name]['score_s']:.1f}s",
            file=sys.stderr,
        )
    widths = {
        m: {tap: int(v["train"].shape[1]) for tap, v in taps.items()}
        for m, taps in next(iter(feats.values())).items()
    }
    out = {
        "argv": list(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.node()} ({os.cpu_count()} cores, {jax.default_backend()}, "
        f"{platform.machine()}, jax {jax.__version__})",
        "date": time.strftime("%Y-%m-%d"),
        "sizes": {t.name: [t.n_train, t.n_val, t.n_test] for t in targets},
        "pools": {f"{s}/{p}": int(v.size) for (s, p), v in pools.items()},
        "reduce_dim": args.reduce_dim,
        "widths": widths,
        "truths": truths,
        "scores": scores,
        "times": times,
        "walls": walls,
        "extract_s": extract_s,
        "wall_from_cache_s": time.perf_counter() - t_cached,
        "wall_s": time.perf_counter() - t_start,
        "note": args.note,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "layers.json").write_text(json.dumps(out, indent=1))
    write_report(args.out / "LAYERS.md", out, bootstrap=args.bootstrap)
    print(f"wrote {args.out / 'LAYERS.md'}", file=sys.stderr)
    return 0
