"""`mrv report build` on a hand-built run directory, and the verifier's comparison of numbers.

The run directory holds only what rendering reads (report.json, the field polygons, a manifest): the
re-derivation of a whole run link by link (`mrv report verify`, which also recomputes the accounting from
the maps) is tested on a real run in tests/test_verify_bundle.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pyproj import Transformer

from mrv.cli import main
from mrv.fsio import sha256_file, write_json
from mrv.pipeline.layout import RunLayout
from mrv.report.manifest import verify_manifest, write_manifest
from mrv.report.render import render_outputs
from mrv.report.schema import Report
from mrv.report.verify import check_run_files, diff_json

CRS = "EPSG:32633"
X0, Y0 = 580_000.0, 5_350_000.0  # lower-left corner, UTM 33N


def _fields_geojson(path: Path) -> Path:
    """Two 200 m x 400 m fields side by side, written in lon/lat as RFC 7946 requires."""
    to_ll = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    feats = []
    for i, (x0, name) in enumerate([(X0, "North <A>"), (X0 + 200, "B & co")]):
        ring = [(x0, Y0), (x0 + 200, Y0), (x0 + 200, Y0 + 400), (x0, Y0 + 400), (x0, Y0)]
        feats.append(
            {
                "type": "Feature",
                "properties": {"field_id": f"F{i + 1}", "name": name, "farm_id": "farm", "practice": "cover crop"},
                "geometry": {"type": "Polygon", "coordinates": [[list(to_ll.transform(x, y)) for x, y in ring]]},
            }
        )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def _iv(mean: float, half: float) -> dict[str, float]:
    return {"mean": mean, "lower_90": mean - half, "upper_90": mean + half, "sd": half / 1.645}


def _result(stock_t_ha: tuple[float, float], area_ha: float) -> dict[str, Any]:
    rounds = {r: {"soc_stock_t_ha": _iv(s, 4.0), "soc_total_t": _iv(s * area_ha, 4.0 * area_ha)}
              for r, s in zip(("2021", "2024"), stock_t_ha, strict=True)}  # fmt: skip
    d = stock_t_ha[1] - stock_t_ha[0]
    return {
        "mapped_area_ha": area_ha, "total_area_ha": area_ha, "rounds": rounds, **rounds["2024"],
        "change": {"from_round": "2021", "to_round": "2024", "delta_soc_stock_t_ha": _iv(d, 5.0),
                   "delta_soc_total_t": _iv(d * area_ha, 5.0 * area_ha), "co2e_t": _iv(d * area_ha * 44 / 12, 18 * area_ha)},
    }  # fmt: skip


def report_data(fields_path: Path) -> dict[str, Any]:
    run = {"name": "verify-test", "created_utc": "2024-11-01T00:00:00Z", "fields": str(fields_path), "crs": CRS,
           "rounds": ["2021", "2024"], "latest_round": "2024", "baseline_round": "2021", "depth_cm": 30.0,
           "confidence": 0.9}  # fmt: skip
    fields = [
        {"field_id": fid, "name": name, "farm_id": "farm", "practice": "cover crop", "area_ha": 8.0,
         "mapped_fraction": 1.0, **_result(stocks, 8.0)}
        for fid, name, stocks in (("F1", "North <A>", (50.0, 52.0)), ("F2", "B & co", (60.0, 59.5)))
    ]  # fmt: skip
    project = {"area_ha": 16.0, "n_fields": 2, **_result((55.0, 55.75), 16.0)}
    return {"schema_version": 2, "run": run, "project": project, "fields": fields}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with report.json, its renderings and a manifest."""
    root = tmp_path_factory.mktemp("verify")
    fields = _fields_geojson(root / "fields.geojson")
    cfg_path = root / "run.yaml"
    cfg_path.write_text("name: verify-test\n")
    run = root / "run"
    layout = RunLayout(run)
    write_json(layout.report_json, Report.from_json(report_data(fields)).to_json())
    html, gpkg, pdf = render_outputs(run)
    write_manifest(run, inputs={"fields": fields}, config=cfg_path, outputs=[layout.report_json, html, gpkg, pdf])
    return run


@pytest.fixture
def copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the run directory together with its inputs (the manifest records them relative to it)."""
    shutil.copytree(run_dir.parent, tmp_path / "copy")
    return tmp_path / "copy" / "run"


def _rehash(run: Path, rel: str) -> None:
    """Pretend the tampering also rewrote the manifest."""
    manifest = json.loads((run / "manifest.json").read_text())
    for e in manifest["outputs"]:
        if e["path"] == rel:
            e["sha256"] = sha256_file(run / rel)
    (run / "manifest.json").write_text(json.dumps(manifest))


def test_run_files_read_into_the_typed_report(run_dir: Path) -> None:
    report = check_run_files(run_dir)
    assert isinstance(report, Report)
    assert [f.name for f in report.fields] == ["North <A>", "B & co"]
    assert report.project.change is not None
    assert report.project.change.co2e_t is not None
    assert verify_manifest(run_dir).ok


def test_build_rerenders_html_and_gpkg_and_manifest_still_matches(copy: Path) -> None:
    layout = RunLayout(copy)
    before = layout.report_html.read_bytes()
    layout.report_html.unlink()
    layout.report_gpkg.unlink()
    assert main(["report", "build", str(copy)]) == 0
    assert layout.report_html.read_bytes() == before  # rendering is deterministic
    assert layout.report_gpkg.is_file()
    assert layout.report_pdf.is_file()
    html = layout.report_html.read_text()
    assert "North &lt;A&gt;" in html
    assert "North <A>" not in html
    assert verify_manifest(copy).ok


def test_build_refuses_a_tampered_report(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = json.loads((copy / "report.json").read_text())
    report["project"]["soc_stock_t_ha"]["mean"] += 1
    (copy / "report.json").write_text(json.dumps(report))
    assert main(["report", "build", str(copy)]) == 2
    assert "does not match its SHA-256 in manifest.json" in capsys.readouterr().err


def test_build_names_the_json_path_of_a_damaged_report(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = json.loads((copy / "report.json").read_text())
    report["fields"][1]["rounds"]["2024"]["soc_total_t"]["upper_90"] = "n/a"
    (copy / "report.json").write_text(json.dumps(report))
    _rehash(copy, "report.json")
    assert main(["report", "build", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "fields[1].rounds.2024.soc_total_t.upper_90 is 'n/a', expected a number" in err
    assert "Traceback" not in err


def test_diff_json_tolerance_and_null_for_nan() -> None:
    assert diff_json({"a": 100.0}, {"a": 100.00005}, "x") is None  # 5e-7 relative
    assert "x.a" in str(diff_json({"a": 100.0}, {"a": 100.0002}, "x"))
    assert diff_json({"a": None}, {"a": float("nan")}, "x") is None  # NaN is stored as null
    assert "missing from the stored file" in str(diff_json({}, {"b": 1.0}, "x"))
    assert "not recomputed" in str(diff_json({"b": 1.0}, {}, "x"))
