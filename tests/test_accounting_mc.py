"""Monte Carlo aggregation with spatially correlated errors."""

from __future__ import annotations

import numpy as np
import pytest

from mrv.accounting.aggregate import CO2_PER_C, RoundMaps, simulate_zone_means, zone_summary
from mrv.accounting.simulate import exponential_grf


def test_grf_has_unit_variance_and_exponential_correlation() -> None:
    rng = np.random.default_rng(1)
    g = exponential_grf((64, 64), cell_m=10.0, range_m=100.0, n=400, rng=rng)
    assert g.var() == pytest.approx(1.0, abs=0.1)
    lag = 10  # 100 m = one range: correlation exp(-1) = 0.368
    r = np.mean(g[:, :, :-lag] * g[:, :, lag:]) / g.var()
    assert r == pytest.approx(np.exp(-1), abs=0.07)


def _maps(shape: tuple[int, int], mean: float, sd: float) -> RoundMaps:
    return RoundMaps("r", np.full(shape, mean), np.full(shape, sd))


def test_independent_pixels_understate_field_uncertainty() -> None:
    shape = (60, 60)
    zones = np.zeros(shape, dtype=np.int32)
    maps = [_maps(shape, 50.0, 5.0)]
    kw = {"pixel_m": 10.0, "round_correlation": 0.0, "n_sim": 300, "seed": 0}
    indep = simulate_zone_means(maps, zones, 1, range_m=None, **kw)
    corr = simulate_zone_means(maps, zones, 1, range_m=300.0, **kw)
    w_indep = np.ptp(np.quantile(indep.stock["r"][:, 0], [0.05, 0.95]))
    w_corr = np.ptp(np.quantile(corr.stock["r"][:, 0], [0.05, 0.95]))
    # 3600 independent pixels: sd of mean = 5 / 60 = 0.083 -> 90 % width ~0.27 t C/ha
    assert w_indep == pytest.approx(2 * 1.645 * 5 / 60, rel=0.2)
    assert w_corr > 10 * w_indep


def test_change_and_co2e_from_joint_draws() -> None:
    shape = (20, 20)
    zones = np.where(np.arange(20)[None, :] < 10, 0, 1).repeat(20, axis=0).astype(np.int32)
    r1 = RoundMaps("2021", np.full(shape, 50.0), np.full(shape, 2.0))
    r2 = RoundMaps("2024", np.full(shape, 52.0), np.full(shape, 2.0))
    sim = simulate_zone_means([r1, r2], zones, 2, pixel_m=10.0, range_m=200.0, round_correlation=1.0, n_sim=50, seed=0)
    s = zone_summary(sim, 0, confidence=0.9)
    change = s["change"]
    # Fully correlated errors with equal sd cancel: the change is exactly +2 t C/ha in every draw.
    assert change["delta_soc_stock_t_ha"]["mean"] == pytest.approx(2.0)
    assert change["delta_soc_stock_t_ha"]["upper_90"] - change["delta_soc_stock_t_ha"]["lower_90"] == pytest.approx(0, abs=1e-9)
    area = 200 * 0.01  # 200 pixels of 0.01 ha
    assert s["mapped_area_ha"] == pytest.approx(area)
    assert change["co2e_t"]["mean"] == pytest.approx(2.0 * area * 44 / 12)
    assert pytest.approx(3.6667, abs=1e-4) == CO2_PER_C


def test_project_zone_is_area_weighted() -> None:
    zones = np.array([[0, 0, 0, 1]], dtype=np.int32)
    maps = [RoundMaps("r", np.array([[10.0, 10.0, 10.0, 50.0]]), np.zeros((1, 4)))]
    sim = simulate_zone_means(maps, zones, 2, pixel_m=10.0, range_m=None, round_correlation=0.0, n_sim=4, seed=0)
    assert sim.estimate["r"].tolist() == [10.0, 50.0, 20.0]
