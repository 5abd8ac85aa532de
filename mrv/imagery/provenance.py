"""The STAC items a tile was composited from, kept as fetched so a verifier can re-check them.

A live STAC API or Sentinel Hub catalog may change or drop items later; the item JSON (ids, asset
hrefs, ``file:checksum`` / ``file:size`` where the provider publishes them, processing baseline,
``raster:bands``) is written beside each tile and goes into the run bundle
(:mod:`mrv.report.bundle`). Signed asset URLs (Planetary Computer SAS tokens) are short-lived
credentials: their query strings are removed before writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pystac

__all__ = ["items_as_fetched"]


def _unsigned(href: str) -> str:
    parts = urlsplit(href)
    if parts.scheme in ("http", "https") and parts.query:
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return href


def items_as_fetched(items: Sequence[pystac.Item]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of ``items`` (``pystac.Item.to_dict``), asset URLs without query strings."""
    features = []
    for item in items:
        doc = item.to_dict(include_self_link=False, transform_hrefs=False)
        for asset in doc.get("assets", {}).values():
            if isinstance(asset.get("href"), str):
                asset["href"] = _unsigned(asset["href"])
        features.append(doc)
    return {"type": "FeatureCollection", "features": features}
