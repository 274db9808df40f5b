"""The parity tests' tolerances, in one place."""

import jax.numpy as jnp

# Parity with the reference implementations' golden outputs.
GOLDEN_RTOL = {jnp.float32: 1e-3, jnp.float64: 1e-6}
# jit vs eager, vmap vs loop: same arithmetic up to reassociation.
SAME_RTOL = {jnp.float32: 1e-5, jnp.float64: 1e-10}
# Zero-padded (hub) vs unpadded features.
PAD_RTOL = {jnp.float32: 1e-5, jnp.float64: 1e-10}


def rtol(table, dtype):
    return table[jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32]
