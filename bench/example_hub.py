"""Regenerate the example hub shipped in transferjax/data (deterministic).

Six synthetic "models" embed the same 10-class target set: a latent class structure seen through
model-specific random ReLU layers of different widths and different signal-to-noise ratios.
The "accuracies" are the held-out accuracy of a ridge linear probe trained on 400 samples and
tested on 2000 fresh samples of the same generator: a measurable stand-in for fine-tuning
accuracy, not a real fine-tuning result.

    python -m bench example-hub [--out DIR]
"""

import argparse
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "transferjax" / "data"
MODELS = {  # name: (width, signal scale, noise scale)
    "tiny-16": (16, 0.6, 1.0),
    "small-32": (32, 0.9, 1.0),
    "base-48": (48, 1.2, 1.0),
    "wide-96": (96, 1.0, 1.4),
    "large-128": (128, 1.6, 1.0),
    "huge-160": (160, 1.4, 0.8),
}
C, LATENT, N_TRAIN, N_TEST = 10, 12, 400, 2000


def _sample(rng, n, centres):
    y = np.r_[np.arange(C), rng.integers(0, C, n - C)]
    z = centres[y] + rng.normal(size=(n, LATENT))
    return z, y


def _probe_accuracy(ftr, ytr, fte, yte, ridge=1.0):
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    a, b = (ftr - mu) / sd, (fte - mu) / sd
    a = np.c_[a, np.ones(len(a))]
    b = np.c_[b, np.ones(len(b))]
    w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ np.eye(C)[ytr])
    return float(np.mean((b @ w).argmax(1) == yte))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench example-hub",
                                 description=__doc__.splitlines()[0])  # fmt: skip
    ap.add_argument("--out", type=Path, default=OUT, help=f"folder to write (default {OUT})")
    out = ap.parse_args(argv).out
    rng = np.random.default_rng(20261123)
    centres = rng.normal(0, 1.0, (C, LATENT))
    ztr, ytr = _sample(rng, N_TRAIN, centres)
    zte, yte = _sample(rng, N_TEST, centres)
    hub, acc = {"labels": ytr.astype(np.int64)}, {}
    for name, (d, signal, noise) in MODELS.items():
        proj = rng.normal(size=(LATENT, d)) / np.sqrt(LATENT)
        bias = rng.normal(0, 0.5, d)

        def embed(z, r):
            return np.maximum(signal * z @ proj + bias + noise * r.normal(size=(len(z), d)), 0)

        ftr, fte = embed(ztr, rng), embed(zte, rng)
        hub[name] = ftr.astype(np.float32)
        acc[name] = round(100 * _probe_accuracy(ftr, ytr, fte, yte), 2)
    np.savez_compressed(out / "example_hub.npz", **hub)
    meta = {
        "note": "synthetic example: held-out accuracy (%) of a ridge linear probe on 2000 fresh "
        "samples of the same generator (python -m bench example-hub); not a fine-tuning result",
        "accuracies": acc,
    }
    (out / "example_accuracies.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(acc)
