"""A throw-away PostgreSQL server for the sample-store tests, started from the installed server binaries.

:func:`start_postgres` runs ``initdb`` into a fresh temporary directory and ``pg_ctl start`` on a
free port of 127.0.0.1 (its Unix socket in the same directory), with durability switched off
(``fsync``, ``synchronous_commit``, ``full_page_writes``: a test cluster is thrown away anyway);
each test gets its own schema (:meth:`PostgresServer.new_schema_url`). PostgreSQL refuses to
run as root, so as root the cluster is owned by and run as the ``postgres`` user (``nobody`` if
there is none). The binaries are looked up in ``/usr/lib/postgresql/<version>/bin`` (Debian's
``postgresql`` package; ``scripts/install-system-deps.sh`` installs it) and on the PATH.

:func:`unavailable` says why the server cannot be started (binaries or the psycopg driver
missing): the fixture in conftest.py fails with that message when the ``CI`` variable is set and
skips otherwise.
"""

from __future__ import annotations

import glob
import importlib.util
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "mrv"
DATABASE = "postgres"


def find_bindir() -> Path | None:
    """Directory holding ``initdb`` and ``pg_ctl``: the newest Debian versioned one, else the PATH."""

    def version(d: str) -> tuple[int, ...]:
        part = Path(d).parent.name
        return tuple(int(p) for p in part.split(".") if p.isdigit())

    for d in sorted(glob.glob(BIN_GLOB), key=version, reverse=True):
        if all(os.access(Path(d) / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return Path(d)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def unavailable() -> str | None:
    """Why a test server cannot be started, or None."""
    if find_bindir() is None:
        return (
            f"PostgreSQL server binaries (initdb, pg_ctl) not found under {BIN_GLOB} or on the PATH; "
            "install them with scripts/install-system-deps.sh (Debian: apt-get install postgresql)"
        )
    if importlib.util.find_spec("psycopg") is None:
        return "the PostgreSQL driver psycopg is not installed; pip install 'psycopg[binary]'"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A running test cluster; :meth:`stop` removes it."""

    bindir: Path
    root: Path
    port: int
    run_as: dict[str, Any]
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_schema_url(self, prefix: str = "test") -> str:
        """URL of a new, empty schema of the test database (its ``search_path``), for one test.

        A schema per test instead of a database per test: ``CREATE SCHEMA`` takes milliseconds,
        ``CREATE DATABASE`` (which checkpoints) a few hundred on a busy machine.
        """
        import psycopg

        name = f"{prefix}_{next(self._names)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=DATABASE,
                             autocommit=True) as conn:  # fmt: skip
            conn.execute(f'CREATE SCHEMA "{name}"')  # type: ignore[arg-type]
        return f"{self.url(DATABASE)}?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        subprocess.run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            capture_output=True, check=False, **self.run_as,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


def _owner() -> dict[str, Any]:
    """subprocess arguments that run the server as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        env = {**os.environ, "HOME": tempfile.gettempdir()}
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "env": env}
    raise RuntimeError("running as root, but there is neither a 'postgres' nor a 'nobody' user to run PostgreSQL as")


def start_postgres(*, attempts: int = 3) -> PostgresServer:
    """initdb + pg_ctl start; raises RuntimeError with the server log when it does not come up."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(unavailable() or "no PostgreSQL binaries")
    run_as = _owner()
    root = Path(tempfile.mkdtemp(prefix="mrv-pg-"))
    if run_as:
        os.chown(root, run_as["user"], run_as["group"])
    data, log = root / "data", root / "server.log"
    init = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C",
         "--no-sync"],
        capture_output=True, text=True, check=False, **run_as,
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr or init.stdout}")
    for attempt in range(attempts):
        port = _free_port()  # another process may take it before the server binds: retried below
        opts = (
            f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=50"
        )
        started = subprocess.run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"],
            capture_output=True, text=True, check=False, **run_as,
        )  # fmt: skip
        if started.returncode == 0:
            return PostgresServer(bindir=bindir, root=root, port=port, run_as=run_as)
        if attempt == attempts - 1:
            text = log.read_text(errors="replace")[-2000:] if log.exists() else started.stderr
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"pg_ctl start failed ({started.returncode}): {started.stderr}\n{text}")
    raise AssertionError("unreachable")  # pragma: no cover
