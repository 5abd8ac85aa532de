"""Variogram of cross-validation errors: empirical estimator, Cressie WLS fit, cross-round correlation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mrv.accounting.recompute import estimate_error_model
from mrv.accounting.simulate import exponential_grf
from mrv.accounting.variogram import (
    EmpiricalVariogram,
    ExponentialVariogram,
    cross_round_correlation,
    empirical_variogram,
    fit_exponential,
    standardized_errors,
)
from mrv.config import parse_config
from mrv.errors import AccountingError, ConfigError


def test_empirical_variogram_hand_worked() -> None:
    # Points at x = 0, 10, 20 with values 0, 1, 3. Pairs: h=10 -> (0-1)^2=1 and (1-3)^2=4; h=20 -> (0-3)^2=9.
    # Matheron: g(10) = (1 + 4) / (2 * 2) = 1.25; g(20) = 9 / (2 * 1) = 4.5.
    emp = empirical_variogram(
        np.array([0.0, 10.0, 20.0]), np.zeros(3), np.array([0.0, 1.0, 3.0]), n_bins=2, max_lag_m=30.0, min_pairs=1
    )
    assert emp.lag_m.tolist() == [10.0, 20.0]
    assert emp.gamma.tolist() == [1.25, 4.5]
    assert emp.n_pairs.tolist() == [2, 1]


def test_groups_keep_only_pairs_within_a_group() -> None:
    emp = empirical_variogram(
        np.array([0.0, 10.0, 20.0]), np.zeros(3), np.array([0.0, 1.0, 3.0]),
        n_bins=2, max_lag_m=30.0, min_pairs=1, groups=np.array(["a", "a", "b"]),
    )  # fmt: skip
    assert emp.n_pairs.tolist() == [1]
    assert emp.gamma.tolist() == [0.5]


def test_standardized_errors_use_interval_sd() -> None:
    # 90 % interval [40, 72.9] -> sd = 32.9 / (2 * 1.6449) = 10.0007; error 60 - 50 = 10 -> z = 0.99993.
    oof = pd.DataFrame({"observed": [60.0], "predicted": [50.0], "lower": [40.0], "upper": [72.9]})
    assert standardized_errors(oof, confidence=0.9)[0] == pytest.approx(10 / (32.9 / (2 * 1.6448536)), rel=1e-6)
    with pytest.raises(AccountingError, match="upper"):
        standardized_errors(oof.drop(columns="upper"), confidence=0.9)


def test_cressie_fit_recovers_exact_model() -> None:
    true = ExponentialVariogram(nugget=0.2, partial_sill=0.8, range_m=150.0)
    lag = np.linspace(25, 900, 18)
    emp = EmpiricalVariogram(lag_m=lag, gamma=true.gamma(lag), n_pairs=np.full(18, 500))
    fit = fit_exponential(emp)
    assert fit.nugget == pytest.approx(0.2, rel=1e-4)
    assert fit.partial_sill == pytest.approx(0.8, rel=1e-4)
    assert fit.range_m == pytest.approx(150.0, rel=1e-4)
    assert fit.nugget_share == pytest.approx(0.2, rel=1e-4)
    assert not fit.range_at_bound


def _sample_fields(seed: int, *, range_m: float, nugget: float, k: int, m: int, n: int = 128, cell: float = 10.0):
    rng = np.random.default_rng(seed)
    fields = exponential_grf((n, n), cell_m=cell, range_m=range_m, n=k, rng=rng)
    xs, ys, zs, gs = [], [], [], []
    for q in range(k):
        r, c = rng.integers(0, n, m), rng.integers(0, n, m)
        zs.append(np.sqrt(1 - nugget) * fields[q][r, c] + np.sqrt(nugget) * rng.standard_normal(m))
        xs.append(c * cell)
        ys.append(r * cell)
        gs.append(np.full(m, q))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(zs), np.concatenate(gs)


def test_fit_recovers_range_of_simulated_field() -> None:
    # 8 independent 1.28 km x 1.28 km fields, exponential range a = 100 m, 30 % nugget; 400 points each.
    x, y, z, g = _sample_fields(0, range_m=100.0, nugget=0.3, k=8, m=400)
    fit = fit_exponential(empirical_variogram(x, y, z, n_bins=20, groups=g))
    assert fit.range_m == pytest.approx(100.0, rel=0.3)
    assert fit.nugget_share == pytest.approx(0.3, abs=0.1)
    assert fit.sill == pytest.approx(1.0, abs=0.15)
    # Pairs across independent realizations would look like pure nugget: grouping matters.
    mixed = fit_exponential(empirical_variogram(x, y, z, n_bins=20))
    assert mixed.nugget_share > fit.nugget_share + 0.2


def test_cross_round_correlation_recovers_known_rho() -> None:
    rng = np.random.default_rng(3)
    n, cell, a, rho = 128, 10.0, 100.0, 0.7
    g1, g2 = exponential_grf((n, n), cell_m=cell, range_m=a, n=2, rng=rng)
    g2 = rho * g1 + np.sqrt(1 - rho**2) * g2
    m = 800
    r1, c1, r2, c2 = (rng.integers(0, n, m) for _ in range(4))
    z = np.concatenate([g1[r1, c1], g2[r2, c2]])
    x = np.concatenate([c1, c2]) * cell
    y = np.concatenate([r1, r2]) * cell
    rounds = np.repeat(["2021", "2024"], m)
    model = ExponentialVariogram(nugget=0.0, partial_sill=1.0, range_m=a)
    est, pairs = cross_round_correlation(x, y, z, rounds, "2021", "2024", model)
    assert pairs > 1000
    assert est == pytest.approx(rho, abs=0.12)
    # Independent rounds: the estimate is near 0.
    est0, _ = cross_round_correlation(
        x, y, np.concatenate([g1[r1, c1], rng.standard_normal(m)]), rounds, "2021", "2024", model
    )
    assert abs(est0) < 0.12


def test_error_model_auto_uses_fit_and_number_overrides() -> None:
    x, y, z, _ = _sample_fields(1, range_m=80.0, nugget=0.2, k=1, m=300)
    oof = pd.DataFrame(
        {"x": x, "y": y, "observed": 50 + 10 * z, "predicted": 50.0, "lower": 50 - 16.449, "upper": 50 + 16.449}
    )
    auto = estimate_error_model(
        oof, interval_confidence=0.9, range_m="auto", round_correlation=0.0, first_round="a", last_round="a"
    )
    assert auto.range_source == "fitted"
    assert auto.variogram is not None
    assert (auto.range_m, auto.nugget_share) == (auto.variogram.range_m, auto.variogram.nugget_share)
    fixed = estimate_error_model(
        oof, interval_confidence=0.9, range_m=500.0, round_correlation=0.3, first_round="a", last_round="a"
    )
    assert (fixed.range_m, fixed.nugget_share, fixed.range_source) == (500.0, 0.0, "configured")
    assert (fixed.round_correlation, fixed.round_correlation_source) == (0.3, "configured")
    with pytest.raises(AccountingError, match="error_range_m"):
        estimate_error_model(
            None, interval_confidence=0.9, range_m="auto", round_correlation=0.0, first_round="a", last_round="a"
        )
    with pytest.raises(AccountingError, match="error_range_m"):
        estimate_error_model(
            oof.head(10),
            interval_confidence=0.9,
            range_m="auto",
            round_correlation=0.0,
            first_round="a",
            last_round="a",
        )


def _config(accounting: dict[str, object]) -> dict[str, object]:
    return {
        "name": "t",
        "region": {"fields": "f.geojson", "crs": "EPSG:32633", "resolution_m": 10},
        "imagery": {"source": "stac", "url": "http://localhost", "collection": "c"},
        "rounds": [{"name": "r", "start": "2021-01-01", "end": "2021-02-01", "samples": []}],
        "accounting": accounting,
    }


def test_config_error_range_auto_by_default() -> None:
    src = Path("/tmp/x.yaml")
    assert parse_config(_config({}), source_path=src).accounting.error_range_m == "auto"
    assert parse_config(_config({"error_range_m": 300}), source_path=src).accounting.error_range_m == 300.0
    corr = parse_config(_config({"round_error_correlation": "auto"}), source_path=src).accounting
    assert corr.round_error_correlation == "auto"
    with pytest.raises(ConfigError, match="'auto' or a distance"):
        parse_config(_config({"error_range_m": "far"}), source_path=src)
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        parse_config(_config({"round_error_correlation": 1.5}), source_path=src)
