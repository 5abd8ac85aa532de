"""Tests for mrv.samples.stocks: layer stocks, their SD, gap filling and fixed-depth profiles.

Expected numbers are worked by hand in the comments (not recomputed with the code under test).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrv.errors import StockError
from mrv.samples.stocks import (
    bulk_density_ptf,
    fixed_depth_stock,
    soc_stock_sd_t_ha,
    soc_stock_t_ha,
    som_to_soc,
)

# --------------------------------------------------------------------------------------------
# soc_stock_t_ha
# --------------------------------------------------------------------------------------------


def test_layer_stock_hand_value() -> None:
    # 20 g/kg x 1.3 g/cm3 x 30 cm x (1 - 0.1) / 10 = 70.2 t C/ha
    assert float(soc_stock_t_ha(20.0, 1.3, 30.0, 0.1)) == pytest.approx(70.2, abs=1e-9)
    # no coarse fragments: 20 x 1.3 x 30 / 10 = 78
    assert float(soc_stock_t_ha(20.0, 1.3, 30.0)) == pytest.approx(78.0, abs=1e-9)


def test_layer_stock_is_vectorised() -> None:
    out = soc_stock_t_ha(np.array([10.0, 20.0]), np.array([1.0, 1.5]), 10.0, np.array([0.0, 0.5]))
    # 10*1*10/10 = 10 ; 20*1.5*10*0.5/10 = 15
    np.testing.assert_allclose(out, [10.0, 15.0])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((-1.0, 1.3, 30.0, 0.0), "soc_g_kg"),
        ((20.0, float("nan"), 30.0, 0.0), "bulk_density_g_cm3"),
        ((20.0, 1.3, -5.0, 0.0), "thickness_cm"),
        ((20.0, 1.3, 30.0, 1.0), "divide it by 100"),
        ((20.0, 1.3, 30.0, 15.0), "divide it by 100"),
        ((20.0, 1.3, 30.0, -0.1), "coarse_fragments_vol_frac"),
    ],
)
def test_layer_stock_rejects_bad_inputs(args: tuple[float, ...], fragment: str) -> None:
    with pytest.raises(StockError, match=fragment):
        soc_stock_t_ha(*args)


def test_layer_stock_rejects_mismatched_shapes() -> None:
    with pytest.raises(StockError, match="shapes"):
        soc_stock_t_ha(np.array([1.0, 2.0]), np.array([1.0, 2.0, 3.0]), 10.0)


# --------------------------------------------------------------------------------------------
# soc_stock_sd_t_ha
# --------------------------------------------------------------------------------------------


def test_stock_sd_hand_value() -> None:
    # S = 70.2; relative variance = (2/20)^2 + (0.1/1.3)^2 + (0.05/0.9)^2
    #   = 0.01 + 0.00591716 + 0.00308642 = 0.01900358 -> rel SD 0.1378535 -> 9.67732
    sd = soc_stock_sd_t_ha(
        20.0,
        1.3,
        30.0,
        0.1,
        soc_sd_g_kg=2.0,
        bulk_density_sd_g_cm3=0.1,
        coarse_fragments_sd_vol_frac=0.05,
    )
    assert float(sd) == pytest.approx(9.67731, abs=1e-4)


def test_stock_sd_soc_only() -> None:
    # only SOC uncertain: sd = 78 * 2/20 = 7.8
    assert float(soc_stock_sd_t_ha(20.0, 1.3, 30.0, soc_sd_g_kg=2.0)) == pytest.approx(7.8)
    assert float(soc_stock_sd_t_ha(20.0, 1.3, 30.0)) == 0.0


def test_stock_sd_matches_seeded_monte_carlo() -> None:
    rng = np.random.default_rng(20240611)
    n = 400_000
    soc = rng.normal(20.0, 1.0, n)
    bd = rng.normal(1.3, 0.05, n)
    cf = rng.normal(0.1, 0.02, n)
    mc_sd = float(np.std(soc * bd * 30.0 * (1.0 - cf) / 10.0))
    delta_sd = float(
        soc_stock_sd_t_ha(
            20.0,
            1.3,
            30.0,
            0.1,
            soc_sd_g_kg=1.0,
            bulk_density_sd_g_cm3=0.05,
            coarse_fragments_sd_vol_frac=0.02,
        )
    )
    assert delta_sd == pytest.approx(mc_sd, rel=0.02)


def test_stock_sd_rejects_negative_sd() -> None:
    with pytest.raises(StockError, match="soc_sd_g_kg"):
        soc_stock_sd_t_ha(20.0, 1.3, 30.0, soc_sd_g_kg=-1.0)


# --------------------------------------------------------------------------------------------
# gap filling
# --------------------------------------------------------------------------------------------


def test_bulk_density_ptf_hollis_hand_value() -> None:
    # OC 2 %, sand 40 %, clay 20 %:
    # 0.80806 + 0.823844*exp(-0.55986) + 0.0014065*40 - 0.0010299*20
    # = 0.80806 + 0.823844*0.571330 + 0.05626 - 0.020598 = 1.314375
    bd, sd = bulk_density_ptf(20.0, sand_pct=40.0, clay_pct=20.0)
    assert float(bd) == pytest.approx(1.314375, abs=1e-5)
    assert float(sd) == pytest.approx(0.22)


def test_bulk_density_ptf_adams_hand_value() -> None:
    # SOC 2 % -> OM 3.448276 %; 100 / (3.448276/0.244 + 96.551724/1.64)
    # = 100 / (14.132279 + 58.873002) = 1.369764
    bd, sd = bulk_density_ptf(np.array([20.0]))
    assert float(bd[0]) == pytest.approx(1.369764, abs=1e-5)
    assert sd.shape == (1,)


def test_bulk_density_ptf_decreases_with_soc_and_flags_organic_soils() -> None:
    bd, _ = bulk_density_ptf(np.array([5.0, 20.0, 60.0, 200.0]))
    assert bd[0] > bd[1] > bd[2]
    assert np.isnan(bd[3])  # outside the mineral-soil domain


def test_bulk_density_ptf_texture_errors() -> None:
    with pytest.raises(StockError, match="both sand_pct and clay_pct"):
        bulk_density_ptf(20.0, sand_pct=40.0)
    with pytest.raises(StockError, match="exceeds 100"):
        bulk_density_ptf(20.0, sand_pct=70.0, clay_pct=40.0)


def test_som_to_soc() -> None:
    soc, sd = som_to_soc(np.array([50.0, 0.0]))
    np.testing.assert_allclose(soc, [29.0, 0.0])  # 50 * 0.58
    np.testing.assert_allclose(sd, [4.0, 0.0])  # 50 * 0.08
    with pytest.raises(StockError):
        som_to_soc(-1.0)


# --------------------------------------------------------------------------------------------
# fixed_depth_stock
# --------------------------------------------------------------------------------------------


def _profile(pid: str = "A") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "profile_id": [pid] * 3,
            "top_cm": [0.0, 10.0, 20.0],
            "bottom_cm": [10.0, 20.0, 40.0],
            "soc_g_kg": [20.0, 15.0, 10.0],
            "bulk_density_g_cm3": [1.2, 1.3, 1.4],
        }
    )


def test_fixed_depth_hand_example() -> None:
    # 0-10: 20*1.2*10/10 = 24 ; 10-20: 15*1.3*10/10 = 19.5 ; 20-40: 10*1.4*20/10 = 28, half = 14
    # stock 0-30 = 57.5 ; mass = 1200 + 1300 + 1400 = 3900 Mg/ha
    out = fixed_depth_stock(_profile(), depth_cm=30.0)
    assert list(out.columns) == [
        "profile_id",
        "soc_stock_t_ha",
        "soc_stock_sd_t_ha",
        "soil_mass_mg_ha",
        "covered_cm",
    ]
    row = out.iloc[0]
    assert row["profile_id"] == "A"
    assert row["soc_stock_t_ha"] == pytest.approx(57.5)
    assert row["soil_mass_mg_ha"] == pytest.approx(3900.0)
    assert row["covered_cm"] == pytest.approx(30.0)
    assert row["soc_stock_sd_t_ha"] == 0.0


def test_fixed_depth_coarse_fragments_and_sd() -> None:
    df = _profile()
    df["coarse_fragments_vol_pct"] = [0.0, 0.0, 10.0]
    df["soc_sd_g_kg"] = 2.0
    df["bulk_density_sd_g_cm3"] = 0.1
    out = fixed_depth_stock(df, depth_cm=30.0).iloc[0]
    # 20-30 part: 14 * 0.9 = 12.6 -> 24 + 19.5 + 12.6 = 56.1 ; mass 3900 - 140 = 3760
    assert out["soc_stock_t_ha"] == pytest.approx(56.1)
    assert out["soil_mass_mg_ha"] == pytest.approx(3760.0)
    # layer SDs: 24*sqrt(.01+.0069444)=3.124100 ; 19.5*sqrt(.0177778+.0059172)=3.001666 ;
    # half of layer 3 (CF 10 %): 12.6*sqrt(.04+.0051020)=2.675892 ->
    # sqrt(3.124100^2 + 3.001666^2 + 2.675892^2) = sqrt(9.76000 + 9.01000 + 7.16036) = 5.092190
    assert out["soc_stock_sd_t_ha"] == pytest.approx(5.092190, abs=1e-5)


def test_fixed_depth_ignores_layers_below_depth_and_keeps_profile_order() -> None:
    deep = pd.DataFrame(
        {
            "profile_id": ["A"],
            "top_cm": [40.0],
            "bottom_cm": [60.0],
            "soc_g_kg": [999.0],
            "bulk_density_g_cm3": [2.0],
        }
    )
    other = _profile("B").assign(soc_g_kg=[10.0, 10.0, 10.0], bulk_density_g_cm3=1.0)
    out = fixed_depth_stock(pd.concat([other, _profile("A"), deep]), depth_cm=30.0)
    assert list(out["profile_id"]) == ["B", "A"]
    # B: 10 g/kg * 1.0 * 30 cm / 10 = 30
    assert out["soc_stock_t_ha"].tolist() == pytest.approx([30.0, 57.5])


def test_fixed_depth_lists_every_bad_profile() -> None:
    good = _profile("good")
    gap = _profile("gappy").assign(top_cm=[0.0, 12.0, 20.0])
    overlap = _profile("overlapping").assign(top_cm=[0.0, 8.0, 20.0])
    shallow = _profile("shallow").assign(bottom_cm=[10.0, 20.0, 25.0])
    late = _profile("late").assign(top_cm=[5.0, 10.0, 20.0])
    df = pd.concat([good, gap, overlap, shallow, late])
    with pytest.raises(StockError) as info:
        fixed_depth_stock(df, depth_cm=30.0)
    msg = str(info.value)
    assert "4 profile(s)" in msg
    assert "gappy: gap between 10 and 12 cm" in msg
    assert "overlapping: layers 0-10 and 8-20 cm overlap" in msg
    assert "shallow: reaches only 25 cm but 30 cm is required" in msg
    assert "late: starts at 5 cm" in msg
    assert "good" not in msg


def test_fixed_depth_gap_below_depth_is_fine() -> None:
    df = pd.concat(
        [
            _profile(),
            pd.DataFrame(
                {
                    "profile_id": ["A"],
                    "top_cm": [50.0],
                    "bottom_cm": [60.0],
                    "soc_g_kg": [5.0],
                    "bulk_density_g_cm3": [1.5],
                }
            ),
        ]
    )
    assert fixed_depth_stock(df, depth_cm=30.0)["soc_stock_t_ha"].iloc[0] == pytest.approx(57.5)


def test_fixed_depth_missing_columns_and_values() -> None:
    with pytest.raises(StockError, match="bulk_density_g_cm3"):
        fixed_depth_stock(_profile().drop(columns=["bulk_density_g_cm3"]))
    bad = _profile()
    bad.loc[1, "soc_g_kg"] = np.nan
    with pytest.raises(StockError, match="soc_g_kg: missing or non-numeric in row"):
        fixed_depth_stock(bad)


@settings(max_examples=60, deadline=None)
@given(
    layers=st.lists(
        st.tuples(
            st.floats(1.0, 20.0),  # thickness
            st.floats(0.5, 80.0),  # SOC
            st.floats(0.8, 1.8),  # BD
            st.floats(0.0, 40.0),  # CF %
        ),
        min_size=1,
        max_size=5,
    ),
    split_at=st.floats(0.05, 0.95),
    depth=st.floats(1.0, 60.0),
)
def test_splitting_layers_does_not_change_stock_or_mass(
    layers: list[tuple[float, float, float, float]], split_at: float, depth: float
) -> None:
    tops = np.concatenate([[0.0], np.cumsum([t for t, *_ in layers])[:-1]])
    bottoms = tops + np.array([t for t, *_ in layers])
    total = float(bottoms[-1])
    depth = min(depth, total)
    whole = pd.DataFrame(
        {
            "profile_id": "P",
            "top_cm": tops,
            "bottom_cm": bottoms,
            "soc_g_kg": [s for _, s, _, _ in layers],
            "bulk_density_g_cm3": [b for _, _, b, _ in layers],
            "coarse_fragments_vol_pct": [c for *_, c in layers],
        }
    )
    rows = []
    for _, r in whole.iterrows():
        mid = r["top_cm"] + split_at * (r["bottom_cm"] - r["top_cm"])
        rows.append(r.copy().to_dict() | {"bottom_cm": mid})
        rows.append(r.copy().to_dict() | {"top_cm": mid})
    split = pd.DataFrame(rows)
    a = fixed_depth_stock(whole, depth_cm=depth).iloc[0]
    b = fixed_depth_stock(split, depth_cm=depth).iloc[0]
    assert b["soc_stock_t_ha"] == pytest.approx(a["soc_stock_t_ha"], rel=1e-9, abs=1e-9)
    assert b["soil_mass_mg_ha"] == pytest.approx(a["soil_mass_mg_ha"], rel=1e-9, abs=1e-9)
    assert b["covered_cm"] == pytest.approx(depth)
