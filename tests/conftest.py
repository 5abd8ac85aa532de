from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pystac
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Models registered by tests (and their subprocesses) go to a throw-away registry, never into the
# checkout's models/ or the user's ~/.local/share/mrv/models (mrv.config.default_model_registry).
os.environ["MRV_MODEL_REGISTRY"] = tempfile.mkdtemp(prefix="mrv-test-models-")
atexit.register(shutil.rmtree, os.environ["MRV_MODEL_REGISTRY"], True)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests may only talk to 127.0.0.1 / localhost."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("/"):
            raise OSError(f"network access to {host} blocked in tests")
        return real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(autouse=True)
def _cli_logging_stays_in_its_test() -> Iterator[None]:
    """``mrv.cli.main`` (called in-process by some tests) sets logging levels in the environment for its
    child processes and replaces the root handler; undo both so later tests and their subprocesses
    start from the session's settings."""
    import logging

    names = ("PREFECT_LOGGING_LEVEL", "DASK_LOGGING__DISTRIBUTED")
    saved_env = {n: os.environ.get(n) for n in names}
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for n, v in saved_env.items():
        if v is None:
            os.environ.pop(n, None)
        else:
            os.environ[n] = v
    root.handlers[:], _ = saved[0], root.setLevel(saved[1])


@pytest.fixture
def earth_search_item() -> pystac.Item:
    """The real Earth Search v1 sentinel-2-l2a item (processing baseline 05.11)."""
    return pystac.Item.from_dict(json.loads((FIXTURES / "earth_search_s2_l2a_item.json").read_text()))


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One Prefect test server for the whole session; yields its API URL (also usable by subprocesses)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """A throw-away PostgreSQL server on 127.0.0.1 for the session (tests/postgres.py).

    Without the server binaries or the psycopg driver the tests using it fail when ``CI`` is set
    (CI installs them with scripts/install-system-deps.sh) and are skipped otherwise.
    """
    from postgres import start_postgres, unavailable

    why = unavailable()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests cannot run in CI: {why}.", pytrace=False)
        pytest.skip(f"PostgreSQL tests skipped: {why} (they fail instead when CI is set).")
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a new, empty sample database on each backend: an SQLite file, or a schema of the test server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'samples.db'}"
    server = request.getfixturevalue("postgres_server")
    return str(server.new_schema_url())
