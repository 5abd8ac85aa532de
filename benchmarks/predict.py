"""Benchmark SOC map prediction: Dask ``predict_map`` vs a naive single-process quantile-forest predict.

Usage::

    python benchmarks/predict.py [--sizes 1,4,16] [--trees 100] [--min-samples-leaf 5] [--chunk 512] [--methods naive,dask]

The defaults are the default model of ``mrv.config.ModelConfig`` (QRF, 100 trees, min_samples_leaf 5);
``--trees 200 --min-samples-leaf 3`` is the previous default.

Methods
-------
``naive``   quantile-forest's own ``predict`` (quantiles, then mean: two tree walks) over the whole
            flattened scene in this process (skipped when the projected peak memory would not fit,
            see ``--naive-mem-fraction``).
``dask-cog`` what the pipeline does: ``predict_map`` written to five COGs strip by strip
            (``mrv.raster.write_cogs_by_strips``), so the result is never held whole.
``dask``    ``mrv.modeling.predict.predict_map(...).compute()`` on a LocalCluster of 2
            single-threaded worker processes (``OMP_NUM_THREADS=1``); blocks go through
            ``SOCModel.predict`` (one tree walk, mean and quantiles from the same leaf values,
            row batches).

The covariate stack is lazy (generated block by block on the workers from seeded smooth random
fields), as a real odc-stac stack would be, so the Dask graph never carries the scene itself.
Memory: for ``naive`` the increase of this process's peak RSS; for Dask the sum over workers of
each worker's peak RSS (absolute, sampled every 0.1 s with ``client.run``) plus the client's
peak RSS increase (the client receives the computed ``(5, y, x)`` float32 result).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import psutil
import xarray as xr
from _measure import PeakSampler

from mrv.grid import Grid
from mrv.modeling.model import OUTPUTS, SOCModel
from mrv.modeling.predict import predict_map
from mrv.raster import write_cogs_by_strips

N_COV = 9
SEED = 20240917
TARGET_S_PER_MPX = 5.0
# Per-process BLAS/OpenMP threads: one, like the Dask workers (inherited by spawned processes).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


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

    Pixels where the "cloud" field (covariate 8) is in its top ~3 % are NaN in every covariate.
    """
    r = rows.astype("float32")
    c = cols.astype("float32")
    out = np.zeros((N_COV, *rows.shape), dtype="float32")
    for i in range(N_COV):
        for amp, kx, ky, ph in PARAMS[i]:
            out[i] += np.float32(amp) * np.sin(np.float32(kx) * c + np.float32(ky) * r + np.float32(ph))
    if noise_seed is not None:
        out += np.asarray(np.random.default_rng(noise_seed).normal(0.0, 0.05, size=out.shape), dtype="float32")
    cloud = out[8] > 2.2
    out[:, cloud] = np.nan
    return out


def _gen_block(block_info: dict[Any, Any] | None = None) -> np.ndarray:
    assert block_info is not None
    (_, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    rows, cols = np.mgrid[y0:y1, x0:x1]
    return covariates_at(rows, cols, noise_seed=SEED + 7919 * y0 + x0)


def make_stack(side: int, chunk: int) -> xr.DataArray:
    """Lazy ``(covariate, y, x)`` stack of ``side x side`` pixels in ``(N_COV, chunk, chunk)`` blocks."""
    data = da.map_blocks(
        _gen_block,
        dtype="float32",
        chunks=((N_COV,), _chunks(side, chunk), _chunks(side, chunk)),
        name=f"covariates-{side}",
        meta=np.empty((0, 0, 0), dtype="float32"),
    )
    return xr.DataArray(
        data,
        dims=("covariate", "y", "x"),
        coords={
            "covariate": [f"cov{i}" for i in range(N_COV)],
            "y": np.arange(side) * -10.0,
            "x": np.arange(side) * 10.0,
        },
    )


def _chunks(n: int, c: int) -> tuple[int, ...]:
    return (c,) * (n // c) + ((n % c,) if n % c else ())


def training_set(n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples at random pixels of a 4000 x 4000 scene with a nonlinear target (t C/ha)."""
    rng = np.random.default_rng(SEED + 1)
    rows, cols = rng.integers(0, 4000, size=(2, 4 * n))
    X = covariates_at(rows, cols, noise_seed=SEED + 2).T
    X = X[np.all(np.isfinite(X), axis=1)][:n]
    y = (
        45.0
        + 8.0 * np.sin(1.5 * X[:, 0])
        + 4.0 * X[:, 1] ** 2
        + 3.0 * X[:, 2] * X[:, 3]
        + 5.0 * np.tanh(2.0 * X[:, 4])
        + rng.normal(0.0, 3.0, size=len(X))
    )
    return X, y


def fit_model(n_trees: int, min_samples_leaf: int) -> SOCModel:
    from mrv.config import ModelConfig
    from mrv.modeling.model import make_forest

    X, y = training_set()
    forest = make_forest(ModelConfig(n_estimators=n_trees, min_samples_leaf=min_samples_leaf)).fit(X, y)
    covs = tuple(f"cov{i}" for i in range(N_COV))
    return SOCModel(forest, covs, confidence=0.9, margin_t_ha=1.0, metadata={"training_sha256": "benchmark"})


def naive_predict(model: SOCModel, X: np.ndarray) -> np.ndarray:
    """The naive baseline: quantile-forest's own quantile and mean predictions over the whole array."""
    q = np.asarray(model.forest.predict(X, quantiles=list(model.quantiles)))
    mean = np.asarray(model.forest.predict(X, quantiles="mean"))
    return np.column_stack([mean, q])


# --------------------------------------------------------------------------- measuring
def _cpu_s() -> float:
    """User + system CPU seconds of this process (load-independent cost, unlike wall time on a shared machine)."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


@dataclass(frozen=True)
class Row:
    mpx: float
    method: str
    seconds: float | None
    peak_mb: float | None
    detail: str = ""
    cpu_s: float | None = None
    """CPU seconds spent predicting (this process for naive, the sum over workers for Dask)."""


def _warm_up() -> None:
    import quantile_forest  # noqa: F401

    import mrv.modeling.predict  # noqa: F401


def _load() -> str:
    return f"load avg {os.getloadavg()[0]:.1f}"


def run_naive(model: SOCModel, side: int) -> Row:
    rows, cols = np.mgrid[0:side, 0:side]
    X = covariates_at(rows, cols, noise_seed=SEED).reshape(N_COV, -1).T.copy()
    del rows, cols
    with PeakSampler() as s:
        t0, c0 = time.perf_counter(), _cpu_s()
        out = naive_predict(model, X)
        dt, cpu = time.perf_counter() - t0, _cpu_s() - c0
    assert out.shape == (side * side, 4)
    return Row(side * side / 1e6, "naive", dt, s.client_increase_mb, f"1 process, whole scene at once; {_load()}", cpu)


def predict_to_cogs(stack: xr.DataArray, model: SOCModel, *, client: Any, chunk_px: int) -> None:
    """What the pipeline does (``predict_round``): predict and write the five COGs strip by strip."""
    pred = predict_map(stack, model, client=client, chunk_px=chunk_px)
    with tempfile.TemporaryDirectory() as d:
        paths = [Path(d) / f"soc_stock_{o}.tif" for o in OUTPUTS]
        grid = Grid(crs="EPSG:32633", bounds=(0.0, 0.0, 10.0 * stack.sizes["x"], 10.0 * stack.sizes["y"]), resolution_m=10.0)
        write_cogs_by_strips(paths, pred.data, grid, tags=[{}] * len(OUTPUTS), band_names=list(OUTPUTS), strip_px=2 * chunk_px)


def run_dask(client: Any, model: SOCModel, side: int, chunk: int, method: str, fn: Callable[..., Any]) -> Row:
    """One run on a fresh cluster (the caller opens a new one), so peak RSS is not carried over."""
    client.run(_warm_up)  # imports on the workers are not prediction time
    stack = make_stack(side, chunk)
    cpu0 = sum(client.run(_cpu_s).values())
    with PeakSampler(client) as s:
        t0 = time.perf_counter()
        if method == "dask-cog":
            fn(stack, model, client=client, chunk_px=chunk)
        else:
            assert fn(stack, model, client=client, chunk_px=chunk).compute().shape == (len(OUTPUTS), side, side)
        dt = time.perf_counter() - t0
    peak = s.workers_peak_mb + s.client_increase_mb
    cpu = sum(client.run(_cpu_s).values()) - cpu0  # includes the RSS sampler's client.run calls (small)
    detail = f"workers peak {s.workers_peak_mb:.0f} MB (idle {s.workers_idle_mb:.0f}), client +{s.client_increase_mb:.0f} MB; {_load()}"
    return Row(side * side / 1e6, method, dt, peak, detail, cpu)


def profile_predict(model: SOCModel, n: int = 100_000) -> list[tuple[str, float]]:
    """Seconds per stage of ``SOCModel.predict`` on ``n`` pixels (single process)."""
    rng = np.random.default_rng(SEED + 5)
    rows, cols = rng.integers(0, 4000, size=(2, n))
    X = covariates_at(rows, cols, noise_seed=SEED + 6).T.copy()
    X = X[np.all(np.isfinite(X), axis=1)]
    f = model.forest
    stages: list[tuple[str, Callable[[], object]]] = [
        ("SOCModel.predict total", lambda: model.predict(X)),
        (f"  forest.apply (tree walk, {len(f.estimators_)} trees)", lambda: f.apply(X)),
        ("  forest.predict(quantiles=[.05,.5,.95])", lambda: f.predict(X, quantiles=list(model.quantiles))),
        ("  forest.predict(quantiles='mean')", lambda: f.predict(X, quantiles="mean")),
    ]
    res = []
    for name, fn in stages:
        t0 = time.perf_counter()
        fn()
        res.append((name, (time.perf_counter() - t0) * 1e6 / len(X)))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,4,16", help="scene sizes in Mpx (square scenes)")
    from mrv.config import ModelConfig

    ap.add_argument("--trees", type=int, default=ModelConfig.n_estimators)
    ap.add_argument("--min-samples-leaf", type=int, default=ModelConfig.min_samples_leaf)
    ap.add_argument("--chunk", type=int, default=512, help="Dask chunk edge in pixels")
    ap.add_argument("--methods", default="naive,dask,dask-cog")
    ap.add_argument(
        "--naive-mem-fraction",
        type=float,
        default=0.5,
        help="skip naive when its projected peak exceeds this share of available RAM",
    )
    ap.add_argument("--naive-max-seconds", type=float, default=300.0, help="skip naive when projected to take longer")
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    methods = args.methods.split(",")

    from mrv.config import DaskConfig
    from mrv.dask_cluster import dask_client

    t0 = time.perf_counter()
    model = fit_model(args.trees, args.min_samples_leaf)
    depth = np.mean([e.tree_.max_depth for e in model.forest.estimators_])
    print(
        f"model: {args.trees} trees, min_samples_leaf={model.forest.min_samples_leaf}, "
        f"max_features={model.forest.max_features}, max_samples_leaf={model.forest.max_samples_leaf}, "
        f"mean tree depth {depth:.1f}; "
        f"fit in {time.perf_counter() - t0:.1f} s"
    )
    print("\nprofile, single process, microseconds per pixel:")
    for name, us in profile_predict(model):
        print(f"  {name:45s} {us:8.1f}")

    rows: list[Row] = []
    naive_b_per_px: float | None = None
    naive_s_per_px: float | None = None
    if "naive" in methods:
        for mpx in sizes:
            side = round(math.sqrt(mpx * 1e6))
            n = side * side
            avail = psutil.virtual_memory().available
            if naive_b_per_px is not None and naive_s_per_px is not None:
                need_b, need_s = naive_b_per_px * n, naive_s_per_px * n
                if need_b > args.naive_mem_fraction * avail or need_s > args.naive_max_seconds:
                    rows.append(
                        Row(
                            n / 1e6,
                            "naive",
                            None,
                            None,
                            f"skipped: projected {need_b / 2**30:.1f} GB peak (available {avail / 2**30:.1f} GB), "
                            f"{need_s:.0f} s",
                        )
                    )
                    continue
            row = run_naive(model, side)
            rows.append(row)
            print(row, flush=True)
            assert row.seconds is not None
            assert row.peak_mb is not None
            naive_b_per_px = max(naive_b_per_px or 0.0, row.peak_mb * 2**20 / n)
            naive_s_per_px = max(naive_s_per_px or 0.0, row.seconds / n)

    dask_methods: dict[str, Callable[..., Any]] = {"dask": predict_map, "dask-cog": predict_to_cogs}
    todo = [m for m in methods if m in dask_methods]
    if todo:
        for mpx in sizes:
            side = round(math.sqrt(mpx * 1e6))
            for m in todo:
                with dask_client(DaskConfig(n_workers=2, threads_per_worker=1)) as client:
                    omp = client.run(lambda: os.environ.get("OMP_NUM_THREADS"))
                    assert set(omp.values()) == {"1"}, omp
                    row = run_dask(client, model, side, args.chunk, m, dask_methods[m])
                rows.append(row)
                print(row, flush=True)

    print_table(rows, args)


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    naive = {r.mpx: r.seconds for r in rows if r.method == "naive" and r.seconds}
    naive_rate = max((m / s for m, s in naive.items()), default=None)  # Mpx/s, for sizes without a naive run
    print(
        f"\n## Prediction benchmark: {args.trees} trees, min_samples_leaf {args.min_samples_leaf}, chunks {args.chunk} px, "
        "2 workers x 1 thread, "
        f"{psutil.cpu_count()} cores\n"
    )
    print("| Mpx | method | seconds | s per Mpx | Mpx/s | CPU s per Mpx | peak MB | speedup vs naive | notes |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if r.seconds is None:
            print(f"| {r.mpx:.3g} | {r.method} | - | - | - | - | - | - | {r.detail} |")
            continue
        if r.mpx in naive:
            sp = f"{naive[r.mpx] / r.seconds:.2f}x"
        elif naive_rate:
            sp = f"{(r.mpx / naive_rate) / r.seconds:.2f}x (vs naive rate)"
        else:
            sp = "-"
        print(
            f"| {r.mpx:.3g} | {r.method} | {r.seconds:.1f} | {r.seconds / r.mpx:.1f} | {r.mpx / r.seconds:.3f} | "
            f"{(r.cpu_s or math.nan) / r.mpx:.1f} | {r.peak_mb:.0f} | {sp} | {r.detail} |"
        )
    print(
        f"\nTargets (modelling issue): <= {TARGET_S_PER_MPX:.0f} s per Mpx on 2 cores for mean + 90 % interval with the "
        "default model; peak memory flat as the scene grows; time linear in pixels."
    )
    for m in ("dask", "dask-cog"):
        rs = [r for r in rows if r.method == m and r.seconds]
        if not rs:
            continue
        spm = [(r.seconds or math.nan) / r.mpx for r in rs]
        mem = [r.peak_mb or math.nan for r in rs]
        ok = "MET" if max(spm) <= TARGET_S_PER_MPX else "MISSED"
        print(
            f"  {m}: {min(spm):.1f}-{max(spm):.1f} s/Mpx -> speed target {ok}; "
            f"s/Mpx ratio largest/smallest scene {spm[-1] / spm[0]:.2f} (1.00 = linear); "
            f"peak MB ratio largest/smallest scene {mem[-1] / mem[0]:.2f} (1.00 = flat)"
        )
        cpu = [(r.cpu_s or math.nan) / r.mpx for r in rs]
        idle = max(cpu) / 2.0  # two single-threaded workers on two otherwise idle cores
        print(
            f"  {m}: {min(cpu):.1f}-{max(cpu):.1f} CPU s/Mpx -> on 2 idle cores ~{idle:.1f} s/Mpx, "
            f"speed target {'MET' if idle <= TARGET_S_PER_MPX else 'MISSED'} (load-independent estimate)"
        )


if __name__ == "__main__":
    main()
