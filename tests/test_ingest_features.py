"""Profile features for files as agencies publish them (issue 15.1-15.4, 15.7) and strict, bounded parsing (16.3-16.4).

One synthetic file per feature, each checked against values worked out by hand.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrv.errors import ConfigError, SubmissionRejected
from mrv.samples import reading
from mrv.samples.formats import load_format, parse_format
from mrv.samples.ingest import ingest

REPO = Path(__file__).resolve().parents[1]
FORMATS = (REPO / "mrv" / "profiles" / "sample_formats",)
TODAY = dt.date(2025, 1, 1)
BASE = {"sample_id": "id", "x": "x", "y": "y", "sampling_date": "date", "top": "top", "bottom": "bottom", "soc": "soc"}


def _fmt(**raw: Any) -> Any:
    raw.setdefault("columns", dict(BASE))
    raw.setdefault("epsg", 32633)
    return parse_format(raw, where="test.yaml", default_name="test")


def _write(tmp: Path, text: str, name: str = "s.csv", encoding: str = "utf-8") -> Path:
    path = tmp / name
    path.write_bytes(text.encode(encoding))
    return path


def _run(path: Path, fmt: Any, **kw: Any) -> Any:
    kw.setdefault("project_crs", "EPSG:32633")
    res = ingest(path, fmt, source="lab", submitter="agency", today=TODAY, **kw)
    assert res.accepted_lines + len(res.rejected) == res.submitted
    return res


def _why(res: Any) -> dict[int, str]:
    return {r.row: r.reason for r in res.rejected}


# ------------------------------------------------------------------------------ 15.1 profile features


def test_constants_fill_depths_and_date_for_the_whole_file(tmp_path: Path) -> None:
    fmt = _fmt(columns={"sample_id": "id", "x": "x", "y": "y", "soc": "soc"},
               constants={"top": 0, "bottom": 30, "sampling_date": "2019-05-01"})  # fmt: skip
    res = _run(_write(tmp_path, "id,x,y,soc\nA,581000,5356000,12.5\n"), fmt)
    rec = res.accepted.iloc[0]
    assert (rec["top_cm"], rec["bottom_cm"], rec["sampling_date"]) == (0.0, 30.0, "2019-05-01")
    text = _fmt(columns=BASE, constants={"method": "dry combustion", "field_id": "F7"})
    rec = _run(_write(tmp_path, "id,x,y,date,top,bottom,soc\nA,581000,5356000,2021-05-01,0,30,12\n", "m.csv"), text).accepted.iloc[0]
    assert (rec["method"], rec["field_id"]) == ("dry combustion", "F7")
    with pytest.raises(ConfigError, match="constants.bottom"):
        _fmt(constants={"top": 30, "bottom": 10})
    with pytest.raises(ConfigError, match="cannot be constant"):
        _fmt(constants={"soc": 10})


@pytest.mark.parametrize(
    ("cell", "top", "bottom"),
    [("0-30", 0, 30), ("0–20 cm", 0, 20), ("30 - 60cm", 30, 60), ("0,5-1 m", 50, 100), ("10—20", 10, 20)],
)
def test_depth_range_from_one_text_column(tmp_path: Path, cell: str, top: float, bottom: float) -> None:
    cols = {k: v for k, v in BASE.items() if k not in ("top", "bottom")} | {"depth": "Tiefe"}
    fmt = _fmt(columns=cols, delimiter=";", decimal=",")
    res = _run(_write(tmp_path, f"id;x;y;date;Tiefe;soc\nA;581000;5356000;2021-05-01;{cell};12\n"), fmt)
    assert (res.accepted.iloc[0]["top_cm"], res.accepted.iloc[0]["bottom_cm"]) == (top, bottom)


def test_bad_depth_range_is_a_row_rejection(tmp_path: Path) -> None:
    cols = {k: v for k, v in BASE.items() if k not in ("top", "bottom")} | {"depth": "depth"}
    res = _run(_write(tmp_path, "id,x,y,date,depth,soc\nA,581000,5356000,2021-05-01,0-30-60,12\nB,581000,5356000,2021-05-01,30-10,12\n"), _fmt(columns=cols))
    why = _why(res)
    assert "'0-30-60' is not a depth range" in why[2]
    assert "bottom depth 10 cm is not below top depth 30 cm" in why[3]


def test_missing_value_codes_make_optional_cells_missing_not_rows_rejected(tmp_path: Path) -> None:
    cols = BASE | {"bulk_density": "bd", "coarse_fragments": "cf"}
    text = (
        "id,x,y,date,top,bottom,soc,bd,cf\n"
        "A,581000,5356000,2021-05-01,0,30,12,NA,n.a.\n"
        "B,581000,5356000,2021-05-01,0,30,12,-9999,na\n"
        "C,581000,5356000,2021-05-01,0,30,NA,1.3,4\n"
        "D,581000,5356000,2021-05-01,0,30,12,1.2,\n"
    )
    res = _run(_write(tmp_path, text), _fmt(columns=cols))
    acc = res.accepted.set_index("sample_id")
    assert list(acc.index) == ["A", "B", "D"]
    assert acc["bulk_density_g_cm3"].isna().tolist() == [True, True, False]
    assert acc["coarse_fragments_vol_pct"].isna().all()  # missing stays NaN, never 0.0 (stone-free not assumed)
    assert _why(res)[4] == "'soc' is empty; fill it in"
    custom = _run(_write(tmp_path, text.replace("NA", "?"), "c.csv"), _fmt(columns=cols, missing_values=["?", ""]))
    assert len(custom.accepted) == 3


@pytest.mark.parametrize(("policy", "expected"), [("half_limit", 0.5), ("limit", 1.0)])
def test_detection_limits_follow_the_stated_policy(tmp_path: Path, policy: str, expected: float) -> None:
    res = _run(_write(tmp_path, "id,x,y,date,top,bottom,soc\nA,581000,5356000,2021-05-01,0,30,<1\n"),
               _fmt(below_detection=policy))  # fmt: skip
    rec = res.accepted.iloc[0]
    assert rec["soc_g_kg"] == pytest.approx(expected)
    assert rec["soc_sd_g_kg"] == pytest.approx(1.0 / math.sqrt(12.0))  # uniform on [0, L]
    assert "below the detection limit" in rec["ingest_flag"]
    assert res.summary.flagged_by_reason == {"below_detection": 1}


def test_detection_limit_reject_policy_and_above_range(tmp_path: Path) -> None:
    text = "id,x,y,date,top,bottom,soc\nA,581000,5356000,2021-05-01,0,30,< 0.5\nB,581000,5356000,2021-05-01,0,30,>600\n"
    res = _run(_write(tmp_path, text), _fmt(below_detection="reject"))
    assert "below the detection limit" in _why(res)[2]
    assert "above the measuring range" in _why(res)[3]


@pytest.mark.parametrize(
    "cell",
    ['"POINT (581000 5356000)"', '"SRID=32633;POINT(581000 5356000)"', '"POINT Z (581000 5356000 12)"',
     '"{""type"": ""Point"", ""coordinates"": [581000, 5356000]}"'],
)  # fmt: skip
def test_positions_from_wkt_or_geojson_column(tmp_path: Path, cell: str) -> None:
    cols = {k: v for k, v in BASE.items() if k not in ("x", "y")} | {"geometry": "geom"}
    res = _run(_write(tmp_path, f"id,geom,date,top,bottom,soc\nA,{cell},2021-05-01,0,30,12\n"), _fmt(columns=cols))
    assert (res.accepted.iloc[0]["x"], res.accepted.iloc[0]["y"]) == pytest.approx((581000.0, 5356000.0))


def test_geometry_without_any_crs_or_not_a_point_is_rejected(tmp_path: Path) -> None:
    cols = {k: v for k, v in BASE.items() if k not in ("x", "y")} | {"geometry": "geom"}
    fmt = parse_format({"columns": cols}, where="t", default_name="t")
    text = 'id,geom,date,top,bottom,soc\nA,"POINT (581000 5356000)",2021-05-01,0,30,12\nB,"LINESTRING (0 0, 1 1)",2021-05-01,0,30,12\nC,"SRID=32633;POINT (581000 5356000)",2021-05-01,0,30,12\n'
    res = _run(_write(tmp_path, text), fmt)
    why = _why(res)
    assert "no CRS" in why[2]
    assert "not a WKT or GeoJSON point" in why[3]
    assert list(res.accepted["sample_id"]) == ["C"]


def _site_profile(**extra: Any) -> Any:
    cols = {"sample_id": "hz", "site_id": "pedon", "top": "top", "bottom": "bottom", "soc": "C"}
    return _fmt(columns=cols, epsg=None, soc_unit="percent", constants={"sampling_date": "2016-07-01"},
                sites={"key": "pedon", "columns": {"lon": "x_dd", "lat": "y_dd", "epsg": "crs"}, **extra})  # fmt: skip


def test_site_table_joined_by_key(tmp_path: Path) -> None:
    sites = _write(tmp_path, "pedon,x_dd,y_dd,crs\nP1,15.9,48.3,4326\nP2,16.0,48.4,EPSG:4326\n", "sites.csv")
    hz = _write(tmp_path, "hz,pedon,top,bottom,C\n1,P1,0,10,2.5\n2,P1,10,30,1.1\n3,P9,0,10,2.0\n4,P2,0,5,3\n")
    res = _run(hz, _site_profile(), sites=sites)
    acc = res.accepted.set_index("sample_id")
    assert list(acc.index) == ["1", "2", "4"]
    assert acc.loc["1", "soc_g_kg"] == pytest.approx(25.0)
    assert acc.loc["1", "lon"] == pytest.approx(15.9)
    assert "site 'P9' is not in the site table sites.csv" in _why(res)[4]
    # The profile may name the file next to the sample file instead of the command line.
    res2 = _run(hz, _site_profile(file="sites.csv"))
    assert len(res2.accepted) == 3


def test_site_table_problems_reject_the_submission(tmp_path: Path) -> None:
    hz = _write(tmp_path, "hz,pedon,top,bottom,C\n1,P1,0,10,2.5\n")
    clash = _write(tmp_path, "pedon,x_dd,y_dd,crs\nP1,15.9,48.3,4326\nP1,16.9,48.3,4326\n", "sites.csv")
    with pytest.raises(SubmissionRejected, match="P1 more than once"):
        _run(hz, _site_profile(), sites=clash)
    short = _write(tmp_path, "pedon,x_dd,crs\nP1,15.9,4326\n", "short.csv")
    with pytest.raises(SubmissionRejected, match=r"'y_dd' \(sites.columns.lat\)"):
        _run(hz, _site_profile(), sites=short)
    with pytest.raises(SubmissionRejected, match="--sites"):
        _run(hz, _site_profile())


def test_preferred_soc_column_in_a_wide_file(tmp_path: Path) -> None:
    fmt = _fmt(columns=BASE | {"soc": ["soc_dc", "soc_wb"]})
    text = "id,x,y,date,top,bottom,soc_dc,soc_wb\nA,581000,5356000,2021-05-01,0,30,12,14\nB,581000,5356000,2021-05-01,0,30,NA,14\n"
    res = _run(_write(tmp_path, text), fmt)
    assert res.accepted["soc_g_kg"].tolist() == [12.0, 14.0]


LONG = {
    "layout": "long", "epsg": 25833, "delimiter": ";", "decimal": ",", "date_format": "%d.%m.%Y",
    "columns": {"sample_id": "id", "x": "x", "y": "y", "sampling_date": "d", "top": "t", "bottom": "b", "method": "m"},
    "long": {"parameter": "p", "value": "v", "unit": "u",
             "parameters": {"Corg": "soc", "TOC": "soc", "BD": "bulk_density"},
             "units": {"soc": {"%": "percent"}, "bulk_density": {"g/cm3": "g_cm3"}},
             "prefer": {"soc": ["DIN EN 15936", "TOC"]}},
}  # fmt: skip
LONG_HEAD = "id;x;y;d;t;b;p;v;u;m\n"
AT = "581000;5356000;14.09.2021;0;30"


def test_long_layout_prefers_a_method_and_counts_samples_and_lines(tmp_path: Path) -> None:
    text = LONG_HEAD + "".join(
        [
            f"A;{AT};Corg;1,5;%;Walkley-Black\n",  # 2: not used, a preferred method exists
            f"A;{AT};Corg;1,8;%;DIN EN 15936\n",  # 3: used
            f"A;{AT};BD;1,3;g/cm3;ring\n",  # 4
            f"B;{AT};TOC;2,0;%;x\n",  # 5: used (TOC is the second preference)
            f"B;{AT};Corg;2,2;%;Walkley-Black\n",  # 6: not used
            f"C;{AT};Corg;1,0;%;a\n",  # 7: two unpreferred, different values -> rejected
            f"C;{AT};Corg;1,2;%;b\n",  # 8
        ]
    )
    res = _run(_write(tmp_path, text), parse_format(LONG, where="l", default_name="l"))
    acc = res.accepted.set_index("sample_id")
    assert acc.loc["A", "soc_g_kg"] == pytest.approx(18.0)
    assert acc.loc["A", "method"] == "DIN EN 15936"
    assert acc.loc["B", "soc_g_kg"] == pytest.approx(20.0)
    assert res.record_lines == ((2, 3, 4), (5, 6))
    assert {n.row for n in res.notes if n.code == "not_preferred"} == {2, 6}
    assert "two different SOC values" in _why(res)[8]
    s = res.summary
    assert (s.samples_accepted, s.lines_accepted, s.samples_rejected, s.lines_rejected) == (2, 5, 1, 2)
    assert s.rejected_by_reason == {"conflicting_values": 1, "sample_rejected": 1}
    assert "2 samples accepted from 5 lines" in s.text()


def test_several_date_formats_and_excel_serials(tmp_path: Path) -> None:
    fmt = _fmt(date_format=["%d.%m.%Y", "%Y-%m-%d", "excel"])
    rows = ["14.09.2021", "2021-09-14", "44453", "2021-09-14 10:30", "44453.5", "1.2.2021", "60"]
    text = "id,x,y,date,top,bottom,soc\n" + "".join(f"S{i},581000,5356000,{d},0,30,12\n" for i, d in enumerate(rows))
    res = _run(_write(tmp_path, text), fmt)
    dates = res.accepted.set_index("sample_id")["sampling_date"].to_dict()
    assert dates == {"S0": "2021-09-14", "S1": "2021-09-14", "S2": "2021-09-14", "S3": "2021-09-14",
                     "S4": "2021-09-14", "S5": "2021-02-01"}  # fmt: skip
    assert "DD.MM.YYYY or YYYY-MM-DD or an Excel date number" in _why(res)[8]  # serial 60: 1900-02-29 never was


def test_per_row_unit_columns(tmp_path: Path) -> None:
    fmt = _fmt(columns=BASE | {"bulk_density": "bd"},
               units={"soc": {"column": "soc_unit", "map": {"%": "percent", "g/kg": "g_kg"}},
                      "bulk_density": {"column": "bd_unit", "map": {"g/cm3": "g_cm3", "kg/m3": "kg_m3"}}})  # fmt: skip
    text = (
        "id,x,y,date,top,bottom,soc,soc_unit,bd,bd_unit\n"
        "A,581000,5356000,2021-05-01,0,30,1.2,%,1350,kg/m3\n"
        "B,581000,5356000,2021-05-01,0,30,12,g/kg,1.35,g/cm3\n"
        "C,581000,5356000,2021-05-01,0,30,12,ppm,1.35,g/cm3\n"
    )
    res = _run(_write(tmp_path, text), fmt)
    acc = res.accepted.set_index("sample_id")
    assert acc["soc_g_kg"].tolist() == pytest.approx([12.0, 12.0])
    assert acc["bulk_density_g_cm3"].tolist() == pytest.approx([1.35, 1.35])
    assert "unit 'ppm' is not known for SOC" in _why(res)[4]


# ------------------------------------------------------------------------------ 15.2-15.4, 15.7


def test_unreadable_optional_values_become_missing_with_a_note(tmp_path: Path) -> None:
    cols = BASE | {"bulk_density": "bd", "coarse_fragments": "cf"}
    text = "id,x,y,date,top,bottom,soc,bd,cf\nA,581000,5356000,2021-05-01,0,30,12,abc,120\nB,581000,5356000,2021-05-01,0,30,12,0.05,5\n"
    res = _run(_write(tmp_path, text), _fmt(columns=cols))
    acc = res.accepted.set_index("sample_id")
    assert acc["soc_g_kg"].tolist() == [12.0, 12.0]
    assert acc["bulk_density_g_cm3"].isna().all()
    assert np.isnan(acc.loc["A", "coarse_fragments_vol_pct"])
    assert acc.loc["B", "coarse_fragments_vol_pct"] == 5.0
    assert res.summary.flagged_by_reason == {"bulk_density_unreadable": 1, "coarse_fragments_implausible": 1,
                                             "bulk_density_implausible": 1}  # fmt: skip
    assert res.summary.samples_flagged == 2


def test_a_missing_required_column_rejects_the_file_in_one_message(tmp_path: Path) -> None:
    text = "id,x,y,date,top,bottom,soc_g_kg\n" + "A,581000,5356000,2021-05-01,0,30,12\n" * 360
    with pytest.raises(SubmissionRejected) as err:
        _run(_write(tmp_path, text), _fmt())
    msg = str(err.value)
    assert "'soc' (columns.soc)" in msg
    assert "nothing was stored" in msg
    assert msg.count("soc") < 10  # one message, not one per row
    with pytest.raises(SubmissionRejected, match=r"'top' \(columns.top\), 'bottom' \(columns.bottom\)"):
        _run(_write(tmp_path, "id,x,y,date,soc\nA,1,2,2021-05-01,3\n", "b.csv"), _fmt())


@pytest.mark.parametrize(
    ("epsg", "x", "y"),
    [
        (32633, 334000, -3751000),  # Sydney's UTM 56S numbers read as UTM 33N
        (32633, 1e12, 5356000),  # 1e12 m
        (31468, 500000, 5356000),  # Gauss-Krueger zone 4 easting without its zone prefix (4500000)
        (4326, 151.2, -33.9),  # Sydney in lon/lat given as EPSG:4326 is fine for its CRS ... but not in the project
    ],
)
def test_positions_outside_the_crs_area_of_use_are_rejected(tmp_path: Path, epsg: int, x: float, y: float) -> None:
    cols = BASE | {"epsg": "epsg"}
    text = f"id,x,y,epsg,date,top,bottom,soc\nA,{x},{y},{epsg},2021-05-01,0,30,12\nB,581000,5356000,32633,2021-05-01,0,30,12\n"
    res = _run(_write(tmp_path, text), _fmt(columns=cols))
    assert list(res.accepted["sample_id"]) == ["B"]
    reason = _why(res)[2]
    if epsg == 4326:
        assert "area of use of the project CRS EPSG:32633" in reason  # valid lon/lat, but not placeable in UTM 33N
    else:
        assert f"outside the area of use of EPSG:{epsg}" in reason


def test_region_bounds_still_apply(tmp_path: Path) -> None:
    text = "id,x,y,date,top,bottom,soc\nA,581000,5356000,2021-05-01,0,30,12\nB,591000,5356000,2021-05-01,0,30,12\n"
    res = _run(_write(tmp_path, text), _fmt(), region_bounds=(580000.0, 5355000.0, 585000.0, 5360000.0))
    assert _why(res) == {3: "point lies outside the project region"}


# ------------------------------------------------------------------------------ 16.3 strict parsing


def test_duplicate_header_names_are_rejected_naming_both_columns(tmp_path: Path) -> None:
    text = "id,x,y,date,top,bottom,soc,soc\nA,581000,5356000,2021-05-01,0,30,10,99\n"
    with pytest.raises(SubmissionRejected, match="columns 7 and 8 are both named 'soc'"):
        _run(_write(tmp_path, text), _fmt())


@pytest.mark.parametrize("cell", ["1_5", "١٥", "１５", "1,5", "0x1F", "nan", "inf", "1e400", "15 g"])
def test_only_ascii_decimal_numbers_are_numbers(tmp_path: Path, cell: str) -> None:
    res = _run(_write(tmp_path, f'id,x,y,date,top,bottom,soc\nA,581000,5356000,2021-05-01,0,30,"{cell}"\n'), _fmt())
    assert res.accepted.empty
    assert res.rejected[0].column == "soc"
    assert "is not a number" in res.rejected[0].reason


@pytest.mark.parametrize("cell", ["2024-02-29garbage", "0001-01-01", "1021-05-01", "２０２１-05-01", "2021-02-30"])
def test_dates_must_be_whole_plausible_ascii_dates(tmp_path: Path, cell: str) -> None:
    res = _run(_write(tmp_path, f"id,x,y,date,top,bottom,soc\nA,581000,5356000,{cell},0,30,12\n"), _fmt())
    assert res.accepted.empty
    assert res.rejected[0].column == "date"


@pytest.mark.parametrize("cell", ["32633.9", "3.2633e4", "EPSG:32633.0", "x"])
def test_epsg_codes_are_whole_numbers(tmp_path: Path, cell: str) -> None:
    text = f"id,x,y,epsg,date,top,bottom,soc\nA,581000,5356000,{cell},2021-05-01,0,30,12\n"
    res = _run(_write(tmp_path, text), _fmt(columns=BASE | {"epsg": "epsg"}))
    assert "is not an EPSG code" in res.rejected[0].reason


@pytest.mark.parametrize(("code", "match"), [(4978, "geocentric"), (5703, "vertical")])
def test_geocentric_and_vertical_row_crs_are_rejected(tmp_path: Path, code: int, match: str) -> None:
    text = f"id,x,y,epsg,date,top,bottom,soc\nA,581000,5356000,{code},2021-05-01,0,30,12\n"
    res = _run(_write(tmp_path, text), _fmt(columns=BASE | {"epsg": "epsg"}))
    assert match in res.rejected[0].reason


def test_nul_and_control_characters_are_rejected_per_row_anywhere(tmp_path: Path) -> None:
    good = "A{i},581000,5356000,2021-05-01,0,30,12\n"
    body = "".join(good.format(i=i) for i in range(200))  # > 4 KiB before the NUL
    text = "id,x,y,date,top,bottom,soc\n" + body + "B\x00,581000,5356000,2021-05-01,0,30,12\n" + '"C\x1b[2J",581000,5356000,2021-05-01,0,30,12\n' + '"D\nREJECTED: nothing wrong",581000,5356000,2021-05-01,0,30,12\n'
    assert len(text.split("B\x00")[0]) > 4096
    res = _run(_write(tmp_path, text), _fmt())
    assert len(res.accepted) == 200
    assert [(r.row, r.code) for r in res.rejected] == [(202, "control_character"), (203, "control_character"),
                                                        (204, "control_character")]  # fmt: skip
    assert all(r.column == "id" for r in res.rejected)


@pytest.mark.parametrize(
    ("crs", "match"),
    [("foo", "not a known CRS"), ("EPSG:99999", "not a known CRS"), ("EPSG:2263", "US survey foot"),
     ("EPSG:4978", "geocentric"), ("EPSG:4326", "geographic"), ("EPSG:5703", "vertical"), ("EPSG:5555", "compound")],
)  # fmt: skip
def test_project_crs_must_be_projected_2d_metres(tmp_path: Path, crs: str, match: str) -> None:
    path = _write(tmp_path, "id,x,y,date,top,bottom,soc\nA,581000,5356000,2021-05-01,0,30,12\n")
    with pytest.raises(ConfigError, match=match):
        _run(path, _fmt(), project_crs=crs)


def test_submission_crs_in_feet_is_converted(tmp_path: Path) -> None:
    # NAD83 / New York Long Island (ftUS): Central Park, into UTM 18N (EPSG:32618).
    text = "id,x,y,date,top,bottom,soc\nA,993000,225000,2021-05-01,0,30,12\n"
    res = _run(_write(tmp_path, text), _fmt(epsg=2263), project_crs="EPSG:32618")
    assert res.accepted.iloc[0]["x"] == pytest.approx(586000, abs=2000)


# ------------------------------------------------------------------------------ 16.4 bounded inputs


def test_only_regular_files_of_bounded_size_are_read(tmp_path: Path) -> None:
    with pytest.raises(SubmissionRejected, match="directory"):
        _run(tmp_path, _fmt())
    with pytest.raises(SubmissionRejected, match="device"):
        _run(Path("/dev/zero"), _fmt())
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(SubmissionRejected, match="FIFO"):
        _run(fifo, _fmt())  # returns at once: the pipe is never opened
    big = _write(tmp_path, "id,x,y,date,top,bottom,soc\n" + "A,1,2,2021-05-01,0,30,1\n" * 100)
    with pytest.raises(SubmissionRejected, match="more than the limit of 1,000 bytes"):
        _run(big, _fmt(), max_bytes=1000)


@pytest.mark.parametrize("newline", ["\r", "\r\n", "\n", "mixed"])
def test_cr_only_and_mixed_newlines(tmp_path: Path, newline: str) -> None:
    rows = ["id,x,y,date,top,bottom,soc", *(f"S{i},581000,5356000,2021-05-01,0,30,12" for i in range(4))]
    if newline == "mixed":
        text = rows[0] + "\r" + rows[1] + "\r\n" + rows[2] + "\n" + rows[3] + "\r" + rows[4] + "\n"
    else:
        text = newline.join(rows) + newline
    res = _run(_write(tmp_path, text), _fmt())
    assert len(res.accepted) == 4
    assert list(res.accepted["row"]) == [2, 3, 4, 5]


def test_chunked_reading_keeps_line_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "CHUNK_ROWS", 3)
    rows = [f"S{i},581000,5356000,2021-05-01,0,30,{'x' if i == 5 else 12}" for i in range(8)]
    res = _run(_write(tmp_path, "id,x,y,date,top,bottom,soc\n" + "\n".join(rows) + "\n"), _fmt())
    assert len(res.accepted) == 7
    assert _why(res) == {7: "'x' is not a number"}


# ------------------------------------------------------------------------------ property: every line accounted for

CELL = st.sampled_from(["", "NA", "n.a.", "-9999", "<0.2", "0-30", "0–20 cm", "12", "1,5", "1_5", "x", "2021-05-01",
                        "44453", "POINT (1 2)", "\x00", "30-10"])  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(CELL, min_size=6, max_size=7), max_size=12))
def test_accepted_plus_rejected_is_submitted_for_feature_profiles(tmp_path: Path, rows: list[list[str]]) -> None:
    cols = {"sample_id": "id", "x": "x", "y": "y", "sampling_date": "date", "depth": "depth", "soc": "soc",
            "bulk_density": "bd"}  # fmt: skip
    fmt = _fmt(columns=cols, date_format=["%Y-%m-%d", "excel"])
    lines = ["id,x,y,date,depth,soc,bd", *(",".join(f'"{c}"' for c in r) for r in rows)]
    path = _write(tmp_path, "\n".join(lines) + "\n", "p.csv")
    if reading.looks_binary(path.read_bytes()[: reading.SNIFF_BYTES]):
        with pytest.raises(SubmissionRejected, match="binary"):  # many NULs: rejected whole, nothing recorded
            _run(path, fmt)
        return
    res = _run(path, fmt)
    assert len(res.accepted) + len(res.rejected) == res.submitted == len(rows)
    assert sorted([*res.accepted["row"], *(r.row for r in res.rejected)]) == list(range(2, len(rows) + 2))


def test_shipped_lab_profile_still_reads_the_demo_layout(tmp_path: Path) -> None:
    header = "sample_id,site_id,farm_id,field_id,x,y,epsg,sampling_date,top_cm,bottom_cm,soc_g_kg,bulk_density_g_cm3,coarse_fragments_vol_pct,method"
    res = _run(_write(tmp_path, header + "\nS1,P1,FA,F1,581000,5356000,32633,2021-05-01,0,15,20.5,1.30,,dc\n"),
               load_format("lab_wide", search_dirs=FORMATS))  # fmt: skip
    assert np.isnan(res.accepted.iloc[0]["coarse_fragments_vol_pct"])


def test_sample_id_from_several_columns(tmp_path: Path) -> None:
    cols = {k: v for k, v in BASE.items() if k != "sample_id"} | {"site_id": "pedon"}
    fmt = _fmt(columns=cols, sample_id_from=["pedon", "hz"])
    text = "pedon,hz,x,y,date,top,bottom,soc\nP1,A,581000,5356000,2021-05-01,0,10,12\nP1,B,581000,5356000,2021-05-01,10,30,8\nP2,,581000,5356000,2021-05-01,0,10,12\n"
    res = _run(_write(tmp_path, text), fmt)
    assert list(res.accepted["sample_id"]) == ["P1/A", "P1/B"]
    assert res.rejected[0].column == "pedon+hz"
    with pytest.raises(SubmissionRejected, match=r"'hz' \(sample_id_from\)"):
        _run(_write(tmp_path, text.replace("hz", "horizon"), "b.csv"), fmt)
    with pytest.raises(ConfigError, match="not both"):
        _fmt(columns=BASE, sample_id_from=["a", "b"])
