"""What a computation costs: wall seconds and peak memory growth."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall seconds, and its peak resident memory growth in MiB above the start.

    The peak is the kernel's high-water mark (``VmHWM``), reset before ``fn`` by writing ``5`` to
    ``/proc/self/clear_refs``: exact however short the peak, unlike sampling (Linux >= 4.0 only).
    Garbage is collected first: memory that the collector frees while ``fn`` runs would otherwise
    hide ``fn``'s own growth below the starting mark.
    """
    gc.collect()
    CLEAR_REFS.write_text("5")  # the high-water mark restarts from the current RSS
    start_rss = _status_kib("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return result, seconds, max(0, _status_kib("VmHWM") - start_rss) / 1024


def _status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise OSError(f"{STATUS} has no {field} line")
