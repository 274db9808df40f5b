"""Reading hubs of feature files and accuracy tables (no JAX here)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = [
    "HubFileError",
    "load_hub",
    "load_accuracies",
    "load_table",
    "read_npz",
    "example_hub_path",
    "example_accuracies_path",
]

LABEL_KEYS = ("labels", "targets")


class HubFileError(ValueError):
    """A hub file or folder that cannot be read as a hub (missing labels, bad arrays, ...)."""


def example_hub_path() -> Path:
    """The small example hub shipped with the package (see ``data/README.md``)."""
    return Path(str(resources.files("transferjax") / "data" / "example_hub.npz"))


def example_accuracies_path() -> Path:
    return Path(str(resources.files("transferjax") / "data" / "example_accuracies.json"))


def _labels_from_npz(data, where) -> np.ndarray:
    for k in LABEL_KEYS:
        if k in data:
            return np.asarray(data[k])
    raise HubFileError(f"{where}: no 'labels' array (keys: {', '.join(data.keys()) or 'none'})")


def _read(path: Path, what: str, fn):
    """``fn(path)``, turning any failure to read the file into one :class:`HubFileError` line."""
    try:
        return fn(path)
    except HubFileError:
        raise
    except Exception as err:  # corrupt archives raise OSError, ValueError, EOFError, zipfile...
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HubFileError(f"{path}: cannot read {what} ({reason})") from None


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as d:
        return {k: np.asarray(d[k]) for k in d.keys()}


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file; :class:`HubFileError` (one line) if it cannot be read."""
    p = Path(path)
    if not p.exists():
        raise HubFileError(f"{p}: no such file")
    return _read(p, "the .npz file", _npz_arrays)


def _labels_txt(path: Path) -> np.ndarray:
    labels = np.loadtxt(path, ndmin=1)
    if np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    return labels


def _features_file(f: Path) -> np.ndarray:
    if f.suffix == ".npy":
        return _read(f, "features", lambda q: np.load(q, allow_pickle=False))
    arrays = _read(f, "features", _npz_arrays)
    if "features" in arrays:
        return arrays["features"]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise HubFileError(f"{f}: expected a 'features' array, found {list(arrays)}")


def _folder_features(p: Path) -> dict:
    """``<model>.npy`` files, or ``<model>/<layer>.npy`` subfolders (a layer-wise hub)."""
    feats: dict = {}
    for f in sorted(p.iterdir()):
        if f.is_dir():
            layers = {
                g.stem: _features_file(g) for g in sorted(f.iterdir())
                if g.suffix in (".npy", ".npz")
            }
            if layers:
                feats[f.name] = layers
        elif f.stem != "labels" and f.suffix in (".npy", ".npz"):
            feats[f.stem] = _features_file(f)
    kinds = {isinstance(v, dict) for v in feats.values()}
    if len(kinds) > 1:
        raise HubFileError(
            f"{p}: mixes <model>.npy files and <model>/ layer folders; use one layout"
        )
    return feats


def _nest(arrays: dict, where) -> dict:
    """``{"model/layer": x}`` keys of an ``.npz`` → ``{model: {layer: x}}`` (flat keys stay)."""
    slashed = ["/" in k for k in arrays]
    if not any(slashed):
        return dict(arrays)
    if not all(slashed):
        flat = [k for k, s in zip(arrays, slashed) if not s]
        raise HubFileError(
            f"{where}: a layer-wise hub names every array 'model/layer'; {flat} have no layer"
        )
    out: dict = {}
    for k, v in arrays.items():
        model, layer = k.split("/", 1)
        out.setdefault(model, {})[layer] = v
    return out


def load_hub(path: str | Path) -> tuple[dict, np.ndarray]:
    """Load ``({model: features [n, d]}, labels [n])`` from a hub.

    A hub is either an ``.npz`` holding ``labels`` plus one 2-D array per model, or a directory of
    per-model ``<name>.npy`` / ``<name>.npz`` files (an ``.npz`` with a ``features`` array, or a
    single array) plus a labels file ``labels.npy`` / ``labels.npz`` / ``labels.txt``.
    A layer-wise hub names its arrays ``model/layer`` in the ``.npz`` (or holds one folder per
    model with a ``<layer>.npy`` per layer) and loads as ``{model: {layer: features}}``.
    Checks that every array is 2-D with the labels' number of rows.

    Raises:
      HubFileError: a missing, unreadable or corrupt file, no labels, no models, a mixed layout,
        an array of the wrong shape (one line, naming the file).
    """
    p = Path(path)
    if not p.exists():
        raise HubFileError(f"{p}: no such file or directory")
    if p.is_dir():
        label_files = [p / f"labels{ext}" for ext in (".npy", ".npz", ".txt")]
        found = [f for f in label_files if f.exists()]
        if not found:
            raise HubFileError(f"{p}: no labels file (labels.npy, labels.npz or labels.txt)")
        lf = found[0]
        if lf.suffix == ".npy":
            labels = _read(lf, "labels", lambda q: np.load(q, allow_pickle=False))
        elif lf.suffix == ".npz":
            labels = _labels_from_npz(_read(lf, "labels", _npz_arrays), lf)
        else:
            labels = _read(lf, "labels (one number per line)", _labels_txt)
        feats = _folder_features(p)
    else:
        arrays = _read(p, "the .npz hub", _npz_arrays)
        labels = _labels_from_npz(arrays, p)
        feats = _nest({k: v for k, v in arrays.items() if k not in LABEL_KEYS}, p)
    if not feats:
        raise HubFileError(f"{p}: no model feature arrays found")
    labels = np.asarray(labels)
    if labels.ndim != 1 and not (labels.ndim == 2 and labels.dtype.kind == "f"):
        raise HubFileError(f"{p}: labels must be 1-D, got shape {labels.shape}")
    for k, v in feats.items():
        for layer, f in (v.items() if isinstance(v, dict) else [(None, v)]):
            name = repr(k) if layer is None else repr(f"{k}/{layer}")
            if f.ndim != 2:
                raise HubFileError(f"{p}: model {name} features must be 2-D [n, d], got {f.shape}")
            if f.shape[0] != labels.shape[0]:
                raise HubFileError(
                    f"{p}: model {name} has {f.shape[0]} rows but labels have {labels.shape[0]}"
                )
    return feats, labels


def load_table(path: str | Path) -> dict[str, dict[str, float]]:
    """``{dataset: {model: accuracy}}`` from a JSON object of objects (other datasets' results)."""
    p = Path(path)
    data = _read(p, "the accuracy table JSON", lambda q: json.loads(q.read_text()))
    ok = isinstance(data, dict) and data and all(
        isinstance(v, dict) and all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in v.values()
        )
        for v in data.values()
    )
    if not ok:
        raise HubFileError(f"{p}: the table must be a JSON object {{dataset: {{model: number}}}}")
    return {str(d): {str(m): float(a) for m, a in v.items()} for d, v in data.items()}


def load_accuracies(path: str | Path) -> dict[str, float]:
    """``{model: accuracy}`` from a JSON object (values numbers)."""
    p = Path(path)
    data = _read(p, "accuracies JSON", lambda q: json.loads(q.read_text()))
    if isinstance(data, dict) and "accuracies" in data and isinstance(data["accuracies"], dict):
        data = data["accuracies"]
    if not isinstance(data, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in data.values()
    ):
        raise HubFileError(f"{p}: accuracies must be a JSON object {{model: number}}")
    return {str(k): float(v) for k, v in data.items()}
