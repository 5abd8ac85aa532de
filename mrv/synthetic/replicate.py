"""Scale a generated region up by tiling it: an ``n x m`` replica of a :func:`build_region` output on disk.

:func:`build_region` holds every acquisition of the whole region in memory (and took ~5 min for 4 Mpx on a
loaded 2-core machine), so regions of 25 or 100 Mpx are built here from a small base region instead:

* **Imagery.** Every STAC asset of every base item (10 m bands, 20 m bands, SCL) becomes one COG of
  ``copies_x`` x ``copies_y`` times the base size, pixel ``(r, c)`` of the replica being pixel
  ``(r mod h, c mod w)`` of the base (``h, w`` the base asset's shape): no flipping, so the mosaic is periodic
  with the base's period. It is written strip by strip (``strip_rows`` rows, a multiple of the 256 px block)
  into an uncompressed tiled GTiff staging file, then copied with GDAL's COG driver (deflate, predictor 2,
  256 px blocks, overviews ``AUTO`` with the base's resampling: ``average`` for reflectance, ``nearest`` for
  the classification), as :func:`mrv.synthetic.stac_writer.write_cog` writes the base. Memory is one strip of
  the replica (``strip_rows x copies_x * w`` values) plus GDAL's block cache (``gdal_cache_mb``), whatever
  the size; real Sentinel-2 L2A tiles are 10980 px square at 10 m, so a 100 Mpx replica is about one tile.
* **Items.** Each base item is re-written with the replica's footprint (``geometry``, ``bbox``,
  ``proj:centroid``) and each asset's ``proj:shape`` / ``proj:transform`` read back from the written COG;
  every other field is kept (ids, dates, ``eo:cloud_cover`` and the ``s2:*`` class percentages, which a
  periodic copy leaves unchanged; ``mgrs:*`` names the base's tile). ``file:checksum`` (SHA2-256 multihash)
  and ``file:size``, where an asset carries them, are recomputed. The collection's spatial extent is the
  replica's footprint. The replica shares the base's upper-left corner, so copy ``(0, 0)`` *is* the base.
* **Fields.** Every base field is repeated in every copy, shifted by ``(c * w * res, -r * h * res)`` metres
  in the base CRS. Copy ``(0, 0)`` keeps the base ids (``F001``), copy ``(r, c)`` gets ``F001_r01c02``; farm
  ids get the same suffix and names `` (r1 c2)``, so ids stay unique.
* **Samples.** The base's sample files are copied unchanged: every site lies in copy ``(0, 0)``, so a
  run's samples, model and accounting stages keep the base's sample count and only the pixel stages
  (imagery, maps, the Monte Carlo over field pixels) grow with the replica.
* **Truth** (optional, ``write_truth``): the true stock rasters tiled the same way (float32 tiled GTiff,
  deflate, predictor 3) and ``fields_truth.csv`` repeated under the new field ids.

Output layout under ``out_dir`` is :func:`~mrv.synthetic.build.build_region`'s (``stac/``, ``samples/``,
``fields.geojson``, ``truth/`` when written), plus ``replica.json`` (base directory, base spec, copies).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
import rasterio.shutil
import shapely
from numpy.typing import NDArray
from pyproj import Transformer
from rasterio.windows import Window
from shapely.geometry import mapping, shape
from shapely.geometry.polygon import orient

from mrv.errors import ConfigError
from mrv.synthetic.build import RegionPaths, prepare_output_dir, region_paths
from mrv.synthetic.spec import SceneSpec
from mrv.synthetic.stac_writer import footprint_wgs84
from mrv.textsafe import write_csv

__all__ = ["ReplicaSpec", "copy_suffix", "replicate_fields", "replicate_raster", "replicate_region"]

log = logging.getLogger(__name__)

_BLOCK_PX = 256
_MANAGED = ("stac", "samples", "truth", "fields.geojson", "replica.json")


@dataclass(frozen=True)
class ReplicaSpec:
    """How many copies of the base region, and the knobs of the windowed writer."""

    copies_x: int
    """Copies side by side, west to east (>= 1)."""
    copies_y: int
    """Copies one below the other, north to south (>= 1)."""
    write_truth: bool = False
    """Also tile the true stock rasters and ``fields_truth.csv`` (not needed by a run)."""
    strip_rows: int = 1024
    """Rows of the replica written at a time (a multiple of the 256 px block): memory is ``strip_rows`` x width."""
    gdal_cache_mb: int = 256
    """GDAL block cache while writing (``GDAL_CACHEMAX``, MB)."""

    def __post_init__(self) -> None:
        if self.copies_x < 1 or self.copies_y < 1:
            raise ConfigError(
                f"ReplicaSpec copies_x={self.copies_x}, copies_y={self.copies_y}: both must be >= 1 "
                "(1 x 1 is the base itself)."
            )
        if self.strip_rows < _BLOCK_PX or self.strip_rows % _BLOCK_PX:
            raise ConfigError(f"ReplicaSpec strip_rows={self.strip_rows} must be a positive multiple of {_BLOCK_PX}.")
        if self.gdal_cache_mb < 16:
            raise ConfigError(f"ReplicaSpec gdal_cache_mb={self.gdal_cache_mb} is too small; use at least 16 MB.")


def copy_suffix(row: int, col: int) -> str:
    """The id suffix of copy ``(row, col)``: empty for the base copy ``(0, 0)``, else ``_r01c02``."""
    return "" if row == col == 0 else f"_r{row:02d}c{col:02d}"


def _copies(replica: ReplicaSpec) -> Iterator[tuple[int, int]]:
    for row in range(replica.copies_y):
        for col in range(replica.copies_x):
            yield row, col


def _strips(base: NDArray[np.generic], replica: ReplicaSpec) -> Iterator[tuple[Window, NDArray[np.generic]]]:
    """Windows of ``strip_rows`` full rows of the replica and their pixels, ``replica[r, c] = base[r % h, c % w]``."""
    h, _ = base.shape
    wide = np.tile(base, (1, replica.copies_x))  # one row of copies: h x (copies_x * w)
    height = h * replica.copies_y
    for r0 in range(0, height, replica.strip_rows):
        r1 = min(r0 + replica.strip_rows, height)
        yield Window(0, r0, wide.shape[1], r1 - r0), wide[np.arange(r0, r1) % h]


def replicate_raster(
    src: Path, dst: Path, replica: ReplicaSpec, *, cog: bool = True, resampling: str = "average"
) -> None:
    """Write ``src`` (one band) tiled ``copies_x`` x ``copies_y`` times to ``dst``, strip by strip.

    ``cog=True``: an uncompressed tiled staging GTiff, then a COG (deflate, predictor 2, 256 px blocks,
    overviews ``AUTO`` resampled with ``resampling``). ``cog=False``: a tiled GTiff written directly (deflate,
    predictor 3 for floats, 2 for integers: how ``build_region`` writes truth rasters). Same CRS, origin, pixel
    size, dtype, nodata, band description and band tags as ``src``.
    """
    with rasterio.open(src) as s:
        base = s.read(1)
        profile = s.profile
        description = s.descriptions[0]
        tags = s.tags(1)
    h, w = base.shape
    out = {
        "driver": "GTiff", "width": w * replica.copies_x, "height": h * replica.copies_y, "count": 1,
        "dtype": profile["dtype"], "crs": profile["crs"], "transform": profile["transform"],
        "nodata": profile.get("nodata"), "tiled": True, "blockxsize": _BLOCK_PX, "blockysize": _BLOCK_PX,
        "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = dst.with_name(f".{dst.name}.staging.tif") if cog else dst
    if not cog:  # deflate with the predictor build_region uses: 3 (floating point) or 2 (integers)
        out.update(compress="deflate", predictor=3 if np.issubdtype(base.dtype, np.floating) else 2)
    with rasterio.open(staging, "w", **out) as d:
        for window, pixels in _strips(base, replica):
            d.write(pixels, 1, window=window)
        d.set_band_description(1, description or "")
        if tags:
            d.update_tags(1, **tags)
    if not cog:
        return
    try:
        rasterio.shutil.copy(
            staging, dst, driver="COG", compress="deflate", predictor=2, blocksize=_BLOCK_PX,
            overviews="AUTO", overview_resampling=resampling, BIGTIFF="IF_SAFER",
        )  # fmt: skip
    finally:
        staging.unlink(missing_ok=True)


def _multihash_sha256(path: Path) -> str:
    """``file:checksum`` of the STAC file extension: multihash of SHA2-256 (code 0x12, 32 bytes) in hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "1220" + digest.hexdigest()


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


def _replicate_asset(asset: dict[str, Any], src: Path, dst: Path, replica: ReplicaSpec) -> dict[str, Any]:
    """Write the replica of one asset file and return the asset with its ``proj:*`` (and ``file:*``) updated."""
    resampling = "average" if "reflectance" in asset.get("roles", []) else "nearest"
    replicate_raster(src, dst, replica, resampling=resampling)
    with rasterio.open(dst) as d:
        shape_ = [d.height, d.width]
        tr = [_num(v) for v in list(d.transform)[:6]]
    new = {**asset, "proj:shape": shape_, "proj:transform": tr}
    if "file:checksum" in asset:
        new["file:checksum"] = _multihash_sha256(dst)
    if "file:size" in asset:
        new["file:size"] = dst.stat().st_size
    return new


def _replica_grid_spec(base_spec: SceneSpec, replica: ReplicaSpec) -> SceneSpec:
    """The base spec with the replica's grid (used only for its bounds and footprint)."""
    return dataclasses.replace(
        base_spec, width_px=base_spec.width_px * replica.copies_x, height_px=base_spec.height_px * replica.copies_y
    )


def _replicate_item(src_json: Path, dst_json: Path, footprint: dict[str, Any], replica: ReplicaSpec) -> None:
    item = json.loads(src_json.read_text(encoding="utf-8"))
    geom = shape(footprint)
    item["geometry"] = footprint
    item["bbox"] = list(geom.bounds)
    if "proj:centroid" in item["properties"]:
        item["properties"]["proj:centroid"] = {"lat": round(geom.centroid.y, 5), "lon": round(geom.centroid.x, 5)}
    for key, asset in item["assets"].items():
        href = str(asset["href"])
        if "://" in href or Path(href).is_absolute():
            raise ConfigError(
                f"Asset {key!r} of {src_json} has href {href!r}; replicate_region copies self-contained catalogs "
                "(relative hrefs, as build_region writes) only."
            )
        item["assets"][key] = _replicate_asset(asset, src_json.parent / href, dst_json.parent / href, replica)
    dst_json.parent.mkdir(parents=True, exist_ok=True)
    dst_json.write_text(json.dumps(item, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _replicate_stac(base_stac: Path, out_stac: Path, footprint: dict[str, Any], replica: ReplicaSpec) -> Path:
    collection = json.loads((base_stac / "collection.json").read_text(encoding="utf-8"))
    collection["extent"]["spatial"]["bbox"] = [list(shape(footprint).bounds)]
    out_stac.mkdir(parents=True, exist_ok=True)
    for link in collection["links"]:
        if link["rel"] != "item":
            continue
        src_json = (base_stac / link["href"]).resolve()
        dst_json = out_stac / src_json.relative_to(base_stac.resolve())
        _replicate_item(src_json, dst_json, footprint, replica)
        log.info("replicated item %s", src_json.stem)
    (out_stac / "collection.json").write_text(json.dumps(collection, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return out_stac / "collection.json"


def _offset_feature(feature: dict[str, Any], dx_m: float, dy_m: float, suffix: str, crs: str) -> dict[str, Any]:
    """The feature shifted by (dx, dy) metres in ``crs``, its ids suffixed (GeoJSON stays lon/lat, CCW rings)."""
    to_xy = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)

    def move(lon_lat: NDArray[np.float64]) -> NDArray[np.float64]:
        px, py = to_xy.transform(lon_lat[:, 0], lon_lat[:, 1])
        lon, lat = to_ll.transform(np.asarray(px) + dx_m, np.asarray(py) + dy_m)
        return np.round(np.column_stack([lon, lat]), 7)

    props = dict(feature["properties"])
    props["field_id"] = f"{props['field_id']}{suffix}"
    if "farm_id" in props:
        props["farm_id"] = f"{props['farm_id']}{suffix}"
    if suffix and "name" in props:
        props["name"] = f"{props['name']} ({suffix[1:4]} {suffix[4:]})"
    geom = orient(shapely.transform(shape(feature["geometry"]), move), sign=1.0) if suffix else None
    return {
        **feature,
        "id": props["field_id"],
        "geometry": mapping(geom) if geom is not None else feature["geometry"],
        "properties": props,
    }


def replicate_fields(base_fields: Path, base_spec: SceneSpec, replica: ReplicaSpec) -> dict[str, Any]:
    """Every base field in every copy (see the module docstring), as an RFC 7946 FeatureCollection."""
    fc = json.loads(base_fields.read_text(encoding="utf-8"))
    step_x = base_spec.width_px * base_spec.resolution_m
    step_y = base_spec.height_px * base_spec.resolution_m
    features = [
        _offset_feature(f, col * step_x, -row * step_y, copy_suffix(row, col), base_spec.crs)
        for row, col in _copies(replica)
        for f in fc["features"]
    ]
    return {**fc, "features": features}


def _replicate_truth(base: RegionPaths, paths: RegionPaths, replica: ReplicaSpec) -> dict[str, Path]:
    for name, src in base.truth.items():
        replicate_raster(src, paths.truth[name], replica, cog=False)
    table = pd.read_csv(base.root / "truth" / "fields_truth.csv", dtype={"field_id": str, "round": str})
    copies = [table.assign(field_id=table["field_id"] + copy_suffix(r, c)) for r, c in _copies(replica)]
    write_csv(pd.concat(copies, ignore_index=True), paths.root / "truth" / "fields_truth.csv")
    return dict(paths.truth)


def _prepare(out_dir: Path, base_root: Path, overwrite: bool) -> None:
    if out_dir.resolve() == base_root.resolve():
        raise ConfigError(f"The replica directory {out_dir} is the base region's; write the replica elsewhere.")
    prepare_output_dir(out_dir, overwrite, _MANAGED)


def replicate_region(
    base_root: Path,
    base_spec: SceneSpec,
    out_dir: Path,
    replica: ReplicaSpec,
    *,
    overwrite: bool = False,
) -> RegionPaths:
    """Write the ``replica.copies_x`` x ``replica.copies_y`` replica of the region ``build_region(base_root,
    base_spec)`` wrote, into ``out_dir`` (see the module docstring for what is copied and how).

    Returns the replica's paths; ``truth`` is empty unless ``replica.write_truth``. Raises
    :class:`~mrv.errors.ConfigError` if ``out_dir`` is not empty and ``overwrite`` is false, or if the base
    catalog is missing (build the base first).
    """
    base_root, out_dir = Path(base_root), Path(out_dir)
    base = region_paths(base_root, base_spec)
    if not base.collection.is_file() or not base.fields.is_file():
        raise ConfigError(
            f"No generated region in {base_root} (expected {base.collection} and {base.fields}); "
            "run mrv.synthetic.build_region(base_root, base_spec) first."
        )
    _prepare(out_dir, base_root, overwrite)
    paths = region_paths(out_dir, base_spec)
    footprint = mapping(footprint_wgs84(_replica_grid_spec(base_spec, replica)))
    with rasterio.Env(GDAL_CACHEMAX=replica.gdal_cache_mb, GDAL_NUM_THREADS="ALL_CPUS"):
        collection = _replicate_stac(base.collection.parent, paths.collection.parent, footprint, replica)
        truth = _replicate_truth(base, paths, replica) if replica.write_truth else {}
    fields = replicate_fields(base.fields, base_spec, replica)
    paths.fields.write_text(json.dumps(fields, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    for src, dst in [*zip(base.lab_samples.values(), paths.lab_samples.values(), strict=True),
                     *zip(base.crowd_samples.values(), paths.crowd_samples.values(), strict=True)]:  # fmt: skip
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    meta = {"base": str(base_root.resolve()), "base_spec": dataclasses.asdict(base_spec),
            "replica": dataclasses.asdict(replica)}  # fmt: skip
    (out_dir / "replica.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    log.info("replicated %s %d x %d into %s", base_root, replica.copies_x, replica.copies_y, out_dir)
    return dataclasses.replace(paths, collection=collection, truth=truth)
