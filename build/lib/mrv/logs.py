"""Logging of the command line: timestamped lines, quiet libraries, and bars that log lines do not break.

* Every line carries a UTC timestamp and the logger name (``2026-12-01T19:40:02Z INFO mrv.pipeline: ...``).
* Dask/distributed and Prefect log at WARNING unless ``--verbose`` (their INFO chatter, such as worker
  restarts at cluster shutdown, is not for the person running a report). The levels are also put in
  the environment (``DASK_LOGGING__DISTRIBUTED``, ``PREFECT_LOGGING_LEVEL``) so worker processes and
  the local Prefect API started later inherit them.
* While progress bars are drawn, log records are written through ``tqdm.write`` so a bar is redrawn
  below the line instead of being broken by it.
"""

from __future__ import annotations

import logging
import os
import sys
import time

QUIET_LIBRARIES = ("distributed", "dask", "prefect", "httpx", "urllib3", "rasterio", "numba")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _BarSafeHandler(logging.StreamHandler):  # type: ignore[type-arg]
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
    library_level = "INFO" if verbose else "WARNING"
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", library_level.lower())
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", library_level)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    handler = _BarSafeHandler(sys.stderr)
    formatter = logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(library_level)
