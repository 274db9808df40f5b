"""The real hub's report: ``RESULTS.md`` (weighted Kendall tau of every metric against every ground
truth, top-1 relative accuracy, time, the accuracy tables) and ``RESULTS.png``."""

from __future__ import annotations

import json
import time

import numpy as np

import transferjax as tj

from ..common import host
from .targets import SIZE
from .truths import FULL_EPOCHS, FULL_TABLE

COMMAND = "python -m bench realhub"  # how the report names the run that made it


def _evaluate(scores, acc):
    """(weighted tau, top-1 relative accuracy, cell text) of one metric on one target."""
    if isinstance(scores, str):
        return np.nan, np.nan, "not run" if scores == "not run" else "error"
    if not all(np.isfinite(v) for v in scores.values()):
        return np.nan, np.nan, "non-finite"
    ev = tj.evaluate(scores, acc)
    tau, top1 = ev["weighted_tau"], ev["top1_relative_accuracy"]
    if len(set(acc.values())) == 1:  # every model equally accurate: tau undefined
        return tau, top1, "const. acc."
    if not np.isfinite(tau):  # every model got the same score: tau undefined
        return tau, np.nan, "tied"
    if _saturated(scores):  # the order among saturated models is float rounding
        return np.nan, np.nan, f"{tau:+.2f} sat."
    return tau, top1, f"{tau:+.2f}"


def _saturated(scores) -> bool:
    """Two or more scores equal to 1e-5 of max(|score|, 1): the metric saturated on them."""
    s = np.asarray(list(scores.values()), float)
    q = np.round(s / max(np.abs(s).max(), 1.0), 5)
    return np.unique(q).size < s.size


def _shown(argv):
    """The command line with ``--note``'s paragraph replaced by a pointer to it."""
    out = list(argv)
    for i, a in enumerate(out[:-1]):
        if a == "--note":
            out[i + 1] = '"<the paragraph below>"'
    return out


def _spread(acc):
    return round(max(acc.values()) - min(acc.values()), 1)  # as displayed


def _mean(xs, fmt):
    xs = np.asarray(xs, float)
    return fmt.format(np.nanmean(xs)) if np.isfinite(xs).any() else "n/a"


def write_report(path, results, truths, times, args, png, notes=()):
    metrics = list(next(iter(results.values())))
    lines = [
        "# Real-hub benchmark: ranking 6 real checkpoints",
        "",
        f"Produced by `{' '.join([COMMAND, *_shown(args.argv)])}` on "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, {host()}; images resized to {SIZE} px.",
        "",
        *notes,
        "Ground truths: `probe` = linear-probe test accuracy (L2 logistic regression, penalty "
        "picked on the validation split). "
        + ("`last_stage` = fine-tuning of the last stage + a new head (LP-FT, Adam, frozen BN "
           "statistics). " if "last_stage" in truths else "`last_stage` (fine-tuning of the last "
           "stage) was not computed in this run (`--no-finetune`). ")
        + ((f"`full` = fine-tuning of the whole network + a new head (LP-FT, Adam, frozen BN "
            f"statistics, {FULL_EPOCHS} epochs), run in chunks on this CPU; only the targets "
            f"where every model is done are shown ({', '.join(truths['full'])}). ")
           if "full" in truths else "Full fine-tuning (ground truth c) is not in this run. ")
        + "Cells: weighted Kendall tau (`tj.weighted_kendall_tau`, hyperbolic weights) between "
        "the metric's scores and the accuracies of the 6 models; `tied`: the metric gave every "
        "model the same score (tau undefined); `const. acc.`: every model had the same accuracy "
        "(tau undefined); `sat.`: two or more models got the same score to 1e-5 (the metric "
        "saturated, e.g. in the n < d regime), so their order, hence tau, is float rounding: "
        "such cells are left out of the means; `not run`: skipped for lack of time "
        "(`--skip`); `error`: the metric raised; means are over the other cells; `*`: the "
        "accuracies spread by < 1 point on that target, tau is noise (left out of the mean). "
        "Top-1 rel. acc.: accuracy of the metric's top model / best accuracy (`tied` and "
        "`sat.` cells left out). "
        "Time: one `tj.score_hub` call over the hub (after compilation), mean over targets.",
        "",
    ]
    table = args.out / FULL_TABLE
    hist = json.loads(table.read_text()).get("val_by_epoch", {}) if table.exists() else {}

    def kept_start(gt, t, k):
        return _kept_start(truths, gt, t, k, hist)

    for gt in truths:
        cols = [t for t in results if t in truths[gt]]  # (c) may cover some targets only
        lines += [f"## Weighted Kendall tau vs `{gt}`", ""]
        head = "| metric | " + " | ".join(cols) + " | mean | top-1 rel. acc. | time (s) |"
        lines += [head, "|" + "---|" * (len(cols) + 4)]
        for m in metrics:
            ev = [_evaluate(results[t][m], truths[gt][t]) for t in cols]
            cells = " | ".join(e[2] + ("*" if _spread(truths[gt][t]) < 1 else "")
                               for e, t in zip(ev, cols))  # fmt: skip
            tm = _mean([times[t][m] for t in cols], "{:.3f}")
            kept = [e[0] if _spread(truths[gt][t]) >= 1 else np.nan for e, t in zip(ev, cols)]
            lines.append(
                f"| {m} | {cells} | {_mean(kept, '{:+.2f}')} | "
                f"{_mean([e[1] for e in ev], '{:.3f}')} | {tm} |"
            )
        lines += ["", f"Accuracies (%) for `{gt}`:", ""]
        models = list(next(iter(truths[gt].values())))
        lines += ["| target | " + " | ".join(models) + " | spread |"]
        lines += ["|" + "---|" * (len(models) + 2)]
        for t, acc in truths[gt].items():
            spread = _spread(acc)
            warn = " **< 1 point: tau is noise**" if spread < 1.0 else ""
            cells = " | ".join(f"{acc[k]:.1f}" + ("=" if kept_start(gt, t, k) else "")
                               for k in models)  # fmt: skip
            lines.append(f"| {t} | {cells} | {spread:.1f}{warn} |")
        if any(kept_start(gt, t, k) for t in truths[gt] for k in truths[gt][t]):
            lines += ["", "`=`: no epoch of fine-tuning beat the probe head (its start, LP-FT) on "
                      "validation, so the best-validation rule kept the start and the accuracy is "
                      "the probe's (read from the per-epoch validation accuracies in "
                      "`full_finetune.json` where recorded, else inferred from an accuracy equal "
                      "to the probe's)."]  # fmt: skip
        lines.append("")
    errors = sorted({f"`{m}`: {results[t][m]}" for t in results for m in metrics
                     if isinstance(results[t][m], str) and results[t][m] != "not run"})  # fmt: skip
    if errors:
        lines += ["Metric errors:", "", *[f"- {e}" for e in errors], ""]
    if png:
        lines += [f"![table]({png.name})", ""]
    path.write_text("\n".join(lines))


def _kept_start(truths, gt, target, model, hist: dict) -> bool:
    """Did (c) ``full`` fine-tuning keep its LP start? From the pair's validation accuracy per
    epoch (``hist``: ``full_finetune.json``'s ``val_by_epoch``) where recorded, else from an
    accuracy equal to (a) ``probe``'s to the digit."""
    if gt != "full":
        return False
    for key, vals in hist.items():
        parts = key.split("/")
        if parts[0] == target and parts[4] == model and None not in vals:
            return max(vals[1:]) <= vals[0]
    probe = truths.get("probe", {}).get(target, {}).get(model)
    return probe is not None and round(truths[gt][target][model], 1) == round(probe, 1)


def plot(path, results, truths):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    metrics = list(next(iter(results.values())))
    gts = list(truths)
    size = (6 * len(gts), 0.4 * len(metrics) + 2)
    fig, axes = plt.subplots(1, len(gts), figsize=size, squeeze=False)
    for ax, gt in zip(axes[0], gts):
        cols = [t for t in results if t in truths[gt]]
        ev = [[_evaluate(results[t][m], truths[gt][t]) for t in cols] for m in metrics]
        taus = np.array([[e[0] for e in row] for row in ev])
        im = ax.imshow(taus, cmap="RdBu", vmin=-1, vmax=1)
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
        ax.set_yticks(range(len(metrics)), metrics)
        for i in range(taus.shape[0]):
            for j in range(taus.shape[1]):
                label = ev[i][j][2].replace(" ", "\n")
                ax.text(j, i, label, ha="center", va="center", fontsize=6)
        ax.set_title(f"weighted tau vs {gt}")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
