"""Wall time, CPU time and peak memory of this process *and all its descendants* (Dask workers, Rscript)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass

import psutil


def _tree() -> list[psutil.Process]:
    me = psutil.Process()
    try:
        return [me, *me.children(recursive=True)]
    except psutil.Error:
        return [me]


def tree_rss() -> int:
    """Resident bytes of this process and its descendants now."""
    total = 0
    for p in _tree():
        with contextlib.suppress(psutil.Error):
            total += int(p.memory_info().rss)
    return total


def tree_cpu_s() -> float:
    """User + system CPU seconds of this process, its live descendants and its reaped children."""
    total = 0.0
    for p in _tree():
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    t = os.times()
    return total + t.children_user + t.children_system


@dataclass
class Span:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_mb: float = 0.0
    """Peak RSS of the whole process tree during the span (sampled every 50 ms)."""
    load: float = 0.0
    """1-minute load average at the end of the span."""


class TreeMeter:
    """``with TreeMeter() as m: ...`` then ``m.span``: wall, CPU (process tree) and peak tree RSS."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.span = Span()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._peak = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, tree_rss())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeMeter:
        self._peak = tree_rss()
        self._cpu0 = tree_cpu_s()
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, tree_rss())
        self.span = Span(wall, tree_cpu_s() - self._cpu0, self._peak / 2**20, os.getloadavg()[0])
