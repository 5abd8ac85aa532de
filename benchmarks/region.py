"""Benchmark a whole monitoring run on generated regions of growing size: time and memory per stage.

Usage::

    python benchmarks/region.py [--sizes 1,25] [--workdir DIR]   # --sizes 1,25,100: the issue's three sizes

For each size (Mpx, square at 10 m) a seeded synthetic region is generated once (measured in its own
process and printed, not part of the run's table; re-used from ``--workdir``): up to the 1 Mpx base
(1000 x 1000 px) by ``mrv.synthetic.build_region`` (Sentinel-2 L2A COGs in a static STAC catalog, 8
fields, 40 lab sites, two rounds of four scenes), above it as an ``n x n`` replica of the base
(``mrv.synthetic.replicate.replicate_region``: every asset one COG of ``n x n`` base copies written strip
by strip, the items' footprint and ``proj:shape`` updated, the fields repeated in every copy with unique
ids, the lab samples those of the base copy only). So a size above 1 Mpx must be a square number of
Mpx (25 = 5 x 5, 100 = 10 x 10). Then the run's steps execute in the order of the ``regional_monitoring``
flow, each stage in a fresh child process (stages pass files, as the flow's tasks do), measured over
the whole process tree (wall s, CPU s, peak RSS), so each peak is that stage's own:

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

Printed: one row per size and stage (wall s, s per Mpx, CPU s, CPU s per Mpx, peak MB, load), then per
stage the ratio of seconds per Mpx, of CPU seconds per Mpx and of peak MB between the largest and the
smallest region (1.00 = linear time / flat memory). Every region has the base's 40 lab sites per round
(a replica's sites all lie in its base copy), so the samples and model-fitting stages are the same size
everywhere; the pixel stages (imagery, maps) and accounting's Monte Carlo over the fields' pixels grow
with the region (a replica has ``n x n`` times the base's 8 fields). The machine is shared: the 1-minute
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
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the stages' child processes do not import the generators
    from mrv.synthetic import RegionPaths, SceneSpec

REPO = Path(__file__).resolve().parents[1]
STAGES = ("imagery", "samples", "model", "cluster", "maps", "accounting")
MEMORY_TARGET_MB = 1024.0
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # GDAL_CACHEMAX: the product default (mrv.raster)


BASE_SIDE_PX = 1000
"""Side of the base region (1 Mpx) that larger regions replicate."""


def base_spec(side: int = BASE_SIDE_PX) -> SceneSpec:
    """The seeded spec of a generated region of ``side`` x ``side`` px (8 fields, 40 lab sites, 10 crowd)."""
    from mrv.synthetic import SceneSpec

    return SceneSpec(seed=19, width_px=side, height_px=side, n_fields=8, n_lab_sites=40, n_crowd=10)


def copies_for(mpx: float) -> int:
    """Copies per side of the base for a region of ``mpx`` (1 for the base and smaller regions)."""
    n = round(math.sqrt(mpx * 1e6) / BASE_SIDE_PX)
    if mpx * 1e6 <= BASE_SIDE_PX**2:
        return 1
    if n * n * BASE_SIDE_PX**2 != round(mpx * 1e6):
        raise SystemExit(f"--sizes {mpx:g}: above 1 Mpx a region is n x n copies of the 1 Mpx base; "
                         f"use a square number of Mpx such as {n * n} (or {(n + 1) ** 2}).")  # fmt: skip
    return n


def write_config(root: Path, paths: RegionPaths) -> Path:
    """The demo config pointed at a generated region (lab samples only, no AOI cap); returns its path."""
    import yaml

    raw = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    raw["name"] = root.name.replace("_", "-")
    raw["output_dir"] = str(root / "out")
    raw["region"]["fields"] = str(paths.fields)
    raw["imagery"]["catalog"] = str(paths.collection)
    raw["imagery"]["max_aoi_km2"] = 1e6
    for rnd in raw["rounds"]:
        rnd["samples"] = [{"path": str(paths.lab_samples[rnd["name"]]), "source": "lab", "format": "lab_wide"}]
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config


def build(workdir: Path, mpx: float) -> Path:
    """Generate the region (once per size and seed, in this process) and write its run config; returns its path."""
    from mrv.synthetic import build_region
    from mrv.synthetic.replicate import ReplicaSpec, replicate_region

    n = copies_for(mpx)
    side = BASE_SIDE_PX * n if n > 1 else 2 * round(math.sqrt(mpx * 1e6) / 2)  # even: 20 m bands are half a side
    root = workdir / f"region_{side}"
    config = root / "run.yaml"
    if config.is_file():
        return config
    if n == 1:
        paths = build_region(root / "region", base_spec(side), overwrite=True)
    else:
        base = build(workdir, 1.0).parent / "region"
        paths = replicate_region(base, base_spec(), root / "region", ReplicaSpec(n, n), overwrite=True)
    return write_config(root, paths)


def generate(workdir: Path, mpx: float) -> Path:
    """:func:`build` in a child process measured like a stage (printed; re-used from ``workdir`` when there)."""
    done = subprocess.run([sys.executable, __file__, "--build", str(workdir), str(mpx)], capture_output=True,
                          text=True, env=ENV, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"generating the {mpx:g} Mpx region in {workdir} failed:\n{done.stderr[-3000:]}")
    got = json.loads(done.stdout.splitlines()[-1])
    how = "re-used" if got["reused"] else f"{got['how']}: {got['wall_s']:.0f} s wall, {got['cpu_s']:.0f} s CPU, "
    how += "" if got["reused"] else f"peak {got['peak_mb']:.0f} MB, load {got['load']:.2f}"
    print(f"region {mpx:g} Mpx ({got['config']}) {how}; running ...", flush=True)
    return Path(got["config"])


def build_child(workdir: str, mpx: str) -> None:
    """The child of :func:`generate`: build, measured over the process tree, and print one JSON line."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _proctree import TreeMeter

    n = copies_for(float(mpx))
    side = BASE_SIDE_PX * n if n > 1 else 2 * round(math.sqrt(float(mpx) * 1e6) / 2)
    reused = (Path(workdir) / f"region_{side}" / "run.yaml").is_file()
    with TreeMeter() as m:
        config = build(Path(workdir), float(mpx))
    how = f"replica {n} x {n} of the 1 Mpx base" if n > 1 else "build_region"
    print(json.dumps({"config": str(config), "reused": reused, "how": how, **asdict(m.span)}), flush=True)


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


def run_size(config: Path) -> tuple[list[dict[str, float | str]], str | None]:
    """Each stage in its own fresh process (stages pass files), so each peak is that stage's alone.

    Returns the measured rows and, if a stage failed, its name and the end of its stderr (later stages,
    which read its outputs, are then not run).
    """
    rows: list[dict[str, float | str]] = []
    for stage in ("imagery", "samples", "model", "maps", "accounting"):
        done = subprocess.run([sys.executable, __file__, "--child", str(config), stage], capture_output=True,
                              text=True, env=ENV, check=False)  # fmt: skip
        rows += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0:
            return rows, f"stage {stage} of {config} failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
    return rows, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,25", help="region sizes in Mpx (square, 10 m pixels; above 1 a square "
                    "number: 25, 100)")  # fmt: skip
    ap.add_argument("--workdir", type=Path, default=None, help="keep generated regions here (re-used)")
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--build", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.build:
        build_child(*args.build)
        return
    sizes = [float(s) for s in args.sizes.split(",")]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mrv-bench-region-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, float | str]] = []
    try:
        for mpx in sizes:
            copies_for(mpx)  # a wrong size fails before any region is generated
        for mpx in sizes:
            config = generate(workdir, mpx)
            out = config.parent / "out"
            shutil.rmtree(out, ignore_errors=True)
            got, failed = run_size(config)
            for r in got:
                print(f"  {r['stage']:10s} {float(r['wall_s']):8.1f} s  CPU {float(r['cpu_s']):8.1f} s  "
                      f"peak {float(r['peak_mb']):6.0f} MB  load {float(r['load']):.2f}", flush=True)  # fmt: skip
            rows += got
            if failed:
                print(failed, flush=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows)


def print_table(rows: list[dict[str, float | str]]) -> None:
    print(
        f"\n## Whole run per stage, generated regions, {os.cpu_count()} cores (one run each; the machine is shared)\n"
    )
    print("| Mpx | stage | wall s | s per Mpx | CPU s | CPU s per Mpx | peak MB (process tree) | load avg |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        mpx, wall, cpu = float(r["mpx"]), float(r["wall_s"]), float(r["cpu_s"])
        print(f"| {mpx:.3g} | {r['stage']} | {wall:.1f} | {wall / mpx:.2f} | {cpu:.1f} | {cpu / mpx:.2f} | "
              f"{float(r['peak_mb']):.0f} | {float(r['load']):.2f} |")  # fmt: skip
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
