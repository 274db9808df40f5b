"""From models and images to features: Flax extraction, a small offline model zoo, image datasets.

This sub-package is an *edge* (the core never imports it): it imports flax (and, for the weight
converters only, torch/h5py from the ``zoo`` extra); ``import transferjax`` does not import it.
Use ``import transferjax.features`` or ``tj.features`` (loaded on first access).

* :func:`extract` / :func:`extract_module`: jitted, fixed-shape batched forward passes returning
  pooled penultimate features ``[n, d]`` as NumPy arrays.
* :mod:`transferjax.features.zoo`: Flax (nnx) MobileNetV2, EfficientNet-Lite0/1/2 and the VGG16
  trunk, with converters from checkpoints shipped inside PyPI packages.
* :mod:`transferjax.features.data`: offline image datasets (Fashion-MNIST, MNIST 5k, digits).
"""

from .extract import extract as extract
from .extract import extract_module as extract_module
from .extract import pool_features as pool_features

__all__ = ["extract", "extract_module", "pool_features"]
