"""The real hub's targets: which images, split how, and their features (extracted once, cached).

Each target draws its train / validation / test images from a source (Fashion-MNIST, MNIST's 5k,
sklearn's digits) in one random order shared by every target of that source, so targets overlap as
much as possible and a model extracts each source split's pool of images once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np

from transferjax.features import data, extract_module, zoo

SEED = 0
SIZE = 64


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


def cache_key(*parts) -> str:
    h = hashlib.sha1()
    for p in parts:
        arr = isinstance(p, np.ndarray)
        h.update(np.ascontiguousarray(p).tobytes() if arr else str(p).encode())
    return h.hexdigest()[:12]


def features_for(model_name, model, source, split, images, idx, *, batch_size, quiet, pre):
    """Pooled features (and, if ``pre``, the last stage's input) of ``images[idx]``, cached.

    ``idx`` is the pool of one source split: the union of every target's indices into it.
    """
    path = cache_root() / f"{model_name}_{source}_{split}_{cache_key(idx, SIZE)}.npz"
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


def pools_for(targets, splits) -> dict:
    """``{(source, split): sorted indices}``: the union of every target's images per source split
    (each image is extracted once per model)."""
    pools: dict = {}
    for t in targets:
        for split, idx, _ in splits[t.name].values():
            pools.setdefault((t.source, split), []).append(idx)
    return {k: np.unique(np.concatenate(v)) for k, v in pools.items()}


def taps_for(model_name, model, source, split, images, idx, *, batch_size, quiet):
    """``{tap: [n, d_tap]}`` for every tap of ``model.taps()`` from one forward pass, cached."""
    taps = tuple(model.taps())
    path = cache_root() / f"taps_{model_name}_{source}_{split}_{cache_key(idx, SIZE, taps)}.npz"
    if path.exists():
        with np.load(path) as f:
            return {t: f[t] for t in taps}
    e = zoo.ZOO[model_name]
    x = data.to_model_input(images[idx], size=SIZE, normalization=e.normalization,
                            max_value=16 if source == "digits" else 255)  # fmt: skip
    out = extract_module(model, x, layers=list(taps), batch_size=batch_size, progress=not quiet)
    out = {t: np.asarray(out[t]) for t in taps}
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out
