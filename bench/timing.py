"""Clocks, medians and CPU pinning shared by the measurements."""

from __future__ import annotations

import gc
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def cpu_count() -> int:
    """Return how many CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def pinned(cpu: int | None = None) -> Iterator[int | None]:
    """Run the block on one CPU (the last allowed one unless ``cpu``).

    Yields the CPU pinned to, or None where pinning is not possible; the
    previous affinity is restored afterwards.
    """
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    allowed = os.sched_getaffinity(0)
    target = cpu if cpu is not None else max(allowed)
    os.sched_setaffinity(0, {target})
    try:
        yield target
    finally:
        os.sched_setaffinity(0, allowed)


def timed(function: Callable[[], Any]) -> float:
    """Return the wall-clock seconds ``function()`` took.

    Garbage left by earlier measurements is collected first; the collector
    stays on during the call, as it is in a worker.
    """
    gc.collect()
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def timed_with_collector(function: Callable[[], Any]) -> tuple[float, float]:
    """Return ``(seconds, collector seconds)`` of ``function()``, as `timed`
    measures it; the second is the time CPython's cyclic garbage collector
    spent in collections during the call (its ``gc.callbacks``)."""
    spent = 0.0
    started_at = 0.0

    def note(phase: str, _info: dict[str, Any]) -> None:
        nonlocal spent, started_at
        if phase == "start":
            started_at = time.perf_counter()
        else:
            spent += time.perf_counter() - started_at

    gc.collect()
    gc.callbacks.append(note)
    try:
        started = time.perf_counter()
        function()
        elapsed = time.perf_counter() - started
    finally:
        gc.callbacks.remove(note)
    return elapsed, spent


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def peak_rss_mb() -> float:
    """Return this process's peak resident set size in MiB.

    On Linux that is ``VmHWM`` of ``/proc/self/status``: ``ru_maxrss`` also
    counts what the parent held when it forked the process (it survives
    ``exec``), so a subprocess of a big benchmark would inherit its peak.
    Elsewhere it is ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def maxrss_mb() -> float:
    """Return ``ru_maxrss`` in MiB (includes the forking parent's peak)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def machine() -> dict[str, Any]:
    """Return what the figures were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus_allowed": cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg())
        if hasattr(os, "getloadavg")
        else None,
    }
