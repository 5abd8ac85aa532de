"""GeoTIFF / COG reading and writing on the project grid (rasterio)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.windows import Window

from mrv.fsio import atomic_path
from mrv.grid import Grid, Tile

#: zlib level of the COG copies: level 1 compresses a float32 map (predictor 3) ~1.5x faster than the
#: default 6 for ~1.5 % larger files (benchmarks/README.md, "Map writing").
COG_DEFLATE_LEVEL = 1
#: Creation options shared by every float32 raster the pipeline writes.
_FLOAT_OPTIONS: dict[str, Any] = {"dtype": "float32", "nodata": float("nan"), "compress": "deflate", "predictor": 3}


def write_cog(
    path: Path,
    data: np.ndarray,
    grid: Grid,
    *,
    band_names: Sequence[str] | None = None,
    tags: Mapping[str, object] | None = None,
    band_tags: Sequence[Mapping[str, object]] | None = None,
) -> Path:
    """Write a float32 Cloud-Optimized GeoTIFF (NaN nodata, deflate, 256 px tiles, overviews).

    ``data`` is ``(y, x)`` or ``(band, y, x)`` on ``grid``. Dataset ``tags`` carry units, depth and
    provenance; band descriptions carry ``band_names``.
    """
    arr = np.asarray(data, dtype="float32")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape[1:] != grid.shape:
        raise ValueError(f"array shape {arr.shape[1:]} does not match grid {grid.shape}")
    profile = {
        "driver": "COG",
        "width": grid.width,
        "height": grid.height,
        "count": arr.shape[0],
        "crs": CRS.from_user_input(grid.crs),
        "transform": grid.transform,
        "blocksize": 256,
        **_FLOAT_OPTIONS,
    }
    # atomic: a crashed run never leaves a half-written map under the final name
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(arr)
        if tags:
            dst.update_tags(**{k: str(v) for k, v in tags.items()})
        for i in range(arr.shape[0]):
            if band_names:
                dst.set_band_description(i + 1, band_names[i])
            if band_tags:
                dst.update_tags(i + 1, **{k: str(v) for k, v in band_tags[i].items()})
    return path


def read_raster(path: Path) -> tuple[np.ndarray, Grid, list[str]]:
    """A float32 ``(band, y, x)`` array (nodata as NaN), its grid and the band descriptions."""
    with rasterio.open(path) as src:
        arr = src.read(masked=True).astype("float32").filled(np.nan)
        b = src.bounds
        grid = Grid(crs=src.crs.to_string(), bounds=(b.left, b.bottom, b.right, b.top), resolution_m=src.res[0])
        names = [d or f"band_{i + 1}" for i, d in enumerate(src.descriptions)]
    return arr, grid, names


def write_cogs_by_strips(
    paths: Sequence[Path],
    data: da.Array,
    grid: Grid,
    *,
    tags: Sequence[Mapping[str, object]],
    band_names: Sequence[str],
    strip_px: int,
    on_strip: Callable[[int], None] | None = None,
) -> None:
    """Write band ``i`` of a lazy ``(band, y, x)`` array to the COG ``paths[i]``, one row strip at a time.

    At most two strips of ``strip_px`` rows are in memory: the next strip is computed (in parallel
    across its column blocks) while the current one is written, so the workers do not wait for the
    disk. Each band goes to an *uncompressed* tiled GeoTIFF (a plain copy of the pixels, no codec)
    and is then compressed once into a Cloud-Optimized GeoTIFF with its overviews
    (``rasterio.shutil.copy``, which keeps the tags, with all cores), so memory does not grow with
    the region and every pixel is compressed exactly once. ``on_strip(rows)`` is called after each
    strip (progress reporting).
    """
    if len(paths) != data.shape[0] or len(tags) != data.shape[0]:
        raise ValueError("one path and one tag mapping per band are needed")
    if tuple(data.shape[1:]) != grid.shape:
        raise ValueError(f"array shape {data.shape[1:]} does not match grid {grid.shape}")
    staging = [p.with_suffix(".strips.tif") for p in paths]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, grid.height, strip_px))

    def strip(row0: int) -> np.ndarray:
        # Unfused: the fused keys of blockwise optimisation (named after the layer prefix only) collided
        # between rounds computed on one in-process client (KeyError in Client._gather).
        return np.asarray(data[:, row0 : row0 + strip_px, :].compute(optimize_graph=False), dtype="float32")

    outs = [rasterio.open(p, "w", **_staging_profile(grid, count=1, compress=False)) for p in staging]
    try:
        for dst, band_tags, name in zip(outs, tags, band_names, strict=True):
            dst.update_tags(**{k: str(v) for k, v in band_tags.items()})
            dst.set_band_description(1, name)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="next-strip") as pool:
            pending = pool.submit(strip, starts[0]) if starts else None
            for n, row0 in enumerate(starts):
                assert pending is not None
                values = pending.result()
                pending = pool.submit(strip, starts[n + 1]) if n + 1 < len(starts) else None
                window = Window(0, row0, grid.width, values.shape[1])  # type: ignore[no-untyped-call]
                for i, dst in enumerate(outs):
                    dst.write(values[i], 1, window=window)
                if on_strip is not None:
                    on_strip(values.shape[1])
    except BaseException:
        for dst in outs:
            dst.close()
        for p in staging:
            p.unlink(missing_ok=True)
        raise
    for dst in outs:
        dst.close()
    for src, final in zip(staging, paths, strict=True):
        _finish_cog(src, final)


def mosaic_to_cog(
    path: Path,
    parts: Sequence[tuple[Path, Tile]],
    grid: Grid,
    *,
    tags: Mapping[str, object] | None = None,
) -> Path:
    """Mosaic the tile GeoTIFFs ``parts`` (each on ``tile.grid(grid)``) into one COG on ``grid``.

    One tile is in memory at a time; band count and descriptions come from the first part. Pixels
    no part covers stay NaN (nodata).
    """
    if not parts:
        raise ValueError("no tiles to mosaic")
    with rasterio.open(parts[0][0]) as first:
        count, names = first.count, list(first.descriptions)
    staging = path.with_suffix(".mosaic.tif")
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(staging, "w", **_staging_profile(grid, count=count)) as dst:
        if tags:
            dst.update_tags(**{k: str(v) for k, v in tags.items()})
        for i, name in enumerate(names):
            if name:
                dst.set_band_description(i + 1, name)
        for part, tile in parts:
            with rasterio.open(part) as src:
                if src.count != count or (src.height, src.width) != (tile.height, tile.width):
                    raise ValueError(f"{part} does not match tile {tile.name} ({count} bands of {tile.height}x{tile.width})")
                window = Window(tile.col_off, tile.row_off, tile.width, tile.height)  # type: ignore[no-untyped-call]
                dst.write(src.read(), window=window)
    _finish_cog(staging, path)
    return path


def _staging_profile(grid: Grid, *, count: int, compress: bool = True) -> dict[str, Any]:
    """A tiled (Big)GeoTIFF on ``grid`` that can be written window by window (COG cannot).

    ``compress=False``: no codec (the pixels are compressed once, in the COG copy).
    """
    options = _FLOAT_OPTIONS if compress else {"dtype": "float32", "nodata": float("nan")}
    return {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": count,
        "crs": CRS.from_user_input(grid.crs), "transform": grid.transform,
        "tiled": True, "blockxsize": 256, "blockysize": 256, "BIGTIFF": "IF_SAFER", **options,
    }  # fmt: skip


def _finish_cog(staging: Path, final: Path) -> None:
    """Copy a staging GeoTIFF to a COG under ``final`` (tags and descriptions kept), atomically, and drop it."""
    with atomic_path(final) as tmp:  # atomic, as in write_cog
        rasterio.shutil.copy(
            staging, tmp, driver="COG", compress="deflate", predictor=3, level=COG_DEFLATE_LEVEL, blocksize=256,
            BIGTIFF="IF_SAFER", num_threads="ALL_CPUS",
        )  # fmt: skip
    staging.unlink()


class _WindowReader:
    """Array-like view of a GeoTIFF for ``dask.array.from_array``: each slice reads that window only."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        with rasterio.open(self.path) as src:
            self.shape = (src.count, src.height, src.width)
        self.dtype = np.dtype("float32")
        self.ndim = 3

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        b, r, c = (k.indices(n) for k, n in zip(key, self.shape, strict=True))
        window = Window(c[0], r[0], c[1] - c[0], r[1] - r[0])  # type: ignore[no-untyped-call]
        with rasterio.open(self.path) as src:
            block = src.read(list(range(b[0] + 1, b[1] + 1)), window=window, masked=True)
        return block.astype("float32").filled(np.nan)


def read_raster_lazy(path: Path, *, chunk_px: int) -> tuple[da.Array, Grid, list[str]]:
    """Like :func:`read_raster`, but Dask-backed: ``(all bands, chunk_px, chunk_px)`` blocks read on demand."""
    with rasterio.open(path) as src:
        b = src.bounds
        grid = Grid(crs=src.crs.to_string(), bounds=(b.left, b.bottom, b.right, b.top), resolution_m=src.res[0])
        names = [d or f"band_{i + 1}" for i, d in enumerate(src.descriptions)]
    reader = _WindowReader(path)
    arr = da.from_array(reader, chunks=(-1, chunk_px, chunk_px), lock=False, meta=np.empty((0, 0, 0), "float32"))
    return arr, grid, names



def read_pixels(
    path: Path, rows: np.ndarray, cols: np.ndarray, *, bands: Sequence[int] | None = None
) -> np.ndarray:
    """``(pixels, bands)`` float32 values of the GeoTIFF ``path`` at pixel indices (``rows``, ``cols``).

    Nodata is NaN, as in :func:`read_raster`; indices outside the raster are NaN too. ``bands`` are
    1-based (default all). Each GeoTIFF block holding a pixel is read once (every band asked for, one
    window), so memory is one block whatever the raster's size: for sites, or a region's field
    pixels, without loading the region.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    with rasterio.open(path) as src:
        band_list = list(bands) if bands is not None else list(range(1, src.count + 1))
        values = np.full((rows.size, len(band_list)), np.nan, dtype="float32")
        inside = (cols >= 0) & (cols < src.width) & (rows >= 0) & (rows < src.height)
        bh, bw = src.block_shapes[0]
        idx = np.flatnonzero(inside)
        block_id = (rows[idx] // bh) * ((src.width + bw - 1) // bw) + cols[idx] // bw
        order = np.argsort(block_id, kind="stable")
        idx, block_id = idx[order], block_id[order]
        if idx.size == 0:
            return values
        starts = np.flatnonzero(np.r_[True, block_id[1:] != block_id[:-1]])
        for s0, s1 in zip(starts, [*starts[1:], idx.size], strict=True):
            pts = idx[s0:s1]
            r0, c0 = int(rows[pts[0]] // bh * bh), int(cols[pts[0]] // bw * bw)
            window = Window(c0, r0, min(bw, src.width - c0), min(bh, src.height - r0))  # type: ignore[no-untyped-call]
            block = src.read(band_list, window=window, masked=True).astype("float32").filled(np.nan)
            values[pts] = block[:, rows[pts] - r0, cols[pts] - c0].T
    return values


def sample_at_points(
    path: Path, x: np.ndarray, y: np.ndarray, *, skip_bands: Sequence[str] = ("n_bare",)
) -> tuple[np.ndarray, list[str]]:
    """``(points, bands)`` float32 values of the GeoTIFF ``path`` at points in its CRS, without loading it.

    The same pixels and values as :func:`mrv.modeling.features.extract_at_points` on the whole stack
    (:func:`read_raster`): the nearest pixel centre, ``col = rint((x - x_0) / res)`` from the first
    centre ``x_0``; NaN for nodata and for points outside the grid (never the edge pixel). Bands
    named in ``skip_bands`` are left out; the names of the others are returned. Read with
    :func:`read_pixels` (one block at a time).
    """
    with rasterio.open(path) as src:
        names = [d or f"band_{i + 1}" for i, d in enumerate(src.descriptions)]
        left, top, res = src.bounds.left, src.bounds.top, float(src.res[0])
    keep = [i for i, n in enumerate(names) if n not in skip_bands]
    x0, y0 = left + 0.5 * res, top - 0.5 * res  # first pixel centres, as Grid.x_coords() / y_coords()
    col = np.rint((np.asarray(x, dtype="float64") - x0) / res).astype(np.int64)
    row = np.rint((y0 - np.asarray(y, dtype="float64")) / res).astype(np.int64)
    return read_pixels(path, row, col, bands=[i + 1 for i in keep]), [names[i] for i in keep]
