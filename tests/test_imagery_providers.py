"""Real item JSON of every provider, loaded from tiny local files with known DNs, read at the right reflectance.

Each item in ``tests/fixtures/providers/<provider>/`` is used as published; the test writes, under the assets
it loads, tiny COGs (JPEG2000 for Copernicus Data Space) whose DNs encode a known reflectance by the
provider's documented convention (not by this project's code):

* Earth Search v1 ``sentinel-2-l2a``, ``earthsearch:boa_offset_applied: true``: DN = 10000 x reflectance (the
  1000 DN offset already removed, Element84/earth-search#9);
* Earth Search collection 1 and Copernicus Data Space, baseline 05.11: DN = 10000 x reflectance + 1000 (raw
  ESA DNs, BOA_ADD_OFFSET -1000);
* Planetary Computer, baseline 02.12: DN = 10000 x reflectance (no offset before 04.00).

Every band must come back at that reflectance, SCL untouched (nearest neighbour from 20 m), masked where SCL
is not clear land.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin

from mrv.errors import ConfigError
from mrv.grid import Grid
from mrv.imagery.bands import SCL, resolve_assets
from mrv.imagery.load import load_reflectance
from mrv.imagery.s3 import check_s3_settings

PROVIDERS = Path(__file__).parent / "fixtures" / "providers"
BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]
N10 = 32  # pixels of 10 m per side of the tiny scene (320 m)
#: Reflectance of the 20 m bands (constant, so that bilinear resampling to 10 m is exact).
TRUE_20M = {"swir16": 0.2113, "swir22": 0.1387}
#: Base reflectance of the 10 m bands (every pixel differs, see _truth).
BASE_10M = {"blue": 0.031, "green": 0.052, "red": 0.043, "nir": 0.287}


def _items(provider: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((PROVIDERS / provider).glob("*.json"))]


CASES = [
    (provider, item["id"], encoding)
    for provider, encoding in [
        ("earth_search_v1", "offset_removed"),
        ("earth_search_c1", "raw_with_offset"),
        ("planetary_computer", "raw_no_offset"),
        ("cdse", "raw_with_offset"),
    ]
    for item in _items(provider)
]


def _crs(item: dict[str, Any], asset: dict[str, Any]) -> str:
    for src in (asset, item["properties"]):
        if src.get("proj:code"):
            return str(src["proj:code"])
        if src.get("proj:epsg"):
            return f"EPSG:{src['proj:epsg']}"
    raise AssertionError(f"{item['id']} has no CRS")


def _truth(band: str, seed: int) -> np.ndarray:
    """Known reflectance of one band on the 10 m grid (float64)."""
    if band in TRUE_20M:
        return np.full((N10, N10), TRUE_20M[band])
    rng = np.random.default_rng(seed)
    return BASE_10M[band] + rng.integers(0, 400, size=(N10, N10)) / 10_000


def _scl20() -> np.ndarray:
    scl = np.full((N10 // 2, N10 // 2), 4, dtype="uint8")  # vegetation
    scl[:, 8:] = 5  # bare soil
    scl[:3, :3] = 9  # cloud
    scl[12:, :2] = 3  # shadow
    scl[15, 15] = 0  # nodata
    return scl


def _encode(refl: np.ndarray, encoding: str) -> np.ndarray:
    dn = np.rint(refl * 10_000) + (1000 if encoding == "raw_with_offset" else 0)
    return dn.astype("uint16")


def _write(path: Path, data: np.ndarray, *, crs: str, x0: float, y0: float, res: float, jp2: bool) -> None:
    profile: dict[str, Any] = {
        "height": data.shape[0],
        "width": data.shape[1],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": from_origin(x0, y0, res, res),
        "nodata": 0,
    }
    profile |= {"driver": "JP2OpenJPEG", "QUALITY": 100, "REVERSIBLE": "YES"} if jp2 else {"driver": "COG"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def localise(item_dict: dict[str, Any], root: Path, encoding: str, *, seed: int = 0) -> tuple[pystac.Item, Grid]:
    """The item with the hrefs of its band and SCL assets pointed at tiny local files with known DNs."""
    d = copy.deepcopy(item_dict)
    d["links"] = [link for link in d.get("links", []) if link.get("rel") not in ("self", "root", "parent")]
    item = pystac.Item.from_dict(copy.deepcopy(d))
    keys = resolve_assets(item, [*BANDS, SCL])
    first = d["assets"][keys["red"]]
    crs = _crs(d, first)
    x0, y0 = float(first["proj:transform"][2]), float(first["proj:transform"][5])
    root.mkdir(parents=True, exist_ok=True)
    for name, key in keys.items():
        asset = d["assets"][key]
        res = 20.0 if name == SCL or name in TRUE_20M else 10.0
        n = int(N10 * 10 / res)
        jp2 = "jp2" in (asset.get("type") or "")
        if name == SCL:
            data = _scl20()
        else:
            refl = _truth(name, seed + BANDS.index(name))
            data = _encode(refl[:: int(res // 10), :: int(res // 10)], encoding)
        path = root / f"{key}.{'jp2' if jp2 else 'tif'}"
        _write(path, data, crs=crs, x0=x0, y0=y0, res=res, jp2=jp2)
        asset["href"] = path.as_uri()
        asset["proj:shape"] = [n, n]
        asset["proj:transform"] = [res, 0, x0, 0, -res, y0]
        if "proj:bbox" in asset:
            asset["proj:bbox"] = [x0, y0 - n * res, x0 + n * res, y0]
    grid = Grid(crs=crs, bounds=(x0, y0 - N10 * 10, x0 + N10 * 10, y0), resolution_m=10.0)
    return pystac.Item.from_dict(d), grid


@pytest.mark.parametrize(("provider", "item_id", "encoding"), CASES, ids=[c[1] for c in CASES])
def test_real_items_read_at_the_right_reflectance(provider: str, item_id: str, encoding: str, tmp_path: Path) -> None:
    item_dict = next(i for i in _items(provider) if i["id"] == item_id)
    item, grid = localise(item_dict, tmp_path / item_id, encoding, seed=7)
    loaded = load_reflectance([item], BANDS, grid, chunk_px=16)
    assert loaded.items == (item_id,)
    assert loaded.dropped == ()
    assert loaded.corrected == ()
    assert loaded.flagged == ()
    ds = loaded.reflectance.compute()
    scl10 = np.repeat(np.repeat(_scl20(), 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(ds["scl"].values[0], scl10)  # SCL untouched: classes, nearest neighbour
    clear = np.isin(scl10, (4, 5))
    for band in BANDS:
        values = ds[band].values[0]
        assert values.dtype == np.float32
        assert np.isnan(values[~clear]).all(), band
        np.testing.assert_allclose(values[clear], _truth(band, 7 + BANDS.index(band))[clear], atol=2e-6, err_msg=band)


def test_cdse_assets_are_jpeg2000_with_stac_11_scaling_and_scl_without_band_entry() -> None:
    (item_dict,) = _items("cdse")
    item = pystac.Item.from_dict(item_dict)
    keys = resolve_assets(item, [*BANDS, SCL])
    # the native resolution of each band, never the TCI composite, SCL found by its key
    assert keys == {
        "blue": "B02_10m",
        "green": "B03_10m",
        "red": "B04_10m",
        "nir": "B08_10m",
        "swir16": "B11_20m",
        "swir22": "B12_20m",
        "scl": "SCL_20m",
    }
    assert item.assets["B04_10m"].media_type == "image/jp2"
    assert "raster:bands" not in item.assets["B04_10m"].extra_fields
    assert item.properties["processing:version"] == "05.11"
    assert "s2:processing_baseline" not in item.properties


@pytest.fixture
def s3_server() -> Iterator[str]:
    """A real S3 API on 127.0.0.1 (moto's threaded server); yields ``host:port``."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop()


def test_cdse_item_loads_from_jpeg2000_on_an_s3_store(
    s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The CDSE item's own s3://eodata/... hrefs, served by an S3 API, read by GDAL with settings from the env."""
    import boto3

    (item_dict,) = _items("cdse")
    local, grid = localise(item_dict, tmp_path / "files", "raw_with_offset", seed=3)
    secret = "cdse-secret-key-do-not-log"
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{s3_server}",
        aws_access_key_id="cdse-key",
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="eodata")
    d = copy.deepcopy(item_dict)
    for key, asset in local.assets.items():
        original = item_dict["assets"][key]["href"]
        if asset.href.startswith("file://"):  # a file written by localise: upload it under the item's own key
            s3.upload_file(asset.href.removeprefix("file://"), "eodata", original.removeprefix("s3://eodata/"))
            d["assets"][key] = {**asset.to_dict(), "href": original}
    item = pystac.Item.from_dict(d)
    assert item.assets["B04_10m"].href.startswith("s3://eodata/Sentinel-2/MSI/L2A/2025/03/30/")
    for name, value in {
        "AWS_S3_ENDPOINT": s3_server,
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_ACCESS_KEY_ID": "cdse-key",
        "AWS_SECRET_ACCESS_KEY": secret,
    }.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    loaded = load_reflectance([item], BANDS, grid, chunk_px=16)
    assert loaded.dropped == ()
    assert loaded.corrected == ()
    ds = loaded.reflectance.compute()
    clear = np.isin(np.repeat(np.repeat(_scl20(), 2, axis=0), 2, axis=1), (4, 5))
    for band in BANDS:
        np.testing.assert_allclose(ds[band].values[0][clear], _truth(band, 3 + BANDS.index(band))[clear], atol=2e-6)
    assert secret not in caplog.text


def test_cdse_s3_assets_need_the_gdal_s3_settings(tmp_path: Path) -> None:
    (item_dict,) = _items("cdse")
    item = pystac.Item.from_dict(item_dict)
    hrefs = [a.href for a in item.assets.values()]
    assert all(h.startswith("s3://eodata/") for h in hrefs)
    with pytest.raises(ConfigError) as err:
        check_s3_settings(hrefs, env={"HOME": str(tmp_path)})
    msg = str(err.value)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_S3_ENDPOINT", "eodata.dataspace.copernicus.eu"):
        assert name in msg
    secret = "do-not-print-me"
    with pytest.raises(ConfigError, match="AWS_S3_ENDPOINT is not set") as err:
        check_s3_settings(hrefs, env={"HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": secret})
    assert secret not in str(err.value)
    check_s3_settings(
        hrefs,
        env={
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_S3_ENDPOINT": "eodata.dataspace.copernicus.eu",
        },
    )
    check_s3_settings(["file:///x.tif", "https://example.org/y.tif"], env={})  # nothing on S3: nothing needed


def test_earth_search_v1_item_flagged_false_is_the_baseline_rule() -> None:
    """The metadata alone: flag false -> raster:bands offset -0.1 applies (the data check decides the rest)."""
    item = pystac.Item.from_dict(_items("earth_search_v1")[0])
    item.properties["earthsearch:boa_offset_applied"] = False
    from mrv.imagery.radiometry import band_scaling

    scaling = band_scaling(item, "red")
    assert (scaling.scale, scaling.offset, scaling.rule) == (0.0001, -0.1, "raster:bands")
