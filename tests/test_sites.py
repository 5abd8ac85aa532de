"""Site stocks from canonical records: measured bulk density, pedotransfer fallback, exclusions."""

from __future__ import annotations

import pandas as pd
import pytest

from mrv.samples.sites import site_stocks


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
