"""Two real CPU processes on localhost (JAX's multi-controller runtime, gloo collectives).

The processes run tests/distributed_worker.py, the script docs/distributed.md launches; each holds
half of the rows (and half of a hub's models) and checks its results against one process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from . import _golden

WORKER = Path(__file__).with_name("distributed_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(*extra: str, timeout: float = 120.0):
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(WORKER.parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "--coordinator", f"localhost:{port}",
             "--num-processes", "2", "--process-id", str(i), "--golden", str(_golden.GOLDEN_DIR),
             *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for i in range(2)
    ]
    out = []
    try:
        for p in procs:
            o, e = p.communicate(timeout=timeout)
            out.append((p.returncode, o, e))
    finally:
        for p in procs:
            p.kill()
    return out


@pytest.mark.skipif(not _golden.available(), reason=_golden.MISSING)
def test_two_processes_equal_one():
    for i, (rc, out, err) in enumerate(_launch()):
        assert rc == 0 and f"OK {i}" in out, (rc, out, err[-3000:])


@pytest.mark.skipif(not _golden.available(), reason=_golden.MISSING)
def test_processes_that_disagree_fail_together():
    for rc, out, err in _launch("--disagree"):
        assert rc == 3, (rc, out, err[-3000:])
        assert "disagree on width" in out
