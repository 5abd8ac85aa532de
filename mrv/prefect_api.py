"""The Prefect API a command-line run talks to: the configured one, or a local server owned by this process.

Without ``PREFECT_API_URL`` Prefect starts a temporary API server on first use. Two things go wrong
with it on a new machine (issue "A newcomer's first hour"):

* with a fresh ``PREFECT_HOME`` the server first creates and migrates its SQLite database, which can
  take longer than Prefect's default 20 s start-up timeout, so the first run failed;
* after ``kill -9`` of the run, the server process was left running.

:func:`prefect_api` therefore starts that server itself: the same server Prefect would start
(:class:`prefect.server.api.server.SubprocessASGIServer`), with a generous start-up timeout
(``MRV_PREFECT_STARTUP_TIMEOUT_S``, default 300 s) and, on Linux, ``PR_SET_PDEATHSIG`` so the kernel
stops it when the run dies for any reason. It checks first that ``PREFECT_HOME`` can be written and
says how to fix it when not. A configured ``PREFECT_API_URL`` (a shared server) is used as it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mrv.errors import ConfigError

__all__ = [
    "check_prefect_home",
    "DEFAULT_STARTUP_TIMEOUT_S",
    "prefect_api",
    "prefect_home",
    "STARTUP_TIMEOUT_ENV",
    "startup_timeout_s",
]

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_ENV = "MRV_PREFECT_STARTUP_TIMEOUT_S"
DEFAULT_STARTUP_TIMEOUT_S = 300
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to send SIGTERM to this (child) process when its parent dies (Linux prctl(2))."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def prefect_home() -> Path:
    """The directory Prefect keeps its settings and local database in."""
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home).expanduser()


def check_prefect_home() -> Path:
    """``PREFECT_HOME``, created if needed; :class:`ConfigError` with the fix when it cannot be written."""
    home = prefect_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".mrv-write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"Prefect cannot write its directory {home} ({exc.strerror or exc}). Set PREFECT_HOME to a writable "
            "directory, e.g. `export PREFECT_HOME=$HOME/.prefect` or `PREFECT_HOME=$(mktemp -d) mrv run ...`."
        ) from exc
    return home


def startup_timeout_s() -> int:
    raw = os.environ.get(STARTUP_TIMEOUT_ENV, "")
    try:
        value = int(raw) if raw else DEFAULT_STARTUP_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{STARTUP_TIMEOUT_ENV}={raw!r} must be a whole number of seconds (default 300).") from None
    if value < 1:
        raise ConfigError(f"{STARTUP_TIMEOUT_ENV} must be at least 1 second, got {value}.")
    return value


def _server_class() -> type:
    from prefect.server.api.server import SubprocessASGIServer

    class OwnedServer(SubprocessASGIServer):
        """Prefect's temporary server, stopped by the kernel when the process that started it dies."""

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            if not sys.platform.startswith("linux"):
                return super()._run_uvicorn_command()
            real_popen = subprocess.Popen

            def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
                kwargs.setdefault("preexec_fn", _die_with_parent)
                return real_popen(*args, **kwargs)

            subprocess.Popen = popen  # type: ignore[misc,assignment]
            try:
                return super()._run_uvicorn_command()
            finally:
                subprocess.Popen = real_popen  # type: ignore[misc]

    return OwnedServer


def _drain_run_logs() -> None:
    """Send the flow- and task-run logs still queued for the API while the server is still up (otherwise
    Prefect tries at exit and prints '--- Error logging to API ---')."""
    with contextlib.suppress(Exception):
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)


@contextlib.contextmanager
def prefect_api() -> Iterator[str | None]:
    """Yield the API URL flows in this block use: ``PREFECT_API_URL`` if set, else a server started here."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    configured = get_current_settings().api.url
    if configured:
        yield str(configured)
        return
    check_prefect_home()
    timeout = startup_timeout_s()
    log.info("starting a local Prefect API (the first start on a machine also prepares its database)")
    server = _server_class()()
    try:
        server.start(timeout=timeout)
    except RuntimeError as exc:
        server.stop()
        raise ConfigError(
            f"Prefect's local API did not start within {timeout} s. Raise {STARTUP_TIMEOUT_ENV} (seconds) on a slow "
            "machine, or point PREFECT_API_URL at a running server (`prefect server start`)."
        ) from exc
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url  # for worker processes started inside the block
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        _drain_run_logs()
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        server.stop()
