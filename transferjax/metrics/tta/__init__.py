"""Task Transfer Analysis (TTA): an upper bound on the target loss of a re-used source head.

- :mod:`.bound`: the bound at given transforms (:func:`tta_bound`) and the registered score
  :func:`tta` (its negation);
- :mod:`.optimize`: the learned transforms (:func:`tta_optimize`);
- :mod:`.inputs`: :class:`TTASettings` (every hyper-parameter with its source) and the checks.

The transport pieces (Sinkhorn, rounding, class-wise W1) live in :mod:`transferjax.ot`.
"""

from .bound import TTABound as TTABound
from .bound import tta as tta
from .bound import tta_bound as tta_bound
from .inputs import TTASettings as TTASettings
from .optimize import TTAOptimizeResult as TTAOptimizeResult
from .optimize import tta_optimize as tta_optimize

__all__ = ["TTABound", "TTAOptimizeResult", "TTASettings", "tta", "tta_bound", "tta_optimize"]
