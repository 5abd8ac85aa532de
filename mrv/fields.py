"""Field polygons: read from GeoJSON (RFC 7946, lon/lat) and projected to the project CRS."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyproj import Transformer
from rasterio.features import rasterize
from shapely import ops
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from mrv.errors import ConfigError
from mrv.grid import Grid


@dataclass(frozen=True)
class Field:
    field_id: str
    properties: dict[str, Any]
    geometry: BaseGeometry
    """Polygon in the project CRS (metres)."""

    @property
    def area_ha(self) -> float:
        return float(self.geometry.area) / 10_000.0


def read_fields(path: Path, *, crs: str) -> tuple[Field, ...]:
    """Read field polygons and project them from EPSG:4326 to ``crs``.

    GeoJSON is lon/lat WGS 84 by RFC 7946; a legacy ``crs`` member naming another CRS is honoured.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read field polygons from {path}: {exc}. Give a GeoJSON FeatureCollection.") from exc
    src_crs = doc.get("crs", {}).get("properties", {}).get("name", "EPSG:4326")
    tr = Transformer.from_crs(src_crs, crs, always_xy=True)
    fields = []
    seen: set[str] = set()
    for i, feat in enumerate(doc.get("features", [])):
        props = dict(feat.get("properties") or {})
        fid = props.get("field_id")
        if fid is None:
            raise ConfigError(f"{path}: feature {i} has no 'field_id' property; every field needs a unique id.")
        fid = str(fid)
        if fid in seen:
            raise ConfigError(f"{path}: field_id {fid!r} appears twice; field ids must be unique.")
        seen.add(fid)
        geom = ops.transform(tr.transform, shape(feat["geometry"]))
        if geom.is_empty or geom.area <= 0:
            raise ConfigError(f"{path}: field {fid!r} has an empty geometry; fix or remove it.")
        fields.append(Field(field_id=fid, properties=props, geometry=geom))
    if not fields:
        raise ConfigError(f"{path} contains no field polygons.")
    return tuple(fields)


def fields_bounds(fields: tuple[Field, ...]) -> tuple[float, float, float, float]:
    b = np.array([f.geometry.bounds for f in fields])
    return (float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max()))


def field_index_raster(fields: tuple[Field, ...], grid: Grid) -> np.ndarray:
    """int32 raster on ``grid``: the 0-based index of the field covering each pixel centre, -1 elsewhere."""
    shapes = ((f.geometry, i) for i, f in enumerate(fields))
    return rasterize(shapes, out_shape=grid.shape, transform=grid.transform, fill=-1, dtype="int32")
