"""GeoTIFF / COG reading and writing on the project grid (rasterio)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS

from mrv.grid import Grid


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.tif")
    profile = {
        "driver": "COG",
        "width": grid.width,
        "height": grid.height,
        "count": arr.shape[0],
        "dtype": "float32",
        "crs": CRS.from_user_input(grid.crs),
        "transform": grid.transform,
        "nodata": float("nan"),
        "compress": "deflate",
        "predictor": 3,
        "blocksize": 256,
    }
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(arr)
        if tags:
            dst.update_tags(**{k: str(v) for k, v in tags.items()})
        for i in range(arr.shape[0]):
            if band_names:
                dst.set_band_description(i + 1, band_names[i])
            if band_tags:
                dst.update_tags(i + 1, **{k: str(v) for k, v in band_tags[i].items()})
    tmp.replace(path)  # atomic: a crashed run never leaves a half-written map under the final name
    return path


def read_raster(path: Path) -> tuple[np.ndarray, Grid, list[str]]:
    """A float32 ``(band, y, x)`` array (nodata as NaN), its grid and the band descriptions."""
    with rasterio.open(path) as src:
        arr = src.read(masked=True).astype("float32").filled(np.nan)
        b = src.bounds
        grid = Grid(crs=src.crs.to_string(), bounds=(b.left, b.bottom, b.right, b.top), resolution_m=src.res[0])
        names = [d or f"band_{i + 1}" for i, d in enumerate(src.descriptions)]
    return arr, grid, names
