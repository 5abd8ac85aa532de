"""Imagery and model stages without region-sized arrays (issue 19.3): same numbers as the whole-array code.

* :class:`mrv.modeling.features.ExactQuartiles` (radix selection in two passes) against ``numpy.percentile``;
* :class:`mrv.pipeline.imagery.FieldMask` (rasterized window by window) against ``field_index_raster >= 0``;
* :func:`mrv.pipeline.imagery.normalisation_stats` (strips of windows) against ``round_normalisation`` on the
  whole stack;
* :func:`mrv.raster.write_cog_blocks` (block by block from Dask) and :func:`mrv.raster.mosaic_to_cog` (strips)
  against the arrays they were given;
* :func:`mrv.pipeline.model.training_table` (block-wise point reads) against ``extract_at_points`` on the
  loaded stack.

The expected values are computed from generated arrays by numpy / rasterio on the whole grid, never by the
code under test.
"""

from __future__ import annotations

import dataclasses

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Polygon, box
from test_models import run  # noqa: F401  (fixture: a run with covariates, normalisation and sites of round r1)

from mrv.fields import Field, field_index_raster
from mrv.grid import Grid, tiles
from mrv.modeling.features import ExactQuartiles, apply_normalisation, extract_at_points, round_normalisation
from mrv.pipeline import model as model_steps
from mrv.pipeline.imagery import FieldMask, covariate_norm_stats, normalisation_stats, read_covariates
from mrv.raster import mosaic_to_cog, read_raster, write_cog, write_cog_blocks

GRID = Grid(crs="EPSG:32633", bounds=(600_000.0, 5_100_000.0, 606_000.0, 5_105_000.0), resolution_m=10.0)  # 500 x 600


def _samples(rng: np.random.Generator, kind: int, n: int) -> np.ndarray:
    """float32 values with what percentiles trip on: ties, both zeros, signs, NaN, inf, a constant."""
    if kind == 0:
        return rng.normal(0.2, 0.05, n).astype(np.float32)
    if kind == 1:
        v = rng.integers(-3, 4, n).astype(np.float32)
        v[::7] = -0.0
        return v
    if kind == 2:
        v = (rng.lognormal(0, 6, n) * rng.choice([-1.0, 1.0], n)).astype(np.float32)
        v[rng.random(n) < 0.05] = np.inf
        v[rng.random(n) < 0.05] = -np.inf
        return v
    if kind == 3:
        return np.full(n, 0.1234, dtype=np.float32)
    v = rng.random(n).astype(np.float32)
    v[rng.random(n) < 0.3] = np.nan
    return v


@pytest.mark.parametrize("kind", range(5))
def test_exact_quartiles_are_numpy_percentile_bit_for_bit(kind: int) -> None:
    rng = np.random.default_rng(kind)
    for n in (*range(1, 40), *rng.integers(40, 20_000, 60).tolist()):
        values = _samples(rng, kind, int(n))
        finite = values[np.isfinite(values)]
        expected = None if finite.size < 10 else tuple(float(q) for q in np.percentile(finite, [25, 50, 75]))
        chunks = np.array_split(values, int(rng.integers(1, 7)))
        quartiles = ExactQuartiles()
        for chunk in chunks:
            quartiles.count(chunk)
        for chunk in chunks:
            quartiles.refine(chunk)
        got = quartiles.quartiles()
        assert got == expected, (kind, n)
        if got is not None:  # the zeros are one value: compare numerically, not by sign
            assert all(np.float64(g) == np.float64(e) for g, e in zip(got, expected, strict=True))


def _fields(rng: np.random.Generator) -> tuple[Field, ...]:
    """Rectangles on pixel edges and centres, and skewed polygons at arbitrary coordinates."""
    x0, y0, x1, y1 = GRID.bounds
    shapes = [box(x0 + 105.0, y0 + 95.0, x0 + 2_005.0, y0 + 1_500.0), box(x0 + 2_000.0, y1 - 900.0, x1, y1)]
    for _ in range(6):
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        ring = [(cx + rng.uniform(-900, 900), cy + rng.uniform(-900, 900)) for _ in range(5)]
        poly = Polygon(ring).convex_hull
        shapes.append(poly)
    return tuple(Field(field_id=f"F{i}", properties={}, geometry=g) for i, g in enumerate(shapes))


def test_field_mask_windows_are_slices_of_the_whole_grid_raster() -> None:
    fields = _fields(np.random.default_rng(3))
    whole = field_index_raster(fields, GRID) >= 0
    assert 0 < whole.sum() < whole.size
    mask = FieldMask(fields, GRID)
    for tile_px in (600, 256, 137):
        for t in tiles(GRID, tile_px):
            expected = whole[t.row_off : t.row_off + t.height, t.col_off : t.col_off + t.width]
            np.testing.assert_array_equal(mask.window(t), expected)
            np.testing.assert_array_equal(mask.window(t), expected)  # again, from the packed copy


def test_windowed_normalisation_stats_equal_the_whole_stack(tmp_path) -> None:
    rng = np.random.default_rng(5)
    names = ["blue", "nbr2", "ties", "empty"]
    stack = np.stack([_samples(rng, kind, GRID.width * GRID.height).reshape(GRID.shape) for kind in (0, 2, 1, 4)])
    stack[2, :, : GRID.width // 2] = np.nan  # half a band without composite
    stack[3] = np.nan  # a band with no pixel: (0, 1)
    stack[3, 0, :5] = 0.5
    n_bare = rng.integers(0, 4, (1, *GRID.shape)).astype("float32")
    path = write_cog(tmp_path / "cov.tif", np.concatenate([stack, n_bare]), GRID, band_names=[*names, "n_bare"])
    fields = _fields(np.random.default_rng(3))
    whole = field_index_raster(fields, GRID) >= 0
    arr, _, _ = read_raster(path)
    expected = {k: list(v) for k, v in round_normalisation(arr[:4], names, whole).items()}
    assert expected["empty"] == [0.0, 1.0]
    for on_fields, windows in ((whole, None), (FieldMask(fields, GRID), tiles(GRID, 256)), (whole, tiles(GRID, 99))):
        assert normalisation_stats(path, on_fields, windows=windows)["stats"] == expected


def test_write_cog_blocks_writes_what_write_cog_writes(tmp_path) -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(size=(3, *GRID.shape)).astype("float32")
    values[1, 40:90, 100:400] = np.nan
    lazy = da.from_array(values, chunks=(1, 192, 256))  # ragged chunks, one band a chunk
    names = ["a", "b", "n_bare"]
    blocks = write_cog_blocks(tmp_path / "blocks.tif", lazy, GRID, band_names=names)
    whole = write_cog(tmp_path / "whole.tif", values, GRID, band_names=names)
    got, got_grid, got_names = read_raster(blocks)
    want, want_grid, want_names = read_raster(whole)
    np.testing.assert_array_equal(got, want)
    assert (got_grid, got_names) == (want_grid, want_names) == (GRID, names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks.tif", "whole.tif"]  # no staging left


def test_write_cog_blocks_leaves_nothing_when_a_block_fails(tmp_path) -> None:
    def broken(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        if block_info is not None and block_info[0]["chunk-location"][1:] == (1, 1):
            raise OSError("damaged asset")
        return block

    lazy = da.zeros((2, *GRID.shape), chunks=(2, 200, 200), dtype="float32").map_blocks(broken, dtype="float32")
    with pytest.raises(OSError, match="damaged asset"):
        write_cog_blocks(tmp_path / "t.tif", lazy, GRID, band_names=["a", "b"])
    assert list(tmp_path.iterdir()) == []


def test_mosaic_of_strips_is_the_tiles_put_together(tmp_path) -> None:
    rng = np.random.default_rng(9)
    values = rng.normal(size=(2, *GRID.shape)).astype("float32")
    parts = []
    for t in tiles(GRID, 300):  # tile heights 300 and 200: strips that end inside a staging block
        block = values[:, t.row_off : t.row_off + t.height, t.col_off : t.col_off + t.width]
        parts.append((write_cog(tmp_path / f"{t.name}.tif", block, t.grid(GRID), band_names=["a", "b"]), t))
    got, grid, names = read_raster(mosaic_to_cog(tmp_path / "mosaic.tif", parts, GRID))
    np.testing.assert_array_equal(got, values)
    assert (grid, names) == (GRID, ["a", "b"])


@pytest.mark.parametrize("normalise", [True, False])
def test_training_table_is_extract_at_points_on_the_loaded_stack(run, normalise: bool) -> None:  # noqa: F811
    cfg, layout, grid = run
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, round_normalisation=normalise))
    sites = pd.read_csv(layout.sites("r1"), keep_default_na=False, na_values=[""])
    rng = np.random.default_rng(2)
    res = grid.resolution_m
    sites["x"] = sites["x"] + rng.uniform(-0.5, 0.5, len(sites)) * res  # anywhere in the pixel, corners included
    sites["y"] = sites["y"] + rng.choice([-0.5, 0.0, 0.49], len(sites)) * res
    sites.loc[0, "x"] = grid.bounds[0] - 3.0  # just outside the grid: NaN, never the edge pixel
    sites["qa_flag"] = sites["qa_flag"].astype(object)
    sites.loc[1, "qa_flag"] = "duplicate"  # flagged: not trained on
    sites.to_csv(layout.sites("r1"), index=False)

    got = model_steps.training_table(cfg, layout)

    sites = pd.read_csv(layout.sites("r1"), keep_default_na=False, na_values=[""])  # as the step reads it
    kept = sites[sites["qa_flag"].isna() | (sites["qa_flag"].astype(str).str.strip() == "")].reset_index(drop=True)
    stack, _ = read_covariates(layout.covariates("r1"))  # the whole stack, in memory
    cov = extract_at_points(stack, kept["x"].to_numpy(float), kept["y"].to_numpy(float))
    if normalise:
        cov = apply_normalisation(cov, covariate_norm_stats(layout, "r1"))
    expected = pd.concat([kept.assign(round="r1"), cov], axis=1)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert got[list(cov.columns)].iloc[0].isna().all()  # the site outside the grid
    assert got[list(cov.columns)].notna().all(axis=1).mean() > 0.9  # edge sites nudged off the grid are NaN too
