"""Run a real STAC API (``rustac serve``) on 127.0.0.1 for tests and benchmarks.

Two backends of the same ``rustac`` binary (rustac 0.9.17, measured):

memory   (:func:`rustac_serve` with ``collection.json`` + ``items.ndjson``): collections, bbox,
         intersects, datetime and paging (POST ``next`` links with ``skip``, only while items
         remain). It does not advertise the Filter extension and a CQL2 ``filter`` makes every item
         fail to match: a search with a filter returns nothing.
duckdb   (:func:`duckdb_serve`, one stac-geoparquet file): bbox, intersects, datetime, ``limit``,
         ``offset``, ``sortby`` and CQL2-JSON ``filter`` (with ``filter-lang: cql2-json``) all run as
         SQL in DuckDB on the server. It does *not* advertise the Filter extension (its
         ``has_filter()`` is false, crates/server/src/backend/duckdb.rs) and returns no ``next`` links,
         so it never paginates: a search gets one page of at most ``limit`` items.

The DuckDB inside rustac loads its ``spatial``, ``icu`` and ``parquet`` extensions from
``$HOME/.duckdb/extensions/<duckdb version>/<platform>/`` and tries to download them when they are
missing, which hangs or fails offline. :func:`duckdb_extension_home` lays out a private HOME with the
extension files shipped in the PyPI wheels ``duckdb-extension-{spatial,icu,parquet}`` (dev
dependencies) and the server runs with that HOME, so nothing is downloaded.

:class:`FilterPagingProxy` sits in front of the DuckDB server and adds only what that backend does
but does not declare: the Filter conformance classes on ``/`` and ``/conformance``, and ``next``
links (POST bodies with ``offset``, ordered by ``id``) on full pages of ``/search``. Filtering, paging
and ordering are still executed by DuckDB in rustac; the proxy forwards every request and records
what went over the wire (request bodies, features per page) so tests can see where filtering happened.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 10.0
DUCKDB_EXTENSIONS = ("spatial", "icu", "parquet")
"""Extensions rustac's DuckDB backend loads to serve a stac-geoparquet file (found by elimination:
without ``icu`` or ``parquet`` the first search tries to download them)."""
FILTER_CONFORMANCE = (
    "https://api.stacspec.org/v1.0.0/item-search#filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
)


def rustac_executable() -> str | None:
    """The ``rustac`` CLI next to this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("rustac")
    return str(beside) if beside.is_file() else shutil.which("rustac")


def _require_rustac() -> str:
    exe = rustac_executable()
    if exe is None:
        raise RuntimeError("rustac CLI not found; install the 'rustac' Python package (it ships the CLI).")
    return exe


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_collection(collection_id: str, bbox: Sequence[float], description: str = "test") -> dict[str, Any]:
    """A minimal STAC collection ``collection_id`` covering ``bbox`` (lon/lat), for :func:`write_api_inputs`."""
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": collection_id,
        "description": description,
        "license": "proprietary",
        "extent": {"spatial": {"bbox": [list(bbox)]}, "temporal": {"interval": [[None, None]]}},
        "links": [],
    }


def write_api_inputs(directory: Path, collection: dict[str, Any], items: Sequence[dict[str, Any]]) -> list[Path]:
    """``collection.json`` and ``items.ndjson`` for ``rustac serve``."""
    directory.mkdir(parents=True, exist_ok=True)
    col = directory / "collection.json"
    col.write_text(json.dumps(collection))
    nd = directory / "items.ndjson"
    nd.write_text("".join(json.dumps(item) + "\n" for item in items))
    return [col, nd]


def catalog_api_inputs(collection_path: Path, directory: Path) -> list[Path]:
    """``rustac serve`` inputs for a static STAC collection on disk (e.g. a generated region's).

    Items get their collection id and absolute ``file://`` asset hrefs, as an API serves them.
    """
    import pystac

    collection = pystac.read_file(str(collection_path))
    if not isinstance(collection, pystac.Collection):
        raise TypeError(f"{collection_path} is a {type(collection).__name__}, not a STAC collection")
    features = []
    for item in collection.get_items(recursive=True):
        item.make_asset_hrefs_absolute()
        d = item.to_dict(transform_hrefs=False)
        d["links"] = []
        d["collection"] = collection.id
        for asset in d["assets"].values():
            asset["href"] = Path(asset["href"]).as_uri()
        features.append(d)
    col = {k: v for k, v in collection.to_dict(include_self_link=False).items() if k != "links"} | {"links": []}
    return write_api_inputs(directory, col, features)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def rustac_serve(
    hrefs: Sequence[Path],
    *,
    log_path: Path,
    home: Path | None = None,
    public_url: str | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> Iterator[str]:
    """Serve ``hrefs`` on a free port; yield the URL it answers on; always stop the server.

    ``home`` replaces ``HOME`` for the server (where its DuckDB looks for extensions).
    ``public_url`` is the root URL the API writes into its links when it is reached through a
    proxy; the server then binds a free port of its own.
    """
    exe = _require_rustac()
    env = dict(os.environ)
    if home is not None:
        env["HOME"] = str(home)
    deadline = time.monotonic()
    for _attempt in range(3):  # a free port can be taken between probing and binding: retry on early exit
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        addr = ["--addr", public_url, "--bind", f"127.0.0.1:{port}"] if public_url else ["--addr", f"127.0.0.1:{port}"]
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [exe, "serve", *addr, *map(str, hrefs)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        try:
            deadline = time.monotonic() + ready_timeout_s
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
        f"rustac serve did not answer within {ready_timeout_s} s; see {log_path}:\n{log_path.read_text()}"
    )


# ---------------------------------------------------------------------------------------------
# DuckDB backend (stac-geoparquet), offline
# ---------------------------------------------------------------------------------------------


def _wheel_extension(name: str) -> Path:
    """The ``<name>.duckdb_extension`` file shipped by the ``duckdb-extension-<name>`` wheel."""
    spec = find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"The DuckDB '{name}' extension is not installed, so rustac's DuckDB backend would try to download it. "
            f"pip install duckdb-extension-{name} (a dev dependency, same version as rustac's bundled DuckDB)."
        )
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob(f"extensions/*/{name}.duckdb_extension"))
    if len(found) != 1:
        raise RuntimeError(f"Expected one {name}.duckdb_extension in duckdb_extension_{name}, found {found}.")
    return found[0]


def _bundled_layout(probe_dir: Path) -> str:
    """``<duckdb version>/<platform>`` under which rustac's bundled DuckDB looks for extensions.

    Read from DuckDB's own error when loading ``spatial`` from an empty extension directory
    (``Extension "<dir>/v1.5.5/linux_amd64/spatial.duckdb_extension" not found``).
    """
    import rustac

    try:
        rustac.DuckdbClient(install_extensions=False, extension_directory=str(probe_dir))
    except rustac.RustacError as exc:
        match = re.search(re.escape(str(probe_dir)) + r"/([^/\"]+/[^/\"]+)/spatial\.duckdb_extension", str(exc))
        if match:
            return match.group(1)
        raise RuntimeError(f"Cannot tell where rustac's DuckDB looks for extensions from: {exc}") from exc
    raise RuntimeError(f"rustac's DuckDB loaded 'spatial' from the empty directory {probe_dir}; cannot lay it out.")


def duckdb_extension_home(home: Path) -> Path:
    """Make ``home`` a HOME whose ``.duckdb/extensions`` holds the wheels' extensions; return ``home``.

    Fails with what to install when the wheels are missing or do not match the DuckDB version
    bundled in rustac (the extension ABI is tied to the exact DuckDB version).
    """
    import rustac

    with tempfile.TemporaryDirectory(dir=home.parent if home.parent.is_dir() else None) as probe:
        layout = _bundled_layout(Path(probe))
    target = home / ".duckdb" / "extensions" / layout
    target.mkdir(parents=True, exist_ok=True)
    for name in DUCKDB_EXTENSIONS:
        src = _wheel_extension(name)
        if src.parent.name != layout.split("/")[0]:
            raise RuntimeError(
                f"rustac {rustac.version()} bundles DuckDB {layout.split('/')[0]}, but duckdb-extension-{name} "
                f"ships {src.parent.name}. Install duckdb-extension-{name}=={layout.split('/')[0].lstrip('v')}."
            )
        dst = target / src.name
        if not dst.exists():
            try:
                dst.symlink_to(src)
            except OSError:
                shutil.copyfile(src, dst)
    try:
        rustac.DuckdbClient(install_extensions=False, extension_directory=str(home / ".duckdb" / "extensions"))
    except rustac.RustacError as exc:
        raise RuntimeError(f"rustac's DuckDB cannot load the extensions laid out in {target}: {exc}") from exc
    return home


def to_geoparquet(items: Sequence[dict[str, Any]], path: Path) -> Path:
    """Write ``items`` (each with its ``collection``) as stac-geoparquet with ``rustac translate``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ndjson = path.with_suffix(".ndjson")
    ndjson.write_text("".join(json.dumps(item) + "\n" for item in items))
    result = subprocess.run(
        [_require_rustac(), "translate", str(ndjson), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0 or not path.is_file():
        raise RuntimeError(f"rustac translate {ndjson} {path} failed ({result.returncode}): {result.stderr}")
    return path


@dataclass
class Exchange:
    """One request the proxy forwarded and what came back."""

    method: str
    path: str
    body: dict[str, Any] | None
    status: int
    ids: list[str] | None
    """Ids of the features of a ``/search`` page, as sent by the server."""


@dataclass
class FilterPagingProxy:
    """A pass-through HTTP proxy that declares the DuckDB backend's filtering and pages with ``offset``."""

    upstream: str = ""
    exchanges: list[Exchange] = field(default_factory=list)
    conformance: tuple[str, ...] = FILTER_CONFORMANCE
    paginate: bool = True
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def searches(self) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if e.path.split("?")[0] == "/search"]

    def start(self) -> str:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else None
                body = json.loads(raw) if raw else None
                path = self.path.split("?")[0]
                if method == "POST" and path == "/search" and isinstance(body, dict) and proxy.paginate:
                    body.setdefault("sortby", [{"field": "id", "direction": "asc"}])  # stable pages for offset
                    raw = json.dumps(body).encode()
                req = urllib.request.Request(
                    proxy.upstream + self.path,
                    data=raw,
                    method=method,
                    headers={"Content-Type": self.headers.get("Content-Type") or "application/json"},
                )
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        status, payload = resp.status, resp.read()
                        ctype = resp.headers.get("Content-Type") or "application/json"
                except urllib.error.HTTPError as err:
                    status, payload, ctype = err.code, err.read(), err.headers.get("Content-Type") or "text/plain"
                ids = None
                if status == 200 and "json" in ctype:
                    doc = json.loads(payload)
                    if path in ("/", "/conformance") and "conformsTo" in doc:
                        doc["conformsTo"] = [*doc["conformsTo"], *proxy.conformance]
                    if path == "/search" and isinstance(doc.get("features"), list):
                        ids = [str(f.get("id")) for f in doc["features"]]
                        n_features = len(ids)
                        if method == "POST" and isinstance(body, dict) and proxy.paginate:
                            limit = body.get("limit")
                            links = doc.setdefault("links", [])
                            if limit and n_features >= int(limit) and not any(li.get("rel") == "next" for li in links):
                                nxt = {**body, "offset": int(body.get("offset") or 0) + int(limit)}
                                links.append(
                                    {
                                        "rel": "next",
                                        "href": proxy.url + "/search",
                                        "type": "application/geo+json",
                                        "method": "POST",
                                        "body": nxt,
                                    }
                                )
                    payload = json.dumps(doc).encode()
                with proxy._lock:
                    proxy.exchanges.append(Exchange(method, self.path, body, status, ids))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass
class DuckdbApi:
    """A running DuckDB-backed rustac API: ``url`` is rustac itself, ``proxy`` fronts it (if asked)."""

    url: str
    proxy: FilterPagingProxy | None


@contextmanager
def duckdb_serve(
    items: Sequence[dict[str, Any]], directory: Path, *, proxy: bool = False, ready_timeout_s: float = 30.0
) -> Iterator[DuckdbApi]:
    """Serve ``items`` from a stac-geoparquet file with rustac's DuckDB backend, offline.

    With ``proxy`` the API is reached through a :class:`FilterPagingProxy` (its URL is the one in the
    API's links, and the one to search). Fails (never skips) when the server cannot be started.
    """
    directory.mkdir(parents=True, exist_ok=True)
    parquet = to_geoparquet(items, directory / "items.parquet")
    home = duckdb_extension_home(directory / "home")
    front = FilterPagingProxy() if proxy else None
    public = front.start() if front else None
    try:
        with rustac_serve(
            [parquet],
            log_path=directory / "rustac.log",
            home=home,
            public_url=public,
            ready_timeout_s=ready_timeout_s,
        ) as url:
            if front is not None:
                front.upstream = url
            yield DuckdbApi(url=url, proxy=front)
    finally:
        if front is not None:
            front.stop()
