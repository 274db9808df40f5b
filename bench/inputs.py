"""Inputs of the benches: the standard cases, their tiny stand-ins, a synthetic source model.

The standard cases (p1: 5000×1024, C=50; p2: 20000×2048, C=100, post-ReLU float32 features) are
made by ``make(name) -> (x, y)`` of a cases module kept outside the package, by default
``../shared/bench/cases.py`` from the repository root (the file the references were timed on).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

CASES_FILE = Path(__file__).resolve().parents[2] / "shared" / "bench" / "cases.py"
QUICK = {"p1": (500, 64, 10), "p2": (1000, 128, 20)}  # n, d, classes of the --quick stand-ins


def load_cases(path: Path | str | None = None):
    """The cases module at ``path`` (default :data:`CASES_FILE`), loaded from its file."""
    path = Path(path or CASES_FILE)
    if not path.is_file():
        raise FileNotFoundError(
            f"bench cases file {path} not found: it defines make(name) -> (features, labels) for "
            "the standard cases; pass --cases-file PATH, or --quick for tiny synthetic shapes"
        )
    spec = importlib.util.spec_from_file_location("bench_cases", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_case(name: str, *, quick: bool = False, cases_file=None):
    """``(x [n, d] float32, y [n] int)`` of case ``name``; ``quick``: a tiny stand-in of it."""
    if quick:
        rng = np.random.default_rng(0)
        n, d, c = QUICK[name]
        y = np.r_[np.arange(c), rng.integers(0, c, n - c)]
        x = np.maximum(rng.normal(size=(n, d)).astype(np.float32), 0)
        return x, y
    return load_cases(cases_file).make(name)


def source_probs(x, num_source_classes: int = 1000, seed: int = 0) -> np.ndarray:
    """Softmax of a fixed random projection of the features: ``[n, z]`` float32 probabilities."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float32)
    w = rng.normal(size=(x.shape[1], num_source_classes)).astype(np.float32)
    logits = (x - x.mean(0)) @ w / np.sqrt(x.shape[1])
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)
