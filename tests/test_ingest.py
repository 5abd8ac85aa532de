"""Row-level validation of submitted sample CSVs: every row stored or rejected with a reason."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from mrv.errors import SubmissionRejected
from mrv.samples.formats import load_format
from mrv.samples.ingest import ingest

REPO = Path(__file__).resolve().parents[1]
FORMATS = (REPO / "mrv" / "profiles" / "sample_formats",)
BOUNDS = (580000.0, 5355000.0, 585000.0, 5360000.0)

LAB_HEADER = "sample_id,site_id,farm_id,field_id,x,y,epsg,sampling_date,top_cm,bottom_cm,soc_g_kg,bulk_density_g_cm3,coarse_fragments_vol_pct,method"


def _lab(tmp_path: Path, rows: list[str], name: str = "lab.csv", sep: str = ",", encoding: str = "utf-8") -> Path:
    text = "\n".join([LAB_HEADER.replace(",", sep), *rows]) + "\n"
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def _run(path: Path, fmt: str = "lab_wide", source: str = "lab"):
    return ingest(
        path,
        load_format(fmt, search_dirs=FORMATS),
        source=source,
        submitter="agency",
        project_crs="EPSG:32633",
        region_bounds=BOUNDS,
        today=dt.date(2025, 1, 1),
    )


def test_good_and_bad_rows_are_all_accounted_for(tmp_path: Path) -> None:
    rows = [
        "S1,P1,FA,F1,581000,5356000,32633,2021-05-01,0,15,20.5,1.30,5,dc",
        "S2,P1,FA,F1,581000,5356000,32633,2021-05-01,15,30,14.1,1.40,5,dc",
        "S3,P2,FA,F1,581000,5356000,32633,2021-05-01,30,15,14.1,1.40,5,dc",  # bottom above top
        "S4,P3,FA,F1,581000,5356000,32633,2021-05-01,0,15,abc,1.40,5,dc",  # text in number
        "S5,P4,FA,F1,581000,5356000,32633,2031-05-01,0,15,10,1.40,5,dc",  # future
        "S6,P5,FA,F1,481000,5356000,32633,2021-05-01,0,15,10,1.40,5,dc",  # outside region
        "S1,P6,FA,F1,581000,5356000,32633,2021-05-01,0,15,10,1.40,5,dc",  # duplicate id
        "S7,P7,FA,F1,581000,5356000,99999,2021-05-01,0,15,10,1.40,5,dc",  # unknown CRS
        "S8,P8,FA,F1,581000,5356000,32633,2021-05-01,0,15,850,1.40,5,dc",  # impossible SOC
        "S9,P9,FA,F1,581000,5356000,32633,2021-05-01,0,15,10,3.9,5,dc",  # impossible BD
    ]
    res = _run(_lab(tmp_path, rows))
    assert res.submitted == 10
    assert len(res.accepted) + len(res.rejected) == res.submitted
    # S1 is used twice with different values: both lines are rejected (neither copy can be trusted);
    # S9's impossible bulk density is stored as missing with a note, its valid SOC is kept.
    assert list(res.accepted["sample_id"]) == ["S2", "S9"]
    reasons = {r.row: (r.column, r.reason) for r in res.rejected}
    assert "duplicate sample id 'S1' on lines 2, 8" in reasons[2][1]
    assert reasons[4] == ("bottom_cm", "bottom depth 15 cm is not below top depth 30 cm")
    assert reasons[5][0] == "soc_g_kg"
    assert "'abc' is not a number" in reasons[5][1]
    assert "future" in reasons[6][1]
    assert "outside the project region" in reasons[7][1]
    assert "duplicate sample id" in reasons[8][1]
    assert "EPSG:99999 is not a known CRS" in reasons[9][1]
    assert "impossible" in reasons[10][1]
    s9 = res.accepted.set_index("sample_id").loc["S9"]
    assert np.isnan(s9["bulk_density_g_cm3"])
    assert s9["soc_g_kg"] == 10.0
    assert "bulk density 3.9 g/cm3 is outside 0.1-2.65 g/cm3" in s9["ingest_flag"]
    assert [(n.row, n.code) for n in res.notes] == [(11, "bulk_density_implausible")]


def test_semicolon_decimal_comma_latin1(tmp_path: Path) -> None:
    rows = ["Ä1;P1;FA;F1;581000,5;5356000,25;32633;2021-05-01;0;15;20,5;1,30;5;Trockenveraschung"]
    res = _run(_lab(tmp_path, rows, sep=";", encoding="latin-1"))
    assert len(res.accepted) == 1
    rec = res.accepted.iloc[0]
    assert rec["sample_id"] == "Ä1"
    assert rec["soc_g_kg"] == pytest.approx(20.5)
    assert rec["x"] == pytest.approx(581000.5)


def test_crowd_percent_and_lonlat_are_converted(tmp_path: Path) -> None:
    path = tmp_path / "crowd.csv"
    path.write_text(
        "sample_id,submitter,lon,lat,sampling_date,top_cm,bottom_cm,soc_percent,method\n"
        "C1,anna,16.107012,48.360845,2021-05-02,0,30,1.8,kit\n"
    )
    res = _run(path, fmt="crowd", source="crowd")
    rec = res.accepted.iloc[0]
    assert rec["soc_g_kg"] == pytest.approx(18.0)
    assert rec["x"] == pytest.approx(582000, abs=1)  # projected into UTM 33N metres
    assert rec["source"] == "crowd"


def test_crowd_gps_accuracy_is_optional_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "crowd.csv"
    path.write_text(
        "sample_id,submitter,lon,lat,sampling_date,top_cm,bottom_cm,soc_percent,method,gps_accuracy_m\n"
        "C1,anna,16.107012,48.360845,2021-05-02,0,30,1.8,kit,4.5\n"
        "C2,anna,16.107012,48.360845,2021-05-02,0,30,1.8,kit,\n"  # not reported
        "C3,anna,16.107012,48.360845,2021-05-02,0,30,1.8,kit,0\n"  # Android: 0 = no estimate
        "C4,anna,16.107012,48.360845,2021-05-02,0,30,1.8,kit,-3\n"
        "C5,anna,16.107012,48.360845,2021-05-02,0,30,1.8,kit,far\n"
    )
    res = _run(path, fmt="crowd", source="crowd")
    acc = dict(zip(res.accepted["sample_id"], res.accepted["gps_accuracy_m"], strict=True))
    assert acc["C1"] == 4.5
    assert np.isnan(acc["C2"])
    assert np.isnan(acc["C3"])
    why = {r.row: (r.column, r.reason) for r in res.rejected}
    assert why[5] == ("gps_accuracy_m", "GPS accuracy must be between 0 and 10000 m")
    assert why[6] == ("gps_accuracy_m", "'far' is not a number")


def test_bundled_demo_crowd_file_without_gps_accuracy_still_ingests(tmp_path: Path) -> None:
    path = REPO / "sample_data" / "demo" / "samples" / "crowd_2021.csv"
    assert "gps_accuracy_m" not in path.read_text().splitlines()[0]
    res = _run(path, fmt="crowd", source="crowd")
    assert len(res.accepted) + len(res.rejected) == res.submitted
    assert len(res.rejected) == 6  # the planted defects only (3 impossible rows, 3 repeated sample ids)
    assert res.accepted["gps_accuracy_m"].isna().all()
    assert not [r for r in res.rejected if "gps" in r.column.lower()]


def test_missing_columns_reject_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,lat,lon\n1,2,3\n")
    with pytest.raises(SubmissionRejected, match="lacks column"):
        _run(path)


def test_empty_and_binary_files_rejected(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SubmissionRejected, match="empty"):
        _run(empty)
    binary = tmp_path / "x.csv"
    binary.write_bytes(b"PK\x03\x04\x00\x00binary")
    with pytest.raises(SubmissionRejected, match="binary"):
        _run(binary)


# ------------------------------------------------------------------------------------------- long layout

LONG_HEADER = (
    "Probennummer;Standort;Schlag;Rechtswert;Hochwert;Probenahmedatum;Tiefe_von_cm;Tiefe_bis_cm;"
    "Parameter;Messwert;Einheit;Methode"
)
AT = "581000,5;5356000,2;14.09.2021"  # ETRS89 / UTM 33N (EPSG:25833), German date


def _long_de(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "bodendaten.csv"
    path.write_bytes(("\n".join([LONG_HEADER, *lines]) + "\n").encode("latin-1"))
    return path


def test_agency_long_de_pivots_converts_and_cites_original_lines(tmp_path: Path) -> None:
    lines = [
        f"P1-A;P1;S1;{AT};0;15;Organischer Kohlenstoff;1,8;M%;DIN EN 15936",  # 2
        f"P1-A;P1;S1;{AT};0;15;Lagerungsdichte;1,32;g/cm3;Stechzylinder",  # 3
        f"P1-A;P1;S1;{AT};0;15;pH;6,5;-;CaCl2",  # 4: known, ignored, goes with P1-A
        f"P1-B;P1;S1;{AT};15;30;Glühverlust;2,0;M.-%;DIN 19684",  # 5: SOM -> SOC
        f"P1-B;P1;S1;{AT};15;30;Trockenrohdichte;1450;kg/m3;Stechzylinder",  # 6
        f"P1-B;P1;S1;{AT};15;30;Skelettgehalt;4;Vol.-%;Sieb",  # 7
        f"P2-A;P2;S1;{AT};0;15;Organischer Kohlenstoff;85;M%;DIN",  # 8: 850 g/kg impossible
        f"P2-A;P2;S1;{AT};0;15;Lagerungsdichte;1,3;g/cm3;DIN",  # 9: goes down with P2-A
        f"P3-A;P3;S1;{AT};0;15;Organischer Kohlenstoff;1,1;ppm;DIN",  # 10: unknown unit
        f"P3-A;P3;S1;{AT};0;15;Lagerungsdichte;1,3;g/cm3;DIN",  # 11: sample has no usable SOC
        f"P4-A;P4;S1;{AT};0;15;Wassergehalt;12;%;DIN",  # 12: unknown parameter
        "P5-A;P5;S1;582000;5356000;14.09.2021;0;15;Corg;1,5;M%;DIN",  # 13
        "P5-A;P5;S1;583000;5356000;14.09.2021;0;15;Lagerungsdichte;1,4;g/cm3;DIN",  # 14: other x
        "P6-A;P6;S1;581000;5356000;2021-09-14;0;15;Corg;1,5;M%;DIN",  # 15: ISO date, not DD.MM.YYYY
        f"P1-A;P1;S1;{AT};0;15;Corg;1,80;M%;DIN EN 15936",  # 16: repeats line 2
        "",  # 17: empty line
        f"P7-A;P7;S1;{AT};0;15;Corg;abc;M%;DIN",  # 18: not a number
    ]
    res = _run(_long_de(tmp_path, lines), fmt="agency_long_de")
    assert res.submitted == 17
    # Every line ends in exactly one place.
    accepted_lines = [n for lines_ in res.record_lines for n in lines_]
    rejected_lines = [r.row for r in res.rejected]
    assert sorted(accepted_lines + rejected_lines) == list(range(2, 19))
    assert res.accepted_lines + len(res.rejected) == res.submitted

    acc = res.accepted.set_index("sample_id")
    assert list(acc.index) == ["P1-A", "P1-B"]
    assert res.record_lines == ((2, 3, 4), (5, 6, 7))
    a, b = acc.loc["P1-A"], acc.loc["P1-B"]
    assert a["row"] == 2
    assert a["soc_g_kg"] == pytest.approx(18.0)  # 1,8 M% = 1.8 g/100 g
    assert a["bulk_density_g_cm3"] == pytest.approx(1.32)
    assert a["method"] == "DIN EN 15936"  # the SOC line's method
    assert np.isnan(a["soc_sd_g_kg"])  # measured, no conversion SD
    assert a["x"] == pytest.approx(581000.5, abs=1.0)  # ETRS89 and WGS 84 UTM 33N agree to < 1 m
    assert a["sampling_date"] == "2021-09-14"
    assert b["soc_g_kg"] == pytest.approx(0.58 * 20.0)  # van Bemmelen
    assert b["soc_sd_g_kg"] == pytest.approx(0.08 * 20.0)
    assert "van Bemmelen" in b["method"]
    assert b["bulk_density_g_cm3"] == pytest.approx(1.45)  # kg/m3 -> g/cm3
    assert b["coarse_fragments_vol_pct"] == pytest.approx(4.0)

    why = {r.row: r for r in res.rejected}
    assert why[8].column == "Messwert (Organischer Kohlenstoff)"
    assert "impossible" in why[8].reason
    assert "because of line 8" in why[9].reason
    assert why[10].column == "Einheit"
    assert "unit 'ppm' is not known" in why[10].reason
    assert "line 10 was rejected" in why[11].reason
    assert why[12].column == "Parameter"
    assert "'Wassergehalt' is unknown" in why[12].reason
    assert why[14].column == "Rechtswert"
    assert "on line 13" in why[14].reason
    assert "because of line 14" in why[13].reason
    assert "DD.MM.YYYY" in why[15].reason
    assert "repeats" in why[16].reason
    assert "line 2" in why[16].reason
    assert why[17].reason == "empty line"
    assert "'abc'" in why[18].reason


def test_long_sample_with_conflicting_values_is_rejected_on_the_second_line(tmp_path: Path) -> None:
    lines = [
        f"P1-A;P1;S1;{AT};0;15;Corg;1,8;M%;DIN",
        f"P1-A;P1;S1;{AT};0;15;Organischer Kohlenstoff;2,4;M%;DIN",
    ]
    res = _run(_long_de(tmp_path, lines), fmt="agency_long_de")
    assert res.accepted.empty
    why = {r.row: r.reason for r in res.rejected}
    assert "two different SOC values" in why[3]
    assert "because of line 3" in why[2]


def test_long_file_submission_counts_lines_in_the_ledger(tmp_path: Path, store_url: str) -> None:
    from mrv.samples.store import SampleStore
    from mrv.samples.submit import submit_file

    lines = [
        f"P1-A;P1;S1;{AT};0;15;Corg;1,8;M%;DIN",
        f"P1-A;P1;S1;{AT};0;15;Lagerungsdichte;1,3;g/cm3;DIN",
        f"P2-A;P2;S1;{AT};0;15;Corg;1,8;kg;DIN",
    ]
    fmt = load_format("agency_long_de", search_dirs=FORMATS)
    path = _long_de(tmp_path, lines)
    with SampleStore.open(store_url) as store:
        rep = submit_file(store, path, agency="LfU", source="lab", fmt=fmt, project_crs="EPSG:32633",
                          region_bounds=BOUNDS, today=dt.date(2025, 1, 1))  # fmt: skip
        s = rep.submission
        assert (s.submitted, s.accepted, s.rejected) == (3, 2, 1)
        # The same sample id again in a new file: both of its lines are rejected as a clash.
        again = tmp_path / "again.csv"
        again.write_bytes(path.read_bytes().replace(b"1,3;", b"1,31;"))
        rep2 = submit_file(store, again, agency="LfU", source="lab", fmt=fmt, project_crs="EPSG:32633",
                           region_bounds=BOUNDS, today=dt.date(2025, 1, 1))  # fmt: skip
        s2 = rep2.submission
        assert (s2.submitted, s2.accepted, s2.rejected) == (3, 0, 3)
        assert sorted(r.row for r in rep2.rejections) == [2, 3, 4]


def test_wide_file_with_som_column_and_depths_in_metres(tmp_path: Path) -> None:
    fmt_path = tmp_path / "som_m.yaml"
    fmt_path.write_text(
        "name: som_m\ncolumns: {sample_id: id, x: x, y: y, sampling_date: date, top: top_m, bottom: bottom_m, som: loi}\n"
        "epsg: 32633\nsom_unit: percent\ndepth_unit: m\n"
    )
    path = tmp_path / "som.csv"
    path.write_text(
        "id,x,y,date,top_m,bottom_m,loi\nA,581000,5356000,2021-05-01,0,0.3,3.0\nB,581000,5356000,2021-05-01,0,0.3,\n"
    )
    res = ingest(path, load_format(fmt_path, search_dirs=FORMATS), source="lab", submitter="a",
                 project_crs="EPSG:32633", region_bounds=BOUNDS, today=dt.date(2025, 1, 1))  # fmt: skip
    rec = res.accepted.iloc[0]
    assert (rec["top_cm"], rec["bottom_cm"]) == (0.0, 30.0)
    assert rec["soc_g_kg"] == pytest.approx(0.58 * 30.0)
    assert rec["soc_sd_g_kg"] == pytest.approx(0.08 * 30.0)
    assert res.rejected[0].row == 3
    assert res.rejected[0].column == "loi"
    assert "empty" in res.rejected[0].reason


def test_agency_long_de_prefers_dry_combustion_over_wet_oxidation(tmp_path: Path) -> None:
    lines = [
        f"P1-A;P1;S1;{AT};0;15;Corg;1,2;M%;DIN ISO 14235",  # 2: wet oxidation, not used
        f"P1-A;P1;S1;{AT};0;15;Corg;1,8;M%;DIN EN 15936",  # 3: dry combustion, used
    ]
    res = _run(_long_de(tmp_path, lines), fmt="agency_long_de")
    assert res.accepted["soc_g_kg"].tolist() == pytest.approx([18.0])
    assert res.record_lines == ((2, 3),)
    assert [(n.row, n.code) for n in res.notes] == [(2, "not_preferred")]
