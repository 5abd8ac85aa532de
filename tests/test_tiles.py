"""Regions larger than one tile: the grid is split into tiles, composited tile by tile and mosaicked.

The mosaic must equal the covariate stack computed for the whole region at once, terrain included
(slope and TPI need neighbours across tile edges).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from regions import region_config

from mrv.config import DemConfig, load_config
from mrv.errors import ConfigError
from mrv.grid import Grid, tiles
from mrv.pipeline import imagery
from mrv.pipeline.layout import RunLayout
from mrv.raster import read_raster
from mrv.synthetic import SceneSpec

GRID = Grid(crs="EPSG:32633", bounds=(500_000.0, 5_000_000.0, 501_000.0, 5_000_700.0), resolution_m=10.0)


@pytest.mark.parametrize("tile_px", [1, 7, 30, 70, 100, 1000])
def test_tiles_cover_the_grid_exactly_once(tile_px: int) -> None:
    count = np.zeros(GRID.shape, dtype=int)
    for t in tiles(GRID, tile_px):
        count[t.row_off : t.row_off + t.height, t.col_off : t.col_off + t.width] += 1
        sub = t.grid(GRID)
        assert sub.shape == (t.height, t.width)
        assert sub.transform @ (0, 0) == GRID.transform @ (t.col_off, t.row_off)  # same pixel lattice
        assert max(t.height, t.width) <= tile_px
    assert (count == 1).all()


def test_window_outside_the_grid_is_refused() -> None:
    with pytest.raises(ValueError, match="not inside"):
        GRID.window(60, 0, 20, 10)
    with pytest.raises(ValueError, match="not inside"):
        GRID.window(0, -1, 5, 5)


def _bumpy_dem(path: Path, grid: Grid, margin_m: float) -> Path:
    """A 30 m DEM with hills and valleys (non-zero TPI) over ``grid`` plus ``margin_m``."""
    left, bottom, right, top = grid.bounds
    res = 30.0
    nx, ny = int((right - left + 2 * margin_m) / res), int((top - bottom + 2 * margin_m) / res)
    x, y = np.meshgrid(np.arange(nx) * res, np.arange(ny) * res)
    z = 300 + 25 * np.sin(x / 170.0) * np.cos(y / 230.0) + 0.02 * x
    profile = {"driver": "GTiff", "height": ny, "width": nx, "count": 1, "dtype": "float32", "crs": grid.crs}
    with rasterio.open(path, "w", **profile, transform=from_origin(left - margin_m, top + margin_m, res, res)) as dst:
        dst.write(z.astype("float32"), 1)
    return path


def test_tiled_covariates_equal_the_whole_region(tmp_path: Path) -> None:
    spec = SceneSpec(seed=3, width_px=90, height_px=90, n_fields=4, n_lab_sites=12, n_crowd=10)
    path, _ = region_config(tmp_path, spec, name="tiles", output_dir=tmp_path / "whole")
    cfg = load_config(path)
    dem = _bumpy_dem(tmp_path / "dem.tif", imagery.project_grid(cfg), margin_m=1000.0)
    cfg = replace(cfg, imagery=replace(cfg.imagery, dem=DemConfig(path=dem, tpi_radius_m=100.0), chunk_px=32))
    rnd = cfg.rounds[0]

    whole = RunLayout(tmp_path / "whole")
    imagery.run_round(cfg, rnd, whole)
    tiled_cfg = replace(cfg, imagery=replace(cfg.imagery, tile_px=40))
    assert len(imagery.imagery_tiles(tiled_cfg)) >= 4
    tiled = RunLayout(tmp_path / "tiled")
    imagery.run_round(tiled_cfg, rnd, tiled)

    a, grid_a, names_a = read_raster(whole.covariates(rnd.name))
    b, grid_b, names_b = read_raster(tiled.covariates(rnd.name))
    assert grid_a == grid_b
    assert names_a == names_b
    assert names_a[-4:] == ["elevation", "slope", "tpi", "n_bare"]
    assert np.isfinite(a).mean() > 0.5  # NaN where no observation was bare
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6, equal_nan=True)
    sa = json.loads(whole.imagery_summary(rnd.name).read_text())
    sb = json.loads(tiled.imagery_summary(rnd.name).read_text())
    assert (sa["tiles"], sb["tiles"]) == (1, len(imagery.imagery_tiles(tiled_cfg)))
    for key in ("items", "covariates", "bare_observations_median", "fields_without_bare_soil_pct", "n_dropped"):
        assert sa[key] == sb[key], key
    with rasterio.open(tiled.covariates(rnd.name)) as src:
        assert src.tags()["round"] == rnd.name
        assert src.crs.to_string() == cfg.region.crs


def test_tile_smaller_than_a_chunk_is_refused(tmp_path: Path) -> None:
    spec = SceneSpec(width_px=40, height_px=40, n_fields=2, n_lab_sites=6, n_crowd=10)
    sections = {"imagery": {"tile_px": 64, "chunk_px": 128}}
    path, _ = region_config(tmp_path, spec, name="bad", output_dir=tmp_path / "out", sections=sections)
    with pytest.raises(ConfigError, match=r"imagery.tile_px \(64\) must be at least imagery.chunk_px \(128\)"):
        load_config(path)
