"""The contracts every imagery source honours: the search request, the loaded scenes, and the protocols.

:class:`ImagerySource`: ``search`` finds L2A items over an area and period; ``load`` returns surface
reflectance on the project grid: float32 in 0..1, NaN where the scene classification marks cloud,
shadow, snow or no data, dims ``(time, y, x)``, CRS and transform attached (``odc.geo`` / ``spatial_ref``).

:class:`CollectionSearcher`: a source that can also list every item of another, static collection over
a bbox (a DEM such as ``cop-dem-glo-30`` on the same STAC API, :func:`mrv.imagery.dem.dem_hrefs`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import pystac
import xarray as xr

from mrv.grid import Grid

__all__ = ["CollectionSearcher", "ImagerySource", "LoadedScenes", "SearchRequest"]


@dataclass(frozen=True)
class SearchRequest:
    """What to search for: one collection's items over an area and a period, below a cloud cover."""

    bbox_wgs84: tuple[float, float, float, float]
    """Area of interest as ``(west, south, east, north)`` in decimal degrees, WGS 84 (EPSG:4326) lon/lat,
    the order of the STAC API ``bbox`` parameter and of GeoJSON (RFC 7946 section 5)."""
    start: dt.date
    """First acquisition day (UTC), inclusive."""
    end: dt.date
    """Last acquisition day (UTC), inclusive: items acquired up to 23:59:59.999 UTC of that day match."""
    max_cloud_pct: float
    """Largest scene cloud cover accepted, in percent (0-100) of the scene, compared with the item's
    ``eo:cloud_cover`` (STAC eo extension); an item without it does not match."""
    collection: str
    """Collection id at the source (``sentinel-2-l2a``, ``sentinel-2-c1-l2a``, ...); a source whose own
    collection is fixed uses this one when it is not empty."""


@dataclass(frozen=True)
class LoadedScenes:
    """Reflectance of the usable items plus what was dropped, corrected or flagged, and why.

    Every record names one item (one scene) by its STAC id; a source that mosaics several scenes of one
    date into one time step (Sentinel Hub's Process API) repeats the date's reason for each of its scenes.
    """

    reflectance: xr.Dataset
    """One float32 variable per requested band (surface reflectance, unitless 0..1 after the scale and
    offset of the processing baseline, NaN where SCL is not clear or the pixel is nodata) and ``scl`` (uint8
    Sen2Cor scene classification codes, 0 = no data), dims ``(time, y, x)`` on the requested grid: its CRS
    (``attrs["crs"]``, the project CRS, metres) and pixel-centre ``x``/``y`` coordinates. Coordinates
    ``time`` (acquisition, UTC, datetime64[ns]; 00:00 of the date for a same-day mosaic) and ``item_id`` (time): the id of the scene of each time
    step, for a mosaic of same-day scenes the first of them (all of them in :attr:`scenes`)."""
    items: tuple[str, ...]
    """Ids of every item whose pixels are in ``reflectance``, in time order."""
    dropped: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """(item id, reason) of items left out: unreadable, or contradicted by their own data."""
    corrected: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """(item id, reason) of items whose radiometric offset the data check corrected (:mod:`mrv.imagery.scene_check`)."""
    flagged: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """(item id, reason) of items kept unchanged although the data check found them suspicious."""
    scenes: tuple[tuple[str, ...], ...] = ()
    """Item ids mosaicked into each time step of ``reflectance``, in its time order: one id each for the
    STAC sources, every scene of that date for Sentinel Hub. Empty means one item per time step (``items``)."""

    def scenes_by_time(self) -> tuple[tuple[str, ...], ...]:
        """The item ids of each time step (:attr:`scenes`, or one :attr:`items` id per step when unset)."""
        return self.scenes or tuple((i,) for i in self.items)


class ImagerySource(Protocol):
    """Searches and loads Sentinel-2 L2A scenes (local catalog, STAC API, Sentinel Hub)."""

    name: str
    """Short source kind recorded in the step summaries (``local``, ``stac-api``, ``sentinel-hub``)."""

    def search(self, request: SearchRequest) -> list[pystac.Item]:
        """Items matching ``request``, sorted by (datetime, id), asset hrefs absolute.

        Raises :class:`~mrv.errors.NoImageryFound` when nothing matches and
        :class:`~mrv.errors.ImageryError` when the source fails or too many items match."""
        ...

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


@runtime_checkable
class CollectionSearcher(Protocol):
    """A source that can list the items of any static collection it serves (a DEM, for terrain covariates)."""

    def search_collection(self, collection: str, bbox_wgs84: tuple[float, float, float, float]) -> list[pystac.Item]:
        """Every item of ``collection`` intersecting ``bbox_wgs84`` (WGS 84 lon/lat, west, south, east, north),
        sorted by id, asset hrefs absolute; :class:`~mrv.errors.NoImageryFound` when none does."""
        ...
