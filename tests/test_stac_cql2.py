"""CQL2 cloud-cover filtering against real STAC API servers on 127.0.0.1.

Servers (see ``tests/stac_server.py``), all ``rustac serve`` over the same 30 items with known
``eo:cloud_cover``:

* ``duckdb``: the DuckDB backend over stac-geoparquet. It executes CQL2-JSON filters, bbox,
  intersects and datetime in SQL, but declares no Filter conformance and never paginates.
* ``declared``: the same DuckDB server behind :class:`FilterPagingProxy`, which adds the Filter
  conformance classes and ``offset`` next links. Filtering and paging still run in DuckDB; the proxy
  records what went over the wire, which shows the filter was applied on the server.
* ``memory``: the memory backend. It paginates, declares no Filter conformance and answers a search
  with a ``filter`` with no items, so a client must filter cloud cover itself.

No test here skips: if rustac or the DuckDB extension wheels are missing the fixtures fail with
what to install (only a missing ``rustac`` binary skips).
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pystac_client import Client
from pystac_client.conformance import ConformanceClasses
from shapely.geometry import box, shape
from stac_server import (
    DuckdbApi,
    FilterPagingProxy,
    api_collection,
    duckdb_serve,
    rustac_executable,
    rustac_serve,
    write_api_inputs,
)

from mrv.imagery.source import SearchRequest
from mrv.imagery.stac_api import StacApiSource, cloud_filter

if rustac_executable() is None:  # the only reason to skip: no server binary at all
    pytest.skip("rustac CLI not installed (pip install rustac)", allow_module_level=True)

COLLECTION = "sentinel-2-l2a"
N = 30
FIRST = dt.date(2024, 3, 1)
AREAS = {  # WGS84 boxes: A and C lie in the triangle's bbox, only A in the triangle; B is far away
    "A": (16.00, 48.00, 16.05, 48.05),
    "B": (18.00, 48.00, 18.05, 48.05),
    "C": (16.30, 48.30, 16.35, 48.35),
}
TRIANGLE = {"type": "Polygon", "coordinates": [[[15.9, 47.9], [16.5, 47.9], [15.9, 48.5], [15.9, 47.9]]]}
TRIANGLE_BBOX = (15.9, 47.9, 16.5, 48.5)
EVERYWHERE = (15.0, 47.0, 19.0, 49.0)


def day(i: int) -> dt.date:
    return FIRST + dt.timedelta(days=3 * i)


def cloud(i: int) -> float:
    return float((i * 37) % 100)  # 30 distinct values in 0..99 (37 is coprime with 100)


def area(i: int) -> str:
    return "ABC"[i % 3]


def item_id(i: int) -> str:
    return f"S2A_T33UXP_{day(i):%Y%m%d}_{i:02d}_L2A"


def _item(i: int) -> dict[str, Any]:
    w, s, e, n = AREAS[area(i)]
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "id": item_id(i),
        "collection": COLLECTION,
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "bbox": [w, s, e, n],
        "properties": {"datetime": f"{day(i).isoformat()}T10:06:31Z", "eo:cloud_cover": cloud(i)},
        "links": [],
        "assets": {"red": {"href": f"file:///nonexistent/{item_id(i)}/B04.tif", "type": "image/tiff"}},
    }


ITEMS = [_item(i) for i in range(N)]
LAST = day(N)


def expected(
    *,
    max_cloud: float = 100.0,
    bbox: tuple[float, float, float, float] = EVERYWHERE,
    geometry: dict[str, Any] | None = None,
    start: dt.date = FIRST,
    end: dt.date = LAST,
) -> list[str]:
    """Ids a correct API returns, in (datetime, id) order: computed here, independently of any server."""
    aoi = shape(geometry) if geometry is not None else box(*bbox)
    return [
        item_id(i)
        for i in range(N)
        if cloud(i) <= max_cloud and start <= day(i) <= end and aoi.intersects(box(*AREAS[area(i)]))
    ]


def request(
    *,
    max_cloud: float = 100.0,
    bbox: tuple[float, float, float, float] = EVERYWHERE,
    start: dt.date = FIRST,
    end: dt.date = LAST,
) -> SearchRequest:
    return SearchRequest(bbox_wgs84=bbox, start=start, end=end, max_cloud_pct=max_cloud, collection=COLLECTION)


def ids(items: list[Any]) -> list[str]:
    return [it.id for it in items]


@pytest.fixture(scope="module")
def duckdb_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckdbApi]:
    with duckdb_serve(ITEMS, tmp_path_factory.mktemp("duckdb"), proxy=False) as api:
        yield api


@pytest.fixture(scope="module")
def declared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilterPagingProxy]:
    with duckdb_serve(ITEMS, tmp_path_factory.mktemp("declared"), proxy=True) as api:
        assert api.proxy is not None
        yield api.proxy


@pytest.fixture
def proxy(declared: FilterPagingProxy) -> FilterPagingProxy:
    with declared._lock:
        declared.exchanges.clear()
    return declared


@pytest.fixture(scope="module")
def memory_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("memory")
    collection = api_collection(COLLECTION, EVERYWHERE)
    with rustac_serve(write_api_inputs(root, collection, ITEMS), log_path=root / "rustac.log") as url:
        yield url


def _raw_search(url: str, **params: Any) -> list[str]:
    """ids from pystac-client alone (no client-side filtering anywhere), in server order."""
    client = Client.open(url)
    client.add_conforms_to("FILTER")  # pystac-client's switch for APIs that filter without declaring it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [it.id for it in client.search(collections=[COLLECTION], **params).items()]


def _filter(max_cloud: float) -> dict[str, Any]:
    return {"filter": cloud_filter(max_cloud), "filter_lang": "cql2-json"}


# ---------------------------------------------------------------------------------------------
# The servers themselves (what the source has to cope with)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_cloud", [0.0, 25.0, 50.0, 98.5])
def test_duckdb_server_applies_the_cloud_filter_itself(duckdb_api: DuckdbApi, max_cloud: float) -> None:
    everything = _raw_search(duckdb_api.url, limit=100)
    assert sorted(everything) == sorted(expected())  # without a filter every item comes back ...
    filtered = _raw_search(duckdb_api.url, limit=100, **_filter(max_cloud))
    assert sorted(filtered) == sorted(expected(max_cloud=max_cloud))  # ... with it only those at or below
    assert len(filtered) < N  # items above the threshold existed and were left out by the server


def test_duckdb_server_combines_the_filter_with_bbox_intersects_and_datetime(duckdb_api: DuckdbApi) -> None:
    start, end = day(4), day(20)
    dt_range = f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59Z"
    got = _raw_search(duckdb_api.url, limit=100, bbox=list(AREAS["A"]), datetime=dt_range, **_filter(60.0))
    want = expected(max_cloud=60.0, bbox=AREAS["A"], start=start, end=end)
    assert sorted(got) == sorted(want)
    assert 0 < len(want) < len(expected(bbox=AREAS["A"]))
    got = _raw_search(duckdb_api.url, limit=100, intersects=TRIANGLE, **_filter(60.0))
    assert sorted(got) == sorted(expected(max_cloud=60.0, geometry=TRIANGLE))
    assert set(got) < set(expected(max_cloud=60.0, bbox=TRIANGLE_BBOX))  # C is in the bbox, not the triangle


def test_duckdb_server_declares_no_filter_and_does_not_paginate(duckdb_api: DuckdbApi) -> None:
    client = Client.open(duckdb_api.url)
    assert client.conforms_to(ConformanceClasses.ITEM_SEARCH)
    assert not client.conforms_to(ConformanceClasses.FILTER)
    page = next(iter(client.search(collections=[COLLECTION], limit=4).pages_as_dicts()))
    assert len(page["features"]) == 4
    assert not [link for link in page["links"] if link["rel"] == "next"]  # one page, then nothing


def test_memory_server_answers_a_filtered_search_with_nothing(memory_api: str) -> None:
    assert not Client.open(memory_api).conforms_to(ConformanceClasses.FILTER)
    assert sorted(_raw_search(memory_api, limit=100)) == sorted(expected())
    assert _raw_search(memory_api, limit=100, **_filter(99.0)) == []  # so the filter must not be sent there


# ---------------------------------------------------------------------------------------------
# StacApiSource against them
# ---------------------------------------------------------------------------------------------


def test_source_filters_on_the_server_when_the_api_declares_it(
    proxy: FilterPagingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    source = StacApiSource(proxy.url, collection=COLLECTION, page_size=4, timeout_s=5)
    assert source.server_filters()
    with caplog.at_level("INFO", logger="mrv.imagery.stac_api"):
        items = source.search(request(max_cloud=40.0, bbox=AREAS["A"]))
    want = expected(max_cloud=40.0, bbox=AREAS["A"])
    assert ids(items) == want
    assert 0 < len(want) < len(expected(bbox=AREAS["A"]))
    assert all(it.properties["eo:cloud_cover"] <= 40.0 for it in items)
    assert "on the server (CQL2)" in caplog.text
    searches = proxy.searches()
    assert searches
    assert all(s.body and s.body["filter"] == cloud_filter(40.0) for s in searches)
    assert all(s.body and s.body["filter-lang"] == "cql2-json" for s in searches)
    on_the_wire = [i for s in searches for i in s.ids or []]
    assert sorted(on_the_wire) == sorted(want)  # the server sent nothing above 40 %: nothing left to drop


def test_source_pages_through_a_filtered_search(proxy: FilterPagingProxy) -> None:
    source = StacApiSource(proxy.url, collection=COLLECTION, page_size=3, timeout_s=5)
    items = source.search(request(max_cloud=60.0))
    want = expected(max_cloud=60.0)
    assert len(want) > 3 * 4
    assert ids(items) == want  # every page, no duplicates, sorted by date
    searches = proxy.searches()
    assert [s.body.get("offset", 0) for s in searches if s.body] == list(range(0, 3 * len(searches), 3))
    assert len(searches) >= len(want) // 3  # really several pages, each filtered on the server
    assert all(len(s.ids or []) <= 3 for s in searches)
    assert sorted(i for s in searches for i in s.ids or []) == sorted(want)


def test_source_intersects_and_dates_with_server_filter(proxy: FilterPagingProxy) -> None:
    source = StacApiSource(proxy.url, collection=COLLECTION, page_size=5, timeout_s=5)
    start, end = day(3), day(25)
    got = source.search(request(max_cloud=70.0, bbox=TRIANGLE_BBOX, start=start, end=end), intersects=TRIANGLE)
    assert ids(got) == expected(max_cloud=70.0, geometry=TRIANGLE, start=start, end=end)
    assert all(s.body and "intersects" in s.body and "bbox" not in s.body for s in proxy.searches())


def test_source_filters_on_the_client_when_the_server_cannot(
    memory_api: str, proxy: FilterPagingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    source = StacApiSource(memory_api, collection=COLLECTION, page_size=4, timeout_s=5)
    assert not source.server_filters()
    with caplog.at_level("INFO", logger="mrv.imagery.stac_api"):
        on_memory = source.search(request(max_cloud=40.0))
    assert "on the client" in caplog.text
    assert ids(on_memory) == expected(max_cloud=40.0)
    on_server = StacApiSource(proxy.url, collection=COLLECTION, page_size=4, timeout_s=5).search(
        request(max_cloud=40.0)
    )
    assert ids(on_memory) == ids(on_server)  # both routes agree on the same items


def test_source_gets_every_item_from_an_api_that_does_not_paginate(
    duckdb_api: DuckdbApi, caplog: pytest.LogCaptureFixture
) -> None:
    source = StacApiSource(duckdb_api.url, collection=COLLECTION, page_size=4, timeout_s=5)
    assert not source.server_filters()  # undeclared: filtered on the client
    with caplog.at_level("INFO", logger="mrv.imagery.stac_api"):
        items = source.search(request(max_cloud=60.0))
    assert ids(items) == expected(max_cloud=60.0)  # not just the first page of 4
    assert "does not paginate" in caplog.text


def test_max_items_still_applies_to_an_api_that_does_not_paginate(duckdb_api: DuckdbApi) -> None:
    from mrv.errors import ImageryError

    n = len(expected(max_cloud=100.0))
    source = StacApiSource(duckdb_api.url, collection=COLLECTION, page_size=4, timeout_s=5, max_items=n - 1)
    with pytest.raises(ImageryError, match=f"more than max_items={n - 1} items"):
        source.search(request())
    assert len(StacApiSource(duckdb_api.url, collection=COLLECTION, page_size=4, max_items=n).search(request())) == n


def test_geoparquet_round_trip_keeps_the_cloud_cover(tmp_path: Path) -> None:
    """What the DuckDB server filters on is what we wrote (no silent type change of eo:cloud_cover)."""
    import rustac
    from stac_server import to_geoparquet

    path = to_geoparquet(ITEMS[:3], tmp_path / "items.parquet")
    back = rustac.read_sync(str(path))
    assert [f["properties"]["eo:cloud_cover"] for f in back["features"]] == [cloud(i) for i in range(3)]
