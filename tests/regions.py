"""A generated region plus a run config for it, built from ``configs/demo.yaml``, and ``mrv run`` as a subprocess
(shared by the flow tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from mrv.synthetic import RegionPaths, SceneSpec, build_region

REPO = Path(__file__).resolve().parents[1]


def region_config(
    root: Path, spec: SceneSpec, *, name: str, output_dir: Path, sections: dict[str, dict[str, Any]] | None = None
) -> tuple[Path, RegionPaths]:
    """Build ``spec`` under ``root/region`` and write ``root/<name>.yaml``: the demo config pointed at it,
    lab samples only, with ``sections`` merged into the top-level sections (e.g. ``{"model": {...}}``)."""
    region = build_region(root / "region", spec)
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg.update(name=name, output_dir=str(output_dir))
    cfg["region"]["fields"] = str(region.fields)
    cfg["imagery"]["catalog"] = str(region.collection)
    for key, values in (sections or {}).items():
        cfg[key].update(values)
    for rnd in cfg["rounds"]:
        rnd["samples"] = [
            {"path": str(region.lab_samples[rnd["name"]]), "source": "lab", "format": "lab_wide", "submitter": "agency"}
        ]
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, region


def run_env(root: Path, prefect_api: str, **extra: str) -> dict[str, str]:
    """Environment of an ``mrv run`` subprocess on the session's Prefect test server (no ``SH_*`` credentials)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SH_")}
    env.update(
        PREFECT_API_URL=prefect_api,
        PREFECT_HOME=str(root / "prefect_home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


MrvRun = tuple[subprocess.Popen[bytes], Path]


def start_mrv_run(config: Path, run_dir: Path, env: dict[str, str], log: Path, *args: str) -> MrvRun:
    """``mrv run CONFIG -o RUN_DIR [args]`` in the background, its output going to ``log``."""
    cmd = [sys.executable, "-m", "mrv.cli", "run", str(config), "-o", str(run_dir), *(args or ("--no-progress",))]
    with log.open("wb") as sink:  # a file, not a pipe nobody reads while the run goes on
        proc = subprocess.Popen(
            cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    return proc, log


def finish_mrv_run(run: MrvRun, name: str, *, timeout_s: float = 600) -> None:
    """Wait for a run of :func:`start_mrv_run` and fail with the end of its log unless it exited 0."""
    proc, log = run
    try:
        code = proc.wait(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert code == 0, f"mrv run ({name}) failed:\n{log.read_text(errors='replace')[-6000:]}"
