"""Regional monitoring run: region config -> imagery, samples, model, maps, accounting, report.

Tasks pass paths (strings), never arrays; every step's logic lives in :mod:`mrv.pipeline`.

Resume: every step except the report runs through :func:`mrv.pipeline.cache.run_cached`, so a
re-run of the same config (after a crash, ``kill -9`` or a failed task) skips the steps whose
outputs are complete and were made from the same inputs, config and code. The report (and its
manifest) is always rebuilt.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from mrv.config import RoundConfig, RunConfig, load_config
from mrv.dask_cluster import dask_client
from mrv.errors import ConfigError, MRVError
from mrv.pipeline import cache, steps
from mrv.pipeline.layout import RunLayout
from mrv.pipeline.report_step import build_report


def _setup(config_path: str, output_dir: str | None) -> tuple[RunConfig, RunLayout]:
    cfg = load_config(config_path, output_dir=output_dir)
    return cfg, RunLayout(cfg.output_dir.resolve())


def _round(cfg: RunConfig, name: str) -> RoundConfig:
    found = next((r for r in cfg.rounds if r.name == name), None)
    if found is None:
        raise ConfigError(f"Round {name!r} is not in {cfg.source_path}; use one of {[r.name for r in cfg.rounds]}.")
    return found


def retry_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Retry unexpected failures (I/O, network, a lost Dask worker), never expected user mistakes."""
    return not isinstance(state.data, MRVError)


def _log_step(spec: cache.StepSpec, ran: bool) -> None:
    get_run_logger().info("%s: %s", spec.name, "computed" if ran else "up to date, skipped (resume)")


@task(name="prepare-imagery", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient)
def prepare_imagery(config_path: str, output_dir: str | None, round_name: str) -> str:
    cfg, layout = _setup(config_path, output_dir)
    rnd = _round(cfg, round_name)
    spec = cache.imagery_step(cfg, rnd, layout)
    _log_step(spec, cache.run_cached(spec, lambda: steps.prepare_imagery(cfg, rnd, layout)))
    return str(layout.covariates(rnd.name))


@task(name="prepare-samples", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_transient)
def prepare_samples(config_path: str, output_dir: str | None, round_name: str) -> str:
    cfg, layout = _setup(config_path, output_dir)
    rnd = _round(cfg, round_name)
    spec = cache.samples_step(cfg, rnd, layout)
    _log_step(spec, cache.run_cached(spec, lambda: steps.prepare_samples(cfg, rnd, layout)))
    return str(layout.sites(rnd.name))


@task(name="fit-model", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_transient)
def fit_model(config_path: str, output_dir: str | None) -> str:
    cfg, layout = _setup(config_path, output_dir)
    spec = cache.model_step(cfg, layout)
    _log_step(spec, cache.run_cached(spec, lambda: steps.fit_model(cfg, layout)))
    return str(layout.model_dir / "model.pkl")


@task(name="predict-maps", retries=1, retry_delay_seconds=5, retry_condition_fn=retry_transient)
def predict_maps(config_path: str, output_dir: str | None) -> list[str]:
    cfg, layout = _setup(config_path, output_dir)
    written: list[str] = []
    with ExitStack() as stack:
        client: Any = None
        for rnd in cfg.rounds:
            spec = cache.predict_step(cfg, rnd, layout)

            def compute(rnd: RoundConfig = rnd) -> None:
                nonlocal client
                if client is None:  # start (or connect to) the cluster only when a round needs it
                    client = stack.enter_context(dask_client(cfg.dask))
                steps.predict_round(cfg, rnd, layout, client=client)

            _log_step(spec, cache.run_cached(spec, compute))
            written += [str(p) for p in spec.outputs]
    return written


@task(name="account", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_transient)
def account(config_path: str, output_dir: str | None) -> str:
    cfg, layout = _setup(config_path, output_dir)
    spec = cache.account_step(cfg, layout)
    _log_step(spec, cache.run_cached(spec, lambda: steps.account(cfg, layout)))
    return str(layout.accounting)


@task(name="build-report", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_transient)
def report(config_path: str, output_dir: str | None) -> str:
    cfg, layout = _setup(config_path, output_dir)
    return str(build_report(cfg, layout))


@flow(name="regional-monitoring", log_prints=False)
def regional_monitoring(config_path: str, output_dir: str | None = None) -> str:
    """Run the whole monitoring pipeline for one region config; returns the path of report.json.

    Re-running the same config resumes: finished steps (matching inputs, config and code) are skipped.
    """
    cfg, _ = _setup(config_path, output_dir)
    config_path = str(Path(config_path).resolve())
    output_dir = str(cfg.output_dir.resolve())
    prepared = []
    for rnd in cfg.rounds:
        prepared.append(prepare_imagery.submit(config_path, output_dir, rnd.name))
        prepared.append(prepare_samples.submit(config_path, output_dir, rnd.name))
    model = fit_model.submit(config_path, output_dir, wait_for=prepared, return_state=False)
    maps = predict_maps.submit(config_path, output_dir, wait_for=[model], return_state=False)
    accounted = account.submit(config_path, output_dir, wait_for=[maps], return_state=False)
    return report.submit(config_path, output_dir, wait_for=[accounted], return_state=False).result()
