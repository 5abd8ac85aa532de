"""Regional monitoring run: region config -> imagery, samples, model, maps, accounting, report.

Tasks pass paths (strings), never arrays; every step's logic lives in :mod:`mrv.pipeline`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from mrv.config import RunConfig, load_config
from mrv.dask_cluster import dask_client
from mrv.pipeline import steps
from mrv.pipeline.layout import RunLayout
from mrv.pipeline.report_step import build_report


def _setup(config_path: str, output_dir: str | None) -> tuple[RunConfig, RunLayout]:
    cfg = load_config(config_path, output_dir=output_dir)
    return cfg, RunLayout(cfg.output_dir.resolve())


def _round(cfg: RunConfig, name: str):
    return next(r for r in cfg.rounds if r.name == name)


@task(name="prepare-imagery", retries=2, retry_delay_seconds=5)
def prepare_imagery(config_path: str, output_dir: str | None, round_name: str) -> str:
    cfg, layout = _setup(config_path, output_dir)
    return str(steps.prepare_imagery(cfg, _round(cfg, round_name), layout))


@task(name="prepare-samples")
def prepare_samples(config_path: str, output_dir: str | None, round_name: str) -> str:
    cfg, layout = _setup(config_path, output_dir)
    return str(steps.prepare_samples(cfg, _round(cfg, round_name), layout))


@task(name="fit-model")
def fit_model(config_path: str, output_dir: str | None) -> str:
    cfg, layout = _setup(config_path, output_dir)
    return str(steps.fit_model(cfg, layout))


@task(name="predict-maps")
def predict_maps(config_path: str, output_dir: str | None) -> list[str]:
    cfg, layout = _setup(config_path, output_dir)
    written = []
    with dask_client(cfg.dask) as client:
        for rnd in cfg.rounds:
            written += [str(p) for p in steps.predict_round(cfg, rnd, layout, client=client).values()]
    return written


@task(name="account")
def account(config_path: str, output_dir: str | None) -> str:
    cfg, layout = _setup(config_path, output_dir)
    return str(steps.account(cfg, layout))


@task(name="build-report")
def report(config_path: str, output_dir: str | None) -> str:
    cfg, layout = _setup(config_path, output_dir)
    return str(build_report(cfg, layout))


@flow(name="regional-monitoring", log_prints=False)
def regional_monitoring(config_path: str, output_dir: str | None = None) -> str:
    """Run the whole monitoring pipeline for one region config; returns the path of report.json."""
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
