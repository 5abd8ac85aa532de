"""Lazy window reads and strip-wise COG writing give the same rasters as the in-memory path."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import rasterio

from mrv.grid import Grid
from mrv.raster import read_raster, read_raster_lazy, write_cog, write_cogs_by_strips


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
