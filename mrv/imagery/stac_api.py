"""Sentinel-2 L2A items from a STAC API (Earth Search, Planetary Computer, CDSE, ...).

Searches use pystac-client over a retrying, time-limited transport (:mod:`mrv.imagery.http`).
Cloud cover is filtered on the server with a CQL2-JSON ``filter`` (STAC API Filter extension,
https://github.com/stac-api-extensions/filter; OGC CQL2, https://docs.ogc.org/is/21-065r2/21-065r2.html)
when the API conforms to the Filter extension, otherwise on the client from ``eo:cloud_cover``.

Paging follows ``next`` links (STAC API Item Search, https://github.com/radiantearth/stac-api-spec/
tree/release/v1.0.0/item-search#pagination). A page that is full but has no ``next`` link is
ambiguous: either the result ends exactly there, or the API does not paginate at all (rustac's
DuckDB backend returns one page of at most ``limit`` items). The search is then repeated once as a
single page of ``max_items + 1`` so that no item is silently lost. Loading is shared with every
other source (:func:`mrv.imagery.load.load_reflectance`).

``max_items`` bounds the items *used*: where the cloud filter runs on the client, it is applied after that
filter, and the search itself may fetch up to ``max_fetched`` items (default ``CLIENT_FILTER_FETCH_FACTOR``
times ``max_items``), so a long, cloudy period is not cut short by items that would have been filtered out.

All HTTP goes through one pystac-client ``StacApiIO``: the retrying one of :func:`mrv.imagery.http.retrying_stac_io`
unless another is injected (``StacApiSource(..., stac_io=...)``, handed to ``Client.open(url, stac_io=...)``), so
tests replace the transport (a ``StacApiIO`` whose ``request`` replays recorded JSON), not the logic.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pystac
from pystac_client import Client
from pystac_client.conformance import ConformanceClasses
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO

from mrv.errors import ConfigError, ImageryError, NoImageryFound
from mrv.grid import Grid
from mrv.imagery.http import retrying_stac_io
from mrv.imagery.load import load_reflectance
from mrv.imagery.providers import ProviderProfile
from mrv.imagery.source import LoadedScenes, SearchRequest

__all__ = [
    "CLIENT_FILTER_FETCH_FACTOR",
    "CLOUD_PROPERTY",
    "MAX_PAGE_LIMIT",
    "StacApiSource",
    "cloud_filter",
    "datetime_range",
    "signing_modifier",
]

log = logging.getLogger(__name__)

Modifier = Callable[[Any], Any]
CLOUD_PROPERTY = "eo:cloud_cover"
MAX_PAGE_LIMIT = 10_000
"""The largest ``limit`` pystac-client sends (STAC API Item Search allows servers to cap it further)."""
CLIENT_FILTER_FETCH_FACTOR = 10
"""Without a server-side filter, up to this many times ``max_items`` are fetched before filtering."""


def cloud_filter(max_cloud_pct: float) -> dict[str, Any]:
    """The CQL2-JSON filter ``eo:cloud_cover <= max_cloud_pct``."""
    return {"op": "<=", "args": [{"property": CLOUD_PROPERTY}, float(max_cloud_pct)]}


def datetime_range(start: dt.date, end: dt.date) -> str:
    """An RFC 3339 interval covering whole UTC days ``start`` .. ``end`` inclusive."""
    return f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59.999Z"


def signing_modifier(profile: ProviderProfile) -> Modifier | None:
    """The pystac-client ``modifier`` that signs asset hrefs for the provider profile ``profile``, or None if none is needed."""
    if profile.signing == "none":
        return None
    if profile.signing == "planetary_computer":
        try:
            pc = importlib.import_module("planetary_computer")
        except ImportError as exc:
            raise ConfigError(
                f"Provider '{profile.name}' needs its asset URLs signed, but the 'planetary-computer' package "
                "is not installed. Install it (pip install planetary-computer, or the extra: pip install "
                "'soilcarbon-mrv[planetary-computer]') or choose another provider."
            ) from exc
        sign: Modifier = pc.sign_inplace
        return sign
    raise ConfigError(f"Provider '{profile.name}' asks for unknown signing scheme {profile.signing!r}.")


class StacApiSource:
    """An :class:`~mrv.imagery.source.ImagerySource` backed by a STAC API."""

    name = "stac-api"

    def __init__(
        self,
        url: str,
        *,
        collection: str,
        profile: ProviderProfile | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 4,
        max_items: int = 2000,
        page_size: int = 100,
        backoff_s: float = 0.5,
        modifier: Modifier | None = None,
        max_fetched: int | None = None,
        stac_io: StacApiIO | None = None,
    ) -> None:
        """``stac_io``: the transport every request goes through (default: :func:`~mrv.imagery.http.retrying_stac_io`
        with ``timeout_s``, ``max_retries`` and ``backoff_s``, which then apply to it; an injected one keeps its own
        retries, and its timeout is set to ``timeout_s``)."""
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"STAC API url {url!r} must start with http:// or https://.")
        max_fetched = CLIENT_FILTER_FETCH_FACTOR * max_items if max_fetched is None else max_fetched
        if timeout_s <= 0 or max_retries < 0 or max_items < 1 or page_size < 1 or max_fetched < max_items:
            raise ConfigError(
                f"Invalid STAC API options (timeout_s={timeout_s}, max_retries={max_retries}, "
                f"max_items={max_items}, page_size={page_size}, max_fetched={max_fetched}): use timeout_s > 0, "
                "max_retries >= 0, max_items >= 1, page_size >= 1 and max_fetched >= max_items."
            )
        if profile is not None and collection not in profile.collections:
            raise ConfigError(
                f"Collection {collection!r} is not offered by provider '{profile.name}' "
                f"(collections: {', '.join(profile.collections)}). Pick one of those or another provider profile."
            )
        self.url = url.rstrip("/")
        self.collection = collection
        self.profile = profile
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.max_items = int(max_items)
        self.max_fetched = int(max_fetched)
        self.page_size = int(page_size)
        self.backoff_s = float(backoff_s)
        self.modifier = modifier if modifier is not None else (signing_modifier(profile) if profile else None)
        self._stac_io = stac_io
        self._client: Client | None = None

    @classmethod
    def from_profile(cls, profile: ProviderProfile, *, collection: str | None = None, **options: Any) -> StacApiSource:
        """A source for ``profile``'s API and collection (its default collection unless given)."""
        return cls(profile.url, collection=collection or profile.default_collection, profile=profile, **options)

    @property
    def provider(self) -> str:
        return self.profile.name if self.profile else self.url

    def client(self) -> Client:
        """The opened API root (opened once, on first use)."""
        if self._client is None:
            stac_io = self._stac_io if self._stac_io is not None else retrying_stac_io(
                timeout_s=self.timeout_s, max_retries=self.max_retries, backoff_s=self.backoff_s
            )
            try:
                # timeout must be repeated: Client.open passes it to stac_io.update, which overwrites it.
                self._client = Client.open(self.url, stac_io=stac_io, timeout=self.timeout_s, modifier=self.modifier)
            except (APIError, pystac.STACError, ValueError, OSError) as exc:
                raise ImageryError(
                    f"Cannot open the STAC API at {self.url} ({_detail(exc)}) after {self.max_retries} retries with a "
                    f"{self.timeout_s:g} s timeout. Check the URL and your connection, or raise "
                    "imagery timeout/retries if the provider is slow."
                ) from exc
            if not self._client.conforms_to(ConformanceClasses.ITEM_SEARCH):
                raise ImageryError(
                    f"{self.url} does not conform to STAC API Item Search, so it cannot be searched. "
                    "Point the provider url at the API root (the one with a /search link)."
                )
        return self._client

    def server_filters(self) -> bool:
        """Whether the API advertises the CQL2 Filter extension (cloud cover filtered server-side)."""
        return self.client().conforms_to(ConformanceClasses.FILTER)

    def search(self, request: SearchRequest, *, intersects: Mapping[str, Any] | None = None) -> list[pystac.Item]:
        """Items of the collection over the AOI and dates with cloud cover <= the limit.

        ``intersects`` (a GeoJSON geometry in WGS84, e.g. the AOI polygon) replaces the bbox when
        given. Sorted by (datetime, id); every asset href is absolute.
        """
        collection = request.collection or self.collection
        server_side = self.server_filters()
        cap = self.max_items if server_side else self.max_fetched
        params: dict[str, Any] = {
            "collections": [collection],
            "datetime": datetime_range(request.start, request.end),
            "limit": self.page_size,
            "max_items": cap + 1,
        }
        if intersects is not None:
            params["intersects"] = dict(intersects)
        else:
            params["bbox"] = list(request.bbox_wgs84)
        if server_side:
            params["filter"] = cloud_filter(request.max_cloud_pct)
            params["filter_lang"] = "cql2-json"
            log.info("%s: filtering %s <= %g on the server (CQL2)", self.url, CLOUD_PROPERTY, request.max_cloud_pct)
        else:
            log.info(
                "%s does not conform to the Filter extension: filtering %s <= %g on the client",
                self.url,
                CLOUD_PROPERTY,
                request.max_cloud_pct,
            )
        fetched = self._fetch(params, what=collection, cap=cap)
        where = f"The search of {collection} at {self.url} over bbox {request.bbox_wgs84} from {request.start} to {request.end}"
        if len(fetched) > cap and not server_side:
            raise ImageryError(
                f"{where} matches more than {cap} items before the cloud filter, which runs on the client because the "
                "API does not declare the STAC Filter extension. Narrow the dates or the AOI, or raise "
                "imagery.max_items (up to 10 times as many items are fetched before filtering)."
            )
        items = fetched if server_side else [it for it in fetched if _cloud_ok(it, request.max_cloud_pct)]
        if len(fetched) > cap or len(items) > self.max_items:
            raise ImageryError(
                f"{where} matches more than max_items={self.max_items} items. Narrow the dates or the AOI "
                "(or lower imagery.max_cloud_pct), or raise max_items if that many scenes are really wanted."
            )
        if not server_side and len(items) < len(fetched):
            log.info(
                "dropped %d of %d items above %g%% cloud",
                len(fetched) - len(items),
                len(fetched),
                request.max_cloud_pct,
            )
        if not items:
            where = "the AOI polygon" if intersects is not None else "bbox"
            raise NoImageryFound(
                f"No {collection} items at {self.url} ({self.provider}) intersect {where} {request.bbox_wgs84} "
                f"between {request.start} and {request.end} with cloud cover <= {request.max_cloud_pct}% "
                f"({len(fetched)} found before the cloud filter). Widen the dates, raise imagery.max_cloud_pct "
                "or check the AOI and collection."
            )
        for item in items:
            item.make_asset_hrefs_absolute()
        return sorted(items, key=lambda it: (it.datetime or dt.datetime.min.replace(tzinfo=dt.UTC), it.id))

    def _pages(self, params: Mapping[str, Any], *, what: str) -> tuple[list[dict[str, Any]], bool]:
        """Features of every page of one search, and whether the last page was full without a ``next`` link."""
        features: list[dict[str, Any]] = []
        full_without_next = False
        limit = int(params["limit"])
        try:
            for page in self.client().search(**params).pages_as_dicts():
                got = page.get("features", [])
                features.extend(got)
                full_without_next = len(got) >= limit and not any(
                    link.get("rel") == "next" for link in page.get("links", [])
                )
        except (APIError, pystac.STACError, ValueError, OSError) as exc:
            raise ImageryError(
                f"Searching {what} at {self.url} failed ({_detail(exc)}) after {self.max_retries} retries with a "
                f"{self.timeout_s:g} s timeout. Retry later, or raise imagery timeout/retries if the provider is slow."
            ) from exc
        return features, full_without_next

    def _fetch(self, params: dict[str, Any], *, what: str, cap: int | None = None) -> list[pystac.Item]:
        """Every item of a search (pystac-client stops at ``params["max_items"]``, ``cap + 1``), even from an
        API that does not paginate.

        A last page that is full and has no ``next`` link either ends the result exactly or comes from
        an API that never paginates; the search is then repeated once as a single page of
        ``cap + 1`` items (one extra request, only in that case) and the larger result is kept.
        An API that neither paginates nor serves that many items in one page cannot be detected.
        """
        cap = self.max_items if cap is None else cap
        features, full_without_next = self._pages(params, what=what)
        if full_without_next and len(features) <= cap:
            single = min(cap + 1, MAX_PAGE_LIMIT)
            log.info(
                "%s returned a full page of %d items without a 'next' link (%d items in all); repeating the "
                "search as a single page of up to %d items in case the API does not paginate",
                self.url,
                params["limit"],
                len(features),
                single,
            )
            try:
                again, _ = self._pages({**params, "limit": single}, what=what)
            except ImageryError as exc:  # e.g. an API that caps ``limit`` answers 400: it does paginate
                log.info("%s refused a single page of %d items (%s); keeping the paged result", self.url, single, exc)
                again = []
            if len(again) > len(features):
                log.warning(
                    "%s does not paginate: one page of %d held %d items where the paged search stopped at %d; "
                    "using the single page",
                    self.url,
                    single,
                    len(again),
                    len(features),
                )
                features = again
        client = self.client()
        return [pystac.Item.from_dict(f, root=client, preserve_dict=False) for f in features]

    def search_collection(self, collection: str, bbox_wgs84: tuple[float, float, float, float]) -> list[pystac.Item]:
        """Every item of a static collection (e.g. a DEM such as ``cop-dem-glo-30``) over the bbox, by id."""
        params: dict[str, Any] = {
            "collections": [collection],
            "bbox": list(bbox_wgs84),
            "limit": self.page_size,
            "max_items": self.max_items,
        }
        items = self._fetch(params, what=f"the DEM collection {collection} (imagery.dem) over bbox {bbox_wgs84}")
        if not items:
            raise NoImageryFound(
                f"No {collection} items at {self.url} ({self.provider}) intersect bbox {bbox_wgs84}. Check the "
                "collection id in imagery.dem, or give a local DEM GeoTIFF path instead."
            )
        for item in items:
            item.make_asset_hrefs_absolute()
        return sorted(items, key=lambda it: it.id)

    def load(
        self,
        items: Sequence[pystac.Item],
        bands: Sequence[str],
        grid: Grid,
        *,
        chunk_px: int,
        check_grid: Grid | None = None,
    ) -> LoadedScenes:
        return load_reflectance(items, bands, grid, chunk_px=chunk_px, check_grid=check_grid)


def _detail(exc: BaseException) -> str:
    """The error text, led by the HTTP status when the API answered with one (``APIError.status_code``)."""
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}: {exc}" if status is not None else str(exc)


def _cloud_ok(item: pystac.Item, max_cloud_pct: float) -> bool:
    """Client-side twin of the CQL2 filter: a missing cloud cover does not match, as on a server."""
    value = item.properties.get(CLOUD_PROPERTY)
    if value is None:
        log.warning("item %s has no %s; dropped by the cloud filter", item.id, CLOUD_PROPERTY)
        return False
    return float(value) <= max_cloud_pct
