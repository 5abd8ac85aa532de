"""report/fields.gpkg: one polygon per field in the project CRS with its numbers, read back with pyogrio."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyogrio import read_info
from pyogrio.raw import read
from shapely.geometry import box

from mrv.errors import MRVError
from mrv.fields import Field
from mrv.report.gpkg import LAYER, write_fields_gpkg
from mrv.report.schema import Report

CRS = "EPSG:32633"


def _iv(mean: float, lo: float, hi: float) -> dict[str, float]:
    return {"mean": mean, "lower_90": lo, "upper_90": hi, "sd": 1.0}


def _report() -> Report:
    a = {
        "field_id": "A", "name": "Süd <1>", "farm_id": "f1", "practice": "no-till", "area_ha": 4.0,
        "mapped_area_ha": 3.9, "mapped_fraction": 0.975,
        "rounds": {
            "2021": {"soc_stock_t_ha": _iv(50.0, 45.0, 55.0), "soc_total_t": _iv(195.0, 175.5, 214.5)},
            "2024": {"soc_stock_t_ha": _iv(52.0, 47.0, 57.0), "soc_total_t": _iv(202.8, 183.3, 222.3)},
        },
        "change": {
            "delta_soc_stock_t_ha": _iv(2.0, -1.0, 5.0),
            "delta_soc_total_t": _iv(7.8, -3.9, 19.5),
            "co2e_t": _iv(28.6, -14.3, 71.5),
        },
    }  # fmt: skip
    b = {"field_id": "B", "name": "", "farm_id": "", "practice": "", "area_ha": 2.0,
         "rounds": {"2021": {"soc_stock_t_ha": _iv(40.0, 30.0, 50.0)}}, "soc_stock_t_ha": _iv(40.0, 30.0, 50.0)}  # fmt: skip
    a["soc_stock_t_ha"] = a["rounds"]["2024"]["soc_stock_t_ha"]  # type: ignore[index]
    run = {"name": "t", "created_utc": "2024-11-01T00:00:00Z", "crs": CRS, "rounds": ["2021", "2024"],
           "latest_round": "2024", "baseline_round": "2021", "depth_cm": 30, "confidence": 0.9}  # fmt: skip
    project = {"area_ha": 6.0, "n_fields": 2, "soc_stock_t_ha": _iv(1, 0, 2), "soc_total_t": _iv(1, 0, 2), "rounds": {}}
    return Report.from_json({"schema_version": 2, "run": run, "project": project, "fields": [a, b]})


def _fields() -> tuple[Field, ...]:
    return (
        Field("A", {}, box(580_000, 5_350_000, 580_200, 5_350_200)),
        Field("B", {}, box(580_200, 5_350_000, 580_300, 5_350_200)),
    )


def test_gpkg_round_trip(tmp_path: Path) -> None:
    path = write_fields_gpkg(_report(), _fields(), tmp_path / "report" / "fields.gpkg", crs=CRS)
    info = read_info(str(path), layer=LAYER)
    assert (info["crs"], info["features"], info["geometry_type"]) == (CRS, 2, "MultiPolygon")
    meta, _, geoms, data = read(str(path), layer=LAYER)
    col = dict(zip(meta["fields"], data, strict=True))
    assert col["field_id"].tolist() == ["A", "B"]
    assert col["name"][0] == "Süd <1>"
    areas = [shapely.from_wkb(g).area for g in geoms]
    assert areas == pytest.approx([40_000.0, 20_000.0])  # 200 x 200 m and 100 x 200 m
    assert col["stock_t_ha_2024_mean"][0] == 52.0
    assert col["stock_t_ha_2021_lower90"].tolist() == [45.0, 30.0]
    assert col["total_t_2024_upper90"][0] == 222.3
    assert col["change_t_ha_mean"][0] == 2.0
    assert col["co2e_t_lower90"][0] == -14.3
    # Field B has no 2024 round and no change: missing numbers are null, not zero.
    assert math.isnan(col["stock_t_ha_2024_mean"][1])
    assert math.isnan(col["co2e_t_mean"][1])


def test_gpkg_is_byte_reproducible(tmp_path: Path) -> None:
    p1 = write_fields_gpkg(_report(), _fields(), tmp_path / "a.gpkg", crs=CRS)
    p2 = write_fields_gpkg(_report(), _fields(), tmp_path / "b.gpkg", crs=CRS)
    assert np.array_equal(np.frombuffer(p1.read_bytes(), np.uint8), np.frombuffer(p2.read_bytes(), np.uint8))


def test_gpkg_needs_every_field_polygon(tmp_path: Path) -> None:
    with pytest.raises(MRVError, match=r"\['B'\].*field polygons the run used"):
        write_fields_gpkg(_report(), _fields()[:1], tmp_path / "x.gpkg", crs=CRS)
