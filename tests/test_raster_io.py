"""Lazy window reads and strip-wise COG writing give the same rasters as the in-memory path."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rasterio

from mrv.grid import Grid
from mrv.raster import read_raster, read_raster_lazy, write_cog, write_cogs_by_strips


@pytest.mark.parametrize(("dtype", "nodata"), [("float32", float("nan")), ("float32", -9999.0), ("int16", -9999), ("uint16", None)])
def test_lazy_reader_gives_nan_where_the_file_has_no_data(tmp_path: Path, dtype: str, nodata: float | None) -> None:
    """A NaN nodata is read as it is; any other nodata value (or an integer raster) goes through the masked read."""
    grid = Grid(crs="EPSG:32633", bounds=(580000.0, 5355000.0, 580500.0, 5355400.0), resolution_m=10.0)
    data = np.arange(2 * grid.height * grid.width, dtype="float64").reshape(2, *grid.shape) % 900 + 1
    if nodata is not None:
        data[1, 3:7, 4:9] = nodata
    path = tmp_path / "stack.tif"
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": 2, "dtype": dtype,
               "crs": grid.crs, "transform": grid.transform, "nodata": nodata}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(dtype))
    lazy, _, _ = read_raster_lazy(path, chunk_px=16)
    got = lazy.compute()
    expect = data.astype("float32")
    if nodata is not None:
        expect[1, 3:7, 4:9] = np.nan
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expect)


def test_strip_writer_and_lazy_reader_round_trip(tmp_path: Path) -> None:
    grid = Grid(crs="EPSG:32633", bounds=(580000.0, 5355000.0, 583000.0, 5357000.0), resolution_m=10.0)
    rng = np.random.default_rng(0)
    data = rng.normal(50, 10, size=(3, *grid.shape)).astype("float32")
    data[1, 5:9, 7:11] = np.nan
    src = write_cog(tmp_path / "stack.tif", data, grid, band_names=["a", "b", "c"])

    lazy, lgrid, names = read_raster_lazy(src, chunk_px=64)
    assert names == ["a", "b", "c"]
    assert lgrid == grid
    assert lazy.chunks[1][0] == 64
    np.testing.assert_array_equal(lazy[:, 10:130, 70:200].compute(), data[:, 10:130, 70:200])

    paths = [tmp_path / f"out_{i}.tif" for i in range(3)]
    tags = [{"units": "t C/ha", "band": i} for i in range(3)]
    write_cogs_by_strips(paths, da.from_array(data, chunks=(3, 64, 64)) * 2, grid, tags=tags,
                         band_names=["x", "y", "z"], strip_px=50)  # fmt: skip
    for i, p in enumerate(paths):
        back, bgrid, bnames = read_raster(p)
        np.testing.assert_array_equal(back[0], data[i] * 2)
        assert bgrid == grid
        assert bnames == [["x", "y", "z"][i]]
        with rasterio.open(p) as ds:
            assert ds.tags()["units"] == "t C/ha"
            assert ds.overviews(1)  # a real COG with overviews
        assert not p.with_suffix(".strips.tif").exists()


def test_strip_writer_compresses_once_into_a_valid_cog_and_fails_cleanly(tmp_path: Path) -> None:
    grid = Grid(crs="EPSG:32633", bounds=(580000.0, 5355000.0, 586000.0, 5359000.0), resolution_m=10.0)
    yy, xx = np.mgrid[0 : grid.height, 0 : grid.width].astype("float32")
    data = np.stack([np.sin(xx / 40) * 10 + 50, np.cos(yy / 30) * 5 + 20]).astype("float32")
    data[0, :7, :9] = np.nan
    paths = [tmp_path / "a.tif", tmp_path / "b.tif"]
    seen: list[int] = []
    write_cogs_by_strips(paths, da.from_array(data, chunks=(2, 96, 128)), grid, tags=[{}, {}],
                         band_names=["a", "b"], strip_px=96, on_strip=seen.append)  # fmt: skip
    assert sum(seen) == grid.height
    assert seen[0] == 96
    for i, p in enumerate(paths):
        with rasterio.open(p) as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert ds.compression is not None
            assert ds.compression.value == "DEFLATE"
            assert ds.block_shapes == [(256, 256)]
            assert len(ds.overviews(1)) >= 1
            np.testing.assert_array_equal(ds.read(1, masked=True).filled(np.nan), data[i])
    assert not list(tmp_path.glob("*.strips.tif"))
    assert not list(tmp_path.glob("*.tmp.tif"))

    def boom(block: np.ndarray, block_info: dict[object, object] | None = None) -> np.ndarray:
        assert block_info is not None
        if block_info[0]["array-location"][1][0] >= 192:  # a later strip fails while an earlier one is written
            raise RuntimeError("worker lost")
        return block

    bad = da.from_array(data, chunks=(2, 96, 128)).map_blocks(boom, dtype="float32")
    failed = [tmp_path / "c.tif", tmp_path / "d.tif"]
    with pytest.raises(RuntimeError, match="worker lost"):
        write_cogs_by_strips(failed, bad, grid, tags=[{}, {}], band_names=["c", "d"], strip_px=96)
    assert not any(p.exists() for p in failed)  # no half-written map under a final name
    assert not list(tmp_path.glob("*.strips.tif"))
