"""Serve the flows as Prefect deployments: monthly regional monitoring per config, on-demand ingest and verification.

``make serve`` starts a local Prefect server on http://127.0.0.1:4200 and then this module,
which registers the deployments and runs their flow runs in this process until stopped:

* ``regional-monitoring/monitoring-<name>``: one per run config in ``configs/*.yaml`` (a file
  with ``rounds``), on a monthly cron (default 03:00 UTC on the 1st; ``--cron``, ``--timezone``).
  Re-runs resume: finished steps are skipped (see :mod:`mrv.pipeline.cache`). Rounds that take their samples
  from the store (``rounds[].store``, ``round_schedule``) are keyed on the store's submissions, so the monthly
  run does real work when new samples were submitted (or corrected, withdrawn) or a scheduled period ended,
  and skips otherwise.
* ``ingest-samples/submit-<name>``: on demand, one per run config (its project CRS and region), taking the
  file's content, e.g. ``prefect deployment run ingest-samples/submit-demo -p filename=lab.csv
  -p agency="Soil Lab" -p content="$(cat lab.csv)"``. The database is named, not given: ``--db env:NAME``
  or ``--db secret:BLOCK`` (a Prefect Secret block), so no credentials sit in deployment parameters.
* ``verification-report/verify``: on demand, ``prefect deployment run verification-report/verify -p run_dir=out/demo``.

Run it by hand against any Prefect API with ``PREFECT_API_URL=... python -m flows.deploy``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.ingest_samples import ingest_samples
from flows.regional_monitoring import regional_monitoring
from flows.verification_report import verification_report
from mrv.config import load_config
from mrv.errors import ConfigError, MRVError
from mrv.samples.store import DB_ENV, DEFAULT_URL, redact_url

log = logging.getLogger("flows.deploy")

MONTHLY_CRON = "0 3 1 * *"
REPO = Path(__file__).resolve().parents[1]


def _built(deployment: object) -> RunnerDeployment:
    """``Flow.to_deployment`` is sync-compatible; called from sync code it returns the deployment."""
    if not isinstance(deployment, RunnerDeployment):  # pragma: no cover - only inside an event loop
        raise TypeError(
            f"expected a RunnerDeployment, got {type(deployment).__name__}; build deployments from sync code"
        )
    return deployment


def run_configs(config_dir: Path) -> list[Path]:
    """The run configs in ``config_dir`` (top level only): YAML files with a ``rounds`` list."""
    found = []
    for path in sorted(config_dir.glob("*.y*ml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"Cannot read {path} while looking for run configs: {exc}. Fix or move the file."
            ) from exc
        if isinstance(raw, dict) and isinstance(raw.get("rounds"), list):
            found.append(path.resolve())
    return found


def monitoring_deployments(
    config_dir: Path, *, cron: str = MONTHLY_CRON, timezone: str = "UTC"
) -> list[RunnerDeployment]:
    """One scheduled ``regional-monitoring`` deployment per run config (validated now, not at 3 am)."""
    configs = run_configs(config_dir)
    if not configs:
        raise ConfigError(f"No run config (a YAML file with 'rounds') in {config_dir}; pass --configs DIR.")
    deployments = []
    for path in configs:
        cfg = load_config(path)
        deployments.append(
            _built(
                regional_monitoring.to_deployment(
                    name=f"monitoring-{cfg.name}",
                    schedules=[Cron(cron, timezone=timezone)],
                    parameters={"config_path": str(path)},
                    description=f"Monthly SOC monitoring of {cfg.name} ({path.name}); resumes finished steps.",
                    tags=["mrv", "monitoring"],
                )
            )
        )
    return deployments


def on_demand_deployments(config_dir: Path, *, db: str | None = None) -> list[RunnerDeployment]:
    """Unscheduled deployments: sample ingest per run config (into the database ``db`` names) and verification.

    ``db`` is ``env:NAME``, ``secret:BLOCK`` or a URL without a password (refused otherwise: deployment
    parameters are shown in the Prefect UI); None: ``$MRV_SAMPLES_DB`` of the worker, else the default.
    """
    if db is not None:
        database_url_check(db)
    ingest = []
    for path in run_configs(config_dir):
        cfg = load_config(path)
        ingest.append(
            _built(
                ingest_samples.to_deployment(
                    name=f"submit-{cfg.name}",
                    parameters={"config_path": str(path), **({"db": db} if db is not None else {})},
                    description=f"Validate an agency's sample file (its content) and store it for {cfg.name} "
                    f"({cfg.region.crs}); row-level report as an artifact.",
                    tags=["mrv", "samples"],
                )
            )
        )
    return [
        *ingest,
        _built(
            verification_report.to_deployment(
                name="verify",
                description="Verify a run directory or bundle as `mrv report verify` does (hashes, step chain, re-derivation); result as an artifact.",
                tags=["mrv", "verification"],
            )
        ),
    ]


def database_url_check(db: str) -> None:
    """Refuse a database URL with a password as a deployment parameter (see :func:`on_demand_deployments`)."""
    if "://" in db and not db.startswith(("env:", "secret:")):
        import sqlalchemy as sa

        if sa.engine.make_url(db).password:
            raise ConfigError(
                f"--db {redact_url(db)} carries a password, which would be stored in the deployment's parameters; "
                "use --db env:NAME (an environment variable of the worker) or --db secret:BLOCK (a Prefect Secret)."
            )


def build_deployments(
    config_dir: Path, *, cron: str = MONTHLY_CRON, timezone: str = "UTC", db: str | None = None
) -> list[RunnerDeployment]:
    return [*monitoring_deployments(config_dir, cron=cron, timezone=timezone), *on_demand_deployments(config_dir, db=db)]


def wait_for_api(timeout_s: float) -> None:
    """Block until the configured Prefect API answers its health check (``make serve`` starts both at once)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            last = client.api_healthcheck()
        if last is None:
            return
        time.sleep(1.0)
    raise MRVError(
        f"The Prefect API did not answer within {timeout_s:g} s ({last}); start it with 'prefect server start' "
        "and set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.splitlines()[0])
    p.add_argument("--configs", type=Path, default=REPO / "configs", help="directory of run configs (default configs/)")
    p.add_argument("--cron", default=MONTHLY_CRON, help=f"schedule of the monitoring runs (default '{MONTHLY_CRON}')")
    p.add_argument("--timezone", default="UTC", help="IANA time zone of the cron schedule (default UTC)")
    p.add_argument("--db", default=None,
                   help=f"sample database for ingest: env:NAME, secret:BLOCK or a URL without password "
                   f"(default ${DB_ENV} of the worker, else {DEFAULT_URL})")  # fmt: skip
    p.add_argument("--wait-for-api", type=float, default=0.0, metavar="SECONDS", help="wait for the Prefect API first")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        deployments = build_deployments(args.configs, cron=args.cron, timezone=args.timezone, db=args.db)
        if args.wait_for_api > 0:
            wait_for_api(args.wait_for_api)
    except MRVError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    from prefect import serve

    serve(*deployments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
