"""Tests for equivalent soil mass stocks (mrv.samples.esm) and the table command logic
(mrv.samples.profile_stocks), anchored on the Verra VM0042 v2 Figure 3 worked example."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mrv.errors import StockError
from mrv.samples.esm import (
    core_area_cm2,
    cumulative_mass_curve,
    equivalent_depth_cm,
    esm_stock,
    mass_at_depth_mg_ha,
    reference_mass_mg_ha,
    soc_at_depth_t_ha,
    soil_mass_from_bulk_density_mg_ha,
    soil_mass_from_core_mg_ha,
)
from mrv.samples.profile_stocks import compute_profile_stocks, read_profile_csv

# VM0042 v2 Figure 3: 4 cores of 21.5 mm diameter per point; layers 0-30 and 30-50 cm:
# (oven-dry mass g, SOC g/kg) per layer, and the published ESM stock at 1950 Mg/ha.
VM0042 = {
    "P1": ([(283.2, 24.29), (189.2, 12.68)], 47.4),
    "P2": ([(222.7, 28.77), (144.3, 10.65)], 49.9),
    "P3": ([(217.5, 20.68), (143.5, 11.28)], 36.8),
}
# 4 * pi * 1.075^2 = 4 * 3.14159265 * 1.155625 = 14.522012 cm2
CORE_AREA_CM2 = 14.522012


def _vm0042_profile(pid: str):  # type: ignore[no-untyped-def]
    layers, _ = VM0042[pid]
    mass = soil_mass_from_core_mg_ha([m for m, _ in layers], CORE_AREA_CM2)
    return cumulative_mass_curve([0, 30], [30, 50], mass, [c for _, c in layers], profile_id=pid)


def _vm0042_table() -> pd.DataFrame:
    rows = []
    for pid, (layers, _) in VM0042.items():
        for (top, bottom), (mass_g, soc) in zip([(0, 30), (30, 50)], layers, strict=True):
            rows.append(
                {
                    "profile_id": pid,
                    "round": "2021",
                    "top_cm": top,
                    "bottom_cm": bottom,
                    "soc_g_kg": soc,
                    "soil_mass_g": mass_g,
                    "core_area_cm2": CORE_AREA_CM2,
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# masses
# --------------------------------------------------------------------------------------------


def test_core_area_and_masses_hand_values() -> None:
    assert core_area_cm2(21.5, n_cores=4) == pytest.approx(CORE_AREA_CM2, abs=1e-5)
    # 283.2 g / 14.522012 cm2 * 100 = 1950.143 Mg/ha
    assert float(soil_mass_from_core_mg_ha(283.2, CORE_AREA_CM2)) == pytest.approx(1950.143, abs=1e-3)
    # 1.3 g/cm3 * 10 cm * 0.9 * 100 = 1170 Mg/ha
    assert float(soil_mass_from_bulk_density_mg_ha(1.3, 10.0, 0.1)) == pytest.approx(1170.0)
    with pytest.raises(StockError, match="core_area_cm2"):
        soil_mass_from_core_mg_ha(100.0, 0.0)


# --------------------------------------------------------------------------------------------
# VM0042 v2 Figure 3
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pid", ["P1", "P2", "P3"])
def test_vm0042_figure3_esm_stocks(pid: str) -> None:
    result = esm_stock(_vm0042_profile(pid), 1950.0)
    published = VM0042[pid][1]
    assert round(result.soc_stock_t_ha, 1) == published
    assert result.soc_stock_t_ha == pytest.approx(published, abs=0.05)
    assert result.reference_mass_mg_ha == 1950.0


def test_vm0042_fixed_depth_and_equivalent_depth_p1() -> None:
    p1 = _vm0042_profile("P1")
    # 0-30 cm: 1950.143 Mg/ha * 24.29 g/kg / 1000 = 47.369 t C/ha
    assert soc_at_depth_t_ha(p1, 30.0) == pytest.approx(47.369, abs=1e-3)
    assert mass_at_depth_mg_ha(p1, 30.0) == pytest.approx(1950.143, abs=1e-3)
    # 1950 Mg/ha is reached at 30 * 1950 / 1950.143 = 29.9978 cm
    assert equivalent_depth_cm(p1, 1950.0) == pytest.approx(29.9978, abs=1e-4)
    # P2 needs soil from the second layer: 1533.53 Mg/ha in 0-30 (222.7/14.522012*100), and
    # 144.3 g -> 993.66 Mg/ha in 30-50 -> depth = 30 + 20 * (1950 - 1533.53) / 993.66 = 38.382
    assert esm_stock(_vm0042_profile("P2"), 1950.0).equivalent_depth_cm == pytest.approx(38.382, abs=1e-3)


def test_reference_beyond_deepest_mass_raises() -> None:
    # P2 cumulative mass at 50 cm = (222.7 + 144.3) / 14.522012 * 100 = 2527.2 Mg/ha
    with pytest.raises(StockError) as info:
        esm_stock(_vm0042_profile("P2"), 2600.0)
    msg = str(info.value)
    assert "P2" in msg
    assert "sample this profile deeper" in msg
    assert "lower the reference" in msg


def test_spline_passes_through_the_cumulative_points() -> None:
    p2 = _vm0042_profile("P2")
    # at the 0-30 mass the ESM stock is the measured 0-30 stock: 1533.53 * 28.77/1000 = 44.120
    at_knot = esm_stock(p2, p2.soil_mass_mg_ha[1])
    assert at_knot.soc_stock_t_ha == pytest.approx(44.120, abs=1e-3)
    assert at_knot.equivalent_depth_cm == pytest.approx(30.0)


def test_uniform_profile_is_linear_in_mass() -> None:
    # constant 12 g/kg: any reference mass M holds M * 12 / 1000 t C
    prof = cumulative_mass_curve([0, 10, 30], [10, 30, 60], [1300.0, 2700.0, 4500.0], [12.0] * 3)
    assert esm_stock(prof, 5000.0).soc_stock_t_ha == pytest.approx(60.0, abs=1e-9)
    # equivalent depth: 5000 Mg/ha lies 1000/4500 into the 30-60 layer -> 30 + 30*1000/4500
    assert esm_stock(prof, 5000.0).equivalent_depth_cm == pytest.approx(36.6667, abs=1e-4)


def test_decreasing_natural_spline_is_refused_and_pchip_is_available() -> None:
    # topsoil 30 g/kg over a subsoil of 1 g/kg: the natural spline overshoots and then falls
    prof = cumulative_mass_curve([0, 30], [30, 50], [2000.0, 1300.0], [30.0, 1.0], profile_id="X")
    # cumulative points: (2000, 60.0), (3300, 61.3)
    with pytest.raises(StockError, match="X.*decreases.*pchip"):
        esm_stock(prof, 3250.0)
    pchip = esm_stock(prof, 3250.0, interpolation="pchip").soc_stock_t_ha
    assert 60.0 <= pchip <= 61.3
    linear = esm_stock(prof, 3250.0, interpolation="linear").soc_stock_t_ha
    # 60 + 1250 * 1/1000 = 61.25
    assert linear == pytest.approx(61.25)


def test_bad_profile_geometry_is_refused() -> None:
    with pytest.raises(StockError, match="not contiguous"):
        cumulative_mass_curve([0, 12], [10, 30], [1000.0, 2000.0], [10.0, 5.0], profile_id="G")
    with pytest.raises(StockError, match="starts at 5 cm"):
        cumulative_mass_curve([5], [30], [1000.0], [10.0])


def test_reference_mass_rules() -> None:
    profs = [_vm0042_profile(p) for p in ("P1", "P2", "P3")]
    # masses at 30 cm: 1950.143, 1533.534, 1497.726 (217.5/14.522012*100)
    assert reference_mass_mg_ha(profs, rule="lightest", depth_cm=30.0) == pytest.approx(1497.726, abs=1e-3)
    assert reference_mass_mg_ha(profs, rule="baseline_mean", depth_cm=30.0) == pytest.approx(
        (1950.143 + 1533.534 + 1497.726) / 3, abs=1e-3
    )
    with pytest.raises(StockError, match="sampled to 50 cm"):
        reference_mass_mg_ha(profs, rule="lightest", depth_cm=60.0)


@settings(max_examples=80, deadline=None)
@given(
    layers=st.lists(st.tuples(st.floats(200.0, 3000.0), st.floats(0.5, 60.0)), min_size=1, max_size=5),
    lo=st.floats(0.01, 1.0),
    hi=st.floats(0.01, 1.0),
)
def test_esm_stock_is_monotone_in_reference_mass(layers: list[tuple[float, float]], lo: float, hi: float) -> None:
    lo, hi = sorted((lo, hi))
    n = len(layers)
    prof = cumulative_mass_curve(
        np.arange(n) * 10.0, np.arange(1, n + 1) * 10.0, [m for m, _ in layers], [c for _, c in layers]
    )
    total = prof.soil_mass_mg_ha[-1]
    for method in ("pchip", "linear"):
        a = esm_stock(prof, lo * total, interpolation=method).soc_stock_t_ha
        b = esm_stock(prof, hi * total, interpolation=method).soc_stock_t_ha
        assert a <= b + 1e-9
    try:
        b = esm_stock(prof, hi * total).soc_stock_t_ha
    except StockError:
        assume(False)  # natural spline refused as non-monotone up to hi: nothing to compare
    a = esm_stock(prof, lo * total).soc_stock_t_ha
    assert 0.0 <= a <= b + 1e-9
    assert b <= prof.soc_t_ha[-1] + 1e-9


# --------------------------------------------------------------------------------------------
# profile_stocks: the table command logic
# --------------------------------------------------------------------------------------------


def test_compute_profile_stocks_esm_vm0042_table() -> None:
    out = compute_profile_stocks(_vm0042_table(), method="esm", reference_mass_mg_ha=1950.0)
    assert list(out.columns) == [
        "profile_id",
        "round",
        "soc_stock_t_ha",
        "soil_mass_mg_ha",
        "equivalent_depth_cm",
    ]
    assert list(out["profile_id"]) == ["P1", "P2", "P3"]
    assert out["soc_stock_t_ha"].round(1).tolist() == [47.4, 49.9, 36.8]
    assert out["soil_mass_mg_ha"].tolist() == [1950.0] * 3


def test_compute_profile_stocks_fixed_vm0042_table() -> None:
    out = compute_profile_stocks(_vm0042_table(), method="fixed", depth_cm=30.0)
    # P1 47.369 (see above); P2 1533.534 * 28.77 / 1000 = 44.120; P3 1497.726*20.68/1000 = 30.973
    assert out["soc_stock_t_ha"].tolist() == pytest.approx([47.369, 44.120, 30.973], abs=1e-3)
    assert out["soil_mass_mg_ha"].tolist() == pytest.approx([1950.143, 1533.534, 1497.726], abs=1e-3)
    assert out["equivalent_depth_cm"].tolist() == [30.0] * 3


def test_compute_profile_stocks_reference_rules_and_rounds() -> None:
    base = _vm0042_table()
    later = base.assign(round="2026", soc_g_kg=base["soc_g_kg"] * 1.1)
    df = pd.concat([base, later], ignore_index=True)
    # lightest (default): P3's 0-30 mass 1497.726 Mg/ha, identical in both rounds
    out = compute_profile_stocks(df, method="esm")
    assert len(out) == 6
    assert out["soil_mass_mg_ha"].iloc[0] == pytest.approx(1497.726, abs=1e-3)
    # P3 at its own 0-30 mass: the measured 0-30 stock 30.973; +10 % SOC in 2026 -> 34.070
    p3 = out[out["profile_id"] == "P3"].set_index("round")["soc_stock_t_ha"]
    assert p3["2021"] == pytest.approx(30.973, abs=1e-3)
    assert p3["2026"] == pytest.approx(34.070, abs=1e-3)
    mean = compute_profile_stocks(df, method="esm", reference_mass_mg_ha="baseline_mean", baseline_round="2021")
    assert mean["soil_mass_mg_ha"].iloc[0] == pytest.approx(1660.468, abs=1e-3)
    with pytest.raises(StockError, match="baseline_round"):
        compute_profile_stocks(df, method="esm", reference_mass_mg_ha="baseline_mean")
    with pytest.raises(StockError, match="rounds present: 2021, 2026"):
        compute_profile_stocks(df, method="esm", reference_mass_mg_ha="baseline_mean", baseline_round="1999")


def test_compute_profile_stocks_with_bulk_density() -> None:
    df = pd.DataFrame(
        {
            "profile_id": ["A", "A"],
            "round": ["r1", "r1"],
            "top_cm": [0.0, 20.0],
            "bottom_cm": [20.0, 40.0],
            "soc_g_kg": [20.0, 10.0],
            "bulk_density_g_cm3": [1.2, 1.5],
            "coarse_fragments_vol_pct": [0.0, 20.0],
        }
    )
    out = compute_profile_stocks(df, method="fixed", depth_cm=30.0).iloc[0]
    # 0-20: 20*1.2*20/10 = 48 ; 20-30: 10*1.5*10*0.8/10 = 12 -> 60 ; mass 2400 + 1200 = 3600
    assert out["soc_stock_t_ha"] == pytest.approx(60.0)
    assert out["soil_mass_mg_ha"] == pytest.approx(3600.0)


def test_compute_profile_stocks_reports_all_missing_columns() -> None:
    df = _vm0042_table().drop(columns=["round", "soc_g_kg", "soil_mass_g"])
    with pytest.raises(StockError) as info:
        compute_profile_stocks(df, method="fixed")
    msg = str(info.value)
    assert "bulk_density_g_cm3" in msg
    assert "soil_mass_g" in msg
    assert "round" in msg
    assert "soc_g_kg" in msg


def test_compute_profile_stocks_esm_beyond_profile_names_it() -> None:
    with pytest.raises(StockError, match="P2 \\(round 2021\\).*sample this profile deeper"):
        compute_profile_stocks(_vm0042_table(), method="esm", reference_mass_mg_ha=2600.0)


def test_read_profile_csv(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(
        "profile_id,round,top_cm,bottom_cm,soc_g_kg,bulk_density_g_cm3\n"
        "007,2021,0,30,24.29,1.30\n"
        "007,2021,30,50,12.68,\n",
        encoding="utf-8",
    )
    df = read_profile_csv(good)
    assert df["profile_id"].tolist() == ["007", "007"]  # ids stay text
    assert df["soc_g_kg"].tolist() == [24.29, 12.68]
    assert math.isnan(df["bulk_density_g_cm3"].iloc[1])

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "profile_id,round,top_cm,bottom_cm,soc_g_kg,bulk_density_g_cm3\nA,2021,0,30,24.29,1.30\nA,2021,30,50,12,68,\n",
        encoding="utf-8",
    )
    with pytest.raises(StockError, match="not a readable CSV"):
        read_profile_csv(bad)
    bad.write_text(
        "profile_id,round,top_cm,bottom_cm,soc_g_kg,bulk_density_g_cm3\n"
        "A,2021,0,30,24.29,1.30\n"
        "A,2021,30,50,12;68,1.4\n",
        encoding="utf-8",
    )
    with pytest.raises(StockError, match=r"line 3 \(data row 2\), column soc_g_kg: '12;68'"):
        read_profile_csv(bad)
    with pytest.raises(StockError, match="does not exist"):
        read_profile_csv(tmp_path / "missing.csv")
