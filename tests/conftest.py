import os

# The suite compiles thousands of small programs and runs each for microseconds, so compile time
# is most of its time. Both flags keep XLA's HLO passes (fusion, scheduling: what the tests
# inspect) and change only how the CPU machine code is made: LLVM optimisation level 0, and the
# elemental emitters for fused loops instead of the MLIR fusion emitters (whose pipeline was
# about three quarters of each metric kernel's compile). Numerics stay within rounding. A flag
# already in XLA_FLAGS wins (``--xla_cpu_use_fusion_emitters=true`` runs the suite on XLA's
# default emitters). Must be set before JAX initialises its backend.
_FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def _xla_knows(flag: str) -> bool:
    """Whether the installed jaxlib defines ``flag`` (XLA aborts on an unknown one): looked up in
    its shared libraries' bytes, without initialising JAX."""
    import importlib.util
    import mmap
    import pathlib

    spec = importlib.util.find_spec("jaxlib")
    if spec is None or spec.origin is None:
        return False
    name = flag.lstrip("-").split("=")[0].encode()
    for lib in pathlib.Path(spec.origin).parent.rglob("*.so"):
        with open(lib, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if m.find(name) >= 0:
                return True
    return False


_FAST_COMPILE = tuple(f for f in _FAST_COMPILE if _xla_knows(f))
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", "")]
    + [f for f in _FAST_COMPILE if f.split("=")[0] not in os.environ.get("XLA_FLAGS", "")]
).strip()
# One BLAS / OpenMP thread per process (NumPy's OpenBLAS, the LAPACK that XLA:CPU calls for SVD,
# eigh, Cholesky, and torch in the zoo's converter tests): xdist already runs a worker per core,
# and extra threads that spin-wait for a busy core made the decompositions of the golden inputs
# several times slower. Read when each library loads, so before NumPy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
