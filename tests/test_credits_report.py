"""A run with ESM stocks and re-measured sites: the VM0042 ESM checks pass, credits are in t CO2e on the
design-based change with its design df, and the headline (report.json, HTML, CLI) says whether the change is
significant and what each methodology credits."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from regions import region_config

from mrv.config import load_config
from mrv.pipeline import plan
from mrv.pipeline.layout import RunLayout
from mrv.report.build import build_report
from mrv.synthetic import SceneSpec

pytestmark = pytest.mark.slow

SPEC = SceneSpec(
    seed=21, width_px=120, height_px=120, n_fields=6, n_lab_sites=48, n_crowd=10,
    bd_change_sd_g_cm3=0.1, lab_layers_cm=((0.0, 15.0), (15.0, 30.0), (30.0, 50.0)),
)  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("credits")
    cfg_path, _ = region_config(
        root, SPEC, name="credits", output_dir=root / "run",
        sections={"model": {"cv_block_size_m": 300}, "accounting": {"n_simulations": 100}},
    )  # fmt: skip
    text = cfg_path.read_text() + "stocks:\n  method: esm\n"
    cfg_path.write_text(text)
    cfg = load_config(cfg_path)
    layout = RunLayout(cfg.output_dir)
    plan.run_steps(cfg, layout)
    path = build_report(cfg, layout)
    return path, json.loads(path.read_text())


def test_vm0042_esm_checks_pass(run: tuple[Path, dict[str, Any]]) -> None:
    checks = {c["requirement_id"]: c for c in run[1]["methodology"]["checks"]}
    assert checks["equivalent_soil_mass"]["passed"] is True
    if "esm_two_increments" in checks:
        assert checks["esm_two_increments"]["passed"] is True


def test_credits_are_t_co2e_on_the_design_based_change(run: tuple[Path, dict[str, Any]]) -> None:
    report = run[1]
    change = report["design_based"]["change"]
    proj = change["project"]
    assert change["n_pairs"] >= 0.9 * SPEC.n_lab_sites
    assert proj["co2e"]["unit"] == "t CO2e"
    assert proj["per_ha"]["unit"] == "t C/ha"
    assert proj["total"]["unit"] == "t C"
    assert proj["co2e"]["mean"] == pytest.approx(proj["total"]["mean"] * 44 / 12)
    for d in report["deductions"]:
        assert d["units"] == "t CO2e"
        assert d["estimate"] == pytest.approx(proj["co2e"]["mean"])
        assert d["standard_error"] == pytest.approx(proj["co2e"]["se"])
        assert d["df"] == pytest.approx(proj["df"])  # the design's (Satterthwaite) df, not n_train - 1
        assert d["df"] < change["n_pairs"]
        if d["estimate"] < 0 and d["methodology"] == "verra_vm0042_v2":
            assert d["reported_as"] == "emission"
            assert d["credited"] < d["estimate"]
        elif d["estimate"] > 0:
            assert 0 <= d["credited"] <= d["estimate"]
    assert {f["field_id"] for f in report["fields"]} == set(change["fields"])


def test_headline_says_significance_and_credits(run: tuple[Path, dict[str, Any]]) -> None:
    from mrv.cli import _print_summary

    path, report = run
    html = (path.parent / "report.html").read_text(encoding="utf-8")
    assert "Change significant?" in html
    sig = report["design_based"]["change"]["project"]["significant"]
    assert ("Not significant" in html) is (not sig)
    assert "verra_vm0042_v2" in html
    buf = io.StringIO()
    with redirect_stdout(buf):
        _print_summary(path)
    out = buf.getvalue()
    assert "re-measured sites, design-based" in out
    assert ("NOT significant" in out) is (not sig)
    assert "verra_vm0042_v2 credits" in out or "verra_vm0042_v2 reports an emission" in out
