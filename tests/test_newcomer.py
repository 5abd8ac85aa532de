"""A newcomer's first hour: a first ``mrv run`` with an empty HOME, the installed wheel outside the checkout,
and the local Prefect API's lifecycle (no orphaned server after ``kill -9``, a clear message for an
unwritable PREFECT_HOME)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from regions import region_config

from mrv.synthetic import SceneSpec

REPO = Path(__file__).resolve().parents[1]
SMALL = SceneSpec(seed=11, width_px=120, height_px=120, n_fields=4, n_lab_sites=40, n_crowd=10)


def _fresh_env(root: Path, **extra: str) -> dict[str, str]:
    """An environment as on a new machine: empty HOME, no Prefect API or profile, no credentials."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "LANG": "C.UTF-8",
    }
    env.update(extra)
    return env


def _children_named(pid: int, needle: str) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for k in kids:
        try:
            if needle in " ".join(k.cmdline()):
                out.append(k)
        except psutil.Error:
            continue
    return out


@pytest.mark.slow
def test_killed_run_leaves_no_prefect_server(tmp_path: Path) -> None:
    """``kill -9`` of ``mrv run`` takes its local Prefect API server with it (PR_SET_PDEATHSIG)."""
    config, _ = region_config(tmp_path, SMALL, name="killed", output_dir=tmp_path / "run")
    env = _fresh_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mrv.cli", "run", str(config), "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        servers: list[psutil.Process] = []
        while time.monotonic() < deadline and not servers and proc.poll() is None:
            servers = _children_named(proc.pid, "prefect.server.api.server:create_app")
            time.sleep(0.2)
        assert servers, "the run never started its local Prefect API"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(servers, timeout=20)
        assert not alive, f"Prefect API server left running: {[p.pid for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_unwritable_prefect_home_is_one_message(tmp_path: Path) -> None:
    config, _ = region_config(tmp_path, SMALL, name="home", output_dir=tmp_path / "run")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = _fresh_env(tmp_path, PREFECT_HOME=str(blocker / "prefect"))
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "mrv.cli", "run", str(config), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Prefect cannot write its directory" in proc.stderr
    assert "PREFECT_HOME" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < 120


@pytest.mark.slow
def test_installed_wheel_first_run_outside_the_checkout(tmp_path: Path) -> None:
    """The wheel carries every profile: a venv outside the repository resolves provider, format and
    methodology names, and its first ``mrv run`` with an empty HOME (no Prefect database yet) succeeds."""
    wheels = tmp_path / "wheels"
    source = tmp_path / "source"  # a copy, so the in-tree build leaves nothing in the checkout
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "out", "build", "*.egg-info",
                                                                "__pycache__", ".*_cache", "sample_data"))  # fmt: skip
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("soilcarbon_mrv-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3.*/site-packages"))
    # Dependencies come from the test environment's site-packages (a plain path line: its .pth files, such
    # as the editable install of the checkout, are not processed), the package itself from the wheel.
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "numpy").is_dir())
    (site / "zz_deps.pth").write_text(f"{deps}\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-deps",
         "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _fresh_env(tmp_path)
    py = str(venv / "bin" / "python")
    where = subprocess.run([py, "-c", "import mrv; print(mrv.__file__)"], env=env, cwd=work, capture_output=True, text=True)
    assert where.stdout.strip().startswith(str(site)), where

    config, _ = region_config(work, SMALL, name="wheel", output_dir=work / "run")
    raw = yaml.safe_load(config.read_text())
    raw["accounting"]["methodology"] = "verra_vm0042_v2"
    raw["rounds"][0]["samples"][0]["format"] = "lab_wide"
    config.write_text(yaml.safe_dump(raw))
    stac = dict(raw, imagery={"source": "stac", "provider": "earth_search_c1", "collection": "sentinel-2-c1-l2a"})
    stac_config = work / "stac.yaml"
    stac_config.write_text(yaml.safe_dump(stac))
    checked = subprocess.run(
        [str(venv / "bin" / "mrv"), "validate", str(stac_config)], env=env, cwd=work, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "imagery from stac (earth_search_c1)" in checked.stdout
    assert "methodology verra_vm0042_v2" in checked.stdout
    run = subprocess.run(
        [str(venv / "bin" / "mrv"), "run", str(config), "--no-progress"], env=env, cwd=work, capture_output=True,
        text=True, timeout=900, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    assert (work / "run" / "report.json").is_file()
    assert "Project (" in run.stdout
    assert (Path(env["HOME"]) / ".prefect").is_dir()  # Prefect's database was created by this first run
    # Quiet by default: no Dask/Prefect INFO chatter, no dashboard advertised.
    assert "INFO" not in run.stderr, run.stderr[-2000:]
    assert "dashboard" not in run.stderr.lower(), run.stderr[-2000:]


@pytest.mark.slow
def test_error_inside_a_task_is_one_message(tmp_path: Path) -> None:
    """An expected mistake that only shows inside a flow (no scenes in a round's dates) is unwrapped from
    Prefect's task and flow failures into the same single message."""
    config, _ = region_config(tmp_path, SMALL, name="noscenes", output_dir=tmp_path / "run")
    raw = yaml.safe_load(config.read_text())
    raw["rounds"][-1].update(start="2023-01-01", end="2023-01-31")  # the generated scenes are in other months
    config.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "mrv.cli", "run", str(config), "--no-progress"],
        env=_fresh_env(tmp_path), capture_output=True, text=True, timeout=600, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.startswith("error: No sentinel-2-l2a items"), proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1
