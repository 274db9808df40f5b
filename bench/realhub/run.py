"""``python -m bench realhub``: extract, compute the ground truths, score every metric, report.

    python -m bench realhub                      # full run, writes bench/realhub/RESULTS.md
    python -m bench realhub --tiny --no-write    # smoke run on a small subset
    python -m bench realhub --sizes 600 150 300 --no-finetune --skip nleep   # smaller sizes
    python -m bench realhub --full-minutes 60    # also an hour of ground truth (c)
    python -m bench realhub --from-json          # rewrite RESULTS.md / .png from scores.json

See :mod:`bench.realhub` for the hub, the targets and the ground truths.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import transferjax as tj
from transferjax.features import zoo

from . import __doc__ as _PACKAGE_DOC
from .report import plot, write_report
from .targets import (
    DIGITS_N,
    SEED,
    SIZE,
    TARGETS,
    cache_key,
    cache_root,
    features_for,
    load_source,
    pools_for,
    split_target,
)
from .truths import FULL_TABLE, PROTOCOL, finetune_last_stage, full_table, full_truth, linear_probe

HERE = Path(__file__).resolve().parent


def score_all(metrics, feats_by_model, labels, *, cache=None, skip=()):
    """Scores ``{metric: {model: score}}`` (or ``{metric: "error: ..."}``) and wall times.

    ``cache``: a JSON file of finished ``[scores, time]`` per metric, read and updated after each
    metric (a long run can stop and resume); metrics in ``skip`` are marked ``"not run"``.
    """
    done = json.loads(cache.read_text()) if cache is not None and cache.exists() else {}
    out, times = {}, {}
    for m in metrics:
        if m in done:
            out[m], times[m] = done[m]
            continue
        if m in skip:
            out[m], times[m] = "not run", float("nan")
            continue
        info = tj.get_metric(m)
        kw = {"key": jax.random.key(SEED)} if info.needs_key else {}
        try:
            tj.score_hub(m, feats_by_model, labels, **kw)  # compile
            t0 = time.perf_counter()
            s = tj.score_hub(m, feats_by_model, labels, **kw)
            s = {k: float(v) for k, v in s.items()}
            times[m] = time.perf_counter() - t0
            out[m] = s
        except Exception as e:  # noqa: BLE001  (a metric under repair must not stop the run)
            out[m] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            times[m] = float("nan")
            print(f"{m}: {out[m]}", file=sys.stderr)
        if cache is not None:
            done[m] = [out[m], times[m]]
            cache.write_text(json.dumps(done))
        print(f"score {m}: {times[m]:.2f}s", file=sys.stderr)
    return out, times


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench realhub",
                                 description=_PACKAGE_DOC.split("\n")[0])  # fmt: skip
    ap.add_argument("--tiny", action="store_true", help="small subset: a smoke run")
    ap.add_argument("--models", nargs="*", default=None, help="zoo model names (default: all)")
    ap.add_argument("--targets", nargs="*", default=None, help="target names (default: all)")
    ap.add_argument("--epochs", type=int, default=8, help="epochs of last-stage fine-tuning")
    ap.add_argument("--no-finetune", action="store_true", help="skip ground truth (b)")
    ap.add_argument("--full-minutes", type=float, default=0.0,
                    help="fine-tune fully (ground truth c) for at most this long, resumable per "
                         "(model, target) and per epoch; 0: only report the finished targets")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--no-write", action="store_true", help="print instead of writing RESULTS.md")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for RESULTS.md and friends")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--sizes", nargs=3, type=int, metavar=("TRAIN", "VAL", "TEST"), default=None,
                    help="images per target (default 2000 500 1000; digits: train capped)")
    ap.add_argument("--skip", nargs="*", default=(), help="metrics not to run (marked not run)")
    ap.add_argument("--note", default="", help="a paragraph for RESULTS.md's header")
    ap.add_argument("--from-json", action="store_true",
                    help="only rewrite RESULTS.md / RESULTS.png from --out's scores.json")
    ap.add_argument("--extract-only", action="store_true", help="only extract (cache) features")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    if args.from_json:
        out = json.loads((args.out / "scores.json").read_text())
        args.argv = out["argv"]
        png = plot(args.out / "RESULTS.png", out["scores"], out["truths"])
        write_report(args.out / "RESULTS.md", out["scores"], out["truths"], out["times"], args,
                     png, out["notes"])  # fmt: skip
        return 0
    models = args.models or zoo.names()
    targets = [t for t in TARGETS if args.targets is None or t.name in args.targets]
    if args.tiny:
        targets = [dataclasses.replace(t, n_train=min(t.n_train, 200), n_val=100, n_test=100)
                   for t in targets]  # fmt: skip
        args.epochs = min(args.epochs, 2)
    if args.sizes:
        ntr, nva, nte = args.sizes
        targets = [dataclasses.replace(t, n_train=min(ntr, DIGITS_N - nva - nte)
                                       if t.source == "digits" else ntr, n_val=nva, n_test=nte)
                   for t in targets]  # fmt: skip
    metrics = tj.metric_names(inputs="features")
    sources = {s: load_source(s) for s in {t.source for t in targets}}
    splits = {t.name: split_target(t, sources[t.source]) for t in targets}

    # one pool of images per source split (the union of its targets' indices), extracted once
    pools = pools_for(targets, splits)
    print("pools: " + ", ".join(f"{s}/{p} {v.size}" for (s, p), v in pools.items()),
          file=sys.stderr)  # fmt: skip
    feats: dict = {t.name: {} for t in targets}
    pres: dict = {t.name: {} for t in targets}
    for name in models:
        t0 = time.perf_counter()
        model = zoo.load(name)
        pooled = {
            (src, split): features_for(name, model, src, split, sources[src][split][0], idx,
                                       batch_size=args.batch_size, quiet=args.quiet,
                                       pre=not args.no_finetune)  # fmt: skip
            for (src, split), idx in pools.items()
        }
        for t in targets:
            for part, (split, idx, _) in splits[t.name].items():
                rows = np.searchsorted(pools[t.source, split], idx)
                got = pooled[t.source, split]
                feats[t.name].setdefault(name, {})[part] = got["features"][rows]
                if "pre" in got:
                    pres[t.name].setdefault(name, {})[part] = got["pre"][rows]
        print(f"features {name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    if args.extract_only:
        return 0

    truths: dict = {"probe": {}, "last_stage": {}}
    sizes = [(t.name, t.n_train, t.n_val, t.n_test) for t in targets]
    gt_cache = cache_root() / f"truth_{cache_key(models, sizes, args.epochs, PROTOCOL)}.json"
    cached = json.loads(gt_cache.read_text()) if gt_cache.exists() else {}
    for t in targets:
        lab = {part: splits[t.name][part][2] for part in ("train", "val", "test")}
        c = len(set(t.classes.values()))
        for gt in ("probe", "last_stage"):
            truths[gt][t.name] = {}
        for name in models:
            key = f"{t.name}/{name}"
            f = feats[t.name][name]
            head = None
            if "probe/" + key not in cached or (
                not args.no_finetune and "last_stage/" + key not in cached
            ):
                probe, head = linear_probe(
                    f["train"], lab["train"], f["val"], lab["val"], f["test"], lab["test"], c
                )
                cached["probe/" + key] = probe
            truths["probe"][t.name][name] = cached["probe/" + key]
            msg = f"truth {key}: probe {cached['probe/' + key]:.1f}"
            if not args.no_finetune:
                if "last_stage/" + key not in cached:
                    model = zoo.load(name)
                    x0 = jnp.zeros((1, SIZE, SIZE, 3))
                    pre_shape = tuple(model.before_last_stage(x0).shape[1:])
                    p = pres[t.name][name]
                    cached["last_stage/" + key] = finetune_last_stage(
                        model, pre_shape,
                        [(p[s], lab[s]) for s in ("train", "val", "test")], c,
                        epochs=args.epochs, head=head,
                    )  # fmt: skip
                truths["last_stage"][t.name][name] = cached["last_stage/" + key]
                msg += f"  last_stage {cached['last_stage/' + key]:.1f}"
            gt_cache.write_text(json.dumps(cached))
            print(msg, file=sys.stderr)
    if args.no_finetune:
        del truths["last_stage"]
    full = full_truth(targets, models, splits, sources, feats, args)
    if full:
        truths["full"] = full

    results, times = {}, {}
    for t in targets:
        hub = {name: feats[t.name][name]["train"] for name in models}
        key = cache_key(models, t.n_train, t.n_val, t.n_test)
        cache = cache_root() / f"scores_{t.name}_{key}.json"
        results[t.name], times[t.name] = score_all(
            metrics, hub, splits[t.name]["train"][2], cache=cache, skip=args.skip
        )

    sizes = ", ".join(f"{t.name} {t.n_train} / {t.n_val} / {t.n_test}" for t in targets)
    pool_sizes = ", ".join(f"{s} {p} {v.size}" for (s, p), v in pools.items())
    width = {m: int(next(iter(feats.values()))[m]["train"].shape[1]) for m in models}
    notes = [
        f"Images per target (train / val / test): {sizes}. Images extracted per model (pools "
        f"shared by the targets of a source): {pool_sizes}. Metrics are computed on the train "
        f"split; feature widths: {', '.join(f'{m} {d}' for m, d in width.items())}.",
        "",
    ]
    if args.note:
        notes += [args.note, ""]
    out = {"truths": truths, "scores": results, "times": times, "notes": notes,
           "argv": args.argv, "sizes": {t.name: [t.n_train, t.n_val, t.n_test] for t in targets}}
    if args.no_write:
        print(json.dumps(out, indent=1))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracies.json").write_text(json.dumps(truths, indent=1))
    if args.full_pairs[0]:
        (args.out / FULL_TABLE).write_text(json.dumps(full_table(*args.full_pairs), indent=1))
    (args.out / "scores.json").write_text(json.dumps(out, indent=1))
    png = plot(args.out / "RESULTS.png", results, truths)
    write_report(args.out / "RESULTS.md", results, truths, times, args, png, notes)
    print(f"wrote {args.out / 'RESULTS.md'}", file=sys.stderr)
    return 0
