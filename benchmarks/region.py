"""Benchmark a whole monitoring run on generated regions of growing size: time and memory per stage.

Usage::

    python benchmarks/region.py [--sizes 1,25] [--workdir DIR]   # --sizes 1,25,100 on request (hours)

For each size (Mpx, square at 10 m) a seeded synthetic region (``mrv.synthetic.build_region``:
Sentinel-2 L2A COGs in a static STAC catalog, fields, lab samples, two rounds) is generated once
(not timed), then the run's steps execute in the order of the ``regional_monitoring`` flow, each
stage in a fresh child process (stages pass files, as the flow's tasks do), measured over the whole
process tree (wall s, CPU s, peak RSS), so each peak is that stage's own:

``imagery``    every round's tiles composited (``imagery.run_tile``, ``imagery.tile_px`` 2048)
               and mosaicked into the covariate stack (``imagery.run_mosaic``)
``samples``    ``samples.run_samples`` per round
``model``      ``model.run_fit`` (QRF, spatial CV, conformal calibration)
``cluster``    ``mrv.dask_cluster.dask_client`` opened once for the run
``maps``       ``model.run_predict`` per round (six COGs each)
``accounting`` ``accounting.run_account`` (Monte Carlo field and project totals, change)

Every step goes through the step cache (``mrv.pipeline.cache.run_cached``: input hashing, staging
directory, step record), as in the flow; the run directory is emptied before each size, so nothing
is skipped.

Printed: one row per size and stage, then per stage the ratio of seconds per Mpx and of peak MB
between the largest and the smallest region (1.00 = linear time / flat memory). Synthetic regions
have 8 fields and 40 lab sites per round whatever their size, so the model and accounting stages
are the same size everywhere and only the pixel stages grow. The machine is shared: the 1-minute
load average is printed with every row.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("imagery", "samples", "model", "cluster", "maps", "accounting")
MEMORY_TARGET_MB = 1024.0


def build(workdir: Path, mpx: float) -> Path:
    """Generate the region (once per size and seed) and write its run config; returns the config path."""
    import yaml

    from mrv.synthetic import SceneSpec, build_region

    side = 2 * round(math.sqrt(mpx * 1e6) / 2)  # even: the 20 m bands have half the pixels per side
    root = workdir / f"region_{side}"
    config = root / "run.yaml"
    if config.is_file():
        return config
    spec = SceneSpec(seed=19, width_px=side, height_px=side, n_fields=8, n_lab_sites=40, n_crowd=10)
    paths = build_region(root / "region", spec, overwrite=True)
    raw = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    raw["name"] = f"region-{side}"
    raw["output_dir"] = str(root / "out")
    raw["region"]["fields"] = str(paths.fields)
    raw["imagery"]["catalog"] = str(paths.collection)
    raw["imagery"]["max_aoi_km2"] = 1e6
    for rnd in raw["rounds"]:
        rnd["samples"] = [{"path": str(paths.lab_samples[rnd["name"]]), "source": "lab", "format": "lab_wide"}]
    config.write_text(yaml.safe_dump(raw))
    return config


def child(config: str, stage: str) -> None:
    """Run one stage of one region in this (fresh) process and print its measurement as one JSON line."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _proctree import TreeMeter

    from mrv.config import load_config
    from mrv.dask_cluster import dask_client
    from mrv.pipeline import accounting, imagery, model, samples
    from mrv.pipeline.layout import RunLayout

    cfg = load_config(config)
    layout = RunLayout(cfg.output_dir.resolve())
    grid = imagery.project_grid(cfg)

    def emit(name: str, meter: TreeMeter) -> None:
        print(json.dumps({"stage": name, "mpx": grid.width * grid.height / 1e6, **asdict(meter.span)}), flush=True)

    if stage == "imagery":
        with TreeMeter() as m:
            for rnd in cfg.rounds:
                for tile in imagery.imagery_tiles(cfg, grid):
                    imagery.run_tile(cfg, rnd, layout, tile, grid=grid)
                imagery.run_mosaic(cfg, rnd, layout)
        emit("imagery", m)
    elif stage == "samples":
        with TreeMeter() as m:
            for rnd in cfg.rounds:
                samples.run_samples(cfg, rnd, layout)
        emit("samples", m)
    elif stage == "model":
        with TreeMeter() as m:
            model.run_fit(cfg, layout)
        emit("model", m)
    elif stage == "maps":  # the cluster is opened once for all rounds, as in the flow's predict-maps task
        with TreeMeter() as m:
            cm = dask_client(cfg.dask)
            client = cm.__enter__()
        emit("cluster", m)
        try:
            with TreeMeter() as m:
                for rnd in cfg.rounds:
                    model.run_predict(cfg, rnd, layout, client=client)
            emit("maps", m)
        finally:
            cm.__exit__(None, None, None)
    elif stage == "accounting":
        with TreeMeter() as m:
            accounting.run_account(cfg, layout)
        emit("accounting", m)


def run_size(config: Path) -> list[dict[str, float | str]]:
    """Each stage in its own fresh process (stages pass files), so each peak is that stage's alone."""
    env = {**os.environ, "GDAL_CACHEMAX": "256", "OMP_NUM_THREADS": "1"}
    rows: list[dict[str, float | str]] = []
    for stage in ("imagery", "samples", "model", "maps", "accounting"):
        done = subprocess.run([sys.executable, __file__, "--child", str(config), stage], capture_output=True,
                              text=True, env=env, check=False)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"stage {stage} of {config} failed:\n{done.stderr[-3000:]}")
        rows += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,25", help="region sizes in Mpx (square, 10 m pixels); 100 on request")
    ap.add_argument("--workdir", type=Path, default=None, help="keep generated regions here (re-used)")
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    sizes = [float(s) for s in args.sizes.split(",")]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mrv-bench-region-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, float | str]] = []
    try:
        for mpx in sizes:
            t0 = time.perf_counter()
            config = build(workdir, mpx)
            print(f"region {mpx:g} Mpx generated in {time.perf_counter() - t0:.0f} s; running ...", flush=True)
            out = config.parent / "out"
            shutil.rmtree(out, ignore_errors=True)
            got = run_size(config)
            for r in got:
                print(f"  {r['stage']:10s} {float(r['wall_s']):8.1f} s  CPU {float(r['cpu_s']):8.1f} s  "
                      f"peak {float(r['peak_mb']):6.0f} MB  load {float(r['load']):.2f}", flush=True)  # fmt: skip
            rows += got
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows)


def print_table(rows: list[dict[str, float | str]]) -> None:
    print(f"\n## Whole run per stage, generated regions, {os.cpu_count()} cores (one run each; the machine is shared)\n")
    print("| Mpx | stage | wall s | s per Mpx | CPU s | peak MB (process tree) | load avg |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        mpx = float(r["mpx"])
        print(f"| {mpx:.3g} | {r['stage']} | {float(r['wall_s']):.1f} | {float(r['wall_s']) / mpx:.2f} | "
              f"{float(r['cpu_s']):.1f} | {float(r['peak_mb']):.0f} | {float(r['load']):.2f} |")  # fmt: skip
    sizes = sorted({float(r["mpx"]) for r in rows})
    if len(sizes) < 2:
        return
    lo, hi = sizes[0], sizes[-1]
    by = {(float(r["mpx"]), str(r["stage"])): r for r in rows}
    print(f"\nlargest ({hi:.3g} Mpx) / smallest ({lo:.3g} Mpx): s per Mpx ratio (1.00 = linear), "
          f"CPU s per Mpx ratio, peak MB ratio (1.00 = flat)")  # fmt: skip
    peak = max(float(r["peak_mb"]) for r in rows)
    for stage in STAGES:
        a, b = by.get((lo, stage)), by.get((hi, stage))
        if a is None or b is None:
            continue
        t = (float(b["wall_s"]) / hi) / max(float(a["wall_s"]) / lo, 1e-9)
        c = (float(b["cpu_s"]) / hi) / max(float(a["cpu_s"]) / lo, 1e-9)
        mem = float(b["peak_mb"]) / max(float(a["peak_mb"]), 1e-9)
        print(f"  {stage:10s} time {t:5.2f}  CPU {c:5.2f}  memory {mem:5.2f}")
    print(f"peak of the whole process tree over all stages and sizes: {peak:.0f} MB -> target < {MEMORY_TARGET_MB:.0f} MB "
          f"{'MET' if peak < MEMORY_TARGET_MB else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
