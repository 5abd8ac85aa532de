"""Crash-safe resume: the step cache (fast unit tests) and a real ``kill -9`` of ``mrv run`` (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from regions import region_config, run_env

from mrv.pipeline import cache
from mrv.pipeline.cache import StepSpec, run_cached
from mrv.pipeline.layout import STEP_RECORD, RunLayout, StepPlace

# ------------------------------------------------------------------------------- step cache

TOY = StepPlace("toy")


def _spec(tmp: Path, *, config: dict[str, Any] | None = None) -> StepSpec:
    return StepSpec(
        name="double", place=TOY, inputs=(tmp / "in.txt",), config=config or {"factor": 2}, outputs=("a.txt", "b.txt")
    )


class _Step:
    """A toy step: writes 2 outputs derived from the input into its (staging) directory, counts its runs."""

    def __init__(self, spec: StepSpec) -> None:
        self.spec = spec
        self.runs = 0

    def __call__(self, layout: RunLayout) -> None:
        self.runs += 1
        text = self.spec.inputs[0].read_text()
        for name in self.spec.outputs:
            (layout.step_dir(self.spec.place) / name).write_text(text * int(self.spec.config["factor"]))


def _keyed(layout: RunLayout, spec: StepSpec) -> Path:
    return layout.keyed_dir(spec.place, cache.step_key(spec).digest)


def _entries(layout: RunLayout) -> list[str]:
    """Names beside the toy step's keyed directories (keyed, staging and damaged directories, the pointer)."""
    base = layout.base(TOY)
    return sorted(p.name for p in base.iterdir()) if base.is_dir() else []


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


@pytest.fixture
def pinned_code(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(cache.CODE_VERSION_ENV, "unit-test")
    cache.code_version.cache_clear()
    yield
    cache.code_version.cache_clear()


@pytest.mark.usefixtures("pinned_code")
def test_finished_step_is_skipped_and_changed_inputs_rerun(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    layout = RunLayout(tmp_path / "run")
    step = _Step(_spec(tmp_path))
    assert run_cached(step.spec, layout, step) is True
    keyed = _keyed(layout, step.spec)
    assert keyed.name == f"toy-{cache.step_key(step.spec).digest[:16]}"
    assert layout.step_dir(TOY) == keyed  # the pointer names it
    assert _entries(layout) == sorted([keyed.name, "toy.current"])  # the staging directory became the keyed one
    record = json.loads((keyed / STEP_RECORD).read_text())
    assert record["step"] == "double"
    assert record["key"] == cache.step_key(step.spec).digest
    assert set(record["outputs"]) == {"a.txt", "b.txt"}
    assert (keyed / "a.txt").read_text() == "xx"
    before = _snapshot(keyed)

    assert run_cached(step.spec, layout, step) is False  # up to date: not run, not rewritten
    assert step.runs == 1
    assert _snapshot(keyed) == before

    (tmp_path / "in.txt").write_text("y")  # changed input content: another key, another directory
    assert run_cached(step.spec, layout, step) is True
    assert step.runs == 2
    assert layout.step_dir(TOY) != keyed
    assert (layout.step_dir(TOY) / "b.txt").read_text() == "yy"
    assert _snapshot(keyed) == before  # the earlier directory is kept as it was


def _killed_mid_step(tmp: Path, layout: RunLayout) -> None:
    """In a forked child: the step writes its outputs and is killed (SIGKILL) before the cache records it."""

    def die(lay: RunLayout) -> None:
        for name in ("a.txt", "b.txt"):
            (lay.step_dir(TOY) / name).write_text("xx")
        os.kill(os.getpid(), signal.SIGKILL)

    run_cached(_spec(tmp), layout, die)


@pytest.mark.usefixtures("pinned_code")
def test_crash_before_the_record_leaves_only_a_staging_dir_and_the_step_reruns(tmp_path: Path) -> None:
    import multiprocessing

    (tmp_path / "in.txt").write_text("x")
    layout = RunLayout(tmp_path / "run")
    child = multiprocessing.get_context("fork").Process(target=_killed_mid_step, args=(tmp_path, layout))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    spec = _spec(tmp_path)
    keyed = _keyed(layout, spec)
    (staging,) = _entries(layout)  # no keyed directory, no pointer: only the staging directory
    assert staging.startswith(f".{keyed.name}.partial-")
    assert sorted(p.name for p in (layout.base(TOY) / staging).iterdir()) == ["a.txt", "b.txt"]  # no step.json

    step = _Step(spec)
    assert run_cached(spec, layout, step) is True  # not mistaken for finished: rerun
    assert step.runs == 1
    assert layout.step_dir(TOY) == keyed
    assert cache.is_done(keyed, spec, cache.step_key(spec))
    assert run_cached(spec, layout, step) is False


@pytest.mark.usefixtures("pinned_code")
def test_damaged_output_moves_the_keyed_dir_aside_and_reruns(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    layout = RunLayout(tmp_path / "run")
    step = _Step(_spec(tmp_path))
    run_cached(step.spec, layout, step)
    keyed = _keyed(layout, step.spec)

    (keyed / "b.txt").write_text("truncated")  # an output changed after the step finished
    assert run_cached(step.spec, layout, step) is True
    assert step.runs == 2
    assert (keyed / "b.txt").read_text() == "xx"  # recomputed into a fresh directory of the same key
    damaged = [n for n in _entries(layout) if n.startswith(f".{keyed.name}.damaged-")]
    assert len(damaged) == 1, _entries(layout)
    assert (layout.base(TOY) / damaged[0] / "b.txt").read_text() == "truncated"  # kept for inspection
    assert sorted(_entries(layout)) == sorted([keyed.name, "toy.current", damaged[0]])

    (keyed / "a.txt").unlink()  # a deleted output, too
    assert run_cached(step.spec, layout, step) is True
    assert (keyed / "a.txt").read_text() == "xx"
    assert step.runs == 3


@pytest.mark.usefixtures("pinned_code")
def test_failing_step_leaves_no_keyed_dir(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    layout = RunLayout(tmp_path / "run")
    step = _Step(_spec(tmp_path))
    run_cached(step.spec, layout, step)
    first = _keyed(layout, step.spec)
    (tmp_path / "in.txt").write_text("y")

    def boom(lay: RunLayout) -> None:
        (lay.step_dir(TOY) / "a.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_cached(step.spec, layout, boom)
    assert not _keyed(layout, step.spec).exists()
    assert _entries(layout) == sorted([first.name, "toy.current"])  # its staging directory was removed
    assert layout.step_dir(TOY) == first  # the pointer still names the last finished directory
    assert run_cached(step.spec, layout, step) is True
    assert (layout.step_dir(TOY) / "a.txt").read_text() == "yy"


@pytest.mark.usefixtures("pinned_code")
def test_step_missing_a_declared_output_is_not_recorded(tmp_path: Path) -> None:
    from mrv.errors import MRVError

    (tmp_path / "in.txt").write_text("x")
    layout = RunLayout(tmp_path / "run")
    spec = _spec(tmp_path)
    with pytest.raises(MRVError, match="without writing b.txt"):
        run_cached(spec, layout, lambda lay: (lay.step_dir(TOY) / "a.txt").write_text("xx"))
    assert _entries(layout) == []


@pytest.mark.usefixtures("pinned_code")
def test_changed_config_writes_a_new_keyed_dir_and_keeps_the_old_one(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    layout = RunLayout(tmp_path / "run")
    step = _Step(_spec(tmp_path))
    run_cached(step.spec, layout, step)
    old = _keyed(layout, step.spec)
    before = _snapshot(old)

    changed = _Step(_spec(tmp_path, config={"factor": 3}))  # changed config value
    assert run_cached(changed.spec, layout, changed) is True
    new = _keyed(layout, changed.spec)
    assert new != old
    assert layout.step_dir(TOY) == new
    assert (new / "a.txt").read_text() == "xxx"
    assert json.loads((new / STEP_RECORD).read_text())["config"] == {"factor": 3}
    assert _snapshot(old) == before  # byte for byte, same inodes, untouched
    assert run_cached(changed.spec, layout, changed) is False

    assert run_cached(step.spec, layout, step) is False  # back to the first value: its directory is reused
    assert layout.step_dir(TOY) == old
    assert step.runs == 1
    assert _snapshot(old) == before


def test_code_version_follows_sources_unless_pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    before = cache.source_digest(pkg)
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert cache.source_digest(pkg) != before

    monkeypatch.delenv(cache.CODE_VERSION_ENV, raising=False)
    cache.code_version.cache_clear()
    assert "+src." in cache.code_version()
    monkeypatch.setenv(cache.CODE_VERSION_ENV, "v1.2")
    cache.code_version.cache_clear()
    assert cache.code_version().endswith("+pinned.v1.2")
    cache.code_version.cache_clear()


def test_missing_input_says_what_to_do(tmp_path: Path) -> None:
    from mrv.errors import MRVError

    with pytest.raises(MRVError, match="does not exist"):
        cache.hash_input(tmp_path / "nope.tif")


# --------------------------------------------------------------------- kill -9 and resume


def _write_config(root: Path) -> Path:
    from mrv.synthetic import SceneSpec

    spec = SceneSpec(seed=7, width_px=120, height_px=120, n_fields=4, n_lab_sites=40, n_crowd=10)
    sections = {
        "imagery": {"tile_px": 48, "chunk_px": 48},  # several tiles per round, composited one at a time
        "model": {"n_estimators": 40},
        "accounting": {"n_simulations": 100},
        "dask": {"n_workers": 1},
    }
    return region_config(root, spec, name="resume", output_dir=root / "unused", sections=sections)[0]


def _close(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict), path
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list), path
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_with_identical_results(tmp_path: Path, prefect_api: str) -> None:
    from flows.regional_monitoring import regional_monitoring
    from mrv.raster import read_raster

    cfg_path = _write_config(tmp_path)
    rounds = [r["name"] for r in yaml.safe_load(cfg_path.read_text())["rounds"]]
    # The source tree may be edited while this test runs; pin the code version for both runs.
    env = run_env(tmp_path, prefect_api, MRV_CODE_VERSION="resume-test")
    run = RunLayout(tmp_path / "run")
    cmd = [sys.executable, "-m", "mrv.cli", "run", str(cfg_path), "-o", str(run.root)]

    first_log = tmp_path / "first_run.log"
    with open(first_log, "wb") as sink:  # a file, not a pipe nobody reads while the run goes on
        first = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    first_tile = StepPlace("tile", rounds[0], "r000c000")
    done_marker = run.pointer(first_tile)  # written once the tile's keyed directory is complete
    killed = threading.Event()

    def kill_when_first_tile_is_finished() -> None:
        deadline = time.monotonic() + 300
        while first.poll() is None and time.monotonic() < deadline:
            if done_marker.exists():
                os.killpg(first.pid, signal.SIGKILL)  # the run and its Dask workers: its whole session
                killed.set()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_when_first_tile_is_finished, daemon=True)
    watcher.start()
    reference = RunLayout(tmp_path / "reference")
    try:
        # Meanwhile, an uninterrupted run of the same config in this process.
        regional_monitoring(str(cfg_path), str(reference.root))
        watcher.join(timeout=330)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    output = first_log.read_text(errors="replace")
    assert killed.is_set(), f"the first run was not killed after its first imagery tile:\n{output}"
    assert not (run.root / "report.json").exists(), "the run finished before it was killed; nothing was resumed"
    assert not run.pointer(StepPlace("accounting")).exists()
    assert not list(run.root.glob("work/accounting-*"))

    finished = [d for d in run.root.glob("work/*/tiles/r*-*") if (d / STEP_RECORD).is_file()]
    assert run.step_dir(first_tile) in finished
    assert not list(run.work(rounds[-1]).glob("imagery-*")), "the imagery was complete when the run was killed"
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for d in finished for p in d.iterdir()}
    assert len(before) >= 3 * len(finished)  # tile.tif, tile.json, step.json

    t0 = time.monotonic()
    verbose = [*cmd[:3], "-v", *cmd[3:], "--progress"]  # step logs (INFO) are shown with --verbose only
    second = subprocess.run(verbose, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400, check=False)
    resumed_s = time.monotonic() - t0
    log = second.stdout + second.stderr
    assert second.returncode == 0, log
    assert f"prepare-imagery[{rounds[0]}/r000c000]: up to date, skipped (resume)" in log, log[-6000:]
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in before}
    assert after == before, "finished imagery tiles were rewritten by the resumed run"
    assert run.step_dir(first_tile) in finished  # the resumed run uses the tile directory the killed run finished
    assert "imagery tiles: 100%" in second.stderr, second.stderr  # the CLI's progress bars
    assert f"predict {rounds[-1]}: 100%" in second.stderr, second.stderr

    got = json.loads((run.root / "report.json").read_text())
    want = json.loads((reference.root / "report.json").read_text())
    for key in ("project", "fields", "uncertainty", "samples", "deductions"):
        _close(want[key], got[key], key)
    _close(want["model"]["cv"], got["model"]["cv"], "model.cv")
    for r in rounds:
        for name in ("mean", "sd", "p05", "p95"):
            a, _, _ = read_raster(reference.round_maps(r)[name])
            b, _, _ = read_raster(run.round_maps(r)[name])
            np.testing.assert_array_equal(a, b)
    sys.stderr.write(f"resumed run took {resumed_s:.1f} s\n")
