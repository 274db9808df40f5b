"""Time every registered metric on the standard cases against its NumPy baseline and the limit.

    python -m bench metrics [--cases p1 p2] [--only logme sfda] [--repeats 5] [--quick] [--no-write]

The rows come from the registry (``transferjax.registry.METRICS``), so a newly registered metric
is benched without editing this file. Each metric is called as the registry describes it:
``fn(features, labels, num_classes=c, check_inputs=False)`` for features metrics (plus its
``label_options`` and a ``key`` when it needs one), ``fn(features)`` for label-free metrics, and on
the probabilities / hard labels of a synthetic 1000-class source model (:mod:`bench.inputs`) for
source-model metrics; pool-relative metrics return a dict of terms, which is what is timed.
The NumPy baseline of metric ``<name>`` and any extra rows come from ``bench/baselines/<name>.py``
(see :mod:`bench.baselines`); a metric without one gets a row with no NumPy column.

The limit is one centred Gram plus one ``eigh`` in JAX (what any spectral metric must at least do),
measured in the same run. Results (median of repeats, compile time apart) are appended to
``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import transferjax as tj

from .common import section_head, time_call, write_section
from .inputs import make_case, source_probs

BASELINES = Path(__file__).resolve().parent / "baselines"
SOURCE_CLASSES = 1000  # classes of the synthetic source model (LEEP, NCE)


@dataclasses.dataclass
class Row:
    label: str
    call: Callable  # the JAX call, no arguments
    baseline: Callable | None  # the NumPy call, no arguments
    description: str


@jax.jit
def _limit(x):
    xc = x - jnp.mean(x, axis=0, keepdims=True)
    g = jnp.matmul(xc.T, xc, precision=jax.lax.Precision.HIGHEST)
    return jnp.linalg.eigh(g)


def _accepts(fn, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def baseline_module(name: str):
    """``bench.baselines.<name>`` if that file exists, else ``None``."""
    if not (BASELINES / f"{name}.py").is_file():
        return None
    return importlib.import_module(f"{__package__}.baselines.{name}")


def rows(info, x, y) -> list[Row] | str:
    """The rows of registered metric ``info`` on features ``x`` and labels ``y``, or the reason it
    is not run on them."""
    base = baseline_module(info.name)
    max_rows = getattr(base, "MAX_ROWS", None)
    if max_rows is not None and x.shape[0] > max_rows:
        return f"skipped: more than {max_rows} rows (MAX_ROWS of its baseline)"
    c = int(y.max()) + 1
    if info.inputs == "features":
        data = x
    elif info.inputs == "source_probs":
        data = source_probs(x, SOURCE_CLASSES)
    elif info.inputs == "source_labels":
        data = source_probs(x, SOURCE_CLASSES).argmax(1)
    else:
        hint = "; see `python -m bench tta`" if info.name == "tta" else ""
        return f"skipped: inputs={info.inputs!r} has no standard case{hint}"
    classification = "classification" in info.tasks
    if classification:
        targets = y
    else:  # a regression-only metric: a continuous target derived from the labels
        targets = (np.eye(c)[y] @ np.random.default_rng(1).normal(size=c)).astype(np.float32)
    args = (data, targets) if info.uses_labels else (data,)
    jargs = tuple(jnp.asarray(a) for a in args)
    fn = info.fn
    kw = {}
    if info.uses_labels and classification:
        kw["num_classes"] = c
    if info.inputs == "source_labels" and _accepts(fn, "num_source_classes"):
        kw["num_source_classes"] = SOURCE_CLASSES
    if _accepts(fn, "check_inputs"):
        kw["check_inputs"] = False
    if info.uses_labels and info.label_options is not None:
        kw.update(info.label_options(np.asarray(targets)))
    if info.needs_key:
        kw["key"] = jax.random.key(0)

    def numpy_call(ref, options):
        return None if ref is None else functools.partial(ref, *args, **options)

    out = [Row(info.name, functools.partial(fn, *jargs, **kw),
               numpy_call(getattr(base, "reference", None), {}),
               getattr(base, "DESCRIPTION", "—"))]  # fmt: skip
    for v in getattr(base, "VARIANTS", ()):
        ref = v.get("reference", base.reference)
        call = functools.partial(v.get("call", fn), *jargs, **{**kw, **v.get("options", {})})
        desc = v.get("description", base.DESCRIPTION) if ref is not None else "—"
        out.append(Row(v["label"], call, numpy_call(ref, v.get("reference_options", {})), desc))
    return out


def _selected(label: str, only) -> bool:
    return not only or any(label.startswith(o) for o in only)


def _message(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


def _time_row(r: Row, shape: str, limit: float, args, failed: list) -> str:
    """The table row of ``r``; a metric that refuses the case (a ``ValueError`` from its input
    checks, e.g. too few dimensions for a quick shape) gets a ``refused`` row, any other
    exception an ``error`` row and its label appended to ``failed``."""
    try:
        first, med = time_call(r.call, repeats=args.repeats)
    except ValueError as e:
        return f"| {shape} | {r.label} | refused: {_message(e)} |"
    except Exception as e:  # noqa: BLE001  (one broken metric must not stop the run)
        failed.append(r.label)
        return f"| {shape} | {r.label} | error: {_message(e)} |"
    ncol = ratio = "—"
    if r.baseline is not None:
        try:
            _, nmed = time_call(r.baseline, repeats=args.numpy_repeats)
        except Exception as e:  # noqa: BLE001
            failed.append(r.label)
            ncol = f"error: {_message(e)}"
        else:
            ncol, ratio = f"{nmed:.4f}", f"{nmed / med:.1f}"
    return (f"| {shape} | {r.label} | {first:.3f} | {med:.4f} | {limit:.4f} | {med / limit:.2f} "
            f"| {ncol} | {ratio} | {r.description} |")  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench metrics",
                                 description=__doc__.splitlines()[0])  # fmt: skip
    ap.add_argument("--cases", nargs="+", default=["p1", "p2"])
    ap.add_argument("--only", nargs="+", default=None, help="row labels (prefix match) to run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--numpy-repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny shapes: a smoke run for CI")
    ap.add_argument("--no-write", action="store_true", help="print only, do not append")
    ap.add_argument("--cases-file", type=Path, default=None,
                    help="module defining make(name) -> (x, y) (default ../shared/bench/cases.py)")
    ap.add_argument("--list", action="store_true", help="list the rows and baselines, run nothing")
    args = ap.parse_args(argv)

    if args.list:
        x, y = make_case("p1", quick=True)
        for name in tj.metric_names():
            info = tj.get_metric(name)
            got = rows(info, x, y)
            if isinstance(got, str):
                print(f"{name} ({info.inputs}): {got}")
                continue
            for r in got:
                if _selected(r.label, args.only):
                    print(f"{r.label} ({info.inputs}): {r.description}")
        return 0

    head = section_head(f"Metrics{' (quick)' if args.quick else ''}")
    lines = [
        "| case | metric | first call s | median s | limit s | × limit | NumPy s | NumPy ÷ ours | "
        + "NumPy baseline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(head + lines), flush=True)
    failed = []
    for case in args.cases:
        x, y = make_case(case, quick=args.quick, cases_file=args.cases_file)
        _, limit = time_call(_limit, jnp.asarray(x), repeats=args.repeats)
        shape = f"{case} {x.shape[0]}×{x.shape[1]} C={int(y.max()) + 1}"
        print(f"{case} {x.shape}: limit (centred Gram + eigh) {limit:.4f} s", file=sys.stderr)
        for name in tj.metric_names():
            got = rows(tj.get_metric(name), x, y)
            if isinstance(got, str):
                if _selected(name, args.only):
                    print(f"{case} {name}: {got}", file=sys.stderr)
                continue
            for r in got:
                if _selected(r.label, args.only):
                    row = _time_row(r, shape, limit, args, failed)
                    print(row, flush=True)
                    lines.append(row)
    lines.append(
        f"\nMedian of {args.repeats} calls after the first (JAX) / {args.numpy_repeats} (NumPy); "
        "float32 inputs; NumPy baselines compute in float64 as the references do."
    )
    print(lines[-1])
    write_section(head, lines, write=not args.no_write, echo=False)
    if failed:
        print(f"errors in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
