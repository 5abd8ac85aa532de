"""Benchmark SOC map prediction (mean + 90 % interval) against the tools people use today, in one run.

Usage::

    python benchmarks/predict.py [--mpx 1] [--trees 100] [--repeat 3] [--systems floor,project,processes,qf,ranger]

One generated scene (``--mpx`` Mpx, 10 float32 covariates, written once as a GeoTIFF) and one
training set (2,000 points of the same generator); every system reads the same file and runs one
after another on the same machine:

``floor``     reading the covariate GeoTIFF with rasterio (nothing can be faster than this).
``project``   what ``predict_round`` does: ``read_raster_lazy`` -> ``predict_map`` -> six COGs (mean, p05,
              p50, p95, sd, width90) strip by strip (``write_cogs_by_strips``) on the run's client
              (``mrv.dask_cluster.dask_client``: one in-process worker with 2 threads), started once; the
              cluster start and the first round on it (numba cache load, model scatter) are reported separately.
              The model has the default model's structure (pooled CQR margin + label-conditional margins
              by decile, ``BandedSOCModel``). A second row writes the five maps the issue names (no width90).
``processes`` the same on the LocalCluster this project used before: 2 single-threaded worker processes.
``qf``        quantile-forest's own ``predict`` (quantiles [0.05, 0.5, 0.95], then ``"mean"``) of the
              same fitted forest, in chunks of 100k pixels, ``n_jobs=2``; no COG writing (flatters it).
``ranger``    R ``ranger`` (``quantreg=TRUE``, same trees, ``min.node.size`` and ``mtry`` share) fitted on
              the same points + ``terra::predict`` writing mean and quantiles to a GeoTIFF,
              ``num.threads=2``. Skipped with a message when ``Rscript`` (Debian: ``r-base-core
              r-cran-ranger r-cran-terra``) is missing. Only the prediction is timed (inside R).

Each system is run ``--repeat`` times (R once, it takes minutes) and the *minimum* is kept: the
machine is shared, so wall times are noisy; CPU seconds (whole process tree) and the 1-minute load
average are printed beside them. Peak MB is the whole process tree (this process, Dask workers,
Rscript), sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from _proctree import Span, TreeMeter

# One BLAS/OpenMP thread per process, like the Dask workers (inherited by spawned processes).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from mrv.grid import Grid  # noqa: E402
from mrv.modeling.model import SOCModel  # noqa: E402

N_COV = 10
N_TRAIN = 2000
SEED = 20240917
TARGET_S_PER_MPX = 1.0
TARGET_VS_RANGER = 100.0
TARGET_VS_QF = 10.0
QF = "quantile-forest predict, chunks of 100k px"
RANGER = "R ranger (quantreg) + terra::predict"


# --------------------------------------------------------------------------- synthetic data
def _field_params(seed: int) -> np.ndarray:
    """Per covariate, 4 plane waves (amplitude, kx, ky, phase) with wavelengths of 60-2000 px."""
    rng = np.random.default_rng(seed)
    wavelength = np.exp(rng.uniform(math.log(60.0), math.log(2000.0), size=(N_COV, 4)))
    angle = rng.uniform(0.0, 2 * math.pi, size=(N_COV, 4))
    k = 2 * math.pi / wavelength
    amp = rng.uniform(0.3, 1.0, size=(N_COV, 4))
    phase = rng.uniform(0.0, 2 * math.pi, size=(N_COV, 4))
    return np.stack([amp, k * np.cos(angle), k * np.sin(angle), phase], axis=-1)


PARAMS = _field_params(SEED)


def covariates_at(rows: np.ndarray, cols: np.ndarray, *, noise_seed: int | None) -> np.ndarray:
    """``(N_COV, *rows.shape)`` float32 smooth fields at pixel coordinates, plus 5 % white noise.

    Pixels where the "cloud" field (the last covariate) is in its top ~3 % are NaN in every covariate.
    """
    r = rows.astype("float32")
    c = cols.astype("float32")
    out = np.zeros((N_COV, *rows.shape), dtype="float32")
    for i in range(N_COV):
        for amp, kx, ky, ph in PARAMS[i]:
            out[i] += np.float32(amp) * np.sin(np.float32(kx) * c + np.float32(ky) * r + np.float32(ph))
    if noise_seed is not None:
        out += np.asarray(np.random.default_rng(noise_seed).normal(0.0, 0.05, size=out.shape), dtype="float32")
    cloud = out[-1] > 2.2
    out[:, cloud] = np.nan
    return out


def soc_truth(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A nonlinear SOC stock (t C/ha) of the covariates, with noise."""
    return (
        45.0
        + 8.0 * np.sin(1.5 * X[:, 0])
        + 4.0 * X[:, 1] ** 2
        + 3.0 * X[:, 2] * X[:, 3]
        + 5.0 * np.tanh(2.0 * X[:, 4])
        + rng.normal(0.0, 3.0, size=len(X))
    )


def training_set(n: int = N_TRAIN) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples at random pixels of a 4000 x 4000 scene (t C/ha)."""
    rng = np.random.default_rng(SEED + 1)
    rows, cols = rng.integers(0, 4000, size=(2, 2 * n))
    X = covariates_at(rows, cols, noise_seed=SEED + 2).T
    X = X[np.all(np.isfinite(X), axis=1)][:n]
    return X, soc_truth(X, rng)


def scene_grid(side: int) -> Grid:
    return Grid(crs="EPSG:32633", bounds=(500000.0, 5300000.0, 500000.0 + 10 * side, 5300000.0 + 10 * side), resolution_m=10.0)


def write_scene(path: Path, side: int, *, strip: int = 512) -> Grid:
    """The covariate stack as a tiled, deflate-compressed float32 GeoTIFF (band descriptions cov0..), strip by strip."""
    from rasterio.windows import Window

    from mrv.raster import _staging_profile

    grid = scene_grid(side)
    with rasterio.open(path, "w", **_staging_profile(grid, count=N_COV)) as dst:
        for i in range(N_COV):
            dst.set_band_description(i + 1, f"cov{i}")
        for r0 in range(0, side, strip):
            rows, cols = np.mgrid[r0 : min(side, r0 + strip), 0:side]
            dst.write(covariates_at(rows, cols, noise_seed=SEED + r0), window=Window(0, r0, side, rows.shape[0]))  # type: ignore[no-untyped-call]
    return grid


def fit_model(n_trees: int, min_samples_leaf: int) -> SOCModel:
    """The default model's structure (:func:`mrv.modeling.train.train_model`): a forest with the pooled CQR
    margin and label-conditional margins by decile (``BandedSOCModel``), calibrated here on a held-out
    half of the training set (the pipeline calibrates on the spatial CV's out-of-fold quantiles)."""
    from mrv.config import ModelConfig
    from mrv.modeling.conformal import band_confidence, fit_label_conditional, with_bands
    from mrv.modeling.model import conformal_margin, fit_estimator

    X, y = training_set()
    covs = tuple(f"cov{i}" for i in range(N_COV))
    cfg = ModelConfig(n_estimators=n_trees, min_samples_leaf=min_samples_leaf)
    half = X.shape[0] // 2
    raw = fit_estimator(cfg, X[:half], y[:half], np.ones(half), covs).predict(X[half:])
    margin = conformal_margin(y[half:], raw[:, 1], raw[:, 3], confidence=cfg.confidence)
    bands = fit_label_conditional(y[half:], raw[:, 1], raw[:, 3], confidence=band_confidence(cfg.confidence), min_points=10)
    model = with_bands(fit_estimator(cfg, X, y, np.ones(X.shape[0]), covs), margin_t_ha=margin, bands=bands,
                       metadata={"training_sha256": "benchmark"})  # fmt: skip
    assert isinstance(model, SOCModel)
    return model


# --------------------------------------------------------------------------- systems
@dataclass(frozen=True)
class Row:
    system: str
    span: Span | None
    note: str = ""


def read_floor(scene: Path) -> None:
    with rasterio.open(scene) as src:
        src.read()


def project_to_cogs(
    scene: Path, model: SOCModel, out_dir: Path, *, client: Any | None, chunk_px: int = 256, width90: bool = True
) -> None:
    """``predict_round`` without the run layout: lazy read, ``predict_map``, six COGs strip by strip.

    The same calls with the same arguments as :func:`mrv.pipeline.model.predict_round` (``width90=True``,
    ``strip_px=2 * chunk_px``, the default strip pixel budget): mean, p05, p50, p95, sd and width90;
    ``width90=False``: the five maps the issue names, without the run's sixth.
    """
    import xarray as xr

    from mrv.modeling.predict import cog_predictor, predict_map
    from mrv.raster import read_raster_lazy, write_cogs_by_strips

    arr, grid, names = read_raster_lazy(scene, chunk_px=chunk_px)
    stack = xr.DataArray(arr, dims=("covariate", "y", "x"),
                         coords={"covariate": names, "y": grid.y_coords(), "x": grid.x_coords()})  # fmt: skip
    pred = predict_map(stack, model, client=client, chunk_px=chunk_px, width90=width90)
    layers = [str(o) for o in pred["output"].to_numpy()]
    paths = [out_dir / f"soc_stock_{o}.tif" for o in layers]
    write_cogs_by_strips(paths, pred.data, grid, tags=[{"units": "t C/ha"}] * len(layers),
                         band_names=layers, strip_px=2 * chunk_px, predictors=[cog_predictor(o) for o in layers])  # fmt: skip


def qf_predict(scene: Path, model: SOCModel, *, chunk: int = 100_000) -> None:
    """quantile-forest's own predict (two calls: quantiles, then the mean) over the scene in pixel chunks."""
    forest = model.forest
    forest.set_params(n_jobs=2)
    try:
        with rasterio.open(scene) as src:
            X = src.read().reshape(N_COV, -1).T
        ok = np.flatnonzero(np.isfinite(X).all(axis=1))
        out = np.full((X.shape[0], 4), np.nan, dtype="float32")
        for s in range(0, ok.size, chunk):
            rows = ok[s : s + chunk]
            out[rows, 1:] = forest.predict(X[rows], quantiles=list(model.quantiles))
            out[rows, 0] = forest.predict(X[rows], quantiles="mean")
    finally:
        forest.set_params(n_jobs=1)


R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
suppressPackageStartupMessages({library(ranger); library(terra)})
train <- read.csv(args[1])
r <- rast(args[2])
names(r) <- paste0("cov", 0:(nlyr(r) - 1))
ntree <- as.integer(args[3]); minleaf <- as.integer(args[5]); mtry <- max(1L, floor(as.numeric(args[6]) * nlyr(r)))
set.seed(1)
fit <- ranger(soc ~ ., data = train, num.trees = ntree, min.node.size = minleaf, mtry = mtry,
              quantreg = TRUE, num.threads = 2)
f <- function(model, data, ...) {
  res <- matrix(NA_real_, nrow(data), 4)
  ok <- complete.cases(data)
  if (any(ok)) {
    d <- data[ok, , drop = FALSE]
    res[ok, 1] <- predict(model, d, num.threads = 2)$predictions
    res[ok, 2:4] <- predict(model, d, type = "quantiles", quantiles = c(0.05, 0.5, 0.95), num.threads = 2)$predictions
  }
  res
}
t0 <- Sys.time()
p <- predict(r, fit, fun = f, filename = args[4], overwrite = TRUE, wopt = list(datatype = "FLT4S"))
cat(sprintf("predict_seconds %.3f\n", as.numeric(difftime(Sys.time(), t0, units = "secs"))))
"""


def ranger_predict(scene: Path, model: SOCModel, work: Path) -> tuple[float, str]:
    """Run the R peer; returns (prediction seconds measured inside R, ranger/terra versions)."""
    X, y = training_set()
    pd.DataFrame(X, columns=[f"cov{i}" for i in range(N_COV)]).assign(soc=y).to_csv(work / "train.csv", index=False)
    (work / "peer.R").write_text(R_SCRIPT)
    f = model.forest
    cmd = ["Rscript", str(work / "peer.R"), str(work / "train.csv"), str(scene), str(f.n_estimators),
           str(work / "ranger.tif"), str(f.min_samples_leaf), str(f.max_features)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"Rscript failed: {res.stderr[-2000:]}")
    seconds = float(next(ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("predict_seconds")))
    ver = subprocess.run(["Rscript", "-e", 'cat(format(packageVersion("ranger")), format(packageVersion("terra")))'],
                         capture_output=True, text=True, check=False).stdout.split()  # fmt: skip
    return seconds, f"ranger {ver[0]}, terra {ver[1]}" if len(ver) == 2 else ""


def run_cluster(scene: Path, model: SOCModel, out: Path, repeat: int, *, processes: bool) -> list[Row]:
    """Open the cluster once, one round on it fresh, then ``repeat`` rounds (best kept), then close it."""
    from distributed import Client, LocalCluster

    from mrv.config import DaskConfig
    from mrv.dask_cluster import dask_client

    with TreeMeter() as m:
        if processes:  # the LocalCluster of mrv.dask_cluster before: 2 single-threaded worker processes
            cm: Any = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cm)
        else:
            cm = dask_client(DaskConfig(n_workers=2, threads_per_worker=1))
            client = cm.__enter__()
    start = m.span
    try:
        with TreeMeter() as m:
            project_to_cogs(scene, model, out, client=client)
        first = m.span
        span = best_of(repeat, lambda: project_to_cogs(scene, model, out, client=client))
        five = None if processes else best_of(repeat, lambda: project_to_cogs(scene, model, out, client=client, width90=False))
    finally:
        with TreeMeter() as m:
            if processes:
                client.close()
                cm.close()
            else:
                cm.__exit__(None, None, None)
    name = "2 worker processes (before)" if processes else "in-process, 2 threads"
    five_rows = [] if five is None else [Row(PROJECT_FIVE, five, f"the issue's five maps (no width90), best of {repeat}")]
    return [
        Row(PROJECT if not processes else f"this project, LocalCluster {name}, + 6 COGs", span,
            f"cluster started once, best of {repeat}"),
        *five_rows,
        Row("  cluster start (once per run)", start),
        Row("  first round on the fresh cluster", first, "worker imports, numba kernel load, model scatter"),
        Row("  cluster close", m.span),
    ]


def best_of(n: int, fn: Callable[[], object]) -> Span:
    """The run with the least wall time out of ``n`` (each measured over the whole process tree)."""
    spans = []
    for _ in range(n):
        with TreeMeter() as m:
            fn()
        spans.append(m.span)
    return min(spans, key=lambda s: s.wall_s)


# --------------------------------------------------------------------------- main
def main() -> None:
    from mrv.config import ModelConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mpx", type=float, default=1.0, help="scene size in Mpx (square)")
    ap.add_argument("--trees", type=int, default=ModelConfig.n_estimators)
    ap.add_argument("--min-samples-leaf", type=int, default=ModelConfig.min_samples_leaf)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--systems", default="floor,project,processes,qf,ranger")
    args = ap.parse_args()
    systems = args.systems.split(",")
    side = round(math.sqrt(args.mpx * 1e6))
    mpx = side * side / 1e6

    work = Path(tempfile.mkdtemp(prefix="mrv-bench-predict-"))
    try:
        scene = work / "covariates.tif"
        write_scene(scene, side)
        t0 = time.perf_counter()
        model = fit_model(args.trees, args.min_samples_leaf)
        depth = np.mean([e.tree_.max_depth for e in model.forest.estimators_])
        print(f"scene {side} x {side} px ({mpx:.2f} Mpx), {N_COV} float32 covariates, {N_TRAIN} training points; "
              f"model {args.trees} trees, min_samples_leaf {args.min_samples_leaf}, mean max depth {depth:.1f}, "
              f"fit {time.perf_counter() - t0:.1f} s; compiled walk: {model._compiled() is not None}; "
              f"{os.cpu_count()} cores, load avg at start {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
        rows: list[Row] = []
        if "floor" in systems:
            rows.append(Row("reading the covariates (floor)", best_of(args.repeat, lambda: read_floor(scene))))
            print(rows[-1], flush=True)
        model.predict(np.zeros((1, N_COV), "float32"))  # numba kernel load in this process, reported above
        if "project" in systems:
            rows += run_cluster(scene, model, work / "project", args.repeat, processes=False)
        if "processes" in systems:
            rows += run_cluster(scene, model, work / "processes", args.repeat, processes=True)
        if "qf" in systems:
            n = 1 if mpx * args.trees > 400 else args.repeat
            rows.append(Row(QF, best_of(n, lambda: qf_predict(scene, model)),
                            f"n_jobs=2, no COG writes, best of {n}"))  # fmt: skip
            print(rows[-1], flush=True)
        if "ranger" in systems:
            if shutil.which("Rscript") is None:
                rows.append(Row("R ranger + terra::predict", None,
                                "skipped: Rscript not found (apt-get install r-base-core r-cran-ranger r-cran-terra)"))  # fmt: skip
            else:
                with TreeMeter() as m:
                    seconds, versions = ranger_predict(scene, model, work)
                span = Span(seconds, m.span.cpu_s, m.span.peak_mb, m.span.load)
                rows.append(Row(RANGER, span,
                                f"{versions}, num.threads=2, run once; CPU and MB include the fit"))  # fmt: skip
            print(rows[-1], flush=True)
        print_table(rows, mpx, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


PROJECT = "this project, LocalCluster in-process, 2 threads, + 6 COGs"
PROJECT_FIVE = "this project, the same, + 5 COGs"


def print_table(rows: list[Row], mpx: float, args: argparse.Namespace) -> None:
    """The markdown table of benchmarks/README.md: one row per system, ratios against the project's row."""
    by = {r.system: r.span for r in rows if r.span is not None}
    ours = by.get(PROJECT)
    print(f"\n## Mean + 90 % PI maps, {mpx:.2f} Mpx, {args.trees} trees, min_samples_leaf {args.min_samples_leaf}, "
          f"{os.cpu_count()} cores (wall = best of {args.repeat}; load average at the end of each row)\n")  # fmt: skip
    print("| system | wall s | s per Mpx | CPU s | peak MB (process tree) | load avg | wall / project | CPU / project | notes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if r.span is None:
            print(f"| {r.system} | - | - | - | - | - | - | - | {r.note} |")
            continue
        s = r.span
        ratio = cpu_ratio = "-"
        if ours is not None and not r.system.startswith("  "):
            ratio = f"{s.wall_s / ours.wall_s:.1f}x"
            cpu_ratio = f"{s.cpu_s / max(ours.cpu_s, 1e-9):.1f}x"
        print(f"| {r.system} | {s.wall_s:.2f} | {s.wall_s / mpx:.2f} | {s.cpu_s:.2f} | {s.peak_mb:.0f} | {s.load:.2f} | "
              f"{ratio} | {cpu_ratio} | {r.note} |")  # fmt: skip
    for label, key in (("six COGs, as the run writes them", PROJECT), ("the issue's five COGs", PROJECT_FIVE)):
        span = by.get(key)
        if span is not None:
            print_targets(label, span, by, mpx)


def print_targets(label: str, ours: Span, by: dict[str, Span], mpx: float) -> None:
    """The issue's targets for one of the project's rows: s per Mpx and the ratios against the peers."""
    spm = ours.wall_s / mpx
    print(f"\nthis project, {label}: {spm:.2f} s/Mpx including the COG writes ({ours.cpu_s / mpx:.2f} CPU s/Mpx) "
          f"-> target <= {TARGET_S_PER_MPX:g} s/Mpx {'MET' if spm <= TARGET_S_PER_MPX else 'MISSED'}")  # fmt: skip
    for name, target in ((RANGER, TARGET_VS_RANGER), (QF, TARGET_VS_QF)):
        peer = by.get(name)
        if peer is not None:
            ratio = peer.wall_s / ours.wall_s
            print(f"  vs {name}: {ratio:.1f}x faster (wall), {peer.cpu_s / max(ours.cpu_s, 1e-9):.1f}x less CPU "
                  f"-> target >= {target:g}x {'MET' if ratio >= target else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
