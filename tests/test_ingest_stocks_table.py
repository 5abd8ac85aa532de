"""``mrv samples stocks`` table logic: a bad profile is reported and the others computed; file lines in messages;
the export of stored records to the stocks input format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mrv.errors import StockError
from mrv.samples.profile_stocks import (
    compute_profile_stocks,
    profile_stocks_report,
    read_profile_csv,
    stocks_command,
    stocks_input_from_records,
)

CSV = """profile_id,round,top_cm,bottom_cm,soc_g_kg,bulk_density_g_cm3
A,2021,0,15,20,1.3
A,2021,15,30,10,1.4
B,2021,0,15,20,
B,2021,15,30,10,1.4
C,2021,0,10,20,1.3
C,2021,15,30,10,1.4
D,2021,0,30,-5,1.3
"""


def test_bad_profiles_are_reported_with_file_lines_and_the_others_computed(tmp_path: Path) -> None:
    path = tmp_path / "layers.csv"
    path.write_text(CSV)
    table = read_profile_csv(path)
    assert list(table.index) == list(range(2, 9))  # file lines
    stocks, problems = profile_stocks_report(table, method="fixed", depth_cm=30)
    assert list(stocks["profile_id"]) == ["A"]
    assert stocks["soc_stock_t_ha"].iloc[0] == pytest.approx(20 * 1.3 * 1.5 + 10 * 1.4 * 1.5)
    assert "file lines 4" in problems["B (round 2021)"]  # not 0-based row 2
    assert "gap between 10 and 15 cm" in problems["C (round 2021)"]
    assert "file line(s) 8" in problems["D (round 2021)"]
    with pytest.raises(StockError, match="file lines 4"):
        compute_profile_stocks(table[table["profile_id"] == "B"], method="fixed")
    n, text = stocks_command(path, tmp_path / "out.csv", method="fixed")
    assert n == 1
    assert "3 profile(s) left out" in text
    assert pd.read_csv(tmp_path / "out.csv")["profile_id"].tolist() == ["A"]


def test_esm_report_leaves_out_only_the_failing_profile(tmp_path: Path) -> None:
    path = tmp_path / "layers.csv"
    path.write_text(CSV.replace("C,2021,0,10,20,1.3", "C,2021,0,15,20,1.3") + "E,2021,0,5,20,1.3\n")
    stocks, problems = profile_stocks_report(read_profile_csv(path), method="esm", reference_mass_mg_ha=3000.0)
    assert set(stocks["profile_id"]) <= {"A", "C"}
    assert "E (round 2021)" in problems  # 5 cm of soil cannot reach 3000 Mg/ha


def test_export_maps_stored_records_to_the_stocks_input(tmp_path: Path) -> None:
    records = pd.DataFrame(
        {"sample_id": ["s2", "s1", "s3"], "site_id": ["P1", "P1", "P1"], "source": "lab",
         "sampling_date": ["2021-05-01", "2021-05-01", "2024-05-03"], "top_cm": [15.0, 0.0, 0.0],
         "bottom_cm": [30.0, 15.0, 30.0], "soc_g_kg": [10.0, 20.0, 18.0], "bulk_density_g_cm3": [1.4, 1.3, np.nan],
         "coarse_fragments_vol_pct": [np.nan, 5.0, 2.0], "soc_sd_g_kg": np.nan, "x": 1.0, "y": 2.0, "crs": "EPSG:32633"}
    )  # fmt: skip
    table = stocks_input_from_records(records)
    assert table[["profile_id", "round", "top_cm"]].values.tolist() == [["P1", "2021", 0.0], ["P1", "2021", 15.0], ["P1", "2024", 0.0]]
    path = tmp_path / "export.csv"
    table.to_csv(path, index=False)
    stocks, problems = profile_stocks_report(read_profile_csv(path), method="fixed", depth_cm=30)
    assert stocks["soc_stock_t_ha"].iloc[0] == pytest.approx(20 * 1.3 * 1.5 * 0.95 + 10 * 1.4 * 1.5)
    assert "P1 (round 2024)" in problems  # no bulk density stored: reported, not invented


def test_export_keeps_agencies_apart_under_the_name_the_cli_uses() -> None:
    from mrv.samples.profile_stocks import stored_to_stocks_input

    records = pd.DataFrame({"agency": ["a", "b"], "site_id": ["P1", "P1"], "sampling_date": "2021-05-01",
                            "top_cm": 0.0, "bottom_cm": 30.0, "soc_g_kg": 10.0, "submission_id": [1, 2]})  # fmt: skip
    table = stored_to_stocks_input(records, round_by="date")
    assert table["profile_id"].tolist() == ["a/P1", "b/P1"]
    assert table["round"].tolist() == ["2021-05-01", "2021-05-01"]
    assert table["submission_id"].tolist() == [1, 2]
    assert stored_to_stocks_input(records.iloc[:0]).empty
