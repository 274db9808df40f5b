"""The real hub's ground truths per (model, target): (a) the linear probe, (b) last-stage
fine-tuning, (c) full fine-tuning (resumable in chunks, its accuracies committed in
``full_finetune.json`` next to this file)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from transferjax.features import data, zoo

from ..common import host
from .targets import SEED, SIZE, cache_key, cache_root

HERE = Path(__file__).resolve().parent
PROTOCOL = 2  # bump when a ground truth's recipe changes: cached truths are keyed on it


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
FULL_TABLE = "full_finetune.json"  # (c) accuracies per pair, committed next to this file


def finetune_full(model, data_, num_classes, *, head, ckpt: Path, deadline: float,
                  history: list | None = None):  # fmt: skip
    """Ground truth (c): :func:`_finetune` of every parameter of ``model`` + a new head on the
    images, the recipe of (b) (LP-FT, Adam 1e-4 / 1e-3, batch 64, BN statistics frozen) for
    ``FULL_EPOCHS`` epochs, resumable in chunks (``ckpt``, ``deadline``)."""
    return _finetune(model, lambda m, x: m.features(x), data_, num_classes, epochs=FULL_EPOCHS,
                     head=head, lr=1e-4, head_lr=1e-3, batch=64, ckpt=ckpt,
                     deadline=deadline, history=history)  # fmt: skip


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
            ckpt = cache_root() / f"full_{cache_key(key)}.npz"
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
            done[key], made[key], hist[key] = acc, host(), history
            path.write_text(json.dumps(full_table(done, made, hist), indent=1))
            ckpt.unlink()
            print(f"full {t.name}/{name}: {acc:.1f} ({took:.0f}s)", file=sys.stderr)
        accs = {name: done.get(f"{t.name}/{t.n_train}/{t.n_val}/{t.n_test}/{name}/{FULL_EPOCHS}")
                for name in models}  # fmt: skip
        if all(a is not None for a in accs.values()):
            out[t.name] = accs
    args.full_pairs = done, made, hist
    return out


def full_table(pairs: dict, made: dict, hist: dict) -> dict:
    """The (c) accuracies with how they were made (``FULL_TABLE``: committed, so that a fresh
    machine resumes from them)."""
    return {
        "protocol": FULL_PROTOCOL,
        "recipe": f"every parameter + a new linear head from the linear probe (LP-FT), Adam "
        f"1e-4 (backbone) / 1e-3 (head), batch 64, BatchNorm statistics frozen, {FULL_EPOCHS} "
        "epochs, test accuracy at the best validation epoch; bench/realhub/run.py "
        "--full-minutes, in chunks",
        "keys": "target/n_train/n_val/n_test/model/epochs -> test accuracy (%)",
        "machine": host(),  # the run that wrote this file
        "pairs": {k: round(float(v), 2) for k, v in sorted(pairs.items())},
        "made_on": {k: made.get(k, "?") for k in sorted(pairs)},  # the machine of each pair
        # validation accuracy (%) of epochs 0 (the probe head, before any step) .. FULL_EPOCHS,
        # for the pairs made since it is recorded; the test accuracy is that of the best epoch
        "val_by_epoch": {k: hist[k] for k in sorted(pairs) if k in hist},
    }
