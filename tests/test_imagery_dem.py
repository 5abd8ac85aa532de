"""Terrain covariates from a DEM: Horn slope, TPI, reprojection, config and the covariate stack."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin
from stac_server import api_collection, rustac_serve, write_api_inputs

from mrv.config import DemConfig, parse_config
from mrv.errors import ConfigError, ImageryError
from mrv.grid import Grid
from mrv.imagery.dem import dem_hrefs, horn_slope_deg, terrain_covariates, topographic_position_index
from mrv.imagery.stac_api import StacApiSource
from mrv.pipeline.imagery import read_covariates, run_round
from mrv.pipeline.layout import RunLayout
from mrv.synthetic import SceneSpec, build_region
from mrv.synthetic.spec import DEFAULT_ROUNDS

CRS = "EPSG:32633"
GRID = Grid(crs=CRS, bounds=(580_000.0, 5_359_000.0, 581_000.0, 5_360_000.0), resolution_m=10.0)
GX, GY = 0.10, -0.05  # dz/dx (east) and dz/dy (north) of the test plane
PLANE_SLOPE = math.degrees(math.atan(math.hypot(GX, GY)))  # 6.379 degrees


def plane(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 200.0 + GX * (x - 580_000.0) + GY * (y - 5_359_000.0)


def _write_dem(path: Path, data: np.ndarray, *, crs: str, transform: Any, nodata: float | None = -9999.0) -> Path:
    profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1], "count": 1, "dtype": "float32"}
    with rasterio.open(path, "w", **profile, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data.astype("float32"), 1)
    return path


def utm_plane_dem(path: Path, *, res: float = 30.0, extent: tuple[float, float, float, float] | None = None) -> Path:
    left, bottom, right, top = extent or (579_000.0, 5_358_000.0, 582_000.0, 5_361_000.0)
    n_x, n_y = round((right - left) / res), round((top - bottom) / res)
    xs = left + (np.arange(n_x) + 0.5) * res
    ys = top - (np.arange(n_y) + 0.5) * res
    return _write_dem(path, plane(*np.meshgrid(xs, ys)), crs=CRS, transform=from_origin(left, top, res, res))


# ------------------------------------------------------------------------------------- Horn slope


def test_horn_slope_of_a_hand_computed_window() -> None:
    # a b c / d e f / g h i = 0 10 20 / 0 10 20 / 0 10 20 (m), cell 10 m:
    # dz/dx = ((20 + 40 + 20) - 0) / 80 = 1, dz/dy = 0 -> 45 degrees
    z = np.array([[0.0, 10.0, 20.0]] * 3)
    assert horn_slope_deg(z, cell_m=10.0)[1, 1] == pytest.approx(45.0)
    # rows rising 3 m per 10 m northward and columns 4 m per 10 m: |grad| = 0.5 -> atan(0.5) = 26.565 degrees
    zz = np.array([[6.0, 10.0, 14.0], [3.0, 7.0, 11.0], [0.0, 4.0, 8.0]])
    assert horn_slope_deg(zz, cell_m=10.0)[1, 1] == pytest.approx(26.56505, abs=1e-4)


def test_horn_slope_of_an_inclined_plane_everywhere_including_edges() -> None:
    xs = np.array(GRID.x_coords())
    ys = np.array(GRID.y_coords())
    slope = horn_slope_deg(plane(*np.meshgrid(xs, ys)), cell_m=10.0)
    np.testing.assert_allclose(slope, PLANE_SLOPE, atol=1e-4)
    flat = horn_slope_deg(np.full((5, 5), 123.0), cell_m=10.0)
    assert np.all(flat == 0.0)


def test_horn_slope_weights_the_centre_row_twice() -> None:
    # Only the middle row rises: dz/dx = 2 * 8 / (8 * 1) = 2 -> atan(2) = 63.43 degrees (not the 3 x 3 mean)
    z = np.array([[0.0, 0.0, 0.0], [0.0, 4.0, 8.0], [0.0, 0.0, 0.0]])
    assert horn_slope_deg(z, cell_m=1.0)[1, 1] == pytest.approx(math.degrees(math.atan(2.0)))


def test_tpi_is_zero_on_a_plane_and_positive_on_a_hill() -> None:
    xs, ys = np.meshgrid(np.arange(21) * 10.0, np.arange(21) * 10.0)
    tpi = topographic_position_index(200 + 0.1 * xs + 0.2 * ys, radius_px=3)
    np.testing.assert_allclose(tpi[3:-3, 3:-3], 0.0, atol=1e-4)
    hill = np.zeros((21, 21))
    hill[10, 10] = 49.0
    tpi = topographic_position_index(hill, radius_px=3)
    assert tpi[10, 10] == pytest.approx(49.0 - 1.0)  # mean of the 7 x 7 window is 49 / 49
    assert tpi[10, 11] == pytest.approx(-1.0)


# ------------------------------------------------------------------------------------- reprojection


def test_terrain_from_a_coarser_dem_in_the_same_crs(tmp_path: Path) -> None:
    terrain = terrain_covariates([str(utm_plane_dem(tmp_path / "dem.tif"))], GRID, tpi_radius_m=50)
    assert terrain.names == ("elevation", "slope", "tpi")
    elevation, slope, tpi = terrain.values
    assert elevation.shape == GRID.shape
    expected = plane(*np.meshgrid(np.array(GRID.x_coords()), np.array(GRID.y_coords())))
    np.testing.assert_allclose(elevation, expected, atol=1e-3)  # bilinear is exact on a plane
    np.testing.assert_allclose(slope, PLANE_SLOPE, atol=1e-3)
    np.testing.assert_allclose(tpi, 0.0, atol=1e-3)


def test_terrain_from_a_geographic_dem_is_reprojected(tmp_path: Path) -> None:
    to_ll = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    to_utm = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    w, s, e, n = to_ll.transform_bounds(579_500, 5_358_500, 581_500, 5_360_500)
    res = 1 / 3600  # 1 arc second, like Copernicus GLO-30
    n_x, n_y = math.ceil((e - w) / res), math.ceil((n - s) / res)
    lon = w + (np.arange(n_x) + 0.5) * res
    lat = n - (np.arange(n_y) + 0.5) * res
    x, y = to_utm.transform(*np.meshgrid(lon, lat))
    dem = _write_dem(tmp_path / "dem_ll.tif", plane(x, y), crs="EPSG:4326", transform=from_origin(w, n, res, res))
    elevation, slope, _tpi = terrain_covariates([str(dem)], GRID, tpi_radius_m=50).values
    expected = plane(*np.meshgrid(np.array(GRID.x_coords()), np.array(GRID.y_coords())))
    np.testing.assert_allclose(elevation, expected, atol=0.05)
    np.testing.assert_allclose(slope, PLANE_SLOPE, atol=0.05)


def test_dem_not_covering_the_grid_is_refused(tmp_path: Path) -> None:
    dem = utm_plane_dem(tmp_path / "half.tif", extent=(579_000.0, 5_358_000.0, 580_500.0, 5_361_000.0))
    with pytest.raises(ImageryError, match=r"covers only 50.0% of the project grid .* Give a DEM that covers"):
        terrain_covariates([str(dem)], GRID)
    with pytest.raises(ImageryError, match="Cannot read the DEM .*nope.tif"):
        terrain_covariates([str(tmp_path / "nope.tif")], GRID)


# ------------------------------------------------------------------------------------- STAC collection


def test_dem_from_a_stac_collection(tmp_path: Path) -> None:
    dem = utm_plane_dem(tmp_path / "cop_dem_tile.tif")
    ll = Grid(crs=CRS, bounds=(579_000.0, 5_358_000.0, 582_000.0, 5_361_000.0), resolution_m=30).bbox_wgs84()
    footprint = {
        "type": "Polygon",
        "coordinates": [[[ll[0], ll[1]], [ll[2], ll[1]], [ll[2], ll[3]], [ll[0], ll[3]], [ll[0], ll[1]]]],
    }
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "Copernicus_DSM_COG_10_N48_00_E015_00_DEM",
        "collection": "cop-dem-glo-30",
        "geometry": footprint,
        "bbox": list(ll),
        "properties": {"datetime": "2021-04-22T00:00:00Z"},
        "assets": {"data": {"href": dem.as_uri(), "type": "image/tiff; application=geotiff", "roles": ["data"]}},
        "links": [],
    }
    collection = api_collection("cop-dem-glo-30", ll, "test DEM")
    hrefs = write_api_inputs(tmp_path / "api", collection, [item])
    with rustac_serve(hrefs, log_path=tmp_path / "rustac.log") as url:
        source = StacApiSource(url, collection="sentinel-2-l2a", timeout_s=5)
        found = dem_hrefs(DemConfig(collection="cop-dem-glo-30"), GRID, source)
        assert found == [dem.as_uri()]
        with pytest.raises(ImageryError, match="has no asset 'elevation'.*Set imagery.dem.asset"):
            dem_hrefs(DemConfig(collection="cop-dem-glo-30", asset="elevation"), GRID, source)
    slope = terrain_covariates(found, GRID, tpi_radius_m=50).values[1]
    np.testing.assert_allclose(slope, PLANE_SLOPE, atol=1e-3)


# ------------------------------------------------------------------------------------- config and pipeline


def _raw(root: Path, **imagery: Any) -> dict[str, Any]:
    return {
        "name": "dem",
        "region": {"fields": str(root / "fields.geojson"), "crs": CRS, "resolution_m": 10},
        "imagery": {"source": "local", "catalog": str(root / "stac" / "collection.json"), "collection": "sentinel-2-l2a"}
        | imagery,
        "rounds": [{"name": "2021", "start": "2021-01-01", "end": "2021-12-31", "samples": []}],
    }


def test_dem_config_forms(tmp_path: Path) -> None:
    dem = utm_plane_dem(tmp_path / "dem.tif")
    src = tmp_path / "run.yaml"
    cfg = parse_config(_raw(tmp_path, dem="dem.tif"), source_path=src)
    assert cfg.imagery.dem == DemConfig(path=dem)  # relative to the config file
    cfg = parse_config(_raw(tmp_path, dem={"path": "dem.tif", "tpi_radius_m": 150}), source_path=src)
    assert cfg.imagery.dem is not None
    assert cfg.imagery.dem.tpi_radius_m == 150.0
    stac = _raw(tmp_path, dem="cop-dem-glo-30") | {
        "imagery": {"source": "stac", "url": "http://127.0.0.1:1", "collection": "sentinel-2-l2a", "dem": "cop-dem-glo-30"}
    }
    assert parse_config(stac, source_path=src).imagery.dem == DemConfig(collection="cop-dem-glo-30")
    with pytest.raises(ConfigError, match="imagery.dem.path .*missing.tif does not exist"):
        parse_config(_raw(tmp_path, dem="missing.tif"), source_path=src)
    with pytest.raises(ConfigError, match="imagery.source is 'local'. Use source 'stac' or give imagery.dem as a path"):
        parse_config(_raw(tmp_path, dem="cop-dem-glo-30"), source_path=src)
    with pytest.raises(ConfigError, match="either path .* or collection"):
        parse_config(_raw(tmp_path, dem={"path": "dem.tif", "collection": "x"}), source_path=src)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['radius'\]"):
        parse_config(_raw(tmp_path, dem={"path": "dem.tif", "radius": 3}), source_path=src)


def test_prepare_imagery_adds_terrain_covariates(tmp_path: Path) -> None:
    spec = SceneSpec(width_px=100, height_px=100, n_fields=4, n_lab_sites=12, n_crowd=10, rounds=DEFAULT_ROUNDS[:1])
    root = tmp_path / "region"
    build_region(root, spec)
    utm_plane_dem(tmp_path / "dem.tif")
    cfg = parse_config(_raw(root, dem=str(tmp_path / "dem.tif")), source_path=tmp_path / "run.yaml")
    layout = RunLayout(tmp_path / "out")
    stack, grid = read_covariates(run_round(cfg, cfg.rounds[0], layout))
    names = [str(c) for c in stack["covariate"].to_numpy()]
    assert names[-3:] == ["elevation", "slope", "tpi"]
    assert names[:6] == ["blue", "green", "red", "nir", "swir16", "swir22"]
    expected = plane(*np.meshgrid(np.array(grid.x_coords()), np.array(grid.y_coords())))
    np.testing.assert_allclose(stack.sel(covariate="elevation").to_numpy(), expected, atol=1e-2)
    np.testing.assert_allclose(stack.sel(covariate="slope").to_numpy(), PLANE_SLOPE, atol=1e-3)
    summary = json.loads(layout.imagery_summary("2021").read_text())
    assert summary["dem"] == [str(tmp_path / "dem.tif")]
    assert summary["covariates"] == names
