"""Benchmark the imagery step tile by tile against the whole region at once.

Usage::

    python benchmarks/tiled_imagery.py [--sizes 500,1000] [--tile 256] [--workdir DIR]

For each square scene size (pixels at 10 m) a seeded synthetic region is generated once, then
``mrv.pipeline.imagery.run_round`` (every tile, then the mosaic, through the step cache) runs in a
fresh child process per mode, into an emptied run directory, so each peak RSS (``ru_maxrss``) is
that mode's alone and no step is skipped:

``whole``  ``imagery.tile_px`` larger than the scene: one tile, the previous behaviour (the whole
           covariate stack is computed in memory, then written).
``tiled``  ``imagery.tile_px = --tile``: tiles composited one after another and mosaicked into the
           same COG (``mrv.raster.mosaic_to_cog``).

Printed per size: wall time, peak RSS and megapixels/s of each mode, and the tiled/whole ratios.
The tiled peak should stay flat as the scene grows while the whole-scene peak grows with it.

Both children run with ``GDAL_CACHEMAX=256`` (MB): GDAL's block cache otherwise grows to 5 % of RAM
while the COGs are written (1.2 GB on a 24 GB machine) in either mode and hides the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(config: str, tile_px: int, out: str) -> None:
    from mrv.config import load_config
    from mrv.pipeline import imagery
    from mrv.pipeline.layout import RunLayout

    cfg = load_config(config)
    cfg = replace(cfg, imagery=replace(cfg.imagery, tile_px=tile_px))
    grid = imagery.project_grid(cfg)
    t0 = time.perf_counter()
    imagery.run_round(cfg, cfg.rounds[0], RunLayout(Path(out)))
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tiles = len(imagery.imagery_tiles(cfg, grid))
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "pixels": grid.width * grid.height, "tiles": tiles}))


def region(workdir: Path, size: int) -> Path:
    import yaml

    from mrv.synthetic import SceneSpec, build_region

    root = workdir / f"scene_{size}"
    config = root / "run.yaml"
    if config.is_file():
        return config
    spec = SceneSpec(seed=11, width_px=size, height_px=size, n_fields=8, n_lab_sites=40, n_crowd=10)
    paths = build_region(root / "region", spec, overwrite=True)
    raw = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    raw["region"]["fields"] = str(paths.fields)
    raw["imagery"]["catalog"] = str(paths.collection)
    for rnd in raw["rounds"]:
        rnd["samples"] = [{"path": str(paths.lab_samples[rnd["name"]]), "source": "lab", "format": "lab_wide"}]
    config.write_text(yaml.safe_dump(raw))
    return config


def measure(config: Path, tile_px: int, out: Path) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)  # a kept run directory would let the step cache skip the work
    cmd = [sys.executable, __file__, "--child", str(config), str(tile_px), str(out)]
    env = {**os.environ, "GDAL_CACHEMAX": "256"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="500,1000")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--workdir", type=Path, default=None, help="keep generated scenes here (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        print(f"{'scene px':>9} {'grid Mpx':>8} | {'whole s':>8} {'peak MB':>8} {'Mpx/s':>6} | "
              f"{'tiles':>5} {'tiled s':>8} {'peak MB':>8} {'Mpx/s':>6} | {'time x':>6} {'memory x':>8}")  # fmt: skip
        for size in (int(s) for s in args.sizes.split(",")):
            config = region(workdir, size)
            whole = measure(config, 1_000_000, workdir / f"out_whole_{size}")
            tiled = measure(config, args.tile, workdir / f"out_tiled_{size}")
            mpx = whole["pixels"] / 1e6
            print(
                f"{size:>9} {mpx:>8.2f} | {whole['seconds']:>8.1f} {whole['peak_mb']:>8.0f} {mpx / whole['seconds']:>6.2f} | "
                f"{tiled['tiles']:>5.0f} {tiled['seconds']:>8.1f} {tiled['peak_mb']:>8.0f} {mpx / tiled['seconds']:>6.2f} | "
                f"{tiled['seconds'] / whole['seconds']:>6.2f} {tiled['peak_mb'] / whole['peak_mb']:>8.2f}"
            )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
