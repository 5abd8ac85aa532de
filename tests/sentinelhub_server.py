"""A local Sentinel Hub (OAuth token, Catalog API, Process API) backed by a generated region.

:class:`SentinelHubFake` serves the items of a static STAC catalog written by
:func:`mrv.synthetic.build_region` the way Sentinel Hub serves Sentinel-2 L2A, on 127.0.0.1:

``POST /auth/realms/main/protocol/openid-connect/token``
    OAuth2 client-credentials grant (Keycloak, like ``services.sentinel-hub.com``): the client id and
    secret come in the form body (``client_secret_post``, what ``requests_oauthlib`` sends) or as HTTP
    Basic auth. A wrong secret gets ``401 {"error": "unauthorized_client"}``; the bearer token is
    opaque and expires after ``token_ttl_s``.
``POST /api/v1/catalog/1.0.0/search``
    STAC item search of Catalog API 1.0.0: ``collections``, ``datetime`` (``a/b``, open ends ``..``),
    ``bbox`` or ``intersects`` (WGS84), ``ids``, a CQL2 ``filter`` (``cql2-text`` comparisons joined by
    ``and``, or the same in ``cql2-json``) on item properties such as ``eo:cloud_cover``, ``limit``.
    Results are ordered by acquisition time and paged with ``context.next``, an integer the client
    sends back as ``next`` in the next request body (the page size is ``min(limit, page_limit)``).
    Feature ids are the products' SAFE names (``S2A_MSIL2A_..._N0500_R079_T33UWP_...``), as on Sentinel
    Hub, not the Earth Search style ids of the generated catalog; :meth:`SentinelHubFake.stac_id` maps
    them back.
``POST /api/v1/process``
    ``input.bounds`` (``bbox`` + ``properties.crs``; CRS84 when absent), ``input.data`` (one entry, or
    several with ``id`` for data fusion), each with ``dataFilter.timeRange`` / ``maxCloudCoverage`` /
    ``mosaickingOrder`` and ``processing.upsampling`` / ``downsampling`` / ``harmonizeValues``;
    ``output.width``/``height`` (or ``resx``/``resy``) and one ``image/tiff`` response. The evalscript
    (``//VERSION=3``) is interpreted, not executed: ``setup()`` must declare its ``input`` bands (with
    ``units`` and, for data fusion, ``datasource``) and one ``output`` (``bands``, ``sampleType``), and
    ``evaluatePixel(s)`` must ``return [...]`` plain band references (``s.B04``, or ``s.<id>[0].B04``
    with data fusion). Anything else is answered with 400, so a client that relies on more than this
    is noticed rather than served something plausible.

Pixels are made as Sentinel Hub documents it: each band of every matching scene is resampled from its
COG onto the requested grid with ``rasterio.warp.reproject`` (the entry's ``upsampling`` when the
output pixels are finer than the band's, ``downsampling`` when coarser, both ``NEAREST`` by default,
for every band of the entry, SCL included); scenes are mosaicked by ``mosaickingOrder``
(``mostRecent`` by default); digital numbers become reflectance as ``(DN + BOA_ADD_OFFSET) / 10000``
with ``BOA_ADD_OFFSET = -1000`` for processing baselines >= 04.00 (ESA, S2 L2A product format), and
with ``harmonizeValues`` (default true) negative reflectance is clamped to 0 (Sentinel Hub forum,
"Sentinel-2 processing baseline changes and harmonizeValues"). No-data (DN 0) pixels are 0 in every
band. ``sampleType`` ``FLOAT32`` returns the values, ``UINT8``/``UINT16`` round and clamp them,
``AUTO`` stretches 0..1 to 0..255.

Every exchange is recorded in :attr:`SentinelHubFake.exchanges` (token requests without their body,
so no secret is kept). The fake is the protocol peer of ``mrv.imagery.sentinelhub_source`` and does
not import it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pystac
import rasterio
from numpy.typing import NDArray
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds
from rasterio.warp import Resampling, reproject, transform_bounds
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry
from werkzeug import Request, Response
from werkzeug.serving import BaseWSGIServer, make_server

TOKEN_PATH = "/auth/realms/main/protocol/openid-connect/token"
CATALOG_SEARCH_PATH = "/api/v1/catalog/1.0.0/search"
PROCESS_PATH = "/api/v1/process"

QUANTIFICATION = 10_000.0
BOA_ADD_OFFSET_DN = -1000.0
"""Added to L2A digital numbers from processing baseline 04.00 on (ESA, S2-PDGS-MPC-L2A-PBN)."""
MAX_OUTPUT_PX = 2500
"""Largest ``output.width`` / ``height`` the Process API accepts."""
DN_ONLY_BANDS = frozenset({"SCL", "dataMask"})
RESAMPLING = {"NEAREST": Resampling.nearest, "BILINEAR": Resampling.bilinear, "BICUBIC": Resampling.cubic}
SAMPLE_TYPES = ("AUTO", "UINT8", "UINT16", "FLOAT32")
MOSAICKING_ORDERS = ("mostRecent", "leastRecent", "leastCC")


class ApiError(Exception):
    """An error answer: HTTP status plus the Sentinel Hub error body."""

    def __init__(self, status: int, message: str, code: str = "COMMON_BAD_PAYLOAD") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def response(self) -> Response:
        reasons = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
        body = {
            "error": {
                "status": self.status,
                "reason": reasons.get(self.status, "Error"),
                "message": self.message,
                "code": self.code,
            }
        }
        return Response(json.dumps(body), status=self.status, content_type="application/json")


# -- the served scenes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """One Sentinel-2 L2A product of the generated region, as Sentinel Hub knows it."""

    id: str
    """Product (SAFE) name, the Catalog API feature id."""
    stac_id: str
    """Id of the item in the generated static catalog."""
    datetime: dt.datetime
    geometry: BaseGeometry
    """Footprint in WGS84 lon/lat."""
    properties: Mapping[str, Any]
    files: Mapping[str, Path]
    """Sentinel-2 band id (``B02`` ... ``B12``, ``SCL``) -> COG of digital numbers."""

    @property
    def cloud_cover(self) -> float:
        return float(self.properties.get("eo:cloud_cover", 0.0))

    @property
    def boa_add_offset(self) -> float:
        """The DN offset of the product's processing baseline (-1000 from 04.00 on, else 0)."""
        baseline = str(self.properties["s2:processing_baseline"])
        major, _, minor = baseline.partition(".")
        return BOA_ADD_OFFSET_DN if (int(major), int(minor or 0)) >= (4, 0) else 0.0


def load_scenes(collection_json: Path) -> list[Scene]:
    """The scenes of a generated static catalog (``stac/collection.json`` of a built region)."""
    root = pystac.read_file(str(collection_json))
    if not isinstance(root, pystac.Catalog):
        raise ValueError(f"{collection_json} is not a STAC catalog or collection")
    scenes = []
    for item in root.get_items(recursive=True):
        files: dict[str, Path] = {}
        for key, asset in item.assets.items():
            eo_bands = asset.extra_fields.get("eo:bands") or []
            band = eo_bands[0].get("name") if eo_bands else ("SCL" if key == "scl" else None)
            if band:
                files[str(band)] = Path(asset.get_absolute_href() or asset.href)
        product = str(item.properties.get("s2:product_uri", item.id)).removesuffix(".SAFE")
        if item.datetime is None or item.geometry is None:
            raise ValueError(f"item {item.id} has no datetime or geometry")
        scenes.append(
            Scene(
                id=product,
                stac_id=item.id,
                datetime=item.datetime.astimezone(dt.UTC),
                geometry=shape(item.geometry),
                properties=dict(item.properties),
                files=files,
            )
        )
    return sorted(scenes, key=lambda s: (s.datetime, s.id))


# -- small parsers ----------------------------------------------------------------------------------------------


def _parse_time(value: str, where: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(400, f"{where}: {value!r} is not an ISO 8601 date-time") from exc
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _parse_interval(value: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    start, sep, end = value.partition("/")
    if not sep:
        t = _parse_time(start, "datetime")
        return t, t
    lo = None if start in ("", "..") else _parse_time(start, "datetime")
    hi = None if end in ("", "..") else _parse_time(end, "datetime")
    return lo, hi


_COMPARISON = re.compile(r"^\s*([A-Za-z_][\w:.\-]*)\s*(<=|>=|<>|=|<|>)\s*(-?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*$")
_OPS = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "=": np.equal,
    "<>": np.not_equal,
}


def _filter_terms(filt: Any, lang: str) -> list[tuple[str, str, float]]:
    """A CQL2 filter as (property, operator, number) terms that must all hold."""
    if lang == "cql2-text":
        if not isinstance(filt, str):
            raise ApiError(400, "filter: cql2-text filters are strings")
        terms = []
        for part in re.split(r"\s+and\s+", filt.strip(), flags=re.IGNORECASE):
            m = _COMPARISON.match(part)
            if m is None:
                raise ApiError(400, f"filter: cannot parse {part!r} (this server evaluates 'property op number' terms)")
            terms.append((m.group(1), m.group(2), float(m.group(3))))
        return terms
    if lang == "cql2-json":
        if not isinstance(filt, dict) or "op" not in filt:
            raise ApiError(400, "filter: a cql2-json filter is an object with 'op' and 'args'")
        op, args = str(filt["op"]).lower(), filt.get("args") or []
        if op == "and":
            return [t for a in args for t in _filter_terms(a, lang)]
        if op in _OPS and len(args) == 2 and isinstance(args[0], dict) and "property" in args[0]:
            return [(str(args[0]["property"]), op, float(args[1]))]
        raise ApiError(400, f"filter: unsupported cql2-json expression {filt!r}")
    raise ApiError(400, f"filter-lang {lang!r} is not supported; use cql2-text or cql2-json")


def _matches(props: Mapping[str, Any], terms: Sequence[tuple[str, str, float]]) -> bool:
    for name, op, value in terms:
        have = props.get(name)
        if have is None or not bool(_OPS[op](float(have), value)):
            return False
    return True


def _crs_from_uri(uri: str | None) -> CRS:
    if uri is None or uri.rstrip("/").endswith("CRS84"):
        return CRS.from_epsg(4326)
    m = re.fullmatch(r"https?://www\.opengis\.net/def/crs/EPSG/0/(\d+)", uri)
    if m is None:
        raise ApiError(400, f"input.bounds.properties.crs {uri!r} is not an OGC CRS URI")
    return CRS.from_epsg(int(m.group(1)))


# -- evalscript (interpreted, not executed) -----------------------------------------------------------------------


@dataclass(frozen=True)
class EvalInput:
    datasource: str | None
    bands: tuple[str, ...]
    units: tuple[str, ...]


@dataclass(frozen=True)
class Evalscript:
    inputs: tuple[EvalInput, ...]
    output_id: str
    output_bands: int
    sample_type: str
    returns: tuple[tuple[str | None, str], ...]
    """(datasource or None, band) of each value ``evaluatePixel`` returns, in order."""


def _balanced(text: str, start: int, open_ch: str, close_ch: str) -> str:
    """The text between the bracket at ``start`` and its matching closing bracket."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_ch:
            depth += 1
        elif text[i] == close_ch:
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    raise ApiError(400, "evalscript: unbalanced brackets")


def _function_body(script: str, name: str) -> tuple[str, str]:
    """(first parameter name, body) of ``function name(...) {...}``."""
    m = re.search(rf"function\s+{name}\s*\(\s*(\w*)[^)]*\)\s*\{{", script)
    if m is None:
        raise ApiError(400, f"evalscript: no function {name}()")
    return m.group(1), _balanced(script, m.end() - 1, "{", "}")


def _value_after(text: str, key: str) -> tuple[str, str] | None:
    """The bracketed value after ``key:`` as (opening bracket, inner text), or None when absent."""
    m = re.search(rf"\b{key}\s*:\s*([\[{{])", text)
    if m is None:
        return None
    open_ch = m.group(1)
    return open_ch, _balanced(text, m.start(1), open_ch, "]" if open_ch == "[" else "}")


def _strings(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[\"'](\w+)[\"']", text))


def _units(text: str, n: int) -> tuple[str, ...] | None:
    listed = _value_after(text, "units")
    if listed is not None:
        units = _strings(listed[1])
        if len(units) != n:
            raise ApiError(400, f"evalscript: {len(units)} units for {n} bands")
        return units
    m = re.search(r"\bunits\s*:\s*[\"'](\w+)[\"']", text)
    return (m.group(1),) * n if m else None


def parse_evalscript(script: str) -> Evalscript:
    if not script.lstrip().startswith("//VERSION=3"):
        raise ApiError(400, "evalscript: only //VERSION=3 evalscripts are supported")
    _, setup = _function_body(script, "setup")
    mosaicking = re.search(r"\bmosaicking\s*:\s*(?:Mosaicking\.)?[\"']?(\w+)", setup)
    if mosaicking is not None and mosaicking.group(1) != "SIMPLE":
        raise ApiError(400, f"evalscript: mosaicking {mosaicking.group(1)} is not supported here (only SIMPLE)")
    found = _value_after(setup, "input")
    if found is None or found[0] != "[":
        raise ApiError(400, "evalscript: setup() must return input: [...]")
    inner = found[1]
    inputs: list[EvalInput] = []
    if "{" in inner:
        pos = 0
        while (start := inner.find("{", pos)) >= 0:
            obj = _balanced(inner, start, "{", "}")
            pos = start + len(obj) + 2
            bands_v = _value_after(obj, "bands")
            if bands_v is None:
                raise ApiError(400, "evalscript: an input object has no bands")
            bands = _strings(bands_v[1])
            ds = re.search(r"\bdatasource\s*:\s*[\"'](\w+)[\"']", obj)
            units = _units(obj, len(bands))
            inputs.append(EvalInput(ds.group(1) if ds else None, bands, units or _default_units(bands)))
    else:
        bands = _strings(inner)
        inputs.append(EvalInput(None, bands, _default_units(bands)))
    out = _value_after(setup, "output")
    if out is None or out[0] != "{":
        raise ApiError(400, "evalscript: setup() must return one output object")
    n_out = re.search(r"\bbands\s*:\s*(\d+)", out[1])
    if n_out is None:
        raise ApiError(400, "evalscript: the output has no number of bands")
    out_id = re.search(r"\bid\s*:\s*[\"'](\w+)[\"']", out[1])
    stype = re.search(r"\bsampleType\s*:\s*(?:SampleType\.)?[\"']?(\w+)", out[1])
    sample_type = stype.group(1) if stype else "AUTO"
    if sample_type not in SAMPLE_TYPES:
        raise ApiError(400, f"evalscript: sampleType {sample_type} is not one of {SAMPLE_TYPES}")

    param, body = _function_body(script, "evaluatePixel")
    ret = re.search(r"\breturn\s*\[", body)
    if ret is None:
        raise ApiError(400, "evalscript: evaluatePixel must return [...] of band values")
    returns: list[tuple[str | None, str]] = []
    for expr in _balanced(body, ret.end() - 1, "[", "]").split(","):
        m = re.fullmatch(rf"\s*{re.escape(param)}(?:\.(\w+)\[0\])?\.(\w+)\s*", expr)
        if m is None:
            raise ApiError(400, f"evalscript: cannot evaluate {expr.strip()!r} (only plain band references)")
        returns.append((m.group(1), m.group(2)))
    if len(returns) != int(n_out.group(1)):
        raise ApiError(400, f"evalscript: output has {n_out.group(1)} bands but evaluatePixel returns {len(returns)}")
    return Evalscript(
        tuple(inputs), out_id.group(1) if out_id else "default", int(n_out.group(1)), sample_type, tuple(returns)
    )


def _default_units(bands: Sequence[str]) -> tuple[str, ...]:
    return tuple("DN" if b in DN_ONLY_BANDS else "REFLECTANCE" for b in bands)


# -- process requests -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataEntry:
    id: str | None
    start: dt.datetime
    end: dt.datetime
    max_cloud: float
    order: str
    upsampling: str
    downsampling: str
    harmonize: bool


@dataclass(frozen=True)
class OutputGrid:
    crs: CRS
    bounds: tuple[float, float, float, float]
    width: int
    height: int

    @property
    def transform(self) -> rasterio.Affine:
        return from_bounds(*self.bounds, self.width, self.height)


def _data_entry(d: Any, collection: str) -> DataEntry:
    if not isinstance(d, dict):
        raise ApiError(400, "input.data entries are objects")
    if d.get("type") != collection:
        raise ApiError(400, f"input.data.type {d.get('type')!r} is not available here; use {collection!r}")
    filt = d.get("dataFilter") or {}
    time_range = filt.get("timeRange")
    if not isinstance(time_range, dict) or "from" not in time_range or "to" not in time_range:
        raise ApiError(400, "input.data.dataFilter.timeRange with 'from' and 'to' is required")
    order = filt.get("mosaickingOrder", "mostRecent")
    if order not in MOSAICKING_ORDERS:
        raise ApiError(400, f"mosaickingOrder {order!r} is not one of {MOSAICKING_ORDERS}")
    proc = d.get("processing") or {}
    up, down = proc.get("upsampling", "NEAREST"), proc.get("downsampling", "NEAREST")
    for name, v in (("upsampling", up), ("downsampling", down)):
        if v not in RESAMPLING:
            raise ApiError(400, f"processing.{name} {v!r} is not one of {sorted(RESAMPLING)}")
    harmonize = proc.get("harmonizeValues", True)
    if not isinstance(harmonize, bool):
        raise ApiError(400, "processing.harmonizeValues is a boolean")
    return DataEntry(
        id=d.get("id"),
        start=_parse_time(str(time_range["from"]), "timeRange.from"),
        end=_parse_time(str(time_range["to"]), "timeRange.to"),
        max_cloud=float(filt.get("maxCloudCoverage", 100)),
        order=order,
        upsampling=up,
        downsampling=down,
        harmonize=harmonize,
    )


def _output_grid(body: Mapping[str, Any]) -> OutputGrid:
    bounds = (body.get("input") or {}).get("bounds") or {}
    if "geometry" in bounds:
        raise ApiError(400, "input.bounds.geometry is not supported by this server; send a bbox")
    bbox = bounds.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4):
        raise ApiError(400, "input.bounds.bbox [minx, miny, maxx, maxy] is required")
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if not (minx < maxx and miny < maxy):
        raise ApiError(400, f"input.bounds.bbox {bbox} is empty")
    crs = _crs_from_uri((bounds.get("properties") or {}).get("crs"))
    out = body.get("output") or {}
    if "width" in out and "height" in out:
        width, height = int(out["width"]), int(out["height"])
    elif "resx" in out and "resy" in out:
        width, height = round((maxx - minx) / float(out["resx"])), round((maxy - miny) / float(out["resy"]))
    else:
        raise ApiError(400, "output needs width and height (or resx and resy)")
    if not (0 < width <= MAX_OUTPUT_PX and 0 < height <= MAX_OUTPUT_PX):
        raise ApiError(400, f"output size {width}x{height} is outside 1..{MAX_OUTPUT_PX} px per side")
    return OutputGrid(crs, (minx, miny, maxx, maxy), width, height)


def _to_sample_type(values: NDArray[np.float64], sample_type: str) -> NDArray[Any]:
    if sample_type == "FLOAT32":
        return values.astype(np.float32)
    if sample_type == "UINT16":
        return np.clip(np.rint(values), 0, 65535).astype(np.uint16)
    if sample_type == "UINT8":
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)  # AUTO: 0..1 stretched to 0..255


def _geotiff(values: NDArray[Any], grid: OutputGrid) -> bytes:
    with MemoryFile() as mem:
        with mem.open(
            driver="GTiff",
            width=grid.width,
            height=grid.height,
            count=values.shape[0],
            dtype=str(values.dtype),
            crs=grid.crs,
            transform=grid.transform,
            interleave="pixel",
        ) as dst:
            dst.write(values)
        return bytes(mem.read())


# -- the server -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One request the fake answered."""

    method: str
    path: str
    status: int
    body: Any = None
    """The JSON body (None for token requests: their body holds the client secret)."""
    served: tuple[str, ...] = ()
    """Feature ids of a catalog page; ids of the scenes mosaicked into a Process API response."""
    client_id: str | None = None


@dataclass
class _Token:
    client_id: str
    expires: float


@dataclass
class SentinelHubFake:
    """The Sentinel Hub endpoints for the scenes of ``collection_json``, served on 127.0.0.1 while entered."""

    collection_json: Path
    client_id: str
    client_secret: str
    collection: str = "sentinel-2-l2a"
    page_limit: int = 100
    token_ttl_s: int = 3600
    exchanges: list[Exchange] = field(default_factory=list, init=False)
    scenes: list[Scene] = field(default_factory=list, init=False)
    _tokens: dict[str, _Token] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _server: BaseWSGIServer | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.scenes = load_scenes(Path(self.collection_json))
        self._by_id = {s.id: s for s in self.scenes}

    # -- lifecycle

    def __enter__(self) -> SentinelHubFake:
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="sentinelhub-fake", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server, self._thread = None, None

    @property
    def url(self) -> str:
        """Base URL (what ``imagery.url`` / ``SHConfig.sh_base_url`` point at)."""
        if self._server is None:
            raise RuntimeError("the fake is not running; use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    # -- what was served

    def stac_id(self, product_id: str) -> str:
        """The generated catalog's item id of a served product id."""
        return self._by_id[product_id].stac_id

    def of(self, path: str) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if e.path == path]

    def searched_ids(self) -> Iterator[str]:
        """Ids of every feature returned by a successful catalog search, in serving order."""
        for e in self.of(CATALOG_SEARCH_PATH):
            if e.status == 200:
                yield from e.served

    # -- WSGI

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        handler = {CATALOG_SEARCH_PATH: self._search, PROCESS_PATH: self._process}.get(request.path)
        body: Any = None
        served: tuple[str, ...] = ()
        client: str | None = None
        try:
            if handler is None and request.path != TOKEN_PATH:
                raise ApiError(404, f"no endpoint {request.path}", "COMMON_NOT_FOUND")
            if request.method != "POST":
                raise ApiError(405, f"{request.path} accepts POST")
            if request.path == TOKEN_PATH:
                response, client = self._token(request)
            else:
                assert handler is not None
                client = self._authorize(request)
                try:
                    body = json.loads(request.get_data())
                except json.JSONDecodeError as exc:
                    raise ApiError(400, f"request body is not JSON: {exc}") from exc
                if not isinstance(body, dict):
                    raise ApiError(400, "request body must be a JSON object")
                response, served = handler(body)
        except ApiError as err:
            response = err.response()
        with self._lock:
            self.exchanges.append(Exchange(request.method, request.path, response.status_code, body, served, client))
        return response(environ, start_response)

    def _token(self, request: Request) -> tuple[Response, str | None]:
        form = request.form
        cid, secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            cid, secret = urllib.parse.unquote(user), urllib.parse.unquote(pw)
        if form.get("grant_type") != "client_credentials":
            return self._oauth_error(400, "unsupported_grant_type", "Unsupported grant_type"), cid
        if cid != self.client_id or not secrets.compare_digest(str(secret or ""), self.client_secret):
            return self._oauth_error(401, "unauthorized_client", "Invalid client or Invalid client credentials"), cid
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = _Token(cid, time.time() + self.token_ttl_s)
        payload = {
            "access_token": token,
            "expires_in": self.token_ttl_s,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": "email profile",
        }
        return Response(json.dumps(payload), content_type="application/json"), cid

    @staticmethod
    def _oauth_error(status: int, error: str, description: str) -> Response:
        body = json.dumps({"error": error, "error_description": description})
        return Response(body, status=status, content_type="application/json")

    def _authorize(self, request: Request) -> str:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        with self._lock:
            known = self._tokens.get(token)
        if known is None or known.expires < time.time():
            raise ApiError(
                401, "You are not authorized! Please provide a valid access token to continue.", "COMMON_UNAUTHORIZED"
            )
        return known.client_id

    # -- Catalog API

    def _feature(self, scene: Scene) -> dict[str, Any]:
        p = scene.properties
        geom = scene.geometry
        tile = f"{p.get('mgrs:utm_zone')}/{p.get('mgrs:latitude_band')}/{p.get('mgrs:grid_square')}"
        t = scene.datetime
        return {
            "stac_version": "1.0.0",
            "stac_extensions": [
                "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
                "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
            ],
            "id": scene.id,
            "type": "Feature",
            "geometry": mapping(geom),
            "bbox": list(geom.bounds),
            "properties": {
                "datetime": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "platform": p.get("platform"),
                "instruments": p.get("instruments", ["msi"]),
                "constellation": "sentinel-2",
                "gsd": 10,
                "eo:cloud_cover": scene.cloud_cover,
                "proj:epsg": p.get("proj:epsg"),
            },
            "assets": {
                "data": {
                    "href": f"s3://sentinel-s2-l2a/tiles/{tile}/{t.year}/{t.month}/{t.day}/0/",
                    "title": "s3",
                    "type": "inode/directory",
                }
            },
            "links": [
                {
                    "href": f"{self.url}/api/v1/catalog/1.0.0/collections/{self.collection}/items/{scene.id}",
                    "rel": "self",
                    "type": "application/geo+json",
                }
            ],
        }

    def _search(self, body: Mapping[str, Any]) -> tuple[Response, tuple[str, ...]]:
        collections = body.get("collections")
        if collections != [self.collection]:
            raise ApiError(400, f"collections must be [{self.collection!r}], got {collections!r}")
        found = list(self.scenes)
        if body.get("datetime"):
            lo, hi = _parse_interval(str(body["datetime"]))
            found = [s for s in found if (lo is None or s.datetime >= lo) and (hi is None or s.datetime <= hi)]
        if body.get("bbox") is not None:
            bbox = body["bbox"]
            if not (isinstance(bbox, list) and len(bbox) == 4):
                raise ApiError(400, "bbox must be [minx, miny, maxx, maxy]")
            aoi: BaseGeometry = box(*(float(v) for v in bbox))
            found = [s for s in found if s.geometry.intersects(aoi)]
        if body.get("intersects") is not None:
            aoi = shape(body["intersects"])
            found = [s for s in found if s.geometry.intersects(aoi)]
        if body.get("ids") is not None:
            ids = set(body["ids"])
            found = [s for s in found if s.id in ids]
        if body.get("filter") is not None:
            terms = _filter_terms(body["filter"], str(body.get("filter-lang", "cql2-text")))
            found = [s for s in found if _matches({**s.properties, "eo:cloud_cover": s.cloud_cover}, terms)]
        limit = int(body.get("limit", 10))
        if not 1 <= limit <= 100:
            raise ApiError(400, f"limit must be 1..100, got {limit}")
        size = min(limit, self.page_limit)
        start = int(body.get("next") or 0)
        page = found[start : start + size]
        context: dict[str, Any] = {"limit": limit, "returned": len(page)}
        if start + size < len(found):
            context["next"] = start + size
        payload = {
            "type": "FeatureCollection",
            "features": [self._feature(s) for s in page],
            "links": [],
            "context": context,
        }
        return Response(json.dumps(payload), content_type="application/geo+json"), tuple(s.id for s in page)

    # -- Process API

    def _process(self, body: Mapping[str, Any]) -> tuple[Response, tuple[str, ...]]:
        script = parse_evalscript(str(body.get("evalscript") or ""))
        grid = _output_grid(body)
        data = (body.get("input") or {}).get("data")
        if not isinstance(data, list) or not data:
            raise ApiError(400, "input.data must list at least one data collection")
        entries = [_data_entry(d, self.collection) for d in data]
        if len(entries) > 1:
            ids = [e.id for e in entries]
            if None in ids or len(set(ids)) != len(ids):
                raise ApiError(400, "with several input.data entries (data fusion) each needs a unique 'id'")
        responses = (body.get("output") or {}).get("responses") or [{"identifier": "default"}]
        if len(responses) != 1:
            raise ApiError(400, "this server returns one response (no multi-part tar)")
        fmt = (responses[0].get("format") or {}).get("type", "image/tiff")
        if fmt != "image/tiff" or responses[0].get("identifier", "default") != script.output_id:
            raise ApiError(400, f"response {responses[0]} does not name output {script.output_id!r} as image/tiff")

        by_ds: dict[str | None, tuple[DataEntry, EvalInput]] = {}
        for inp in script.inputs:
            if len(entries) == 1 and inp.datasource in (None, entries[0].id):
                by_ds[inp.datasource] = (entries[0], inp)
                continue
            match = [e for e in entries if e.id == inp.datasource]
            if not match:
                raise ApiError(400, f"evalscript input datasource {inp.datasource!r} is not an input.data id")
            by_ds[inp.datasource] = (match[0], inp)

        bands: list[NDArray[np.float64]] = []
        used: list[str] = []
        cache: dict[tuple[str | None, str], NDArray[np.float64]] = {}
        for ds, band in script.returns:
            if ds not in by_ds:
                raise ApiError(400, f"evaluatePixel refers to datasource {ds!r}, which setup() does not declare")
            entry, inp = by_ds[ds]
            if band not in inp.bands:
                raise ApiError(400, f"evaluatePixel returns {band}, which setup() does not request")
            if (ds, band) not in cache:
                unit = inp.units[inp.bands.index(band)]
                values, scene_ids = self._render(entry, band, unit, grid)
                cache[(ds, band)] = values
                used.extend(i for i in scene_ids if i not in used)
            bands.append(cache[(ds, band)])
        out = _to_sample_type(np.stack(bands), script.sample_type)
        headers = {"x-processingunits-spent": f"{grid.width * grid.height / 512**2 * max(1, len(bands) / 3):.4f}"}
        return Response(_geotiff(out, grid), content_type="image/tiff", headers=headers), tuple(used)

    def _scenes_for(self, entry: DataEntry, grid: OutputGrid) -> list[Scene]:
        aoi = box(*transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21))
        found = [
            s
            for s in self.scenes
            if entry.start <= s.datetime <= entry.end
            and s.cloud_cover <= entry.max_cloud
            and s.geometry.intersects(aoi)
        ]
        if entry.order == "leastCC":
            return sorted(found, key=lambda s: (s.cloud_cover, -s.datetime.timestamp()))
        return sorted(found, key=lambda s: s.datetime, reverse=entry.order == "mostRecent")

    def _render(
        self, entry: DataEntry, band: str, unit: str, grid: OutputGrid
    ) -> tuple[NDArray[np.float64], list[str]]:
        """One band of the entry's mosaic on ``grid`` in ``unit``; 0 where no scene has data."""
        if band in DN_ONLY_BANDS and unit != "DN":
            raise ApiError(400, f"band {band} is only available in DN units")
        if unit not in ("DN", "REFLECTANCE"):
            raise ApiError(400, f"units {unit!r} are not available for {band}; use REFLECTANCE or DN")
        out = np.zeros((grid.height, grid.width), dtype=np.float64)
        covered = np.zeros(out.shape, dtype=bool)
        used: list[str] = []
        for scene in self._scenes_for(entry, grid):
            if covered.all():
                break
            source_band = "SCL" if band == "dataMask" else band
            if source_band not in scene.files:
                raise ApiError(400, f"band {band} does not exist in {self.collection}")
            dn = self._warp(scene.files[source_band], grid, entry)
            valid = (dn != 0) & ~covered
            if not valid.any():
                continue
            used.append(scene.id)
            if band == "dataMask":
                values = np.ones_like(dn)
            elif band in DN_ONLY_BANDS:
                values = dn
            else:
                shifted = dn + scene.boa_add_offset if (entry.harmonize or unit == "REFLECTANCE") else dn
                values = shifted / QUANTIFICATION if unit == "REFLECTANCE" else shifted
                if entry.harmonize:
                    values = np.maximum(values, 0.0)
            out[valid] = values[valid]
            covered |= valid
        return out, used

    @staticmethod
    def _warp(path: Path, grid: OutputGrid, entry: DataEntry) -> NDArray[np.float64]:
        """Digital numbers of one COG resampled onto ``grid`` (0 = no data), by the entry's interpolation."""
        with rasterio.open(path) as src:
            src_res = abs(src.transform.a)
            left, bottom, right, top = transform_bounds(grid.crs, src.crs, *grid.bounds, densify_pts=21)
            out_res = (right - left) / grid.width
            method = entry.upsampling if out_res <= src_res * (1 + 1e-9) else entry.downsampling
            dst = np.zeros((grid.height, grid.width), dtype=np.float64)
            reproject(
                source=rasterio.band(src, 1),
                destination=dst,
                src_nodata=0,
                dst_transform=grid.transform,
                dst_crs=grid.crs,
                dst_nodata=0,
                resampling=RESAMPLING[method],
            )
        return dst
