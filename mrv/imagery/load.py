"""Load L2A items onto the project grid with odc-stac, as surface reflectance.

odc-stac keeps the stored uint16 DN and nodata and does not apply ``raster:bands`` scale/offset
(odc-stac issue #55), so the scaling is applied here per item (baselines differ between items of
one search). Each item is loaded as its own time step (``groupby="id"``) so that no two
differently scaled items are fused before scaling.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import odc.stac
import pystac
import rasterio
import xarray as xr

from mrv.errors import NoImageryFound
from mrv.grid import Grid
from mrv.imagery.bands import SCL, resolve_assets
from mrv.imagery.masking import clear_mask
from mrv.imagery.radiometry import band_scaling
from mrv.imagery.source import LoadedScenes

log = logging.getLogger(__name__)


def _unreadable(item: pystac.Item, keys: Sequence[str]) -> str | None:
    """A reason the item's assets cannot be opened, or None when all open."""
    for key in keys:
        href = item.assets[key].get_absolute_href() or item.assets[key].href
        try:
            with rasterio.open(href) as src:
                src.read(1, window=((0, 1), (0, 1)))
        except (rasterio.errors.RasterioIOError, OSError) as exc:
            return f"asset '{key}' unreadable: {exc}"
    return None


def load_item(
    item: pystac.Item, bands: Sequence[str], grid: Grid, *, chunk_px: int, keys: dict[str, str] | None = None
) -> xr.Dataset:
    """One item as masked float32 reflectance on ``grid`` (lazy, Dask-backed), plus its SCL.

    ``keys`` maps band names (and ``scl``) to asset keys, as :func:`resolve_assets` returns them.
    """
    keys = keys or resolve_assets(item, [*bands, SCL])
    ds = odc.stac.load(
        [item],
        bands=list(keys.values()),
        geobox=grid.geobox(),
        groupby="id",
        chunks={"x": chunk_px, "y": chunk_px},
        resampling={keys[SCL]: "nearest", "*": "bilinear"},
    )
    ds = ds.rename({key: name for name, key in keys.items() if key != name})
    scl = ds[SCL]
    keep = clear_mask(scl)
    out = {}
    for name in bands:
        s = band_scaling(item, keys[name])
        dn = ds[name]
        valid = keep if s.nodata is None else keep & (dn != s.nodata)
        refl = (dn.astype("float32") * np.float32(s.scale) + np.float32(s.offset)).where(valid)
        refl.attrs = {"units": "1", "long_name": f"surface reflectance {name}", "scaling_rule": s.rule}
        out[name] = refl
    result = xr.Dataset(out, attrs={"crs": grid.crs})
    result["scl"] = scl
    return result


def load_reflectance(items: Sequence[pystac.Item], bands: Sequence[str], grid: Grid, *, chunk_px: int) -> LoadedScenes:
    """Stack every readable item along ``time``; unreadable items are dropped with a logged reason."""
    parts: list[xr.Dataset] = []
    used: list[str] = []
    dropped: list[tuple[str, str]] = []
    for item in items:
        keys = resolve_assets(item, [*bands, SCL])
        reason = _unreadable(item, list(keys.values()))
        if reason is not None:
            log.warning("dropping item %s: %s", item.id, reason)
            dropped.append((item.id, reason))
            continue
        parts.append(load_item(item, bands, grid, chunk_px=chunk_px, keys=keys))
        used.append(item.id)
    if not parts:
        raise NoImageryFound(
            f"None of the {len(items)} items could be read ({dropped}). Check the asset files or the provider."
        )
    ds = xr.concat(parts, dim="time")
    ds = ds.assign_coords(item_id=("time", used))
    return LoadedScenes(reflectance=ds, items=tuple(used), dropped=tuple(dropped))
