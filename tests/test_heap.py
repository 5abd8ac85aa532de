"""mrv.heap: glibc's mallopt and malloc_trim are reached through ctypes (issue 19.3)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from mrv.heap import limit_heap_growth, release_free_heap


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_threshold_is_taken_and_trim_returns_freed_small_blocks() -> None:
    assert limit_heap_growth()
    # 200 MB of 64 KiB blocks (heap, below any mmap threshold), all but the last freed: the heap top cannot
    # shrink past the survivor, so the pages stay resident until malloc_trim returns the free ones.
    blocks = [np.ones(8192) for _ in range(3200)]
    keep = blocks[-1]
    before = _rss_mb()
    del blocks
    assert release_free_heap()
    assert _rss_mb() < before - 100
    assert keep.sum() == 8192
