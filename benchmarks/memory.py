"""Peak-memory measurement shared by the benchmarks: resident set size sampled in a thread.

PyTorch's CPU allocations are invisible to tracemalloc, so the benchmarks sample the process
RSS (psutil) every few milliseconds and report the peak above the level at the start of a run.
Large tensors are mmap-backed and returned to the OS on free, so runs in one process do not
inherit each other's memory.
"""

from __future__ import annotations

import gc
import threading
import time
from contextlib import contextmanager

import psutil


class PeakRSS:
    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak_mib = 0.0
        self.elapsed_s = 0.0


@contextmanager
def measure(interval: float = 0.002):
    """``with measure() as m: ...`` then ``m.peak_mib`` (above baseline) and ``m.elapsed_s``."""
    gc.collect()
    proc = psutil.Process()
    base = proc.memory_info().rss
    result = PeakRSS(interval)
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        yield result
    finally:
        result.elapsed_s = time.perf_counter() - start
        stop.set()
        thread.join()
        peak[0] = max(peak[0], proc.memory_info().rss)
        result.peak_mib = (peak[0] - base) / 2**20
