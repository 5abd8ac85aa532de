"""Sample-store ingest at scale (issues 15.11 and 16.2): time and peak memory of a submission, beside today's path.

Cases (each run in a fresh subprocess, so the peak RSS is that of one ``submit_file`` call
plus its imports; the stored samples are written directly into the database beforehand):

* ``empty``: a 200,000-row lab file into an empty SQLite store;
* ``1M``: the same file into a store holding 1,000,000 samples of the same region and years;
* ``colocated``: 10,000 stored samples at one point (same date and depth), then a 2,000-row file
  of another agency, 50 of its samples at that point.

Targets: <= 20 s and <= 400 MB for each 200,000-row case. "Today's path" (column ``HEAD``) is the
code before this work: the parent of the first commit with the schema-3 store (``--baseline-rev``),
``git archive``-d into a temporary folder and imported instead of the editable install,
run on the same files, with a time limit (``--baseline-timeout``) because it can take minutes
or run out of memory. Prints one table with both and the machine's load average.

    python benchmarks/ingest.py                 # all cases, with the baseline
    python benchmarks/ingest.py --rows 20000 --stored 100000 --no-baseline   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HEADER = (
    "sample_id,site_id,field_id,x,y,epsg,sampling_date,top_cm,bottom_cm,soc_g_kg,"
    "bulk_density_g_cm3,coarse_fragments_vol_pct,method"
)
#: The region: 100 x 100 km of UTM 33N.
X0, Y0, SIZE_M = 500_000.0, 5_300_000.0, 100_000.0
BOUNDS = (X0, Y0, X0 + SIZE_M, Y0 + SIZE_M)
POINT = (X0 + 50_000.0, Y0 + 50_000.0)


def dates(rng: np.random.Generator, n: int, first: str, days: int) -> np.ndarray:
    start = np.datetime64(first)
    return (start + rng.integers(0, days, n).astype("timedelta64[D]")).astype(str)


def write_file(path: Path, n: int, *, seed: int, prefix: str, colocated: int = 0) -> Path:
    """``n`` lab rows spread over the region (the first ``colocated`` at ``POINT``), one 0-30 cm layer per site."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(BOUNDS[0], BOUNDS[2], n)
    y = rng.uniform(BOUNDS[1], BOUNDS[3], n)
    x[:colocated], y[:colocated] = POINT
    d = dates(rng, n, "2021-03-01", 4 * 365)
    d[:colocated] = "2021-05-01"
    soc = np.round(rng.lognormal(np.log(15.0), 0.35, n), 2)
    bd = np.round(rng.uniform(1.1, 1.6, n), 2)
    with path.open("w", encoding="utf-8") as fh:
        fh.write(HEADER + "\n")
        for i in range(n):
            fh.write(f"{prefix}{i},{prefix}P{i},F1,{x[i]:.2f},{y[i]:.2f},32633,{d[i]},0,30,{soc[i]},{bd[i]},5,dc\n")
    return path


# Runs in a subprocess with the code under test first on sys.path: fill a store directly.
POPULATE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import sqlalchemy as sa
    from mrv.samples import store as st
    url, n, seed, colocated, point = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
    bounds = json.loads(sys.argv[6])
    rng = np.random.default_rng(seed)
    x = rng.uniform(bounds[0], bounds[2], n); y = rng.uniform(bounds[1], bounds[3], n)
    x[:colocated], y[:colocated] = point
    start = np.datetime64("2019-03-01")
    d = (start + rng.integers(0, 5 * 365, n).astype("timedelta64[D]")).astype(str)
    d[:colocated] = "2021-05-01"
    soc = np.round(rng.lognormal(np.log(15.0), 0.35, n), 2)
    with st.SampleStore.open(url) as store, store.transaction() as conn:
        cols = {c.name for c in st.samples.columns}
        extra = {"profile_sha256": None} if "profile_sha256" in {c.name for c in st.submissions.columns} else {}
        sid = conn.execute(st.submissions.insert().values(agency="Archive", source="lab", format="lab_wide",
            filename="archive.csv", sha256="0" * 64, received_utc="2020-01-01T00:00:00+00:00", submitted=n,
            accepted=n, rejected=0, status="stored", reason=None, **extra).returning(
            st.submissions.c.submission_id)).scalar_one()
        for lo in range(0, n, 50_000):
            rows = []
            for i in range(lo, min(n, lo + 50_000)):
                r = {"submission_id": sid, "agency": "Archive", "row": i + 2, "sample_id": f"A{i}",
                     "site_id": f"AP{i}", "source": "lab", "submitter": "Archive", "field_id": "F1",
                     "x": float(x[i]), "y": float(y[i]), "crs": "EPSG:32633", "lon": None, "lat": None,
                     "sampling_date": str(d[i]), "top_cm": 0.0, "bottom_cm": 30.0, "soc_g_kg": float(soc[i]),
                     "bulk_density_g_cm3": 1.35, "coarse_fragments_vol_pct": 5.0, "method": "dc",
                     "qa_flag": ""}
                if "soc_sd_g_kg" in cols:
                    r.update(soc_sd_g_kg=None, gps_accuracy_m=None)
                if "gx" in cols:
                    r.update(gx=int(np.floor(x[i] / 1000.0)), gy=int(np.floor(y[i] / 1000.0)), ingest_flag="")
                rows.append(r)
            conn.execute(st.samples.insert(), rows)
    """
)

# Runs in a subprocess: one submission, then prints its time and peak RSS as JSON.
SUBMIT = textwrap.dedent(
    """
    import json, resource, sys, time, datetime as dt
    t0 = time.perf_counter()
    from mrv.resources import profile_dirs
    from mrv.samples.formats import load_format
    from mrv.samples.store import SampleStore
    from mrv.samples.submit import submit_file
    url, path, agency, bounds = sys.argv[1], sys.argv[2], sys.argv[3], tuple(json.loads(sys.argv[4]))
    fmt = load_format("lab_wide", search_dirs=profile_dirs("sample_formats"))
    imported = time.perf_counter()
    with SampleStore.open(url) as store:
        rep = submit_file(store, path, agency=agency, source="lab", fmt=fmt, project_crs="EPSG:32633",
                          region_bounds=bounds, today=dt.date(2026, 1, 1))
    done = time.perf_counter()
    print(json.dumps({"seconds": done - imported, "import_s": imported - t0,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "accepted": rep.submission.accepted, "flagged": rep.flagged}))
    """
)


# Put the code under test first: drop the editable install's import hook (it outranks sys.path) and
# prepend the tree, then check that ``mrv`` really comes from it.
PRELUDE = textwrap.dedent(
    """
    import os, sys
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")
                        and "editable" not in getattr(f, "__name__", "")]
    sys.path.insert(0, os.environ["MRV_BENCH_TREE"])
    import mrv
    assert os.path.dirname(os.path.dirname(os.path.abspath(mrv.__file__))) == os.path.abspath(os.environ["MRV_BENCH_TREE"]), mrv.__file__
    """
)


def run_py(code: str, args: list[str], tree: Path, timeout: float) -> dict[str, object]:
    env = {**os.environ, "MRV_BENCH_TREE": str(tree)}
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", PRELUDE + code, *args], env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"over the {timeout:g} s limit", "seconds": time.perf_counter() - started}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last[:80], "seconds": time.perf_counter() - started}
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def baseline_rev() -> str:
    """The parent of the first commit with the schema-3 sample store: the code before the issue 15/16 store work."""
    revs = subprocess.run(["git", "-C", str(REPO), "log", "--format=%H", "--", "mrv/samples/store.py"],
                          capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    first_v3 = None
    for rev in revs:  # newest first: the oldest commit with schema 3; its parent is the baseline
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:mrv/samples/store.py"],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
        if "SCHEMA_VERSION = 2" in text:
            break
        first_v3 = rev
    if first_v3 is None:
        return "HEAD"
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", f"{first_v3}^"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def head_tree(tmp: Path, rev: str) -> Path:
    """The ``mrv`` package of commit ``rev`` (``git archive REV mrv``), unpacked under ``tmp``."""
    out = tmp / "head"
    out.mkdir()
    archive = tmp / "head.tar"
    with archive.open("wb") as fh:
        subprocess.run(["git", "-C", str(REPO), "archive", rev, "mrv"], stdout=fh, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--stored", type=int, default=1_000_000)
    p.add_argument("--colocated", type=int, default=10_000)
    p.add_argument("--no-baseline", action="store_true", help="skip today's (committed) path")
    p.add_argument("--baseline-timeout", type=float, default=300.0)
    p.add_argument("--cases", default="empty,1M,colocated")
    p.add_argument("--baseline-rev", default=None, help="commit of today's path (default: the last schema-2 store)")
    args = p.parse_args(argv)
    cases = args.cases.split(",")
    bounds = json.dumps(BOUNDS)
    results: list[tuple[str, str, dict[str, object]]] = []
    with tempfile.TemporaryDirectory(prefix="mrv-bench-ingest-") as tmp_s:
        tmp = Path(tmp_s)
        big = write_file(tmp / "agency.csv", args.rows, seed=1, prefix="N")
        small = write_file(tmp / "near.csv", 2_000, seed=2, prefix="C", colocated=50)
        trees = {"now": REPO}
        if not args.no_baseline:
            rev = args.baseline_rev or baseline_rev()
            print(f"baseline: commit {rev[:10]}", file=sys.stderr, flush=True)
            trees["HEAD"] = head_tree(tmp, rev)
        for label, tree in trees.items():  # "HEAD": today's path (the baseline commit)
            limit = 3600.0 if label == "now" else args.baseline_timeout
            for case in cases:
                db = tmp / f"{label}-{case}.db"
                url = f"sqlite:///{db}"
                if case == "1M":
                    run_py(POPULATE, [url, str(args.stored), "3", "0", json.dumps(POINT), bounds], tree, 3600)
                if case == "colocated":
                    run_py(POPULATE, [url, str(args.colocated), "4", str(args.colocated), json.dumps(POINT), bounds],
                           tree, 3600)  # fmt: skip
                path = small if case == "colocated" else big
                res = run_py(SUBMIT, [url, str(path), "Agency", bounds], tree, limit)
                results.append((case, label, res))
                print(f"  {label:>4} {case:<9} {res}", file=sys.stderr, flush=True)
    load = os.getloadavg()
    print(f"\nSample-store ingest ({args.rows:,} rows; store of {args.stored:,}; {args.colocated:,} co-located), "
          f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores")  # fmt: skip
    print(f"{'case':<10} {'code':<5} {'seconds':>8} {'peak MB':>8} {'accepted':>9} {'flagged':>8}  note")
    by = {(c, label): r for c, label, r in results}
    for case in cases:
        for label in ("now", "HEAD"):
            r = by.get((case, label))
            if r is None:
                continue
            note = str(r.get("error", ""))
            secs = float(r.get("seconds", float("nan")))  # type: ignore[arg-type]
            peak = float(r.get("peak_mb", float("nan")))  # type: ignore[arg-type]
            print(f"{case:<10} {label:<5} {secs:>8.1f} {peak:>8.0f} {r.get('accepted', '-')!s:>9} "
                  f"{r.get('flagged', '-')!s:>8}  {note}")  # fmt: skip
        now, head = by.get((case, "now")), by.get((case, "HEAD"))
        if now and head and "error" not in now and "error" not in head:
            print(f"{'':<10} ratio HEAD/now: time {float(head['seconds']) / float(now['seconds']):.1f}x, "  # type: ignore[arg-type]
                  f"memory {float(head['peak_mb']) / float(now['peak_mb']):.1f}x")  # type: ignore[arg-type]  # fmt: skip
    print("targets: <= 20 s and <= 400 MB per 200,000-row submission")
    return 0


if __name__ == "__main__":
    sys.exit(main())
