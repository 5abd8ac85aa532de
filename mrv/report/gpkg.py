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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyogrio
import shapely
from pyogrio.raw import write as raw_write

from mrv.errors import MRVError
from mrv.fields import Field
from mrv.fsio import atomic_path
from mrv.report.schema import FieldResult, Interval, Report

__all__ = ["LAYER", "field_columns", "write_fields_gpkg"]

LAYER = "fields"
_STAT = {"mean": "mean", "lower_90": "lower90", "upper_90": "upper90"}


def _safe(name: str) -> str:
    """A column-name fragment from a round name (letters, digits and underscores only)."""
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def _num(value: float | None) -> float:
    return float(value) if value is not None else math.nan


def _stats(iv: Interval | None) -> dict[str, float]:
    """``{suffix: value}`` of an interval's mean and bounds (NaN where absent)."""
    if iv is None:
        return dict.fromkeys(_STAT.values(), math.nan)
    return {"mean": _num(iv.mean), "lower90": _num(iv.lower_90), "upper90": _num(iv.upper_90)}


def field_columns(entry: FieldResult, rounds: Sequence[str]) -> dict[str, float | str]:
    """The attribute columns of one field of ``report.json`` (NaN where a number is absent)."""
    cols: dict[str, float | str] = {
        "field_id": entry.field_id,
        "name": entry.name,
        "farm_id": entry.farm_id,
        "practice": entry.practice,
        "area_ha": _num(entry.area_ha),
        "mapped_area_ha": _num(entry.mapped_area_ha),
        "mapped_fraction": _num(entry.mapped_fraction),
    }
    for r in rounds:
        stocks = entry.rounds.get(r)
        for suffix, value in _stats(stocks.soc_stock_t_ha if stocks is not None else None).items():
            cols[f"stock_t_ha_{_safe(r)}_{suffix}"] = value
        for suffix, value in _stats(stocks.soc_total_t if stocks is not None else None).items():
            cols[f"total_t_{_safe(r)}_{suffix}"] = value
    change = entry.change
    for prefix, iv in (
        ("change_t_ha", change.delta_soc_stock_t_ha if change is not None else None),
        ("change_t", change.delta_soc_total_t if change is not None else None),
        ("co2e_t", change.co2e_t if change is not None else None),
    ):
        for suffix, value in _stats(iv).items():
            cols[f"{prefix}_{suffix}"] = value
    return cols


def write_fields_gpkg(report: Report, fields: Sequence[Field], path: Path, *, crs: str) -> Path:
    """Write one polygon per field of ``report.fields`` with its results to the GeoPackage ``path``.

    ``fields`` are the polygons in the project CRS ``crs``; every field of the report must be among them.
    """
    by_id = {f.field_id: f for f in fields}
    entries = report.fields
    missing = [e.field_id for e in entries if e.field_id not in by_id]
    if missing:
        raise MRVError(
            f"Fields {missing[:5]} of report.json have no polygon in the field file; pass the field polygons the run used."
        )
    if not entries:
        raise MRVError("report.json lists no fields; nothing to write to the GeoPackage. Re-run the accounting step.")
    rounds = list(report.run.rounds)
    rows = [field_columns(e, rounds) for e in entries]
    names = list(rows[0])
    data = [
        np.array([row[n] for row in rows], dtype=object if isinstance(rows[0][n], str) else "float64") for n in names
    ]
    geoms = [
        shapely.geometry.MultiPolygon([g]) if g.geom_type == "Polygon" else g
        for g in (by_id[e.field_id].geometry for e in entries)
    ]
    wkb = np.array([shapely.to_wkb(g) for g in geoms], dtype=object)
    path.parent.mkdir(parents=True, exist_ok=True)
    created = report.run.created_utc or "2000-01-01T00:00:00Z"
    stamp = created.replace("Z", ".000Z") if created.endswith("Z") and "." not in created else created
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": stamp})
    try:
        with atomic_path(path) as tmp:
            raw_write(
                str(tmp),
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
