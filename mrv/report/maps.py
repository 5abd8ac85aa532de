"""Render single-band GeoTIFF maps to small PNGs for the verifier report.

Uses :class:`matplotlib.figure.Figure` with the Agg canvas directly, so no pyplot global state
is touched and rendering is safe in worker threads.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from PIL import Image
from rasterio.crs import CRS as RioCRS
from rasterio.errors import RasterioError

from mrv.errors import MRVError
from mrv.fields import Field, read_fields

__all__ = ["png_data_uri", "render_map_png"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DPI = 100
#: Colour levels; a discrete ramp keeps the PNG small and is visually indistinguishable.
_N_COLOURS = 64


def _read_band(
    tif_path: Path,
) -> tuple[np.ma.MaskedArray, tuple[float, float, float, float], RioCRS | None]:
    try:
        with rasterio.open(tif_path) as src:
            if src.count != 1:
                raise MRVError(
                    f"{tif_path} has {src.count} bands but a map needs exactly one; write each "
                    "layer (mean, p05, p95, sd) to its own single-band GeoTIFF."
                )
            transform = src.transform
            if transform.b != 0 or transform.d != 0:
                raise MRVError(
                    f"{tif_path} has a rotated geotransform which cannot be drawn as a map; "
                    "warp it to a north-up grid (e.g. gdalwarp) first."
                )
            data = src.read(1, masked=True).astype("float64")
            bounds = src.bounds
            crs = src.crs
    except RasterioError as exc:
        raise MRVError(
            f"Cannot read GeoTIFF {tif_path} ({exc}); check that the file exists and is a valid "
            "GeoTIFF, or re-run the mapping step."
        ) from exc
    data = np.ma.masked_invalid(data)
    extent = (bounds.left, bounds.right, bounds.bottom, bounds.top)
    return data, extent, crs


def _axis_labels(crs: RioCRS | None) -> tuple[str, str]:
    if crs is None:
        return "x (unknown CRS)", "y (unknown CRS)"
    epsg = crs.to_epsg()
    name = f"EPSG:{epsg}" if epsg is not None else (crs.to_string() or "custom CRS")
    if crs.is_geographic:
        return f"Longitude (degrees, {name})", f"Latitude (degrees, {name})"
    unit = crs.linear_units or "m"
    if unit.lower() in {"metre", "meter", "metres", "meters", "m"}:
        unit = "m"
    return f"Easting ({unit}, {name})", f"Northing ({unit}, {name})"


def _field_outlines(fields: Sequence[Field]) -> list[np.ndarray]:
    """The boundary segments of ``fields`` (already in the raster's CRS) as ``(n, 2)`` coordinate arrays."""
    segments: list[np.ndarray] = []
    for f in fields:
        if f.geometry.is_empty:
            continue
        boundary = f.geometry.boundary
        parts = getattr(boundary, "geoms", [boundary])
        for part in parts:
            coords = np.asarray(part.coords)
            if len(coords) >= 2:
                segments.append(coords[:, :2])
    return segments


def _read_outlines(fields_path: Path, crs: RioCRS | None) -> tuple[Field, ...]:
    """The field polygons of ``fields_path`` (:func:`mrv.fields.read_fields`) in the raster's CRS."""
    if crs is None:
        raise MRVError(
            f"Cannot overlay {fields_path}: the raster has no CRS. Write the GeoTIFF with a "
            "CRS or render it without fields_geojson."
        )
    return read_fields(fields_path, crs=crs.to_wkt())


def render_map_png(
    tif_path: Path,
    out_png: Path,
    *,
    title: str,
    units: str,
    cmap: str = "YlOrBr",
    vmin: float | None = None,
    vmax: float | None = None,
    fields_geojson: Path | None = None,
    fields: Sequence[Field] | None = None,
) -> Path:
    """Draw a single-band GeoTIFF (nodata/NaN masked) as a PNG map with a labelled colorbar.

    Axes are in the raster's CRS units with the CRS named in the axis labels. Field outlines are drawn on
    top: ``fields`` as already read (:func:`mrv.fields.read_fields`, in the raster's CRS), or read from
    the file ``fields_geojson`` (GeoJSON in lon/lat by RFC 7946, GeoPackage or Shapefile) and reprojected.
    Returns ``out_png``.
    """
    tif_path = Path(tif_path)
    out_png = Path(out_png)
    if cmap not in colormaps:
        raise MRVError(f"Unknown colormap {cmap!r}; use a matplotlib colormap name such as 'YlOrBr'.")
    data, extent, crs = _read_band(tif_path)
    if fields is None and fields_geojson is not None:
        fields = _read_outlines(Path(fields_geojson), crs)
    segments = _field_outlines(fields) if fields is not None else []

    has_data = bool(data.count())
    lo = vmin if vmin is not None else (float(data.min()) if has_data else 0.0)
    hi = vmax if vmax is not None else (float(data.max()) if has_data else 1.0)
    if not lo < hi:
        if vmin is not None and vmax is not None:
            raise MRVError(f"vmin ({vmin}) must be smaller than vmax ({vmax}); swap or widen them.")
        lo, hi = lo - 0.5, hi + 0.5

    colour_map = colormaps[cmap].resampled(_N_COLOURS).with_extremes(bad=(0.0, 0.0, 0.0, 0.0))

    fig = Figure(figsize=(6.0, 5.0), dpi=_DPI)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(
        data,
        extent=extent,
        origin="upper",
        cmap=colour_map,
        vmin=lo,
        vmax=hi,
        interpolation="nearest",
    )
    if segments:
        ax.add_collection(LineCollection(segments, colors="black", linewidths=0.6))
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
    if not has_data:
        ax.text(
            0.5,
            0.5,
            "no valid pixels",
            transform=ax.transAxes,
            ha="center",
            va="center",
        )
    colorbar = fig.colorbar(image, ax=ax, shrink=0.85)
    colorbar.set_label(units)
    xlabel, ylabel = _axis_labels(crs)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.ticklabel_format(style="plain", useOffset=False)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()

    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    # An adaptive 256-colour palette keeps even noisy maps well under 300 kB without visible
    # loss; the map itself only uses _N_COLOURS colours.
    paletted = Image.fromarray(np.ascontiguousarray(rgb)).quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    paletted.save(out_png, format="PNG", optimize=True)
    return out_png


def png_data_uri(path: Path) -> str:
    """``data:image/png;base64,...`` URI of a PNG file, for self-contained HTML."""
    try:
        payload = Path(path).read_bytes()
    except OSError as exc:
        raise MRVError(f"Cannot read image {path} ({exc}); render the map before the report.") from exc
    if not payload.startswith(_PNG_SIGNATURE):
        raise MRVError(f"{path} is not a PNG file; render maps with render_map_png (PNG output).")
    return "data:image/png;base64," + base64.b64encode(payload).decode("ascii")
