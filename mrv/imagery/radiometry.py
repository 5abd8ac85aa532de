"""Sentinel-2 L2A digital numbers to surface reflectance.

Since processing baseline 04.00 (25 January 2022) ESA adds ``BOA_ADD_OFFSET = -1000`` DN to L2A
products: reflectance = (DN + BOA_ADD_OFFSET) / BOA_QUANTIFICATION_VALUE with a quantification value
of 10000 (ESA, "Sentinel-2: New processing baseline 04.00", S2 MPC L2A Product Format
Specification). Reprocessed archive scenes carry 05.xx baselines, so the rule is decided by the
baseline, not the acquisition date.
"""

from __future__ import annotations

from dataclasses import dataclass

import pystac

from mrv.errors import ImageryError

QUANTIFICATION = 10_000.0
BOA_ADD_OFFSET_DN = -1000.0


@dataclass(frozen=True)
class Scaling:
    """reflectance = DN * scale + offset; ``nodata`` DN values become NaN."""

    scale: float
    offset: float
    nodata: float | None
    rule: str
    """Where the numbers came from: ``raster:bands`` or ``processing-baseline``."""


def baseline_at_least(baseline: str | None, minimum: str) -> bool:
    if baseline is None:
        return False
    major, _, minor = str(baseline).partition(".")
    want_major, _, want_minor = minimum.partition(".")
    return (int(major), int(minor or 0)) >= (int(want_major), int(want_minor or 0))


def band_scaling(item: pystac.Item, asset_key: str) -> Scaling:
    """Scale and offset for one reflectance asset of an L2A item.

    ``raster:bands`` scale/offset win when the provider publishes them (Earth Search v1 writes
    ``offset: -0.1`` for baselines >= 04.00); otherwise the offset follows ``s2:processing_baseline``
    (Planetary Computer publishes neither, Sentinel Hub harmonizes on request).
    """
    asset = item.assets[asset_key]
    rb = (asset.extra_fields.get("raster:bands") or [{}])[0]
    nodata = rb.get("nodata", 0)
    if "scale" in rb or "offset" in rb:
        return Scaling(float(rb.get("scale", 1.0)), float(rb.get("offset", 0.0)), nodata, "raster:bands")
    baseline = item.properties.get("s2:processing_baseline")
    if baseline is None:
        raise ImageryError(
            f"Item {item.id} has neither raster:bands scale/offset nor s2:processing_baseline, so its "
            "radiometric offset is unknown. Use a provider that publishes one of them."
        )
    offset = BOA_ADD_OFFSET_DN / QUANTIFICATION if baseline_at_least(baseline, "04.00") else 0.0
    return Scaling(1.0 / QUANTIFICATION, offset, nodata, "processing-baseline")

