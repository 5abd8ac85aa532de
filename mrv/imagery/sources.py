"""The imagery source a run config asks for (``imagery.source``: ``local``, ``stac`` or ``sentinelhub``).

The one place a source is built from configuration; the pipeline steps call :func:`source_for`.
The transports can be injected (``stac_io`` for a STAC API, ``sh_client`` for Sentinel Hub), so that
notebooks and tests reuse a configured or recorded transport instead of the default HTTP stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mrv.config import ImageryConfig
from mrv.errors import ConfigError
from mrv.imagery.source import ImagerySource

if TYPE_CHECKING:
    from pystac_client.stac_api_io import StacApiIO
    from sentinelhub.download.sentinelhub_client import SentinelHubDownloadClient

__all__ = ["DEFAULT_SENTINEL_HUB_URL", "source_for"]

#: Sentinel Hub deployment used when ``imagery.url`` is not set.
DEFAULT_SENTINEL_HUB_URL = "https://services.sentinel-hub.com"


def source_for(
    imagery: ImageryConfig,
    *,
    config_path: Path | None = None,
    stac_io: StacApiIO | None = None,
    sh_client: SentinelHubDownloadClient | None = None,
) -> ImagerySource:
    """The source of ``imagery`` (the run config's ``imagery`` section).

    ``config_path`` (the config file) resolves a provider profile given by relative path when the config
    did not carry it parsed already (``imagery.provider_profile``). ``stac_io`` is handed to
    :class:`~mrv.imagery.stac_api.StacApiSource`, ``sh_client`` (a sentinelhub download client) to
    :class:`~mrv.imagery.sentinelhub_source.SentinelHubSource`; both default to the retrying HTTP transports.
    """
    if imagery.source == "local":
        from mrv.imagery.local import LocalCatalogSource

        if imagery.catalog is None:
            raise ConfigError("imagery.source is 'local' but imagery.catalog is not set; give the collection.json.")
        return LocalCatalogSource(imagery.catalog, max_items=imagery.max_items)
    if imagery.source == "stac":
        from mrv.imagery.stac_api import StacApiSource

        if imagery.provider:
            from mrv.imagery.providers import load_profile

            profile = imagery.provider_profile or load_profile(imagery.provider, config_path=config_path)
            return StacApiSource.from_profile(
                profile, collection=imagery.collection, max_items=imagery.max_items, stac_io=stac_io
            )
        if imagery.url is None:
            raise ConfigError("imagery.source is 'stac' but neither imagery.url nor imagery.provider is set.")
        return StacApiSource(imagery.url, collection=imagery.collection, max_items=imagery.max_items, stac_io=stac_io)
    if imagery.source == "sentinelhub":
        from mrv.imagery.sentinelhub_source import SentinelHubSource

        return SentinelHubSource(
            base_url=imagery.url or DEFAULT_SENTINEL_HUB_URL, collection_name=imagery.collection, client=sh_client
        )
    raise ConfigError(f"imagery.source '{imagery.source}' is unknown; use 'local', 'stac' or 'sentinelhub'.")
