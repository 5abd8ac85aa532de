"""``mrv.raster.sample_at_points`` reads the training covariates without loading the stack, with identical values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.crs import CRS

from mrv.grid import Grid
from mrv.modeling.features import extract_at_points
from mrv.raster import read_pixels, read_raster, sample_at_points


def _stack_file(path: Path, *, height: int, width: int, block: int, nodata: float | None) -> Grid:
    grid = Grid(crs="EPSG:32633", bounds=(500000.0, 5300000.0, 500000.0 + 10 * width, 5300000.0 + 10 * height),
                resolution_m=10.0)  # fmt: skip
    rng = np.random.default_rng(height * width)
    data = rng.normal(size=(3, height, width)).astype("float32")
    data[:, 3, 5] = np.nan
    if nodata is not None:
        data[1, 7, 2] = nodata
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 3, "dtype": "float32",
               "crs": CRS.from_user_input(grid.crs), "transform": grid.transform, "tiled": True,
               "blockxsize": block, "blockysize": block, "nodata": nodata if nodata is not None else float("nan")}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(("red", "n_bare", "nir")):
            dst.set_band_description(i + 1, name)
    return grid


@pytest.mark.parametrize(("height", "width", "block", "nodata"), [(70, 45, 16, None), (33, 80, 32, -9999.0)])
def test_sampling_matches_extract_at_points_on_the_loaded_stack(
    tmp_path: Path, height: int, width: int, block: int, nodata: float | None
) -> None:
    path = tmp_path / "covariates.tif"
    grid = _stack_file(path, height=height, width=width, block=block, nodata=nodata)
    arr, g, names = read_raster(path)
    keep = [i for i, n in enumerate(names) if n != "n_bare"]
    stack = xr.DataArray(arr[keep], dims=("covariate", "y", "x"),
                         coords={"covariate": [names[i] for i in keep], "y": g.y_coords(), "x": g.x_coords()})  # fmt: skip
    rng = np.random.default_rng(1)
    left, bottom, right, top = grid.bounds
    x = rng.uniform(left - 30, right + 30, 500)
    y = rng.uniform(bottom - 30, top + 30, 500)
    x[:20], y[:20] = left + 10 * np.arange(20), top - 10 * np.arange(20)  # pixel corners: ties of the rounding
    x[20], y[20] = left + 55.0, top - 35.0  # the NaN pixel (row 3, col 5)
    x[21], y[21] = right + 4.0, top - 5.0  # just outside: NaN, never the edge pixel
    expected = extract_at_points(stack, x, y)
    values, got_names = sample_at_points(path, x, y)
    assert got_names == ["red", "nir"] == list(expected.columns)
    np.testing.assert_array_equal(values, expected.to_numpy())  # NaN in the same places
    assert np.isnan(values[20]).all()
    assert np.isnan(values[21]).all()
    assert np.isfinite(values).any(axis=1).sum() > 300
    if nodata is not None:
        x2, y2 = np.array([left + 25.0]), np.array([top - 75.0])  # band 2 (n_bare) nodata pixel, skipped
        full, all_names = sample_at_points(path, x2, y2, skip_bands=())
        assert all_names == ["red", "n_bare", "nir"]
        assert np.isnan(full[0, 1])
        assert np.isfinite(full[0, [0, 2]]).all()


def test_no_points_and_all_outside(tmp_path: Path) -> None:
    path = tmp_path / "c.tif"
    grid = _stack_file(path, height=20, width=20, block=16, nodata=None)
    values, _ = sample_at_points(path, np.array([]), np.array([]))
    assert values.shape == (0, 2)
    values, _ = sample_at_points(path, np.array([grid.bounds[0] - 100.0]), np.array([grid.bounds[3] + 100.0]))
    assert values.shape == (1, 2)
    assert np.isnan(values).all()


def test_read_pixels_equals_indexing_the_loaded_raster(tmp_path: Path) -> None:
    path = tmp_path / "maps.tif"
    _stack_file(path, height=50, width=61, block=16, nodata=-9999.0)
    arr, _, _ = read_raster(path)
    rng = np.random.default_rng(4)
    rows, cols = rng.integers(-3, 53, 2000), rng.integers(-3, 64, 2000)
    got = read_pixels(path, rows, cols, bands=[3, 1])
    inside = (rows >= 0) & (rows < 50) & (cols >= 0) & (cols < 61)
    np.testing.assert_array_equal(got[inside], arr[[2, 0]][:, rows[inside], cols[inside]].T)
    assert np.isnan(got[~inside]).all()
    assert read_pixels(path, rows[:0], cols[:0]).shape == (0, 3)
