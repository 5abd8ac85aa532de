"""Terrain covariates from a digital elevation model: elevation, slope and topographic position.

The DEM (a local GeoTIFF, or the items of a DEM collection such as ``cop-dem-glo-30`` on a STAC
API) is reprojected onto the project grid, extended by a margin so that slope and TPI at the grid
edge see real neighbours, with bilinear resampling (``rasterio.warp.reproject``). Derivatives are
taken on the projected metre grid, so a DEM in geographic degrees needs no scale factor.

* ``elevation`` (m): the DEM value.
* ``slope`` (degrees): Horn (1981) third-order finite differences on the 3 x 3 neighbourhood,
  Proc. IEEE 69(1):14-47, the method of GDAL ``gdaldem slope`` and ArcGIS.
* ``tpi`` (m): topographic position index, elevation minus the mean elevation of the square
  neighbourhood of half-width ``tpi_radius_m`` (Weiss 2001; Guisan et al. 1999); > 0 on ridges and
  upper slopes, < 0 in hollows and valleys, where soils tend to accumulate carbon.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.warp import Resampling, reproject
from scipy.ndimage import uniform_filter

from mrv.config import DemConfig
from mrv.errors import ConfigError, ImageryError
from mrv.grid import Grid
from mrv.imagery.source import CollectionSearcher, ImagerySource

__all__ = [
    "MIN_COVERAGE",
    "TERRAIN_COVARIATES",
    "Terrain",
    "dem_hrefs",
    "horn_slope_deg",
    "reproject_dem",
    "terrain_covariates",
    "topographic_position_index",
]

log = logging.getLogger(__name__)

TERRAIN_COVARIATES: tuple[str, ...] = ("elevation", "slope", "tpi")
#: A DEM must cover at least this share of the project grid.
MIN_COVERAGE = 0.95


@dataclass(frozen=True)
class Terrain:
    """Terrain covariates on the project grid: ``values`` is ``(len(names), y, x)`` float32."""

    values: np.ndarray
    names: tuple[str, ...]
    sources: tuple[str, ...]


def horn_slope_deg(z: np.ndarray, *, cell_m: float) -> np.ndarray:
    """Slope in degrees by Horn (1981) on a square grid of ``cell_m`` metres.

    With the 3 x 3 window ``a b c / d e f / g h i`` (rows north to south)::

        dz/dx = ((c + 2f + i) - (a + 2d + g)) / (8 cell)
        dz/dy = ((g + 2h + i) - (a + 2b + c)) / (8 cell)
        slope = atan(sqrt(dz/dx² + dz/dy²))

    Edges are extended by odd reflection (linear extrapolation), which is exact for planes.
    NaN in the window gives NaN.
    """
    if cell_m <= 0:
        raise ValueError(f"cell_m must be positive, got {cell_m}")
    p = np.pad(np.asarray(z, dtype="float64"), 1, mode="reflect", reflect_type="odd")
    a, b, c = p[:-2, :-2], p[:-2, 1:-1], p[:-2, 2:]
    d, f = p[1:-1, :-2], p[1:-1, 2:]
    g, h, i = p[2:, :-2], p[2:, 1:-1], p[2:, 2:]
    dzdx = ((c + 2 * f + i) - (a + 2 * d + g)) / (8 * cell_m)
    dzdy = ((g + 2 * h + i) - (a + 2 * b + c)) / (8 * cell_m)
    return np.degrees(np.arctan(np.hypot(dzdx, dzdy))).astype("float32")


def topographic_position_index(z: np.ndarray, *, radius_px: int) -> np.ndarray:
    """Elevation minus the mean of the finite values in the ``(2 r + 1)²`` window around each pixel."""
    if radius_px < 1:
        raise ValueError(f"radius_px must be >= 1, got {radius_px}")
    z = np.asarray(z, dtype="float64")
    finite = np.isfinite(z)
    size = 2 * radius_px + 1
    total = uniform_filter(np.where(finite, z, 0.0), size=size, mode="nearest")
    count = uniform_filter(finite.astype("float64"), size=size, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1e-12), np.nan)
    return (z - mean).astype("float32")


def reproject_dem(hrefs: Sequence[str], grid: Grid) -> np.ndarray:
    """The DEM files mosaicked (first valid value wins) onto ``grid``, bilinear; NaN where none covers."""
    out = np.full(grid.shape, np.nan, dtype="float32")
    for href in hrefs:
        tile = np.full(grid.shape, np.nan, dtype="float32")
        try:
            with rasterio.open(href) as src:
                if src.crs is None:
                    raise ImageryError(
                        f"The DEM {href} has no CRS. Give a georeferenced GeoTIFF (e.g. gdal_translate -a_srs)."
                    )
                reproject(
                    source=rasterio.band(src, 1),
                    destination=tile,
                    src_nodata=src.nodata,
                    dst_transform=grid.transform,
                    dst_crs=grid.crs,
                    dst_nodata=np.nan,
                    resampling=Resampling.bilinear,
                )
        except (rasterio.errors.RasterioError, OSError) as exc:
            raise ImageryError(
                f"Cannot read the DEM {href}: {exc}. Check imagery.dem (a GeoTIFF path or a DEM collection)."
            ) from exc
        fill = np.isnan(out) & np.isfinite(tile)
        out[fill] = tile[fill]
    return out


def terrain_covariates(hrefs: Sequence[str], grid: Grid, *, tpi_radius_m: float = 300.0) -> Terrain:
    """Elevation, Horn slope and TPI on ``grid`` from the DEM files ``hrefs``.

    Raises :class:`ImageryError` when the DEM covers less than 95 % of the grid.
    """
    if not hrefs:
        raise ImageryError(f"No DEM file covers the project grid {grid.bounds} ({grid.crs}). Check imagery.dem.")
    radius_px = max(1, math.ceil(tpi_radius_m / grid.resolution_m))
    margin = (radius_px + 1) * grid.resolution_m
    left, bottom, right, top = grid.bounds
    wide = Grid(
        crs=grid.crs,
        bounds=(left - margin, bottom - margin, right + margin, top + margin),
        resolution_m=grid.resolution_m,
    )
    z = reproject_dem(hrefs, wide)
    m = radius_px + 1
    inner = (slice(m, m + grid.height), slice(m, m + grid.width))
    coverage = float(np.isfinite(z[inner]).mean())
    if coverage < MIN_COVERAGE:
        raise ImageryError(
            f"The DEM ({', '.join(hrefs)}) covers only {100 * coverage:.1f}% of the project grid {grid.bounds} "
            f"({grid.crs}); at least {100 * MIN_COVERAGE:.0f}% is needed. Give a DEM that covers the region's fields."
        )
    if coverage < 1.0:
        log.warning("the DEM leaves %.2f%% of the project grid without elevation (NaN)", 100 * (1 - coverage))
    slope = horn_slope_deg(z, cell_m=grid.resolution_m)
    tpi = topographic_position_index(z, radius_px=radius_px)
    values = np.stack([z[inner], slope[inner], tpi[inner]]).astype("float32")
    return Terrain(values=values, names=TERRAIN_COVARIATES, sources=tuple(hrefs))


def dem_hrefs(dem: DemConfig, grid: Grid, source: ImagerySource) -> list[str]:
    """The DEM files for ``grid``: the configured path, or the asset of each covering collection item.

    A collection is searched on ``source`` itself, which must be able to list another collection's items
    (:class:`~mrv.imagery.source.CollectionSearcher`, e.g. a STAC API source).
    """
    if dem.path is not None:
        return [str(dem.path)]
    if not isinstance(source, CollectionSearcher) or dem.collection is None:
        raise ConfigError(
            f"imagery.dem names the collection {dem.collection!r}, which needs a STAC API source "
            "(imagery.source: stac); give imagery.dem as a GeoTIFF path instead."
        )
    items = source.search_collection(dem.collection, grid.bbox_wgs84())
    where = getattr(source, "url", getattr(source, "name", type(source).__name__))
    hrefs = []
    for item in items:
        if dem.asset not in item.assets:
            raise ImageryError(
                f"DEM item {item.id} of {dem.collection} at {where} has no asset {dem.asset!r} "
                f"(assets: {sorted(item.assets)}). Set imagery.dem.asset to the elevation asset's key."
            )
        hrefs.append(item.assets[dem.asset].get_absolute_href() or item.assets[dem.asset].href)
    return hrefs
