"""Sample- and site-level QA (mrv.samples.qa): GPS accuracy, jitter, duplicates, field edges, outliers vs lab.

Pure functions on frames; flagged rows are kept with a readable reason, nothing is deleted.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from mrv.config import SampleErrorModel
from mrv.fields import read_fields
from mrv.samples.qa import (
    SampleChecks,
    carry_sample_flags,
    check_samples,
    flag_duplicates,
    flag_field_edges,
    flag_gps_accuracy,
    flag_position_jitter,
    flag_sample_duplicates,
    flag_sample_outliers_against_lab,
    lab_soc_over,
)

REPO = Path(__file__).resolve().parents[1]


def sample(sample_id: str, x: float, y: float = 0.0, **kw: object) -> dict[str, object]:
    rec: dict[str, object] = {
        "sample_id": sample_id, "site_id": kw.pop("site_id", sample_id), "source": "lab", "submitter": "LabA",
        "x": x, "y": y, "sampling_date": "2021-05-01", "top_cm": 0.0, "bottom_cm": 30.0, "soc_g_kg": 15.0,
        "bulk_density_g_cm3": np.nan, "gps_accuracy_m": np.nan,
    }  # fmt: skip
    rec.update(kw)
    return rec


def frame(*records: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame(list(records))


# ------------------------------------------------------------------------------------ GPS accuracy


def test_gps_accuracy_beyond_tolerance_is_flagged_and_missing_accuracy_is_not() -> None:
    f = frame(sample("a", 0, gps_accuracy_m=4.0), sample("b", 50, gps_accuracy_m=25.0), sample("c", 99))
    out = flag_gps_accuracy(f, tolerance_m=10.0)
    assert list(out["qa_flag"][[0, 2]]) == ["", ""]
    assert out.at[1, "qa_flag"].startswith("GPS accuracy 25 m is worse than the 10 m tolerance")
    assert len(out) == 3
    assert flag_gps_accuracy(f, tolerance_m=30.0)["qa_flag"].eq("").all()
    assert flag_gps_accuracy(f.drop(columns="gps_accuracy_m"))["qa_flag"].eq("").all()  # optional column
    # An earlier flag is kept and the new reason appended.
    f.loc[1, "qa_flag"] = "checked by hand"
    assert flag_gps_accuracy(f).at[1, "qa_flag"].startswith("checked by hand; GPS accuracy 25 m")


# ------------------------------------------------------------------------------------------- jitter


def test_records_of_one_site_further_apart_than_the_tolerance_are_flagged() -> None:
    f = frame(
        sample("P1-A", 0.0, site_id="P1", top_cm=0.0, bottom_cm=15.0),
        sample("P1-B", 3.0, 4.0, site_id="P1", top_cm=15.0, bottom_cm=30.0),  # 5 m: within 10 m
        sample("P1-2024", 30.0, 40.0, site_id="P1", sampling_date="2024-05-01"),  # 50 m away
        sample("P2-A", 500.0, site_id="P2"),
        sample("P2-A", 900.0, site_id="P2", submitter="LabB"),  # another agency's site P2: not the same site
        sample("X", 100.0, site_id=None),
        sample("Y", 700.0, site_id=None),
    )
    out = flag_position_jitter(f, tolerance_m=10.0, by=("source", "submitter", "site_id"))
    assert out.at[2, "qa_flag"].startswith("positions of site P1 differ by 50 m")
    assert "sample P1-A (LabA)" in out.at[2, "qa_flag"]
    assert "GPS jitter or a wrong site id" in out.at[2, "qa_flag"]
    assert (out["qa_flag"].drop(index=2) == "").all()
    assert flag_position_jitter(f, tolerance_m=60.0)["qa_flag"].eq("").all()


# --------------------------------------------------------------------------------------- duplicates


def test_sample_duplicates_keep_the_earliest_and_need_same_source_date_and_depth() -> None:
    f = frame(
        sample("S1", 0.0),
        sample("S1-copy", 0.0),  # same position, date, depth, SOC
        sample("S1-moved", 4.0, soc_g_kg=16.0, site_id="S1"),  # 4 m away, same site id: recorded twice
        sample("S1-retyped", 0.0, 6.0, soc_g_kg=15.03),  # 6 m away, new id, same SOC (rounding): a copy
        sample("grid", 0.0, -8.0, soc_g_kg=17.2),  # 8 m away, own site id and SOC: a dense-grid neighbour
        sample("S1-deeper", 0.0, top_cm=30.0, bottom_cm=60.0),  # another layer of the site
        sample("S1-later", 0.0, sampling_date="2024-05-01"),  # a re-visit
        sample("C1", 0.0, source="crowd"),  # a crowd core at the lab site: a second measurement
        sample("far", 40.0),
    )
    out = flag_sample_duplicates(f, tolerance_m=15.0).set_index("sample_id")["qa_flag"]
    assert out["S1-copy"].startswith("duplicate of sample S1 (LabA): same position, date, depth and SOC")
    assert out["S1-moved"].startswith("4.0 m from sample S1 (LabA) with the same date and depth and the same site id")
    assert out["S1-retyped"].startswith("6.0 m from sample S1 (LabA) with the same date and depth and SOC within")
    assert (out.drop(["S1-copy", "S1-moved", "S1-retyped"]) == "").all()
    # Without a source key every same-day same-depth pair counts.
    assert "S1" in flag_sample_duplicates(f, by=()).set_index("sample_id").at["C1", "qa_flag"]


def test_dense_grid_of_different_samples_has_no_duplicates_over_seeds() -> None:
    """Issue 15: cores 6-14 m apart on a grid, each with its own site id and SOC, are never duplicates;
    the same grid submitted again with new ids and the same values is flagged record for record."""
    for seed in range(20):
        rng = np.random.default_rng(seed)
        n = 12
        gx, gy = np.meshgrid(np.arange(n) * 10.0, np.arange(n) * 10.0)
        jitter = rng.uniform(-2.0, 2.0, size=(2, n * n))
        soc = np.round(rng.lognormal(np.log(15.0), 0.25, n * n), 1)
        grid = frame(*[
            sample(f"G{i}", float(x + dx), float(y + dy), soc_g_kg=float(c))
            for i, (x, y, dx, dy, c) in enumerate(zip(gx.ravel(), gy.ravel(), *jitter, soc, strict=True))
        ])  # fmt: skip
        near_equal = 0
        xy = grid[["x", "y"]].to_numpy()
        for i in range(len(grid)):  # brute force: pairs within 15 m whose SOC agrees by chance
            d = np.hypot(*(xy - xy[i]).T)
            near_equal += int(((d <= 15.0) & (np.abs(soc - soc[i]) <= 0.05) & (np.arange(len(grid)) < i)).sum())
        flagged = (flag_sample_duplicates(grid)["qa_flag"] != "").sum()
        assert flagged <= near_equal  # only genuinely indistinguishable records (same SOC to 0.1 g/kg)
        assert flagged <= 0.05 * len(grid)
        again = grid.assign(sample_id=[f"R{i}" for i in range(len(grid))], site_id=[f"R{i}" for i in range(len(grid))])
        both = flag_sample_duplicates(pd.concat([grid, again], ignore_index=True))["qa_flag"].to_numpy()
        copies = both[len(grid):]
        assert all(f != "" for f in copies)  # every re-sent record is flagged
        exact = sum(f.startswith(f"duplicate of sample G{i} ") for i, f in enumerate(copies))
        assert exact >= len(grid) - near_equal  # of its own original, unless an earlier twin agrees by chance


def test_ten_thousand_co_located_samples_are_checked_in_bounded_time_and_memory() -> None:
    """Issue 16: 10,000 samples at one point (query_pairs made this O(n^2) and ran out of memory)."""
    import time
    import tracemalloc

    n = 10_000
    rng = np.random.default_rng(1)
    f = pd.DataFrame({
        "sample_id": [f"S{i}" for i in range(n)], "site_id": [f"P{i}" for i in range(n)], "source": "lab",
        "submitter": "LabA", "x": 0.0, "y": 0.0, "sampling_date": "2021-05-01", "top_cm": 0.0, "bottom_cm": 30.0,
        "soc_g_kg": np.round(rng.uniform(5, 50, n), 2), "bulk_density_g_cm3": np.nan,
    })  # fmt: skip
    tracemalloc.start()
    t0 = time.perf_counter()
    out = flag_sample_duplicates(f)
    took = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert took < 10.0
    assert peak < 200e6
    assert (out["qa_flag"] != "").sum() > 0  # co-located records whose SOC agrees are flagged, the rest not
    assert (out["qa_flag"] != "").sum() < n


# --------------------------------------------------------------------------------------- field edges


FIELDS = {"F1": box(0, 0, 100, 100), "F2": box(100, 0, 200, 100)}


def test_field_edge_outside_and_wrong_field() -> None:
    pts = frame(
        sample("centre", 50.0, 50.0, field_id="F1"),
        sample("edge", 96.0, 50.0, field_id="F1"),  # 4 m from the F1/F2 boundary, 10 m tolerance
        sample("accurate", 96.0, 60.0, gps_accuracy_m=2.0),  # its own 2 m accuracy: not near the edge
        sample("outside", 250.0, 50.0),
        sample("wrong", 150.0, 50.0, field_id="F1"),
        sample("no position", np.nan, np.nan),
    )
    out = flag_field_edges(pts, FIELDS, tolerance_m=10.0).set_index("sample_id")["qa_flag"]
    assert out["centre"] == ""
    assert out["edge"] == (
        "near field edge: 4.0 m from the boundary of field F1, closer than 10.0 m (the position tolerance): "
        "it may belong to the neighbouring field or a mixed pixel"
    )
    assert out["accurate"] == ""
    assert out["outside"] == "outside every field (nearest field F2 is 50.0 m away): check the position"
    assert out["wrong"] == "field_id says F1 but the position lies in field F2"
    assert out["no position"] == ""
    # With 10 m pixels the uncertainty is at least half a pixel diagonal (7.07 m).
    px = flag_field_edges(pts, FIELDS, tolerance_m=10.0, pixel_size_m=10.0).set_index("sample_id")["qa_flag"]
    assert "closer than 7.1 m (half a 10 m pixel diagonal)" in px["accurate"]
    assert flag_field_edges(pts, {}, tolerance_m=10.0)["qa_flag"].eq("").all()


def test_overlapping_fields_are_reported() -> None:
    out = flag_field_edges(frame(sample("p", 50.0, 50.0)), {"A": box(0, 0, 100, 100), "B": box(40, 40, 60, 60)})
    assert "in 2 fields (A, B): the field polygons overlap" in out.at[0, "qa_flag"]


def test_field_edges_with_the_demo_fields_as_read_fields_returns_them() -> None:
    fields = read_fields(REPO / "sample_data" / "demo" / "fields.geojson", crs="EPSG:32633")
    geoms = {f.field_id: f.geometry for f in fields}
    big = max(fields, key=lambda f: f.geometry.area)
    inner = big.geometry.representative_point()
    edge_pt = big.geometry.exterior.interpolate(0.3, normalized=True)
    pts = frame(
        sample("inner", inner.x, inner.y, gps_accuracy_m=1.0),
        sample("on the edge", edge_pt.x, edge_pt.y),
        sample("far away", 0.0, 0.0),
    )
    out = flag_field_edges(pts, geoms, tolerance_m=10.0, pixel_size_m=10.0)["qa_flag"]
    assert out[0] == ""
    assert out[1].startswith("near field edge: 0.0 m from the boundary of field")
    assert out[2].startswith("outside every field (nearest field")


# ------------------------------------------------------------------------------------------ outliers


def lab_site(i: int, soc_top: float, soc_sub: float, bd: tuple[float, float] = (1.3, 1.5)) -> list[dict[str, object]]:
    x = 100.0 * i
    return [
        sample(f"L{i}A", x, site_id=f"L{i}", top_cm=0.0, bottom_cm=15.0, soc_g_kg=soc_top, bulk_density_g_cm3=bd[0]),
        sample(f"L{i}B", x, site_id=f"L{i}", top_cm=15.0, bottom_cm=30.0, soc_g_kg=soc_sub, bulk_density_g_cm3=bd[1]),
    ]


def test_lab_soc_over_an_interval_is_mass_weighted_and_needs_full_coverage() -> None:
    lab = frame(*lab_site(1, 20.0, 10.0), *lab_site(2, 20.0, 10.0, bd=(np.nan, 1.5)), lab_site(3, 20.0, 10.0)[0])
    out = lab_soc_over(lab, 0.0, 30.0)
    assert len(out) == 2  # site 3 has only 0-15 cm
    assert out["soc_g_kg"][0] == pytest.approx((20 * 15 * 1.3 + 10 * 15 * 1.5) / (15 * 1.3 + 15 * 1.5))
    assert out["soc_g_kg"][1] == pytest.approx(15.0)  # a bulk density missing: by thickness
    assert lab_soc_over(lab, 0.0, 15.0)["soc_g_kg"].tolist() == pytest.approx([20.0, 20.0, 20.0])


def test_crowd_samples_far_from_nearby_lab_soc_are_flagged() -> None:
    rng = np.random.default_rng(1)
    lab = [r for i in range(6) for r in lab_site(i, 18 + rng.normal(0, 1), 12 + rng.normal(0, 1))]
    crowd = [
        sample("ok", 250.0, 30.0, source="crowd", soc_g_kg=17.0),
        sample("unit", 260.0, 30.0, source="crowd", soc_g_kg=150.0),  # 1.5 % written as 15
        sample("low", 270.0, 30.0, source="crowd", soc_g_kg=2.0),
        sample("noisy but converted", 280.0, 30.0, source="crowd", soc_g_kg=55.0, soc_sd_g_kg=20.0),
        sample("far", 5000.0, source="crowd", soc_g_kg=150.0),  # no lab site within 500 m
        sample("topsoil", 290.0, 30.0, source="crowd", soc_g_kg=19.0, top_cm=0.0, bottom_cm=15.0),
    ]
    out = flag_sample_outliers_against_lab(frame(*lab, *crowd), radius_m=500.0, k=3.5).set_index("sample_id")
    flags = out["qa_flag"]
    assert flags["ok"] == ""
    assert flags["unit"].startswith("SOC 150.0 g/kg (0-30 cm) is far above the 6 lab sites within 500 m (median 1")
    assert "check units (% or g/kg)" in flags["unit"]
    assert "far below" in flags["low"]
    assert flags["noisy but converted"] == ""  # its conversion SD (SOM -> SOC) widens its own error...
    measured = frame(*lab, *crowd).assign(soc_sd_g_kg=np.nan)
    assert "far above" in flag_sample_outliers_against_lab(measured).set_index("sample_id").at[
        "noisy but converted", "qa_flag"
    ]  # ...without it, 55 g/kg is an outlier
    assert flags["far"] == ""
    assert flags["topsoil"] == ""  # compared with the lab 0-15 cm layers
    assert (flags[[f"L{i}A" for i in range(6)]] == "").all()
    # The error model matters: a crowd error of 200 % makes nothing an outlier.
    loose = flag_sample_outliers_against_lab(frame(*lab, *crowd), error_models={"crowd": SampleErrorModel(soc_rel_sd=2.0)})
    assert (loose["qa_flag"] == "").all()
    # Only the rows asked for are judged.
    only_low = [s == "low" for s in frame(*lab, *crowd)["sample_id"]]
    judged = flag_sample_outliers_against_lab(frame(*lab, *crowd), evaluate=only_low).set_index("sample_id")
    assert judged.at["unit", "qa_flag"] == ""
    assert "far below" in judged.at["low", "qa_flag"]


def test_flagged_lab_samples_are_not_references() -> None:
    lab = [r for i in range(3) for r in lab_site(i, 18.0, 12.0)]
    crowd = sample("c", 100.0, 20.0, source="crowd", soc_g_kg=150.0)
    f = frame(*lab, crowd)
    assert flag_sample_outliers_against_lab(f).at[6, "qa_flag"] != ""
    f.loc[0, "qa_flag"] = "GPS accuracy 30 m is worse than the 10 m tolerance"
    assert flag_sample_outliers_against_lab(f).at[6, "qa_flag"] == ""  # only 2 clean lab sites are left


# --------------------------------------------------------------------------------------- together


def test_check_samples_recomputes_from_scratch() -> None:
    f = frame(
        sample("S1", 0.0, agency="LabA", site_id="P1", gps_accuracy_m=3.0),
        sample("S1b", 12.0, agency="LabA", site_id="P1", top_cm=30.0, bottom_cm=60.0, gps_accuracy_m=30.0),
        sample("S2", 500.0, agency="LabB", qa_flag="stale flag"),
    )
    out = check_samples(f, SampleChecks(gps_tolerance_m=10.0)).set_index("sample_id")["qa_flag"]
    assert out["S1"] == ""
    assert out["S1b"].startswith("GPS accuracy 30 m is worse than the 10 m tolerance")
    assert "; positions of site P1 differ by 12 m" in out["S1b"]
    assert out["S2"] == ""  # the stale flag is gone


def test_sites_inherit_sample_flags_and_worst_accuracy() -> None:
    samples = frame(
        sample("P1-A", 0.0, site_id="P1", gps_accuracy_m=4.0),
        sample("P1-B", 0.0, site_id="P1", gps_accuracy_m=12.0, qa_flag="GPS accuracy 12 m is worse"),
        sample("P2-A", 300.0, site_id="P2"),
    )
    sites = pd.DataFrame(
        {"site_id": ["P1", "P2"], "source": ["lab", "lab"], "submitter": ["LabA", "LabA"], "x": [0.0, 300.0],
         "y": [0.0, 0.0], "qa_flag": ["", "within 15 m of P0 on the same day"]}
    )  # fmt: skip
    out = carry_sample_flags(sites, samples)
    assert out.at[0, "qa_flag"] == "P1-B: GPS accuracy 12 m is worse"
    assert out.at[1, "qa_flag"] == "within 15 m of P0 on the same day"
    assert out.at[0, "gps_accuracy_m"] == 12.0
    assert math.isnan(out.at[1, "gps_accuracy_m"])
    # The carried accuracy feeds the field-edge check: 12 m > the site's 8 m distance to the edge.
    edge = flag_field_edges(out.assign(x=[8.0, 50.0], y=[50.0, 50.0]), {"F1": box(0, 0, 100, 100)}, tolerance_m=5.0)
    assert "closer than 12.0 m (its reported GPS accuracy)" in edge.at[0, "qa_flag"]
    assert "near field edge" not in edge.at[1, "qa_flag"]


def test_empty_frames_pass_through() -> None:
    empty = pd.DataFrame(columns=["sample_id", "site_id", "source", "x", "y", "sampling_date", "top_cm",
                                  "bottom_cm", "soc_g_kg"])  # fmt: skip
    for out in (
        flag_sample_duplicates(empty),
        flag_gps_accuracy(empty),
        flag_position_jitter(empty),
        flag_sample_outliers_against_lab(empty),
        flag_field_edges(empty, FIELDS),
        check_samples(empty),
    ):
        assert out.empty
        assert "qa_flag" in out.columns


def test_site_duplicates_of_ten_thousand_co_located_sites_are_bounded() -> None:
    """The run's site-level check groups by source and day and examines a bounded number of neighbours."""
    import time

    n = 10_000
    sites = pd.DataFrame({
        "site_id": [f"P{i}" for i in range(n)], "source": "lab", "x": 0.0, "y": 0.0,
        "sampling_date": np.where(np.arange(n) % 2 == 0, "2021-05-01", "2021-05-02"),
        "soc_stock_t_ha": np.arange(n, dtype=float),
    })  # fmt: skip
    t0 = time.perf_counter()
    out = flag_duplicates(sites)
    assert time.perf_counter() - t0 < 20.0
    assert out.at[0, "qa_flag"] == ""
    assert out.at[1, "qa_flag"] == ""
    assert out.at[2, "qa_flag"] == "within 15 m of P0 on the same day"  # same day as P0 (the other day is apart)
    assert out.at[3, "qa_flag"] == "within 15 m of P1 on the same day"
