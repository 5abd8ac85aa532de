"""Typical run-config mistakes end in one message naming the key or file, exit 2, no traceback, before any work.

Each case edits the demo config (paths made absolute) and runs ``mrv validate`` through the CLI's
``main``; a few also go through ``mrv run`` in a subprocess, which must stop before Prefect or Dask start.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mrv.cli import main
from mrv.config import load_config
from mrv.config_schema import run_config_schema

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"

Edit = Callable[[dict[str, Any], Path], None]


def _demo(tmp: Path) -> dict[str, Any]:
    cfg = yaml.safe_load(DEMO.read_text())
    base = DEMO.parent
    cfg["output_dir"] = str(tmp / "out")
    cfg["region"]["fields"] = str((base / cfg["region"]["fields"]).resolve())
    cfg["imagery"]["catalog"] = str((base / cfg["imagery"]["catalog"]).resolve())
    for rnd in cfg["rounds"]:
        rnd["start"], rnd["end"] = str(rnd["start"]), str(rnd["end"])
        for s in rnd["samples"]:
            s["path"] = str((base / s["path"]).resolve())
    return cfg


def _write(tmp: Path, cfg: dict[str, Any], text: str | None = None) -> Path:
    path = tmp / "run.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def _set(*keys: str | int, value: Any) -> Edit:
    def edit(cfg: dict[str, Any], tmp: Path) -> None:
        target: Any = cfg
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return edit


def _bad_header(cfg: dict[str, Any], tmp: Path) -> None:
    src = Path(cfg["rounds"][0]["samples"][0]["path"])
    lines = src.read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0].replace("soc_g_kg", "soc_gkg")
    bad = tmp / "lab_renamed.csv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg["rounds"][0]["samples"][0]["path"] = str(bad)


def _swap_rounds(cfg: dict[str, Any], tmp: Path) -> None:
    cfg["rounds"].reverse()


def _sentinelhub(cfg: dict[str, Any], tmp: Path) -> None:
    cfg["imagery"] = {"source": "sentinelhub", "collection": "sentinel-2-l2a"}


def _stac(provider: str) -> Edit:
    def edit(cfg: dict[str, Any], tmp: Path) -> None:
        cfg["imagery"] = {"source": "stac", "provider": provider, "collection": "sentinel-2-c1-l2a"}

    return edit


def _unknown_key(cfg: dict[str, Any], tmp: Path) -> None:
    cfg["model"]["n_estimator"] = cfg["model"].pop("n_estimators")


def _unwritable_out(cfg: dict[str, Any], tmp: Path) -> None:
    (tmp / "a-file").write_text("")
    cfg["output_dir"] = str(tmp / "a-file" / "out")


CASES: dict[str, tuple[Edit, str]] = {
    "month 13": (_set("rounds", 0, "start", value="2024-13-01"), "rounds[0].start"),
    "end before start": (_set("rounds", 0, "end", value="2021-01-01"), "rounds[0]: end 2021-01-01 is before start"),
    "before Sentinel-2": (_set("rounds", 0, value={"name": "r", "start": "2013-03-01", "end": "2013-10-31", "samples": []}),
                          "before the first Sentinel-2"),
    "geographic CRS": (_set("region", "crs", value="EPSG:4326"), "geographic (degrees)"),
    "CRS in US feet": (_set("region", "crs", value="EPSG:2263"), "not metres"),
    "geocentric CRS": (_set("region", "crs", value="EPSG:4978"), "geocentric"),
    "CRS not EPSG": (_set("region", "crs", value="foo"), "region.crs must be an EPSG code"),
    "unknown EPSG": (_set("region", "crs", value="EPSG:99999"), "is not a known CRS"),
    "fractional EPSG": (_set("region", "crs", value="EPSG:32633.9"), "region.crs must be an EPSG code"),
    "1 cm pixels": (_set("region", "resolution_m", value=0.01), "region.resolution_m"),
    "run too large": (_set("imagery", "max_run_gb", value=0.001), "over imagery.max_run_gb"),
    "negative Monte Carlo draws": (_set("accounting", "n_simulations", value=-5), "accounting.n_simulations"),
    "no workers": (_set("dask", "n_workers", value=0), "dask.n_workers"),
    "model registry under a file": (_set("model", "registry_dir", value="/etc/hostname/models"), "model.registry_dir"),
    "provider typo": (_stac("earth_serch"), "Unknown provider profile 'earth_serch'"),
    "methodology typo": (_set("accounting", "methodology", value="verra_vm0042"), "verra_vm0042"),
    "format typo": (_set("rounds", 0, "samples", 0, "format", value="lab_wid"), "'lab_wid'"),
    "missing sample CSV": (_set("rounds", 0, "samples", 0, "path", value="/nonexistent/lab.csv"), "rounds[0].samples[0].path"),
    "sample CSV is a directory": (_set("rounds", 0, "samples", 0, "path", value="/tmp"), "not a regular file"),
    "renamed SOC column": (_bad_header, "lacks column(s) 'soc_g_kg' (columns.soc)"),
    "missing fields file": (_set("region", "fields", value="/nonexistent/fields.geojson"), "region.fields"),
    "missing catalog": (_set("imagery", "catalog", value="/nonexistent/collection.json"), "imagery.catalog"),
    "sentinelhub without credentials": (_sentinelhub, "SH_CLIENT_ID and SH_CLIENT_SECRET"),
    "unknown section": (_unknown_key, "model: unknown key(s) ['n_estimator']"),
    "round name escapes the run directory": (_set("rounds", 0, "name", value="../../../../tmp/x"), "rounds[0].name"),
    "rounds out of order": (_swap_rounds, "chronological order"),
    "unknown source": (_set("rounds", 0, "samples", 0, "source", value="farmer"), "source must be 'lab' or 'crowd'"),
    "output not writable": (_unwritable_out, "output_dir"),
}


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SH_CLIENT_ID", raising=False)
    monkeypatch.delenv("SH_CLIENT_SECRET", raising=False)
    monkeypatch.setenv("SH_CONFIG_HOME", str(tmp_path / "no-sentinelhub-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_mistake_gives_one_message(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit, expected = CASES[case]
    cfg = _demo(tmp_path)
    edit(cfg, tmp_path)
    path = _write(tmp_path, cfg)
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ")
    assert "Traceback" not in err
    assert expected in err, err


def test_yaml_syntax_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, {}, text="name: demo\nregion: [unclosed\n")
    assert main(["validate", str(path)]) == 2
    assert "is not valid YAML" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "Cannot read config file" in capsys.readouterr().err
    path.write_bytes(b"name: d\xe9mo\n")
    assert main(["validate", str(path)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_several_problems_listed_in_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _demo(tmp_path)
    cfg["region"]["fields"] = "/nonexistent/fields.geojson"
    cfg["rounds"][1]["samples"][0]["path"] = "/nonexistent/lab_2024.csv"
    assert main(["validate", str(_write(tmp_path, cfg))]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err
    assert "region.fields" in err
    assert "rounds[1].samples[0].path" in err


def test_valid_config_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(_write(tmp_path, _demo(tmp_path)))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: ")
    assert "2 round(s), 3 sample file(s)" in out
    assert "EPSG:32633" in out


@pytest.mark.parametrize("case", ["missing sample CSV", "CRS in US feet", "provider typo"])
def test_mrv_run_stops_before_any_work(case: str, tmp_path: Path) -> None:
    """``mrv run`` validates first: the message comes alone, without Prefect or Dask output."""
    edit, expected = CASES[case]
    cfg = _demo(tmp_path)
    edit(cfg, tmp_path)
    path = _write(tmp_path, cfg)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect")}
    proc = subprocess.run(
        [sys.executable, "-m", "mrv.cli", "run", str(path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "prefect" not in proc.stderr.lower()
    assert proc.stdout == ""
    assert proc.stderr.count("\n") <= 3
    assert not (tmp_path / "prefect").exists()
    assert not (tmp_path / "out").exists()


def test_schema_describes_the_demo_config() -> None:
    """The published JSON Schema accepts the shipped config and refuses what the loader refuses."""
    import jsonschema

    schema = run_config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    demo = yaml.safe_load(DEMO.read_text())
    for rnd in demo["rounds"]:
        rnd["start"], rnd["end"] = str(rnd["start"]), str(rnd["end"])
    assert list(validator.iter_errors(demo)) == []
    typo = copy.deepcopy(demo)
    typo["model"]["n_estimator"] = 100
    assert any("n_estimator" in e.message for e in validator.iter_errors(typo))
    wrong = copy.deepcopy(demo)
    wrong["model"]["kind"] = "svm"
    assert list(validator.iter_errors(wrong))
    assert schema["properties"]["samples"]["properties"]["outliers"]["properties"]["radius_m"]["default"] == 500.0
    assert "bare-soil" in json.dumps(schema["properties"]["imagery"]["properties"]["bare_soil"]).lower()
    load_config(DEMO)  # and the loader agrees


def test_schema_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "schema.json"
    assert main(["config", "schema", "-o", str(out)]) == 0
    assert json.loads(out.read_text()) == run_config_schema()
