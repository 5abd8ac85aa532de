"""Tests of the seeded synthetic region generator (mrv.synthetic)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
from pyproj import Transformer
from shapely.geometry import Polygon, shape

from mrv.errors import ConfigError
from mrv.synthetic import (
    CROWD_COLUMNS,
    LAB_COLUMNS,
    RegionPaths,
    SceneSpec,
    build_region,
    decode_dn,
    encode_dn,
    make_acquisitions,
    make_lab_samples,
    make_truth,
    soc_stock_t_ha,
)
from mrv.synthetic.reflectance import downsample_scl
from mrv.synthetic.stac_writer import write_cog

SMALL = SceneSpec(width_px=64, height_px=64, n_fields=4, n_lab_sites=20, n_crowd=20)
MEDIUM = SceneSpec(width_px=160, height_px=160, n_fields=9, n_lab_sites=40, n_crowd=20, seed=7)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> RegionPaths:
    return build_region(tmp_path_factory.mktemp("region") / "small", SMALL)


@pytest.fixture(scope="module")
def medium_scenes() -> tuple[object, ...]:
    truth = make_truth(MEDIUM)
    return truth, make_acquisitions(MEDIUM, truth)


def _items(paths: RegionPaths) -> list[pystac.Item]:
    coll = pystac.Collection.from_file(str(paths.collection))
    items = sorted(coll.get_items(recursive=True), key=lambda i: i.datetime or 0)
    for it in items:
        it.make_asset_hrefs_absolute()
    return items


def _up(a: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)


# --- spec -------------------------------------------------------------------------------


def test_spec_rejects_odd_size_and_too_few_sites() -> None:
    with pytest.raises(ConfigError, match="even"):
        SceneSpec(width_px=63, height_px=64)
    with pytest.raises(ConfigError, match="3 sites per field"):
        SceneSpec(n_fields=10, n_lab_sites=20)
    with pytest.raises(ConfigError, match="baselines"):
        SceneSpec(rounds=(replace(SMALL.rounds[0], processing_baselines=("03.00",)),))


def test_default_spec_has_one_planetary_computer_item() -> None:
    spec = SceneSpec()
    baselines = [b for r in spec.rounds for b in r.processing_baselines]
    assert len(baselines) == 8
    assert baselines.count(spec.no_scale_offset_baseline) == 1
    for r in spec.rounds:
        assert any(b < "04.00" for b in r.processing_baselines)
        assert any(b >= "05.00" for b in r.processing_baselines)


# --- truth ------------------------------------------------------------------------------


def test_stock_formula_on_hand_computed_numbers() -> None:
    # 20 g/kg x 1.3 g/cm3 x 15 cm x (1 - 0.10) / 10 = 35.1 t C/ha
    assert soc_stock_t_ha(20.0, 1.3, 15.0, 10.0) == pytest.approx(35.1)
    # no coarse fragments: 12 x 1.5 x 15 / 10 = 27.0
    assert soc_stock_t_ha(12.0, 1.5, 15.0, 0.0) == pytest.approx(27.0)


def test_truth_is_deterministic_and_seed_dependent() -> None:
    a, b = make_truth(SMALL), make_truth(SMALL)
    c = make_truth(replace(SMALL, seed=SMALL.seed + 1))
    for name in ("2021", "2024"):
        np.testing.assert_array_equal(a.states[name].stock_0_30cm_t_ha, b.states[name].stock_0_30cm_t_ha)
    assert not np.allclose(a.states["2021"].soc_top_g_kg, c.states["2021"].soc_top_g_kg)


def test_truth_profile_is_consistent_and_plausible() -> None:
    truth = make_truth(MEDIUM)
    s = truth.states["2021"]
    stock = soc_stock_t_ha(s.soc_top_g_kg, s.bd_top_g_cm3, 15.0, s.cf_vol_pct) + soc_stock_t_ha(
        s.soc_sub_g_kg, s.bd_sub_g_cm3, 15.0, s.cf_vol_pct
    )
    np.testing.assert_allclose(s.stock_0_30cm_t_ha, stock)
    ratio = s.soc_sub_g_kg / s.soc_top_g_kg
    assert ratio.min() >= 0.6 - 1e-9
    assert ratio.max() <= 0.85 + 1e-9
    assert (s.bd_sub_g_cm3 > s.bd_top_g_cm3).mean() > 0.95
    assert s.bd_top_g_cm3.min() >= 1.1
    assert s.bd_top_g_cm3.max() <= 1.6
    assert s.cf_vol_pct.min() >= 0.0
    assert s.cf_vol_pct.max() <= 15.0
    assert 12.0 < s.soc_top_g_kg.mean() < 26.0
    assert 40.0 < np.median(s.stock_0_30cm_t_ha) < 80.0
    r = np.corrcoef(s.soc_top_g_kg.ravel(), s.bd_top_g_cm3.ravel())[0, 1]
    assert r < -0.5


def test_stock_change_follows_practice() -> None:
    truth = make_truth(replace(MEDIUM, n_fields=12, n_lab_sites=36))
    before = np.array(truth.field_mean_stock("2021"))
    after = np.array(truth.field_mean_stock("2024"))
    years = (pd.Timestamp("2024-09-17") - pd.Timestamp("2021-09-14")).days / 365.25
    rate = (after - before) / years
    practices = np.array(truth.fields.practices)
    # field-mean rate = practice rate + small spatial noise
    np.testing.assert_allclose(rate, truth.change_rate_t_ha_yr, atol=0.15)
    assert rate[practices == "cover_crops"].min() > 0.25
    assert np.abs(rate[practices == "conventional"]).max() < 0.35
    assert rate[practices == "cover_crops"].mean() > rate[practices == "reduced_tillage"].mean()


# --- scenes (in memory) -----------------------------------------------------------------


def test_bare_soil_darkens_with_soc(medium_scenes: tuple[object, ...]) -> None:
    truth, acqs = medium_scenes
    soc = truth.states["2021"].soc_top_g_kg  # type: ignore[attr-defined]
    n_checked = 0
    for acq in acqs:  # type: ignore[attr-defined]
        if acq.round_name != "2021":
            continue
        bare = acq.scl_10m == 5
        if bare.sum() < 500:
            continue
        for band in ("red", "green"):
            r = np.corrcoef(acq.reflectance[band][bare], soc[bare])[0, 1]
            assert r < -0.3, (acq.date, band, r)
        n_checked += 1
    assert n_checked >= 2


def test_every_field_pixel_bare_and_clear_twice_per_round() -> None:
    for seed in (1, 2, 3):
        spec = replace(MEDIUM, seed=seed, width_px=96, height_px=96)
        truth = make_truth(spec)
        acqs = make_acquisitions(spec, truth)
        in_field = truth.fields.field_index > 0
        for rnd in spec.rounds:
            scl20 = np.stack([_up(a.scl) for a in acqs if a.round_name == rnd.name])
            n_ok = (scl20 == 5).sum(axis=0)
            assert n_ok[in_field].min() >= 2, (seed, rnd.name)
            # outside fields it is never bare soil (10 m; and 20 m blocks fully outside)
            scl10 = np.stack([a.scl_10m for a in acqs if a.round_name == rnd.name])
            assert (scl10[:, ~in_field] == 5).sum() == 0
            h2, w2 = spec.height_px // 2, spec.width_px // 2
            outside = _up(np.asarray(~in_field.reshape(h2, 2, w2, 2).any(axis=(1, 3))))
            assert (scl20[:, outside] == 5).sum() == 0


def test_scl_classes_match_ndvi(medium_scenes: tuple[object, ...]) -> None:
    _, acqs = medium_scenes
    for acq in acqs:  # type: ignore[attr-defined]
        red, nir = acq.reflectance["red"], acq.reflectance["nir"]
        ndvi = (nir - red) / (nir + red)
        assert np.percentile(ndvi[acq.scl_10m == 4], 1) > 0.5
        if (acq.scl_10m == 5).any():
            assert np.percentile(ndvi[acq.scl_10m == 5], 99) < 0.45
        np.testing.assert_array_equal(acq.scl, downsample_scl(acq.scl_10m))
        assert acq.reflectance["swir16"].shape == (MEDIUM.height_px // 2, MEDIUM.width_px // 2)


def test_cloudy_and_clear_dates(medium_scenes: tuple[object, ...]) -> None:
    _, acqs = medium_scenes
    for name in ("2021", "2024"):
        cover = [a.cloud_cover_pct for a in acqs if a.round_name == name]  # type: ignore
        assert cover[0] < 10.0
        assert 30.0 <= max(cover) <= 60.0
        clouds = [a for a in acqs if a.round_name == name]  # type: ignore[attr-defined]
        cloudy = clouds[int(np.argmax(cover))]
        c = cloudy.scl_10m >= 8
        assert cloudy.reflectance["blue"][c].mean() > 0.25  # clouds are bright
        s = cloudy.scl_10m == 3
        if s.any():
            assert cloudy.reflectance["nir"][s].mean() < 0.15  # shadows are dark


# --- DN encoding and COGs ---------------------------------------------------------------


def test_encode_decode_rule() -> None:
    refl = np.array([0.0, 0.05, 0.12345, 0.9])
    np.testing.assert_array_equal(encode_dn(refl, "03.01"), [1, 500, 1234, 9000])
    np.testing.assert_array_equal(encode_dn(refl, "05.10"), [1000, 1500, 2234, 10000])
    np.testing.assert_array_equal(encode_dn(refl, "04.00"), [1000, 1500, 2234, 10000])
    np.testing.assert_allclose(decode_dn(encode_dn(refl, "05.00"), "05.00")[1:], [0.05, 0.1234, 0.9])
    assert np.isnan(decode_dn(np.array([0]), "03.00"))[0]


def test_cogs_decode_to_in_memory_reflectance(region: RegionPaths) -> None:
    truth = make_truth(SMALL)
    acqs = make_acquisitions(SMALL, truth)
    items = _items(region)
    assert [i.properties["s2:processing_baseline"] for i in items] == [a.processing_baseline for a in acqs]
    seen = set()
    for item, acq in zip(items, acqs, strict=True):
        pb = item.properties["s2:processing_baseline"]
        for key in ("red", "swir16"):
            asset = item.assets[key]
            with rasterio.open(asset.href) as src:
                dn = src.read(1)
                assert src.nodata == 0
            refl = decode_dn(dn, pb)
            np.testing.assert_allclose(refl, acq.reflectance[key], atol=0.51e-4)
            rb = asset.extra_fields["raster:bands"][0]
            if pb == SMALL.no_scale_offset_baseline:
                assert "scale" not in rb
                assert "offset" not in rb
                seen.add("none")
            else:
                # the STAC scale/offset give the same reflectance as the baseline rule
                np.testing.assert_allclose(dn * rb["scale"] + rb["offset"], refl, atol=1e-9)
                assert rb["offset"] == (-0.1 if pb >= "04.00" else 0.0)
                seen.add("offset" if pb >= "04.00" else "no-offset")
    assert seen == {"none", "offset", "no-offset"}


def test_cog_profile_and_grids(region: RegionPaths) -> None:
    item = _items(region)[0]
    with rasterio.open(item.assets["red"].href) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.compression.name.lower() == "deflate"
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
        assert (src.height, src.width) == (64, 64)
        assert src.crs.to_epsg() == 32633
        assert src.dtypes[0] == "uint16"
        assert src.transform == SMALL.transform
        assert list(item.assets["red"].extra_fields["proj:transform"]) == list(src.transform)[:6]
    for key, dtype in (("swir22", "uint16"), ("scl", "uint8")):
        with rasterio.open(item.assets[key].href) as src:
            assert (src.height, src.width) == (32, 32)
            assert src.res == (20.0, 20.0)
            assert src.dtypes[0] == dtype
            assert item.assets[key].extra_fields["proj:shape"] == [32, 32]


def test_write_cog_has_overviews_and_256_blocks(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(1, 3000, (600, 600)).astype(np.uint16)
    path = tmp_path / "x.tif"
    write_cog(path, data, transform=SMALL.transform, crs="EPSG:32633")
    with rasterio.open(path) as src:
        assert src.overviews(1)
        assert src.block_shapes[0] == (256, 256)
        np.testing.assert_array_equal(src.read(1), data)


def test_truth_raster_grid(region: RegionPaths) -> None:
    truth = make_truth(SMALL)
    for name, path in region.truth.items():
        with rasterio.open(path) as src:
            assert src.dtypes[0] == "float32"
            assert src.crs.to_epsg() == 32633
            assert src.transform == SMALL.transform
            assert src.shape == (64, 64)
            np.testing.assert_allclose(src.read(1), truth.states[name].stock_0_30cm_t_ha, rtol=1e-6)
    ft = pd.read_csv(region.root / "truth" / "fields_truth.csv", dtype={"round": str})
    assert len(ft) == 2 * SMALL.n_fields
    assert set(ft["round"]) == {"2021", "2024"}


# --- STAC -------------------------------------------------------------------------------


def test_stac_roundtrip_and_odc_load(region: RegionPaths) -> None:
    import odc.stac

    items = _items(region)
    assert len(items) == 8
    item = items[0]
    assert set(item.assets) == {"blue", "green", "red", "nir", "swir16", "swir22", "scl"}
    assert item.properties["proj:code"] == "EPSG:32633"
    assert item.properties["constellation"] == "sentinel-2"
    assert item.id.startswith(("S2A_33UWP_", "S2B_33UWP_"))
    assert item.id.endswith("_0_L2A")
    for it in items:
        for asset in it.assets.values():
            assert Path(asset.href).is_absolute()
            assert Path(asset.href).exists()
        with rasterio.open(it.assets["scl"].href) as src:
            scl = src.read(1)
        share = np.isin(scl, (3, 8, 9, 10)).mean() * 100
        assert it.properties["eo:cloud_cover"] == pytest.approx(share, abs=1e-3)
    ds = odc.stac.load(items, bands=["red", "scl"], crs="EPSG:32633", resolution=10)
    assert ds["red"].shape == (8, 64, 64)
    with rasterio.open(items[0].assets["red"].href) as src:
        np.testing.assert_array_equal(ds["red"].isel(time=0).values, src.read(1))
    assert set(np.unique(ds["scl"].values)) <= {3, 4, 5, 8, 9, 10}


# --- vector and samples -----------------------------------------------------------------


def test_fields_geojson(region: RegionPaths) -> None:
    gj = json.loads(region.fields.read_text(encoding="utf-8"))
    assert gj["type"] == "FeatureCollection"
    assert "crs" not in gj
    feats = gj["features"]
    assert len(feats) == SMALL.n_fields
    names = [f["properties"]["name"] for f in feats]
    assert any(not n.isascii() for n in names)
    assert any("&" in n or "<" in n for n in names)
    truth = make_truth(SMALL)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    for f, poly in zip(feats, truth.fields.polygons, strict=True):
        assert f["properties"]["practice"] in {"cover_crops", "reduced_tillage", "conventional"}
        geom = shape(f["geometry"])
        assert geom.exterior.is_ccw
        lon, lat = geom.exterior.xy
        assert min(lon) > 15.0
        assert max(lon) < 18.0
        assert min(lat) > 47.0
        assert max(lat) < 49.0
        x, y = to_utm.transform(list(lon), list(lat))
        back = Polygon(zip(x, y, strict=True))
        assert back.symmetric_difference(poly).area < 1e-4 * poly.area  # same polygon (7-decimal lon/lat)
        assert f["properties"]["area_ha"] == pytest.approx(poly.area / 1e4, abs=1e-3)


def test_lab_samples(region: RegionPaths) -> None:
    truth = make_truth(SMALL)
    for name, path in region.lab_samples.items():
        text = path.read_text(encoding="utf-8")
        assert text.splitlines()[0] == ",".join(LAB_COLUMNS)
        df = pd.read_csv(path)
        assert len(df) == 2 * SMALL.n_lab_sites
        assert df["sample_id"].is_unique
        assert (df.groupby("field_id")["site_id"].nunique() >= 3).all()
        assert set(zip(df.top_cm, df.bottom_cm, strict=True)) == {(0, 15), (15, 30)}
        assert (df["epsg"] == 32633).all()
        # measured topsoil SOC within lab error of the truth at the site pixel
        top = df[df.top_cm == 0]
        col = ((top.x - SMALL.origin_x) // SMALL.resolution_m).astype(int)
        row = ((SMALL.origin_y - top.y) // SMALL.resolution_m).astype(int)
        assert (truth.fields.field_index[row, col] > 0).all()
        true = truth.states[name].soc_top_g_kg[row, col]
        rel = top.soc_g_kg.to_numpy() / true - 1
        assert np.abs(rel).max() < 0.2
        assert 0.01 < rel.std() < 0.08
    a = pd.read_csv(region.lab_samples["2021"]).drop_duplicates("site_id")
    b = pd.read_csv(region.lab_samples["2024"]).drop_duplicates("site_id")
    # every baseline site re-measured (remeasured_share 1): within a few metres of its recorded position
    d = np.hypot(a.x.to_numpy()[:, None] - b.x.to_numpy()[None], a.y.to_numpy()[:, None] - b.y.to_numpy()[None])
    assert (d.min(axis=1) < 6.0).all()
    assert not np.allclose(a.x.to_numpy(), b.x.to_numpy(), rtol=0, atol=0.05)  # re-located with GPS error, not copied
    fresh = make_lab_samples(make_truth(replace(SMALL, remeasured_share=0.0)), "2024").drop_duplicates("site_id")
    d = np.hypot(a.x.to_numpy()[:, None] - fresh.x.to_numpy()[None], a.y.to_numpy()[:, None] - fresh.y.to_numpy()[None])
    assert (d.min(axis=1) > 6.0).mean() > 0.8


def test_zero_change_and_compaction_knobs() -> None:
    """change_scale 0 gives no true change; a bulk-density change moves the fixed-depth stock but not the
    carbon of the baseline soil mass, and the lab increments integrate the compacted profile."""
    still = make_truth(replace(SMALL, change_scale=0.0))
    np.testing.assert_allclose(still.field_mean_stock("2024"), still.field_mean_stock("2021"), atol=1e-9)
    spec = replace(SMALL, bd_change_sd_g_cm3=0.1, lab_layers_cm=((0, 15), (15, 30), (30, 50)))
    truth = make_truth(spec)
    k = truth.states["2024"].compaction
    assert k is not None
    assert np.ptp(k) > 0.05
    base = make_truth(replace(spec, bd_change_sd_g_cm3=0.0))
    np.testing.assert_allclose(
        truth.field_mean_stock("2024", basis="baseline_mass"), base.field_mean_stock("2024", basis="baseline_mass")
    )
    fixed_d = np.subtract(truth.field_mean_stock("2024"), base.field_mean_stock("2024"))
    compacted = np.array([k[truth.fields.field_index == i + 1].mean() for i in range(truth.fields.n)]) > 1
    assert (fixed_d[compacted] > 0).all()
    assert (fixed_d[~compacted] < 0).all()
    # mass conservation: the 0-50 cm increment of a compacted soil holds the 0-30 cm material plus deep soil
    st = truth.states["2024"]
    soc, bd = st.layer(0.0, 30.0)
    np.testing.assert_allclose(soc * bd * 30 * (1 - st.cf_vol_pct / 100) / 10, st.stock_0_30cm_t_ha)
    lab = make_lab_samples(truth, "2024")
    assert set(zip(lab.top_cm, lab.bottom_cm, strict=True)) == {(0, 15), (15, 30), (30, 50)}


def test_crowd_defects_are_planted(region: RegionPaths) -> None:
    path = region.crowd_samples["2021"]
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(CROWD_COLUMNS)
    df = pd.read_csv(path)
    defects = json.loads((region.root / "truth" / "crowd_defects_2021.json").read_text())
    assert len(df) == SMALL.n_crowd + 5
    assert df.duplicated().sum() == 3
    dup_ids = set(df.loc[df.duplicated(), "sample_id"])
    assert dup_ids == set(defects["exact_duplicate_ids"])
    by_id = df.drop_duplicates().set_index("sample_id")
    assert by_id.loc[defects["negative_soc_id"], "soc_percent"] < 0
    assert by_id.loc[defects["too_high_soc_id"], "soc_percent"] == 85.0
    inv = by_id.loc[defects["inverted_depth_id"]]
    assert inv.bottom_cm < inv.top_cm
    for orig, resub in defects["near_duplicate_pairs"]:
        a, b = by_id.loc[orig], by_id.loc[resub]
        assert (a.lon, a.lat, a.soc_percent) == (b.lon, b.lat, b.soc_percent)
    ok = df.drop_duplicates()
    ok = ok[~ok.sample_id.isin([defects["negative_soc_id"], defects["too_high_soc_id"]])]
    assert ok.soc_percent.between(0.3, 6.0).all()
    assert "bulk_density_g_cm3" not in df.columns


# --- whole build ------------------------------------------------------------------------


def test_build_is_deterministic_and_refuses_to_clobber(
    region: RegionPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    again = build_region(Path("again"), SMALL)  # relative out_dir must work too
    for a, b in [
        (region.lab_samples["2021"], again.lab_samples["2021"]),
        (region.lab_samples["2024"], again.lab_samples["2024"]),
        (region.crowd_samples["2021"], again.crowd_samples["2021"]),
        (region.fields, again.fields),
    ]:
        assert a.read_bytes() == b.read_bytes()
    ia, ib = _items(region)[3], _items(again)[3]
    assert ia.to_dict()["properties"] == ib.to_dict()["properties"]
    assert Path(ia.assets["nir"].href).read_bytes() == Path(ib.assets["nir"].href).read_bytes()
    with pytest.raises(ConfigError, match="overwrite=True"):
        build_region(Path("again"), SMALL)
    other = build_region(Path("again"), replace(SMALL, seed=99), overwrite=True)
    assert other.lab_samples["2021"].read_bytes() != region.lab_samples["2021"].read_bytes()
