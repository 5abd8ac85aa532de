"""``mrv run`` with ``imagery.source: sentinelhub`` end to end, against a local Sentinel Hub on 127.0.0.1.

The fake (:mod:`sentinelhub_server`) serves a generated region through the OAuth token, Catalog and
Process endpoints and renders Process API responses from the region's COGs the way Sentinel Hub does.
The same region is also run with ``imagery.source: local``; both are ``mrv run`` subprocesses on the
session's Prefect test server, and their covariate stacks must agree.

Tolerance: the reflectance bands are the same numbers on both paths except where a 20 m band (B11, B12)
is interpolated onto the 10 m grid: the fake interpolates in floating point, odc-stac into the uint16 DN
of the asset, so the two differ by up to 0.5 DN = 5e-5 reflectance (:data:`REFL_ATOL`,
``test_source_matches_local_loader`` checks exactly this on every date). Through the bare-soil composite
and the indices (NBR2, BSI: ratios of reflectances around 0.1-0.4) that becomes at most a few 1e-4, unless
the difference moves an observation across the bare-soil NBR2 threshold and changes which observations a
pixel's median takes: such pixels may differ by more, and a pixel may have bare soil on one path only,
so a small share of pixels is allowed to differ (:data:`MAX_DIFFERENT_SHARE`). Serving the wrong date or
band order changes the reflectance by 1e-2 or more (checked below), far outside both tolerances.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import xarray as xr
import yaml
from regions import finish_mrv_run, region_config, run_env, start_mrv_run
from sentinelhub.download.sentinelhub_client import SentinelHubDownloadClient
from sentinelhub_server import CATALOG_SEARCH_PATH, PROCESS_PATH, TOKEN_PATH, Exchange, SentinelHubFake

from mrv.errors import ConfigError
from mrv.grid import Grid
from mrv.imagery.local import LocalCatalogSource
from mrv.imagery.sentinelhub_source import CDSE_TOKEN_URL, SentinelHubSource
from mrv.imagery.source import SearchRequest
from mrv.pipeline.layout import RunLayout
from mrv.raster import read_raster
from mrv.synthetic import RegionPaths, SceneSpec

SPEC = SceneSpec(seed=5, width_px=96, height_px=96, n_fields=4, n_lab_sites=40, n_crowd=10)
SECTIONS: dict[str, dict[str, Any]] = {
    "model": {"n_estimators": 30},
    "accounting": {"n_simulations": 100},
    "dask": {"n_workers": 1},
}
BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]
CLIENT_ID = "mrv-e2e-client"
COLLECTION = "sentinel-2-l2a"
PAGE_LIMIT = 3
"""Catalog page size of the fake: a round's four scenes come in two pages."""
TILE_PX = 48
"""``imagery.tile_px`` of the Sentinel Hub run: several tiles, so search and load run once per tile."""
REFL_ATOL = 6e-5
"""0.5 DN (uint16 rounding of odc-stac's bilinear interpolation) plus float32 rounding."""
COV_ATOL = 1e-3
MAX_DIFFERENT_SHARE = 0.005
"""Share of pixels allowed to differ by more than :data:`COV_ATOL` (or in validity); 0.03 % do on this
region. With Sentinel Hub's default NEAREST upsampling of the 20 m bands (the source before it asked for
BILINEAR) 1.2 % of the pixels changed validity and most NBR2 / BSI values moved by more than 1e-3."""


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RegionPaths]:
    """The generated region and the ``imagery.source: local`` run config for it."""
    root = tmp_path_factory.mktemp("sh_region")
    return region_config(root, SPEC, name="local", output_dir=root / "unused", sections=SECTIONS)


@pytest.fixture
def secret() -> str:
    return "sh-secret-" + secrets.token_hex(16)


@pytest.fixture
def fake(region: tuple[Path, RegionPaths], secret: str) -> Iterator[SentinelHubFake]:
    with SentinelHubFake(
        region[1].collection, client_id=CLIENT_ID, client_secret=secret, collection=COLLECTION, page_limit=PAGE_LIMIT
    ) as server:
        yield server


@pytest.fixture
def sh_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user sentinelhub profile, a fresh session cache, plain http allowed for the OAuth token request."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for var in ("SH_CLIENT_ID", "SH_CLIENT_SECRET", "SH_PROFILE", "SH_TOKEN_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(SentinelHubDownloadClient, "_CACHED_SESSIONS", {})


def _token(fake: SentinelHubFake, secret: str) -> requests.Response:
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": secret}
    return requests.post(fake.token_url, data=form, timeout=10)


# -- the fake speaks the protocol (and says no) ---------------------------------------------------------------


def test_fake_rejects_wrong_credentials_and_missing_tokens(fake: SentinelHubFake, secret: str) -> None:
    wrong = _token(fake, secret + "x")
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "unauthorized_client"
    assert secret not in wrong.text
    search: dict[str, Any] = {"collections": [COLLECTION], "limit": 10}
    assert requests.post(fake.url + CATALOG_SEARCH_PATH, json=search, timeout=10).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert requests.post(fake.url + CATALOG_SEARCH_PATH, json=search, headers=bad, timeout=10).status_code == 401
    assert requests.post(fake.url + PROCESS_PATH, json={}, headers=bad, timeout=10).status_code == 401

    good = _token(fake, secret)
    assert good.status_code == 200
    auth = {"Authorization": f"Bearer {good.json()['access_token']}"}
    pages = [requests.post(fake.url + CATALOG_SEARCH_PATH, json=search, headers=auth, timeout=10).json()]
    while "next" in pages[-1]["context"]:
        body = search | {"next": pages[-1]["context"]["next"]}
        pages.append(requests.post(fake.url + CATALOG_SEARCH_PATH, json=body, headers=auth, timeout=10).json())
    assert [len(p["features"]) for p in pages] == [PAGE_LIMIT, PAGE_LIMIT, len(fake.scenes) - 2 * PAGE_LIMIT]
    assert [f["id"] for p in pages for f in p["features"]] == [s.id for s in fake.scenes]
    cloudy = search | {"filter": "eo:cloud_cover > 20", "filter-lang": "cql2-text"}
    got = requests.post(fake.url + CATALOG_SEARCH_PATH, json=cloudy, headers=auth, timeout=10).json()
    assert {f["id"] for f in got["features"]} == {s.id for s in fake.scenes if s.cloud_cover > 20} != set()

    # An evalscript the fake cannot interpret is refused, not answered with something plausible.
    process: dict[str, Any] = {
        "input": {"bounds": {"bbox": [0, 0, 1, 1]}, "data": [{"type": COLLECTION}]},
        "evalscript": "//VERSION=3\nfunction setup() { return {input: ['B04'], output: {bands: 1}}; }\n"
        "function evaluatePixel(s) { return [2 * s.B04]; }",
        "output": {"width": 1, "height": 1},
    }
    refused = requests.post(fake.url + PROCESS_PATH, json=process, headers=auth, timeout=10)
    assert refused.status_code == 400, refused.text
    assert [e.client_id for e in fake.of(TOKEN_PATH)] == [CLIENT_ID, CLIENT_ID]
    assert all(e.body is None for e in fake.of(TOKEN_PATH))  # the fake keeps no secret


def test_source_reports_rejected_credentials(fake: SentinelHubFake, secret: str, sh_env: None) -> None:
    source = SentinelHubSource(base_url=fake.url, client_id=CLIENT_ID, client_secret=secret[::-1])
    request = SearchRequest((0.0, 0.0, 1.0, 1.0), dt.date(2021, 1, 1), dt.date(2021, 12, 31), 80.0, COLLECTION)
    with pytest.raises(ConfigError, match="SH_CLIENT_SECRET") as err:
        source.search(request)
    assert secret not in str(err.value)
    assert secret[::-1] not in str(err.value)


@pytest.mark.parametrize(
    ("base_url", "token_url"),
    [
        ("https://services.sentinel-hub.com", "https://services.sentinel-hub.com" + TOKEN_PATH),
        ("https://services-uswest2.sentinel-hub.com/", "https://services.sentinel-hub.com" + TOKEN_PATH),
        ("https://sh.dataspace.copernicus.eu", CDSE_TOKEN_URL),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080" + TOKEN_PATH),
    ],
)
def test_token_url_follows_deployment(base_url: str, token_url: str, sh_env: None) -> None:
    source = SentinelHubSource(base_url=base_url, client_id=CLIENT_ID, client_secret="x")
    assert source._config.sh_token_url == token_url


def test_sources_for_any_deployment_and_collection(sh_env: None) -> None:
    """The default deployment (sentinelhub's own collection URL) and one URL with two collection names."""
    for base, collection in [
        ("https://services.sentinel-hub.com", COLLECTION),
        ("https://services.sentinel-hub.com/", "sentinel-2-l2a-other"),
        ("http://127.0.0.1:8080", COLLECTION),
        ("http://127.0.0.1:8080", "sentinel-2-l2a-other"),
    ]:
        source = SentinelHubSource(base_url=base, client_id=CLIENT_ID, client_secret="x", collection_name=collection)
        assert source._collection.service_url == base.rstrip("/")
        assert source._collection.api_id == COLLECTION


def test_token_url_from_environment(monkeypatch: pytest.MonkeyPatch, sh_env: None) -> None:
    monkeypatch.setenv("SH_TOKEN_URL", "https://auth.example.org/token")
    source = SentinelHubSource(base_url="https://sh.dataspace.copernicus.eu", client_id=CLIENT_ID, client_secret="x")
    assert source._config.sh_token_url == "https://auth.example.org/token"


# -- the source against the fake, in process: the tolerance and that it discriminates -------------------------


def _offset_grid() -> Grid:
    """A grid inside the region that is not aligned with the 20 m pixels (odd 10 m offsets)."""
    b = SPEC.bounds
    return Grid(crs=SPEC.crs, bounds=(b[0] + 30, b[1] + 50, b[2] - 110, b[3] - 70), resolution_m=SPEC.resolution_m)


def test_source_matches_local_loader(
    fake: SentinelHubFake, secret: str, region: tuple[Path, RegionPaths], sh_env: None
) -> None:
    grid = _offset_grid()
    rnd = SPEC.rounds[0]
    request = SearchRequest(
        grid.bbox_wgs84(),
        dt.date.fromisoformat(rnd.acquisition_dates[0]),
        dt.date.fromisoformat(rnd.acquisition_dates[-1]),
        100.0,
        COLLECTION,
    )
    local_source = LocalCatalogSource(region[1].collection)
    local = local_source.load(local_source.search(request), BANDS, grid, chunk_px=64).reflectance.compute()
    source = SentinelHubSource(base_url=fake.url, client_id=CLIENT_ID, client_secret=secret)
    items = source.search(request)
    assert [fake.stac_id(i.id) for i in items] == [str(i) for i in local["item_id"].values]
    sh = source.load(items, BANDS, grid, chunk_px=64).reflectance
    assert sh.sizes == local.sizes == {"time": len(rnd.acquisition_dates), "y": grid.height, "x": grid.width}

    def close(a: xr.DataArray, b: xr.DataArray) -> bool:
        return bool(np.allclose(a.values, b.values, rtol=0, atol=REFL_ATOL, equal_nan=True))

    for t in range(sh.sizes["time"]):
        np.testing.assert_array_equal(sh["scl"][t].values, local["scl"][t].values)
        for band in BANDS:
            assert close(sh[band][t], local[band][t]), (t, band)
    # The comparison tells dates and bands apart: another date, or bands in another order, would fail it.
    for t, u in itertools.permutations(range(sh.sizes["time"]), 2):
        assert not close(sh["red"][t], local["red"][u]), (t, u)
    for a, b in itertools.permutations(BANDS, 2):
        assert not close(sh[a][0], local[b][0]), (a, b)

    process = fake.of(PROCESS_PATH)
    assert len(process) == sh.sizes["time"]
    assert all(e.status == 200 for e in process)
    data = process[0].body["input"]["data"]
    assert [(d["id"], d["processing"]["upsampling"]) for d in data] == [("refl", "BILINEAR"), ("scl", "NEAREST")]
    assert all(d["processing"]["harmonizeValues"] is True for d in data)
    days = [e.body["input"]["data"][0]["dataFilter"]["timeRange"]["from"][:10] for e in process]
    assert days == list(rnd.acquisition_dates)
    for e in process:  # the scenes' acquisition time, not the whole day: other same-day scenes stay out
        span = e.body["input"]["data"][0]["dataFilter"]["timeRange"]
        t0, t1 = (dt.datetime.fromisoformat(span[k].replace("Z", "+00:00")) for k in ("from", "to"))
        assert dt.timedelta(0) < t1 - t0 <= dt.timedelta(minutes=2), span
    assert [e.served for e in process] == [(i.id,) for i in items]


# -- mrv run ----------------------------------------------------------------------------------------------------


def _process_day(exchange: Exchange) -> dt.date:
    return dt.date.fromisoformat(exchange.body["input"]["data"][0]["dataFilter"]["timeRange"]["from"][:10])


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.slow
def test_mrv_run_with_sentinelhub_source_matches_local_catalog(
    tmp_path: Path, prefect_api: str, region: tuple[Path, RegionPaths], fake: SentinelHubFake, secret: str
) -> None:
    local_cfg, paths = region
    env = run_env(tmp_path, prefect_api)
    # Credentials as a user gives them: environment variables; no sentinelhub profile is found because
    # the config location (XDG_CONFIG_HOME/sentinelhub/config.toml) is empty.
    sh_env = env | {
        "SH_CLIENT_ID": CLIENT_ID,
        "SH_CLIENT_SECRET": secret,
        "OAUTHLIB_INSECURE_TRANSPORT": "1",  # the fake speaks http
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
    }
    cfg = yaml.safe_load(local_cfg.read_text())
    imagery = {k: v for k, v in cfg["imagery"].items() if k != "catalog"}
    cfg["imagery"] = imagery | {
        "source": "sentinelhub",
        "url": fake.url,
        "collection": COLLECTION,
        "tile_px": TILE_PX,
        "chunk_px": 16,
    }
    cfg["name"] = "sentinelhub"
    sh_cfg = tmp_path / "sentinelhub.yaml"
    sh_cfg.write_text(yaml.safe_dump(cfg))
    assert secret not in sh_cfg.read_text()

    local, sh = RunLayout(tmp_path / "run_local"), RunLayout(tmp_path / "run_sentinelhub")
    local_run = start_mrv_run(local_cfg, local.root, env, tmp_path / "local_run.log")  # both at once (2 cores)
    try:
        finish_mrv_run(start_mrv_run(sh_cfg, sh.root, sh_env, tmp_path / "sentinelhub_run.log"), "imagery.source: sentinelhub")
    finally:
        finish_mrv_run(local_run, "imagery.source: local")

    # The secret went to the token endpoint only: not into the run directory, Prefect home or the output.
    secret_bytes = secret.encode()
    assert _files_containing(sh.root, secret_bytes) == []
    assert _files_containing(tmp_path / "prefect_home", secret_bytes) == []
    assert secret_bytes not in (tmp_path / "sentinelhub_run.log").read_bytes()

    report = json.loads((sh.root / "report.json").read_text())
    assert report["project"]["soc_stock_t_ha"]["mean"] > 0
    tokens = fake.of(TOKEN_PATH)
    assert tokens
    assert all(e.status == 200 and e.client_id == CLIENT_ID for e in tokens)
    searches, process = fake.of(CATALOG_SEARCH_PATH), fake.of(PROCESS_PATH)
    assert all(e.status == 200 and e.client_id == CLIENT_ID for e in searches + process)
    assert any(e.body.get("next") for e in searches), "the catalog was not paged"

    assert len(cfg["rounds"]) == 2
    served = list(dict.fromkeys(fake.searched_ids()))
    for rnd in cfg["rounds"]:
        name = rnd["name"]
        summary = json.loads(sh.imagery_summary(name).read_text())
        local_summary = json.loads(local.imagery_summary(name).read_text())
        assert summary["source"] == "sentinel-hub", summary
        assert summary["tiles"] > 1, summary
        assert summary["items"]
        assert set(summary["items"]) <= set(served)
        assert [fake.stac_id(i) for i in summary["items"]] == local_summary["items"]
        assert summary["dropped"] == local_summary["dropped"] == []
        # One Process API request per tile and acquisition day, each mosaicking that day's scene.
        calls = [e for e in process if rnd["start"] <= _process_day(e) <= rnd["end"]]
        assert len(calls) == summary["tiles"] * len(summary["items"])
        assert {e.served for e in calls} == {(i,) for i in summary["items"]}

        via_sh, grid_sh, names_sh = read_raster(sh.covariates(name))
        via_local, grid_local, names_local = read_raster(local.covariates(name))
        assert names_sh == names_local
        assert grid_sh == grid_local
        finite_sh, finite_local = np.isfinite(via_sh), np.isfinite(via_local)
        assert finite_local.mean() > 0.5
        assert (finite_sh != finite_local).mean() <= MAX_DIFFERENT_SHARE, name
        both = finite_sh & finite_local
        diff = np.abs(via_sh - via_local)[both]
        assert (diff > COV_ATOL).mean() <= MAX_DIFFERENT_SHARE, (name, np.percentile(diff, [50, 99, 100]))
        # ... and the stacks are not merely alike: a stack with two covariates swapped would fail.
        swapped = via_local[[1, 0, *range(2, len(names_local))]]
        assert (np.abs(via_sh - swapped)[both] > COV_ATOL).mean() > MAX_DIFFERENT_SHARE
