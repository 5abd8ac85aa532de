"""The accounting recomputation of a run directory (:func:`recompute_and_compare`) and `mrv report build`.

A hand-built run directory (maps, CV predictions, accounting, report) without step records: the
whole-run verification (`mrv report verify`, re-derivation link by link) is tested on a real run in
tests/test_verify_bundle.py."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from mrv.accounting.recompute import compare_numbers, recompute_and_compare
from mrv.accounting.simulate import exponential_grf
from mrv.cli import main
from mrv.config import AccountingConfig, ImageryConfig, RegionConfig, RoundConfig, RunConfig
from mrv.errors import VerificationError
from mrv.grid import Grid
from mrv.pipeline.layout import RunLayout
from mrv.pipeline.report_step import GPKG_PATH, _finite, render_outputs
from mrv.pipeline.steps import account, write_json
from mrv.raster import write_cog
from mrv.report.manifest import sha256_file, verify_manifest, write_manifest

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


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with maps, CV predictions, accounting.json, report.json, outputs and a manifest."""
    root = tmp_path_factory.mktemp("verify")
    fields = _fields_geojson(root / "fields.geojson")
    cfg_path = root / "run.yaml"
    cfg_path.write_text("name: verify-test\n")
    run = root / "run"
    layout = RunLayout(run)
    cfg = RunConfig(
        name="verify-test",
        source_path=cfg_path,
        output_dir=run,
        depth_cm=30.0,
        region=RegionConfig(fields=fields, crs=CRS, resolution_m=10.0),
        imagery=ImageryConfig(source="stac", collection="c", url="http://localhost"),
        rounds=tuple(RoundConfig(name=r, start=dt.date(y, 3, 1), end=dt.date(y, 10, 1), samples=()) for r, y in (("2021", 2021), ("2024", 2024))),
        accounting=AccountingConfig(n_simulations=100, seed=3),
    )  # fmt: skip
    grid = Grid(crs=CRS, bounds=(X0, Y0, X0 + 400, Y0 + 400), resolution_m=10.0)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40]
    for k, rnd in enumerate(cfg.rounds):
        paths = layout.round_maps(rnd.name)
        mean = 50.0 + 0.1 * xx + 2 * k + rng.normal(0, 1, (40, 40))
        mean[0, 0] = np.nan  # an unmapped pixel
        for name, arr in (("mean", mean), ("sd", 4.0 + 0.02 * yy)):
            write_cog(paths[name], arr.astype("float32"), grid, band_names=[f"soc_stock_{name}"])
    # Out-of-fold predictions with spatially correlated errors (range 60 m) at 300 points per round.
    g = exponential_grf((40, 40), cell_m=10.0, range_m=60.0, n=2, rng=rng)
    rows = []
    for k, rnd in enumerate(cfg.rounds):
        r, c = rng.integers(0, 40, 300), rng.integers(0, 40, 300)
        z = 0.9 * g[k][r, c] + np.sqrt(0.19) * rng.standard_normal(300)
        rows.append(pd.DataFrame({"x": X0 + 10 * c + 5, "y": Y0 + 400 - 10 * r - 5, "observed": 50 + 5 * z,
                                  "predicted": 50.0, "lower": 50 - 8.22, "upper": 50 + 8.22, "round": rnd.name}))  # fmt: skip
    layout.model_dir.mkdir(parents=True)
    oof = pd.concat(rows, ignore_index=True)
    oof.drop(columns="round").to_csv(layout.model_dir / "cv_predictions.csv", index=False)
    oof.rename(columns={"observed": "soc_stock_t_ha"})[["x", "y", "soc_stock_t_ha", "round"]].to_csv(
        layout.model_dir / "features.csv", index=False
    )
    account(cfg, layout)
    acc = json.loads(layout.accounting.read_text())
    report = {
        "run": {"name": cfg.name, "created_utc": "2024-11-01T00:00:00Z", "fields": str(fields), "crs": CRS,
                "rounds": ["2021", "2024"], "latest_round": "2024", "baseline_round": "2021", "depth_cm": 30},
        "project": acc["project"],
        "fields": acc["fields"],
        "uncertainty": {k: acc[k] for k in ("error_range_m", "error_range_source", "error_model")},
    }  # fmt: skip
    write_json(run / "report.json", _finite(report))
    html, gpkg, pdf = render_outputs(run)
    write_manifest(
        run,
        inputs={"fields": fields},
        config=cfg_path,
        outputs=[run / "maps", run / "model", layout.accounting, run / "report.json", html, gpkg, pdf],
    )
    return run


@pytest.fixture
def copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the run directory together with its inputs (the manifest records them relative to it)."""
    shutil.copytree(run_dir.parent, tmp_path / "copy")
    return tmp_path / "copy" / "run"


def _rehash(run: Path, rel: str) -> None:
    """Pretend the tampering also rewrote the manifest, so only the recomputation can catch it."""
    manifest = json.loads((run / "manifest.json").read_text())
    for e in manifest["outputs"]:
        if e["path"] == rel:
            e["sha256"] = sha256_file(run / rel)
    (run / "manifest.json").write_text(json.dumps(manifest))


def test_accounting_records_fitted_variogram_and_settings(run_dir: Path) -> None:
    acc = json.loads((run_dir / "accounting.json").read_text())
    vario = acc["error_model"]["variogram"]
    assert acc["error_range_source"] == "fitted"
    assert acc["error_range_m"] == vario["range_m"] == acc["settings"]["error_range_m"]
    assert 20 < vario["range_m"] < 200  # the CV errors were simulated with a = 60 m
    assert acc["round_error_correlation_source"] == "configured"
    assert acc["settings"]["round_error_correlation"] == 0.0
    assert acc["inputs"]["maps"]["2024"]["mean"] == "maps/2024/soc_stock_mean.tif"


def test_untouched_run_matches_manifest_and_recomputation(run_dir: Path) -> None:
    assert verify_manifest(run_dir).ok
    assert recompute_and_compare(run_dir) > 20


def test_tampered_map_byte_fails_naming_the_file(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tif = copy / "maps" / "2024" / "soc_stock_mean.tif"
    data = bytearray(tif.read_bytes())
    data[-10] ^= 0xFF
    tif.write_bytes(bytes(data))
    assert main(["report", "verify", str(copy)]) == 2
    assert "maps/2024/soc_stock_mean.tif: sha256 mismatch" in capsys.readouterr().err


def test_tampered_report_number_fails_naming_it(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = json.loads((copy / "report.json").read_text())
    report["fields"][1]["rounds"]["2024"]["soc_total_t"]["upper_90"] *= 1.00001  # 1e-5 relative
    (copy / "report.json").write_text(json.dumps(report))
    assert main(["report", "verify", str(copy)]) == 2
    assert "report.json: sha256 mismatch" in capsys.readouterr().err
    _rehash(copy, "report.json")
    with pytest.raises(VerificationError, match=r"fields\[F2\]\.rounds\.2024\.soc_total_t\.upper_90: report\.json says"):
        recompute_and_compare(copy)


def test_tampered_map_value_with_rehashed_manifest_fails_on_recompute(copy: Path) -> None:
    import rasterio

    tif = copy / "maps" / "2021" / "soc_stock_sd.tif"
    with rasterio.open(tif) as src:
        profile, arr = src.profile, src.read()
    arr[0, 20:, :20] *= 1.5  # wider errors in the south-west: field F1's interval must change
    with rasterio.open(tif, "w", **profile) as dst:
        dst.write(arr)
    _rehash(copy, "maps/2021/soc_stock_sd.tif")
    with pytest.raises(VerificationError, match=r"fields\[F1\]\.rounds\.2021\.soc_stock_t_ha\.lower_90"):
        recompute_and_compare(copy)


def test_tampered_variogram_in_accounting_fails(copy: Path) -> None:
    acc = json.loads((copy / "accounting.json").read_text())
    acc["error_model"]["variogram"]["range_m"] *= 2
    (copy / "accounting.json").write_text(json.dumps(acc))
    with pytest.raises(VerificationError, match=r"error_model\.variogram\.range_m"):
        recompute_and_compare(copy)


def test_compare_numbers_tolerance() -> None:
    assert compare_numbers({"a": 100.0}, {"a": 100.00005}, label="x") is None  # 5e-7 relative
    assert "x.a" in str(compare_numbers({"a": 100.0}, {"a": 100.0002}, label="x"))
    assert compare_numbers({"a": None}, {"a": float("nan")}, label="x") is None  # NaN is stored as null
    assert "missing" in str(compare_numbers({}, {"b": 1.0}, label="x"))


def test_build_rerenders_html_and_gpkg_and_verify_still_passes(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (copy / "report.html").unlink()
    (copy / GPKG_PATH).unlink()
    assert main(["report", "build", str(copy)]) == 0
    assert (copy / "report.html").is_file()
    assert (copy / GPKG_PATH).is_file()
    html = (copy / "report.html").read_text()
    assert "North &lt;A&gt;" in html
    assert "North <A>" not in html
    assert verify_manifest(copy).ok
    assert recompute_and_compare(copy) > 20


def test_build_refuses_a_tampered_report(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = json.loads((copy / "report.json").read_text())
    report["project"]["soc_stock_t_ha"]["mean"] += 1
    (copy / "report.json").write_text(json.dumps(report))
    assert main(["report", "build", str(copy)]) == 2
    assert "does not match its SHA-256 in manifest.json" in capsys.readouterr().err
