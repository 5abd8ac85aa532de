"""The typed report schema (mrv.report.schema): JSON round trip, errors naming the JSON path, the published JSON Schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mrv.errors import VerificationError
from mrv.report.schema import REPORT_SCHEMA_VERSION, Report, read_report, report_json_schema, schema_text

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "report_v2.json"
PUBLISHED = REPO / "mrv" / "report" / "report.schema.json"


@pytest.fixture
def data() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _validator() -> jsonschema.Draft202012Validator:
    schema = report_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_published_schema_is_the_generated_one() -> None:
    assert PUBLISHED.read_text(encoding="utf-8") == schema_text(), (
        "mrv/report/report.schema.json is stale: mrv report schema -o mrv/report/report.schema.json"
    )
    assert json.loads(PUBLISHED.read_text())["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_demo_report_validates_and_round_trips(data: dict[str, Any]) -> None:
    _validator().validate(data)
    report = Report.from_json(data)
    assert report.schema_version == REPORT_SCHEMA_VERSION
    assert report.to_json() == data  # every key and number kept, none added
    assert Report.from_json(report.to_json()) == report
    assert Report.from_json(json.loads(json.dumps(report.to_json(), allow_nan=False))) == report


def test_typed_access(data: dict[str, Any]) -> None:
    report = Report.from_json(data)
    assert report.project.rounds["2024"].soc_stock_t_ha.mean == data["project"]["rounds"]["2024"]["soc_stock_t_ha"]["mean"]
    assert [f.field_id for f in report.fields] == ["F001", "F002", "F003", "F004"]
    design = report.design_based
    assert design is not None
    assert design.change is not None
    assert design.change.project is not None
    co2e = design.change.project.co2e
    assert co2e.unit == "t CO2e"
    assert co2e.bound("lower") == data["design_based"]["change"]["project"]["co2e"]["lower_90"]
    assert report.methodology is not None
    assert report.methodology.checks[0].op == ">="
    assert report.deductions is not None
    assert report.deductions[0].units == "t CO2e"
    assert report.maps is not None
    assert report.maps.width90 == "maps/soc_stock_width90.tif"
    assert report.uncertainty is not None
    assert report.uncertainty.variogram is not None


def _set(data: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    target = out
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["fields", 1, "rounds", "2024", "soc_total_t", "upper_90"], "12", r"fields\[1\]\.rounds\.2024\.soc_total_t\.upper_90 is '12', expected a number"),
        (["project", "n_fields"], 4.5, r"project\.n_fields is 4\.5, expected an integer"),
        (["project", "soc_stock_t_ha"], KeyError, r"project\.soc_stock_t_ha is missing"),
        (["deductions", 0, "credited_t"], 1.0, r"deductions\[0\]\.credited_t is not a member of Deduction"),
        (["methodology", "checks", 2, "passed"], "yes", r"methodology\.checks\[2\]\.passed is 'yes', expected a boolean"),
        (["design_based", "change", "project", "per_ha", "se"], [], r"design_based\.change\.project\.per_ha\.se is a list"),
        (["maps", "mean"], 3, r"maps\.mean is 3, expected a string"),
        (["fields"], {}, r"fields is an object, expected a list"),
    ],
)
def test_bad_shapes_name_the_json_path(data: dict[str, Any], path: list[Any], value: Any, message: str) -> None:
    bad = _set(data, path, value)
    with pytest.raises(VerificationError, match=message) as err:
        Report.from_json(bad)
    assert "restore report.json" in str(err.value)
    with pytest.raises(jsonschema.ValidationError):  # the published schema refuses it too
        _validator().validate(bad)


def test_schema_version_and_top_level(data: dict[str, Any]) -> None:
    with pytest.raises(VerificationError, match=r"schema_version is 3; this version of mrv reads report schema 1, 2"):
        Report.from_json({**data, "schema_version": 3})
    with pytest.raises(VerificationError, match="holds a JSON list, not an object"):
        Report.from_json([data])
    v1 = Report.from_json({**data, "schema_version": 1})  # the untyped report of earlier releases reads as is
    assert v1.schema_version == 1


def test_extra_members_are_kept_in_order(data: dict[str, Any]) -> None:
    report = Report.from_json(data)
    assert report.model is not None
    assert list(report.model.extra)[:3] == ["autocorrelation_range_m", "calibration", "calibration_margin_t_ha"]
    assert report.to_json()["model"] == data["model"]


def test_non_finite_numbers_become_null(data: dict[str, Any]) -> None:
    report = Report.from_json(data)
    import dataclasses

    iv = dataclasses.replace(report.project.soc_stock_t_ha, sd=float("nan"))
    project = dataclasses.replace(report.project, soc_stock_t_ha=iv)
    out = dataclasses.replace(report, project=project).to_json()
    assert out["project"]["soc_stock_t_ha"]["sd"] is None
    json.dumps(out, allow_nan=False)


def test_cli_prints_the_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mrv.cli import main

    assert main(["report", "schema", "-o", str(tmp_path / "s.json")]) == 0
    assert (tmp_path / "s.json").read_text(encoding="utf-8") == schema_text()


def test_read_report_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="has no report.json"):
        read_report(tmp_path / "report.json")
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(VerificationError, match="cannot be read as JSON"):
        read_report(tmp_path / "report.json")
