"""Benchmark imagery loading: bare-soil composite through a STAC API on Dask vs naive rasterio reads.

Usage::

    python benchmarks/imagery_load.py [--size 2000] [--chunk 512] [--workers 2] [--workdir DIR]

A synthetic region of ``size`` x ``size`` px at 10 m (2000 -> 20 x 20 km; one round, 4 Sentinel-2
L2A items of 7 COG assets each) is generated once into ``--workdir`` (reused when its spec
matches) and served by ``rustac serve`` on 127.0.0.1 (the test helper ``tests/stac_server.py``).

Methods, in the same run, over the same files:

``naive``  plain rasterio window reads of every band of every item over the project grid, one
           after another in this process, at native resolution (no scaling, masking or
           resampling): the floor of what reading the data costs.
``dask``   ``StacApiSource.search`` -> ``load_reflectance`` (asset probe, odc-stac, DN scaling, SCL
           mask) -> ``bare_soil_composite`` (NDVI/NBR2 mask, per-pixel median) computed on a
           LocalCluster of ``--workers`` single-threaded processes.

MB/s is the decoded volume of the assets at native resolution (what ``naive`` reads, in MiB)
divided by the wall time, for both methods, so the two rates are comparable. Peak memory: for
``naive`` the peak of numpy/Python allocations (``tracemalloc``; an RSS increase is meaningless
after generating the region in the same process); for ``dask`` the sum of each worker's peak RSS
(absolute, sampled every 0.1 s) plus the client's RSS increase.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import psutil
import pystac
import rasterio
from _measure import PeakSampler

from mrv.config import BareSoilConfig
from mrv.grid import Grid
from mrv.imagery.bands import SCL, resolve_assets
from mrv.imagery.composite import bare_soil_composite
from mrv.imagery.load import load_reflectance
from mrv.imagery.source import SearchRequest
from mrv.imagery.stac_api import StacApiSource
from mrv.synthetic import SceneSpec, build_region
from mrv.synthetic.spec import DEFAULT_ROUNDS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from stac_server import rustac_serve, write_api_inputs

BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
COLLECTION = "sentinel-2-l2a"


def spec_for(size: int) -> SceneSpec:
    n_fields = max(
        4, size // 50
    )  # ~ as dense as the demo would be absurdly slow to generate; fields do not matter here
    return SceneSpec(
        width_px=size,
        height_px=size,
        n_fields=n_fields,
        n_lab_sites=3 * n_fields,
        n_crowd=10,
        rounds=DEFAULT_ROUNDS[:1],
    )


def region(workdir: Path, spec: SceneSpec) -> tuple[Path, float]:
    """The region's collection.json, generated unless an identical spec is already there; generation seconds."""
    root = workdir / f"region_{spec.width_px}"
    want = json.dumps(dataclasses.asdict(spec), indent=1) + "\n"
    if (root / "spec.json").is_file() and (root / "spec.json").read_text() == want:
        return root / "stac" / "collection.json", 0.0
    t0 = time.perf_counter()
    build_region(root, spec, overwrite=True)
    return root / "stac" / "collection.json", time.perf_counter() - t0


def api_inputs(collection_path: Path, out: Path) -> list[Path]:
    collection = pystac.read_file(str(collection_path))
    assert isinstance(collection, pystac.Collection)
    features = []
    for item in collection.get_items(recursive=True):
        item.make_asset_hrefs_absolute()
        d = item.to_dict(transform_hrefs=False)
        d["links"] = []
        d["collection"] = collection.id
        for asset in d["assets"].values():
            asset["href"] = Path(asset["href"]).as_uri()
        features.append(d)
    col = {k: v for k, v in collection.to_dict(include_self_link=False).items() if k != "links"} | {"links": []}
    return write_api_inputs(out, col, features)


# --------------------------------------------------------------------------- measuring
def native_mib(items: list[pystac.Item], grid: Grid) -> float:
    """Decoded size of every band asset of every item over ``grid`` at native resolution (MiB)."""
    total = 0
    for item in items:
        for key in resolve_assets(item, [*BANDS, SCL]).values():
            with rasterio.open(item.assets[key].get_absolute_href() or "") as src:
                win = src.window(*grid.bounds).round_offsets().round_lengths()
                total += int(win.width) * int(win.height) * np.dtype(src.dtypes[0]).itemsize
    return total / 2**20


def run_naive(items: list[pystac.Item], grid: Grid) -> tuple[float, float]:
    """Seconds and peak traced allocation (MiB; numpy buffers are traced) of reading every asset window."""
    tracemalloc.start()
    t0 = time.perf_counter()
    arrays = []
    for item in items:
        for key in resolve_assets(item, [*BANDS, SCL]).values():
            with rasterio.open(item.assets[key].get_absolute_href() or "") as src:
                arrays.append(src.read(1, window=src.window(*grid.bounds)))
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    assert all(a.size for a in arrays)
    return seconds, peak


def run_dask(url: str, grid: Grid, *, chunk: int, workers: int) -> tuple[float, float, float, int, int]:
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as client:
        client.run(lambda: __import__("odc.stac"))  # imports on the workers are not loading time
        with PeakSampler(client) as peak:
            t0 = time.perf_counter()
            source = StacApiSource(url, collection=COLLECTION, timeout_s=10)
            request = SearchRequest(
                bbox_wgs84=grid.bbox_wgs84(),
                start=dt.date(2000, 1, 1),
                end=dt.date(2030, 12, 31),
                max_cloud_pct=100.0,
                collection=COLLECTION,
            )
            items = source.search(request)
            loaded = load_reflectance(items, BANDS, grid, chunk_px=chunk)
            composite = bare_soil_composite(loaded.reflectance, BANDS, BareSoilConfig()).compute()
            seconds = time.perf_counter() - t0
    assert composite["red"].shape == grid.shape
    return seconds, peak.client_increase_mb + peak.workers_peak_mb, peak.workers_idle_mb, len(items), int(np.isfinite(composite["red"].values).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2000, help="scene side in 10 m pixels (2000 = 20 km)")
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mrv-bench-imagery")
    args = parser.parse_args()

    spec = spec_for(args.size)
    collection, gen_s = region(args.workdir, spec)
    grid = Grid(crs=spec.crs, bounds=spec.bounds, resolution_m=spec.resolution_m)
    catalog = pystac.read_file(str(collection))
    assert isinstance(catalog, pystac.Collection)
    items = list(catalog.get_items(recursive=True))
    for item in items:
        item.make_asset_hrefs_absolute()
    mib = native_mib(items, grid)
    disk = sum(p.stat().st_size for p in collection.parent.rglob("*.tif")) / 2**20

    hrefs = api_inputs(collection, args.workdir / f"api_{args.size}")
    with rustac_serve(hrefs, log_path=args.workdir / "rustac.log") as url:
        naive_s, naive_mb = run_naive(items, grid)
        dask_s, dask_mb, idle_mb, n_items, n_finite = run_dask(url, grid, chunk=args.chunk, workers=args.workers)

    km = args.size * spec.resolution_m / 1000
    print(
        f"\n{km:g} x {km:g} km ({args.size} x {args.size} px at 10 m), {n_items} items x {len(BANDS) + 1} assets, "
        f"{mib:.0f} MiB decoded at native resolution ({disk:.0f} MiB of COGs on disk); generation "
        f"{gen_s:.0f} s{' (cached)' if gen_s == 0 else ''}; chunk {args.chunk} px, {args.workers} workers; "
        f"{psutil.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}; composite pixels with data: {n_finite}\n"
    )
    print("| method | seconds | MB/s | peak MB | time vs naive |")
    print("|---|---:|---:|---:|---:|")
    print(f"| naive rasterio window reads | {naive_s:.1f} | {mib / naive_s:.0f} | {naive_mb:.0f} | 1.00x |")
    print(
        f"| STAC API + load_reflectance + bare_soil_composite (Dask) | {dask_s:.1f} | {mib / dask_s:.0f} | "
        f"{dask_mb:.0f} | {dask_s / naive_s:.2f}x |"
    )
    print(f"\nDask peak MB includes the workers' idle RSS ({idle_mb:.0f} MB before loading).")


if __name__ == "__main__":
    main()
