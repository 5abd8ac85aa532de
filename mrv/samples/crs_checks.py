"""Coordinate reference systems of sample files: which are usable, and where their coordinates may lie.

* The **project CRS** (``--crs``, the run's grid CRS) stores every sample position: it must be a
  known, projected, two-dimensional CRS in metres (UTM, a national grid). Geographic, geocentric
  (EPSG:4978), vertical (EPSG:5703) and foot-based (EPSG:2263) CRSs are refused with a message
  saying which kind it is.
* A **file's CRS** (an ``epsg`` column, a format profile's ``epsg:``, an EWKT ``SRID=``) may be geographic
  or projected in any linear unit (pyproj converts feet), or compound (its horizontal part is
  used); geocentric and vertical CRSs are refused per row.
* **Area of use**: a position must lie inside the CRS's area of use as EPSG publishes it
  (``pyproj.CRS.area_of_use``, a lon/lat box), widened by :data:`AREA_OF_USE_MARGIN_DEG` because
  projected zones are routinely used a little beyond their nominal edges. This catches an
  easting without its zone prefix, swapped axes, Sydney given in UTM 33N or a value of 1e12 m.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from mrv.errors import ConfigError

__all__ = ["SourceCRS", "UnusableCRS", "inside_area", "project_area", "project_crs", "source_crs"]

#: Degrees by which a CRS's published area of use is widened before positions are rejected.
AREA_OF_USE_MARGIN_DEG = 1.0


def project_crs(text: object) -> CRS:
    """The project CRS, checked: known, projected, 2-D, in metres; else a :class:`ConfigError` saying why."""
    try:
        crs = CRS.from_user_input(text)
    except CRSError:
        raise ConfigError(
            f"The project CRS {text!r} is not a known CRS. Give an EPSG code of a projected CRS in metres, "
            "e.g. --crs EPSG:32633 (WGS 84 / UTM zone 33N) or EPSG:25832 (ETRS89 / UTM zone 32N)."
        ) from None
    name = f"{text} ({crs.name})"
    if crs.is_geocentric:
        raise ConfigError(f"The project CRS {name} is geocentric (x, y, z from the Earth's centre); use a projected CRS in metres such as a UTM zone.")
    if crs.is_vertical and not crs.is_compound:
        raise ConfigError(f"The project CRS {name} is a vertical (height) CRS; use a projected 2-D CRS in metres such as a UTM zone.")
    if crs.is_compound:
        raise ConfigError(f"The project CRS {name} is compound (horizontal + height); give its horizontal part, a projected 2-D CRS in metres.")
    if not crs.is_projected:
        raise ConfigError(f"The project CRS {name} is geographic (degrees); use a projected CRS in metres such as a UTM zone.")
    units = {a.unit_name for a in crs.axis_info}
    if units != {"metre"}:
        raise ConfigError(
            f"The project CRS {name} has axes in {', '.join(sorted(units))}, not metres; areas, distances and pixel "
            "sizes are computed in metres. Use a metric CRS for the same region (e.g. the matching UTM zone)."
        )
    return crs


@dataclass(frozen=True)
class SourceCRS:
    """A usable file CRS: transformers to the project CRS and to lon/lat, and its widened area of use."""

    epsg: int
    to_project: Transformer
    to_lonlat: Transformer | None
    """None when the CRS is geographic lon/lat already (then x = lon, y = lat)."""
    area: tuple[float, float, float, float]
    """(west, south, east, north) in degrees, widened; west > east when it crosses the antimeridian."""
    name: str


class UnusableCRS(Exception):
    """A file's EPSG code is unknown or of a kind that cannot hold a sample position (the reason is the message)."""


@lru_cache(maxsize=64)
def source_crs(epsg: int, project: str) -> SourceCRS:
    try:
        crs = CRS.from_epsg(epsg)
    except CRSError:
        raise UnusableCRS(f"EPSG:{epsg} is not a known CRS") from None
    if crs.is_geocentric:
        raise UnusableCRS(f"EPSG:{epsg} ({crs.name}) is geocentric; give positions in a geographic or projected CRS")
    if crs.is_compound:
        crs = crs.sub_crs_list[0]
    if crs.is_vertical:
        raise UnusableCRS(f"EPSG:{epsg} ({crs.name}) is a vertical (height) CRS; it cannot place a sample")
    if not (crs.is_projected or crs.is_geographic):
        raise UnusableCRS(f"EPSG:{epsg} ({crs.name}) is a {crs.type_name}; give a geographic or projected CRS")
    to_project = Transformer.from_crs(crs, CRS.from_user_input(project), always_xy=True)
    lonlat = None if crs.is_geographic else Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    aou = crs.area_of_use
    west, south, east, north = aou.bounds if aou is not None else (-180.0, -90.0, 180.0, 90.0)
    m = AREA_OF_USE_MARGIN_DEG
    area = (west - m, max(-90.0, south - m), east + m, min(90.0, north + m))
    return SourceCRS(epsg, to_project, lonlat, area, crs.name)


@lru_cache(maxsize=16)
def project_area(project: str) -> tuple[tuple[float, float, float, float], str]:
    """Widened area of use (west, south, east, north, degrees) of the project CRS, and its name."""
    crs = CRS.from_user_input(project)
    aou = crs.area_of_use
    west, south, east, north = aou.bounds if aou is not None else (-180.0, -90.0, 180.0, 90.0)
    m = AREA_OF_USE_MARGIN_DEG
    return (west - m, max(-90.0, south - m), east + m, min(90.0, north + m)), crs.name


def inside_area(lon: np.ndarray, lat: np.ndarray, area: tuple[float, float, float, float]) -> np.ndarray:
    """True where lon/lat (degrees) lie in ``area`` (west, south, east, north; west > east crosses 180 degrees)."""
    west, south, east, north = area
    in_lat = (lat >= south) & (lat <= north)
    in_lon = (lon >= west) & (lon <= east) if west <= east else (lon >= west) | (lon <= east)
    return np.asarray(in_lat & in_lon & np.isfinite(lon) & np.isfinite(lat))
