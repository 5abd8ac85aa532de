"""Field polygons: read with GDAL (pyogrio) from GeoJSON, GeoPackage or Shapefile and projected to the project CRS.

The one reader of field boundaries in the package (the pipeline, validation, verification and the report maps
all call :func:`read_fields`). GeoJSON is lon/lat WGS 84 by RFC 7946 section 4; GDAL honours a legacy (2008
GeoJSON) ``crs`` member naming another CRS. A GeoPackage layer or a Shapefile (``.prj``) carries its own CRS.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from rasterio.features import rasterize
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from mrv.errors import ConfigError
from mrv.grid import Grid

__all__ = [
    "Field",
    "FieldCoverage",
    "ZoneRaster",
    "field_coverage",
    "field_files",
    "field_index_at",
    "field_index_raster",
    "fields_bounds",
    "read_fields",
]

log = logging.getLogger(__name__)

#: The layer read from a file holding several (a GeoPackage); a file with one layer is read whatever its name.
FIELDS_LAYER = "fields"
#: Files that belong to a Shapefile besides the ``.shp`` (ESRI Shapefile Technical Description, 1998; ``.cpg``
#: code page, ``.qix``/``.sbn``/``.sbx`` spatial indexes).
SHAPEFILE_SIDECARS: tuple[str, ...] = (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")
_POLYGONAL = ("Polygon", "MultiPolygon")
_FORMATS = "a GeoJSON FeatureCollection, a GeoPackage or a Shapefile"


@dataclass(frozen=True)
class Field:
    field_id: str
    """The ``field_id`` attribute of the feature, as text; unique within the file."""
    properties: dict[str, Any]
    """Every attribute of the feature (Python values; attributes the feature leaves empty are left out)."""
    geometry: BaseGeometry
    """Polygon or MultiPolygon in the project CRS (metres), valid (GEOS ``make_valid`` where it was not)."""

    @property
    def area_ha(self) -> float:
        return float(self.geometry.area) / 10_000.0


def field_files(path: Path) -> tuple[Path, ...]:
    """The files a field-polygon dataset consists of: ``path``, plus the existing sidecars of a Shapefile.

    What a bundle must copy and a manifest hash for the polygons to be read back the same.
    """
    path = Path(path)
    if path.suffix.lower() != ".shp":
        return (path,)
    sidecars = [path.with_suffix(ext) for ext in (*SHAPEFILE_SIDECARS, *(e.upper() for e in SHAPEFILE_SIDECARS))]
    return (path, *dict.fromkeys(p for p in sidecars if p.is_file()))


def _layer(path: Path) -> str | None:
    """The layer to read: the only one, or the one named :data:`FIELDS_LAYER`."""
    import pyogrio

    layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    if len(layers) <= 1:
        return None
    if FIELDS_LAYER in layers:
        return FIELDS_LAYER
    raise ConfigError(
        f"{path} holds {len(layers)} layers ({', '.join(layers)}); name the layer of field polygons "
        f"'{FIELDS_LAYER}' or give a file with that layer only."
    )


def _python(value: Any) -> Any:
    """A numpy scalar from GDAL as the plain Python value (``None`` for null / NaN)."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _source_crs(path: Path, crs_text: str | None) -> CRS:
    if not crs_text:
        raise ConfigError(
            f"{path} has no coordinate reference system, so its coordinates cannot be placed. Give the CRS "
            "(a .prj beside a Shapefile, the layer's SRS in a GeoPackage), or use GeoJSON in lon/lat (RFC 7946)."
        )
    try:
        return CRS.from_user_input(crs_text)
    except CRSError as exc:
        raise ConfigError(f"{path}: its CRS {crs_text!r} is not understood ({exc}). Re-save it with an EPSG CRS.") from exc


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """The polygonal part of a ``make_valid`` result (which may add the lines or points of a collapsed ring)."""
    if geom.geom_type in _POLYGONAL:
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if g.geom_type in _POLYGONAL]
    polys: list[Polygon] = [q for g in parts for q in (g.geoms if isinstance(g, MultiPolygon) else [g])]
    return MultiPolygon(polys) if len(polys) > 1 else (polys[0] if polys else Polygon())


def read_fields(path: Path, *, crs: str) -> tuple[Field, ...]:
    """Read field polygons (GeoJSON, GeoPackage or Shapefile, through GDAL/pyogrio) and project them to ``crs``.

    Every feature needs a unique ``field_id`` attribute and a Polygon or MultiPolygon geometry (Z dropped).
    GeoJSON is lon/lat WGS 84 (RFC 7946); a legacy ``crs`` member naming another CRS is honoured, as are
    a GeoPackage layer's SRS and a Shapefile's ``.prj``. An invalid polygon (e.g. a self-intersecting ring)
    is repaired with GEOS ``make_valid`` in the project CRS, and the repair is logged with its reason and the
    area before and after. A file with several layers is read from its layer named ``fields``.
    """
    from pyogrio.errors import DataLayerError, DataSourceError, FieldError, GeometryError
    from pyogrio.raw import read

    path = Path(path)
    try:
        layer = _layer(path)
        meta, _, wkb, values = read(path, layer=layer, force_2d=True)
    except (DataSourceError, DataLayerError, FieldError, GeometryError, OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read field polygons from {path}: {exc}. Give {_FORMATS}.") from exc
    names = [str(n) for n in meta["fields"]]
    columns: Mapping[str, Any] = dict(zip(names, values, strict=True))
    if wkb is None or len(wkb) == 0:
        raise ConfigError(f"{path} contains no field polygons.")
    tr = Transformer.from_crs(_source_crs(path, meta.get("crs")), crs, always_xy=True)
    ids = columns.get("field_id")
    fields = []
    seen: set[str] = set()
    for i, raw in enumerate(wkb):
        props = {k: v for k in names if (v := _python(columns[k][i])) is not None}
        fid = None if ids is None else _python(ids[i])
        if fid is None:
            raise ConfigError(f"{path}: feature {i} has no 'field_id' property; every field needs a unique id.")
        fid = str(fid)
        if fid in seen:
            raise ConfigError(f"{path}: field_id {fid!r} appears twice; field ids must be unique.")
        seen.add(fid)
        if raw is None:
            raise ConfigError(f"{path}: field {fid!r} has an empty geometry; fix or remove it.")
        shape = shapely.from_wkb(raw)
        if shape.geom_type not in _POLYGONAL:
            raise ConfigError(
                f"{path}: field {fid!r} is a {shape.geom_type}, not a polygon; field boundaries must be "
                "Polygon or MultiPolygon features."
            )
        geom = shapely.transform(shape, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        if not geom.is_empty and not geom.is_valid:
            reason = shapely.is_valid_reason(geom)
            repaired = _polygonal(shapely.make_valid(geom))
            log.warning(
                "%s: field %r has an invalid polygon (%s); repaired with make_valid: %.4f ha -> %.4f ha. "
                "Fix the boundary in the source file to silence this.",
                path, fid, reason, geom.area / 10_000.0, repaired.area / 10_000.0,
            )  # fmt: skip
            geom = repaired
        if geom.is_empty or geom.area <= 0:
            raise ConfigError(f"{path}: field {fid!r} has an empty geometry; fix or remove it.")
        fields.append(Field(field_id=fid, properties=props, geometry=geom))
    if not fields:
        raise ConfigError(f"{path} contains no field polygons.")
    return tuple(fields)


def fields_bounds(fields: tuple[Field, ...]) -> tuple[float, float, float, float]:
    b = np.array([f.geometry.bounds for f in fields])
    return (float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max()))


@dataclass(frozen=True)
class FieldCoverage:
    """Exact pixel fractions of every field on a grid (sparse): entry k says that ``fraction[k]`` (0-1] of pixel
    (``row[k]``, ``col[k]``) lies inside field ``zone[k]``. Sum of fractions x pixel area = polygon area."""

    row: np.ndarray
    col: np.ndarray
    zone: np.ndarray
    fraction: np.ndarray
    n_zones: int

    def area_ha(self, pixel_area_ha: float) -> np.ndarray:
        """Area (ha) of each zone inside the grid: the polygon area when the grid covers the field."""
        return np.bincount(self.zone, weights=self.fraction, minlength=self.n_zones) * pixel_area_ha


def field_coverage(fields: tuple[Field, ...] | list[Field], grid: Grid) -> FieldCoverage:
    """The exact fraction of each pixel inside each field polygon (project CRS, north-up grid).

    ``grid`` may be a window of the project grid (:meth:`mrv.grid.Grid.window`, e.g. one strip of rows): rows and
    columns are then the window's, and only the fields reaching into it are visited, so the coverage of a large
    region is computed strip by strip (:func:`mrv.accounting.recompute.stream_zone_sums`) with the same fractions.

    Pixels whose centre lies deeper inside the polygon than half a pixel diagonal are wholly inside
    (fraction 1); only the pixels along the boundary get a polygon-square intersection
    (shapely/GEOS), the approach of exactextract (Baston 2022) without its dependency. The 2 %
    margin on the half diagonal absorbs GEOS's polygonal approximation of buffer arcs.
    """
    t = grid.transform
    res_x, res_y = float(t.a), float(-t.e)
    half = 0.5 * math.hypot(res_x, res_y) * 1.02
    rows, cols, zones, fracs = [], [], [], []
    for i in _fields_on(fields, grid):
        f = fields[i]
        minx, miny, maxx, maxy = f.geometry.bounds
        c0 = max(0, math.floor((minx - t.c) / res_x) - 1)
        c1 = min(grid.width, math.ceil((maxx - t.c) / res_x) + 1)
        r0 = max(0, math.floor((t.f - maxy) / res_y) - 1)
        r1 = min(grid.height, math.ceil((t.f - miny) / res_y) + 1)
        if c0 >= c1 or r0 >= r1:
            continue
        r2, c2 = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
        rr, cc = r2.ravel(), c2.ravel()
        xc = t.c + (cc + 0.5) * res_x
        yc = t.f - (rr + 0.5) * res_y
        inner = shapely.contains_xy(f.geometry.buffer(-half), xc, yc)
        near = shapely.contains_xy(f.geometry.buffer(half), xc, yc) & ~inner
        boxes = shapely.box(xc[near] - res_x / 2, yc[near] - res_y / 2, xc[near] + res_x / 2, yc[near] + res_y / 2)
        edge = shapely.area(shapely.intersection(boxes, f.geometry)) / (res_x * res_y)
        keep = edge > 0
        for sel, frac in ((inner, np.ones(int(inner.sum()))), (np.flatnonzero(near)[keep], edge[keep])):
            rows.append(rr[sel])
            cols.append(cc[sel])
            zones.append(np.full(len(frac), i, dtype=np.int64))
            fracs.append(np.asarray(frac, dtype=float))
    return FieldCoverage(
        row=_cat(rows, np.int64), col=_cat(cols, np.int64), zone=_cat(zones, np.int64),
        fraction=_cat(fracs, np.float64), n_zones=len(fields),
    )  # fmt: skip


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)


class ZoneRaster(np.ndarray):
    """The int32 field-index raster of :func:`field_index_raster`, which also knows its fields' exact pixel fractions.

    :func:`mrv.accounting.aggregate.simulate_zone_means` weights pixels by :meth:`coverage` (computed on first use),
    so field and project means and totals use the exact polygon areas, the same areas ``area_ha`` reports.
    Slices and arithmetic results are plain arrays of pixel-centre indices.
    """

    _fields: tuple[Field, ...]
    _grid: Grid
    _coverage: FieldCoverage | None

    def coverage(self) -> FieldCoverage:
        if getattr(self, "_coverage", None) is None:
            self._coverage = field_coverage(self._fields, self._grid)
        assert self._coverage is not None
        return self._coverage


def field_index_raster(fields: tuple[Field, ...], grid: Grid) -> np.ndarray:
    """int32 raster on ``grid``: the 0-based index of the field covering each pixel centre, -1 elsewhere.

    Returned as a :class:`ZoneRaster`: ``.coverage()`` gives the exact pixel fractions used for field totals.
    ``grid`` may be a window of the project grid (the same pixel centres, so the same indices as the whole grid's).
    """
    shapes = [(fields[i].geometry, int(i)) for i in _fields_on(fields, grid)]  # in file order: the last one wins
    if shapes:
        idx = rasterize(shapes, out_shape=grid.shape, transform=grid.transform, fill=-1, dtype="int32")
    else:
        idx = np.full(grid.shape, -1, dtype="int32")
    out = idx.view(ZoneRaster)
    out._fields, out._grid, out._coverage = tuple(fields), grid, None
    return out


def field_index_at(fields: tuple[Field, ...], grid: Grid, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """:func:`field_index_raster` at pixels (``rows``, ``cols``) of ``grid``, without the grid-sized raster.

    Each pixel is rasterized as a one-pixel window (the same pixel-centre rule and overlap order); pixels outside
    the grid get -1.
    """
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    out = np.full(rows.size, -1, dtype=np.int64)
    for k in np.flatnonzero((rows >= 0) & (rows < grid.height) & (cols >= 0) & (cols < grid.width)):
        out[k] = int(field_index_raster(fields, grid.window(int(rows[k]), int(cols[k]), 1, 1))[0, 0])
    return out


def _fields_on(fields: tuple[Field, ...] | list[Field], grid: Grid) -> np.ndarray:
    """Indices (in order) of the fields whose bounding box reaches within a pixel of ``grid``'s bounds."""
    if not fields:
        return np.empty(0, dtype=np.int64)
    b = shapely.bounds(np.array([f.geometry for f in fields], dtype=object))
    left, bottom, right, top = grid.bounds
    r = grid.resolution_m
    near = (b[:, 0] <= right + r) & (b[:, 2] >= left - r) & (b[:, 1] <= top + r) & (b[:, 3] >= bottom - r)
    return np.flatnonzero(near)
