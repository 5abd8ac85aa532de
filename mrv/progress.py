"""Progress of long steps: bars on the terminal for ``mrv run``, silent everywhere else.

Steps report through :func:`track`; nothing is shown until the command line installs a bar
factory with :func:`show_bars`. Flows log their progress to Prefect as well, so runs on a
Prefect server or a Dask cluster stay observable without a terminal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Protocol

__all__ = [
    "Bar",
    "show_bars",
    "track",
]


class Bar(Protocol):
    def update(self, n: int) -> object: ...

    def close(self) -> None: ...


BarFactory = Callable[[str, int, str], Bar]
_factory: BarFactory | None = None


@contextmanager
def track(label: str, total: int, *, unit: str = "it") -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``, which moves the bar ``label`` of ``total`` units on by ``n`` (thread-safe)."""
    factory = _factory
    if factory is None or total <= 0:
        yield lambda n: None
        return
    bar = factory(label, total, unit)
    lock = threading.Lock()

    def advance(n: int) -> None:
        with lock:
            bar.update(n)

    try:
        yield advance
    finally:
        bar.close()


def show_bars(stream: IO[str]) -> None:
    """Draw tqdm bars on ``stream`` for every :func:`track` from now on."""
    from tqdm import tqdm

    global _factory

    def factory(label: str, total: int, unit: str) -> Bar:
        return tqdm(total=total, desc=label, unit=unit, file=stream, dynamic_ncols=True, mininterval=0.5)

    _factory = factory

