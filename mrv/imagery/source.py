"""The imagery source contract every provider honours.

``search`` finds L2A items over an area and period; ``load`` returns surface reflectance on the
project grid: float32 in 0..1, NaN where the scene classification marks cloud, shadow, snow or no
data, dims ``(time, y, x)``, CRS and transform attached (``odc.geo`` / ``spatial_ref``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pystac
import xarray as xr

from mrv.grid import Grid


@dataclass(frozen=True)
class SearchRequest:
    bbox_wgs84: tuple[float, float, float, float]
    start: dt.date
    end: dt.date
    max_cloud_pct: float
    collection: str


@dataclass(frozen=True)
class LoadedScenes:
    """Reflectance of the usable items plus what was dropped, corrected or flagged, and why."""

    reflectance: xr.Dataset
    items: tuple[str, ...]
    dropped: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """(item id, reason) of items left out: unreadable, or contradicted by their own data."""
    corrected: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """(item id, reason) of items whose radiometric offset the data check corrected (:mod:`mrv.imagery.scene_check`)."""
    flagged: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """(item id, reason) of items kept unchanged although the data check found them suspicious."""


class ImagerySource(Protocol):
    name: str

    def search(self, request: SearchRequest) -> list[pystac.Item]: ...

    def load(
        self,
        items: Sequence[pystac.Item],
        bands: Sequence[str],
        grid: Grid,
        *,
        chunk_px: int,
        check_grid: Grid | None = None,
    ) -> LoadedScenes:
        """Reflectance on ``grid``; the per-scene data check samples ``check_grid`` (default ``grid``), so that
        every tile of a region judges a scene on the same pixels and reaches the same verdict."""
        ...
