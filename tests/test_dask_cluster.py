"""Prediction on an existing Dask cluster (a real scheduler and two worker processes on 127.0.0.1).

The maps must equal those of a LocalCluster run, also when a worker is killed in the middle of
the prediction.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from regions import region_config

from mrv.config import DaskConfig, RunConfig, load_config
from mrv.dask_cluster import dask_client
from mrv.errors import ConfigError
from mrv.pipeline import plan
from mrv.pipeline.layout import RunLayout, StepPlace
from mrv.pipeline.model import predict_round
from mrv.raster import read_raster

pytestmark = pytest.mark.slow

DASK = Path(sys.executable).with_name("dask")
CHUNK_PX = 24


@dataclass(frozen=True)
class Prepared:
    cfg: RunConfig
    layout: RunLayout


@dataclass(frozen=True)
class ExternalCluster:
    address: str
    workers: tuple[subprocess.Popen[bytes], ...]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """A small region with covariates and a fitted model (steps run directly, without Prefect)."""
    from mrv.synthetic import SceneSpec

    root = tmp_path_factory.mktemp("dask")
    spec = SceneSpec(seed=7, width_px=120, height_px=120, n_fields=4, n_lab_sites=40, n_crowd=10)
    # Many small blocks: the prediction is spread over both workers.
    sections = {"imagery": {"chunk_px": CHUNK_PX}, "model": {"n_estimators": 80}}
    path, _ = region_config(root, spec, name="dask", output_dir=root / "run", sections=sections)
    cfg = load_config(path)
    layout = RunLayout(cfg.output_dir)
    plan.run_steps(cfg, layout, until="model")
    return Prepared(cfg, layout)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ExternalCluster]:
    """``dask scheduler`` + two single-threaded ``dask worker`` processes; always stopped afterwards."""
    from distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / log, "wb") as sink:
            proc = subprocess.Popen(
                [str(DASK), *args], env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        procs.append(proc)
        return proc

    try:
        start(["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], "scheduler.log")
        workers = tuple(
            start(
                [
                    "worker",
                    address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--name",
                    f"w{i}",
                    "--death-timeout",
                    "60",
                ],
                f"worker{i}.log",
            )  # fmt: skip
            for i in range(2)
        )
        with Client(address, timeout="60s", set_as_default=False) as client:
            client.wait_for_workers(2, timeout=120)
        yield ExternalCluster(address, workers)
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _predict(prep: Prepared, root: Path, dask_cfg: DaskConfig, round_name: str) -> dict[str, np.ndarray]:
    """Predict one round into ``root`` (from the run's model and covariates) and read the maps back."""
    cfg = replace(prep.cfg, dask=dask_cfg)
    model_dir, imagery_dir = prep.layout.model_dir, prep.layout.step_dir(StepPlace("imagery", round_name))
    (root / "maps").mkdir(parents=True)
    layout = (
        RunLayout(root)
        .placed(StepPlace("model"), model_dir)
        .placed(StepPlace("imagery", round_name), imagery_dir)
        .placed(StepPlace("maps", round_name), root / "maps")
    )
    rnd = next(r for r in cfg.rounds if r.name == round_name)
    with dask_client(cfg.dask) as client:
        paths = predict_round(cfg, rnd, layout, client=client)
    return {name: read_raster(p)[0] for name, p in paths.items()}


def _assert_same_maps(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for name in a:
        assert np.isfinite(a[name]).any(), name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def local_maps(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The last round's maps predicted on a LocalCluster: the reference."""
    root = tmp_path_factory.mktemp("local")
    return _predict(prepared, root, DaskConfig(n_workers=1), prepared.cfg.rounds[-1].name)


def test_existing_cluster_gives_the_local_cluster_maps(
    prepared: Prepared, cluster: ExternalCluster, local_maps: dict[str, np.ndarray], tmp_path: Path
) -> None:
    rnd = prepared.cfg.rounds[-1].name
    external = _predict(prepared, tmp_path / "external", DaskConfig(address=cluster.address), rnd)
    _assert_same_maps(local_maps, external)


def test_prediction_survives_losing_a_worker(
    prepared: Prepared, cluster: ExternalCluster, local_maps: dict[str, np.ndarray], tmp_path: Path
) -> None:
    from distributed import Client

    rnd = prepared.cfg.rounds[-1].name
    result: dict[str, dict[str, np.ndarray]] = {}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result["maps"] = _predict(prepared, tmp_path / "lossy", DaskConfig(address=cluster.address), rnd)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    victim = cluster.workers[0]
    with Client(cluster.address, timeout="30s", set_as_default=False) as monitor:
        names = {info["name"]: addr for addr, info in monitor.scheduler_info(n_workers=-1)["workers"].items()}
        victim_addr = names["w0"]
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        deadline = time.monotonic() + 120
        while not any("predict-soc" in str(k) for k in monitor.processing([victim_addr])[victim_addr]):
            assert worker.is_alive(), f"the prediction ended before any block ran on the victim worker: {errors}"
            assert time.monotonic() < deadline, "no prediction block was scheduled on the victim worker"
            time.sleep(0.01)
        os.killpg(victim.pid, signal.SIGKILL)  # worker lost in the middle of the prediction
        assert worker.is_alive(), "the prediction finished before the worker was killed"
        worker.join(timeout=300)
        assert not worker.is_alive(), "the prediction did not finish after losing a worker"
        assert victim.wait(timeout=10) == -signal.SIGKILL
        remaining = [info["name"] for info in monitor.scheduler_info(n_workers=-1)["workers"].values()]
    assert not errors, errors
    assert remaining == ["w1"]
    _assert_same_maps(local_maps, result["maps"])


@pytest.mark.usefixtures("prefect_api")
def test_flow_on_the_cluster_survives_a_lost_worker_and_matches_the_local_run(
    prepared: Prepared, cluster: ExternalCluster, local_maps: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """The whole regional_monitoring flow on the external cluster: tiles fan out over both workers
    (prefect-dask DaskTaskRunner), one worker is killed after the first tile, the run completes on the
    other and gives the covariates and maps of the LocalCluster run."""
    from flows.regional_monitoring import regional_monitoring

    raw = yaml.safe_load(prepared.cfg.source_path.read_text())
    raw["imagery"]["tile_px"] = 64
    raw["dask"] = {"address": cluster.address}
    cfg_path = tmp_path / "on_cluster.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    layout = RunLayout(tmp_path / "run")

    def tile_summaries() -> list[dict[str, Any]]:
        found = [p for p in layout.root.glob("work/*/tiles/*/tile.json") if not p.parent.name.startswith(".")]
        return [json.loads(p.read_text()) for p in found]

    killed = threading.Event()

    def kill_after_first_tile() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not tile_summaries():
            time.sleep(0.02)
        os.killpg(cluster.workers[0].pid, signal.SIGKILL)
        killed.set()

    watcher = threading.Thread(target=kill_after_first_tile, daemon=True)
    watcher.start()
    regional_monitoring(str(cfg_path), str(layout.root))
    watcher.join(timeout=10)
    assert killed.is_set()
    assert cluster.workers[0].wait(timeout=10) == -signal.SIGKILL

    summaries = tile_summaries()
    n_tiles = len(summaries)
    assert n_tiles >= 2 * len(prepared.cfg.rounds)
    assert {s["computed_by"]["pid"] for s in summaries} <= {w.pid for w in cluster.workers}, "tiles ran off-cluster"
    for rnd in prepared.cfg.rounds:
        tiled, _, _ = read_raster(layout.covariates(rnd.name))
        whole, _, _ = read_raster(prepared.layout.covariates(rnd.name))
        np.testing.assert_array_equal(tiled, whole)
    last = prepared.cfg.rounds[-1].name
    _assert_same_maps(local_maps, {name: read_raster(p)[0] for name, p in layout.round_maps(last).items()})
    assert (layout.root / "report.json").is_file()


def test_scheduler_without_workers_fails_with_a_clear_message() -> None:
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with (
            pytest.raises(ConfigError, match="has no workers"),
            dask_client(DaskConfig(address=address), connect_timeout_s=60, worker_timeout_s=2),
        ):
            pass
    finally:
        _stop(proc)
