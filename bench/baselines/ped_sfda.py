"""Plain NumPy PED + SFDA (float64), the bench baseline: the reference's PED loop, then SFDA."""

from __future__ import annotations

from . import _ped
from .sfda import reference as _sfda

DESCRIPTION = "NumPy PED loop + NumPy SFDA"


def reference(features, labels) -> float:
    return _sfda(_ped.dynamics(features, labels), labels)
