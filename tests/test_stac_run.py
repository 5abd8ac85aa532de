"""``mrv run`` with ``imagery.source: stac`` end to end, against a real STAC API on 127.0.0.1.

The generated region's items are served by ``rustac serve``; the same region is also run with
``imagery.source: local`` over its static catalog. Both runs are ``mrv run`` subprocesses (the CLI
a user types) on the session's Prefect test server; the covariate stacks must agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from regions import finish_mrv_run, region_config, run_env, start_mrv_run
from stac_server import catalog_api_inputs, rustac_executable, rustac_serve

from mrv.pipeline.layout import RunLayout
from mrv.raster import read_raster
from mrv.synthetic import SceneSpec

pytestmark = pytest.mark.slow

if rustac_executable() is None:
    pytest.skip("rustac CLI not installed (pip install rustac)", allow_module_level=True)


def test_mrv_run_with_stac_source_matches_local_catalog(tmp_path: Path, prefect_api: str) -> None:
    spec = SceneSpec(seed=5, width_px=96, height_px=96, n_fields=4, n_lab_sites=40, n_crowd=10)
    sections = {"model": {"n_estimators": 30}, "accounting": {"n_simulations": 100}, "dask": {"n_workers": 1}}
    local_cfg, region = region_config(tmp_path, spec, name="local", output_dir=tmp_path / "unused", sections=sections)
    env = run_env(tmp_path, prefect_api)
    hrefs = catalog_api_inputs(region.collection, tmp_path / "api")
    collection_id = json.loads(region.collection.read_text())["id"]
    local, stac = RunLayout(tmp_path / "run_local"), RunLayout(tmp_path / "run_stac")
    # Both runs at once (2 cores; much of a small run is start-up): the local one needs no server.
    local_run = start_mrv_run(local_cfg, local.root, env, tmp_path / "local_run.log")
    try:
        with rustac_serve(hrefs, log_path=tmp_path / "rustac.log") as url:
            cfg = yaml.safe_load(local_cfg.read_text())
            imagery = {k: v for k, v in cfg["imagery"].items() if k != "catalog"}
            cfg["imagery"] = imagery | {"source": "stac", "url": url, "collection": collection_id}
            cfg["name"] = "stac"
            stac_cfg = tmp_path / "stac.yaml"
            stac_cfg.write_text(yaml.safe_dump(cfg))
            finish_mrv_run(start_mrv_run(stac_cfg, stac.root, env, tmp_path / "stac_run.log"), "imagery.source: stac")
    finally:
        finish_mrv_run(local_run, "imagery.source: local")

    report = json.loads((stac.root / "report.json").read_text())
    assert report["project"]["soc_stock_t_ha"]["mean"] > 0
    assert (stac.root / "report.html").is_file()
    rounds = [r["name"] for r in cfg["rounds"]]
    assert len(rounds) == 2
    for name in rounds:
        summary = json.loads(stac.imagery_summary(name).read_text())
        assert summary["source"] == "stac-api", summary
        assert summary["items"], summary
        assert summary["items"] == json.loads(local.imagery_summary(name).read_text())["items"]
        via_api, grid_api, names_api = read_raster(stac.covariates(name))
        via_local, grid_local, names_local = read_raster(local.covariates(name))
        assert names_api == names_local
        assert grid_api == grid_local
        assert np.isfinite(via_api).any()
        np.testing.assert_allclose(via_api, via_local, rtol=1e-6, atol=1e-7, equal_nan=True)
