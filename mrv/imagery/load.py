"""Load L2A items onto the project grid with odc-stac, as surface reflectance.

odc-stac keeps the stored uint16 DN and nodata and does not apply ``raster:bands`` scale/offset
(odc-stac issue #55), so the scaling is applied here per item (baselines differ between items of
one search). Each item is loaded as its own time step (``groupby="id"``) so that no two
differently scaled items are fused before scaling.

Damaged items are dropped before loading, with a reason: every asset is opened and its first
block and its last-stored block are read at every resolution level (:func:`probe_asset`), which
catches missing, unreachable and truncated files (a COG cut in half still opens and serves its
first tiles). Corruption inside a file that passes the probe still fails the compute (odc-stac
``fail_on_error=True``) rather than blanking part of a scene silently; ``prepare_imagery`` turns
that into an :class:`~mrv.errors.ImageryError` naming the round and the file.

Every readable item is then checked against its own data (:mod:`mrv.imagery.scene_check`) on a decimated
sample read through the files' overviews (:func:`sample_scene`): a scene whose radiometric metadata the
data contradict is corrected by the BOA offset or dropped, with the reason.

Assets may be GeoTIFF/COG or JPEG2000 (Copernicus Data Space), local, http(s) or ``s3://`` (GDAL's
``/vsis3/``): S3 access is configured by GDAL's own environment settings (``AWS_S3_ENDPOINT``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_VIRTUAL_HOSTING``, ``AWS_HTTPS``, see
:mod:`mrv.imagery.s3`), which are never logged or written.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import odc.stac
import pystac
import rasterio
import xarray as xr
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from mrv.errors import NoImageryFound
from mrv.grid import Grid
from mrv.imagery.bands import SCL, resolve_assets
from mrv.imagery.masking import clear_mask
from mrv.imagery.radiometry import band_scaling
from mrv.imagery.s3 import check_s3_settings
from mrv.imagery.scene_check import CheckConfig, SceneStats, judge, scene_stats
from mrv.imagery.source import LoadedScenes

log = logging.getLogger(__name__)

# odc-loader reprojects in-memory arrays with rasterio.warp.reproject, which warns that an array "has no
# geotransform" although odc passes the transforms explicitly; the warning says nothing about the data.
warnings.filterwarnings("ignore", category=rasterio.errors.NotGeoreferencedWarning, module="rasterio.warp")

READ_TASK_BYTES = 16 * 2**20
"""Upper bound on one read task's output (one band of every item over one chunk, as float32).

16 MiB (1024 px chunks for 4 items): a 2048 px tile's composite peaked at 474 MB instead of 950 MB
with 64 MiB (2048 px chunks, the whole tile per task), in 27.8 vs 26.1 s at load average 9
(benchmarks/README.md, "Imagery load")."""
SAMPLE_PX = 256
"""Side (pixels) of the decimated sample of each scene that :mod:`mrv.imagery.scene_check` judges."""


def read_chunk_px(n_items: int, chunk_px: int, grid: Grid) -> int:
    """Side of the square chunks read in one task: ``chunk_px`` times the largest whole factor that keeps
    ``n_items`` float32 layers of it within :data:`READ_TASK_BYTES`, and no larger than the grid.

    Every read task opens each item's file and sets up its own (GDAL) reprojection, so small chunks
    are paid per task: on the benchmark scene (4 items, 2000 x 2000 px) 256 px chunks took 2-3x as
    long as 1024-2048 px chunks, with identical values (odc-stac pads the source window per chunk).
    ``chunk_px`` stays the lower bound, and the bound once many items are stacked.
    """
    side = int((READ_TASK_BYTES / (4 * max(1, n_items))) ** 0.5)
    factor = max(1, side // chunk_px)
    return max(chunk_px, min(factor * chunk_px, max(grid.height, grid.width)))


def _last_block_window(src: rasterio.io.DatasetReader) -> Window:
    """The block of band 1 stored last in the file (largest TIFF offset); the bottom-right block otherwise.

    A truncated file loses its last-written blocks first: in a COG the full-resolution tiles come
    after the overviews, row by row, so the block with the largest offset is the first to go.
    """
    best: tuple[int, Window] | None = None
    for (row, col), window in src.block_windows(1):
        offset = src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1)
        if offset is not None and int(offset) > 0 and (best is None or int(offset) > best[0]):
            best = (int(offset), window)
    if best is not None:
        return best[1]
    h, w = src.block_shapes[0]
    return Window((src.width - 1) // w * w, (src.height - 1) // h * h, 1, 1)


def probe_asset(href: str) -> None:
    """Open ``href`` and read its first block and its last-stored block at every resolution level.

    Raises rasterio / OS errors for a missing, unreachable, truncated or corrupt file. Reading a
    single pixel of the first block is not enough: a COG cut in half still opens and serves its
    first tiles, then fails when the lost tiles are read during the composite.
    """
    with rasterio.open(href) as src:
        src.read(1, window=Window(0, 0, 1, 1))
        n_overviews = len(src.overviews(1))
        window = _last_block_window(src)
        src.read(1, window=Window(window.col_off, window.row_off, 1, 1))
    for level in range(n_overviews):
        with rasterio.open(href, overview_level=level) as ovr:
            window = _last_block_window(ovr)
            ovr.read(1, window=Window(window.col_off, window.row_off, 1, 1))


def unreadable_reason(item: pystac.Item, keys: Sequence[str]) -> str | None:
    """Why one of the item's assets cannot be read (missing, truncated, corrupt), or None when all can."""
    for key in keys:
        href = item.assets[key].get_absolute_href() or item.assets[key].href
        try:
            probe_asset(href)
        except (rasterio.errors.RasterioError, OSError) as exc:
            detail = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
            return f"asset '{key}' ({href}) unreadable: {exc}{detail}"
    return None


def _href(item: pystac.Item, key: str) -> str:
    return item.assets[key].get_absolute_href() or item.assets[key].href


def _read_decimated(
    src: rasterio.io.DatasetReader, bounds: tuple[float, float, float, float], shape: tuple[int, int]
) -> np.ndarray:
    """Band 1 over ``bounds`` (in the file's CRS) as ``shape`` by nearest neighbour, the file's nodata (else 0)
    where the file does not reach.

    Only the part inside the file is read, by a plain windowed read with ``out_shape``, for which GDAL picks
    the overview (a boundless read would go through a VRT and read full resolution).
    """
    full = from_bounds(*bounds, transform=src.transform)
    fill = src.nodata if src.nodata is not None else 0
    out = np.full(shape, fill, dtype=src.dtypes[0])
    try:
        inside = full.intersection(Window(0, 0, src.width, src.height))
    except rasterio.errors.WindowError:
        return out  # no overlap
    sx, sy = full.width / shape[1], full.height / shape[0]
    c0 = min(shape[1] - 1, max(0, round((inside.col_off - full.col_off) / sx)))
    r0 = min(shape[0] - 1, max(0, round((inside.row_off - full.row_off) / sy)))
    cw = max(1, min(shape[1] - c0, round(inside.width / sx)))
    rh = max(1, min(shape[0] - r0, round(inside.height / sy)))
    out[r0 : r0 + rh, c0 : c0 + cw] = src.read(1, window=inside, out_shape=(rh, cw), resampling=Resampling.nearest)
    return out


def sample_scene(
    item: pystac.Item, keys: Mapping[str, str], bands: Sequence[str], grid: Grid, *, max_px: int = SAMPLE_PX
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Reflectance of ``bands`` (scaled by the item's metadata, :func:`band_scaling`; NaN for nodata) and SCL of
    one item over ``grid``'s bounds, decimated to at most ``max_px`` per side.

    The bounds are taken to the SCL file's CRS and every asset is read over them at the same output shape,
    so the arrays line up pixel for pixel; reading at a fraction of the native resolution uses the files'
    overviews (COG overviews, JPEG2000 resolution levels), a few small reads per asset.
    """
    with rasterio.open(_href(item, keys[SCL])) as src:
        bounds = transform_bounds(grid.crs, src.crs, *grid.bounds, densify_pts=21)
        res = abs(src.transform.a)
        w, h = (bounds[2] - bounds[0]) / res, (bounds[3] - bounds[1]) / res
        factor = max(1.0, max(w, h) / max_px)
        shape = (max(1, math.ceil(h / factor)), max(1, math.ceil(w / factor)))
        scl = _read_decimated(src, bounds, shape)
    out: dict[str, np.ndarray] = {}
    for name in bands:
        scaling = band_scaling(item, keys[name])
        with rasterio.open(_href(item, keys[name])) as src:
            dn = _read_decimated(src, bounds, shape).astype(np.float64)
        refl = dn * scaling.scale + scaling.offset
        if scaling.nodata is not None:
            refl[dn == float(scaling.nodata)] = np.nan
        out[name] = refl
    return out, scl


def load_items(
    items: Sequence[pystac.Item],
    bands: Sequence[str],
    grid: Grid,
    *,
    chunk_px: int,
    keys: dict[str, str],
    offset_shifts: Mapping[str, float] | None = None,
) -> xr.Dataset:
    """Items that share asset keys as masked float32 reflectance on ``grid`` (lazy), one time step each, plus SCL.

    ``keys`` maps band names (and ``scl``) to the items' asset keys, as :func:`resolve_assets` returns
    them. One ``odc.stac.load`` for all the items (``groupby="id"`` keeps them apart, in the given
    order), chunked over the whole time axis: each task reads one band of every item for one spatial
    chunk (:func:`read_chunk_px`, at least ``chunk_px``), so the per-pixel median needs no rechunking
    and no transfer between Dask workers, and the graph is built once instead of once per item.
    Scale, offset and nodata are applied per time step (they can differ between items of one search,
    :func:`~mrv.imagery.radiometry.band_scaling`); ``offset_shifts`` (reflectance, by item id) are added to
    the offsets of the items the data check corrected.
    20 m bands are resampled bilinearly to the grid, SCL by nearest neighbour (class codes).
    """
    shifts = offset_shifts or {}
    read_px = read_chunk_px(len(items), chunk_px, grid)
    ds = odc.stac.load(
        list(items),
        bands=list(keys.values()),
        geobox=grid.geobox(),
        groupby="id",
        chunks={"time": -1, "x": read_px, "y": read_px},
        resampling={keys[SCL]: "nearest", "*": "bilinear"},
    )
    ds = ds.rename({key: name for name, key in keys.items() if key != name})
    scl = ds[SCL]
    if scl.dtype.kind == "f":  # no raster:bands data_type (Planetary Computer): odc-stac loads float, NaN for nodata
        scl = scl.fillna(0).astype("uint8")  # back to the class codes, 0 = "no data" (Sen2Cor SCL)
    keep = clear_mask(scl)
    out = {}
    for name in bands:
        scalings = [band_scaling(item, keys[name]) for item in items]
        scale = xr.DataArray(np.array([s.scale for s in scalings], dtype="float32"), dims="time")
        offsets = [s.offset + shifts.get(item.id, 0.0) for s, item in zip(scalings, items, strict=True)]
        offset = xr.DataArray(np.array(offsets, dtype="float32"), dims="time")
        dn = ds[name].astype("float32")  # exact for the uint16 / uint8 DN of L2A assets
        valid = keep
        if any(s.nodata is not None for s in scalings):
            has_nodata = xr.DataArray(np.array([s.nodata is not None for s in scalings]), dims="time")
            nodata = xr.DataArray(
                np.array([np.nan if s.nodata is None else s.nodata for s in scalings], dtype="float32"), dims="time"
            )
            valid = keep & ~(has_nodata & (dn == nodata))
        refl = (dn * scale + offset).where(valid)
        rules = ", ".join(sorted({s.rule for s in scalings} | ({"data-check"} if shifts else set())))
        refl.attrs = {"units": "1", "long_name": f"surface reflectance {name}", "scaling_rule": rules}
        out[name] = refl
    result = xr.Dataset(out, attrs={"crs": grid.crs})
    result["scl"] = scl
    return result


def load_item(
    item: pystac.Item, bands: Sequence[str], grid: Grid, *, chunk_px: int, keys: dict[str, str] | None = None
) -> xr.Dataset:
    """One item as masked float32 reflectance on ``grid`` (lazy, Dask-backed), plus its SCL."""
    return load_items([item], bands, grid, chunk_px=chunk_px, keys=keys or resolve_assets(item, [*bands, SCL]))


def _probe_and_sample(
    item: pystac.Item, keys: Mapping[str, str], bands: Sequence[str], grid: Grid, check: bool
) -> tuple[str | None, SceneStats | None]:
    """Why the item is unreadable (or None), and its data-check statistics when ``check``."""
    reason = unreadable_reason(item, list(keys.values()))
    if reason is not None or not check:
        return reason, None
    try:
        refl, scl = sample_scene(item, keys, bands, grid)
    except (rasterio.errors.RasterioError, OSError) as exc:
        return f"sampling its assets for the data check failed: {exc}", None
    return None, scene_stats(item.id, refl, scl)


def load_reflectance(
    items: Sequence[pystac.Item],
    bands: Sequence[str],
    grid: Grid,
    *,
    chunk_px: int,
    probe_threads: int = 8,
    check: bool = True,
    check_config: CheckConfig | None = None,
    check_grid: Grid | None = None,
) -> LoadedScenes:
    """Stack every readable item along ``time`` (in the given order); unreadable items are dropped with a reason.

    Every asset is probed first (:func:`probe_asset`, ``probe_threads`` at a time, which matters for
    remote files): an item with a missing, truncated or corrupt asset is left out and listed in
    ``dropped`` instead of failing, or silently blanking part of, the composite later. With ``check``
    each readable item's sample (:func:`sample_scene`, over ``check_grid``, default ``grid``: the whole region
    when ``grid`` is one of its tiles, so every tile reaches the same verdict) is judged against the other dates
    (:func:`mrv.imagery.scene_check.judge`): corrected items are listed in ``corrected``, items the data
    contradict beyond repair in ``dropped``, suspicious ones kept as they are in ``flagged``. Items whose
    bands live under the same asset keys are loaded together (:func:`load_items`).
    """
    keyed = [(item, resolve_assets(item, [*bands, SCL])) for item in items]
    check_s3_settings([_href(item, key) for item, keys in keyed for key in keys.values()])
    with ThreadPoolExecutor(max_workers=max(1, probe_threads)) as pool:
        probed = list(pool.map(lambda ik: _probe_and_sample(ik[0], ik[1], bands, check_grid or grid, check), keyed))
    stats = [st for reason, st in probed if reason is None and st is not None]
    verdicts = {v.item_id: v for v in judge(stats, check_config)}
    used: list[str] = []
    dropped: list[tuple[str, str]] = []
    corrected: list[tuple[str, str]] = []
    flagged: list[tuple[str, str]] = []
    shifts: dict[str, float] = {}
    groups: dict[tuple[tuple[str, str], ...], list[pystac.Item]] = {}
    for (item, keys), (reason, _) in zip(keyed, probed, strict=True):
        verdict = verdicts.get(item.id)
        if reason is None and verdict is not None and verdict.action == "drop":
            reason = f"data check: {verdict.reason}"
        if reason is not None:
            log.warning("dropping item %s: %s", item.id, reason)
            dropped.append((item.id, reason))
            continue
        if verdict is not None and verdict.action == "correct":
            log.warning("correcting item %s: %s", item.id, verdict.reason)
            corrected.append((item.id, verdict.reason))
            shifts[item.id] = verdict.offset_shift
        elif verdict is not None and verdict.reason:
            log.warning("item %s kept, but: %s", item.id, verdict.reason)
            flagged.append((item.id, verdict.reason))
        groups.setdefault(tuple(keys.items()), []).append(item)
        used.append(item.id)
    if not used:
        raise NoImageryFound(
            f"None of the {len(items)} items could be read ({dropped}). Check the asset files or the provider."
        )
    if dropped:
        log.warning("dropped %d of %d items as unreadable", len(dropped), len(items))
    parts = [
        load_items(group, bands, grid, chunk_px=chunk_px, keys=dict(k), offset_shifts=shifts)
        for k, group in groups.items()
    ]
    loaded_ids = [item.id for group in groups.values() for item in group]
    ds = xr.concat(parts, dim="time") if len(parts) > 1 else parts[0]
    if loaded_ids != used:  # several asset-key groups: back to the search order
        position = {item_id: i for i, item_id in enumerate(loaded_ids)}
        ds = ds.isel(time=[position[item_id] for item_id in used])
        ds = ds.chunk({"time": -1})
    ds = ds.assign_coords(item_id=("time", used))
    return LoadedScenes(
        reflectance=ds,
        items=tuple(used),
        dropped=tuple(dropped),
        corrected=tuple(corrected),
        flagged=tuple(flagged),
    )
