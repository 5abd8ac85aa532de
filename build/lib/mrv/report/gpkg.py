"""Per-field results as a GeoPackage (OGC 12-128r18) layer for GIS users: ``report/fields.gpkg``.

One feature per field polygon, in the project CRS, with the numbers of ``report.json``: mean stock and
its 90 % interval per round (t C/ha), total per round (t C), and change and t CO2e between the first
and the last round. Written with ``pyogrio.raw.write`` (GDAL's GPKG driver) from WKB geometries, so
neither geopandas nor fiona is needed. ``OGR_CURRENT_DATE`` is pinned to the report's creation time
so re-rendering the same report gives the same timestamps inside the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import shapely
from pyogrio.raw import write as raw_write

from mrv.errors import MRVError
from mrv.fields import Field

__all__ = ["LAYER", "field_columns", "write_fields_gpkg"]

LAYER = "fields"
_STAT = {"mean": "mean", "lower_90": "lower90", "upper_90": "upper90"}


def _safe(name: str) -> str:
    """A column-name fragment from a round name (letters, digits and underscores only)."""
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def _num(d: Any, *keys: str) -> float:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return math.nan
        d = d[k]
    return float(d) if isinstance(d, int | float) and not isinstance(d, bool) else math.nan


def field_columns(entry: Mapping[str, Any], rounds: Sequence[str]) -> dict[str, float | str]:
    """The attribute columns of one field entry of ``report.json`` (NaN where a number is absent)."""
    cols: dict[str, float | str] = {
        "field_id": str(entry.get("field_id", "")),
        "name": str(entry.get("name", "")),
        "farm_id": str(entry.get("farm_id", "")),
        "practice": str(entry.get("practice", "")),
        "area_ha": _num(entry, "area_ha"),
        "mapped_area_ha": _num(entry, "mapped_area_ha"),
        "mapped_fraction": _num(entry, "mapped_fraction"),
    }
    for r in rounds:
        for stat, suffix in _STAT.items():
            cols[f"stock_t_ha_{_safe(r)}_{suffix}"] = _num(entry, "rounds", r, "soc_stock_t_ha", stat)
        for stat, suffix in _STAT.items():
            cols[f"total_t_{_safe(r)}_{suffix}"] = _num(entry, "rounds", r, "soc_total_t", stat)
    for key, prefix in (
        ("delta_soc_stock_t_ha", "change_t_ha"),
        ("delta_soc_total_t", "change_t"),
        ("co2e_t", "co2e_t"),
    ):
        for stat, suffix in _STAT.items():
            cols[f"{prefix}_{suffix}"] = _num(entry, "change", key, stat)
    return cols


def write_fields_gpkg(report: Mapping[str, Any], fields: Sequence[Field], path: Path, *, crs: str) -> Path:
    """Write one polygon per field of ``report["fields"]`` with its results to the GeoPackage ``path``.

    ``fields`` are the polygons in the project CRS ``crs``; every field of the report must be among them.
    """
    by_id = {f.field_id: f for f in fields}
    entries = report.get("fields") or []
    missing = [str(e.get("field_id")) for e in entries if str(e.get("field_id")) not in by_id]
    if missing:
        raise MRVError(
            f"Fields {missing[:5]} of report.json have no polygon in the field file; pass the field polygons the run used."
        )
    if not entries:
        raise MRVError("report.json lists no fields; nothing to write to the GeoPackage. Re-run the accounting step.")
    rounds = [str(r) for r in report.get("run", {}).get("rounds", [])]
    rows = [field_columns(e, rounds) for e in entries]
    names = list(rows[0])
    data = [
        np.array([row[n] for row in rows], dtype=object if isinstance(rows[0][n], str) else "float64") for n in names
    ]
    geoms = [
        shapely.geometry.MultiPolygon([g]) if g.geom_type == "Polygon" else g
        for g in (by_id[str(e["field_id"])].geometry for e in entries)
    ]
    wkb = np.array([shapely.to_wkb(g) for g in geoms], dtype=object)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    created = str(report.get("run", {}).get("created_utc") or "2000-01-01T00:00:00Z")
    stamp = created.replace("Z", ".000Z") if created.endswith("Z") and "." not in created else created
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": stamp})
    try:
        raw_write(
            str(path),
            wkb,
            data,
            names,
            layer=LAYER,
            driver="GPKG",
            geometry_type="MultiPolygon",
            crs=crs,
            layer_options={"DESCRIPTION": "SOC stock, change and t CO2e per field (see report.json)"},
        )
    except Exception as exc:  # pyogrio raises several GDAL error types
        raise MRVError(f"Cannot write the GeoPackage {path} ({exc}); check that the directory is writable.") from exc
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})
    return path
