"""Run a real STAC API (``rustac serve``, in-memory backend) on 127.0.0.1 for tests.

The memory backend supports collections, bbox, intersects, datetime and paging (POST ``next``
links with ``skip``); it does not advertise the Filter extension and ignores CQL2 ``filter``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 10.0


def rustac_executable() -> str | None:
    """The ``rustac`` CLI next to this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("rustac")
    return str(beside) if beside.is_file() else shutil.which("rustac")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_api_inputs(directory: Path, collection: dict[str, Any], items: Sequence[dict[str, Any]]) -> list[Path]:
    """``collection.json`` and ``items.ndjson`` for ``rustac serve``."""
    directory.mkdir(parents=True, exist_ok=True)
    col = directory / "collection.json"
    col.write_text(json.dumps(collection))
    nd = directory / "items.ndjson"
    nd.write_text("".join(json.dumps(item) + "\n" for item in items))
    return [col, nd]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def rustac_serve(hrefs: Sequence[Path], *, log_path: Path) -> Iterator[str]:
    """Serve ``hrefs`` on a free port; yield the API root URL; always stop the server."""
    exe = rustac_executable()
    if exe is None:
        raise RuntimeError("rustac CLI not found; install the 'rustac' Python package (it ships the CLI).")
    for _attempt in range(3):  # a free port can be taken between probing and binding: retry on early exit
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [exe, "serve", "--addr", f"127.0.0.1:{port}", *map(str, hrefs)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            ready = False
            while not ready and time.monotonic() < deadline and proc.poll() is None:
                ready = _answers(url + "/")
                if not ready:
                    time.sleep(0.05)
            if ready:
                yield url
                return
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if time.monotonic() >= deadline:
            break
    raise RuntimeError(
        f"rustac serve did not answer within {READY_TIMEOUT_S} s; see {log_path}:\n{log_path.read_text()}"
    )
