"""Plain NumPy PED + LogME (float64), the bench baseline: the reference's PED loop, then LogME by a
full SVD. ``VARIANTS`` also times PED's dynamics alone (``tj.ped``), the part PED adds.
"""

from __future__ import annotations

import transferjax as tj

from . import _ped
from .logme import reference as _logme

DESCRIPTION = "NumPy PED loop + LogME by full SVD"

VARIANTS = [
    {"label": "ped (dynamics only)", "call": tj.ped, "reference": _ped.dynamics,
     "description": _ped.DESCRIPTION},
]


def reference(features, labels) -> float:
    return _logme(_ped.dynamics(features, labels), labels, method="svd")
