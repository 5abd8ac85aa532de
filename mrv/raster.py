"""GeoTIFF / COG reading and writing on the project grid (rasterio)."""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import dask.array as da
import numpy as np
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from mrv.fsio import atomic_path
from mrv.grid import Grid, Tile

#: zlib level of the COG copies: level 1 compresses a float32 map (predictor 3) ~1.5x faster than the
#: default 6 for ~1.5 % larger files (benchmarks/README.md, "Map writing").
COG_DEFLATE_LEVEL = 1
#: GDAL block cache (bytes) while a tile or mosaic is streamed to disk: blocks are written once and read
#: back once by the COG copy, so a larger cache (GDAL's default is 5 % of RAM) only holds memory.
IO_CACHE_BYTES = 64 * 2**20
#: GDAL's block cache (MB) for every process that imports this module, unless ``GDAL_CACHEMAX`` is already set:
#: GDAL's own default, 5 % of RAM (1.2 GB on a 24 GB machine), would alone exceed the 1 GB a stage may use
#: (issue 19.3), and the pipeline reads and writes each block about once. Read when GDAL first uses its cache.
DEFAULT_GDAL_CACHEMAX_MB = 256
os.environ.setdefault("GDAL_CACHEMAX", str(DEFAULT_GDAL_CACHEMAX_MB))
#: Creation options shared by every float32 raster the pipeline writes.
#: TIFF predictor 3 (floating point: byte planes of differences) for continuous float32 fields.
FLOAT_PREDICTOR = 3
_FLOAT_OPTIONS: dict[str, Any] = {"dtype": "float32", "nodata": float("nan"), "compress": "deflate", "predictor": FLOAT_PREDICTOR}
#: Most pixels (rows x columns) of one strip window of :func:`write_cogs_by_strips`: a window of six float32
#: bands is 24 MB however wide the region (a 10000 px wide region is cut into column ranges; issue 19.3).
STRIP_PIXELS = 1 << 20
#: Tile size of the GeoTIFFs the pipeline writes; COG overviews go down to a level no larger than one tile.
BLOCK_PX = 256
#: Strip windows computed ahead of the one being written: two, so the workers start the one after next while the
#: slowest block of the next is still running (with one, they idled at every window's end).
STRIPS_AHEAD = 2
#: COG copies :func:`write_cogs_by_strips` runs at once after the last window (one per core of a 2-core machine;
#: a copy is mostly one thread: GDAL compresses a band's tiles in parallel only while it writes them).
COG_COPIES_AT_ONCE = 2


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
    max_strip_pixels: int = STRIP_PIXELS,
    on_strip: Callable[[int], None] | None = None,
    predictors: Sequence[int] | None = None,
) -> None:
    """Write band ``i`` of a lazy ``(band, y, x)`` array to the COG ``paths[i]``, one strip window at a time.

    A window is ``strip_px`` rows by as many whole column chunks of ``data`` as fit in ``max_strip_pixels``
    (:func:`_strip_windows`), so memory stays bounded however wide the region is (issue 19.3). At most
    ``1 + STRIPS_AHEAD`` windows are in memory: the next ones are computed (in parallel across their blocks)
    while the current one is written, so the workers do not wait for the disk. Each band goes to an
    *uncompressed* tiled GeoTIFF (a plain copy of the pixels) and, when the windows align with the overview
    factors, its overview levels are averaged from the same window in numpy (:class:`_OverviewStaging`) while
    the workers compute the next ones; then one COG copy per band compresses every pixel once and takes those
    overviews as they are (``OVERVIEWS=FORCE_USE_EXISTING`` through a VRT; 2.2x less CPU than GDAL building
    them, benchmarks/README.md), :data:`COG_COPIES_AT_ONCE` copies at a time. Windows that do not align (a
    ``strip_px`` or chunk size not a multiple of the largest overview factor) leave the overviews to GDAL.
    ``on_strip(rows)`` is called after each full-width row of windows (progress reporting). ``predictors``:
    the TIFF predictor of each band's COG (3 floating point, the default; 1 none), lossless either way.
    """
    predictors = [FLOAT_PREDICTOR] * data.shape[0] if predictors is None else list(predictors)
    if len(paths) != data.shape[0] or len(tags) != data.shape[0] or len(predictors) != data.shape[0]:
        raise ValueError("one path, one tag mapping and one predictor per band are needed")
    if tuple(data.shape[1:]) != grid.shape:
        raise ValueError(f"array shape {data.shape[1:]} does not match grid {grid.shape}")
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    windows = _strip_windows(grid.height, data.chunks[2], strip_px, max_strip_pixels)
    levels = overview_levels(grid.height, grid.width)
    aligned = all(_aligned(w, grid.height, grid.width, 1 << levels) for w in windows)
    stagings = [_OverviewStaging(p, grid, levels if aligned else 0, pr) for p, pr in zip(paths, predictors, strict=True)]

    def compute(w: Window) -> np.ndarray:
        # Unfused: the fused keys of blockwise optimisation (named after the layer prefix only) collided
        # between rounds computed on one in-process client (KeyError in Client._gather).
        part = data[:, w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]
        return np.asarray(part.compute(optimize_graph=False), dtype="float32")

    try:
        with rasterio.Env(GDAL_CACHEMAX=IO_CACHE_BYTES):  # the block cache does not grow with the region
            for staging, band_tags, name in zip(stagings, tags, band_names, strict=True):
                staging.open(band_tags, name)
            with ThreadPoolExecutor(max_workers=STRIPS_AHEAD, thread_name_prefix="next-strip") as pool:
                pending = deque(pool.submit(compute, w) for w in windows[:STRIPS_AHEAD])
                for n, window in enumerate(windows):
                    values = pending.popleft().result()
                    if n + STRIPS_AHEAD < len(windows):
                        pending.append(pool.submit(compute, windows[n + STRIPS_AHEAD]))
                    for i, staging in enumerate(stagings):
                        staging.write(values[i], window)
                    if on_strip is not None and window.col_off + window.width == grid.width:
                        on_strip(int(window.height))
            for staging in stagings:
                staging.close()
            with ThreadPoolExecutor(max_workers=COG_COPIES_AT_ONCE, thread_name_prefix="cog-copy") as pool:
                list(pool.map(lambda s: s.finish(), stagings))
    finally:
        for staging in stagings:
            staging.discard()


def overview_levels(height: int, width: int, *, block_px: int = BLOCK_PX) -> int:
    """Overview levels (factors 2, 4, ..) GDAL's COG driver builds: halve (rounding down, as GDAL counts them)
    until a level fits in one block. The levels' sizes themselves round up (ceil(size / factor))."""
    n = 0
    while height > block_px or width > block_px:
        height, width, n = height // 2, width // 2, n + 1
    return n


def _strip_windows(height: int, col_chunks: Sequence[int], strip_px: int, max_pixels: int) -> list[Window]:
    """Windows of ``strip_px`` rows by as many whole column chunks as fit in ``max_pixels`` (at least one).

    Whole chunks, so no block is computed twice; row by row, left to right.
    """
    rows = max(1, min(strip_px, height))
    spans: list[tuple[int, int]] = []
    c0 = c = 0
    for w in col_chunks:
        if c > c0 and (c + w - c0) * rows > max_pixels:
            spans.append((c0, c))
            c0 = c
        c += w
    spans.append((c0, c))
    return [
        Window(a, r0, b - a, min(rows, height - r0))  # type: ignore[no-untyped-call]
        for r0 in range(0, height, rows)
        for a, b in spans
    ]


def _aligned(w: Window, height: int, width: int, factor: int) -> bool:
    """A window whose overview windows at ``factor`` are whole pixels (origin on the factor, size too unless at an edge)."""
    return (
        w.row_off % factor == 0 and w.col_off % factor == 0
        and (w.height % factor == 0 or w.row_off + w.height == height)
        and (w.width % factor == 0 or w.col_off + w.width == width)
    )  # fmt: skip


def _halve(total: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2 x 2 block sums of ``total`` and ``count`` (an odd last row or column sums the pixels it has)."""
    h, w = total.shape
    if h % 2 or w % 2:
        pad = ((0, h % 2), (0, w % 2))
        total, count = np.pad(total, pad), np.pad(count, pad)
    t = total[0::2, 0::2] + total[1::2, 0::2] + total[0::2, 1::2] + total[1::2, 1::2]
    c = count[0::2, 0::2] + count[1::2, 0::2] + count[0::2, 1::2] + count[1::2, 1::2]
    return t, c


class _OverviewStaging:
    """One band's staging files: the full-resolution GeoTIFF and, with ``levels``, one GeoTIFF per overview level.

    Overview level k (factor 2**k) is the mean of the valid (non-NaN) pixels of each 2**k x 2**k block, NaN
    where none is valid: GDAL's ``AVERAGE`` resampling over nodata. Sums and counts are carried down the levels
    (float32; exact counts up to 2**24 pixels per block), so every level averages full-resolution pixels.
    """

    def __init__(self, final: Path, grid: Grid, levels: int, predictor: int = FLOAT_PREDICTOR) -> None:
        self.final = final
        self.predictor = predictor
        self.grid = grid
        self.staging = final.with_suffix(".strips.tif")
        self.overviews = [final.with_suffix(f".strips.ovr{k}.tif") for k in range(1, levels + 1)]
        self.vrt = final.with_suffix(".strips.vrt")
        self._dst: list[Any] = []

    def open(self, tags: Mapping[str, object], name: str) -> None:
        base = rasterio.open(self.staging, "w", **_staging_profile(self.grid, count=1, compress=False))
        self._dst.append(base)
        base.update_tags(**{k: str(v) for k, v in tags.items()})
        base.set_band_description(1, name)
        h, w = self.grid.height, self.grid.width
        for path in self.overviews:
            h, w = -(-h // 2), -(-w // 2)
            profile = {**_staging_profile(self.grid, count=1, compress=False), "height": h, "width": w}
            self._dst.append(rasterio.open(path, "w", **profile))

    def write(self, values: np.ndarray, window: Window) -> None:
        """Write one window of the band (``values`` is ``(window.height, window.width)``) and its overviews."""
        self._dst[0].write(values, 1, window=window)
        if not self.overviews:
            return
        valid = ~np.isnan(values)
        total, count = np.where(valid, values, np.float32(0.0)), valid.astype("float32")
        for k, dst in enumerate(self._dst[1:], start=1):
            total, count = _halve(total, count)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = total / count  # 0 / 0 -> NaN: no valid pixel in the block
            win = Window(window.col_off >> k, window.row_off >> k, mean.shape[1], mean.shape[0])  # type: ignore[no-untyped-call]
            dst.write(mean, 1, window=win)

    def close(self) -> None:
        for dst in self._dst:
            dst.close()
        self._dst = []

    def finish(self) -> None:
        """The COG under ``final`` from the staging files (atomically); the staging files are removed."""
        if self.overviews:
            self.vrt.write_text(_vrt_with_overviews(self.staging, self.overviews))
            _finish_cog(self.vrt, self.final, overviews="FORCE_USE_EXISTING", predictor=self.predictor)
        else:
            _finish_cog(self.staging, self.final, predictor=self.predictor)

    def discard(self) -> None:
        self.close()
        for p in (self.staging, *self.overviews, self.vrt):
            p.unlink(missing_ok=True)


def _vrt_with_overviews(base: Path, overviews: Sequence[Path]) -> str:
    """A one-band VRT of the GeoTIFF ``base`` (CRS, transform, nodata, tags, description) with ``overviews``."""
    with rasterio.open(base) as src:
        root = ET.Element("VRTDataset", rasterXSize=str(src.width), rasterYSize=str(src.height))
        ET.SubElement(root, "SRS").text = src.crs.to_wkt()
        ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in src.transform.to_gdal())
        meta = ET.SubElement(root, "Metadata")
        for key, value in src.tags().items():
            ET.SubElement(meta, "MDI", key=key).text = value
        band = ET.SubElement(root, "VRTRasterBand", dataType="Float32", band="1")
        if src.descriptions[0]:
            ET.SubElement(band, "Description").text = src.descriptions[0]
        ET.SubElement(band, "NoDataValue").text = "nan"
        source = ET.SubElement(band, "SimpleSource")
        ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = str(base.resolve())
        ET.SubElement(source, "SourceBand").text = "1"
        for path in overviews:
            ovr = ET.SubElement(band, "Overview")
            ET.SubElement(ovr, "SourceFilename", relativeToVRT="0").text = str(path.resolve())
            ET.SubElement(ovr, "SourceBand").text = "1"
    return ET.tostring(root, encoding="unicode")


def mosaic_to_cog(
    path: Path,
    parts: Sequence[tuple[Path, Tile]],
    grid: Grid,
    *,
    tags: Mapping[str, object] | None = None,
) -> Path:
    """Mosaic the tile GeoTIFFs ``parts`` (each on ``tile.grid(grid)``) into one COG on ``grid``.

    A strip of :data:`MOSAIC_STRIP_PX` rows of one tile is in memory at a time, and at most
    :data:`IO_CACHE_BYTES` of GDAL's block cache while the staging file is written (the COG copy keeps the
    process's cache: a smaller one than a block row of every band makes the overviews decode each block
    once per band); band count and descriptions come from the first part.
    Pixels no part covers stay NaN (nodata).
    """
    if not parts:
        raise ValueError("no tiles to mosaic")
    with rasterio.open(parts[0][0]) as first:
        count, names = first.count, list(first.descriptions)
    staging = path.with_suffix(".mosaic.tif")
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        rasterio.Env(GDAL_CACHEMAX=IO_CACHE_BYTES),
        rasterio.open(staging, "w", **_staging_profile(grid, count=count)) as dst,
    ):
        if tags:
            dst.update_tags(**{k: str(v) for k, v in tags.items()})
        for i, name in enumerate(names):
            if name:
                dst.set_band_description(i + 1, name)
        for part, tile in parts:
            with rasterio.open(part) as src:
                if src.count != count or (src.height, src.width) != (tile.height, tile.width):
                    raise ValueError(f"{part} does not match tile {tile.name} ({count} bands of {tile.height}x{tile.width})")
                for row0 in range(0, tile.height, MOSAIC_STRIP_PX):  # every band of a strip: whole staging blocks
                    h = min(MOSAIC_STRIP_PX, tile.height - row0)
                    strip = Window(0, row0, tile.width, h)  # type: ignore[no-untyped-call]
                    target = Window(tile.col_off, tile.row_off + row0, tile.width, h)  # type: ignore[no-untyped-call]
                    dst.write(src.read(window=strip), window=target)
    _finish_cog(staging, path)  # the process's cache: the overviews read every band of a block row at once
    return path


#: Rows of a tile copied at once by :func:`mosaic_to_cog` (one staging block row when tiles start on it).
MOSAIC_STRIP_PX = 256


class _LockedWindowWriter:
    """``dask.array.store`` target: each assigned block is written to its window of an open dataset, under a lock."""

    def __init__(self, dst: rasterio.io.DatasetWriter) -> None:
        self.dst = dst
        self.lock = threading.Lock()

    def __setitem__(self, key: tuple[slice, slice, slice], block: np.ndarray) -> None:
        b, r, c = (k.indices(n) for k, n in zip(key, (self.dst.count, self.dst.height, self.dst.width), strict=True))
        window = Window(c[0], r[0], c[1] - c[0], r[1] - r[0])  # type: ignore[no-untyped-call]
        with self.lock:  # a GDAL dataset takes one thread at a time
            self.dst.write(np.asarray(block, dtype="float32"), list(range(b[0] + 1, b[1] + 1)), window=window)


def write_cog_blocks(path: Path, data: da.Array, grid: Grid, *, band_names: Sequence[str]) -> Path:
    """Write a lazy float32 ``(band, y, x)`` array on ``grid`` to a COG as :func:`write_cog` does, block by block.

    Each block is written to an uncompressed, band-interleaved staging GeoTIFF as soon as it is computed
    (``dask.array.store`` with the current scheduler), one row of chunks at a time, then the staging file
    is compressed once into the COG (:func:`_finish_cog`, deflate level :data:`COG_DEFLATE_LEVEL`). Memory
    holds the blocks of one chunk row in flight, never the whole array nor a second copy of it (rasterio's
    COG writer buffers the whole raster in a GDAL MEM dataset), and at most :data:`IO_CACHE_BYTES` of
    GDAL's block cache. Band interleaving: a block of some bands fills whole staging blocks, nothing is
    read back. A failure leaves neither the staging nor the final file.
    """
    if tuple(data.shape[1:]) != grid.shape or data.shape[0] != len(band_names):
        raise ValueError(f"array shape {data.shape} does not match {len(band_names)} bands on grid {grid.shape}")
    staging = path.with_suffix(".blocks.tif")
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {**_staging_profile(grid, count=len(band_names), compress=False), "interleave": "band"}
    rows, cols = (itertools.pairwise(np.cumsum([0, *c]).tolist()) for c in data.chunks[1:])
    try:
        with rasterio.Env(GDAL_CACHEMAX=IO_CACHE_BYTES):
            with rasterio.open(staging, "w", **profile) as dst:
                for i, name in enumerate(band_names):
                    dst.set_band_description(i + 1, name)
                writer = _LockedWindowWriter(dst)
                for (r0, r1), (c0, c1) in itertools.product(rows, cols):  # one chunk at a time, its tasks in parallel
                    block = (slice(None), slice(r0, r1), slice(c0, c1))
                    da.store(data[block], writer, regions=block, lock=False)  # type: ignore[arg-type]
            _finish_cog(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
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


def _finish_cog(staging: Path, final: Path, *, overviews: str = "AUTO", predictor: int = FLOAT_PREDICTOR) -> None:
    """Copy a staging GeoTIFF (or VRT) to a COG under ``final`` (tags and descriptions kept), atomically, and drop it.

    ``overviews`` is the COG driver's ``OVERVIEWS`` option: ``AUTO`` builds them (GDAL's default resampling)
    unless the source has some, ``FORCE_USE_EXISTING`` takes the source's.
    """
    with atomic_path(final) as tmp:  # atomic, as in write_cog
        rasterio.shutil.copy(
            staging, tmp, driver="COG", compress="deflate", predictor=predictor, level=COG_DEFLATE_LEVEL, blocksize=BLOCK_PX,
            BIGTIFF="IF_SAFER", num_threads="ALL_CPUS", overviews=overviews,
        )  # fmt: skip
    staging.unlink()


class _WindowReader:
    """Array-like view of a GeoTIFF for ``dask.array.from_array``: each slice reads that window only."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        with rasterio.open(self.path) as src:
            self.shape = (src.count, src.height, src.width)
            # Masked pixels are already NaN when every band's only mask is a NaN nodata (or there is none):
            # then a plain read, without the per-band masks and the filled copy of a masked read.
            plain_flags = ({MaskFlags.all_valid}, {MaskFlags.nodata})
            self.plain = all(
                set(flags) in plain_flags and (nd is None or np.isnan(nd))
                for flags, nd in zip(src.mask_flag_enums, src.nodatavals, strict=True)
            ) and all(np.issubdtype(np.dtype(d), np.floating) for d in src.dtypes)
        self.dtype = np.dtype("float32")
        self.ndim = 3

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        b, r, c = (k.indices(n) for k, n in zip(key, self.shape, strict=True))
        window = Window(c[0], r[0], c[1] - c[0], r[1] - r[0])  # type: ignore[no-untyped-call]
        bands = list(range(b[0] + 1, b[1] + 1))
        with rasterio.open(self.path) as src:
            if self.plain:
                return np.asarray(src.read(bands, window=window, out_dtype="float32"))
            block = src.read(bands, window=window, masked=True)
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
