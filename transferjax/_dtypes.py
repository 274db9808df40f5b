"""The dtype policy: float32 by default, float64 whenever ``jax_enable_x64`` is on."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._typing import DTypeLike

__all__ = ["compute_dtype", "x64_enabled"]


def x64_enabled() -> bool:
    """Whether 64-bit floats are enabled (``jax_enable_x64`` or ``jax.enable_x64(True)``)."""
    return jnp.result_type(float) == jnp.float64


def compute_dtype(x, dtype: DTypeLike | None = None) -> np.dtype:
    """The floating dtype a metric computes in.

    ``dtype`` if given (canonicalised: float64 becomes float32 when x64 is off); otherwise float64
    when x64 is enabled (the references compute in float64, and x64 does not upcast float32 inputs
    by itself), else float32. Half-precision inputs are upcast.
    """
    if dtype is not None:
        dt = np.dtype(jax.dtypes.canonicalize_dtype(dtype))
        if not jnp.issubdtype(dt, jnp.floating):
            raise TypeError(f"dtype must be a floating dtype, got {dt}")
        # Half precision is storage, not arithmetic: eigh/Cholesky have no float16 kernels.
        return np.dtype(jnp.float32) if dt.itemsize < 4 else dt
    del x  # the policy does not depend on the input's own float width
    return np.dtype(jnp.float64 if x64_enabled() else jnp.float32)
