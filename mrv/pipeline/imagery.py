"""Imagery stage: composite each round tile by tile, then mosaic the round's covariate stack.

Two cached steps per round, each declared beside its function:

* ``prepare-imagery[<round>/<tile>]`` (:func:`tile_spec`, :func:`prepare_imagery_tile`): reads the region,
  the imagery section, the round's dates and the tile; inputs are the field polygons, a local STAC
  catalog (its whole directory: item JSON and COGs) and a local DEM.
* ``mosaic-imagery[<round>]`` (:func:`mosaic_spec`, :func:`mosaic_imagery`): reads the region and the
  tile size; inputs are the field polygons and every tile step of the round.
"""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import rasterio
import xarray as xr
from rasterio.windows import Window

from mrv.config import RoundConfig, RunConfig
from mrv.errors import ImageryError
from mrv.fields import Field, field_index_raster, fields_bounds, read_fields
from mrv.fsio import write_json
from mrv.grid import Grid, Tile, tiles
from mrv.heap import limit_heap_growth, release_free_heap
from mrv.imagery.composite import bare_soil_composite, covariate_stack
from mrv.imagery.dem import dem_hrefs, terrain_covariates
from mrv.imagery.guards import check_aoi_size
from mrv.imagery.provenance import items_as_fetched
from mrv.imagery.source import SearchRequest
from mrv.imagery.sources import source_for
from mrv.modeling.features import NORMALISATION, ExactQuartiles, center_scale
from mrv.pipeline.cache import StepSpec, declare, run_cached
from mrv.pipeline.layout import RunLayout, StepPlace
from mrv.raster import IO_CACHE_BYTES, mosaic_to_cog, read_raster, read_raster_lazy, write_cog_blocks

__all__ = [
    "FieldMask",
    "covariate_norm_stats",
    "normalisation_stats",
    "imagery_tiles",
    "mosaic_imagery",
    "mosaic_spec",
    "prepare_imagery_tile",
    "run_mosaic",
    "run_round",
    "run_tile",
    "project_grid",
    "read_covariates",
    "tile_spec",
]

#: What the tile step reads: the whole region and imagery sections, the round's dates, the tile.
TILE_READS = ("cfg.region", "cfg.imagery", "round.name", "round.start", "round.end", "tile")
#: What the mosaic step reads besides its tiles.
MOSAIC_READS = ("cfg.region", "cfg.imagery.tile_px", "round.name", "round.start", "round.end")
TILE_OUTPUTS = ("tile.tif", "tile.json")
MOSAIC_OUTPUTS = ("covariates.tif", "imagery.json", "covariate_norm.json")


def tile_spec(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout, tile: Tile) -> StepSpec:
    files = []
    if cfg.imagery.source == "local" and cfg.imagery.catalog is not None:
        files.append(cfg.imagery.catalog.parent)  # the whole static catalog: JSON and COGs
    live = () if cfg.imagery.source == "local" else ("items.json",)
    return declare(
        f"prepare-imagery[{rnd.name}/{tile.name}]", StepPlace("tile", rnd.name, tile.name), layout=layout,
        roots={"cfg": cfg, "round": rnd, "tile": tile}, reads=TILE_READS, files=files, outputs=(*TILE_OUTPUTS, *live),
    )  # fmt: skip


def mosaic_spec(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout, tile_set: Sequence[Tile]) -> StepSpec:
    return declare(
        f"mosaic-imagery[{rnd.name}]", StepPlace("imagery", rnd.name), layout=layout,
        roots={"cfg": cfg, "round": rnd}, reads=MOSAIC_READS,
        upstream=[StepPlace("tile", rnd.name, t.name) for t in tile_set], outputs=MOSAIC_OUTPUTS,
    )  # fmt: skip


def project_grid(cfg: RunConfig, fields: tuple[Field, ...] | None = None) -> Grid:
    """The grid covering the region's fields (read from the config unless given)."""
    fields = fields or read_fields(cfg.region.fields, crs=cfg.region.crs)
    return Grid.covering(
        fields_bounds(fields), crs=cfg.region.crs, resolution_m=cfg.region.resolution_m, buffer_m=cfg.region.buffer_m
    )


def imagery_tiles(cfg: RunConfig, grid: Grid | None = None) -> tuple[Tile, ...]:
    """The tiles (``imagery.tile_px`` square) the region's imagery is composited in."""
    return tiles(grid or project_grid(cfg), cfg.imagery.tile_px)


def prepare_imagery_tile(
    cfg: RunConfig, rnd: RoundConfig, layout: RunLayout, tile: Tile, *, grid: Grid | None = None
) -> Path:
    """Search, load, mask and composite one round's imagery on one tile into a covariate GeoTIFF.

    Writes ``layout.imagery_tile(round, tile)`` (covariates + ``n_bare``) and a JSON summary beside it
    (items used, items dropped with the reason). With ``imagery.dem`` the stack also gets the terrain
    covariates of :mod:`mrv.imagery.dem`, computed with a margin around the tile so that slope and
    TPI do not depend on the tiling. The composite is per pixel, so tiles share nothing else.
    """
    limit_heap_growth()  # tile after tile in one process: freed chunks go back to the OS (mrv.heap)
    grid = grid or project_grid(cfg)
    check_aoi_size(grid, max_km2=cfg.imagery.max_aoi_km2, fields=str(cfg.region.fields))
    tile_grid = tile.grid(grid)
    source = source_for(cfg.imagery)  # the provider profile was parsed with the config
    request = SearchRequest(
        bbox_wgs84=tile_grid.bbox_wgs84(),
        start=rnd.start,
        end=rnd.end,
        max_cloud_pct=cfg.imagery.max_cloud_pct,
        collection=cfg.imagery.collection,
    )
    items = source.search(request)
    if cfg.imagery.source != "local":  # a local catalog is an input of the step already
        write_json(layout.imagery_items(rnd.name, tile.name), items_as_fetched(items), allow_nan=True)
    # The data check samples the whole region, so every tile judges a scene alike (mrv.imagery.scene_check).
    loaded = source.load(items, cfg.imagery.bands, tile_grid, chunk_px=cfg.imagery.chunk_px, check_grid=grid)
    composite = bare_soil_composite(loaded.reflectance, cfg.imagery.bands, cfg.imagery.bare_soil)
    stack = covariate_stack(composite, cfg.imagery.bands)
    names = [str(c) for c in stack["covariate"].to_numpy()]
    layers = [stack.data]
    terrain_sources: list[str] = []
    if cfg.imagery.dem is not None:
        terrain = terrain_covariates(
            dem_hrefs(cfg.imagery.dem, tile_grid, source), tile_grid, tpi_radius_m=cfg.imagery.dem.tpi_radius_m
        )
        layers.append(da.from_array(terrain.values, chunks=((1,) * len(terrain.names), *stack.data.chunks[1:])))
        names = [*names, *terrain.names]
        terrain_sources = list(terrain.sources)
    layers.append(composite["n_bare"].data[None].astype("float32"))
    # One band axis chunk: each block of the tile is written whole, as soon as it is computed.
    bands = da.concatenate(layers).astype("float32").rechunk({0: -1})
    path = layout.imagery_tile(rnd.name, tile.name)
    try:
        # Local threads even on a Dask worker: the tile is the unit of distribution.
        with dask.config.set(scheduler="threads"):
            write_cog_blocks(path, bands, tile_grid, band_names=[*names, "n_bare"])  # one pass over the imagery
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise ImageryError(
            f"Reading the imagery of round {rnd.name} ({rnd.start} to {rnd.end}) from {source.name} failed while "
            f"compositing tile {tile.name}: {exc}. An asset passed the up-front probe but is damaged inside; remove "
            "or re-download that item (its path is in the message), or narrow the dates to leave it out."
        ) from exc
    write_json(
        layout.imagery_tile_summary(rnd.name, tile.name),
        {
            "tile": tile.name,
            "source": source.name,
            "items": list(loaded.items),
            "dropped": [{"item": i, "reason": r} for i, r in loaded.dropped],
            # the per-scene data check (mrv.imagery.scene_check): offsets corrected, suspicious scenes kept
            "corrected": [{"item": i, "reason": r} for i, r in loaded.corrected],
            "flagged": [{"item": i, "reason": r} for i, r in loaded.flagged],
            "covariates": names,
            "dem": terrain_sources,
            "computed_by": {"host": socket.gethostname(), "pid": os.getpid()},
        },
        allow_nan=True,
    )
    return path


def mosaic_imagery(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout) -> Path:
    """Mosaic the round's tiles into its covariate COG and summarise them in ``imagery.json``.

    Memory holds one tile at a time; the median of bare observations over the field pixels is
    computed from per-tile counts (``n_bare`` is an integer count).
    """
    limit_heap_growth()
    fields = read_fields(cfg.region.fields, crs=cfg.region.crs)
    grid = project_grid(cfg, fields)
    tile_set = imagery_tiles(cfg, grid)
    parts = [(layout.imagery_tile(rnd.name, t.name), t) for t in tile_set]
    summaries = [
        json.loads(layout.imagery_tile_summary(rnd.name, t.name).read_text(encoding="utf-8")) for t in tile_set
    ]
    path = mosaic_to_cog(
        layout.covariates(rnd.name),
        parts,
        grid,
        tags={
            "round": rnd.name,
            "units": "reflectance (1) and indices (1); elevation and tpi m, slope degrees; n_bare count",
        },
    )
    on_fields = FieldMask(fields, grid)  # per tile, kept packed: tiles share the region's pixel lattice
    counts: Counter[int] = Counter()  # n_bare value -> field pixels
    for part, tile in parts:
        with rasterio.Env(GDAL_CACHEMAX=IO_CACHE_BYTES), rasterio.open(part) as src:
            on_tile = on_fields.window(tile)
            values, n = np.unique(np.nan_to_num(src.read(src.count)[on_tile], nan=0.0), return_counts=True)
        counts.update(dict(zip(values.astype(int).tolist(), n.tolist(), strict=True)))
    n_on = sum(counts.values())
    write_json(layout.covariate_norm(rnd.name), normalisation_stats(path, on_fields, windows=tile_set))
    dropped = list({d["item"]: d for s in summaries for d in s["dropped"]}.values())  # an item may span tiles
    checked = {key: _by_item(summaries, key) for key in ("corrected", "flagged")}  # judged per tile
    write_json(
        layout.imagery_summary(rnd.name),
        {
            "source": summaries[0]["source"],
            "items": list(dict.fromkeys(i for s in summaries for i in s["items"])),
            "dropped": dropped,
            "n_dropped": len(dropped),
            "corrected": checked["corrected"],
            "n_corrected": len(checked["corrected"]),
            "flagged": checked["flagged"],
            "covariates": summaries[0]["covariates"],
            "dem": list(dict.fromkeys(d for s in summaries for d in s["dem"])),
            "tiles": len(parts),
            "tile_px": cfg.imagery.tile_px,
            "bare_observations_median": median_of_counts(counts),
            "fields_without_bare_soil_pct": float(100 * counts[0] / n_on) if n_on else float("nan"),
        },
        allow_nan=True,
    )
    return path


class FieldMask:
    """The pixels of ``grid`` whose centre lies in a field (as ``field_index_raster(fields, grid) >= 0``), window by window.

    Each window is rasterized on its own grid (:func:`mrv.fields.field_index_raster` of the window, pixel
    centres) the first time it is asked for and kept bit-packed (1 bit a
    pixel: 12.5 MB for a 100 Mpx region instead of 400 MB of int32), so no region-sized array is built.
    Tiles start at whole pixels of the grid, so a window's transform is the grid's shifted by whole pixels
    and the window holds the same pixels as the same slice of the whole-grid raster.
    """

    def __init__(self, fields: Sequence[Field], grid: Grid) -> None:
        self.fields, self.grid = tuple(fields), grid
        self._packed: dict[tuple[int, int, int, int], np.ndarray] = {}

    def window(self, tile: Tile) -> np.ndarray:
        """Bool ``(tile.height, tile.width)``: True on field pixels."""
        key = (tile.row_off, tile.col_off, tile.height, tile.width)
        if key not in self._packed:  # the fields reaching into the window only (mrv.fields culls the others)
            self._packed[key] = np.packbits(field_index_raster(self.fields, tile.grid(self.grid)) >= 0)
        return np.unpackbits(self._packed[key], count=tile.height * tile.width).reshape(tile.height, tile.width) == 1


def normalisation_stats(
    covariates: Path, on_fields: np.ndarray | FieldMask, *, windows: Sequence[Tile] | None = None
) -> dict[str, Any]:
    """Per-covariate (median, IQR) of a composite over the field pixels (:func:`mrv.modeling.features.round_normalisation`).

    ``on_fields`` is a whole-grid bool mask or a :class:`FieldMask`; the composite is read window by window
    (``windows``, default the grid as :func:`mrv.grid.tiles` cuts it into :data:`DEFAULT_WINDOW_PX` squares),
    in strips of :data:`STRIP_PX` rows of every band, twice, and the percentiles come from
    :class:`mrv.modeling.features.ExactQuartiles`: the same numbers, bit for bit, as ``numpy.percentile``
    over every field pixel of the band, with memory that holds one strip whatever the region's size.
    """
    with rasterio.Env(GDAL_CACHEMAX=IO_CACHE_BYTES), rasterio.open(covariates) as src:  # each block is read once a pass
        b = src.bounds
        grid = Grid(crs=src.crs.to_string(), bounds=(b.left, b.bottom, b.right, b.top), resolution_m=src.res[0])
        names = {band: desc or f"band_{band}" for band, desc in enumerate(src.descriptions, start=1)}  # as read_raster
        bands = [band for band, name in names.items() if name != "n_bare"]
        quartiles = {band: ExactQuartiles() for band in bands}
        tile_set = tuple(windows) if windows is not None else tiles(grid, DEFAULT_WINDOW_PX)
        for step in ("count", "refine"):  # radix selection: two passes over the same pixels
            for tile in tile_set:
                on_tile = on_fields.window(tile) if isinstance(on_fields, FieldMask) else on_fields[_slices(tile)]
                for row0 in range(0, tile.height, STRIP_PX):
                    on_strip = on_tile[row0 : row0 + STRIP_PX]
                    if not on_strip.any():
                        continue
                    window = Window(tile.col_off, tile.row_off + row0, tile.width, on_strip.shape[0])  # type: ignore[no-untyped-call]
                    strip = src.read(bands, window=window, masked=True)  # every band at once: each block decoded once
                    for i, band in enumerate(bands):
                        getattr(quartiles[band], step)(strip[i].astype("float32").filled(np.nan)[on_strip])
    stats = {names[band]: center_scale(q.quartiles()) for band, q in quartiles.items()}
    return {"method": NORMALISATION, "stats": {k: list(v) for k, v in stats.items()}}


#: Window side (px) :func:`normalisation_stats` cuts a composite into when not given the tiles.
DEFAULT_WINDOW_PX = 2048
#: Rows of a window :func:`normalisation_stats` reads at once (every band): one COG block row.
STRIP_PX = 256


def _slices(tile: Tile) -> tuple[slice, slice]:
    return slice(tile.row_off, tile.row_off + tile.height), slice(tile.col_off, tile.col_off + tile.width)


def covariate_norm_stats(layout: RunLayout, round_name: str) -> dict[str, tuple[float, float]]:
    """The round's normalisation statistics, as its mosaic step recorded them."""
    stored = json.loads(layout.covariate_norm(round_name).read_text(encoding="utf-8"))
    return {k: (float(v[0]), float(v[1])) for k, v in stored["stats"].items()}


def _by_item(summaries: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Entries ``{"item", "reason"}`` of the tile summaries under ``key``, one per item, with the tiles they came from."""
    merged: dict[str, dict[str, Any]] = {}
    for summary in summaries:
        for entry in summary.get(key, []):  # tile summaries written before the data check have none
            merged.setdefault(entry["item"], {**entry, "tiles": []})["tiles"].append(summary["tile"])
    return list(merged.values())


def median_of_counts(counts: Mapping[int, int]) -> float:
    """The median (as :func:`numpy.median`) of a sample given as value -> frequency; NaN when empty."""
    values = sorted(v for v, n in counts.items() if n > 0)
    cum = np.cumsum([counts[v] for v in values])
    if not values:
        return float("nan")
    n = int(cum[-1])
    lo, hi = (values[int(np.searchsorted(cum, k, side="right"))] for k in ((n - 1) // 2, n // 2))
    return (lo + hi) / 2


def read_covariates(path: Path, *, chunk_px: int | None = None) -> tuple[xr.DataArray, Grid]:
    """The covariate stack of :func:`prepare_imagery` as ``(covariate, y, x)`` (without ``n_bare``).

    With ``chunk_px`` the stack is Dask-backed and read window by window, so memory does not grow
    with the region.
    """
    arr, grid, names = read_raster(path) if chunk_px is None else read_raster_lazy(path, chunk_px=chunk_px)
    keep = [i for i, n in enumerate(names) if n != "n_bare"]
    da = xr.DataArray(
        arr[keep],
        dims=("covariate", "y", "x"),
        coords={"covariate": [names[i] for i in keep], "y": grid.y_coords(), "x": grid.x_coords()},
    )
    return da, grid


def run_tile(
    cfg: RunConfig, rnd: RoundConfig, layout: RunLayout, tile: Tile, *, grid: Grid | None = None
) -> tuple[StepSpec, bool]:
    """The tile step through the cache; returns its spec and whether it ran."""
    spec = tile_spec(cfg, rnd, layout, tile)
    ran = run_cached(spec, layout, lambda lay: prepare_imagery_tile(spec.view("cfg", cfg), spec.view("round", rnd), lay,
                                                                    tile, grid=grid))  # fmt: skip
    release_free_heap()  # the next tile (or round) starts from the freed pages, not on top of them
    return spec, ran


def run_mosaic(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout) -> tuple[StepSpec, bool]:
    spec = mosaic_spec(cfg, rnd, layout, imagery_tiles(cfg))
    ran = run_cached(spec, layout, lambda lay: mosaic_imagery(spec.view("cfg", cfg), spec.view("round", rnd), lay))
    release_free_heap()
    return spec, ran


def run_round(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout) -> Path:
    """Every tile of one round, then their mosaic, through the cache (the flow runs the same steps as tasks)."""
    grid = project_grid(cfg)
    for tile in imagery_tiles(cfg, grid):
        run_tile(cfg, rnd, layout, tile, grid=grid)
    run_mosaic(cfg, rnd, layout)
    return layout.covariates(rnd.name)
