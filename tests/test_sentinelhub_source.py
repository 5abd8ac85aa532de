"""SentinelHubSource against a local fake of the Sentinel Hub OAuth, Catalog and Process APIs."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Any

import numpy as np
import pytest
from pytest_httpserver import HTTPServer
from rasterio.io import MemoryFile
from sentinelhub.download.sentinelhub_client import SentinelHubDownloadClient
from werkzeug import Request, Response

from mrv.errors import ConfigError, NoImageryFound
from mrv.grid import Grid
from mrv.imagery.sentinelhub_source import SentinelHubSource
from mrv.imagery.source import SearchRequest

SECRET = "s3cr3t-do-not-leak"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.access-token-do-not-leak.sig"  # what the fake OAuth server issues
CLIENT_ID = "client-abc"
BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]
GRID = Grid(crs="EPSG:32633", bounds=(500000.0, 5000000.0, 500050.0, 5000040.0), resolution_m=10.0)
CLOUD_PIXELS = [(0, 0), (1, 3), (3, 4)]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # no user sentinelhub profile
    monkeypatch.delenv("SH_CLIENT_ID", raising=False)
    monkeypatch.delenv("SH_CLIENT_SECRET", raising=False)
    monkeypatch.setattr(SentinelHubDownloadClient, "_CACHED_SESSIONS", {})


def _feature(i: int, day: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": f"S2A_TEST_{i}",
        "geometry": {"type": "Polygon", "coordinates": [[[15, 45], [15.1, 45], [15.1, 45.1], [15, 45.1], [15, 45]]]},
        "bbox": [15, 45, 15.1, 45.1],
        "properties": {"datetime": f"{day}T10:00:00Z", "eo:cloud_cover": 5.0},
        # no "links"/"assets": the source must fill them in
    }


def _expected() -> np.ndarray:
    """Known reflectance (bands, y, x) plus SCL as the last band."""
    h, w = GRID.height, GRID.width
    refl = np.stack([0.01 * (b + 1) + 0.001 * np.arange(h * w).reshape(h, w) for b in range(6)]).astype(np.float32)
    scl = np.full((1, h, w), 4, dtype=np.float32)
    for r, c in CLOUD_PIXELS:
        scl[0, r, c] = 9
    return np.concatenate([refl, scl])


def _tiff_bytes(arr: np.ndarray) -> bytes:
    with (
        MemoryFile() as mem,
        mem.open(
            driver="GTiff",
            width=arr.shape[2],
            height=arr.shape[1],
            count=arr.shape[0],
            dtype="float32",
            crs=GRID.crs,
            transform=GRID.transform,
            interleave="pixel",
        ) as dst,
    ):
        dst.write(arr)
        dst.close()
        return bytes(mem.read())


@pytest.fixture
def sh_server(httpserver: HTTPServer) -> HTTPServer:
    token = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3600, "expires_at": time.time() + 3600}
    httpserver.expect_request("/oauth/token", method="POST").respond_with_json(token)

    def catalog(request: Request) -> Response:
        body = json.loads(request.get_data())
        if body.get("next") is None:
            page = {"features": [_feature(1, "2024-05-01"), _feature(2, "2024-05-01")], "context": {"next": 2}}
        else:
            page = {"features": [_feature(3, "2024-05-11")], "context": {}}
        return Response(json.dumps(page), content_type="application/json")

    httpserver.expect_request("/api/v1/catalog/1.0.0/search", method="POST").respond_with_handler(catalog)
    httpserver.expect_request("/api/v1/process", method="POST").respond_with_data(
        _tiff_bytes(_expected()), content_type="image/tiff"
    )
    return httpserver


def _source(server: HTTPServer) -> SentinelHubSource:
    return SentinelHubSource(
        base_url=server.url_for("").rstrip("/"),
        token_url=server.url_for("/oauth/token"),
        client_id=CLIENT_ID,
        client_secret=SECRET,
    )


def _request() -> SearchRequest:
    return SearchRequest(
        bbox_wgs84=GRID.bbox_wgs84(),
        start=dt.date(2024, 5, 1),
        end=dt.date(2024, 5, 31),
        max_cloud_pct=20.0,
        collection="sentinel-2-l2a",
    )


def test_search_and_load(sh_server: HTTPServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    src = _source(sh_server)
    items = src.search(_request())
    assert [i.id for i in items] == ["S2A_TEST_1", "S2A_TEST_2", "S2A_TEST_3"]

    searches = [r for r, _ in sh_server.log if r.path.endswith("/search")]
    assert len(searches) == 2
    first = json.loads(searches[0].get_data())
    assert first["collections"] == ["sentinel-2-l2a"]
    assert "eo:cloud_cover <= 20.0" in first["filter"]
    assert json.loads(searches[1].get_data())["next"] == 2

    loaded = src.load(items, BANDS, GRID, chunk_px=256)
    ds = loaded.reflectance
    assert loaded.items == ("S2A_TEST_1", "S2A_TEST_2", "S2A_TEST_3")
    assert ds.sizes == {"time": 2, "y": GRID.height, "x": GRID.width}  # two acquisition dates
    assert ds.attrs["crs"] == GRID.crs
    np.testing.assert_allclose(ds.x.values, GRID.x_coords())
    np.testing.assert_allclose(ds.y.values, GRID.y_coords())

    expected = _expected()
    cloud = np.zeros(GRID.shape, dtype=bool)
    for r, c in CLOUD_PIXELS:
        cloud[r, c] = True
    for b, name in enumerate(BANDS):
        da = ds[name]
        assert da.dtype == np.float32
        assert da.dims == ("time", "y", "x")
        vals = da.isel(time=0).values
        assert np.isnan(vals[cloud]).all()
        np.testing.assert_allclose(vals[~cloud], expected[b][~cloud], rtol=1e-6)

    process = [r for r, _ in sh_server.log if r.path == "/api/v1/process"]
    assert len(process) == 2
    assert all(r.headers.get("Authorization") == f"Bearer {TOKEN}" for r in process + searches)
    payload = json.loads(process[0].get_data())
    assert payload["output"]["width"] == GRID.width
    assert payload["output"]["height"] == GRID.height
    assert payload["input"]["data"][0]["processing"]["harmonizeValues"] is True
    assert payload["input"]["bounds"]["bbox"] == list(GRID.bounds)

    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in str(record.args)


def test_access_token_is_never_logged_at_any_level(sh_server: HTTPServer, caplog: pytest.LogCaptureFixture) -> None:
    """requests_oauthlib logs the token response and "Obtained token {...}" at DEBUG (issue 16)."""
    caplog.set_level(logging.DEBUG)  # every logger, every level
    src = _source(sh_server)
    src.load(src.search(_request()), BANDS, GRID, chunk_px=256)
    oauth = [r for r in caplog.records if r.name.startswith("requests_oauthlib")]
    assert any("Obtained token" in r.getMessage() for r in oauth)  # the record exists, redacted
    for record in caplog.records:
        for text in (record.getMessage(), str(record.msg), str(record.args)):
            assert TOKEN not in text, record.name
            assert SECRET not in text, record.name
    assert TOKEN not in caplog.text


def test_empty_search_raises(httpserver: HTTPServer) -> None:
    token = {"access_token": "t", "token_type": "Bearer", "expires_in": 3600, "expires_at": time.time() + 3600}
    httpserver.expect_request("/oauth/token", method="POST").respond_with_json(token)
    httpserver.expect_request("/api/v1/catalog/1.0.0/search", method="POST").respond_with_json(
        {"features": [], "context": {}}
    )
    with pytest.raises(NoImageryFound, match="sentinel-2-l2a"):
        _source(httpserver).search(_request())


def test_missing_credentials() -> None:
    with pytest.raises(ConfigError, match="SH_CLIENT_ID.*SH_CLIENT_SECRET"):
        SentinelHubSource(base_url="http://127.0.0.1:1")


def test_credentials_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SH_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SH_CLIENT_SECRET", SECRET)
    src = SentinelHubSource(base_url="http://127.0.0.1:1")
    assert SECRET not in repr(src._config)


def test_unknown_band(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SH_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SH_CLIENT_SECRET", SECRET)
    src = SentinelHubSource(base_url="http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="rededge1"):
        src.load([], ["rededge1"], GRID, chunk_px=256)
