"""Every round of a run is predicted on one Dask client (issue 19: fixed costs paid once).

Regression: with a fixed ``map_blocks`` name and graph optimisation, the second round's fused keys
collided with the first round's released ones and the scheduler raised ``KeyError``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from regions import region_config

from mrv.config import load_config
from mrv.dask_cluster import dask_client
from mrv.pipeline import model, plan
from mrv.pipeline.layout import RunLayout
from mrv.raster import read_raster
from mrv.synthetic import SceneSpec


def test_rounds_share_one_client_and_match_the_threaded_scheduler(tmp_path: Path) -> None:
    spec = SceneSpec(seed=7, width_px=120, height_px=120, n_fields=4, n_lab_sites=40, n_crowd=10)
    sections = {"imagery": {"tile_px": 48, "chunk_px": 48}, "model": {"n_estimators": 40}, "dask": {"n_workers": 1}}
    cfg = load_config(region_config(tmp_path, spec, name="one", output_dir=tmp_path / "run", sections=sections)[0])
    layout = RunLayout(cfg.output_dir.resolve())
    plan.run_steps(cfg, layout, until="model")
    with dask_client(cfg.dask) as client:
        for rnd in cfg.rounds:
            assert model.run_predict(cfg, rnd, layout, client=client)[1]
    for rnd in cfg.rounds:  # the same maps without a client (threads): per-pixel results do not depend on Dask
        scratch = layout.placed(model.predict_spec(cfg, rnd, layout).place, tmp_path / f"threads-{rnd.name}")
        (tmp_path / f"threads-{rnd.name}").mkdir()
        model.predict_round(cfg, rnd, scratch)
        for kind, path in layout.round_maps(rnd.name).items():
            a, b = read_raster(path)[0], read_raster(scratch.round_maps(rnd.name)[kind])[0]
            np.testing.assert_array_equal(a, b, err_msg=f"{rnd.name} {kind}")
