"""Methodology profiles (YAML) and the requirement checklist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrv.accounting.deductions import DEDUCTION_METHODS
from mrv.accounting.methodology import (
    DEFAULT_DIRECTORY,
    Evidence,
    MethodologyProfile,
    available_methodologies,
    check_methodology,
    load_methodology,
)
from mrv.errors import AccountingError, ConfigError

PROFILE_IDS = (
    "verra_vm0042_v2", "verra_vm0042_v2_2", "verra_vt0014_v1", "verra_vmd0053_v2", "gold_standard_soc", "car_sep",
)  # fmt: skip


def _by_id(profile: MethodologyProfile, evidence: Evidence) -> dict[str, bool | None]:
    return {r.requirement_id: r.passed for r in check_methodology(profile, evidence)}


# ---------------------------------------------------------------- shipped profiles


def test_all_profiles_available() -> None:
    assert set(PROFILE_IDS) <= set(available_methodologies())


@pytest.mark.parametrize("ident", PROFILE_IDS)
def test_profile_loads_with_matching_deduction(ident: str) -> None:
    profile = load_methodology(ident)
    assert profile.id == ident
    assert profile.deduction in DEDUCTION_METHODS
    assert profile.requirements
    assert all(r.section for r in profile.requirements)


def test_profile_loads_by_path() -> None:
    profile = load_methodology(DEFAULT_DIRECTORY / "car_sep.yaml")
    assert profile.id == "car_sep"


def test_vm0042_requirements_content() -> None:
    reqs = {r.evidence: r for r in load_methodology("verra_vm0042_v2").requirements}
    assert (reqs["sampling_depth_cm"].op, reqs["sampling_depth_cm"].threshold) == (
        ">=",
        30.0,
    )
    assert reqs["uses_equivalent_soil_mass"].op == "is_true"
    assert (
        reqs["remeasurement_interval_years"].op,
        reqs["remeasurement_interval_years"].threshold,
    ) == ("<=", 5.0)


def test_vm0042_pass_and_fail() -> None:
    profile = load_methodology("verra_vm0042_v2")
    good = Evidence(
        sampling_depth_cm=30.0,
        uses_equivalent_soil_mass=True,
        remeasurement_interval_years=5.0,
    )
    assert set(_by_id(profile, good).values()) == {True}
    bad = Evidence(
        sampling_depth_cm=20.0,
        uses_equivalent_soil_mass=False,
        remeasurement_interval_years=6.0,
    )
    assert set(_by_id(profile, bad).values()) == {False}


def test_gold_standard_pass_and_fail() -> None:
    profile = load_methodology("gold_standard_soc")
    assert _by_id(profile, Evidence(sampling_depth_cm=45.0)) == {
        "min_sampling_depth": True
    }
    assert _by_id(profile, Evidence(sampling_depth_cm=29.5)) == {
        "min_sampling_depth": False
    }


def test_car_sep_pass_and_fail() -> None:
    profile = load_methodology("car_sep")
    ok = _by_id(profile, Evidence(min_samples_per_stratum=3, sampling_depth_cm=30.0))
    assert ok == {"min_samples_per_stratum": True, "min_sampling_depth": True}
    ko = _by_id(profile, Evidence(min_samples_per_stratum=2, sampling_depth_cm=30.0))
    assert ko == {"min_samples_per_stratum": False, "min_sampling_depth": True}


def test_missing_evidence_is_not_assessed() -> None:
    profile = load_methodology("verra_vm0042_v2")
    results = check_methodology(profile, Evidence(sampling_depth_cm=30.0))
    by_id = {r.requirement_id: r for r in results}
    assert by_id["min_sampling_depth"].passed is True
    for rid in ("equivalent_soil_mass", "max_remeasurement_interval"):
        assert by_id[rid].passed is None
        assert by_id[rid].evidence_value is None
        assert "not assessed" in by_id[rid].note


def test_check_result_to_dict_is_json() -> None:
    profile = load_methodology("car_sep")
    results = check_methodology(profile, Evidence(min_samples_per_stratum=4))
    rows = [r.to_dict() for r in results]
    text = json.dumps(rows)
    assert '"passed": null' in text
    assert rows[0]["requirement_id"] == "min_samples_per_stratum"
    assert rows[0]["threshold"] == 3.0
    assert rows[0]["evidence_value"] == 4
    assert rows[0]["section"]


# ---------------------------------------------------------------- malformed profiles

VALID = """\
id: demo
name: Demo
version: "1.0"
reference: Demo methodology, Publisher, 2024
deduction: gold_standard_soc
requirements:
  - id: depth
    description: depth >= 30 cm
    section: "1.1"
    section_confirmed: true
    evidence: sampling_depth_cm
    op: ">="
    threshold: 30
"""


def _write(tmp_path: Path, text: str, name: str = "demo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_tmp_profile_loads(tmp_path: Path) -> None:
    profile = load_methodology(_write(tmp_path, VALID))
    assert profile.requirements[0].threshold == 30.0
    assert load_methodology("demo", directory=tmp_path) == profile
    assert available_methodologies(tmp_path) == ["demo"]


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        (
            "deduction: gold_standard_soc\n",
            "deduction: gold_standard_soc\ncolour: red\n",
            "colour",
        ),
        ('version: "1.0"\n', "", "version"),
        ('version: "1.0"', "version: 1.0", "version"),
        ("deduction: gold_standard_soc", "deduction: nope", "deduction"),
        ('op: ">="', 'op: "=>"', "requirements[0].op"),
        (
            "evidence: sampling_depth_cm",
            "evidence: depth_cm",
            "requirements[0].evidence",
        ),
        ("threshold: 30", "threshold: thirty", "requirements[0].threshold"),
        ("    threshold: 30\n", "", "threshold"),
        (
            "section_confirmed: true",
            "section_confirmed: yes please",
            "requirements[0].section_confirmed",
        ),
        ("    threshold: 30\n", "    threshold: 30\n    unit: cm\n", "unit"),
        ("id: demo", "id: other", "id"),
    ],
)
def test_malformed_profile_names_file_and_key(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    assert old in VALID
    path = _write(tmp_path, VALID.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_methodology(path)
    message = str(info.value)
    assert str(path) in message
    assert key in message


def test_is_true_on_numeric_evidence_rejected(tmp_path: Path) -> None:
    text = VALID.replace('op: ">="', "op: is_true").replace(
        "threshold: 30", "threshold: null"
    )
    with pytest.raises(ConfigError, match="is_true"):
        load_methodology(_write(tmp_path, text))


def test_duplicate_requirement_id_rejected(tmp_path: Path) -> None:
    block = VALID.split("requirements:\n")[1]
    with pytest.raises(ConfigError, match=r"requirements\[1\]\.id"):
        load_methodology(_write(tmp_path, VALID + block))


def test_invalid_yaml_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_methodology(_write(tmp_path, "id: [unclosed\n"))


def test_top_level_not_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_methodology(_write(tmp_path, "- just\n- a list\n"))


def test_unknown_id_lists_known(tmp_path: Path) -> None:
    _write(tmp_path, VALID)
    with pytest.raises(ConfigError, match="demo"):
        load_methodology("missing", directory=tmp_path)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        available_methodologies(tmp_path / "nope")


# ---------------------------------------------------------------- evidence validation


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sampling_depth_cm": -5.0},
        {"sampling_depth_cm": float("nan")},
        {"sampling_depth_cm": True},
        {"uses_equivalent_soil_mass": 1},
        {"min_samples_per_stratum": 2.5},
        {"interval_coverage_90": 90.0},
    ],
)
def test_bad_evidence_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(AccountingError, match=next(iter(kwargs))):
        Evidence(**kwargs)  # type: ignore[arg-type]


def test_equality_on_bool_evidence(tmp_path: Path) -> None:
    text = (
        VALID.replace(
            "evidence: sampling_depth_cm", "evidence: spatial_cross_validation"
        )
        .replace('op: ">="', 'op: "=="')
        .replace("threshold: 30", "threshold: true")
    )
    profile = load_methodology(_write(tmp_path, text))
    assert _by_id(profile, Evidence(spatial_cross_validation=True)) == {"depth": True}
    assert _by_id(profile, Evidence(spatial_cross_validation=False)) == {"depth": False}
