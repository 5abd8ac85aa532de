"""VM0042 v2.2, VT0014 v1.0 and VMD0053 profiles: thresholds and sections as read in the texts (or flagged)."""

from __future__ import annotations

import pytest

from mrv.accounting.methodology import Evidence, check_methodology, load_methodology
from mrv.errors import AccountingError


def test_vm0042_v2_2_requirements_from_the_text() -> None:
    p = load_methodology("verra_vm0042_v2_2")
    assert p.version == "2.2"
    reqs = {r.id: r for r in p.requirements}
    assert all(r.section_confirmed for r in p.requirements)  # every one was read in the v2.2 text
    assert (reqs["min_reporting_depth"].op, reqs["min_reporting_depth"].threshold) == (">=", 30.0)
    assert "8.2.1.3" in reqs["min_reporting_depth"].section
    assert (reqs["esm_two_increments"].op, reqs["esm_two_increments"].threshold) == (">=", 2.0)
    assert (reqs["max_remeasurement_interval"].op, reqs["max_remeasurement_interval"].threshold) == ("<=", 5.0)
    assert (reqs["monte_carlo_draws_min"].threshold, reqs["monte_carlo_draws_max"].threshold) == (100.0, 2000.0)
    assert "8.6.1.2.3" in reqs["monte_carlo_draws_min"].section
    assert "8.2.1.4" in reqs["remote_sensing_through_vt0014"].section


def test_vm0042_v2_2_check_of_a_fixed_depth_run() -> None:
    p = load_methodology("verra_vm0042_v2_2")
    ev = Evidence(sampling_depth_cm=30.0, uses_equivalent_soil_mass=False, remeasurement_interval_years=3.0,
                  min_samples_per_stratum=4, n_monte_carlo_draws=400, vt0014_validation_passed=False)  # fmt: skip
    got = {c.requirement_id: c.passed for c in check_methodology(p, ev)}
    assert got == {
        "min_reporting_depth": True, "equivalent_soil_mass": False, "esm_two_increments": None,
        "max_remeasurement_interval": True, "min_samples_per_stratum": True, "monte_carlo_draws_min": True,
        "monte_carlo_draws_max": True, "remote_sensing_through_vt0014": False,
    }  # fmt: skip


def test_vt0014_profile_is_flagged_unconfirmed_and_strict_r2() -> None:
    p = load_methodology("verra_vt0014_v1")
    assert not any(r.section_confirmed for r in p.requirements)
    assert all("not confirmed" in r.section for r in p.requirements)
    base = dict(validation_mean_error_p=0.4, validation_picp=0.91, min_pairs_per_lag=60,
                validation_in_project_after_start=True)  # fmt: skip
    ok = {c.requirement_id: c.passed for c in check_methodology(p, Evidence(validation_r2=0.2, **base))}
    assert all(ok.values())
    zero = {c.requirement_id: c.passed for c in check_methodology(p, Evidence(validation_r2=0.0, **base))}
    assert zero["validation_r2_positive"] is False  # R^2 > 0, not >= 0
    neg = check_methodology(p, Evidence(validation_r2=-0.3, **base))
    assert next(c for c in neg if c.requirement_id == "validation_r2_positive").passed is False
    notes = " ".join(c.note for c in neg)
    assert "not confirmed" in notes


def test_evidence_bounds_for_new_fields() -> None:
    with pytest.raises(AccountingError, match="fraction"):
        Evidence(validation_picp=90.0)
    with pytest.raises(AccountingError, match=">= 0"):
        Evidence(n_monte_carlo_draws=-1)
    Evidence(validation_r2=-2.0)  # a model worse than the mean is a valid (failing) fact


def test_vmd0053_is_not_assessed_without_a_process_model() -> None:
    p = load_methodology("verra_vmd0053_v2")
    (check,) = check_methodology(p, Evidence())
    assert check.passed is None
    assert "not assessed" in check.note
