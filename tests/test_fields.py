"""Field polygons read through GDAL (pyogrio): GeoJSON, GeoPackage, Shapefile, repairs and the error messages."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from pyogrio.raw import write
from pyproj import Transformer
from shapely.geometry import Polygon, box, shape

from mrv.errors import ConfigError
from mrv.fields import field_files, read_fields

REPO = Path(__file__).resolve().parents[1]
DEMO_FIELDS = REPO / "sample_data" / "demo" / "fields.geojson"
UTM = "EPSG:32633"
TO_LONLAT = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)

#: Two fields in UTM 33N: a 200 m x 100 m rectangle (2 ha) and a 100 m square (1 ha).
UTM_POLYGONS = {"A": box(600_000, 5_360_000, 600_200, 5_360_100), "B": box(600_500, 5_360_000, 600_600, 5_360_100)}


def _lonlat(geom: Any) -> Any:
    return shapely.transform(geom, lambda xy: np.column_stack(TO_LONLAT.transform(xy[:, 0], xy[:, 1])))


def _write(path: Path, geoms: dict[str, Any], *, crs: str | None, driver: str, layer: str | None = None,
           extra: dict[str, list[Any]] | None = None) -> Path:  # fmt: skip
    ids = list(geoms)
    fields = ["field_id", "name", *(extra or {})]
    data = [np.array(ids, dtype=object), np.array([f"field {i}" for i in ids], dtype=object)]
    data += [np.asarray(v) for v in (extra or {}).values()]
    write(path, np.array([shapely.to_wkb(g) for g in geoms.values()], dtype=object), data, fields,
          crs=crs, driver=driver, geometry_type="Polygon", layer=layer, append=layer is not None and path.exists())  # fmt: skip
    return path


def _geojson(path: Path, features: list[dict[str, Any]], **top: Any) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", **top, "features": features}), encoding="utf-8")
    return path


def _feature(geom: Any, **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": props, "geometry": shapely.geometry.mapping(geom)}


def test_demo_fields_keep_their_ids_areas_and_attributes() -> None:
    """Reference: the GeoJSON parsed with json + shapely and projected with pyproj, as before GDAL read it."""
    doc = json.loads(DEMO_FIELDS.read_text(encoding="utf-8"))
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    expected = {
        str(f["properties"]["field_id"]): (shapely.transform(shape(f["geometry"]), lambda xy: np.column_stack(to_utm.transform(*xy.T))), f["properties"])
        for f in doc["features"]
    }
    fields = read_fields(DEMO_FIELDS, crs=UTM)
    assert [f.field_id for f in fields] == list(expected)
    for f in fields:
        geom, props = expected[f.field_id]
        assert f.geometry.equals_exact(geom, 0.0)
        assert f.area_ha == pytest.approx(geom.area / 10_000, rel=1e-12)
        assert {k: f.properties[k] for k in props} == props  # every attribute, same Python values
    assert sum(f.area_ha for f in fields) == pytest.approx(sum(g.area for g, _ in expected.values()) / 10_000)


@pytest.mark.parametrize(("driver", "suffix", "crs"), [("GPKG", ".gpkg", UTM), ("GPKG", ".gpkg", "EPSG:4326"),
                                                      ("ESRI Shapefile", ".shp", "EPSG:4326"), ("ESRI Shapefile", ".shp", UTM)])  # fmt: skip
def test_geopackage_and_shapefile_are_read_in_their_own_crs(tmp_path: Path, driver: str, suffix: str, crs: str) -> None:
    geoms = UTM_POLYGONS if crs == UTM else {k: _lonlat(g) for k, g in UTM_POLYGONS.items()}
    path = _write(tmp_path / f"fields{suffix}", geoms, crs=crs, driver=driver, extra={"area_ha": [2.0, 1.0]})
    fields = read_fields(path, crs=UTM)
    assert [f.field_id for f in fields] == ["A", "B"]
    assert [f.area_ha for f in fields] == pytest.approx([2.0, 1.0], rel=1e-6)
    assert fields[0].properties["name"] == "field A"
    assert fields[1].properties["area_ha"] == 1.0
    assert isinstance(fields[1].properties["area_ha"], float)
    assert fields[0].geometry.centroid.distance(UTM_POLYGONS["A"].centroid) < 0.01  # metres


def test_the_same_fields_in_three_formats_give_the_same_polygons(tmp_path: Path) -> None:
    lonlat = {k: _lonlat(g) for k, g in UTM_POLYGONS.items()}
    gj = _geojson(tmp_path / "f.geojson", [_feature(g, field_id=k) for k, g in lonlat.items()])
    gpkg = _write(tmp_path / "f.gpkg", lonlat, crs="EPSG:4326", driver="GPKG")
    shp = _write(tmp_path / "f.shp", lonlat, crs="EPSG:4326", driver="ESRI Shapefile")
    read = [read_fields(p, crs=UTM) for p in (gj, gpkg, shp)]
    for other in read[1:]:
        for a, b in zip(read[0], other, strict=True):
            assert a.field_id == b.field_id
            assert a.geometry.symmetric_difference(b.geometry).area < 1e-3  # m², float round-off only
    assert {p.suffix for p in field_files(shp)} >= {".shp", ".shx", ".dbf", ".prj"}
    assert field_files(gj) == (gj,)


def test_legacy_crs_member_of_geojson_is_honoured(tmp_path: Path) -> None:
    crs_member = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}
    path = _geojson(tmp_path / "utm.geojson", [_feature(g, field_id=k) for k, g in UTM_POLYGONS.items()], crs=crs_member)
    fields = read_fields(path, crs=UTM)
    assert fields[0].geometry.equals_exact(UTM_POLYGONS["A"], 1e-6)
    assert read_fields(path, crs="EPSG:32634")[0].area_ha == pytest.approx(2.0, rel=1e-2)  # reprojected, not re-read


def test_self_intersecting_polygon_is_repaired_and_the_repair_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    x0, y0 = 600_000.0, 5_360_000.0
    bowtie = Polygon([(x0, y0), (x0 + 200, y0 + 200), (x0 + 200, y0), (x0, y0 + 200), (x0, y0)])  # ring crosses itself
    assert not bowtie.is_valid
    path = _geojson(tmp_path / "bad.geojson", [_feature(_lonlat(bowtie), field_id="X"), _feature(_lonlat(UTM_POLYGONS["B"]), field_id="B")])
    with caplog.at_level(logging.WARNING, logger="mrv.fields"):
        fields = read_fields(path, crs=UTM)
    repaired = fields[0].geometry
    assert repaired.is_valid
    assert repaired.geom_type == "MultiPolygon"
    assert repaired.area == pytest.approx(2 * 0.5 * 200 * 100, rel=1e-6)  # the two triangles of the bow tie
    assert fields[1].area_ha == pytest.approx(1.0, rel=1e-6)
    messages = [r.getMessage() for r in caplog.records if r.name == "mrv.fields"]
    assert len(messages) == 1
    assert "'X'" in messages[0]
    assert "Self-intersection" in messages[0]
    assert "make_valid" in messages[0]


def test_error_messages_name_the_problem(tmp_path: Path) -> None:
    a, b = (_lonlat(g) for g in UTM_POLYGONS.values())
    no_id = _geojson(tmp_path / "no_id.geojson", [_feature(a, field_id="A"), _feature(b, name="x")])
    with pytest.raises(ConfigError, match="feature 1 has no 'field_id' property; every field needs a unique id"):
        read_fields(no_id, crs=UTM)
    twice = _geojson(tmp_path / "twice.geojson", [_feature(a, field_id="A"), _feature(b, field_id="A")])
    with pytest.raises(ConfigError, match="field_id 'A' appears twice"):
        read_fields(twice, crs=UTM)
    point = _geojson(tmp_path / "point.geojson", [_feature(a, field_id="A"), _feature(b.centroid, field_id="P")])
    with pytest.raises(ConfigError, match="field 'P' is a Point, not a polygon"):
        read_fields(point, crs=UTM)
    null = tmp_path / "null.geojson"
    null.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"field_id": "N"}, "geometry": None}]}))  # fmt: skip
    with pytest.raises(ConfigError, match="field 'N' has an empty geometry"):
        read_fields(null, crs=UTM)
    with pytest.raises(ConfigError, match="contains no field polygons"):
        read_fields(_geojson(tmp_path / "empty.geojson", []), crs=UTM)
    broken = tmp_path / "broken.geojson"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="Cannot read field polygons from .*broken.geojson"):
        read_fields(broken, crs=UTM)
    with pytest.raises(ConfigError, match="Cannot read field polygons from .*missing.gpkg"):
        read_fields(tmp_path / "missing.gpkg", crs=UTM)


def test_shapefile_without_prj_is_refused(tmp_path: Path) -> None:
    shp = _write(tmp_path / "noprj.shp", UTM_POLYGONS, crs=UTM, driver="ESRI Shapefile")
    shp.with_suffix(".prj").unlink()
    with pytest.raises(ConfigError, match="has no coordinate reference system.*a .prj beside a Shapefile"):
        read_fields(shp, crs=UTM)


def test_geopackage_with_several_layers_reads_the_fields_layer(tmp_path: Path) -> None:
    path = tmp_path / "project.gpkg"
    _write(path, {"Z": box(0, 0, 10, 10)}, crs=UTM, driver="GPKG", layer="farms")
    _write(path, UTM_POLYGONS, crs=UTM, driver="GPKG", layer="fields")
    assert [f.field_id for f in read_fields(path, crs=UTM)] == ["A", "B"]
    other = tmp_path / "other.gpkg"
    _write(other, {"Z": box(0, 0, 10, 10)}, crs=UTM, driver="GPKG", layer="farms")
    _write(other, UTM_POLYGONS, crs=UTM, driver="GPKG", layer="parcels")
    with pytest.raises(ConfigError, match=r"holds 2 layers \(farms, parcels\); name the layer of field polygons 'fields'"):
        read_fields(other, crs=UTM)


def test_report_map_outlines_come_from_the_one_reader(tmp_path: Path) -> None:
    """``render_map_png`` draws the same outlines from a GeoJSON path, a GeoPackage path or already-read fields."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    from mrv.report.maps import render_map_png

    tif = tmp_path / "mean.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=80, height=40, count=1, dtype="float32", crs=UTM,
                       transform=from_origin(599_950, 5_360_150, 10, 10)) as dst:  # fmt: skip
        dst.write(np.linspace(20, 60, 80 * 40, dtype="float32").reshape(1, 40, 80))
    lonlat = {k: _lonlat(g) for k, g in UTM_POLYGONS.items()}
    gj = _geojson(tmp_path / "f.geojson", [_feature(g, field_id=k) for k, g in lonlat.items()])
    gpkg = _write(tmp_path / "f.gpkg", UTM_POLYGONS, crs=UTM, driver="GPKG")
    pngs = [
        render_map_png(tif, tmp_path / "a.png", title="t", units="t C/ha", fields_geojson=gj),
        render_map_png(tif, tmp_path / "b.png", title="t", units="t C/ha", fields_geojson=gpkg),
        render_map_png(tif, tmp_path / "c.png", title="t", units="t C/ha", fields=read_fields(gpkg, crs=UTM)),
    ]
    plain = np.asarray(Image.open(render_map_png(tif, tmp_path / "p.png", title="t", units="t C/ha")).convert("RGB"))
    images = [np.asarray(Image.open(p).convert("RGB")).astype(int) for p in pngs]
    assert (images[0] != plain).any()  # outlines drawn
    for other in images[1:]:
        assert np.abs(other - images[0]).max(axis=2).mean() < 0.01  # the same picture (sub-mm float differences)
