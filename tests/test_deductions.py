"""Uncertainty deductions against hand-worked numbers.

Hand-worked quantiles used below (independent of scipy):
* normal limit: z(2/3) = 0.430727, z(0.95) = 1.644854 (standard normal tables);
* t with 1 df is Cauchy: t(q, 1) = tan(pi * (q - 1/2)), so t(2/3, 1) = tan(pi/6) = 1/sqrt(3)
  and t(0.95, 1) = tan(0.45 pi) = 6.313752;
* t with 2 df: t(q, 2) = (2q - 1) / sqrt(2 q (1 - q)), so t(0.95, 2) = 0.9 / sqrt(0.095).
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mrv.accounting.deductions import (
    DEDUCTION_METHODS,
    Deduction,
    deduction_for,
    gold_standard_deduction,
    vm0042_deduction,
)
from mrv.errors import AccountingError, ConfigError

# ---------------------------------------------------------------- VM0042 v2


def test_vm0042_large_df_hand_example() -> None:
    # UNC = 0.430727 * 2 / 10 = 0.0861454 -> 8.615 %; credited = 10 * (1 - 0.0861454) = 9.1385
    d = vm0042_deduction(10.0, 2.0, df=1e9)
    assert d.uncertainty_fraction * 100 == pytest.approx(8.615, abs=1e-3)
    assert d.credited == pytest.approx(9.1385, abs=1e-4)
    assert d.deduction_fraction == pytest.approx(d.uncertainty_fraction)
    assert d.methodology == "verra_vm0042_v2"
    assert d.df == 1e9


def test_vm0042_one_df_is_cauchy_quantile() -> None:
    # t(2/3, 1) = tan(pi/6) = 0.577350; UNC = 0.577350 * 2 / 10 = 0.115470; credited 8.84530
    d = vm0042_deduction(10.0, 2.0, df=1)
    assert d.uncertainty_fraction == pytest.approx(0.115470, abs=1e-6)
    assert d.credited == pytest.approx(8.84530, abs=1e-5)


def test_vm0042_df_none_is_normal_limit() -> None:
    d = vm0042_deduction(10.0, 2.0, df=None)
    assert d.uncertainty_fraction == pytest.approx(0.0861454, abs=1e-6)
    assert d.df is None


def test_vm0042_zero_standard_error_credits_everything() -> None:
    d = vm0042_deduction(7.5, 0.0, df=12)
    assert d.deduction_fraction == 0.0
    assert d.credited == 7.5


def test_vm0042_deduction_capped_at_whole_estimate() -> None:
    # UNC = 0.430727 * 10 / 1 = 4.31 > 1: deduct everything, never a negative credit
    d = vm0042_deduction(1.0, 10.0, df=None)
    assert d.uncertainty_fraction == pytest.approx(4.30727, abs=1e-4)
    assert d.deduction_fraction == 1.0
    assert d.credited == 0.0
    assert "capped" in d.note


# ---------------------------------------------------------------- Gold Standard


def test_gold_standard_large_df_hand_example() -> None:
    # UNC = 1.644854 * 2 / 10 = 0.328971; deduction = 0.128971; credited = 8.71029
    d = gold_standard_deduction(10.0, 2.0, df=1e9)
    assert d.uncertainty_fraction * 100 == pytest.approx(32.897, abs=1e-3)
    assert d.deduction_fraction * 100 == pytest.approx(12.897, abs=1e-3)
    assert d.credited == pytest.approx(8.7103, abs=1e-4)


def test_gold_standard_below_threshold_no_deduction() -> None:
    # UNC = 1.644854 * 1 / 10 = 0.164485 < 0.20 -> nothing deducted
    d = gold_standard_deduction(10.0, 1.0, df=1e9)
    assert d.uncertainty_fraction == pytest.approx(0.164485, abs=1e-6)
    assert d.deduction_fraction == 0.0
    assert d.credited == 10.0
    assert "no deduction" in d.note


def test_gold_standard_two_df_closed_form() -> None:
    # t(0.95, 2) = 0.9 / sqrt(0.095) = 2.919986; UNC = 2.919986 * 1 / 10 = 0.2919986
    # deduction = 0.0919986; credited = 10 * 0.9080014 = 9.080014
    d = gold_standard_deduction(10.0, 1.0, df=2)
    assert d.uncertainty_fraction == pytest.approx(0.2919986, abs=1e-6)
    assert d.deduction_fraction == pytest.approx(0.0919986, abs=1e-6)
    assert d.credited == pytest.approx(9.080014, abs=1e-5)


def test_gold_standard_one_df_below_threshold() -> None:
    # t(0.95, 1) = tan(0.45 pi) = 6.313752; UNC = 6.313752 * 2 / 100 = 0.126275 < 0.20
    d = gold_standard_deduction(100.0, 2.0, df=1)
    assert d.uncertainty_fraction == pytest.approx(0.126275, abs=1e-6)
    assert d.credited == 100.0


# ---------------------------------------------------------------- losses and bad inputs


@pytest.mark.parametrize("func", [vm0042_deduction, gold_standard_deduction])
def test_no_change_credits_nothing(func) -> None:  # type: ignore[no-untyped-def]
    d = func(0.0, 1.0, df=10)
    assert d.credited == 0.0
    assert d.deduction_fraction == 0.0
    assert d.reported_as == "none"
    assert math.isnan(d.uncertainty_fraction)
    assert "nothing is credited" in d.note
    as_dict = d.to_dict()
    assert as_dict["uncertainty_fraction"] is None
    json.dumps(as_dict)  # serialisable, no NaN


def test_vm0042_loss_is_an_emission_inflated_by_unc() -> None:
    """VM0042 v2.2 Eqs. 44-45: I = -1 for a loss, so the loss is multiplied by 1 + UNC (hand example:
    estimate -10, SE 2, normal limit: UNC = 0.430727 x 2 / 10 = 8.6145 %, reported -10.8615)."""
    d = vm0042_deduction(-10.0, 2.0, df=None)
    assert d.reported_as == "emission"
    assert d.uncertainty_fraction == pytest.approx(0.086145, abs=1e-6)
    assert d.credited == pytest.approx(-10.86145, abs=1e-5)
    assert d.units == "t CO2e"
    more = vm0042_deduction(-10.0, 4.0, df=None)
    assert more.credited < d.credited  # more uncertainty, larger reported emission


def test_gold_standard_loss_reported_in_full() -> None:
    d = gold_standard_deduction(-3.0, 1.0, df=10)
    assert d.credited == -3.0
    assert d.reported_as == "emission"
    assert "loss" in d.note


@pytest.mark.parametrize("se", [-0.1, float("nan"), float("inf")])
def test_bad_standard_error_raises(se: float) -> None:
    with pytest.raises(AccountingError, match="standard_error"):
        vm0042_deduction(10.0, se, df=5)
    with pytest.raises(AccountingError, match="standard_error"):
        gold_standard_deduction(10.0, se, df=5)


@pytest.mark.parametrize("df", [0, -1, float("nan")])
def test_bad_df_raises(df: float) -> None:
    with pytest.raises(AccountingError, match="df"):
        vm0042_deduction(10.0, 1.0, df=df)


def test_nonfinite_estimate_raises() -> None:
    with pytest.raises(AccountingError, match="estimate"):
        gold_standard_deduction(float("nan"), 1.0, df=5)


# ---------------------------------------------------------------- dispatch


def test_dispatch_matches_direct_calls() -> None:
    assert deduction_for(
        "verra_vm0042_v2", 10.0, 2.0, df=1e9
    ).credited == pytest.approx(9.1385, abs=1e-4)
    assert deduction_for(
        "gold_standard_soc", 10.0, 2.0, df=1e9
    ).credited == pytest.approx(8.7103, abs=1e-4)


def test_car_sep_uses_flagged_gold_standard_style_rule() -> None:
    d = deduction_for("car_sep", 10.0, 2.0, df=1e9)
    assert d.methodology == "car_sep"
    assert d.credited == pytest.approx(8.7103, abs=1e-4)
    assert "PROVISIONAL" in d.note
    assert "not implemented" in d.note


def test_unknown_methodology_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="verra_vm0042_v2"):
        deduction_for("vm0042", 10.0, 2.0, df=5)


def test_deduction_to_dict_has_every_field() -> None:
    d = vm0042_deduction(10.0, 2.0, df=4)
    assert set(d.to_dict()) == {
        "methodology",
        "estimate",
        "standard_error",
        "uncertainty_fraction",
        "deduction_fraction",
        "credited",
        "df",
        "note",
        "units",
        "reported_as",
    }
    assert isinstance(d, Deduction)


# ---------------------------------------------------------------- properties


@given(
    estimate=st.floats(min_value=1e-3, max_value=1e6),
    se=st.floats(min_value=0.0, max_value=1e6),
    df=st.floats(min_value=1.0, max_value=1e4),
    methodology=st.sampled_from(sorted(DEDUCTION_METHODS)),
)
def test_credit_between_zero_and_estimate(
    estimate: float, se: float, df: float, methodology: str
) -> None:
    d = deduction_for(methodology, estimate, se, df=df)
    assert 0.0 <= d.deduction_fraction <= 1.0
    assert 0.0 <= d.credited <= estimate


@given(
    se=st.floats(min_value=0.0, max_value=50.0),
    extra=st.floats(min_value=1e-6, max_value=50.0),
)
def test_more_uncertainty_never_credits_more(se: float, extra: float) -> None:
    for func in (vm0042_deduction, gold_standard_deduction):
        low = func(10.0, se, df=8)
        high = func(10.0, se + extra, df=8)
        assert high.credited <= low.credited
