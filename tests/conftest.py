from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pystac
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

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
