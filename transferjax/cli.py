"""The ``transferjax`` command: score one feature file, or rank a hub of models.

    transferjax score FILE.npz --metric logme
    transferjax rank HUB [--metric NAME ...] [--accuracies ACC.json] [--json OUT] [--plot OUT.png]
    transferjax rank --example --accuracies example --plot rank.png
    transferjax metrics

Errors in the input (missing labels, a model with a different n, an unknown metric, ...) print one
line ``transferjax: error: ...`` and exit with code 2, writing nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ._progress import progress_bar

__all__ = ["main"]


class _UsageError(Exception):
    pass


def _metric_list(names, registry):
    import transferjax  # noqa: F401  (registers every metric)

    available = registry.metric_names(inputs="features")
    names = names or ["logme"]
    for m in names:
        info = registry.METRICS.get(m)
        if info is None:
            raise _UsageError(f"unknown metric {m!r}; features metrics: {', '.join(available)}")
        if info.inputs != "features":
            raise _UsageError(
                f"metric {m!r} needs {info.inputs}, not features; ranking a hub of feature files "
                f"supports: {', '.join(available)}"
            )
    return names


def _score_all(metrics, feats, labels, quiet):
    """``{metric: hub scores}`` oriented higher-is-better (flat or ``{model: {layer: s}}``)."""
    import jax

    import transferjax as tj

    results = {}
    count = sum(len(v) if isinstance(v, dict) else 1 for v in feats.values())
    for m in metrics:
        info = tj.get_metric(m)
        kw = {"key": jax.random.key(0)} if info.needs_key else {}
        show = not quiet and count > 3
        prog = progress_bar(f"scoring {m}", unit="model") if show else None
        scores = tj.score_hub(m, feats, labels if info.uses_labels else None, progress=prog, **kw)
        sign = 1.0 if info.higher_is_better else -1.0
        results[m] = jax.tree.map(lambda v, sign=sign: sign * float(v), scores)
    return results


def _rows(results, feats, how):
    """Rows of the table: ``{metric: {row: score}}``, the layer shown per row and metric, widths.

    A flat hub has one row per model. A layer-wise hub has one row per model with its best /
    last layer or the layer mean (``how``), or one row per (model, layer) (``how="all"``).
    """
    from . import hub

    layered = isinstance(next(iter(feats.values())), dict)
    if not layered:
        widths = {k: int(v.shape[1]) for k, v in feats.items()}
        return results, {m: {} for m in results}, widths
    rows, chosen = {}, {}
    if how == "all":
        widths = {f"{k}/{l}": int(x.shape[1]) for k, v in feats.items() for l, x in v.items()}
        for m, sc in results.items():
            rows[m] = {f"{k}/{l}": s for k, v in sc.items() for l, s in v.items()}
            chosen[m] = {}
        return rows, chosen, widths
    for m, sc in results.items():
        rows[m] = hub.aggregate_layers(sc, how)
        if how == "best":
            chosen[m] = hub.best_layers(sc)
        elif how == "last":
            chosen[m] = {k: list(v)[-1] for k, v in sc.items()}
        else:
            chosen[m] = {k: "mean" for k in sc}
    first = next(iter(results))
    widths = {}
    for k, v in feats.items():
        layer = chosen[first].get(k)
        widths[k] = int(v[layer].shape[1]) if layer in v else max(int(x.shape[1]) for x in v.values())
    return rows, chosen, widths


def _ranks(scores: dict[str, float]) -> dict[str, int]:
    order = sorted(scores, key=lambda k: -scores[k] if math.isfinite(scores[k]) else math.inf)
    return {k: i + 1 for i, k in enumerate(order)}


def _lookup_accuracy(acc, row):
    if row in acc:
        return acc[row]
    return acc.get(row.split("/", 1)[0])


def _check_outputs(*paths):
    for p in paths:
        if p and not Path(p).resolve().parent.is_dir():
            raise _UsageError(f"{p}: the output folder {Path(p).parent} does not exist")


def _write_atomic(path, write):
    """``write(tmp)`` then rename onto ``path``: a failure never leaves a half-written file."""
    import os
    import tempfile

    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cmd_rank(args) -> int:
    from . import io, registry

    if args.example == (args.hub is not None):
        raise _UsageError("give a HUB path or --example (not both)")
    _check_outputs(args.json, args.plot)
    hub_path = io.example_hub_path() if args.example else Path(args.hub)
    metrics = _metric_list(args.metric, registry)
    feats, labels = io.load_hub(hub_path)
    layered = isinstance(next(iter(feats.values())), dict)
    how = args.layers or ("best" if layered else None)
    if how is not None and not layered:
        raise _UsageError("--layers needs a layer-wise hub (arrays named 'model/layer')")
    acc = table = None
    if args.accuracies:
        acc_path = io.example_accuracies_path() if args.accuracies == "example" else args.accuracies
        acc = io.load_accuracies(acc_path)
    if args.baseline_table:
        if not acc:
            raise _UsageError("--baseline-table needs --accuracies (the target's accuracies)")
        table = io.load_table(args.baseline_table)
    if args.x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    try:
        results = _score_all(metrics, feats, labels, args.quiet)
    except (ValueError, TypeError) as err:
        raise _UsageError(str(err).splitlines()[0]) from None
    rows, chosen, widths = _rows(results, feats, how)
    names = list(widths)
    if acc:
        missing = [r for r in names if _lookup_accuracy(acc, r) is None]
        if missing:
            raise _UsageError(f"accuracies file has no entry for models: {', '.join(missing)}")
        acc = {r: _lookup_accuracy(acc, r) for r in names}

    first = metrics[0]
    ranks = {m: _ranks(rows[m]) for m in metrics}
    order = sorted(names, key=lambda k: ranks[first][k])
    name_w = max(5, *(len(k) for k in names))
    head = f"{'rank':>4}  {'model':<{name_w}}  {'width':>5}"
    for m in metrics:
        head += f"  {m:>12}  {'#':>2}" + (f"  {'layer':>10}" if chosen[m] else "")
    if acc:
        head += f"  {'accuracy':>8}"
    lines = [head, "-" * len(head)]
    for k in order:
        row = f"{ranks[first][k]:>4}  {k:<{name_w}}  {widths[k]:>5}"
        for m in metrics:
            row += f"  {rows[m][k]:>12.5g}  {ranks[m][k]:>2}"
            if chosen[m]:
                row += f"  {str(chosen[m][k]):>10}"
        if acc:
            row += f"  {acc[k]:>8.2f}"
        lines.append(row)
    evaluation = {}
    if acc:
        from . import evaluation as ev

        lines.append("")
        baseline = None
        if table is not None:
            other = {d: a for d, a in table.items()}
            other["__target__"] = acc
            try:
                static = ev.static_scores(other, "__target__")
            except ValueError as err:
                raise _UsageError(f"--baseline-table: {err}") from None
            baseline = ev.evaluate(static, acc)
            evaluation["static_baseline"] = baseline
            lo, hi = baseline["weighted_tau_ci"]
            lines.append(
                f"static baseline (mean accuracy on the table's datasets): weighted Kendall tau "
                f"{baseline['weighted_tau']:+.3f} [95% CI {lo:+.3f}, {hi:+.3f}]"
            )
        for m in metrics:
            r = ev.evaluate(rows[m], acc)
            evaluation[m] = r
            lo, hi = r["weighted_tau_ci"]
            line = (
                f"{m}: weighted Kendall tau {r['weighted_tau']:+.3f} [95% CI {lo:+.3f}, "
                f"{hi:+.3f}], top-1 relative accuracy {r['top1_relative_accuracy']:.3f}"
            )
            if baseline is not None:
                p = ev.compare(rows[m], static, acc)
                r["p_beats_static_baseline"] = p
                line += f"; P(beats the static baseline) {p:.2f}"
            lines.append(line)
    print("\n".join(lines))

    if args.json:
        out = {
            "hub": str(hub_path),
            "n": int(labels.shape[0]),
            "metrics": metrics,
            **({"layers": how} if layered else {}),
            "models": {
                k: {
                    "width": widths[k],
                    "scores": {m: rows[m][k] for m in metrics},
                    "ranks": {m: ranks[m][k] for m in metrics},
                    **({"layer": {m: chosen[m][k] for m in metrics}} if chosen[first] else {}),
                    **({"accuracy": acc[k]} if acc else {}),
                }
                for k in order
            },
            **({"layer_scores": results} if layered else {}),
            **({"evaluation": evaluation} if acc else {}),
        }
        text = json.dumps(out, indent=1) + "\n"
        _write_atomic(args.json, lambda tmp: Path(tmp).write_text(text))
        print(f"wrote {args.json}")
    if args.plot:
        _write_atomic(args.plot, lambda tmp: _plot(tmp, metrics, rows, acc, order, evaluation))
        print(f"wrote {args.plot}")
    return 0


def _plot(path, metrics, results, acc, order, evaluation):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - depends on the environment
        raise _UsageError("--plot needs matplotlib: pip install 'transferjax[plot]'") from None
    k = len(metrics)
    fig, axes = plt.subplots(1, k, figsize=(4.5 * k, 4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        names = list(order)
        if acc:
            xs = [results[m][n] for n in names]
            ys = [acc[n] for n in names]
            ax.scatter(xs, ys, color="tab:blue")
            for n, x, y in zip(names, xs, ys):
                ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel(f"{m} score")
            ax.set_ylabel("accuracy")
            ax.set_title(f"{m}: weighted τ = {evaluation[m]['weighted_tau']:+.3f}")
        else:
            vals = [results[m][n] for n in names]
            ax.barh(names[::-1], vals[::-1], color="tab:blue")
            ax.set_xlabel(f"{m} score (higher is better)")
            ax.set_title(f"ranking by {m}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def _cmd_score(args) -> int:
    from . import registry
    from .io import HubFileError, read_npz

    metric = _metric_list([args.metric], registry)[0]
    p = Path(args.file)
    arrays = read_npz(p)
    uses_labels = registry.METRICS[metric].uses_labels
    need = ("features", "labels") if uses_labels else ("features",)
    if any(k not in arrays for k in need):
        raise HubFileError(f"{p}: needs arrays {list(need)}, has {list(arrays)}")
    features, labels = arrays["features"], arrays.get("labels")
    if args.x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    import jax

    import transferjax as tj

    info = tj.get_metric(metric)
    kw = {"key": jax.random.key(0)} if info.needs_key else {}
    try:
        args_ = (features, labels) if info.uses_labels else (features,)
        out = info.fn(*args_, **kw)
        value = float(out) if not isinstance(out, dict) else None
        if value is None:  # a pool-relative metric: its raw terms (pooling needs a hub)
            print(" ".join(f"{t}={float(v):.10g}" for t, v in out.items()))
            return 0
    except (ValueError, TypeError) as err:
        raise _UsageError(str(err)) from None
    print(f"{value:.10g}")
    return 0


def _cmd_metrics(args) -> int:
    import transferjax  # noqa: F401  (registers every metric)

    from . import registry

    for name in registry.metric_names():
        m = registry.METRICS[name]
        tasks = "+".join(t[:5] for t in m.tasks)
        print(f"{name:<18} {m.inputs:<14} {tasks:<12} {m.summary} ({m.paper})")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other error."""

    def error(self, message):
        self.exit(2, f"transferjax: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="transferjax", description="Rank pre-trained models by "
                 "transferability metrics computed from their features.")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sc = sub.add_parser("score", help="score one feature file (.npz with features, labels)")
    sc.add_argument("file")
    sc.add_argument("--metric", default="logme")
    sc.add_argument("--x64", action="store_true", help="compute in float64")
    sc.set_defaults(func=_cmd_score)

    rk = sub.add_parser("rank", help="score and rank every model of a hub")
    rk.add_argument("hub", nargs="?", help=".npz with 'labels' + one array per model, or a folder "
                    "of <model>.npy/.npz files with labels.npy")
    rk.add_argument("--example", action="store_true", help="use the example hub shipped with "
                    "the package")
    rk.add_argument("--metric", action="append", help="metric name (repeatable; default logme)")
    rk.add_argument("--accuracies", help="JSON {model: accuracy} ('example' for the example's)")
    rk.add_argument("--json", help="write every model's scores and ranks to this JSON file")
    rk.add_argument("--plot", help="write a PNG (score vs accuracy, or ranking bars)")
    rk.add_argument("--layers", choices=("best", "mean", "last", "all"), help="layer-wise hubs: "
                    "one row per model with its best layer (default), the layer mean, the last "
                    "layer, or one row per (model, layer)")
    rk.add_argument("--baseline-table", help="JSON {dataset: {model: accuracy}} of other "
                    "datasets: prints the data-free baseline's tau (mean accuracy there) beside "
                    "each metric's")
    rk.add_argument("--x64", action="store_true", help="compute in float64")
    rk.add_argument("--quiet", action="store_true", help="no progress bar")
    rk.set_defaults(func=_cmd_rank)

    ls = sub.add_parser("metrics", help="list the registered metrics")
    ls.set_defaults(func=_cmd_metrics)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    from .io import HubFileError

    try:
        return args.func(args)
    except (_UsageError, HubFileError) as err:
        print(f"transferjax: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
