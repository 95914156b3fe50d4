"""What a computation costs: wall seconds and peak memory growth."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SAMPLE_SECONDS = 0.005


def measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall seconds, and its peak RSS growth in MiB above the start (sampled every
    :data:`SAMPLE_SECONDS` from ``/proc/self/statm``, so Linux only)."""
    statm, page = Path("/proc/self/statm"), os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        return int(statm.read_text().split()[1]) * page

    start_rss, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            peak[0] = max(peak[0], rss())

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    start = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        watcher.join()
    return result, seconds, max(0, max(peak[0], rss()) - start_rss) / 2**20
