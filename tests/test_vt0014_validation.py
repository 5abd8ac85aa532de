"""VT0014-style validation criteria: hand-worked values and generated truth over many seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from mrv.accounting.vt0014 import (
    change_variance,
    lag_pair_counts,
    validate_dsm,
    validation_points,
    vt0014_from_files,
)
from mrv.errors import AccountingError

Z90 = norm.ppf(0.95)


def test_change_variance_hand_example() -> None:
    # 9 + 4 - 2 * 0.5 * sqrt(36) = 7
    assert change_variance(9.0, 4.0, 0.5) == pytest.approx(7.0)
    assert change_variance(9.0, 4.0, 0.0) == pytest.approx(13.0)
    assert change_variance(4.0, 4.0, 1.0) == pytest.approx(0.0)
    with pytest.raises(AccountingError, match="rho in"):
        change_variance(1.0, 1.0, 1.5)


def test_lag_pair_counts_hand_example() -> None:
    # points at 0, 30 and 120 m on a line: distances 30, 90, 120 -> one pair in each of the first three bins
    edges, counts = lag_pair_counts(np.array([0.0, 30.0, 120.0]), np.zeros(3))
    assert edges[0] == 0.0
    assert edges[-1] == 500.0
    assert counts.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]


def _world(seed: int, n: int = 200, *, bias: float = 0.0, width_factor: float = 1.0, skill: float = 1.0):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 2000, n), rng.uniform(0, 2000, n)
    signal = 45 + 8 * np.sin(x / 300) + 5 * np.cos(y / 400)
    obs = signal + rng.normal(0, 3, n)
    pred = skill * signal + (1 - skill) * signal.mean() + bias
    half = width_factor * Z90 * 3
    return obs, pred, pred - half, pred + half, x, y


def test_honest_model_passes_and_bad_ones_fail_over_seeds() -> None:
    honest = [validate_dsm(*_world(s), confidence=0.9) for s in range(60)]
    by_id = lambda r, cid: next(c for c in r.checks if c.id == cid)  # noqa: E731
    # unbiased errors: the t-test rejects in about alpha = 5 % of the worlds
    rejects = np.mean([by_id(r, "mean_error_zero").passed is False for r in honest])
    assert rejects < 0.15, rejects
    assert all(by_id(r, "r2_positive").passed for r in honest)
    # nominal intervals: the point PICP is >= 0.9 about half the time, never far below
    picp = np.array([by_id(r, "picp_nominal").value for r in honest])
    assert abs(picp.mean() - 0.9) < 0.01
    # 200 points over 2 km x 2 km: plenty of pairs beyond 100 m, few in the first 50 m bin
    assert all(by_id(r, "lag_pairs").value[-1] >= 50 for r in honest)

    biased = [validate_dsm(*_world(s, bias=2.0), confidence=0.9) for s in range(20)]
    assert np.mean([by_id(r, "mean_error_zero").passed is False for r in biased]) > 0.9
    useless = [validate_dsm(*_world(s, skill=-0.5), confidence=0.9) for s in range(20)]
    assert all(by_id(r, "r2_positive").passed is False for r in useless)
    narrow = [validate_dsm(*_world(s, width_factor=0.6), confidence=0.9) for s in range(20)]
    assert all(by_id(r, "picp_nominal").passed is False for r in narrow)
    assert all(r.passed is False for r in narrow)


def test_too_few_points_are_not_assessed() -> None:
    r = validate_dsm(np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.zeros(2), np.full(2, 3.0),
                     np.zeros(2), np.zeros(2), confidence=0.9)  # fmt: skip
    assert r.passed is False or r.passed is None
    assert next(c for c in r.checks if c.id == "r2_positive").passed is None


def test_validation_points_are_lab_in_project_after_start(tmp_path) -> None:
    oof = pd.DataFrame(
        {
            "x": np.arange(8.0) * 100, "y": np.zeros(8), "observed": np.arange(8.0), "predicted": np.arange(8.0),
            "lower": np.arange(8.0) - 1, "upper": np.arange(8.0) + 1,
            "source": ["lab", "lab", "crowd", "lab", "lab", "lab", "crowd", "lab"],
            "round": ["2021", "2024", "2024", "2024", "2021", "2024", "2021", "2024"],
            "field_id": ["f1", "f1", "f2", None, "f3", "f2", "f1", "f4"],
        }
    )  # fmt: skip
    pts, sel = validation_points(oof, baseline_round="2021")
    assert pts.index.tolist() == [1, 5, 7]
    assert sel.in_project
    assert sel.after_start
    path = tmp_path / "cv.csv"
    oof.to_csv(path, index=False)
    res = vt0014_from_files(path, baseline_round="2021", confidence=0.9)
    assert res.n_validation == 3
    check = next(c for c in res.checks if c.id == "validation_in_project_after_start")
    assert check.passed is True
    d = res.to_dict()
    assert d["lag_pairs"] == list(res.lag_pairs)
    assert all(c["section_confirmed"] is False for c in d["checks"])
    # one round only: no data after the start -> that criterion fails, and says why
    pts1, sel1 = validation_points(oof.assign(round="2021"), baseline_round="2021")
    assert sel1.after_start is False
    assert "only the baseline round" in sel1.text
