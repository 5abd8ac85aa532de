"""Regional monitoring run: region config -> imagery, samples, model, maps, accounting, report.

Tasks pass paths (strings), never arrays; every step and its cache spec live in its stage module
(:mod:`mrv.pipeline.imagery`, ``samples``, ``model``, ``accounting``); this module only wires them.

Resume: every step except the report runs through :func:`mrv.pipeline.cache.run_cached` into a
directory keyed on its inputs, config and code, so a re-run of the same config (after a crash,
``kill -9`` or a failed task) skips the steps whose keyed directory is complete, and a changed
config writes new directories beside the old ones. The report (and its manifest) is always rebuilt.

Scale-out: imagery is composited tile by tile (``imagery.tile_px``) in the ``prepare-imagery``
subflow, whose tasks run on the Dask cluster at ``dask.address`` through prefect-dask's
``DaskTaskRunner`` (local threads otherwise) and are mosaicked per round; prediction maps the
whole region block by block on one Dask client opened once for all rounds (:func:`mrv.pipeline.model.predict_round`).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.client.schemas.objects import TaskRun
from prefect.futures import as_completed
from prefect.states import State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from mrv import progress
from mrv.config import RoundConfig, RunConfig, load_config
from mrv.dask_cluster import dask_client
from mrv.errors import ConfigError, MRVError
from mrv.pipeline import accounting, cache, imagery, model, samples
from mrv.pipeline.layout import RunLayout
from mrv.report.build import build_report


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


@task(name="prepare-imagery-tile", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient)
def prepare_imagery_tile(config_path: str, output_dir: str | None, round_name: str, tile_name: str) -> str:
    cfg, layout = _setup(config_path, output_dir)
    rnd = _round(cfg, round_name)
    grid = imagery.project_grid(cfg)
    tile = next(t for t in imagery.imagery_tiles(cfg, grid) if t.name == tile_name)
    _log_step(*imagery.run_tile(cfg, rnd, layout, tile, grid=grid))
    return str(layout.imagery_tile(rnd.name, tile.name))


@task(name="mosaic-imagery", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_transient)
def mosaic_imagery(config_path: str, output_dir: str | None, round_name: str) -> str:
    cfg, layout = _setup(config_path, output_dir)
    rnd = _round(cfg, round_name)
    _log_step(*imagery.run_mosaic(cfg, rnd, layout))
    return str(layout.covariates(rnd.name))


def imagery_task_runner(cfg: RunConfig) -> TaskRunner[Any]:
    """Tiles fan out over the Dask cluster at ``dask.address``, else over ``dask.n_workers`` local threads.

    On an existing cluster the workers write the tiles into the run directory themselves, so it
    must be on storage the workers and this process share.
    """
    if cfg.dask.address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=cfg.dask.address)
    return ThreadPoolTaskRunner(max_workers=max(1, cfg.dask.n_workers))


@flow(name="prepare-imagery", log_prints=False)
def prepare_imagery(config_path: str, output_dir: str | None = None) -> list[str]:
    """Composite every round's imagery tile by tile, then mosaic each round's covariate stack.

    Each tile is its own resumable task; memory per worker is bounded by ``imagery.tile_px``.
    """
    cfg, layout = _setup(config_path, output_dir)
    logger = get_run_logger()
    names = [t.name for t in imagery.imagery_tiles(cfg)]
    tiles = {
        rnd.name: [prepare_imagery_tile.submit(config_path, output_dir, rnd.name, t) for t in names] for rnd in cfg.rounds
    }
    mosaics = [
        mosaic_imagery.submit(config_path, output_dir, r, wait_for=futs, return_state=False) for r, futs in tiles.items()
    ]
    every = [f for futs in tiles.values() for f in futs]
    logger.info("compositing %d tile(s) of %d px in %d round(s)", len(every), cfg.imagery.tile_px, len(tiles))
    with progress.track("imagery tiles", len(every), unit="tile") as advance:
        for done, future in enumerate(as_completed(every), start=1):
            future.result()  # a failed tile fails the flow with its own error
            advance(1)
            logger.info("imagery tile %d/%d done", done, len(every))
    return [m.result() for m in mosaics]


@task(name="prepare-samples", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_transient)
def prepare_samples(config_path: str, output_dir: str | None, round_name: str) -> str:
    cfg, layout = _setup(config_path, output_dir)
    rnd = _round(cfg, round_name)
    _log_step(*samples.run_samples(cfg, rnd, layout))
    return str(layout.sites(rnd.name))


@task(name="fit-model", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_transient)
def fit_model(config_path: str, output_dir: str | None) -> str:
    cfg, layout = _setup(config_path, output_dir)
    _log_step(*model.run_fit(cfg, layout))
    return str(layout.model_dir)


@task(name="predict-maps", retries=1, retry_delay_seconds=5, retry_condition_fn=retry_transient)
def predict_maps(config_path: str, output_dir: str | None) -> list[str]:
    cfg, layout = _setup(config_path, output_dir)
    written: list[str] = []
    with ExitStack() as stack:
        client: Any = None
        for rnd in cfg.rounds:
            if cache.find_done(model.predict_spec(cfg, rnd, layout), layout) is None and client is None:
                # one client for every round of the run, started only when a round needs predicting
                client = stack.enter_context(dask_client(cfg.dask))
            _log_step(*model.run_predict(cfg, rnd, layout, client=client))
            written += [str(p) for p in layout.round_maps(rnd.name).values()]
    return written


@task(name="account", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_transient)
def account(config_path: str, output_dir: str | None) -> str:
    cfg, layout = _setup(config_path, output_dir)
    _log_step(*accounting.run_account(cfg, layout))
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
    samples = [prepare_samples.submit(config_path, output_dir, rnd.name) for rnd in cfg.rounds]
    prepare_imagery.with_options(task_runner=imagery_task_runner(cfg))(config_path, output_dir)  # a subflow
    model = fit_model.submit(config_path, output_dir, wait_for=samples, return_state=False)
    maps = predict_maps.submit(config_path, output_dir, wait_for=[model], return_state=False)
    accounted = account.submit(config_path, output_dir, wait_for=[maps], return_state=False)
    return report.submit(config_path, output_dir, wait_for=[accounted], return_state=False).result()
