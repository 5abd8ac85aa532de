"""Site stocks from canonical records (measured bulk density, pedotransfer fallback, exclusions, error
models) and the QA flags on site tables (crowd outliers against nearby lab sites)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrv.errors import SampleError
from mrv.samples.qa import flag_duplicates, flag_outliers_against_lab, robust_sd
from mrv.samples.sites import ErrorModel, site_stocks


def _rec(site: str, source: str, top: float, bottom: float, soc: float, bd: float | None) -> dict[str, object]:
    return {
        "site_id": site, "source": source, "submitter": "x", "field_id": None, "x": 1.0, "y": 1.0,
        "sampling_date": "2021-05-01", "top_cm": top, "bottom_cm": bottom, "soc_g_kg": soc,
        "bulk_density_g_cm3": bd, "coarse_fragments_vol_pct": 0.0,
    }  # fmt: skip


def test_lab_stock_hand_numbers_and_exclusions() -> None:
    records = pd.DataFrame(
        [
            _rec("lab1", "lab", 0, 15, 20.0, 1.3),  # 20 x 1.3 x 15 / 10 = 39.0
            _rec("lab1", "lab", 15, 30, 10.0, 1.4),  # 10 x 1.4 x 15 / 10 = 21.0
            _rec("short", "lab", 0, 20, 20.0, 1.3),  # does not reach 30 cm
            _rec("peat", "crowd", 0, 30, 300.0, None),  # PTF does not apply to organic soil
            _rec("crowd1", "crowd", 0, 30, 20.0, None),
        ]
    )
    sites, bad = site_stocks(records, depth_cm=30)
    stock = sites.set_index("site_id")["soc_stock_t_ha"]
    assert stock["lab1"] == pytest.approx(60.0)
    assert "sampled only to 20 cm" in bad["short"]
    assert "organic soil" in bad["peat"]
    crowd = sites.set_index("site_id").loc["crowd1"]
    assert bool(crowd["bulk_density_estimated"])
    assert crowd["soc_stock_sd_t_ha"] > sites.set_index("site_id").loc["lab1", "soc_stock_sd_t_ha"]


def test_configured_error_model_and_conversion_sd_reach_the_stock_sd() -> None:
    one = pd.DataFrame([_rec("c", "crowd", 0, 30, 20.0, 1.3)])
    # 0-30 cm, BD 1.3 measured: stock = 20 x 1.3 x 30 / 10 = 78; d stock / d SOC = 3.9 t/ha per g/kg.
    sites, _ = site_stocks(one, depth_cm=30, error_models={"crowd": ErrorModel(soc_rel_sd=0.1, bd_sd_g_cm3=0.0)})
    assert sites["soc_stock_sd_t_ha"].iloc[0] == pytest.approx(3.9 * 2.0)
    # A SOM -> SOC conversion SD (soc_sd_g_kg, here 1.5 g/kg) adds in quadrature: sqrt(2^2 + 1.5^2) = 2.5.
    converted = one.assign(soc_sd_g_kg=1.5)
    sites, _ = site_stocks(converted, depth_cm=30, error_models={"crowd": ErrorModel(soc_rel_sd=0.1, bd_sd_g_cm3=0.0)})
    assert sites["soc_stock_sd_t_ha"].iloc[0] == pytest.approx(3.9 * 2.5)
    # A source left out keeps its default (crowd 20 %).
    sites, _ = site_stocks(one, depth_cm=30, error_models={"lab": ErrorModel(soc_rel_sd=0.01)})
    assert sites["soc_stock_sd_t_ha"].iloc[0] > 3.9 * 0.2 * 20.0


def test_unknown_source_needs_an_error_model() -> None:
    with pytest.raises(SampleError, match="error_models"):
        site_stocks(pd.DataFrame([_rec("x", "drone", 0, 30, 20.0, 1.3)]), depth_cm=30)


def test_crowd_outlier_is_flagged_against_nearby_lab_sites_and_kept() -> None:
    rng = np.random.default_rng(3)
    lab = [
        {"site_id": f"L{i}", "source": "lab", "sampling_date": "2021-05-01", "x": 100.0 * i, "y": 0.0,
         "soc_stock_t_ha": 60.0 + rng.normal(0, 3), "soc_stock_sd_t_ha": 2.5}
        for i in range(6)
    ]  # fmt: skip
    crowd = [
        {"site_id": "ok", "source": "crowd", "sampling_date": "2021-05-02", "x": 250.0, "y": 40.0,
         "soc_stock_t_ha": 75.0, "soc_stock_sd_t_ha": 15.0},  # noisy but within its error model
        {"site_id": "unit", "source": "crowd", "sampling_date": "2021-05-02", "x": 330.0, "y": 40.0,
         "soc_stock_t_ha": 600.0, "soc_stock_sd_t_ha": 15.0},  # % read as g/kg: ten times too high
        {"site_id": "low", "source": "crowd", "sampling_date": "2021-05-02", "x": 300.0, "y": -40.0,
         "soc_stock_t_ha": 5.0, "soc_stock_sd_t_ha": 12.0},
        {"site_id": "far", "source": "crowd", "sampling_date": "2021-05-02", "x": 5000.0, "y": 0.0,
         "soc_stock_t_ha": 600.0, "soc_stock_sd_t_ha": 15.0},  # no lab site within 500 m: not judged
    ]  # fmt: skip
    sites = flag_duplicates(pd.DataFrame(lab + crowd))
    out = flag_outliers_against_lab(sites, radius_m=500.0, k=3.5).set_index("site_id")
    assert len(out) == len(sites)  # nothing is deleted
    assert out.loc["ok", "qa_flag"] == ""
    assert "far above" in out.loc["unit", "qa_flag"]
    assert "lab sites within 500 m" in out.loc["unit", "qa_flag"]
    assert "far below" in out.loc["low", "qa_flag"]
    assert out.loc["far", "qa_flag"] == ""
    assert (out.loc[[f"L{i}" for i in range(6)], "qa_flag"] == "").all()  # lab sites are the reference
    # Fewer lab neighbours than required: nothing is judged.
    none = flag_outliers_against_lab(sites, radius_m=500.0, min_lab_sites=7)
    assert (none["qa_flag"] == "").all()


def test_robust_sd_ignores_a_gross_error() -> None:
    values = np.array([10.0, 11.0, 9.0, 10.5, 9.5, 1000.0])
    assert robust_sd(values) == pytest.approx(1.4826 * 0.75)
    assert robust_sd(values) < 2.0 < float(np.std(values))
