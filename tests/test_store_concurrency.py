"""Issue 16.1: agencies that submit at once are all stored, exactly once (SQLite and PostgreSQL).

Four processes submit a file each while the parent holds the write lock; once every one of them
reports that it is waiting for the lock (``on_wait``, every 0.2 s here), the parent lets go. So the
four really queue at once -- for as long as the parent likes, with no fixed 30 s failure -- and then
one after another: every file is stored, once; a resubmission of any of them is a no-op. What is
tested is the lock and the transaction, not volume: 4,000 rows a file are enough for each write
to take a while and for the queue to be contended after the parent lets go.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from test_store import FORMATS, HEADER, TODAY

from mrv.samples import store as store_mod
from mrv.samples.formats import load_format
from mrv.samples.store import SampleStore, list_submissions
from mrv.samples.submit import submit_file

ROWS = 4_000
#: Seconds between a waiting writer's reports (the store's default is 10 s).
WAIT_NOTE_S = 0.2
FILES = 4
BOUNDS = (500_000.0, 5_300_000.0, 600_000.0, 5_400_000.0)


def _file(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.uniform(BOUNDS[0], BOUNDS[2], n)
    y = rng.uniform(BOUNDS[1], BOUNDS[3], n)
    soc = np.round(rng.uniform(5, 40, n), 2)
    with path.open("w", encoding="utf-8") as fh:
        fh.write(HEADER + "\n")
        fh.writelines(
            f"A{seed}-{i},P{seed}-{i},F1,{x[i]:.2f},{y[i]:.2f},32633,2022-05-01,0,30,{soc[i]},1.3,5,dc\n" for i in range(n)
        )
    return path


def _child(url: str, path: str, barrier: Any, results: Any) -> None:
    name = Path(path).stem
    try:
        fmt = load_format("lab_wide", search_dirs=FORMATS)
        with SampleStore.open(url, lock_timeout_s=600.0, on_wait=lambda s: results.put(("waiting", name, s, 0.0))) as store:
            barrier.wait(timeout=60)
            started = time.monotonic()
            rep = submit_file(store, path, agency=f"Agency-{name}", source="lab", fmt=fmt,
                              project_crs="EPSG:32633", region_bounds=BOUNDS, today=TODAY)  # fmt: skip
        results.put((rep.submission_id, rep.submission.accepted, rep.duplicate_of, time.monotonic() - started))
    except BaseException as exc:  # reported to the parent
        results.put(("error", repr(exc), None, 0.0))


def _hold_lock_until_all_wait(store: SampleStore, results: Any, n: int) -> list[tuple[Any, ...]]:
    """Hold the write lock until ``n`` distinct writers reported waiting for it; returns the other messages."""
    waiting: set[str] = set()
    other: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + 300
    with store.transaction():
        while len(waiting) < n:
            assert time.monotonic() < deadline, f"only {sorted(waiting)} waited for the lock; other messages: {other}"
            msg = results.get(timeout=300)
            if msg[0] == "waiting":
                waiting.add(msg[1])
            else:
                other.append(msg)
                assert msg[0] != "error", msg
    return other


def test_four_queued_submissions_are_all_stored_exactly_once(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "WAIT_NOTE_S", WAIT_NOTE_S)  # inherited by the forked writers
    paths = [_file(tmp_path / f"f{k}.csv", ROWS, k) for k in range(FILES)]
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(FILES), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(store_url, str(p), barrier, results)) for p in paths]
    with SampleStore.open(store_url) as holder:  # schema first: the children race only for the write lock
        # No SQLite file descriptor may cross the fork: a child closing an inherited one drops its own POSIX
        # locks on the database, letting another writer in mid-transaction (sqlite.org/howtocorrupt.html, 2.6).
        holder.engine.dispose()
        for p in procs:
            p.start()
        early = _hold_lock_until_all_wait(holder, results, FILES)
    assert not early, f"a writer finished while the lock was held: {early}"
    out: list[tuple[Any, ...]] = []
    while len(out) < FILES:
        msg = results.get(timeout=300)
        if msg[0] != "waiting":  # writers queued behind each other report waiting again
            out.append(msg)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert not [r for r in out if r[0] == "error"], out
    assert sorted(r[1] for r in out) == [ROWS] * FILES
    assert all(r[2] is None for r in out)
    with SampleStore.open(store_url) as store:
        subs = list_submissions(store)
        assert [(s.status, s.accepted) for s in subs] == [("stored", ROWS)] * FILES, [(s.submission_id, s.status, s.accepted) for s in subs]
        with store.engine.connect() as conn:
            n = conn.execute(sa.text("SELECT count(*), count(DISTINCT agency || '/' || sample_id) FROM samples")).one()
        assert tuple(n) == (ROWS * FILES, ROWS * FILES)
        fmt = load_format("lab_wide", search_dirs=FORMATS)
        again = submit_file(store, paths[0], agency="Agency-f0", source="lab", fmt=fmt, project_crs="EPSG:32633",
                            region_bounds=BOUNDS, today=TODAY)  # fmt: skip
        assert again.duplicate_of is not None
        assert len(list_submissions(store)) == FILES
