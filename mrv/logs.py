"""Logging of the command line: timestamped lines, quiet libraries, and bars that log lines do not break.

* Every line carries a UTC timestamp and the logger name (``2026-12-01T19:40:02Z INFO mrv.pipeline: ...``).
* Dask/distributed and Prefect log at WARNING unless ``--verbose`` (their INFO chatter, such as worker
  restarts at cluster shutdown, is not for the person running a report). The levels are also put in
  the environment (``DASK_LOGGING__DISTRIBUTED``, ``PREFECT_LOGGING_LEVEL``) so worker processes and
  the local Prefect API started later inherit them.
* While progress bars are drawn, log records are written through ``tqdm.write`` so a bar is redrawn
  below the line instead of being broken by it.
* Prefect keeps this handler on the root logger (it only replaces handlers it considers its own), so its
  flow- and task-run records come here too. Without ``--verbose`` their failure records (an error and its
  traceback, once per task and once per flow) are left out: the command prints the error itself, once; a
  failure that is not an expected mistake still ends in its full traceback. They stay in Prefect's API.
"""

from __future__ import annotations

import logging
import os
import sys
import time

__all__ = [
    "BarSafeHandler",
    "configure",
    "FORMAT",
    "QUIET_LIBRARIES",
    "RUN_LOGGERS",
]

QUIET_LIBRARIES = ("distributed", "dask", "prefect", "httpx", "urllib3", "rasterio", "numba")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class _DropRunFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.name.startswith(RUN_LOGGERS))


class BarSafeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stderr handler that writes through ``tqdm.write`` (a no-op difference when no bar is shown)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def configure(*, verbose: bool) -> None:
    """Set up logging for one CLI invocation (call before Prefect or Dask are imported)."""
    level = "INFO" if verbose else "WARNING"
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", level.lower())
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", level)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    handler = BarSafeHandler(sys.stderr)
    if not verbose:
        handler.addFilter(_DropRunFailures())
    formatter = logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(level)
