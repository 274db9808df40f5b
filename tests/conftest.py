import os

# The suite compiles thousands of small programs and runs each for microseconds: LLVM's
# optimisation of the CPU code is most of that compile time and buys nothing here. Level 0 keeps
# XLA's HLO passes (fusion, scheduling: what the tests inspect) and only lowers the machine-code
# optimisation; numerics stay within rounding. Must be set before JAX initialises its backend.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
).strip()

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
# Four host devices so sharding tests run on the 2-core CI machine (must precede first use).
jax.config.update("jax_num_cpu_devices", 4)


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(params=["float32", "float64"])
def precision(request):
    """Run the test body in float32 (default) and under ``jax.enable_x64(True)``."""
    with jax.enable_x64(request.param == "float64"):
        yield request.param


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_executables():
    """Drop JAX's compiled executables after each test module.

    The suite compiles thousands of programs; kept alive in one process (an xdist worker runs
    half the suite) their code mappings pile up and XLA's compiler eventually crashed (a
    segfault or abort inside ``backend_compile_and_load``, seen twice late in CI runs). Each
    module still shares its compilations between its own tests.
    """
    yield
    jax.clear_caches()
