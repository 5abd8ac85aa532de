"""Sentinel-2 L2A digital numbers to surface reflectance, per provider convention.

ESA's rule: since processing baseline 04.00 (25 January 2022) L2A products carry
``BOA_ADD_OFFSET = -1000`` DN, so reflectance = (DN + BOA_ADD_OFFSET) / BOA_QUANTIFICATION_VALUE with a
quantification value of 10000 (ESA, "Sentinel-2: New processing baseline 04.00"; S2 MPC L2A Product
Format Specification, ``General_Info/Product_Image_Characteristics``). Reprocessed archive scenes carry
05.xx baselines, so the rule is decided by the baseline, never by the acquisition date.

Providers deliver those DNs differently, and their metadata is not always true (see the rules in
:func:`band_scaling`, each with its source). The metadata is checked against the data itself by
:mod:`mrv.imagery.scene_check`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pystac

from mrv.errors import ImageryError

__all__ = [
    "BOA_OFFSET_REFLECTANCE",
    "RULE_HARMONIZED",
    "Scaling",
    "band_scaling",
    "baseline_at_least",
    "processing_baseline",
]

QUANTIFICATION = 10_000.0
BOA_ADD_OFFSET_DN = -1000.0
#: The BOA offset in reflectance units (-0.1): what a mislabelled scene is off by.
BOA_OFFSET_REFLECTANCE = BOA_ADD_OFFSET_DN / QUANTIFICATION

#: Item property of Earth Search v1 ``sentinel-2-l2a``: True when the COGs had the 1000 DN removed.
EARTHSEARCH_BOA_FLAG = "earthsearch:boa_offset_applied"

RULE_EARTHSEARCH_V1 = "earthsearch:boa_offset_applied"
RULE_RASTER_BANDS = "raster:bands"
RULE_RASTER_11 = "raster:scale/offset"
RULE_BASELINE = "processing-baseline"
RULE_HARMONIZED = "harmonized"
"""Sentinel Hub Process API with ``processing.harmonizeValues: true`` (values already reflectance)."""


@dataclass(frozen=True)
class Scaling:
    """reflectance = DN * scale + offset; ``nodata`` DN values become NaN."""

    scale: float
    offset: float
    nodata: float | None
    rule: str
    """Where the numbers came from: one of the ``RULE_*`` constants."""


def baseline_at_least(baseline: str | None, minimum: str) -> bool:
    """Numeric comparison of processing baselines (``"05.11" >= "04.00"``); False for None."""
    if baseline is None:
        return False
    major, _, minor = str(baseline).partition(".")
    want_major, _, want_minor = minimum.partition(".")
    return (int(major), int(minor or 0)) >= (int(want_major), int(want_minor or 0))


def processing_baseline(item: pystac.Item) -> str | None:
    """The item's processing baseline: ``s2:processing_baseline`` (STAC sentinel-2 extension) or, on STAC 1.1
    items such as Copernicus Data Space's, ``processing:version`` (processing extension v1.2)."""
    for key in ("s2:processing_baseline", "processing:version"):
        value = item.properties.get(key)
        if value:
            return str(value)
    return None


def _stated(asset: pystac.Asset) -> tuple[float | None, float | None, Any, str | None]:
    """Scale, offset, nodata and the field they came from, as the asset states them (None where absent).

    STAC 1.0 raster extension: ``raster:bands[0].scale/offset/nodata``. STAC 1.1 (raster extension v2,
    used by Copernicus Data Space): ``raster:scale`` / ``raster:offset`` / ``nodata`` on the asset, or
    on its single entry of the unified ``bands`` array.
    """
    fields = asset.extra_fields
    rb = (fields.get("raster:bands") or [{}])[0] or {}
    if "scale" in rb or "offset" in rb:
        return (
            _num(rb.get("scale")),
            _num(rb.get("offset")),
            rb.get("nodata", fields.get("nodata", 0)),
            RULE_RASTER_BANDS,
        )
    band = (fields.get("bands") or [{}])[0] or {}
    for src in (fields, band):
        if "raster:scale" in src or "raster:offset" in src:
            scale, offset = _num(src.get("raster:scale")), _num(src.get("raster:offset"))
            return scale, offset, src.get("nodata", fields.get("nodata", 0)), RULE_RASTER_11
    return None, None, rb.get("nodata", fields.get("nodata", band.get("nodata", 0))), None


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def band_scaling(item: pystac.Item, asset_key: str) -> Scaling:
    """Scale and offset for one reflectance asset of an L2A item, by the first rule that applies.

    1. **Earth Search v1** ``sentinel-2-l2a`` with ``earthsearch:boa_offset_applied: true``: the COGs already
       had the 1000 DN removed, but ``raster:bands`` still says ``offset: -0.1``; applying it would subtract
       0.1 twice, so the offset is 0 (Element84/earth-search#9 and #71; cirrus-geo/cirrus-earth-search#21 and
       #33). The flag is sometimes ``false`` on shifted data too (earth-search#66): only the data check can
       tell, see :mod:`mrv.imagery.scene_check`.
    2. **STAC 1.0** ``raster:bands`` scale/offset (Earth Search collection 1 ``sentinel-2-c1-l2a``: raw DNs with
       ``offset: -0.1`` for baselines >= 04.00, which is right; local catalogs written by :mod:`mrv.synthetic`).
    3. **STAC 1.1** ``raster:scale`` / ``raster:offset`` on the asset (Copernicus Data Space STAC: raw DNs of
       the SAFE JPEG2000 files, ``raster:offset: -0.1`` with ``processing:version`` >= 04.00).
    4. **Processing baseline** when no scaling is published (Planetary Computer: raw DNs, no offset in the
       metadata, microsoft/PlanetaryComputer#134): offset -0.1 for baselines >= 04.00, else 0.
    Otherwise the item is refused. Sentinel Hub needs none of this: its Process API is asked for harmonised
    reflectance (``harmonizeValues``, :data:`RULE_HARMONIZED`).
    """
    asset = item.assets[asset_key]
    scale, offset, nodata, rule = _stated(asset)
    if item.properties.get(EARTHSEARCH_BOA_FLAG) is True:
        return Scaling(scale if scale is not None else 1.0 / QUANTIFICATION, 0.0, nodata, RULE_EARTHSEARCH_V1)
    if rule is not None:
        return Scaling(scale if scale is not None else 1.0, offset or 0.0, nodata, rule)
    baseline = processing_baseline(item)
    if baseline is None:
        raise ImageryError(
            f"Item {item.id} has neither raster:bands scale/offset nor s2:processing_baseline, so its "
            "radiometric offset is unknown. Use a provider that publishes one of them."
        )
    offset_r = BOA_OFFSET_REFLECTANCE if baseline_at_least(baseline, "04.00") else 0.0
    return Scaling(1.0 / QUANTIFICATION, offset_r, nodata, RULE_BASELINE)
