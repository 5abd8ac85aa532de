"""Row-level validation of submitted sample CSVs: every row stored or rejected with a reason."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mrv.errors import SubmissionRejected
from mrv.samples.formats import load_format
from mrv.samples.ingest import ingest

REPO = Path(__file__).resolve().parents[1]
FORMATS = (REPO / "configs" / "sample_formats",)
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
    assert list(res.accepted["sample_id"]) == ["S1", "S2"]
    reasons = {r.row: (r.column, r.reason) for r in res.rejected}
    assert reasons[4] == ("bottom_cm", "bottom depth 15 cm is not below top depth 30 cm")
    assert reasons[5][0] == "soc_g_kg"
    assert "'abc' is not a number" in reasons[5][1]
    assert "future" in reasons[6][1]
    assert "outside the project region" in reasons[7][1]
    assert "duplicate sample id" in reasons[8][1]
    assert "EPSG:99999 is not a known CRS" in reasons[9][1]
    assert "impossible" in reasons[10][1]
    assert "bulk density" in reasons[11][1]


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
