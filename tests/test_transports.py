"""Search, paging and error logic of the imagery sources through stub transports (no HTTP server).

``RecordedStacIO`` is a pystac-client ``StacApiIO`` whose ``request`` answers from recorded item JSON
(``tests/fixtures/providers/*``) instead of the network, so everything above the transport (pystac-client's
paging over ``next`` links, :class:`mrv.imagery.stac_api.StacApiSource`'s filter choice, its re-query of
APIs that do not paginate, its limits and messages) runs as in production. ``RecordedSentinelHub`` is a
sentinelhub ``SentinelHubDownloadClient`` whose ``_do_download`` replays recorded responses (Catalog API
pages, Process API GeoTIFFs), so sentinelhub's own retries, decoding and paging run too. The protocol itself
is tested against real local servers in ``test_stac_api.py``, ``test_stac_cql2.py`` and
``test_sentinelhub_source.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import logging
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import requests
from oauthlib.oauth2.rfc6749.errors import InvalidClientError
from pyproj import Transformer
from pystac_client.conformance import ConformanceClasses
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds
from requests.structures import CaseInsensitiveDict
from sentinelhub import SHConfig
from sentinelhub.download.models import DownloadRequest
from sentinelhub.download.sentinelhub_client import SentinelHubDownloadClient
from shapely.geometry import box

from mrv.config import DemConfig, ImageryConfig
from mrv.errors import ConfigError, ImageryError, NoImageryFound
from mrv.grid import Grid
from mrv.imagery.dem import dem_hrefs
from mrv.imagery.local import LocalCatalogSource
from mrv.imagery.sentinelhub_source import RESPONSE_BANDS, SentinelHubSource
from mrv.imagery.source import CollectionSearcher, SearchRequest
from mrv.imagery.sources import source_for
from mrv.imagery.stac_api import StacApiSource

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "providers"
ROOT = "https://stac.recorded.test/v1"
ITEM_SEARCH = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
]
FILTER = [
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
]


def _recorded(provider: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((FIXTURES / provider).glob("*.json"))]


TEMPLATE = next(i for i in _recorded("earth_search_v1") if i["id"] == "S2B_20EPT_20250731_0_L2A")
BBOX = tuple(TEMPLATE["bbox"])


def series(n: int, *, start: dt.date = dt.date(2025, 5, 1)) -> list[dict[str, Any]]:
    """``n`` copies of a recorded Earth Search item, one per day from ``start``, cloud cover 0, 4, 8, ... %."""
    out = []
    for i in range(n):
        item = copy.deepcopy(TEMPLATE)
        item["id"] = f"{TEMPLATE['id']}-{i:02d}"
        item["properties"]["datetime"] = f"{start + dt.timedelta(days=i)}T13:19:22.930000Z"
        item["properties"]["eo:cloud_cover"] = 4.0 * i
        out.append(item)
    return out


def _response(status: int, body: Any, url: str, headers: dict[str, str] | None = None) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp.headers = CaseInsensitiveDict({"Content-Type": "application/json", **(headers or {})})
    resp.url = url
    resp.reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 500: "Internal Server Error"}.get(status, "")
    return resp


class RecordedStacIO(StacApiIO):
    """A STAC API answered from recorded items: landing page, ``POST /search`` paged with a body token.

    ``paginate=False`` answers every search with one page of at most ``limit`` items and no ``next`` link (like
    rustac's DuckDB backend); ``max_limit`` refuses larger ``limit`` values with HTTP 400; ``fail`` answers
    searches with that status. Every request is recorded in :attr:`calls` as ``(method, path, parameters)``.
    """

    def __init__(
        self,
        items: list[dict[str, Any]],
        *,
        conforms: list[str] | None = None,
        paginate: bool = True,
        max_limit: int | None = None,
        fail: int | None = None,
    ) -> None:
        super().__init__()
        self.items = items
        self.conforms = ITEM_SEARCH if conforms is None else conforms
        self.paginate = paginate
        self.max_limit = max_limit
        self.fail = fail
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def request(
        self,
        href: str,
        method: str | None = None,
        headers: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> str:
        path = urllib.parse.urlsplit(href).path
        params = copy.deepcopy(parameters or {})
        self.calls.append(((method or "GET").upper(), path, params))
        if path.rstrip("/") == urllib.parse.urlsplit(ROOT).path:
            return json.dumps(self._landing())
        if path.endswith("/search"):
            if self.fail is not None:
                raise APIError.from_response(_response(self.fail, {"code": "ServerError", "description": "boom"}, href))
            return json.dumps(self._search(params))
        raise APIError.from_response(_response(404, {"code": "NotFound"}, href))

    def _landing(self) -> dict[str, Any]:
        return {
            "type": "Catalog", "id": "recorded", "stac_version": "1.0.0", "description": "recorded API",
            "conformsTo": self.conforms,
            "links": [
                {"rel": "self", "href": ROOT, "type": "application/json"},
                {"rel": "root", "href": ROOT, "type": "application/json"},
                {"rel": "search", "href": f"{ROOT}/search", "type": "application/geo+json", "method": "POST"},
            ],
        }  # fmt: skip

    def _matches(self, item: dict[str, Any], params: dict[str, Any]) -> bool:
        if "collections" in params and item.get("collection") not in params["collections"]:
            return False
        if "bbox" in params and not box(*params["bbox"]).intersects(box(*item["bbox"])):
            return False
        if "datetime" in params:
            lo, hi = params["datetime"].split("/")
            when = pystac.utils.str_to_datetime(item["properties"]["datetime"])
            if not pystac.utils.str_to_datetime(lo) <= when <= pystac.utils.str_to_datetime(hi):
                return False
        if "filter" in params:  # the one CQL2-JSON filter the source sends: eo:cloud_cover <= x
            limit = params["filter"]["args"][1]
            cloud = item["properties"].get("eo:cloud_cover")
            if cloud is None or cloud > limit:
                return False
        return True

    def _search(self, params: dict[str, Any]) -> dict[str, Any]:
        limit = int(params.get("limit", 10))
        if self.max_limit is not None and limit > self.max_limit:
            raise APIError.from_response(_response(400, {"code": "InvalidParameter", "description": "limit"}, ROOT))
        found = [i for i in self.items if self._matches(i, params)]
        start = int(params.get("token", 0)) if self.paginate else 0
        page = found[start : start + limit]
        links: list[dict[str, Any]] = [{"rel": "root", "href": ROOT}]
        if self.paginate and start + limit < len(found):
            links.append({"rel": "next", "href": f"{ROOT}/search", "method": "POST", "merge": True,
                          "body": {"token": start + limit}})  # fmt: skip
        return {"type": "FeatureCollection", "features": page, "links": links}

    def searches(self) -> list[dict[str, Any]]:
        return [p for _, path, p in self.calls if path.endswith("/search")]


def _request(**kw: Any) -> SearchRequest:
    base = SearchRequest(bbox_wgs84=BBOX, start=dt.date(2025, 5, 1), end=dt.date(2025, 5, 31), max_cloud_pct=100.0,
                         collection="sentinel-2-l2a")  # fmt: skip
    return dataclasses.replace(base, **kw)


def _source(io: StacApiIO, **kw: Any) -> StacApiSource:
    return StacApiSource(ROOT, collection="sentinel-2-l2a", stac_io=io, **kw)


# ------------------------------------------------------------------------------------------------ STAC API


def test_injected_transport_carries_every_request() -> None:
    io = RecordedStacIO([*series(3), *_recorded("earth_search_v1")])
    items = _source(io).search(_request())
    assert [i.id for i in items] == [f"{TEMPLATE['id']}-{k:02d}" for k in range(3)]  # the other places left out
    assert [c[:2] for c in io.calls] == [("GET", "/v1"), ("POST", "/v1/search")]
    assert all(isinstance(i, pystac.Item) and i.assets["red"].href.startswith("https://") for i in items)


def test_pages_are_followed_through_next_links_and_sorted() -> None:
    items = series(23)
    io = RecordedStacIO(list(reversed(items)))  # served newest first: the source sorts by (datetime, id)
    found = _source(io, page_size=5).search(_request())
    assert [i.id for i in found] == [i["id"] for i in items]
    assert [p.get("token", 0) for p in io.searches()] == [0, 5, 10, 15, 20]
    assert all(p["limit"] == 5 for p in io.searches())


def test_cloud_filter_runs_on_the_server_when_the_api_declares_the_filter_extension() -> None:
    io = RecordedStacIO(series(10), conforms=[*ITEM_SEARCH, *FILTER])
    source = _source(io)
    assert source.client().conforms_to(ConformanceClasses.FILTER)
    found = source.search(_request(max_cloud_pct=12))
    assert [i.properties["eo:cloud_cover"] for i in found] == [0.0, 4.0, 8.0, 12.0]
    (body,) = io.searches()
    assert body["filter"] == {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 12.0]}
    assert body["filter-lang"] == "cql2-json"
    assert "max_items" not in body


def test_cloud_filter_runs_on_the_client_without_the_extension(caplog: pytest.LogCaptureFixture) -> None:
    items = series(10)
    del items[2]["properties"]["eo:cloud_cover"]  # a missing cloud cover does not match, as on a server
    io = RecordedStacIO(items)
    with caplog.at_level(logging.INFO, logger="mrv.imagery.stac_api"):
        found = _source(io).search(_request(max_cloud_pct=12))
    assert [i.properties["eo:cloud_cover"] for i in found] == [0.0, 4.0, 12.0]
    (body,) = io.searches()
    assert "filter" not in body
    assert "dropped 7 of 10 items above 12% cloud" in caplog.text
    assert "has no eo:cloud_cover" in caplog.text


def test_an_api_that_does_not_paginate_is_asked_again_for_one_big_page(caplog: pytest.LogCaptureFixture) -> None:
    io = RecordedStacIO(series(12), paginate=False)
    with caplog.at_level(logging.INFO, logger="mrv.imagery.stac_api"):
        found = _source(io, page_size=5, max_items=50).search(_request())
    assert len(found) == 12
    assert [p["limit"] for p in io.searches()] == [5, 501]  # then one page of max_fetched + 1
    assert "does not paginate" in caplog.text


def test_a_refused_big_page_keeps_the_paged_result(caplog: pytest.LogCaptureFixture) -> None:
    io = RecordedStacIO(series(10), max_limit=100)  # pages exactly fill 2 x 5: the end is ambiguous
    with caplog.at_level(logging.INFO, logger="mrv.imagery.stac_api"):
        found = _source(io, page_size=5, max_items=20).search(_request())
    assert len(found) == 10
    assert [p["limit"] for p in io.searches()] == [5, 5, 201]
    assert "refused a single page of 201 items" in caplog.text


def test_max_items_is_enforced_after_the_client_side_filter() -> None:
    io = RecordedStacIO(series(15))
    with pytest.raises(ImageryError, match="matches more than max_items=3 items"):
        _source(io, max_items=3).search(_request(max_cloud_pct=20))  # 6 items pass the filter
    assert len(_source(RecordedStacIO(series(15)), max_items=3).search(_request(max_cloud_pct=8))) == 3
    with pytest.raises(ImageryError, match="more than 4 items before the cloud filter"):
        _source(RecordedStacIO(series(15)), max_items=2, max_fetched=4).search(_request(max_cloud_pct=4))


def test_server_errors_and_non_search_apis_become_imagery_errors() -> None:
    with pytest.raises(ImageryError, match=r"Searching sentinel-2-l2a at .* failed \(HTTP 500: .*boom.*Retry later"):
        _source(RecordedStacIO(series(2), fail=500)).search(_request())
    with pytest.raises(ImageryError, match="does not conform to STAC API Item Search"):
        _source(RecordedStacIO(series(2), conforms=ITEM_SEARCH[:1])).search(_request())


def test_nothing_found_names_the_search_and_the_count_before_the_cloud_filter() -> None:
    with pytest.raises(NoImageryFound, match=r"No sentinel-2-l2a items .*cloud cover <= 1.0% \(3 found before"):
        _source(RecordedStacIO(series(4)[1:])).search(_request(max_cloud_pct=1.0))
    with pytest.raises(NoImageryFound, match=r"\(0 found before"):
        _source(RecordedStacIO(series(2))).search(_request(start=dt.date(2024, 1, 1), end=dt.date(2024, 1, 31)))


def test_dem_collection_through_the_collection_searcher_protocol() -> None:
    dem_item = copy.deepcopy(TEMPLATE) | {"id": "Copernicus_DSM_COG_10_S61_00_W060_00_DEM", "collection": "cop-dem-glo-30"}
    dem_item["assets"] = {"data": {"href": "https://dem.recorded.test/tile.tif", "type": "image/tiff"}}
    io = RecordedStacIO([*series(2), dem_item])
    source = _source(io)
    assert isinstance(source, CollectionSearcher)
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32720", always_xy=True).transform(-59.5, -60.45)  # inside BBOX
    grid = Grid(crs="EPSG:32720", bounds=(x - 500, y - 500, x + 500, y + 500), resolution_m=100)
    assert dem_hrefs(DemConfig(collection="cop-dem-glo-30"), grid, source) == ["https://dem.recorded.test/tile.tif"]
    assert list(io.searches()[-1]["collections"]) == ["cop-dem-glo-30"]

    class OtherSearcher:  # any source with search_collection will do, not only StacApiSource
        name = "other"

        def search_collection(self, collection: str, bbox_wgs84: tuple[float, float, float, float]) -> list[pystac.Item]:
            return [pystac.Item.from_dict(dem_item)]

    assert dem_hrefs(DemConfig(collection="cop-dem-glo-30"), grid, OtherSearcher()) == [  # type: ignore[arg-type]
        "https://dem.recorded.test/tile.tif"
    ]
    with pytest.raises(ImageryError, match="of cop-dem-glo-30 at other has no asset 'elevation'"):
        dem_hrefs(DemConfig(collection="cop-dem-glo-30", asset="elevation"), grid, OtherSearcher())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs a STAC API source"):
        dem_hrefs(DemConfig(collection="cop-dem-glo-30"), grid, LocalCatalogSource(Path("collection.json")))


# ---------------------------------------------------------------------------------------------- source_for


def test_source_for_builds_each_kind_and_hands_over_the_transports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = source_for(ImageryConfig(source="local", collection="sentinel-2-l2a", catalog=tmp_path / "c.json", max_items=7))
    assert isinstance(local, LocalCatalogSource)
    assert local.max_items == 7
    io = RecordedStacIO(series(2))
    stac = source_for(ImageryConfig(source="stac", collection="sentinel-2-l2a", url=ROOT), stac_io=io)
    assert isinstance(stac, StacApiSource)
    assert len(stac.search(_request())) == 2
    assert io.calls  # the injected transport, not a new one
    pc = source_for(ImageryConfig(source="stac", collection="sentinel-2-c1-l2a", provider="earth_search_c1"))
    assert isinstance(pc, StacApiSource)
    assert pc.url == "https://earth-search.aws.element84.com/v1"
    monkeypatch.setenv("SH_CLIENT_ID", "id")
    monkeypatch.setenv("SH_CLIENT_SECRET", "secret")
    client = RecordedSentinelHub(lambda r: _response(200, {}, r.url or ""))
    sh = source_for(ImageryConfig(source="sentinelhub", collection="sentinel-2-l2a", url=SH_URL), sh_client=client)
    assert isinstance(sh, SentinelHubSource)
    assert sh.client is client
    with pytest.raises(ConfigError, match="imagery.catalog is not set"):
        source_for(ImageryConfig(source="local", collection="sentinel-2-l2a"))
    with pytest.raises(ConfigError, match="is unknown; use 'local', 'stac' or 'sentinelhub'"):
        source_for(ImageryConfig(source="ftp", collection="x"))  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------- Sentinel Hub

SH_URL = "https://sh.recorded.test"
GRID = Grid(crs="EPSG:32633", bounds=(600_000.0, 5_360_000.0, 600_400.0, 5_360_300.0), resolution_m=20)


class RecordedSentinelHub(SentinelHubDownloadClient):
    """A sentinelhub download client whose transport is ``answer(request) -> requests.Response``.

    No OAuth session is opened (``session_headers`` is ``{}``, or raises ``auth_error``); every request is kept in
    :attr:`requests`. Temporary errors are retried by sentinelhub as usual, without sleeping.
    """

    def __init__(self, answer: Callable[[DownloadRequest], requests.Response], *, auth_error: Exception | None = None):
        config = SHConfig(use_defaults=True)
        config.sh_base_url = SH_URL
        config.download_sleep_time = 0
        config.max_download_attempts = 2
        super().__init__(config=config)
        self.answer = answer
        self.auth_error = auth_error
        self.requests: list[DownloadRequest] = []
        self.headers: list[dict[str, Any]] = []

    def _do_download(self, request: DownloadRequest) -> requests.Response:
        self.headers.append(self._prepare_headers(request))  # session headers included, as sentinelhub sends them
        self.requests.append(request)
        return self.answer(request)

    def _get_session_headers(self) -> dict[str, str]:
        if self.auth_error is not None:
            raise self.auth_error
        return {}


def _sh_feature(product: str, when: str, cloud: float) -> dict[str, Any]:
    """A Catalog API 1.0.0 feature as Sentinel Hub returns it (SAFE-name ids, no assets)."""
    west, south, east, north = GRID.bbox_wgs84()
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {
        "stac_version": "1.0.0", "stac_extensions": [], "id": product, "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]}, "bbox": [west, south, east, north],
        "properties": {"datetime": when, "platform": "sentinel-2b", "instruments": ["msi"], "constellation": "sentinel-2",
                       "gsd": 10, "eo:cloud_cover": cloud, "proj:epsg": 32633},
        "assets": {}, "links": [],
    }  # fmt: skip


SCENES = [
    _sh_feature("S2B_MSIL2A_20250501T100029_N0511_R122_T33UWP_20250501T120000", "2025-05-01T10:06:11Z", 3.0),
    _sh_feature("S2B_MSIL2A_20250501T100029_N0511_R122_T33UXP_20250501T120000", "2025-05-01T10:06:25Z", 5.0),
    _sh_feature("S2A_MSIL2A_20250506T100031_N0511_R122_T33UWP_20250506T120000", "2025-05-06T10:06:14Z", 9.0),
]


def _geotiff(values: np.ndarray) -> bytes:
    """A 7-band float32 GeoTIFF on GRID, as the Process API returns it."""
    h, w, n = values.shape
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=w, height=h, count=n, dtype="float32", crs=GRID.crs,
                      transform=from_bounds(*GRID.bounds, w, h)) as dst:  # fmt: skip
            dst.write(np.moveaxis(values.astype("float32"), -1, 0))
        return bytes(mem.read())


def _pixels(reflectance: float, scl: int = 5) -> np.ndarray:
    rng = np.random.default_rng(3)
    out = np.empty((GRID.height, GRID.width, len(RESPONSE_BANDS)), dtype="float32")
    out[..., :-1] = reflectance + 0.02 * rng.standard_normal((GRID.height, GRID.width, len(RESPONSE_BANDS) - 1))
    out[..., -1] = scl
    out[:3, :3, -1] = 9  # cloud (SCL 9): masked to NaN
    return out


class Recorded:
    """Catalog pages (paged by ``context.next``) and one Process response per acquisition date."""

    def __init__(self, features: list[dict[str, Any]], tiffs: dict[str, bytes], *, page: int = 2,
                 catalog_status: int = 200) -> None:  # fmt: skip
        self.features, self.tiffs, self.page, self.catalog_status = features, tiffs, page, catalog_status

    def __call__(self, request: DownloadRequest) -> requests.Response:
        url = request.url or ""
        body = request.post_values or {}
        if url.endswith("/api/v1/catalog/1.0.0/search"):
            if self.catalog_status != 200:
                return _response(self.catalog_status, {"code": 400, "description": "Invalid filter"}, url)
            start = int(body.get("next", 0))
            features = self.features[start : start + self.page]
            context: dict[str, Any] = {"limit": self.page, "returned": len(features)}
            if start + self.page < len(self.features):
                context["next"] = start + self.page
            return _response(200, {"type": "FeatureCollection", "features": features, "links": [], "context": context}, url)
        if url.endswith("/api/v1/process"):
            day = body["input"]["data"][0]["dataFilter"]["timeRange"]["from"][:10]
            return _response(200, self.tiffs[day], url, {"Content-Type": "image/tiff"})
        return _response(404, {"error": "not recorded"}, url)


def _sh(client: RecordedSentinelHub) -> SentinelHubSource:
    return SentinelHubSource(base_url=SH_URL, client_id="id", client_secret="s3cret", client=client)


def _sh_request() -> SearchRequest:
    return SearchRequest(bbox_wgs84=GRID.bbox_wgs84(), start=dt.date(2025, 5, 1), end=dt.date(2025, 5, 31),
                         max_cloud_pct=20.0, collection="sentinel-2-l2a")  # fmt: skip


def test_sentinel_hub_search_pages_through_the_catalog_on_the_injected_client() -> None:
    client = RecordedSentinelHub(Recorded(SCENES, {}))
    items = _sh(client).search(_sh_request())
    assert [i.id for i in items] == [f["id"] for f in SCENES]
    bodies = [r.post_values or {} for r in client.requests]
    assert [b.get("next") for b in bodies] == [None, 2]  # the page token of the first answer, sent back
    assert bodies[0]["filter"] == "eo:cloud_cover <= 20.0"
    assert bodies[0]["datetime"] == "2025-05-01T00:00:00Z/2025-05-31T23:59:59Z"
    assert bodies[0]["collections"] == ["sentinel-2-l2a"]


def test_sentinel_hub_search_errors() -> None:
    with pytest.raises(NoImageryFound, match="No Sentinel Hub items for bbox="):
        _sh(RecordedSentinelHub(Recorded([], {}))).search(_sh_request())
    with pytest.raises(ImageryError, match="(?s)Sentinel Hub catalog search failed.*400 Client Error"):
        _sh(RecordedSentinelHub(Recorded(SCENES, {}, catalog_status=400))).search(_sh_request())
    rejected = RecordedSentinelHub(Recorded(SCENES, {}), auth_error=InvalidClientError(description="bad secret"))
    with pytest.raises(ConfigError, match="did not accept the OAuth client credentials"):
        _sh(rejected).search(_sh_request())


def test_sentinel_hub_load_one_request_per_date_and_one_record_per_scene() -> None:
    tiffs = {"2025-05-01": _geotiff(_pixels(-0.30)), "2025-05-06": _geotiff(_pixels(0.15))}
    client = RecordedSentinelHub(Recorded(SCENES, tiffs))
    source = _sh(client)
    items = source.search(_sh_request())
    loaded = source.load(items, ["red", "nir"], GRID, chunk_px=256)
    process = [r for r in client.requests if (r.url or "").endswith("/process")]
    assert len(process) == 2  # one per acquisition date, the two scenes of 1 May in one mosaic
    first = process[0].post_values["input"]["data"][0]["dataFilter"]["timeRange"]  # type: ignore[index]
    assert (first["from"], first["to"]) == ("2025-05-01T10:05:11Z", "2025-05-01T10:07:25Z")  # the scenes +- 1 min
    # 1 May is far below zero: the data check drops it, once for each of its scenes, by its own id
    assert [i for i, _ in loaded.dropped] == [SCENES[0]["id"], SCENES[1]["id"]]
    assert all("," not in i for i, _ in loaded.dropped)
    assert all("mosaic of 2 scenes of 2025-05-01" in r for _, r in loaded.dropped)
    assert loaded.items == (SCENES[2]["id"],)
    assert loaded.scenes == ((SCENES[2]["id"],),)
    assert loaded.scenes_by_time() == loaded.scenes
    refl = loaded.reflectance
    assert list(refl["item_id"].values) == [SCENES[2]["id"]]
    assert refl.sizes == {"time": 1, "y": GRID.height, "x": GRID.width}
    assert np.isnan(refl["red"].values[0, :3, :3]).all()  # SCL 9 masked
    assert float(np.nanmean(refl["red"].values)) == pytest.approx(0.15, abs=0.01)


def test_sentinel_hub_mosaic_ids_and_bad_responses() -> None:
    tiffs = {"2025-05-01": _geotiff(_pixels(0.05)), "2025-05-06": _geotiff(_pixels(0.07))}
    source = _sh(RecordedSentinelHub(Recorded(SCENES, tiffs)))
    loaded = source.load(source.search(_sh_request()), ["red"], GRID, chunk_px=256)
    assert loaded.items == tuple(f["id"] for f in SCENES)
    assert loaded.scenes == ((SCENES[0]["id"], SCENES[1]["id"]), (SCENES[2]["id"],))
    assert list(loaded.reflectance["item_id"].values) == [SCENES[0]["id"], SCENES[2]["id"]]
    assert not loaded.dropped
    small = {d: _geotiff(_pixels(0.05)[:5]) for d in tiffs}
    source = _sh(RecordedSentinelHub(Recorded(SCENES, small)))
    with pytest.raises(ImageryError, match=r"returned an array of shape \(5, 20, 7\)"):
        source.load(source.search(_sh_request()), ["red"], GRID, chunk_px=256)
