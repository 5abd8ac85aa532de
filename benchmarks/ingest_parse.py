"""Parse-only benchmark of :func:`mrv.samples.ingest.ingest` (no store): N generated wide lab rows.

Prints wall time and peak RSS of the parse beside the previous row-by-row parser when its source is
given (``--baseline PATH``: a copy of the old ``mrv/samples/ingest.py``), each in its own process so
peak memory is not shared. Usage::

    .venv/bin/python benchmarks/ingest_parse.py --rows 200000 [--baseline /tmp/ingest_old.py]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HEADER = "sample_id,site_id,farm_id,field_id,x,y,epsg,sampling_date,top_cm,bottom_cm,soc_g_kg,bulk_density_g_cm3,coarse_fragments_vol_pct,method"


def write_rows(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(580000, 585000, n)
    y = rng.uniform(5355000, 5360000, n)
    soc = rng.lognormal(2.8, 0.3, n)
    bd = rng.normal(1.35, 0.1, n)
    cf = rng.uniform(0, 15, n)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(HEADER + "\n")
        for i in range(n):
            top, bottom = (0, 15) if i % 2 == 0 else (15, 30)
            fh.write(f"S{i},P{i // 2},FA,F{i % 36},{x[i]:.2f},{y[i]:.2f},32633,2021-05-01,{top},{bottom},"
                     f"{soc[i]:.2f},{bd[i]:.2f},{cf[i]:.1f},dry combustion\n")  # fmt: skip


LONG_HEADER = "Probennummer;Standort;Schlag;Rechtswert;Hochwert;Probenahmedatum;Tiefe_von_cm;Tiefe_bis_cm;Parameter;Messwert;Einheit;Methode"


def write_long(path: Path, n: int, seed: int = 0) -> None:
    """``n`` lines of the agency_long_de layout: SOC, bulk density and pH lines per sample (n/3 samples)."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="latin-1") as fh:
        fh.write(LONG_HEADER + "\n")
        for i in range(n // 3):
            x = f"{rng.uniform(580000, 585000):.1f}".replace(".", ",")
            y = f"{rng.uniform(5355000, 5360000):.1f}".replace(".", ",")
            head = f"P{i};S{i // 2};F1;{x};{y};14.09.2021;0;30"
            soc = f"{rng.lognormal(0.6, 0.3):.2f}".replace(".", ",")
            bd = f"{rng.normal(1.35, 0.1):.2f}".replace(".", ",")
            fh.write(f"{head};Corg;{soc};M%;DIN EN 15936\n{head};Lagerungsdichte;{bd};g/cm3;Ring\n{head};pH;6,5;-;CaCl2\n")


def run_one(path: Path, module: str) -> None:
    if module != "mrv.samples.ingest":
        sys.path.insert(0, str(Path(module).parent))
        mod = __import__(Path(module).stem)
    else:
        import mrv.samples.ingest as mod
    from mrv.samples.formats import load_format

    fmt = load_format("agency_long_de" if path.stem == "long" else "lab_wide")
    t0, c0 = time.perf_counter(), time.process_time()
    res = mod.ingest(path, fmt, source="lab", submitter="a", project_crs="EPSG:32633", today=dt.date(2025, 1, 1))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{wall:.2f} {cpu:.2f} {peak_mb:.0f} {len(res.accepted)} {len(res.rejected)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--baseline", default=None)
    ap.add_argument("--layout", choices=("wide", "long"), default="wide")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        run_one(Path(args.one[0]), args.one[1])
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("long.csv" if args.layout == "long" else "lab.csv")
        (write_long if args.layout == "long" else write_rows)(path, args.rows)
        size_mb = path.stat().st_size / 1e6
        print(f"{args.rows:,} {args.layout} rows, {size_mb:.1f} MB, loadavg {os.getloadavg()[0]:.2f}")
        print(f"{'parser':<12} {'wall_s':>8} {'cpu_s':>8} {'peak_rss_mb':>12} {'accepted':>9} {'rejected':>9}")
        results = {}
        for label, module in (("new", "mrv.samples.ingest"), ("baseline", args.baseline)):
            if module is None:
                continue
            out = subprocess.run([sys.executable, __file__, "--one", str(path), module], check=True,
                                 capture_output=True, text=True).stdout.split()  # fmt: skip
            results[label] = (float(out[0]), float(out[1]), float(out[2]))
            print(f"{label:<12} {out[0]:>8} {out[1]:>8} {out[2]:>12} {out[3]:>9} {out[4]:>9}")
        if len(results) == 2:
            w = results["baseline"][0] / results["new"][0]
            c = results["baseline"][1] / results["new"][1]
            m = results["baseline"][2] / results["new"][2]
            print(f"baseline/new: wall x{w:.1f}, cpu x{c:.1f}, peak memory x{m:.1f}; loadavg {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
