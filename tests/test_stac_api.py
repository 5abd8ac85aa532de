"""StacApiSource against a real STAC API (rustac serve on 127.0.0.1) and fault-injecting servers."""

from __future__ import annotations

import copy
import datetime as dt
import json
import sys
import threading
import time
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import Transformer
from pytest_httpserver import HTTPServer
from rasterio.transform import from_origin
from stac_server import api_collection, catalog_api_inputs, free_port, rustac_serve, write_api_inputs
from werkzeug import Request, Response

from mrv.errors import ConfigError, ImageryError, NoImageryFound
from mrv.grid import Grid
from mrv.imagery.providers import load_profile
from mrv.imagery.source import SearchRequest
from mrv.imagery.stac_api import StacApiSource, cloud_filter
from mrv.resources import available_profiles

FIXTURE = Path(__file__).parent / "fixtures" / "earth_search_s2_l2a_item.json"
COLLECTION = "sentinel-2-l2a"
CRS = "EPSG:32720"  # the fixture item's UTM zone
X0, Y0, PX = 600_000.0, 3_300_040.0, 32  # 32 x 32 pixels of 10 m
GRID = Grid(crs=CRS, bounds=(X0, Y0 - PX * 10, X0 + PX * 10, Y0), resolution_m=10.0)
RED_DN, NIR_DN = 2000, 4000  # -> 0.2 and 0.4: the fixture says earthsearch:boa_offset_applied (scale 1e-4 only)
N_ITEMS = 25
FIRST_DAY = dt.date(2024, 3, 1)
CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
]
FILTER_CONFORMS = [
    *CONFORMS,
    "https://api.stacspec.org/v1.0.0/item-search#filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
]


def _day(i: int) -> dt.date:
    return FIRST_DAY + dt.timedelta(days=4 * i)


def _cloud(i: int) -> float:
    return float((i * 13) % 100)


def _area(i: int) -> str:
    return "ABC"[i % 3]


# ---------------------------------------------------------------------------------------------
# Test data: three tiny COGs and 25 Earth-Search-like items over three areas
# ---------------------------------------------------------------------------------------------


def _write_tif(path: Path, data: np.ndarray, res: float) -> None:
    profile = {
        "driver": "COG",
        "height": data.shape[0],
        "width": data.shape[1],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": CRS,
        "transform": from_origin(X0, Y0, res, res),
        "nodata": 0,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def _box(w: float, s: float, e: float, n: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


class World:
    """Footprints (WGS84) of areas A (over the COGs), B (far east) and C (in the triangle's bbox, outside it)."""

    def __init__(self) -> None:
        tr = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
        self.a_bbox = tr.transform_bounds(*GRID.bounds, densify_pts=21)
        cx = (self.a_bbox[0] + self.a_bbox[2]) / 2
        cy = (self.a_bbox[1] + self.a_bbox[3]) / 2
        self.bboxes = {
            "A": self.a_bbox,
            "B": (cx + 2.0, cy, cx + 2.05, cy + 0.05),
            "C": (cx + 0.3, cy + 0.3, cx + 0.35, cy + 0.35),
        }
        # A right triangle with A near its right angle; its bbox contains C but the triangle does not.
        self.triangle = {
            "type": "Polygon",
            "coordinates": [[[cx - 0.1, cy - 0.1], [cx + 0.4, cy - 0.1], [cx - 0.1, cy + 0.4], [cx - 0.1, cy - 0.1]]],
        }
        self.triangle_bbox = (cx - 0.1, cy - 0.1, cx + 0.4, cy + 0.4)
        self.everything = (cx - 1.0, cy - 1.0, cx + 3.0, cy + 1.0)


WORLD = World()


def _item(base: dict[str, Any], i: int, hrefs: dict[str, str]) -> dict[str, Any]:
    d = copy.deepcopy(base)
    d["id"] = f"S2B_20EPT_{_day(i):%Y%m%d}_{i:02d}_L2A"
    d["collection"] = COLLECTION
    d["links"] = []
    d["properties"]["datetime"] = f"{_day(i).isoformat()}T13:19:22Z"
    d["properties"]["eo:cloud_cover"] = _cloud(i)
    bbox = WORLD.bboxes[_area(i)]
    d["bbox"] = list(bbox)
    d["geometry"] = _box(*bbox)
    assets = {}
    for key in ("red", "nir", "scl"):
        asset = d["assets"][key]
        asset["href"] = hrefs[key]
        res = 20 if key == "scl" else 10
        n = PX * 10 // res
        asset["proj:shape"] = [n, n]
        asset["proj:transform"] = [res, 0, X0, 0, -res, Y0]
        assets[key] = asset
    d["assets"] = assets
    return d


def _item_id(i: int) -> str:
    return f"S2B_20EPT_{_day(i):%Y%m%d}_{i:02d}_L2A"


def _ids(items: list[pystac.Item]) -> list[str]:
    return [it.id for it in items]


@pytest.fixture(scope="module")
def stac_items(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    root = tmp_path_factory.mktemp("cogs")
    scl = np.full((PX // 2, PX // 2), 4, dtype="uint8")
    scl[:4, :4] = 9  # cloud high probability: 8 x 8 masked 10 m pixels in the top-left corner
    _write_tif(root / "B04.tif", np.full((PX, PX), RED_DN, dtype="uint16"), 10)
    _write_tif(root / "B08.tif", np.full((PX, PX), NIR_DN, dtype="uint16"), 10)
    _write_tif(root / "SCL.tif", scl, 20)
    hrefs = {"red": (root / "B04.tif").as_uri(), "nir": (root / "B08.tif").as_uri(), "scl": (root / "SCL.tif").as_uri()}
    base = json.loads(FIXTURE.read_text())
    return [_item(base, i, hrefs) for i in range(N_ITEMS)]


@pytest.fixture(scope="module")
def stac_api(tmp_path_factory: pytest.TempPathFactory, stac_items: list[dict[str, Any]]) -> Iterator[str]:
    """URL of a rustac STAC API serving the 25 items."""
    root = tmp_path_factory.mktemp("api")
    collection = api_collection(COLLECTION, WORLD.everything, "test Sentinel-2 L2A")
    hrefs = write_api_inputs(root, collection, stac_items)
    with rustac_serve(hrefs, log_path=root / "rustac.log") as url:
        yield url


LAST_DAY = _day(N_ITEMS)


def _request(
    bbox: tuple[float, float, float, float],
    *,
    start: dt.date = FIRST_DAY,
    end: dt.date = LAST_DAY,
    max_cloud: float = 100.0,
) -> SearchRequest:
    return SearchRequest(bbox_wgs84=bbox, start=start, end=end, max_cloud_pct=max_cloud, collection=COLLECTION)


def _source(url: str, **options: Any) -> StacApiSource:
    options.setdefault("page_size", 5)
    options.setdefault("timeout_s", 5)
    return StacApiSource(url, collection=COLLECTION, **options)


A_IDS = [_item_id(i) for i in range(0, N_ITEMS, 3)]  # i = 0, 3, ..., 24


# ---------------------------------------------------------------------------------------------
# Against the real API
# ---------------------------------------------------------------------------------------------


def test_bbox_search_returns_only_items_over_the_bbox(stac_api: str) -> None:
    items = _source(stac_api).search(_request(WORLD.a_bbox))
    assert _ids(items) == A_IDS
    assert all(it.collection_id == COLLECTION for it in items)


def test_pagination_follows_next_links_over_five_pages(stac_api: str) -> None:
    items = _source(stac_api, page_size=5).search(_request(WORLD.everything))
    assert len(items) == N_ITEMS
    assert _ids(items) == [_item_id(i) for i in range(N_ITEMS)]  # sorted by date, no duplicates


def test_intersects_uses_the_polygon_not_its_bbox(stac_api: str) -> None:
    source = _source(stac_api)
    by_bbox = source.search(_request(WORLD.triangle_bbox))
    by_polygon = source.search(_request(WORLD.triangle_bbox), intersects=WORLD.triangle)
    c_ids = [_item_id(i) for i in range(2, N_ITEMS, 3)]
    assert sorted(_ids(by_bbox)) == sorted(A_IDS + c_ids)
    assert _ids(by_polygon) == A_IDS


def test_datetime_range_is_inclusive_of_whole_days(stac_api: str) -> None:
    items = _source(stac_api).search(_request(WORLD.everything, start=_day(3), end=_day(9)))
    # Items are acquired at 13:19 UTC, so the end day must count as a whole day.
    assert _ids(items) == [_item_id(i) for i in range(3, 10)]


def test_cloud_cover_filtered_on_the_client_when_the_server_lacks_filter(
    stac_api: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = _source(stac_api)
    assert source.server_filters() is False  # rustac's memory backend does not advertise CQL2
    with caplog.at_level("INFO", logger="mrv.imagery.stac_api"):
        items = source.search(_request(WORLD.a_bbox, max_cloud=39.0))
    # A items have cloud 0, 39, 78, 17, 56, 95, 34, 73, 12 (i = 0, 3, ..., 24); 39 is kept (<=).
    assert _ids(items) == [_item_id(i) for i in (0, 3, 9, 18, 24)]
    assert [it.properties["eo:cloud_cover"] for it in items] == [0.0, 39.0, 17.0, 34.0, 12.0]
    assert "on the client" in caplog.text


def test_no_imagery_found_names_aoi_dates_collection_and_provider(stac_api: str) -> None:
    request = _request(WORLD.a_bbox, start=dt.date(2020, 1, 1), end=dt.date(2020, 2, 1))
    with pytest.raises(NoImageryFound) as err:
        _source(stac_api).search(request)
    msg = str(err.value)
    for part in (str(WORLD.a_bbox), "2020-01-01", "2020-02-01", COLLECTION, stac_api, "Widen the dates"):
        assert part in msg


def test_no_imagery_found_when_every_item_is_too_cloudy(stac_api: str) -> None:
    with pytest.raises(NoImageryFound, match=r"\(1 found before the cloud filter\)"):
        _source(stac_api).search(_request(WORLD.a_bbox, start=_day(15), end=_day(15), max_cloud=50.0))


def test_max_items_guard(stac_api: str) -> None:
    with pytest.raises(ImageryError, match="more than max_items=24 items. Narrow the dates or the AOI"):
        _source(stac_api, max_items=24).search(_request(WORLD.everything))
    assert len(_source(stac_api, max_items=25).search(_request(WORLD.everything))) == N_ITEMS


def test_max_items_counts_the_items_left_after_the_client_side_cloud_filter(stac_api: str) -> None:
    # 9 items over A, 5 of them with cloud <= 39 %: the API cannot filter, so all 9 are fetched and 5 kept.
    request = _request(WORLD.a_bbox, max_cloud=39.0)
    assert len(_source(stac_api, max_items=5).search(request)) == 5
    with pytest.raises(ImageryError, match="more than max_items=4 items"):
        _source(stac_api, max_items=4).search(request)
    with pytest.raises(ImageryError, match="more than 8 items before the cloud filter, which runs on the client"):
        _source(stac_api, max_items=5, max_fetched=8).search(request)


def test_load_items_from_the_api_into_reflectance(stac_api: str) -> None:
    source = _source(stac_api)
    items = source.search(_request(WORLD.a_bbox, max_cloud=0.0))
    assert _ids(items) == [_item_id(0)]
    assert all(a.href.startswith("file://") for a in items[0].assets.values())
    scenes = source.load(items, ["red", "nir"], GRID, chunk_px=16)
    ds = scenes.reflectance.compute()
    assert scenes.items == (_item_id(0),)
    assert ds["red"].shape == (1, PX, PX)
    red, nir = ds["red"].values[0], ds["nir"].values[0]
    assert np.isnan(red[:8, :8]).all()  # SCL 9 (cloud) masked
    assert int(np.isnan(red).sum()) == 64
    np.testing.assert_allclose(red[8:, :], 0.2, atol=1e-6)  # 2000 * 1e-4, the BOA offset already removed
    np.testing.assert_allclose(nir[:, 8:], 0.4, atol=1e-6)


def test_signing_modifier_is_applied_to_searched_items(stac_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def sign_inplace(obj: Any) -> Any:  # like planetary_computer.sign_inplace: pages arrive as dicts
        features = obj.get("features", [obj]) if isinstance(obj, dict) else list(getattr(obj, "items", [obj]))
        for feature in features:
            for asset in feature["assets"].values() if isinstance(feature, dict) else feature.assets.values():
                if isinstance(asset, dict):
                    asset["href"] += "?sig=test"
                else:
                    asset.href += "?sig=test"
        return obj

    fake = types.ModuleType("planetary_computer")
    fake.sign_inplace = sign_inplace  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "planetary_computer", fake)
    source = _source(stac_api, profile=load_profile("planetary_computer"))
    items = source.search(_request(WORLD.a_bbox, max_cloud=0.0))
    assert items[0].assets["red"].href.endswith("B04.tif?sig=test")


# ---------------------------------------------------------------------------------------------
# Request construction and faults
# ---------------------------------------------------------------------------------------------


def _landing(base: str, conforms: list[str]) -> dict[str, Any]:
    return {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": "test-api",
        "description": "test",
        "conformsTo": conforms,
        "links": [
            {"rel": "self", "href": base + "/", "type": "application/json"},
            {"rel": "root", "href": base + "/", "type": "application/json"},
            {"rel": "search", "href": base + "/search", "type": "application/geo+json", "method": "POST"},
        ],
    }


def _page(features: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": features, "links": []}


def test_cql2_filter_is_sent_when_the_server_conforms(httpserver: HTTPServer, stac_items: list[dict[str, Any]]) -> None:
    base = httpserver.url_for("").rstrip("/")
    httpserver.expect_request("/", method="GET").respond_with_json(_landing(base, FILTER_CONFORMS))
    cloudy = copy.deepcopy(stac_items[15])  # cloud 95: a filtering server would not return it
    httpserver.expect_request("/search", method="POST").respond_with_json(_page([cloudy]))
    source = _source(base, page_size=7)
    request = _request(WORLD.a_bbox, start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 31), max_cloud=20.0)
    items = source.search(request, intersects=WORLD.triangle)
    body = json.loads(httpserver.log[-1][0].get_data())
    assert body["filter"] == {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 20.0]} == cloud_filter(20)
    assert body["filter-lang"] == "cql2-json"
    assert body["collections"] == [COLLECTION]
    assert body["intersects"] == WORLD.triangle
    assert "bbox" not in body
    assert body["limit"] == 7
    assert body["datetime"].startswith("2024-03-01T00:00:00")
    assert "2024-03-31T23:59:59" in body["datetime"]
    assert _ids(items) == [cloudy["id"]]  # trusted the server: no second, client-side filter


def test_bbox_is_sent_without_filter_when_the_server_does_not_conform(
    httpserver: HTTPServer, stac_items: list[dict[str, Any]]
) -> None:
    base = httpserver.url_for("").rstrip("/")
    httpserver.expect_request("/", method="GET").respond_with_json(_landing(base, CONFORMS))
    httpserver.expect_request("/search", method="POST").respond_with_json(_page([copy.deepcopy(stac_items[0])]))
    _source(base).search(_request(WORLD.a_bbox))
    body = json.loads(httpserver.log[-1][0].get_data())
    assert body["bbox"] == list(WORLD.a_bbox)
    assert "filter" not in body
    assert "intersects" not in body


def test_search_retries_503_then_succeeds(httpserver: HTTPServer, stac_items: list[dict[str, Any]]) -> None:
    base = httpserver.url_for("").rstrip("/")
    httpserver.expect_request("/", method="GET").respond_with_json(_landing(base, CONFORMS))
    calls = {"n": 0}

    def flaky(_request: Request) -> Response:
        calls["n"] += 1
        if calls["n"] <= 2:
            return Response("busy", status=503)
        return Response(json.dumps(_page([copy.deepcopy(stac_items[0])])), content_type="application/geo+json")

    httpserver.expect_request("/search", method="POST").respond_with_handler(flaky)
    items = _source(base, max_retries=4, backoff_s=0.01).search(_request(WORLD.a_bbox))
    assert _ids(items) == [_item_id(0)]
    assert calls["n"] == 3


def test_search_honours_retry_after(httpserver: HTTPServer, stac_items: list[dict[str, Any]]) -> None:
    base = httpserver.url_for("").rstrip("/")
    httpserver.expect_request("/", method="GET").respond_with_json(_landing(base, CONFORMS))
    calls = {"n": 0}

    def throttled(_request: Request) -> Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return Response("slow down", status=429, headers={"Retry-After": "1"})
        return Response(json.dumps(_page([copy.deepcopy(stac_items[0])])), content_type="application/geo+json")

    httpserver.expect_request("/search", method="POST").respond_with_handler(throttled)
    t0 = time.monotonic()
    _source(base, max_retries=2, backoff_s=0.01).search(_request(WORLD.a_bbox))
    assert time.monotonic() - t0 >= 0.9
    assert calls["n"] == 2


def test_search_gives_up_after_max_retries(httpserver: HTTPServer) -> None:
    base = httpserver.url_for("").rstrip("/")
    httpserver.expect_request("/", method="GET").respond_with_json(_landing(base, CONFORMS))
    httpserver.expect_request("/search", method="POST").respond_with_data("down", status=503)
    with pytest.raises(ImageryError, match=r"Searching sentinel-2-l2a at .* failed .* after 2 retries"):
        _source(base, max_retries=2, backoff_s=0.01).search(_request(WORLD.a_bbox))
    assert sum(1 for req, _ in httpserver.log if req.path == "/search") == 3


class _HangingHandler(BaseHTTPRequestHandler):
    """Answers the landing page, then never answers /search (until the test releases it)."""

    release = threading.Event()

    def do_GET(self) -> None:
        base = f"http://{self.headers['Host']}"
        body = json.dumps(_landing(base, CONFORMS)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.release.wait(timeout=10)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hanging_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HangingHandler)
    server.daemon_threads = True
    _HangingHandler.release.clear()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        _HangingHandler.release.set()
        server.shutdown()
        server.server_close()


def test_hanging_server_times_out_cleanly(hanging_server: str) -> None:
    source = _source(hanging_server, timeout_s=0.5, max_retries=1, backoff_s=0.01)
    t0 = time.monotonic()
    with pytest.raises(ImageryError, match=r"failed .*timed out.* 0.5 s timeout"):
        source.search(_request(WORLD.a_bbox))
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 4.0  # two attempts of 0.5 s each, then a clean error


def test_unreachable_api_is_an_imagery_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ImageryError, match="Cannot open the STAC API at http://127.0.0.1:"):
        _source(url, max_retries=0).search(_request(WORLD.a_bbox))


# ---------------------------------------------------------------------------------------------
# Provider profiles and options
# ---------------------------------------------------------------------------------------------


def test_shipped_profiles_load() -> None:
    assert available_profiles("providers") == ["cdse", "earth_search", "earth_search_c1", "planetary_computer"]
    es = load_profile("earth_search")
    assert es.url == "https://earth-search.aws.element84.com/v1"
    assert es.collections == ("sentinel-2-c1-l2a", "sentinel-2-l2a")
    assert es.default_collection == "sentinel-2-c1-l2a"  # Collection 1 is the recommended default
    assert "does not declare the STAC Filter extension" in es.notes
    assert es.raster_offsets_published
    assert not es.requires_signing
    c1 = load_profile("earth_search_c1")
    assert c1.default_collection == "sentinel-2-c1-l2a"
    assert c1.url == es.url
    pc = load_profile("planetary_computer")
    assert pc.url == "https://planetarycomputer.microsoft.com/api/stac/v1"
    assert pc.requires_signing
    assert pc.signing == "planetary_computer"
    assert not pc.raster_offsets_published
    assert "planetary-computer" in pc.notes
    cdse = load_profile("cdse")
    assert cdse.url == "https://stac.dataspace.copernicus.eu/v1"
    assert cdse.default_collection == "sentinel-2-l2a"
    assert cdse.auth == "s3_credentials"
    assert "AWS_S3_ENDPOINT" in cdse.notes


def test_profile_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Unknown provider profile .nope.. Available: cdse, earth_search"):
        load_profile("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("url: ftp://x\ncollections: [a]\nband_naming: common\nraster_offsets_published: true\n")
    with pytest.raises(ConfigError, match="must start with http"):
        load_profile(bad)
    bad.write_text("url: https://x\ncollections: [a]\nband_naming: common\nraster_offsets_published: yes-ish\n")
    with pytest.raises(ConfigError, match="'raster_offsets_published' must be a bool"):
        load_profile(bad)
    bad.write_text(
        "url: https://x\ncollections: [a]\nband_naming: common\nraster_offsets_published: true\nsigning: x\n"
    )
    with pytest.raises(ConfigError, match="'signing' is 'x'; use one of none, planetary_computer"):
        load_profile(bad)


def test_signing_package_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "planetary_computer", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install planetary-computer"):
        StacApiSource.from_profile(load_profile("planetary_computer"))
    # An explicit modifier needs no package.
    source = StacApiSource.from_profile(load_profile("planetary_computer"), modifier=lambda obj: obj)
    assert source.collection == "sentinel-2-l2a"


def test_collection_must_belong_to_the_profile() -> None:
    with pytest.raises(ConfigError, match="not offered by provider 'planetary_computer'"):
        StacApiSource.from_profile(load_profile("planetary_computer"), collection="sentinel-2-c1-l2a", modifier=print)


# ---------------------------------------------------------------------------------------------
# Parity with the offline source on the synthetic region
# ---------------------------------------------------------------------------------------------


def test_api_and_local_catalog_agree_on_the_synthetic_region(tmp_path: Path) -> None:
    from mrv.imagery.local import LocalCatalogSource
    from mrv.synthetic import SceneSpec, build_region

    spec = SceneSpec(width_px=64, height_px=64)
    paths = build_region(tmp_path / "region", spec)
    local = LocalCatalogSource(paths.collection)
    collection = pystac.read_file(str(paths.collection))
    assert isinstance(collection, pystac.Collection)
    hrefs = catalog_api_inputs(paths.collection, tmp_path / "api")  # file:// URIs, as an API serves them
    grid = Grid(crs=spec.crs, bounds=spec.bounds, resolution_m=10.0)
    request = SearchRequest(
        bbox_wgs84=grid.bbox_wgs84(),
        start=dt.date(2000, 1, 1),
        end=dt.date(2030, 12, 31),
        max_cloud_pct=60.0,
        collection=collection.id,
    )
    expected = local.search(request)
    assert len(expected) >= 2
    with rustac_serve(hrefs, log_path=tmp_path / "rustac.log") as url:
        source = StacApiSource(url, collection=collection.id, page_size=3, timeout_s=5)
        found = source.search(request)
    assert _ids(found) == _ids(expected)
    bands = ["red", "nir"]
    via_api = source.load(found[:2], bands, grid, chunk_px=32).reflectance.compute()
    via_local = local.load(expected[:2], bands, grid, chunk_px=32).reflectance.compute()
    for band in bands:
        np.testing.assert_array_equal(via_api[band].values, via_local[band].values)
    assert np.isfinite(via_api["red"].values).any()


# ---------------------------------------------------------------------------------------------
# Loading and compositing details (shared by every source)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nanmedian_equals_numpy_without_a_warning_per_empty_pixel(dtype: str) -> None:
    import warnings

    import xarray as xr

    from mrv.imagery.composite import nanmedian

    rng = np.random.default_rng(3)
    for n_time in range(1, 8):
        values = rng.random((n_time, 40, 30)).astype(dtype)
        values[rng.random(values.shape) < 0.45] = np.nan
        values[:, :5, :5] = np.nan  # pixels never observed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = np.nanmedian(values, axis=0)
        da = xr.DataArray(values, dims=("time", "y", "x"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns once per all-NaN pixel; this must not
            eager = nanmedian(da).values
            lazy = nanmedian(da.chunk({"time": 1, "y": 16, "x": 16})).compute().values
        np.testing.assert_array_equal(eager, want)
        np.testing.assert_array_equal(lazy, want)
        assert eager.dtype == want.dtype
        assert np.isnan(eager[:5, :5]).all()


def test_read_chunks_grow_with_few_items_and_stay_within_the_task_budget() -> None:
    from mrv.imagery.load import READ_TASK_BYTES, read_chunk_px

    big = Grid(crs=CRS, bounds=(X0, Y0 - 20_000, X0 + 20_000, Y0), resolution_m=10.0)  # 2000 x 2000 px
    assert read_chunk_px(1, 256, big) == 2000  # 8 x 256 = 2048, capped at the grid
    assert read_chunk_px(2, 256, big) == 1280
    assert read_chunk_px(4, 256, big) == 1024
    assert read_chunk_px(200, 256, big) == 256  # never below chunk_px
    assert read_chunk_px(1, 256, GRID) == 256
    for n in (1, 4, 20, 60):
        side = read_chunk_px(n, 128, big)
        assert side % 128 == 0 or side == 2000
        assert n * side * side * 4 <= READ_TASK_BYTES


def test_items_with_different_asset_keys_load_together_in_search_order(stac_items: list[dict[str, Any]]) -> None:
    from mrv.imagery.load import load_reflectance

    a, b, c = (pystac.Item.from_dict(copy.deepcopy(stac_items[i])) for i in (0, 3, 6))
    b.properties["earthsearch:boa_offset_applied"] = False  # b follows raster:bands (offset -0.1), a and c do not
    b_red = b.assets.pop("red")
    b_red.extra_fields["raster:bands"][0]["offset"] = 0.0  # so b's red is 0.2, b's nir 0.3, a's and c's 0.2 / 0.4
    b.add_asset("B04", b_red)  # another provider's key for the same band
    loaded = load_reflectance([a, b, c], ["red", "nir"], GRID, chunk_px=16, check=False)
    ds = loaded.reflectance.compute()
    assert loaded.items == (a.id, b.id, c.id)
    assert list(ds["item_id"].values) == [a.id, b.id, c.id]
    red = ds["red"].values[:, 8:, 8:]  # clear of the cloud in the top-left corner
    np.testing.assert_allclose(red, 0.2, atol=1e-6)
    nir = ds["nir"].values[:, 8:, 8:]
    np.testing.assert_allclose(nir[[0, 2]], 0.4, atol=1e-6)
    np.testing.assert_allclose(nir[1], 0.3, atol=1e-6)
    assert ds["red"].attrs["scaling_rule"].startswith("earthsearch:boa_offset_applied")
