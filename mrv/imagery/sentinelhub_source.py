"""Sentinel-2 L2A from Sentinel Hub: Catalog API for search, Process API for pixels on the project grid.

The Process API resamples to the grid itself (``bbox`` in the grid CRS, ``size`` in pixels), returns
FLOAT32 reflectance with ``harmonizeValues`` so the processing-baseline 04.00 offset is already removed,
and the scene classification (SCL) as a seventh band that is used for masking.

Resampling follows the local/STAC loader (:mod:`mrv.imagery.load`): bilinear for reflectance, nearest
neighbour for SCL class codes. Sentinel Hub applies one ``upsampling`` / ``downsampling`` method (default
``NEAREST``) to every band of an input, so the request names the collection twice (data fusion): input
``refl`` with ``BILINEAR`` for the six reflectance bands, input ``scl`` with ``NEAREST`` for SCL.

Credentials come from the constructor, else the ``SH_CLIENT_ID`` / ``SH_CLIENT_SECRET`` environment
variables, else the sentinelhub configuration profile. They are handed to ``SHConfig`` only; neither they
nor the OAuth access tokens obtained with them are logged at any level (:class:`_RedactSecrets`). The OAuth token URL comes from the constructor, else ``SH_TOKEN_URL``, else the deployment
(:func:`default_token_url`).

All HTTP goes through one ``sentinelhub`` download client (``SentinelHubDownloadClient``: OAuth session,
rate limiting, retries of temporary errors), built from the source's ``SHConfig`` unless one is injected
(``client=``), the way pystac-client takes ``stac_io=``: tests and notebooks hand in a client whose
transport (``_do_download``) replays recorded responses or adds their own session.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pystac
import xarray as xr
from oauthlib.oauth2.rfc6749.errors import InsecureTransportError, OAuth2Error
from sentinelhub import (
    CRS,
    BBox,
    DataCollection,
    MimeType,
    ResamplingType,
    SentinelHubCatalog,
    SentinelHubRequest,
    SHConfig,
)
from sentinelhub.download.sentinelhub_client import SentinelHubDownloadClient
from sentinelhub.exceptions import DownloadFailedException

from mrv.errors import ConfigError, ImageryError, MRVError, NoImageryFound
from mrv.grid import Grid
from mrv.imagery.masking import clear_mask
from mrv.imagery.radiometry import RULE_HARMONIZED
from mrv.imagery.scene_check import judge, scene_stats
from mrv.imagery.source import LoadedScenes, SearchRequest

__all__ = [
    "BAND_IDS",
    "CDSE_TOKEN_URL",
    "MAX_PROCESS_PX",
    "RESPONSE_BANDS",
    "SENTINEL_HUB_TOKEN_URL",
    "SentinelHubDownloadClient",
    "SentinelHubSource",
    "default_token_url",
]

log = logging.getLogger(__name__)

#: Common band names this source can deliver, mapped to Sentinel-2 band ids (ESA S2 MSI User Guide).
BAND_IDS: dict[str, str] = {
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "nir": "B08",
    "swir16": "B11",
    "swir22": "B12",
}
#: Order of the bands in the Process API response; SCL is the last band.
RESPONSE_BANDS: tuple[str, ...] = (*BAND_IDS.values(), "SCL")
#: Largest output the Process API returns in one request (pixels per side).
MAX_PROCESS_PX = 2500

#: Data fusion ids of the two inputs (the same collection, resampled differently).
REFLECTANCE_INPUT = "refl"
SCL_INPUT = "scl"

EVALSCRIPT = f"""//VERSION=3
function setup() {{
  return {{
    input: [
      {{datasource: "{REFLECTANCE_INPUT}", bands: ["B02", "B03", "B04", "B08", "B11", "B12"], units: "REFLECTANCE"}},
      {{datasource: "{SCL_INPUT}", bands: ["SCL"], units: "DN"}}
    ],
    output: {{id: "default", bands: 7, sampleType: "FLOAT32"}}
  }};
}}
function evaluatePixel(samples) {{
  return [samples.{REFLECTANCE_INPUT}[0].B02, samples.{REFLECTANCE_INPUT}[0].B03, samples.{REFLECTANCE_INPUT}[0].B04,
          samples.{REFLECTANCE_INPUT}[0].B08, samples.{REFLECTANCE_INPUT}[0].B11, samples.{REFLECTANCE_INPUT}[0].B12,
          samples.{SCL_INPUT}[0].SCL];
}}
"""


#: Token endpoint of every ``*.sentinel-hub.com`` deployment: they authenticate at the main one
#: (sentinelhub-py ``SHConfig.sh_token_url``).
SENTINEL_HUB_TOKEN_URL = "https://services.sentinel-hub.com/auth/realms/main/protocol/openid-connect/token"
#: Token endpoint of the Copernicus Data Space Ecosystem's Sentinel Hub (``https://sh.dataspace.copernicus.eu``).
CDSE_TOKEN_URL = "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"
TOKEN_URL_ENV = "SH_TOKEN_URL"


def default_token_url(base_url: str) -> str:
    """The OAuth token URL of the Sentinel Hub deployment at ``base_url``.

    ``*.sentinel-hub.com`` -> :data:`SENTINEL_HUB_TOKEN_URL`, ``*.dataspace.copernicus.eu`` ->
    :data:`CDSE_TOKEN_URL`, any other host -> ``<base_url>/auth/realms/main/protocol/openid-connect/token``.
    """
    host = (urllib.parse.urlsplit(base_url).hostname or "").lower()
    if host == "sentinel-hub.com" or host.endswith(".sentinel-hub.com"):
        return SENTINEL_HUB_TOKEN_URL
    if host == "dataspace.copernicus.eu" or host.endswith(".dataspace.copernicus.eu"):
        return CDSE_TOKEN_URL
    return f"{base_url.rstrip('/')}/auth/realms/main/protocol/openid-connect/token"


#: Logger name prefixes of the HTTP and OAuth stack under sentinelhub. ``requests_oauthlib`` logs the token
#: request body (client secret included) and, at DEBUG, the token response and the obtained token (access
#: token included); no level may show either.
_OAUTH_LOGGER_PREFIXES = ("requests_oauthlib", "oauthlib", "sentinelhub", "urllib3", "requests")
_SECRET_FIELD = re.compile(r"(client_secret[\"']?\s*[=:]\s*[\"']?)[^&\s\"',}]+")
#: OAuth 2 token fields (RFC 6749 section 5.1) in JSON, a Python dict repr or a form body, and bearer headers.
_TOKEN_FIELD = re.compile(r"((?:access_token|refresh_token|id_token)[\"']?\s*[=:]\s*[\"']?)[^&\s\"',}]+")
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9\-._~+/]+=*")
REDACTED = "***"


class _RedactSecrets(logging.Filter):
    """Rewrites log records so that no client secret or OAuth token reaches any handler."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = _SECRET_FIELD.sub(rf"\1{REDACTED}", msg)
        clean = _TOKEN_FIELD.sub(rf"\1{REDACTED}", clean)
        clean = _BEARER.sub(rf"\1{REDACTED}", clean)
        for secret in self.secrets:
            clean = clean.replace(secret, REDACTED)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


_REDACT = _RedactSecrets()


def _protect_secret(secret: str) -> None:
    """Make sure ``secret`` and every OAuth token are redacted from the HTTP/OAuth libraries' log records.

    A logger's filters see only the records logged on that logger, not those of its children, so the filter
    goes on every existing logger under :data:`_OAUTH_LOGGER_PREFIXES` (they are created when the libraries
    are imported, which has happened by now). Idempotent.
    """
    _REDACT.secrets.add(secret)
    names = [n for n in list(logging.Logger.manager.loggerDict) if n.split(".")[0] in _OAUTH_LOGGER_PREFIXES]
    for name in {*names, *_OAUTH_LOGGER_PREFIXES}:
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)


def _utc_day(day: dt.date, *, end: bool) -> dt.datetime:
    t = dt.time(23, 59, 59) if end else dt.time(0, 0, 0)
    return dt.datetime.combine(day, t, tzinfo=dt.UTC)


def _profile_credentials() -> tuple[str | None, str | None]:
    """Credentials of the sentinelhub config profile, without creating a config file if there is none."""
    if not os.path.exists(SHConfig.get_config_location()):
        return None, None
    try:
        cfg = SHConfig.load()
    except (KeyError, OSError, ValueError):
        return None, None
    return cfg.sh_client_id or None, cfg.sh_client_secret or None


def _l2a_collection(base_url: str) -> DataCollection:
    """Sentinel-2 L2A served by the deployment at ``base_url`` (Process API requests go to its service URL).

    sentinelhub's own ``SENTINEL2_L2A`` already belongs to ``services.sentinel-hub.com``; deriving a copy
    for that URL would duplicate its definition, which sentinelhub refuses. Other deployments get one
    derived collection each, named after the URL only, so every source for that URL shares it.
    """
    standard = DataCollection.SENTINEL2_L2A
    if (standard.service_url or "").rstrip("/") == base_url:
        return standard
    return standard.define_from(f"mrv-sentinel-2-l2a-{base_url}", service_url=base_url)


def _as_stac_dict(feature: dict[str, Any], collection: str) -> dict[str, Any]:
    """A catalog feature completed with the keys ``pystac.Item.from_dict`` requires."""
    d = dict(feature)
    d.setdefault("type", "Feature")
    d.setdefault("stac_version", "1.0.0")
    d.setdefault("links", [])
    d.setdefault("assets", {})
    d.setdefault("collection", collection)
    props = dict(d.get("properties") or {})
    d["properties"] = props
    if "id" not in d:
        raise ImageryError(f"Sentinel Hub catalog returned a feature without an id: {sorted(d)}. Retry the search.")
    if not props.get("datetime"):
        raise ImageryError(f"Sentinel Hub catalog feature {d['id']} has no datetime. Retry the search.")
    if "geometry" not in d:
        d["geometry"] = None
    if d.get("geometry") is not None and "bbox" not in d:
        raise ImageryError(f"Sentinel Hub catalog feature {d['id']} has a geometry but no bbox. Retry the search.")
    return d


class SentinelHubSource:
    """An :class:`~mrv.imagery.source.ImagerySource` backed by the Sentinel Hub Catalog and Process APIs."""

    name = "sentinel-hub"

    def __init__(
        self,
        *,
        base_url: str = "https://services.sentinel-hub.com",
        token_url: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        collection_name: str = "sentinel-2-l2a",
        client: SentinelHubDownloadClient | None = None,
    ) -> None:
        """``client``: the download client every Catalog and Process request goes through (default: a
        ``SentinelHubDownloadClient`` of this source's ``SHConfig``, which gets its OAuth token from ``token_url``
        with the credentials). An injected client keeps its own config and session; the credentials are still
        required, so that a source never silently runs without them."""
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"Sentinel Hub base_url {base_url!r} is not an http(s) URL; use e.g. https://services.sentinel-hub.com."
            )
        cid = client_id or os.environ.get("SH_CLIENT_ID") or None
        secret = client_secret or os.environ.get("SH_CLIENT_SECRET") or None
        if cid is None or secret is None:
            prof_id, prof_secret = _profile_credentials()
            cid = cid or prof_id
            secret = secret or prof_secret
        if not cid or not secret:
            missing = [n for n, v in (("SH_CLIENT_ID", cid), ("SH_CLIENT_SECRET", secret)) if not v]
            raise ConfigError(
                f"Sentinel Hub credentials are missing ({', '.join(missing)} not set). Set the environment variables "
                "SH_CLIENT_ID and SH_CLIENT_SECRET to your OAuth client's id and secret (or store them in a "
                "sentinelhub config profile)."
            )
        _protect_secret(secret)
        base = base_url.rstrip("/")
        self.base_url = base
        self.collection_name = collection_name
        self._config = SHConfig(use_defaults=True)
        self._config.sh_base_url = base
        self._config.sh_token_url = token_url or os.environ.get(TOKEN_URL_ENV) or default_token_url(base)
        self._config.sh_client_id = cid
        self._config.sh_client_secret = secret
        self._collection = _l2a_collection(base)
        self.client = client if client is not None else SentinelHubDownloadClient(config=self._config)

    # -- errors -------------------------------------------------------------------------------------------------

    #: OAuth error codes meaning the client id / secret (or the token URL's realm) were not accepted.
    _REJECTED_CREDENTIALS = frozenset({"invalid_client", "unauthorized_client", "access_denied", "invalid_grant"})

    def _auth_error(self, exc: OAuth2Error) -> MRVError:
        """The error to raise when getting an OAuth token failed (never quoting the secret)."""
        url = self._config.sh_token_url
        if isinstance(exc, InsecureTransportError):
            return ConfigError(
                f"The Sentinel Hub token URL {url} is not https, and OAuth refuses to send client credentials over "
                "plain http. Use an https imagery.url (OAUTHLIB_INSECURE_TRANSPORT=1 is only for local test servers)."
            )
        detail = f"{exc.error}: {exc.description}" if exc.description else str(exc.error)
        if exc.error in self._REJECTED_CREDENTIALS:
            return ConfigError(
                f"Sentinel Hub did not accept the OAuth client credentials at {url} ({detail}). Check SH_CLIENT_ID "
                f"and SH_CLIENT_SECRET (or the sentinelhub config profile), and that {url} is the token URL of the "
                f"deployment at {self.base_url}."
            )
        return ImageryError(f"Getting a Sentinel Hub access token from {url} failed ({detail}). Retry later.")

    @contextmanager
    def _authenticated(self) -> Iterator[None]:
        """Turn OAuth token failures (raised by ``oauthlib``, not by sentinelhub) into errors of this package."""
        try:
            yield
        except OAuth2Error as exc:
            raise self._auth_error(exc) from exc

    # -- search -------------------------------------------------------------------------------------------------

    def search(self, request: SearchRequest) -> list[pystac.Item]:
        catalog = SentinelHubCatalog(config=self._config)
        catalog.client = self.client  # the one transport (the catalog builds its own otherwise)
        where = (
            f"bbox={request.bbox_wgs84}, {request.start}..{request.end}, collection {self.collection_name}, "
            f"cloud cover <= {request.max_cloud_pct}%"
        )
        try:
            with self._authenticated():
                results = catalog.search(
                    self.collection_name,
                    bbox=BBox(request.bbox_wgs84, CRS.WGS84),
                    time=(_utc_day(request.start, end=False), _utc_day(request.end, end=True)),
                    filter=f"eo:cloud_cover <= {float(request.max_cloud_pct)}",
                )
                features = list(results)
        except DownloadFailedException as exc:
            raise ImageryError(
                f"Sentinel Hub catalog search failed for {where}: {exc}. Check the credentials, base_url and "
                "collection name, then retry."
            ) from exc
        if not features:
            raise NoImageryFound(
                f"No Sentinel Hub items for {where}. Widen the dates, raise max_cloud_pct or check the collection."
            )
        items = [pystac.Item.from_dict(_as_stac_dict(f, self.collection_name)) for f in features]
        log.info("sentinel hub catalog: %d items for %s", len(items), where)
        return items

    # -- load ---------------------------------------------------------------------------------------------------

    def _request(self, when: tuple[dt.datetime, dt.datetime], grid: Grid) -> SentinelHubRequest:
        """The Process request of the scenes acquired between ``when`` (UTC), resampled to ``grid``."""
        return SentinelHubRequest(
            evalscript=EVALSCRIPT,
            input_data=[
                SentinelHubRequest.input_data(
                    data_collection=self._collection,
                    identifier=identifier,
                    time_interval=when,
                    upsampling=resampling,
                    downsampling=resampling,
                    other_args={"processing": {"harmonizeValues": True}},
                )
                for identifier, resampling in (
                    (REFLECTANCE_INPUT, ResamplingType.BILINEAR),
                    (SCL_INPUT, ResamplingType.NEAREST),
                )
            ],
            responses=[SentinelHubRequest.output_response("default", MimeType.TIFF)],
            bbox=BBox(grid.bounds, CRS(grid.crs)),
            size=(grid.width, grid.height),
            config=self._config,
        )

    def load(
        self,
        items: Sequence[pystac.Item],
        bands: Sequence[str],
        grid: Grid,
        *,
        chunk_px: int,
        check_grid: Grid | None = None,
    ) -> LoadedScenes:
        """One Process API request per acquisition date; ``chunk_px`` is unused (responses are in memory).

        The data check judges each date on the response itself (``check_grid`` is not requested separately).

        The request's time range spans the searched items of that date (plus a minute each side), not the
        whole day, so a same-day scene the search left out (e.g. for cloud cover) is not mosaicked in.
        """
        unknown = [b for b in bands if b not in BAND_IDS]
        if unknown:
            raise ConfigError(f"Sentinel Hub source cannot deliver bands {unknown}; choose from {sorted(BAND_IDS)}.")
        if not items:
            raise NoImageryFound("No items to load from Sentinel Hub. Run search first and pass its items.")
        if grid.width > MAX_PROCESS_PX or grid.height > MAX_PROCESS_PX:
            raise ImageryError(
                f"Grid of {grid.width}x{grid.height} px exceeds the Process API limit of {MAX_PROCESS_PX} px per "
                "side. Use a coarser resolution or split the area into smaller grids."
            )
        by_day: dict[dt.date, list[pystac.Item]] = {}
        for item in items:
            if item.datetime is None:
                raise ImageryError(f"Item {item.id} has no datetime; Sentinel Hub loads by date. Re-run the search.")
            by_day.setdefault(item.datetime.astimezone(dt.UTC).date(), []).append(item)

        idx = [RESPONSE_BANDS.index(BAND_IDS[b]) for b in bands]
        scl_idx = RESPONSE_BANDS.index("SCL")
        parts: list[xr.Dataset] = []
        responses: list[tuple[dt.date, np.ndarray]] = []
        used: list[str] = []
        times: list[np.datetime64] = []
        x = np.asarray(grid.x_coords())
        y = np.asarray(grid.y_coords())
        for day in sorted(by_day):
            try:
                acquired = [i.datetime.astimezone(dt.UTC) for i in by_day[day] if i.datetime is not None]
                margin = dt.timedelta(minutes=1)
                request = self._request((min(acquired) - margin, max(acquired) + margin), grid)
                with self._authenticated():  # what SentinelHubRequest.get_data does, on this source's client
                    data = self.client.download(request.get_download_list(), decode_data=True)
            except DownloadFailedException as exc:
                raise ImageryError(
                    f"Sentinel Hub Process API request for {day} failed: {exc}. Check credentials and quota, "
                    "then retry."
                ) from exc
            arr = np.asarray(data[0], dtype=np.float32)
            if arr.ndim == 3 and arr.shape[-1] != len(RESPONSE_BANDS) and arr.shape[0] == len(RESPONSE_BANDS):
                arr = np.moveaxis(arr, 0, -1)
            if arr.shape != (grid.height, grid.width, len(RESPONSE_BANDS)):
                raise ImageryError(
                    f"Sentinel Hub returned an array of shape {arr.shape} for {day}; expected "
                    f"{(grid.height, grid.width, len(RESPONSE_BANDS))}. Check the grid and retry."
                )
            responses.append((day, arr))

        # The data check (mrv.imagery.scene_check) on each date's response: harmonised values should pass it.
        # One response is the mosaic of a date's scenes, so it is judged under the date and every verdict is
        # recorded once per scene of that date (item ids stay single ids).
        ids = {day: tuple(i.id for i in by_day[day]) for day in by_day}
        stats = [
            scene_stats(day.isoformat(), {n: arr[..., i] for n, i in zip(bands, idx, strict=True)}, arr[..., scl_idx])
            for day, arr in responses
        ]
        verdicts = {v.item_id: v for v in judge(stats)}
        dropped: list[tuple[str, str]] = []
        corrected: list[tuple[str, str]] = []
        flagged: list[tuple[str, str]] = []
        scenes: list[tuple[str, ...]] = []
        for day, arr in responses:
            verdict = verdicts[day.isoformat()]
            mosaic = f" (mosaic of {len(ids[day])} scenes of {day})" if len(ids[day]) > 1 else ""
            if verdict.action == "drop":
                log.warning("dropping %s: data check: %s", ", ".join(ids[day]), verdict.reason)
                dropped.extend((i, f"data check{mosaic}: {verdict.reason}") for i in ids[day])
                continue
            if verdict.action == "correct":
                log.warning("correcting %s: %s", ", ".join(ids[day]), verdict.reason)
                corrected.extend((i, f"{verdict.reason}{mosaic}") for i in ids[day])
            elif verdict.reason:
                flagged.extend((i, f"{verdict.reason}{mosaic}") for i in ids[day])
            scl = xr.DataArray(np.nan_to_num(arr[..., scl_idx]).astype(np.uint8), dims=("y", "x"))
            keep = clear_mask(scl)
            out: dict[str, xr.DataArray] = {}
            for name, i in zip(bands, idx, strict=True):
                values = arr[..., i] + np.float32(verdict.offset_shift)
                refl = xr.DataArray(values, dims=("y", "x")).where(keep).astype(np.float32)
                rule = RULE_HARMONIZED + (", data-check" if verdict.action == "correct" else "")
                refl.attrs = {"units": "1", "long_name": f"surface reflectance {name}", "scaling_rule": rule}
                out[name] = refl
            ds = xr.Dataset(out)
            ds["scl"] = scl
            parts.append(ds)
            used.append(ids[day][0])
            scenes.append(ids[day])
            times.append(np.datetime64(dt.datetime.combine(day, dt.time()), "ns"))
        if not parts:
            raise NoImageryFound(f"Every Sentinel Hub scene failed the data check ({dropped}). Check the provider.")

        result = xr.concat(parts, dim="time").assign_coords(
            time=("time", np.asarray(times)), y=("y", y), x=("x", x), item_id=("time", used)
        )
        result.attrs = {"crs": grid.crs}
        return LoadedScenes(
            reflectance=result,
            items=tuple(i for ids_of_day in scenes for i in ids_of_day),
            dropped=tuple(dropped),
            corrected=tuple(corrected),
            flagged=tuple(flagged),
            scenes=tuple(scenes),
        )
