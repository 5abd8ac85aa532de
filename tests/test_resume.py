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
from mrv.pipeline.cache import StepSpec, run_cached, sidecar_path

# ------------------------------------------------------------------------------- step cache


def _spec(tmp: Path, *, config: dict[str, Any] | None = None) -> StepSpec:
    return StepSpec(
        name="double",
        inputs=(tmp / "in.txt",),
        config=config or {"factor": 2},
        outputs=(tmp / "out" / "a.txt", tmp / "out" / "b.txt"),
    )


class _Step:
    """A toy step: writes 2 outputs derived from the input, counts its runs."""

    def __init__(self, spec: StepSpec) -> None:
        self.spec = spec
        self.runs = 0

    def __call__(self) -> None:
        self.runs += 1
        text = self.spec.inputs[0].read_text()
        for out in self.spec.outputs:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text * int(self.spec.config["factor"]))


@pytest.fixture
def pinned_code(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(cache.CODE_VERSION_ENV, "unit-test")
    cache.code_version.cache_clear()
    yield
    cache.code_version.cache_clear()


@pytest.mark.usefixtures("pinned_code")
def test_finished_step_is_skipped_and_changed_inputs_rerun(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    step = _Step(_spec(tmp_path))
    assert run_cached(step.spec, step) is True
    side = sidecar_path(step.spec.outputs[0])
    record = json.loads(side.read_text())
    assert record["step"] == "double"
    assert set(record["outputs"]) == {"a.txt", "b.txt"}
    stat = step.spec.outputs[0].stat()

    assert run_cached(step.spec, step) is False  # up to date: not run, not rewritten
    assert step.runs == 1
    assert step.spec.outputs[0].stat().st_mtime_ns == stat.st_mtime_ns

    (tmp_path / "in.txt").write_text("y")  # changed input content
    assert run_cached(step.spec, step) is True
    assert step.spec.outputs[1].read_text() == "yy"

    changed = _Step(_spec(tmp_path, config={"factor": 3}))  # changed config value
    assert run_cached(changed.spec, changed) is True
    assert run_cached(changed.spec, changed) is False


@pytest.mark.usefixtures("pinned_code")
def test_crash_before_sidecar_or_damaged_output_reruns(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    step = _Step(_spec(tmp_path))
    run_cached(step.spec, step)

    sidecar_path(step.spec.outputs[0]).unlink()  # killed after writing outputs, before the commit record
    assert run_cached(step.spec, step) is True

    step.spec.outputs[1].write_text("truncated")  # an output changed after the step finished
    assert run_cached(step.spec, step) is True
    assert step.spec.outputs[1].read_text() == "xx"
    assert step.runs == 3


@pytest.mark.usefixtures("pinned_code")
def test_failing_step_leaves_no_sidecar(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    step = _Step(_spec(tmp_path))
    run_cached(step.spec, step)
    (tmp_path / "in.txt").write_text("y")

    def boom() -> None:
        step.spec.outputs[0].write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_cached(step.spec, boom)
    assert not sidecar_path(step.spec.outputs[0]).exists()  # the stale record was removed first
    assert run_cached(step.spec, step) is True


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
    from mrv.pipeline.layout import RunLayout
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
    done_marker = sidecar_path(run.imagery_tile(rounds[0], "r000c000"))
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
    assert not sidecar_path(run.accounting).exists()

    finished = [p for p in run.root.glob("work/*/tiles/*.tif") if sidecar_path(p).exists()]
    assert run.imagery_tile(rounds[0], "r000c000") in finished
    assert not sidecar_path(run.covariates(rounds[-1])).exists(), "the imagery was complete when the run was killed"
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished}
    before |= {sidecar_path(p): (sidecar_path(p).stat().st_ino, sidecar_path(p).stat().st_mtime_ns) for p in finished}

    t0 = time.monotonic()
    verbose = [*cmd[:3], "-v", *cmd[3:], "--progress"]  # step logs (INFO) are shown with --verbose only
    second = subprocess.run(verbose, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400, check=False)
    resumed_s = time.monotonic() - t0
    log = second.stdout + second.stderr
    assert second.returncode == 0, log
    assert f"prepare-imagery[{rounds[0]}/r000c000]: up to date, skipped (resume)" in log, log[-6000:]
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in before}
    assert after == before, "finished imagery tiles were rewritten by the resumed run"
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
