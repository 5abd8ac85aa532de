"""Real public soil tables, read with their format profile alone (no preprocessing): tests/fixtures/soil/."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pytest

from mrv.samples.formats import load_format
from mrv.samples.ingest import ingest
from mrv.samples.sites import site_stocks

SOIL = Path(__file__).resolve().parent / "fixtures" / "soil"


def test_fixture_files_are_the_published_bytes() -> None:
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in SOIL.glob("*/*.csv")}
    assert digests == {
        "horizon-data.csv": "b5c308e0da2e082aa62a04e35ba39822fb1b9c3624316eff635d29378ab0c04b",
        "site-data.csv": "63105b8bbf561f523595327e8166038d3459231646a75a8d8d0b972915c27cc6",
        "rasmussen-andesitic-lahar.csv": "b1a0ae27c04b6a88a6557d3e7d8166f852afc4aa0b509c3beaa58dfbace9ee57",
        "rasmussen-andesitic-lahar-site.csv": "ee0f127908f6accfff2bd2c4fc883909ce2aea05646d3fad541a89e9b18464e8",
        "meuse.csv": "b27776bc1cad63c4bf308923c86a5a76a0a02566ac75984b018df2a477b52f64",
    }


def test_bergstrom2019_horizons_joined_to_their_site_table() -> None:
    d = SOIL / "bergstrom2019"
    fmt = load_format(d / "bergstrom2019.yaml", search_dirs=())
    res = ingest(d / "horizon-data.csv", fmt, source="lab", submitter="aqp", project_crs="EPSG:32613",
                 today=dt.date(2025, 1, 1))  # fmt: skip
    assert (res.submitted, len(res.accepted), len(res.rejected)) == (130, 130, 0)
    acc = res.accepted.set_index("sample_id")
    first = acc.loc["1"]  # BL1 A horizon: 0-5 cm, C 5.21 %, BD 1.174 g/cm3, site at -105.914483, 39.872067
    assert (first["site_id"], first["top_cm"], first["bottom_cm"]) == ("BL1", 0.0, 5.0)
    assert first["soc_g_kg"] == pytest.approx(52.1)
    assert first["bulk_density_g_cm3"] == pytest.approx(1.174)
    assert (first["lon"], first["lat"]) == pytest.approx((-105.914483, 39.872067))
    # 0.914 deg west of UTM 13N's central meridian (105 W) at 39.87 N: ~78 km west of the 500 km false easting.
    assert first["x"] == pytest.approx(421_860, abs=1_500)
    assert np.isnan(first["coarse_fragments_vol_pct"])  # not reported: missing, not 0
    assert acc.groupby("site_id").ngroups == 32
    assert acc.loc["22", "soc_g_kg"] == pytest.approx(312.1)  # BU1 A horizon, 31.21 % C


def test_bergstrom2019_site_stocks_flag_the_coarse_fragment_default() -> None:
    d = SOIL / "bergstrom2019"
    fmt = load_format(d / "bergstrom2019.yaml", search_dirs=())
    res = ingest(d / "horizon-data.csv", fmt, source="lab", submitter="aqp", project_crs="EPSG:32613",
                 today=dt.date(2025, 1, 1))  # fmt: skip
    sites, incomplete = site_stocks(res.accepted, depth_cm=30)
    assert len(sites) + len(incomplete) == 32
    assert sites["coarse_fragments_estimated"].all()
    # BL1: 0-5 (52.1 g/kg, 1.174), 5-18 (8.9, 1.409), 18-58 (4.9, 1.553; 12 cm above 30 cm), no coarse fragments
    # reported -> the stated default (0 %, see mrv.samples.sites.CF_DEFAULT_VOL_PCT) applies.
    bl1 = sites.set_index("site_id").loc["BL1"]
    expected = (52.1 * 1.174 * 5 + 8.9 * 1.409 * 13 + 4.9 * 1.553 * 12) / 10
    assert bl1["soc_stock_t_ha"] == pytest.approx(expected, rel=1e-6)


def test_andesitic_lahar_horizons_identified_by_pedon_and_horizon_name() -> None:
    d = SOIL / "andesitic-lahar"
    fmt = load_format(d / "andesitic-lahar.yaml", search_dirs=())
    res = ingest(d / "rasmussen-andesitic-lahar.csv", fmt, source="lab", submitter="aqp", project_crs="EPSG:32610",
                 today=dt.date(2025, 1, 1))  # fmt: skip
    assert (res.submitted, len(res.accepted), len(res.rejected)) == (31, 31, 0)
    acc = res.accepted.set_index("sample_id")
    a1 = acc.loc["McCarthy/A1"]  # 0-19 cm, C 120 g/kg, Db 0.5 g/cm3, site -120.397983, 38.698467
    assert (a1["site_id"], a1["top_cm"], a1["bottom_cm"], a1["soc_g_kg"], a1["bulk_density_g_cm3"]) == (
        "McCarthy", 0.0, 19.0, 120.0, 0.5)  # fmt: skip
    assert (a1["lon"], a1["lat"]) == pytest.approx((-120.397983, 38.698467))
    # 2.6 deg east of UTM 10N's central meridian (123 W) at 38.7 N: ~226 km east of the 500 km false easting.
    assert a1["x"] == pytest.approx(726_000, abs=3_000)
    sites, incomplete = site_stocks(res.accepted, depth_cm=30)
    top = sites.set_index("site_id").loc["Top"]  # 0-17 (42, 0.7), 17-34 (22, 0.9; 13 cm above 30 cm)
    assert top["soc_stock_t_ha"] == pytest.approx((42 * 0.7 * 17 + 22 * 0.9 * 13) / 10, rel=1e-6)
    assert set(sites["site_id"]) | set(incomplete) == {"Top", "Nobu", "Waca", "McCarthy", "Aiken", "Supan", "Inks"}


def test_meuse_topsoil_in_the_dutch_national_grid() -> None:
    """A national projected CRS (RD New) and organic matter in percent, both stated by the profile alone."""
    d = SOIL / "meuse"
    fmt = load_format(d / "meuse.yaml", search_dirs=())
    res = ingest(d / "meuse.csv", fmt, source="lab", submitter="sp", project_crs="EPSG:28992", today=dt.date(2025, 1, 1))
    assert (res.submitted, len(res.accepted)) == (155, 153)
    # Lines 43 and 44 have om "NA" (R's missing value): no carbon value, rejected on their own with the column named.
    assert [(r.row, r.column, r.code) for r in res.rejected] == [(43, "om", "missing_value"), (44, "om", "missing_value")]
    first = res.accepted.set_index("sample_id").loc["181072/333611"]  # om 13.6 %
    assert (first["x"], first["y"], first["crs"]) == (181072.0, 333611.0, "EPSG:28992")
    assert first["soc_g_kg"] == pytest.approx(13.6 * 10 * 0.58)  # van Bemmelen: SOC = 0.58 x SOM
    assert first["soc_sd_g_kg"] > 0  # the conversion's uncertainty is kept
    assert (first["top_cm"], first["bottom_cm"], first["sampling_date"]) == (0.0, 20.0, "1990-01-01")
    # Into UTM 31N: Stein (NL) lies at about 5.76 E, 50.99 N, 2.76 deg east of the zone's central meridian (3 E).
    utm = ingest(d / "meuse.csv", fmt, source="lab", submitter="sp", project_crs="EPSG:32631", today=dt.date(2025, 1, 1))
    p = utm.accepted.set_index("sample_id").loc["181072/333611"]
    assert p["x"] == pytest.approx(500_000 + 2.76 * 111_320 * np.cos(np.radians(50.99)), abs=2_000)
    assert p["y"] == pytest.approx(5_651_000, abs=3_000)
    # A region that does not contain the floodplain rejects every position, naming the region.
    away = ingest(d / "meuse.csv", fmt, source="lab", submitter="sp", project_crs="EPSG:28992",
                  region_bounds=(100_000.0, 400_000.0, 110_000.0, 410_000.0), today=dt.date(2025, 1, 1))  # fmt: skip
    assert away.accepted.empty
    assert len(away.rejected) == 155
