"""Find an item's assets by band meaning, not by provider-specific asset keys.

Earth Search names the red band asset ``red``, Planetary Computer ``B04``, Copernicus Data Space
``B04_10m``; all carry ``eo:bands`` with ``common_name: red`` / ``name: B04``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pystac

from mrv.errors import ImageryError

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


def _asset_band_names(key: str, asset: pystac.Asset) -> set[str]:
    names = {key.lower()}
    for band in asset.extra_fields.get("eo:bands", []) or []:
        for attr in ("common_name", "name"):
            if band.get(attr):
                names.add(str(band[attr]).lower())
    for band in asset.extra_fields.get("bands", []) or []:  # STAC 1.1 unified bands
        for attr in ("eo:common_name", "name"):
            if band.get(attr):
                names.add(str(band[attr]).lower())
    return names


def resolve_assets(item: pystac.Item, bands: Sequence[str]) -> dict[str, str]:
    """Map each wanted band (common name, or ``scl``) to the asset key that holds it in ``item``.

    Single-band data assets only: multi-band composites such as ``visual`` are never chosen.
    """
    found: dict[str, str] = {}
    for want in bands:
        targets = {want.lower()}
        if want.lower() in S2_BAND_IDS:
            targets.add(S2_BAND_IDS[want.lower()].lower())
        candidates = []
        for key, asset in item.assets.items():
            if "data" not in (asset.roles or ["data"]) or len(asset.extra_fields.get("eo:bands", []) or []) > 1:
                continue
            if asset.media_type and "tif" not in asset.media_type.lower():
                continue  # JPEG2000 twins and metadata
            if _asset_band_names(key, asset) & targets:
                candidates.append(key)
        if not candidates:
            raise ImageryError(
                f"Item {item.id} has no asset for band '{want}' (assets: {sorted(item.assets)}). "
                "Check imagery.bands in the config or the provider profile."
            )
        # Prefer the shortest key (B04 over B04_20m) so the native resolution is used.
        found[want] = sorted(candidates, key=lambda k: (len(k), k))[0]
    return found
