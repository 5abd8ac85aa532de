"""Process heap settings for the stages that stream large arrays (issue 19.3: memory flat as the region grows)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["MMAP_THRESHOLD_BYTES", "limit_heap_growth", "release_free_heap"]

#: glibc's ``M_MMAP_THRESHOLD`` for a process that streams a region: arrays from 4 MiB up (the maps' strip windows,
#: 24 MB; not the Dask blocks, 1.5-2.6 MB, which the heap reuses) get their own mapping, returned to the OS
#: when freed. glibc's default threshold rises to 32 MiB after the first frees, so the windows came from
#: per-thread heaps that fragmented: the strip writer's peak RSS grew with the region's pixels (10000 px wide:
#: 459 -> 591 MB from 10 to 30 Mpx; 404 MB at 30 Mpx with this threshold; issue 19.3). A 1 MiB threshold was
#: flatter (348 -> 368 MB) but cost ~10 % more CPU per map (page faults on every block).
MMAP_THRESHOLD_BYTES = 4 << 20
_M_MMAP_THRESHOLD = -3  # malloc.h


def limit_heap_growth(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold_bytes`` for this process (see :data:`MMAP_THRESHOLD_BYTES`).

    ``False`` where there is no glibc ``mallopt`` (macOS, Windows, musl): nothing changes there.
    """
    libc = _glibc()
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes))) if libc is not None else False


def release_free_heap() -> bool:
    """Return the free pages of every malloc arena to the OS (glibc ``malloc_trim(0)``); ``False`` without glibc.

    For the end of a tile or a mosaic: GDAL's cached blocks (256 KB each, below any mmap threshold) are freed into
    the arenas of the threads that compressed them, which later threads do not reuse, so without a trim the
    next round's tiles add their working set on top of the previous mosaic's cache.
    """
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - glibc (musl has no mallopt)
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return None
    return libc
