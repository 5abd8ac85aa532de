"""Sentinel-2 L2A imagery: search and load from a local catalog, a STAC API or Sentinel Hub, bare-soil composites
and terrain covariates.

The names below are imported lazily on first use, so ``import mrv.imagery`` loads none of pystac, odc-stac or rasterio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mrv.lazy import lazy_exports

if TYPE_CHECKING:
    from mrv.imagery.composite import bare_soil_composite, covariate_stack
    from mrv.imagery.dem import Terrain, dem_hrefs, terrain_covariates
    from mrv.imagery.load import load_reflectance
    from mrv.imagery.local import LocalCatalogSource
    from mrv.imagery.providers import ProviderProfile, load_profile
    from mrv.imagery.scene_check import CheckConfig, judge, scene_stats
    from mrv.imagery.sentinelhub_source import SentinelHubSource
    from mrv.imagery.source import CollectionSearcher, ImagerySource, LoadedScenes, SearchRequest
    from mrv.imagery.sources import source_for
    from mrv.imagery.stac_api import StacApiSource

__all__ = [
    "CheckConfig",
    "CollectionSearcher",
    "ImagerySource",
    "LoadedScenes",
    "LocalCatalogSource",
    "ProviderProfile",
    "SearchRequest",
    "SentinelHubSource",
    "StacApiSource",
    "Terrain",
    "bare_soil_composite",
    "covariate_stack",
    "dem_hrefs",
    "judge",
    "load_profile",
    "load_reflectance",
    "scene_stats",
    "source_for",
    "terrain_covariates",
]

#: Public name -> the submodule defining it (imported on first access, PEP 562).
_LAZY: dict[str, str] = {
    "CollectionSearcher": "source", "ImagerySource": "source", "LoadedScenes": "source", "SearchRequest": "source",
    "source_for": "sources",
    "LocalCatalogSource": "local",
    "StacApiSource": "stac_api",
    "SentinelHubSource": "sentinelhub_source",
    "ProviderProfile": "providers", "load_profile": "providers",
    "load_reflectance": "load",
    "bare_soil_composite": "composite", "covariate_stack": "composite",
    "Terrain": "dem", "dem_hrefs": "dem", "terrain_covariates": "dem",
    "CheckConfig": "scene_check", "judge": "scene_check", "scene_stats": "scene_check",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
