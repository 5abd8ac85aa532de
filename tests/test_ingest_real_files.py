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
