"""Benchmark imagery loading: a bare-soil composite through a STAC API vs plain rasterio, same run, same files.

Usage::

    python benchmarks/imagery_load.py [--size 2000] [--chunk 256] [--workers 2] [--workdir DIR]
                                      [--methods naive,warp,threads,cluster] [--before-tree DIR]

A synthetic region of ``size`` x ``size`` px at 10 m (2000 -> 20 x 20 km; one round, 4 Sentinel-2
L2A items of 7 COG assets: 4 bands at 10 m, 2 bands and SCL at 20 m) is generated once into
``--workdir`` (reused when its spec matches) and served by ``rustac serve`` on 127.0.0.1 (the test
helper ``tests/stac_server.py``).

Methods, each in its own fresh process (so peak RSS is its own), over the same files:

``naive``    plain rasterio window reads of every asset at its native resolution, one after another,
             no scaling, masking or resampling: a **lower bound** on reading the data, not an
             equivalent (the 20 m assets are 1/4 of the pixels and are not brought to 10 m).
``warp``     an **equivalent** done by hand: every asset reprojected onto the 10 m grid with
             ``rasterio.warp.reproject`` (bilinear; SCL nearest), then the same DN scaling, SCL mask and
             ``bare_soil_composite`` on in-memory numpy arrays, single-threaded. Its composite is
             compared with the ``threads`` one (max abs difference printed).
``threads``  ``StacApiSource.search`` -> ``load_reflectance`` (asset probe, odc-stac, DN scaling, SCL
             mask) -> ``bare_soil_composite``, computed with Dask's threaded scheduler: what the
             pipeline's ``prepare_imagery_tile`` does for each tile.
``cluster``  the same on a LocalCluster of ``--workers`` single-threaded processes (this benchmark's
             method before the pipeline switched to threads per tile).
``check``    the per-scene data check alone (:mod:`mrv.imagery.scene_check`): every item's decimated
             sample (:func:`mrv.imagery.load.sample_scene`, reads through the overviews), its statistics and
             the verdicts; part of ``threads``.
``nocheck``  ``threads`` with ``load_reflectance(check=False)``: same code, same run, without the check.

``--before-tree DIR`` also runs ``threads`` and ``cluster`` with ``DIR`` first on PYTHONPATH (e.g.
``git archive <commit> mrv | tar -x -C DIR``), so before/after figures come from the same run.

MB/s is the decoded volume of the assets at native resolution (what ``naive`` reads, in MiB)
divided by the wall time, for every method. Peak MB is the process's peak RSS above its RSS after
imports (``VmHWM`` of ``/proc/self/status``: ``ru_maxrss`` is no good here, Linux carries the parent's
high-water mark into a forked child, so every method showed the region generator's peak); for ``cluster`` the sum of each worker's peak RSS (absolute, sampled every
0.1 s) plus the client's increase.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pystac
import rasterio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
COLLECTION = "sentinel-2-l2a"
METHODS = ("naive", "warp", "check", "nocheck", "threads", "cluster")


def spec_for(size: int) -> Any:
    from mrv.synthetic import SceneSpec
    from mrv.synthetic.spec import DEFAULT_ROUNDS

    n_fields = max(4, size // 50)  # fields do not matter here; as dense as the demo would be slow to generate
    return SceneSpec(
        width_px=size,
        height_px=size,
        n_fields=n_fields,
        n_lab_sites=3 * n_fields,
        n_crowd=10,
        rounds=DEFAULT_ROUNDS[:1],
    )


def region(workdir: Path, size: int) -> tuple[Path, float]:
    """The region's collection.json, generated unless an identical spec is already there; generation seconds."""
    from mrv.synthetic import build_region

    spec = spec_for(size)
    root = workdir / f"region_{size}"
    want = json.dumps(dataclasses.asdict(spec), indent=1) + "\n"
    if (root / "spec.json").is_file() and (root / "spec.json").read_text() == want:
        return root / "stac" / "collection.json", 0.0
    t0 = time.perf_counter()
    build_region(root, spec, overwrite=True)
    return root / "stac" / "collection.json", time.perf_counter() - t0


def grid_for(size: int) -> Any:
    from mrv.grid import Grid

    spec = spec_for(size)
    return Grid(crs=spec.crs, bounds=spec.bounds, resolution_m=spec.resolution_m)


def local_items(collection: Path) -> list[pystac.Item]:
    catalog = pystac.read_file(str(collection))
    assert isinstance(catalog, pystac.Collection)
    items = sorted(catalog.get_items(recursive=True), key=lambda it: (it.datetime, it.id))
    for item in items:
        item.make_asset_hrefs_absolute()
    return items


def native_mib(items: list[pystac.Item], grid: Any) -> float:
    """Decoded size of every asset of every item over ``grid`` at native resolution (MiB)."""
    from mrv.imagery.bands import SCL, resolve_assets

    total = 0
    for item in items:
        for key in resolve_assets(item, [*BANDS, SCL]).values():
            with rasterio.open(item.assets[key].get_absolute_href() or "") as src:
                win = src.window(*grid.bounds).round_offsets().round_lengths()
                total += int(win.width) * int(win.height) * np.dtype(src.dtypes[0]).itemsize
    return total / 2**20


# --------------------------------------------------------------------------- methods (child processes)
def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _peak_rss() -> int:
    """This process's peak RSS in bytes: ``VmHWM`` (per address space, so reset by exec), else ``ru_maxrss``."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_naive(items: list[pystac.Item], grid: Any) -> dict[str, Any]:
    from mrv.imagery.bands import SCL, resolve_assets

    t0 = time.perf_counter()
    arrays = []
    for item in items:
        for key in resolve_assets(item, [*BANDS, SCL]).values():
            with rasterio.open(item.assets[key].get_absolute_href() or "") as src:
                arrays.append(src.read(1, window=src.window(*grid.bounds)))
    seconds = time.perf_counter() - t0
    assert all(a.size for a in arrays)
    return {"seconds": seconds}


def _composite_path(workdir: Path, name: str) -> Path:
    return workdir / f"composite_{name}.npy"


def run_warp(items: list[pystac.Item], grid: Any, workdir: Path) -> dict[str, Any]:
    import xarray as xr
    from rasterio.warp import Resampling, reproject

    from mrv.config import BareSoilConfig
    from mrv.imagery.bands import SCL, resolve_assets
    from mrv.imagery.composite import bare_soil_composite
    from mrv.imagery.masking import clear_mask
    from mrv.imagery.radiometry import band_scaling

    t0 = time.perf_counter()
    layers: dict[str, list[np.ndarray]] = {b: [] for b in [*BANDS, SCL]}
    for item in items:
        keys = resolve_assets(item, [*BANDS, SCL])
        for name, key in keys.items():
            dst = np.zeros(grid.shape, dtype="uint8" if name == SCL else "uint16")
            with rasterio.open(item.assets[key].get_absolute_href() or "") as src:
                window = src.window(*grid.bounds)
                if (
                    src.crs == grid.crs
                    and src.res == (grid.resolution_m, grid.resolution_m)
                    and window == window.round_offsets()
                ):
                    dst = src.read(
                        1, window=window.round_lengths(), boundless=True, fill_value=0
                    )  # already on the grid
                else:
                    reproject(
                        rasterio.band(src, 1),
                        dst,
                        dst_transform=grid.transform,
                        dst_crs=grid.crs,
                        dst_nodata=0,
                        resampling=Resampling.nearest if name == SCL else Resampling.bilinear,
                    )
            if name == SCL:
                layers[name].append(dst)
                continue
            s = band_scaling(item, key)
            refl = dst.astype("float32") * np.float32(s.scale) + np.float32(s.offset)
            if s.nodata is not None:
                refl[dst == s.nodata] = np.nan
            layers[name].append(refl)
    scl = xr.DataArray(np.stack(layers[SCL]), dims=("time", "y", "x"))
    keep = clear_mask(scl)
    ds = xr.Dataset({b: xr.DataArray(np.stack(layers[b]), dims=("time", "y", "x")).where(keep) for b in BANDS})
    composite = bare_soil_composite(ds, BANDS, BareSoilConfig())
    red = composite["red"].values
    seconds = time.perf_counter() - t0
    np.save(_composite_path(workdir, "warp"), red)
    return {"seconds": seconds, "finite": int(np.isfinite(red).sum())}


def _search(url: str, grid: Any) -> list[pystac.Item]:
    from mrv.imagery.source import SearchRequest
    from mrv.imagery.stac_api import StacApiSource

    source = StacApiSource(url, collection=COLLECTION, timeout_s=10)
    request = SearchRequest(
        bbox_wgs84=grid.bbox_wgs84(),
        start=dt.date(2000, 1, 1),
        end=dt.date(2030, 12, 31),
        max_cloud_pct=100.0,
        collection=COLLECTION,
    )
    return source.search(request)


def _load_and_composite(url: str, grid: Any, chunk: int, *, check: bool = True) -> tuple[np.ndarray, int]:
    from mrv.config import BareSoilConfig
    from mrv.imagery.composite import bare_soil_composite
    from mrv.imagery.load import load_reflectance

    items = _search(url, grid)
    loaded = load_reflectance(items, BANDS, grid, chunk_px=chunk, **({} if check else {"check": False}))
    composite = bare_soil_composite(loaded.reflectance, BANDS, BareSoilConfig()).compute()
    red = composite["red"].values
    assert red.shape == grid.shape
    return red, len(items)


def run_check(items: list[pystac.Item], grid: Any) -> dict[str, Any]:
    from mrv.imagery.bands import SCL, resolve_assets
    from mrv.imagery.load import sample_scene
    from mrv.imagery.scene_check import judge, scene_stats

    t0 = time.perf_counter()
    stats = []
    for item in items:
        keys = resolve_assets(item, [*BANDS, SCL])
        refl, scl = sample_scene(item, keys, BANDS, grid)
        stats.append(scene_stats(item.id, refl, scl))
    verdicts = judge(stats)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "verdicts": [v.action for v in verdicts]}


def run_threads(url: str, grid: Any, chunk: int, workdir: Path, label: str, *, check: bool = True) -> dict[str, Any]:
    import dask

    __import__("odc.stac")
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        red, n_items = _load_and_composite(url, grid, chunk, check=check)
    seconds = time.perf_counter() - t0
    np.save(_composite_path(workdir, f"threads_{label}"), red)
    return {"seconds": seconds, "items": n_items, "finite": int(np.isfinite(red).sum())}


def run_cluster(url: str, grid: Any, chunk: int, workers: int) -> dict[str, Any]:
    from _measure import PeakSampler
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as client:
        client.run(lambda: __import__("odc.stac"))  # imports on the workers are not loading time
        with PeakSampler(client) as peak:
            t0 = time.perf_counter()
            red, n_items = _load_and_composite(url, grid, chunk)
            seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "items": n_items,
        "finite": int(np.isfinite(red).sum()),
        "peak_mb": peak.client_increase_mb + peak.workers_peak_mb,
        "idle_mb": peak.workers_idle_mb,
    }


def child(args: argparse.Namespace) -> None:
    """Run one method in this (fresh) process and print its result as JSON on the last line."""
    import dask  # noqa: F401  (imports are not measured)
    import odc.stac  # noqa: F401
    import xarray  # noqa: F401

    import mrv.imagery.load  # noqa: F401

    grid = grid_for(args.size)
    items = local_items(args.workdir / f"region_{args.size}" / "stac" / "collection.json")
    base = _rss()
    if args.child == "naive":
        out = run_naive(items, grid)
    elif args.child == "warp":
        out = run_warp(items, grid, args.workdir)
    elif args.child == "check":
        out = run_check(items, grid)
    elif args.child == "nocheck":
        out = run_threads(args.url, grid, args.chunk, args.workdir, "nocheck", check=False)
    elif args.child == "threads":
        out = run_threads(args.url, grid, args.chunk, args.workdir, args.label)
    else:
        out = run_cluster(args.url, grid, args.chunk, args.workers)
    out.setdefault("peak_mb", (_peak_rss() - base) / 2**20)
    out["load"] = os.getloadavg()[0]
    print(json.dumps(out))


def run_child(args: argparse.Namespace, method: str, url: str, label: str, pythonpath: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child", method, "--url", url, "--label", label, "--size", str(args.size), "--chunk", str(args.chunk),
        "--workers", str(args.workers), "--workdir", str(args.workdir),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} ({label}) failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--size", type=int, default=2000, help="scene side in 10 m pixels (2000 = 20 km)")
    parser.add_argument("--chunk", type=int, default=256, help="chunk_px (the pipeline default is 256)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mrv-bench-imagery")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--before-tree", type=Path, default=None, help="an older mrv/ tree to run threads+cluster with")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--label", default="after", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from stac_server import catalog_api_inputs, rustac_serve

    methods = [m for m in args.methods.split(",") if m]
    collection, gen_s = region(args.workdir, args.size)
    grid = grid_for(args.size)
    items = local_items(collection)
    mib = native_mib(items, grid)
    disk = sum(p.stat().st_size for p in collection.parent.rglob("*.tif")) / 2**20
    hrefs = catalog_api_inputs(collection, args.workdir / f"api_{args.size}")
    load_start = os.getloadavg()
    rows: list[tuple[str, str, dict[str, Any]]] = []
    with rustac_serve(hrefs, log_path=args.workdir / "rustac.log") as url:
        runs: list[tuple[str, str, str | None]] = []
        if args.before_tree is not None:
            runs += [(m, "before", str(args.before_tree)) for m in ("threads", "cluster") if m in methods]
        runs += [(m, "after", None) for m in methods]
        for method, label, path in runs:
            result = run_child(args, method, url, label, path)
            rows.append((method, label, result))
            print(f"  {method} ({label}): {result['seconds']:.1f} s, load {result['load']:.1f}", file=sys.stderr)

    km = args.size * grid.resolution_m / 1000
    n_items = next((r["items"] for _, _, r in rows if "items" in r), len(items))
    print(
        f"\n{km:g} x {km:g} km ({args.size} x {args.size} px at 10 m), {n_items} items x {len(BANDS) + 1} assets, "
        f"{mib:.0f} MiB decoded at native resolution ({disk:.0f} MiB of COGs on disk); generation "
        f"{gen_s:.0f} s{' (cached)' if gen_s == 0 else ''}; chunk_px {args.chunk}, {args.workers} cluster workers; "
        f"{psutil.cpu_count()} cores, load avg {load_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end\n"
    )
    by = {(m, label): r for m, label, r in rows}
    naive = by.get(("naive", "after"))
    warp = by.get(("warp", "after"))
    names = {
        "naive": "plain rasterio window reads, native resolution (lower bound)",
        "warp": "rasterio.warp to the 10 m grid + same composite, numpy (equivalent)",
        "check": "per-scene data check alone (decimated samples + verdicts)",
        "nocheck": "pipeline (threads) without the data check",
        "threads": "STAC API + load_reflectance + bare_soil_composite, Dask threads (pipeline)",
        "cluster": f"same, Dask LocalCluster {args.workers} x 1 process",
    }
    print("| method | code | seconds | MB/s | peak MB | vs naive | vs warp | load avg |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for method, label, r in rows:
        vs_naive = f"{r['seconds'] / naive['seconds']:.1f}x" if naive else "-"
        vs_warp = f"{r['seconds'] / warp['seconds']:.2f}x" if warp else "-"
        print(
            f"| {names[method]} | {label if method in ('threads', 'cluster') else '-'} | {r['seconds']:.1f} | "
            f"{mib / r['seconds']:.0f} | {r['peak_mb']:.0f} | {vs_naive} | {vs_warp} | {r['load']:.1f} |"
        )
    if warp and ("threads", "after") in by:
        a = np.load(_composite_path(args.workdir, "warp"))
        b = np.load(_composite_path(args.workdir, "threads_after"))
        both = np.isfinite(a) & np.isfinite(b)
        print(
            f"\nComposite red band, threads vs warp: {int(both.sum())} pixels with data in both, "
            f"{int((np.isfinite(a) != np.isfinite(b)).sum())} with data in only one, "
            f"max |difference| {float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0:.2e}"
        )
    if ("check", "after") in by:
        print(f"Data check verdicts: {', '.join(by[('check', 'after')]['verdicts'])}.")
    if ("cluster", "after") in by:
        print(f"Cluster peak MB includes the workers' idle RSS ({by[('cluster', 'after')]['idle_mb']:.0f} MB).")


if __name__ == "__main__":
    main()
