"""What every bench shares: timing (compile time apart, median of repeats), the machine line and
the one results writer (a dated section appended to a ``RESULTS.md``)."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import jax

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def block(x):
    return jax.block_until_ready(x)


def time_call(fn, *args, repeats: int = 5) -> tuple[float, float]:
    """``(first_call_s, median_s)``: the first call (compilation included) and the median of
    ``repeats`` further calls, each waited for with ``block_until_ready``."""
    t0 = time.perf_counter()
    block(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    devs = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return (
        f"{cpu}; {os.cpu_count()} cores; jax {jax.__version__} ({jax.default_backend()}: {devs}); "
        f"python {platform.python_version()}"
    )


def host() -> str:
    """A short machine line: host name, CPU count, architecture, jax version, platform."""
    return (
        f"{platform.node() or 'this machine'} ({os.cpu_count()} CPUs, {platform.machine()}, "
        f"jax {jax.__version__}, {jax.devices()[0].platform})"
    )


def stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def section_head(title: str) -> list[str]:
    """The first lines of a results section: ``## title, <UTC time>`` and the machine line."""
    return [f"## {title}, {stamp()}", "", f"Machine: {machine()}", ""]


def write_section(head: list[str], lines, *, path: Path = RESULTS, write: bool = True,
                  echo: bool = True) -> str:
    """The section ``head`` (:func:`section_head`) + ``lines``: printed (unless ``echo`` is False:
    a bench that printed them as they came) and appended to ``path`` (created with a ``# Benchmark
    results`` heading if absent) unless ``write`` is False. Returns the section's text."""
    text = "\n".join([*head, *lines]) + "\n"
    if echo:
        print(text)
    if write:
        prev = path.read_text() if path.exists() else "# Benchmark results\n"
        path.write_text(prev.rstrip("\n") + "\n\n" + text)
        print(f"appended to {path}")
    return text
