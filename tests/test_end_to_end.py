"""The whole regional monitoring flow on a small generated scene, through Prefect and Dask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from regions import region_config

from mrv.pipeline.layout import RunLayout
from mrv.raster import read_raster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory: pytest.TempPathFactory):
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory, prefect_env: None) -> Path:
    from flows.regional_monitoring import regional_monitoring
    from mrv.synthetic import SceneSpec

    root = tmp_path_factory.mktemp("e2e")
    spec = SceneSpec(seed=7, width_px=200, height_px=200, n_fields=9, n_lab_sites=120, n_crowd=30)
    cfg_path, _ = region_config(
        root,
        spec,
        name="e2e",
        output_dir=root / "run",
        sections={"model": {"n_estimators": 100}, "accounting": {"n_simulations": 200}, "dask": {"n_workers": 1}},
    )
    report = regional_monitoring(str(cfg_path))
    assert Path(report).is_file()
    return root


def test_report_has_fields_with_intervals(small_run: Path) -> None:
    report = json.loads((small_run / "run" / "report.json").read_text())
    proj = report["project"]["soc_stock_t_ha"]
    assert proj["lower_90"] < proj["mean"] < proj["upper_90"]
    assert len(report["fields"]) > 0
    for f in report["fields"]:
        s = f["soc_stock_t_ha"]
        assert s["lower_90"] <= s["mean"] <= s["upper_90"]
    assert "co2e_t" in report["project"]["change"]
    # the latest round's maps, as the report and index.json name them (inside the round's keyed maps directory)
    index = json.loads((small_run / "run" / "index.json").read_text())
    assert index["latest_round"] == "2024"
    assert report["maps"] == index["latest_maps"]
    latest = RunLayout(small_run / "run").round_maps("2024")
    for name in ("mean", "p05", "p50", "p95", "sd", "width90"):
        assert report["maps"][name] == latest[name].relative_to(small_run / "run").as_posix()
        assert (small_run / "run" / report["maps"][name]).is_file()
    assert (small_run / "run" / "report.html").is_file()
    assert (small_run / "run" / "manifest.json").is_file()


def test_model_beats_mean_only_baseline(small_run: Path) -> None:
    cv = json.loads((small_run / "run" / "report.json").read_text())["model"]["cv"]
    assert cv["rmse"] < 0.85 * cv["baseline_rmse"]


def test_intervals_cover_held_out_truth(small_run: Path) -> None:
    truth_full, tgrid, _ = read_raster(small_run / "region" / "truth" / "soc_stock_0_30cm_2024.tif")
    maps = json.loads((small_run / "run" / "report.json").read_text())["maps"]  # the latest round's (2024)
    p05, grid, _ = read_raster(small_run / "run" / maps["p05"])
    p95, _, _ = read_raster(small_run / "run" / maps["p95"])
    # The run grid covers the fields' bounding box: cut the same window out of the truth grid.
    col0 = round((grid.bounds[0] - tgrid.bounds[0]) / grid.resolution_m)
    row0 = round((tgrid.bounds[3] - grid.bounds[3]) / grid.resolution_m)
    truth = truth_full[:, row0 : row0 + grid.height, col0 : col0 + grid.width]
    ok = np.isfinite(p05[0]) & np.isfinite(truth[0])
    rng = np.random.default_rng(0)
    idx = rng.choice(np.flatnonzero(ok), size=2000, replace=False)
    t, lo, hi = truth[0].ravel()[idx], p05[0].ravel()[idx], p95[0].ravel()[idx]
    coverage = float(np.mean((t >= lo) & (t <= hi)))
    assert 0.80 <= coverage <= 0.99, coverage


def test_python_api_opens_the_run(small_run: Path) -> None:
    """``mrv.open_run`` gives the report and CRS-aware maps equal to the COGs."""
    import mrv

    result = mrv.open_run(small_run / "run")
    assert result.rounds == ["2021", "2024"]
    assert result.project["soc_stock_t_ha"]["mean"] > 0
    arr = result.map("p95", round="2024")
    assert arr.odc.crs.epsg == 32633
    assert arr.attrs["units"] == "t C/ha"
    values, grid, _ = read_raster(RunLayout(small_run / "run").round_maps("2024")["p95"])
    np.testing.assert_array_equal(arr.values, values[0])
    assert float(arr.x[0]) == pytest.approx(grid.bounds[0] + grid.resolution_m / 2)
    from mrv.errors import ConfigError

    with pytest.raises(ConfigError, match="No map 'p99'"):
        result.map("p99")
