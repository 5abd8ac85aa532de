"""Peak-memory sampling shared by the benchmarks (this process and, with a client, every Dask worker)."""

from __future__ import annotations

import threading
from typing import Any

import psutil


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


class PeakSampler:
    """Samples this process's RSS (and, with a client, every worker's RSS) every ``interval`` s."""

    def __init__(self, client: Any | None = None, interval: float = 0.1) -> None:
        self.client = client
        self.interval = interval
        self.start_rss = _rss()
        self.peak_rss = self.start_rss
        self.worker_start: dict[str, int] = {}
        self.worker_peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_rss = max(self.peak_rss, _rss())
        if self.client is not None:
            for addr, rss in self.client.run(_rss).items():
                self.worker_start.setdefault(addr, rss)
                self.worker_peak[addr] = max(self.worker_peak.get(addr, 0), rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def client_increase_mb(self) -> float:
        return (self.peak_rss - self.start_rss) / 2**20

    @property
    def workers_peak_mb(self) -> float:
        return sum(self.worker_peak.values()) / 2**20

    @property
    def workers_idle_mb(self) -> float:
        return sum(self.worker_start.values()) / 2**20
