"""Find an item's assets by band meaning, not by provider-specific asset keys.

Earth Search names the red band asset ``red``, Planetary Computer ``B04``, Copernicus Data Space
``B04_10m`` (also ``B04_20m`` and ``B04_60m``); STAC 1.0 items carry ``eo:bands`` with ``common_name: red`` /
``name: B04``, STAC 1.1 items (Copernicus Data Space) the unified ``bands`` array with ``eo:common_name``.
Copernicus Data Space's ``SCL_20m`` has no band entry at all, so asset keys count too, without their
``_<n>m`` resolution suffix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pystac

from mrv.errors import ImageryError

__all__ = ["SCL", "asset_resolution_m", "resolve_assets"]

#: Sentinel-2 MSI band ids by common name (ESA S2 MSI User Guide).
S2_BAND_IDS: dict[str, str] = {
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "swir16": "B11",
    "swir22": "B12",
}
SCL = "scl"

_RESOLUTION_SUFFIX = re.compile(r"_(\d+)m$")
#: Media types of single-band rasters GDAL reads: GeoTIFF / COG, and JPEG2000 (OpenJPEG driver, bundled in
#: rasterio's wheels). GeoTIFF is preferred where an item has both (Earth Search v1's ``red`` / ``red-jp2``).
_TIFF, _JP2 = "tif", "jp2"


def _asset_band_names(key: str, asset: pystac.Asset) -> set[str]:
    names = {key.lower(), _RESOLUTION_SUFFIX.sub("", key.lower())}
    for band in asset.extra_fields.get("eo:bands", []) or []:
        for attr in ("common_name", "name"):
            if band.get(attr):
                names.add(str(band[attr]).lower())
    for band in asset.extra_fields.get("bands", []) or []:  # STAC 1.1 unified bands
        for attr in ("eo:common_name", "name"):
            if band.get(attr):
                names.add(str(band[attr]).lower())
    return names


def _media_kind(asset: pystac.Asset) -> str | None:
    """``tif``, ``jp2`` or None (not a raster GDAL is asked to read here) from the media type or the href."""
    media = (asset.media_type or "").lower()
    if media:
        return _TIFF if "tif" in media else _JP2 if "jp2" in media else None
    href = asset.href.lower().split("?")[0]
    return _TIFF if href.endswith((".tif", ".tiff")) else _JP2 if href.endswith(".jp2") else None


def asset_resolution_m(key: str, asset: pystac.Asset) -> float:
    """The asset's pixel size (m): ``gsd``, else ``proj:transform[0]``, else the ``_<n>m`` key suffix, else inf."""
    gsd = asset.extra_fields.get("gsd")
    if isinstance(gsd, int | float) and gsd > 0:
        return float(gsd)
    transform = asset.extra_fields.get("proj:transform")
    if isinstance(transform, list) and transform and isinstance(transform[0], int | float) and transform[0] > 0:
        return float(transform[0])
    suffix = _RESOLUTION_SUFFIX.search(key.lower())
    return float(suffix.group(1)) if suffix else float("inf")


def _single_band(asset: pystac.Asset) -> bool:
    fields = asset.extra_fields
    return len(fields.get("eo:bands", []) or []) <= 1 and len(fields.get("bands", []) or []) <= 1


def resolve_assets(item: pystac.Item, bands: Sequence[str]) -> dict[str, str]:
    """Map each wanted band (common name, or ``scl``) to the asset key that holds it in ``item``.

    Single-band data assets only: multi-band composites such as ``visual`` / ``TCI_10m`` are never chosen.
    Among the candidates, GeoTIFF beats JPEG2000, then the finest resolution wins (``B04_10m`` over
    ``B04_20m``, ``SCL_20m`` over ``SCL_60m``: the native resolution, not a resampled copy), then the
    shortest key (``B04`` over ``B04_20m``).
    """
    found: dict[str, str] = {}
    for want in bands:
        targets = {want.lower()}
        if want.lower() in S2_BAND_IDS:
            targets.add(S2_BAND_IDS[want.lower()].lower())
        candidates: list[tuple[int, float, int, str]] = []
        for key, asset in item.assets.items():
            if "data" not in (asset.roles or ["data"]) or not _single_band(asset):
                continue
            kind = _media_kind(asset)
            if kind is None:
                continue  # metadata, thumbnails
            if _asset_band_names(key, asset) & targets:
                candidates.append((0 if kind == _TIFF else 1, asset_resolution_m(key, asset), len(key), key))
        if not candidates:
            raise ImageryError(
                f"Item {item.id} has no asset for band '{want}' (assets: {sorted(item.assets)}). "
                "Check imagery.bands in the config or the provider profile."
            )
        found[want] = min(candidates)[3]
    return found
