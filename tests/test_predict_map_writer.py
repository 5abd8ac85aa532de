"""The maps' strip writer: windows bounded by a pixel budget, overviews averaged in numpy, width90 in the block.

Truth is generated independently of the writer: block means of the full-resolution array in float64
(``np.nanmean`` over 2**k x 2**k blocks), the overview count GDAL's COG driver picks for the same raster,
and ``p95 - p05`` from :meth:`SOCModel.predict`.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rasterio
import rasterio.shutil
import xarray as xr

from mrv.config import ModelConfig
from mrv.grid import Grid
from mrv.modeling.model import OUTPUTS, SOCModel, make_forest
from mrv.modeling.predict import predict_map
from mrv.pipeline.layout import MAP_LAYERS
from mrv.raster import _strip_windows, overview_levels, write_cogs_by_strips


def _grid(height: int, width: int) -> Grid:
    return Grid(crs="EPSG:32633", bounds=(500000.0, 5300000.0, 500000.0 + 10 * width, 5300000.0 + 10 * height),
                resolution_m=10.0)  # fmt: skip


def _data(bands: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype("float32")
    data = np.stack([np.sin(xx / (30 + 7 * b)) * 10 + np.cos(yy / 23) * 4 + 40 + b for b in range(bands)])
    data = (data + rng.normal(0, 0.5, data.shape)).astype("float32")
    data[:, 40:90, 100:180] = np.nan  # a cloud: whole overview blocks and partly covered ones
    data[:, rng.integers(0, height, 300), rng.integers(0, width, 300)] = np.nan
    return data


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """NaN-aware mean of f x f blocks in float64 (a ragged last row/column averages the pixels it has)."""
    h, w = a.shape
    H, W = -(-h // f), -(-w // f)
    pad = np.full((H * f, W * f), np.nan)
    pad[:h, :w] = a
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning, match="Mean of empty slice"):
        return np.nanmean(pad.reshape(H, f, W, f), axis=(1, 3))


@pytest.mark.parametrize(
    ("height", "width"), [(600, 1030), (257, 513), (257, 1025), (1000, 1000), (10000, 300), (200, 300), (256, 256)]
)
def test_overview_count_is_the_one_gdal_builds(tmp_path: Path, height: int, width: int) -> None:
    src = tmp_path / "plain.tif"
    grid = _grid(height, width)
    with rasterio.open(src, "w", driver="GTiff", width=width, height=height, count=1, dtype="float32",
                       crs=grid.crs, transform=grid.transform) as dst:  # fmt: skip
        dst.write(np.zeros((1, height, width), "float32"))
    rasterio.shutil.copy(src, tmp_path / "cog.tif", driver="COG", blocksize=256)
    with rasterio.open(tmp_path / "cog.tif") as ds:
        assert len(ds.overviews(1)) == overview_levels(height, width)


def test_windows_tile_the_raster_in_whole_chunks_within_the_pixel_budget() -> None:
    col_chunks = [256] * 39 + [16]  # a 10000 px wide region
    windows = _strip_windows(1000, col_chunks, 512, 1 << 20)
    edges = set(np.cumsum([0, *col_chunks]).tolist())
    covered = np.zeros((1000, 10000), dtype=np.int8)
    for w in windows:
        assert w.width * w.height <= 1 << 20
        assert w.col_off in edges  # whole chunks: no block computed twice
        assert w.col_off + w.width in edges
        covered[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    assert (covered == 1).all()
    # the budget bounds the window, not the width: 5x wider raster, same largest window
    assert max(w.width for w in windows) == 2048
    assert max(w.width for w in _strip_windows(1000, [256] * 4, 512, 1 << 20)) == 1024
    # one chunk wider than the budget still makes a window (at least one chunk)
    assert [w.width for w in _strip_windows(10, [300, 300], 10, 100)] == [300, 300]


@pytest.mark.parametrize("budget", [1 << 20, 128 * 256])  # one window per row of strips, or 2-3 column ranges
def test_strip_writer_overviews_are_block_means_and_tags_survive(tmp_path: Path, budget: int) -> None:
    height, width = 600, 1030  # ragged: 1030 is not a multiple of the overview factor 4
    grid = _grid(height, width)
    data = _data(2, height, width)
    paths = [tmp_path / "a.tif", tmp_path / "b.tif"]
    tags = [{"units": "t C/ha", "round": "r1"}, {"units": "t C/ha", "quantity": "p95 & <x>"}]
    write_cogs_by_strips(paths, da.from_array(data, chunks=(2, 128, 128)), grid, tags=tags, band_names=["a", "b"],
                         strip_px=256, max_strip_pixels=budget)  # fmt: skip
    levels = overview_levels(height, width)
    assert levels == 3
    for i, p in enumerate(paths):
        with rasterio.open(p) as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert ds.compression is not None
            assert ds.compression.value == "DEFLATE"
            assert ds.overviews(1) == [2, 4, 8]
            assert ds.tags() == {**ds.tags(), **tags[i]}  # every tag kept (through the VRT's XML)
            assert ds.descriptions == (["a", "b"][i],)
            assert ds.crs.to_epsg() == 32633
            assert ds.transform == grid.transform
            assert np.isnan(ds.nodata)
            np.testing.assert_array_equal(ds.read(1), data[i])
        for k in range(levels):
            with rasterio.open(p, overview_level=k) as ov:
                truth = _block_mean(data[i].astype("float64"), 2 ** (k + 1))
                got = ov.read(1)
                assert got.shape == truth.shape
                np.testing.assert_array_equal(np.isnan(got), np.isnan(truth))
                np.testing.assert_allclose(got, truth, rtol=1e-6, equal_nan=True)
    assert not list(tmp_path.glob("*.strips*"))


def test_misaligned_windows_leave_the_overviews_to_gdal(tmp_path: Path) -> None:
    grid = _grid(300, 520)
    data = _data(1, 300, 520)
    path = tmp_path / "m.tif"
    # 90-row strips: not a multiple of the largest overview factor (4)
    write_cogs_by_strips([path], da.from_array(data, chunks=(1, 90, 100)), grid, tags=[{}], band_names=["m"],
                         strip_px=90)  # fmt: skip
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [2, 4]
        np.testing.assert_array_equal(ds.read(1), data[0])
    assert not list(tmp_path.glob("*.strips*"))


def test_predict_map_width90_is_p95_minus_p05_in_the_map_layers_order() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 3)).astype("float32")
    y = 40 + 5 * X[:, 0] + rng.normal(0, 1, 300)
    model = SOCModel(make_forest(ModelConfig(n_estimators=20, seed=1)).fit(X, y), ("c0", "c1", "c2"), 0.9,
                     margin_t_ha=0.8)  # fmt: skip
    cube = rng.normal(size=(3, 70, 90)).astype("float32")
    cube[1, 3:6, 4:9] = np.nan
    stack = xr.DataArray(cube, dims=("covariate", "y", "x"),
                         coords={"covariate": ["c0", "c1", "c2"], "y": np.arange(70), "x": np.arange(90)})  # fmt: skip
    out = predict_map(stack, model, chunk_px=32, width90=True)
    assert tuple(out["output"].to_numpy()) == MAP_LAYERS
    got = out.compute().to_numpy()
    ref = model.predict(cube.reshape(3, -1).T).T.reshape(len(OUTPUTS), 70, 90)
    np.testing.assert_array_equal(got[: len(OUTPUTS)], ref)
    np.testing.assert_array_equal(got[-1], ref[OUTPUTS.index("p95")] - ref[OUTPUTS.index("p05")])
    assert np.isnan(got[:, 3:6, 4:9]).all()
    plain = predict_map(stack, model, chunk_px=32).compute().to_numpy()
    np.testing.assert_array_equal(plain, got[: len(OUTPUTS)])


def test_each_band_gets_its_own_lossless_predictor(tmp_path: Path) -> None:
    grid = _grid(300, 520)
    data = _data(2, 300, 520)
    data[1] = np.round(data[1])  # few distinct values, as the quantile layers (leaf values)
    paths = [tmp_path / "smooth.tif", tmp_path / "steps.tif"]
    write_cogs_by_strips(paths, da.from_array(data, chunks=(2, 128, 128)), grid, tags=[{}, {}], band_names=["s", "q"],
                         strip_px=256, predictors=[3, 1])  # fmt: skip
    for path, predictor, band in zip(paths, ("3", None), data, strict=True):
        with rasterio.open(path) as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == predictor  # GDAL reports none as absent
            np.testing.assert_array_equal(ds.read(1), band)
    with pytest.raises(ValueError, match="one predictor per band"):
        write_cogs_by_strips(paths, da.from_array(data), grid, tags=[{}, {}], band_names=["s", "q"], strip_px=256,
                             predictors=[3])  # fmt: skip
