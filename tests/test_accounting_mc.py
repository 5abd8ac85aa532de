"""Monte Carlo aggregation with spatially correlated errors."""

from __future__ import annotations

import numpy as np
import pytest

from mrv.accounting.aggregate import CO2_PER_C, RoundMaps, simulate_zone_means, zone_summary
from mrv.accounting.simulate import exponential_grf
from mrv.errors import AccountingError


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


def _zone_means(values: np.ndarray, zones: np.ndarray, n_zones: int) -> np.ndarray:
    """(n, ny, nx) -> (n, n_zones + 1) means, the last column being all zones together."""
    flat, z = values.reshape(values.shape[0], -1), zones.ravel()
    out = np.stack([flat[:, z == k].mean(axis=1) for k in range(n_zones)], axis=1)
    return np.column_stack([out, flat[:, z >= 0].mean(axis=1)])


def test_correlated_intervals_cover_true_field_means_at_nominal_rate() -> None:
    """Truths drawn independently of the MC code (exact Cholesky of the pixel covariance) are covered ~90 %.

    48 x 48 pixels of 10 m, four 24 x 24 fields; error = sd * (sqrt(0.8) * exponential GRF with range
    a = 150 m + sqrt(0.2) * white noise); the second round's correlated part has correlation 0.6 with
    the first's. 300 truth realizations are checked against the 90 % intervals of one 2000-draw MC
    (the MC does not depend on the truth: its estimate is the mean map), for stock and change.
    """
    n, cell, a, nug, rho, reps = 48, 10.0, 150.0, 0.2, 0.6, 300
    zones = ((np.arange(n)[:, None] >= 24) * 2 + (np.arange(n)[None, :] >= 24)).astype(np.int32)
    yy, xx = np.mgrid[0:n, 0:n]
    mean1 = 50.0 + 0.2 * xx
    mean2 = mean1 + 1.0
    sd1 = 4.0 + 0.05 * yy
    sd2 = sd1 * 1.2
    pts = np.column_stack([xx.ravel(), yy.ravel()]) * cell
    h = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
    chol = np.linalg.cholesky(np.exp(-h / a) + 1e-10 * np.eye(n * n))
    rng = np.random.default_rng(11)
    s1 = (chol @ rng.standard_normal((n * n, reps))).T
    s2 = rho * s1 + np.sqrt(1 - rho**2) * (chol @ rng.standard_normal((n * n, reps))).T
    e1 = np.sqrt(1 - nug) * s1 + np.sqrt(nug) * rng.standard_normal(s1.shape)
    e2 = np.sqrt(1 - nug) * s2 + np.sqrt(nug) * rng.standard_normal(s2.shape)
    truth1 = _zone_means((mean1.ravel() + sd1.ravel() * e1).reshape(reps, n, n), zones, 4)
    truth2 = _zone_means((mean2.ravel() + sd2.ravel() * e2).reshape(reps, n, n), zones, 4)
    maps = [RoundMaps("r1", mean1, sd1), RoundMaps("r2", mean2, sd2)]
    kw = {"pixel_m": cell, "round_correlation": rho, "n_sim": 2000, "seed": 5, "nugget_share": nug}
    sim = simulate_zone_means(maps, zones, 4, range_m=a, **kw)
    indep = simulate_zone_means(maps, zones, 4, range_m=None, **kw)

    def coverage(draws: np.ndarray, truth: np.ndarray) -> np.ndarray:
        lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
        return np.mean((truth >= lo) & (truth <= hi), axis=0)

    cov_stock = coverage(sim.stock["r2"], truth2)
    cov_change = coverage(sim.stock["r2"] - sim.stock["r1"], truth2 - truth1)
    assert np.all((cov_stock >= 0.8) & (cov_stock <= 0.97)), cov_stock
    assert np.all((cov_change >= 0.8) & (cov_change <= 0.97)), cov_change
    assert 0.85 <= cov_stock.mean() <= 0.95
    assert 0.85 <= cov_change.mean() <= 0.95
    # Independent pixels: the same truths fall outside the (far too narrow) intervals most of the time.
    assert coverage(indep.stock["r2"], truth2).max() < 0.5
    # Ignoring the positive round correlation (rho = 0) over-covers the change: conservative.
    cons = simulate_zone_means(maps, zones, 4, range_m=a, **{**kw, "round_correlation": 0.0})
    assert coverage(cons.stock["r2"] - cons.stock["r1"], truth2 - truth1).mean() > cov_change.mean()


def test_nugget_share_one_equals_independent_pixels() -> None:
    # With the whole variance in the nugget the field mean's sd is sd / sqrt(n_pixels): 5 / 60 for 3600 pixels.
    shape = (60, 60)
    zones = np.zeros(shape, dtype=np.int32)
    sim = simulate_zone_means(
        [_maps(shape, 50.0, 5.0)], zones, 1, pixel_m=10.0, range_m=300.0, nugget_share=1.0,
        round_correlation=0.0, n_sim=2000, seed=1,
    )  # fmt: skip
    assert np.std(sim.stock["r"][:, 0]) == pytest.approx(5 / 60, rel=0.06)
    with pytest.raises(AccountingError, match="nugget share"):
        simulate_zone_means([_maps(shape, 50.0, 5.0)], zones, 1, pixel_m=10.0, range_m=300.0, nugget_share=1.5,
                            round_correlation=0.0, n_sim=2, seed=1)  # fmt: skip


def test_grf_variance_is_exact_for_a_single_field() -> None:
    # The old normalisation divided by the across-draw SD, which is 0 for n = 1.
    g = exponential_grf((32, 32), cell_m=10.0, range_m=50.0, n=1, rng=np.random.default_rng(0))
    assert np.all(np.isfinite(g))
    assert 0.5 < g.var() < 1.5
