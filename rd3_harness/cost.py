"""Cost as a metric: wall time, CPU time and peak memory of a block of work."""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections.abc import Iterator

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Resident memory of this process in bytes (Linux /proc; else the lifetime peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _PeakSampler(threading.Thread):
    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval, self.peak, self._done = interval, current_rss(), threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.peak = max(self.peak, current_rss())

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, current_rss())


@contextlib.contextmanager
def measure(device: torch.device | None = None) -> Iterator[dict[str, float]]:
    """Fill a dict with wall_s, cpu_s, peak_memory_bytes and memory_kind ('cuda' or 'rss')."""
    out: dict = {}
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    sampler = None if cuda else _PeakSampler()
    if sampler:
        sampler.start()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield out
    finally:
        if cuda:
            torch.cuda.synchronize(device)
        out["wall_s"] = time.perf_counter() - wall
        out["cpu_s"] = time.process_time() - cpu
        if cuda:
            out["peak_memory_bytes"], out["memory_kind"] = torch.cuda.max_memory_allocated(device), "cuda"
        else:
            out["peak_memory_bytes"], out["memory_kind"] = sampler.stop(), "rss"
