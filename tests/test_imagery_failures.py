"""Damaged imagery (truncated or missing assets) and size guards, on a synthetic region."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr

from mrv.config import BareSoilConfig, parse_config
from mrv.errors import ConfigError, ImageryError
from mrv.grid import Grid
from mrv.imagery.composite import bare_soil_composite
from mrv.imagery.guards import aoi_area_km2, check_aoi_size
from mrv.imagery.load import load_reflectance, probe_asset
from mrv.imagery.local import LocalCatalogSource
from mrv.imagery.source import SearchRequest
from mrv.pipeline.imagery import run_round
from mrv.pipeline.layout import RunLayout
from mrv.synthetic import SceneSpec, build_region
from mrv.synthetic.spec import DEFAULT_ROUNDS

# 512 px: the 10 m COGs hold 2 x 2 blocks of 256 px, so half a file still serves its first block.
SPEC = SceneSpec(width_px=512, height_px=512, n_fields=6, n_lab_sites=18, n_crowd=10, rounds=DEFAULT_ROUNDS[:1])
# The southern half of the scene: the blocks a truncated file loses first, at half the compute.
GRID = Grid(
    crs=SPEC.crs,
    bounds=(SPEC.bounds[0], SPEC.bounds[1], SPEC.bounds[2], SPEC.bounds[1] + 256 * SPEC.resolution_m),
    resolution_m=SPEC.resolution_m,
)
BANDS = ("red", "nir", "swir16", "swir22")  # what the bare-soil mask needs
BARE = BareSoilConfig()


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("region")
    build_region(root, SPEC)
    return root


@pytest.fixture
def damaged(region: Path, tmp_path: Path) -> Path:
    """A private copy of the region whose assets a test may damage."""
    shutil.copytree(region, tmp_path / "region")
    return tmp_path / "region"


def _items(root: Path) -> list[pystac.Item]:
    source = LocalCatalogSource(root / "stac" / "collection.json")
    return source.search(_request())


def _request() -> SearchRequest:
    return SearchRequest(
        bbox_wgs84=GRID.bbox_wgs84(),
        start=dt.date(2021, 1, 1),
        end=dt.date(2021, 12, 31),
        max_cloud_pct=100.0,
        collection="sentinel-2-l2a",
    )


def _asset_path(item: pystac.Item, key: str) -> Path:
    return Path(item.assets[key].get_absolute_href() or "")


def _composite(items: list[pystac.Item]) -> tuple[xr.Dataset, tuple[tuple[str, str], ...]]:
    loaded = load_reflectance(items, BANDS, GRID, chunk_px=256)
    return bare_soil_composite(loaded.reflectance, BANDS, BARE).compute(), loaded.dropped


def _truncate(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.truncate(size // 2)


def _assert_same(a: xr.Dataset, b: xr.Dataset) -> None:
    for name in [*BANDS, "n_bare"]:
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_truncated_asset_drops_its_item_and_the_composite_equals_the_one_without_it(damaged: Path) -> None:
    items = _items(damaged)
    assert len(items) == 4
    victim = items[1]
    path = _asset_path(victim, "red")
    _truncate(path)
    # The naive probe (one pixel of the first block) still passes on the half file ...
    with rasterio.open(path) as src:
        assert src.read(1, window=((0, 1), (0, 1))).shape == (1, 1)
    # ... but the full probe reads the block stored last and fails.
    with pytest.raises(rasterio.errors.RasterioIOError):
        probe_asset(str(path))

    got, dropped = _composite(items)
    assert [i for i, _ in dropped] == [victim.id]
    assert "asset 'red'" in dropped[0][1]
    assert "unreadable" in dropped[0][1]
    assert str(path) in dropped[0][1]
    expected, none_dropped = _composite([it for it in items if it.id != victim.id])
    assert none_dropped == ()
    _assert_same(got, expected)
    assert int(got["n_bare"].max()) >= 1


def test_missing_asset_drops_its_item(damaged: Path, caplog: pytest.LogCaptureFixture) -> None:
    items = _items(damaged)
    victim = items[2]
    _asset_path(victim, "scl").unlink()
    with caplog.at_level("WARNING", logger="mrv.imagery.load"):
        got, dropped = _composite(items)
    assert [i for i, _ in dropped] == [victim.id]
    assert "asset 'scl'" in dropped[0][1]
    assert "No such file" in dropped[0][1]
    assert f"dropping item {victim.id}" in caplog.text
    expected, _ = _composite([it for it in items if it.id != victim.id])
    _assert_same(got, expected)


def test_undamaged_items_are_all_used(region: Path) -> None:
    items = _items(region)
    loaded = load_reflectance(items, BANDS, GRID, chunk_px=256)
    assert loaded.dropped == ()
    assert loaded.items == tuple(it.id for it in items)


def _config(root: Path, out: Path, **imagery: Any) -> Any:
    raw = {
        "name": "failures",
        "region": {"fields": str(root / "fields.geojson"), "crs": SPEC.crs, "resolution_m": 10},
        "imagery": {"source": "local", "catalog": str(root / "stac" / "collection.json"), "collection": "sentinel-2-l2a"}
        | imagery,
        "rounds": [{"name": "2021", "start": "2021-01-01", "end": "2021-12-31", "samples": []}],
    }
    return parse_config(raw, source_path=out / "run.yaml", output_dir=out)


def test_prepare_imagery_lists_dropped_items_in_imagery_json(damaged: Path, tmp_path: Path) -> None:
    items = _items(damaged)
    _truncate(_asset_path(items[0], "swir16"))
    _asset_path(items[3], "nir").unlink()
    cfg = _config(damaged, tmp_path / "out")
    layout = RunLayout(tmp_path / "out")
    run_round(cfg, cfg.rounds[0], layout)
    summary = json.loads(layout.imagery_summary("2021").read_text())
    assert summary["items"] == [items[1].id, items[2].id]
    assert summary["n_dropped"] == 2
    reasons = {d["item"]: d["reason"] for d in summary["dropped"]}
    assert set(reasons) == {items[0].id, items[3].id}
    assert "asset 'swir16'" in reasons[items[0].id]
    assert "asset 'nir'" in reasons[items[3].id]


def _mislabel(item: pystac.Item, extra_offset: float) -> None:
    """Rewrite the item's JSON on disk so that its reflectance assets claim ``extra_offset`` more offset."""
    path = Path(item.get_self_href() or "")
    d = json.loads(path.read_text())
    for asset in d["assets"].values():
        for rb in asset.get("raster:bands", []):
            if "scale" in rb:
                rb["offset"] = rb.get("offset", 0.0) + extra_offset
    path.write_text(json.dumps(d))


def test_a_mislabelled_scene_is_corrected_and_recorded_in_imagery_json(damaged: Path, tmp_path: Path) -> None:
    items = _items(damaged)
    clean = load_reflectance(items, BANDS, GRID, chunk_px=256)
    assert clean.corrected == ()
    assert clean.dropped == ()
    _mislabel(items[1], -0.1)  # the BOA offset claimed once too often: 0.1 too dark if trusted
    cfg = _config(damaged, tmp_path / "out", tile_px=256)  # several tiles: each judges on the whole region
    layout = RunLayout(tmp_path / "out")
    run_round(cfg, cfg.rounds[0], layout)
    summary = json.loads(layout.imagery_summary("2021").read_text())
    assert summary["tiles"] > 1
    assert summary["items"] == [it.id for it in items]
    assert summary["n_corrected"] == 1
    (entry,) = summary["corrected"]
    assert entry["item"] == items[1].id
    assert "corrected by +0.1" in entry["reason"]
    assert len(entry["tiles"]) == summary["tiles"]  # the same verdict in every tile
    relabelled = load_reflectance(_items(damaged), BANDS, GRID, chunk_px=256)
    assert [i for i, _ in relabelled.corrected] == [items[1].id]
    for band in BANDS:
        np.testing.assert_allclose(
            relabelled.reflectance[band].values, clean.reflectance[band].values, atol=1e-6, equal_nan=True
        )


def test_aoi_guard_says_to_tile_or_shrink(region: Path, tmp_path: Path) -> None:
    big = Grid(crs=SPEC.crs, bounds=(400_000.0, 5_200_000.0, 520_000.0, 5_300_000.0), resolution_m=10.0)
    assert aoi_area_km2(big) == pytest.approx(12_000.0)
    with pytest.raises(ConfigError, match=r"120.0 x 100.0 km = 12,000 km², above imagery.max_aoi_km2 = 10,000") as err:
        check_aoi_size(big, max_km2=10_000.0)
    assert "Tile the region" in str(err.value)
    assert "region.buffer_m" in str(err.value)
    check_aoi_size(GRID, max_km2=10_000.0)  # 13 km² passes
    cfg = _config(region, tmp_path / "out", max_aoi_km2=1)
    with pytest.raises(ConfigError, match="above imagery.max_aoi_km2 = 1 km"):
        run_round(cfg, cfg.rounds[0], RunLayout(tmp_path / "out"))
    # refused before anything was loaded or written: no file, no tile directory (its staging dir was removed)
    written = list((tmp_path / "out").rglob("*"))
    assert not [p for p in written if p.is_file() or p.name.startswith(("r0", ".r0"))], written


def test_local_source_max_items_guard(region: Path) -> None:
    collection = region / "stac" / "collection.json"
    with pytest.raises(ImageryError, match=r"matches 4 items, more than max_items=3. Narrow the dates or the AOI"):
        LocalCatalogSource(collection, max_items=3).search(_request())
    assert len(LocalCatalogSource(collection, max_items=4).search(_request())) == 4
    with pytest.raises(ConfigError, match="imagery.max_items"):
        LocalCatalogSource(collection, max_items=0)


def test_config_guards(region: Path, tmp_path: Path) -> None:
    cfg = _config(region, tmp_path, max_items=7)
    assert cfg.imagery.max_items == 7
    assert cfg.imagery.max_aoi_km2 == 10_000.0
    assert cfg.imagery.dem is None
    with pytest.raises(ConfigError, match="imagery.max_items must be at least 1"):
        _config(region, tmp_path, max_items=0)
    with pytest.raises(ConfigError, match="imagery.max_aoi_km2 must be positive"):
        _config(region, tmp_path, max_aoi_km2=0)
    with pytest.raises(ConfigError, match="imagery.chunk_px must be at least 16"):
        _config(region, tmp_path, chunk_px=4)
