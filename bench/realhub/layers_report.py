"""``LAYERS.md`` from ``layers.json`` (see :mod:`bench.realhub.layers`): deterministic, so
``python -m bench realhub-layers --from-json`` rewrites it byte for byte."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

import transferjax as tj

SEED = 0
SEP = "/"


def _flat(nested: dict) -> dict:
    """``{model: {tap: v}}`` -> ``{"model/tap": v}``."""
    return {f"{m}{SEP}{tap}": v for m, taps in nested.items() for tap, v in taps.items()}


def _by_model_best(truth: dict) -> dict:
    return {m: max(taps.values()) for m, taps in truth.items()}


def _taus(scores: dict, acc: dict, idx: np.ndarray) -> np.ndarray:
    """Weighted τ of ``scores`` vs ``acc`` on each resample (rows of ``idx``); NaN if undefined."""
    names = list(acc)
    s = jnp.asarray([scores[n] for n in names], jnp.float32)
    a = jnp.asarray([acc[n] for n in names], jnp.float32)
    return np.asarray(jax.vmap(lambda i: tj.weighted_kendall_tau(s[i], a[i]))(jnp.asarray(idx)))


def _resamples(m: int, num: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([np.arange(m)[None], rng.integers(0, m, (num, m))])  # row 0: as is


class Pooled:
    """Weighted τ averaged over targets, with a bootstrap over candidates within each target.

    Every ranking is evaluated on the same resamples (seeded per target), so two rankings can be
    compared pairwise: :meth:`prob_better` is the fraction of resamples where A's mean τ beats B's.
    """

    def __init__(self, truths: dict, num: int, level: str):
        self.level = level
        self.acc = {
            t: (_flat(v) if level == "candidates" else _by_model_best(v)) for t, v in truths.items()
        }
        self.idx = {
            t: _resamples(len(a), num, SEED + i) for i, (t, a) in enumerate(self.acc.items())
        }

    def taus(self, scores_by_target: dict) -> np.ndarray:
        """``[1 + num]`` mean τ over targets (row 0: the data as is); NaN where undefined."""
        per = [_taus(scores_by_target[t], self.acc[t], self.idx[t]) for t in self.acc]
        return np.mean(per, axis=0)

    def per_target(self, scores_by_target: dict) -> dict:
        return {
            t: float(_taus(scores_by_target[t], self.acc[t], self.idx[t][:1])[0]) for t in self.acc
        }

    @staticmethod
    def interval(taus: np.ndarray) -> tuple[float, float]:
        boot = taus[1:][np.isfinite(taus[1:])]
        if boot.size == 0:
            return float("nan"), float("nan")
        return float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))

    @staticmethod
    def prob_better(a: np.ndarray, b: np.ndarray) -> float:
        ok = np.isfinite(a[1:]) & np.isfinite(b[1:])
        if not ok.any():
            return float("nan")
        wins = (a[1:][ok] > b[1:][ok]) + 0.5 * (a[1:][ok] == b[1:][ok])
        return float(np.mean(wins))


def _f(x: float, sign: bool = True) -> str:
    return "n/a" if not np.isfinite(x) else (f"{x:+.2f}" if sign else f"{x:.2f}")


def _ci(taus: np.ndarray) -> str:
    lo, hi = Pooled.interval(taus)
    return f"{_f(taus[0])} [{_f(lo)}, {_f(hi)}]"


def _tap_pos(taps: list, tap: str) -> str:
    k = len(taps) - 1 - taps.index(tap)
    return "last" if k == 0 else f"-{k}"


def _layer_stats(scores_by_target: dict, truths: dict) -> tuple[float, float, dict]:
    """Best-layer agreement (fraction of (model, target) pairs where the metric's top tap is the
    probe's), the mean accuracy lost by taking the metric's tap (points), and the position of the
    picked taps (``last``, ``-1``, ... from the end) as counts."""
    agree, lost, picks = [], [], {}
    for t, truth in truths.items():
        picked = tj.best_layers(scores_by_target[t])
        best = tj.best_layers(truth)
        for m, taps in truth.items():
            agree.append(picked[m] == best[m])
            lost.append(taps[best[m]] - taps[picked[m]])
            pos = _tap_pos(list(taps), picked[m])
            picks[pos] = picks.get(pos, 0) + 1
    return float(np.mean(agree)), float(np.mean(lost)), picks


def _width_rho(scores_by_target: dict, widths: dict) -> float:
    rhos, w = [], _flat(widths)
    for s in scores_by_target.values():
        flat = _flat(s) if isinstance(next(iter(s.values())), dict) else s
        x = [flat[k] for k in w]
        if np.ptp(x) > 0:
            rhos.append(spearmanr(x, [w[k] for k in w]).statistic)
    return float(np.mean(rhos)) if rhos else float("nan")


def _picks(picks: dict, order: list) -> str:
    return ", ".join(f"{p} {picks[p]}" for p in order if p in picks)


def write_report(path, out: dict, *, bootstrap: int = 1000) -> None:
    truths, scores, widths = out["truths"], out["scores"], out["widths"]
    targets = list(truths)
    metrics = sorted({k.split("/", 1)[1] for s in scores.values() for k in s})
    cand = Pooled(truths, bootstrap, "candidates")
    model = Pooled(truths, bootstrap, "models")

    def ok(variant, m):
        return all(isinstance(scores[t].get(f"{variant}/{m}"), dict) for t in targets)

    def get(variant, m):
        return {t: scores[t][f"{variant}/{m}"] for t in targets}

    static_c = {
        t: tj.evaluation.static_scores({u: _flat(truths[u]) for u in targets}, t) for t in targets
    }
    static_m = {
        t: tj.evaluation.static_scores({u: _by_model_best(truths[u]) for u in targets}, t)
        for t in targets
    }
    width_c = {
        t: _flat({m: {tap: float(d) for tap, d in taps.items()} for m, taps in widths.items()})
        for t in targets
    }
    st_c, st_m = cand.taus(static_c), model.taus(static_m)
    wd_c = cand.taus(width_c)

    lines = [
        "# Real-hub layer benchmark: which model, which layer, and how sure",
        "",
        f"Produced by `{' '.join(['python -m bench realhub-layers', *out['argv']])}`"
        f" on {out['date']}, {out['machine']}; images at 64 px. Wall time from cached features "
        f"(probes of every candidate on every target + every metric twice): "
        f"**{out['wall_from_cache_s'] / 60:.1f} min**; extraction of every tap in one pass per "
        f"model (cached after): "
        + ", ".join(f"{m} {s:.0f} s" for m, s in out["extract_s"].items())
        + ".",
        "",
        *([out["note"], ""] if out.get("note") else []),
        "Images per target (train / val / test): "
        + ", ".join(f"{t} {' / '.join(map(str, v))}" for t, v in out["sizes"].items())
        + "; images per model (pools shared by the targets of a source): "
        + ", ".join(f"{k} {v}" for k, v in out["pools"].items())
        + ".",
        "",
        "Candidates: every tap of `model.taps()` (stage ends and the pooled features), "
        f"{sum(len(v) for v in widths.values())} in all, widths "
        f"{min(min(v.values()) for v in widths.values())}-"
        f"{max(max(v.values()) for v in widths.values())}. Ground truth: the linear probe of each "
        "candidate (L2 logistic regression on standardised features, penalty picked on the "
        "validation split from " + "/".join(["1e-4", "1e-3", "1e-2", "0.1", "1"]) + ", test "
        "accuracy), one jitted program per width bucket over its candidates and penalties. "
        "Scores: one "
        "layer-wise `tj.score_hub` call per metric and target on the train split, as given "
        f"(`as is`) and with `reduce_dim={out['reduce_dim']}` (every candidate on its top-"
        f"{out['reduce_dim']} principal directions: the narrowest tap's width).",
        "",
        f"τ: weighted Kendall τ (hyperbolic weights), averaged over the {len(targets)} targets; "
        f"[95 % interval]: percentiles of {bootstrap} bootstrap resamples of the candidates (or "
        "models) within each target, the same resamples for every ranking, so `P(> static)` is "
        "a paired probability. `static`: each candidate's mean probe accuracy on the other "
        "targets (looks at no target data). `width`: score = the tap's width. `models, best "
        "layer`: the metric's best layer per model against the probe's best layer per model (6 "
        "models). `agree`: fraction of the (model, target) pairs where the metric's best "
        "tap is the probe's; `lost`: mean probe accuracy (points) given up by taking the "
        "metric's tap instead of the best one. `ρ width`: Spearman correlation of score and "
        "width over the candidates (mean over targets). `n/a`: on some target the metric gave "
        "every model the same score (τ undefined).",
        "",
    ]

    # ------------------------------------------------------------------ main table
    lines += [
        "## Every metric against the static baseline",
        "",
        "| ranking | τ, all candidates | P(> static) | τ, models at best layer | P(> static) "
        "| agree | lost | ρ width | τ, `reduce_dim` | P(> as is) | ρ width, `reduce_dim` |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    probe_rho = _width_rho(truths, widths)
    lines.append(
        f"| static | {_ci(st_c)} | | {_ci(st_m)} | | | | {_f(_width_rho(static_c, widths))} | | | |"
    )
    lines.append(
        f"| width | {_ci(wd_c)} | {_f(cand.prob_better(wd_c, st_c), False)} | | | | | +1.00 | | | |"
    )
    beats, beats_m, verdicts = [], [], {}
    for m in metrics:
        if not ok("as_is", m):
            err = next(v for t in targets if not isinstance(v := scores[t].get(f"as_is/{m}"), dict))
            lines.append(f"| {m} | {str(err)[:80]} | | | | | | | | | |")
            continue
        s = get("as_is", m)
        tc = cand.taus({t: _flat(s[t]) for t in targets})
        tm = model.taus({t: tj.aggregate_layers(s[t], "best") for t in targets})
        pc, pm = cand.prob_better(tc, st_c), model.prob_better(tm, st_m)
        agree, lost, _ = _layer_stats(s, truths)
        row = [
            m,
            _ci(tc),
            _f(pc, False),
            _ci(tm),
            _f(pm, False),
            f"{agree:.2f}",
            f"{lost:.1f}",
            _f(_width_rho(s, widths)),
        ]
        if ok("reduce_dim", m):
            r = get("reduce_dim", m)
            tr = cand.taus({t: _flat(r[t]) for t in targets})
            row += [_ci(tr), _f(cand.prob_better(tr, tc), False), _f(_width_rho(r, widths))]
        else:
            row += ["error", "", ""]
        lines.append("| " + " | ".join(row) + " |")
        if pc >= 0.9:
            beats.append(m)
        if pm >= 0.9:
            beats_m.append(m)
        verdicts[m] = (tc[0], pc, tm[0], pm)
    lines += [
        "",
        f"The probe accuracy itself has ρ width {_f(probe_rho)}. Metrics that beat the static "
        f"baseline with P ≥ 0.9 over all candidates: **{', '.join(beats) or 'none'}**; over "
        f"models at their best layer: **{', '.join(beats_m) or 'none'}**.",
        "",
    ]

    # ------------------------------------------------------------------ per target
    lines += [
        "## τ over all candidates, per target (`as is`)",
        "",
        "| ranking | " + " | ".join(targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for name, sc in [("static", static_c), ("width", width_c)] + [
        (m, {t: _flat(get("as_is", m)[t]) for t in targets}) for m in metrics if ok("as_is", m)
    ]:
        per = cand.per_target(sc)
        lines.append(f"| {name} | " + " | ".join(_f(per[t]) for t in targets) + " |")
    lines.append("")

    # ------------------------------------------------------------------ which layer
    order = ["last"] + [f"-{k}" for k in range(1, 10)]
    truth_picks: dict = {}
    for t, truth in truths.items():
        for m, taps in truth.items():
            pos = _tap_pos(list(taps), tj.best_layers(truth)[m])
            truth_picks[pos] = truth_picks.get(pos, 0) + 1
    lines += [
        "## Which layer each ranking picks",
        "",
        "Counts over the (model, target) pairs of the picked tap's position (`last` = the "
        "pooled features, `-1` the stage end before it, ...).",
        "",
        "| ranking | picks (`as is`) | picks (`reduce_dim`) |",
        "|---|---|---|",
        f"| probe (truth) | {_picks(truth_picks, order)} | |",
    ]
    for m in metrics:
        if not ok("as_is", m):
            continue
        row = [m, _picks(_layer_stats(get("as_is", m), truths)[2], order)]
        row.append(
            _picks(_layer_stats(get("reduce_dim", m), truths)[2], order)
            if ok("reduce_dim", m)
            else "error"
        )
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")

    # ------------------------------------------------------------------ the hub
    lines += [
        "## The hub: probe accuracy (%) of every candidate",
        "",
        "| model | tap | width | " + " | ".join(targets) + " |",
        "|---|---|---|" + "---|" * len(targets),
    ]
    for m, taps in widths.items():
        for tap, d in taps.items():
            lines.append(
                f"| {m} | {tap} | {d} | "
                + " | ".join(f"{truths[t][m][tap]:.1f}" for t in targets)
                + " |"
            )
    spread_c = {t: np.ptp(list(_flat(truths[t]).values())) for t in targets}
    spread_m = {t: np.ptp(list(_by_model_best(truths[t]).values())) for t in targets}
    lines += [
        "",
        "Spread of probe accuracy (points), all candidates / models at their best layer: "
        + ", ".join(f"{t} {spread_c[t]:.1f} / {spread_m[t]:.1f}" for t in targets)
        + ".",
        "",
    ]

    # ------------------------------------------------------------------ times
    lines += [
        "## Time per layer-wise `score_hub` call (s, compilation included; mean over targets)",
        "",
        "| metric | as is | `reduce_dim` |",
        "|---|---|---|",
    ]
    for m in metrics:
        row = [m]
        for variant in ("as_is", "reduce_dim"):
            ts = [out["times"][t].get(f"{variant}/{m}", float("nan")) for t in targets]
            row.append(f"{np.nanmean(ts):.2f}" if np.isfinite(ts).any() else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    path.write_text("\n".join(lines))
