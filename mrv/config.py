"""Run configuration: parsed once from YAML into frozen, validated objects.

Paths in a config file are resolved relative to the directory of that file, so a config can be
moved together with its data. Nothing here is read at import time.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from mrv.errors import ConfigError
from mrv.textsafe import is_safe_component

if TYPE_CHECKING:
    from mrv.accounting.methodology import MethodologyProfile
    from mrv.imagery.providers import ProviderProfile
    from mrv.samples.formats import SampleFormat

#: Field metadata of values the loader fills in (parsed profiles, the config's own path): not YAML keys.
RESOLVED = {"resolved": True}
#: Field metadata of YAML keys whose default the loader resolves per machine (no fixed default in the schema).
RESOLVED_DEFAULT = {"resolved_default": True}
#: Environment variable naming the shared model registry when ``model.registry_dir`` is not set.
MODEL_REGISTRY_ENV = "MRV_MODEL_REGISTRY"


def default_model_registry() -> Path:
    """Where models are registered when ``model.registry_dir`` is not set (see ``models/README.md``).

    In order: ``$MRV_MODEL_REGISTRY`` (relative to the working directory); ``models/`` of the source
    checkout this package runs from (a ``models/`` directory beside ``pyproject.toml``); else
    ``$XDG_DATA_HOME/mrv/models`` (``~/.local/share/mrv/models``), so an installed package never
    writes into site-packages. Only the path is resolved; the registry creates it on first use.
    """
    env = os.environ.get(MODEL_REGISTRY_ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "models").is_dir():
        return checkout / "models"
    data_home = Path(os.environ.get("XDG_DATA_HOME", "").strip() or "~/.local/share").expanduser()
    if not data_home.is_absolute():  # the XDG spec says to ignore a relative XDG_DATA_HOME
        data_home = Path.home() / ".local" / "share"
    return data_home / "mrv" / "models"


SampleSource = Literal["lab", "crowd"]
ImagerySourceKind = Literal["local", "stac", "sentinelhub"]


@dataclass(frozen=True)
class RegionConfig:
    """The monitored region and the grid every raster is put on."""

    fields: Path
    """Field polygons (GeoJSON, RFC 7946 lon/lat) with a ``field_id`` property."""
    crs: str
    """Projected CRS of the project grid, e.g. ``EPSG:32633``; areas and pixels are in its metres."""
    resolution_m: float
    """Pixel size of the project grid in metres."""
    buffer_m: float = 0.0
    """Margin added around the fields' bounding box when building the grid."""


@dataclass(frozen=True)
class BareSoilConfig:
    """Thresholds that decide whether an observation shows bare soil.

    The NDVI + NBR2 approach follows Castaldi et al. (2019), ISPRS J. Photogramm. Remote Sens.
    147:267-282 (bare-soil composites from Sentinel-2 for SOC mapping). The defaults are permissive;
    tune NBR2 per region: stricter values (about 0.075-0.125) remove more dry crop residue but also
    more moist bare soil.
    """

    ndvi_max: float = 0.35
    nbr2_max: float = 0.25
    min_observations: int = 1
    """Pixels with fewer bare observations than this are left NaN in the composite."""


@dataclass(frozen=True)
class DemConfig:
    """A digital elevation model for terrain covariates (elevation, slope, TPI).

    Exactly one of ``path`` (a local GeoTIFF in any CRS) or ``collection`` (a DEM collection such as
    ``cop-dem-glo-30`` on the configured STAC API, ``imagery.source: stac``) is set.
    """

    path: Path | None = None
    collection: str | None = None
    asset: str = "data"
    """Asset key of the elevation raster in the collection's items (``data`` on Earth Search / Planetary Computer)."""
    tpi_radius_m: float = 300.0
    """Half-width of the square neighbourhood of the topographic position index (m)."""


@dataclass(frozen=True)
class ImageryConfig:
    """Where imagery comes from and how it is composited."""

    source: ImagerySourceKind
    collection: str
    catalog: Path | None = None
    """Local static STAC catalog or collection JSON (``source: local``)."""
    url: str | None = None
    """STAC API root (``source: stac``) or Sentinel Hub base URL (``source: sentinelhub``)."""
    provider: str | None = None
    """Provider profile in ``mrv/profiles/providers/`` (``earth_search``, ``planetary_computer``, ``cdse``);
    gives the URL, signing and conventions of a known STAC API."""
    max_cloud_pct: float = 80.0
    bands: tuple[str, ...] = ("blue", "green", "red", "nir", "swir16", "swir22")
    """Reflectance bands by ``eo:bands`` common name."""
    chunk_px: int = 256
    tile_px: int = 2048
    """Regions wider or taller than this many pixels are composited tile by tile (each tile a resumable
    step, fanned out over the Dask cluster) and mosaicked, so memory stays bounded by the tile size."""
    bare_soil: BareSoilConfig = field(default_factory=BareSoilConfig)
    max_items: int = 2000
    """A search matching more items than this is refused (narrow the dates or the AOI)."""
    max_aoi_km2: float = 10_000.0
    """A project grid larger than this is refused (tile the region into several runs)."""
    dem: DemConfig | None = None
    """Terrain covariates from a DEM; none when unset."""
    max_run_gb: float = 200.0
    """A run whose covariate stacks (pixels x covariates x 4 bytes x rounds) would exceed this many GB is
    refused before any work starts (``mrv validate`` prints the estimate)."""
    provider_profile: ProviderProfile | None = field(default=None, metadata=RESOLVED)
    """The parsed ``provider`` profile (resolved when the config is loaded; part of the step cache keys)."""


@dataclass(frozen=True)
class SampleFileConfig:
    """One sample file of a round."""

    path: Path
    """The CSV file (relative to the config file)."""
    source: SampleSource
    """``lab`` (accredited laboratory analyses) or ``crowd`` (farmer or citizen samples: noisier)."""
    format: str = field(metadata={"optional": True})
    """Name of a sample format profile (``lab_wide``, ``crowd``) or a path to a profile YAML; default
    ``lab_wide`` for lab files and ``crowd`` for crowd files."""
    submitter: str = "unknown"
    """Agency or person who submitted the file (recorded with every sample)."""
    format_profile: SampleFormat | None = field(default=None, metadata=RESOLVED)
    """The parsed ``format`` profile (resolved when the config is loaded; part of the step cache keys)."""


@dataclass(frozen=True)
class SampleErrorModel:
    """Measurement error of one sample source (``samples.error_models.<source>``)."""

    soc_rel_sd: float
    """Relative SD of the SOC concentration (dry combustion in an accredited lab: ~3-5 %)."""
    bd_sd_g_cm3: float = 0.05
    """SD of a measured core bulk density (g/cm3)."""


def _default_error_models() -> dict[str, SampleErrorModel]:
    return {"lab": SampleErrorModel(soc_rel_sd=0.04), "crowd": SampleErrorModel(soc_rel_sd=0.20)}


@dataclass(frozen=True)
class SamplesConfig:
    """How samples of different sources are weighed and checked (top-level ``samples:`` section).

    ``error_models`` per source feed the site stock SDs and through them the model's inverse-variance
    weights; a source left out keeps its default (lab 4 %, crowd 20 % relative SOC SD). A crowd site
    whose stock is more than ``outlier_k`` robust SDs from the median of the lab sites within
    ``outlier_radius_m`` is flagged (kept in sites.csv, left out of training). Position checks
    (:mod:`mrv.samples.qa`) use ``gps_tolerance_m``.
    """

    error_models: dict[str, SampleErrorModel] = field(default_factory=_default_error_models)
    outlier_radius_m: float = field(default=500.0, metadata={"yaml": "outliers.radius_m"})
    outlier_k: float = field(default=3.5, metadata={"yaml": "outliers.k"})
    outlier_min_lab_sites: int = field(default=3, metadata={"yaml": "outliers.min_lab_sites"})
    duplicate_tolerance_m: float = 15.0
    gps_tolerance_m: float = 10.0
    """Position tolerance (m): samples whose reported GPS accuracy is worse are flagged, records of one
    site whose positions differ by more are flagged as GPS jitter, and it is the position uncertainty of
    samples without a reported accuracy in the field-edge check. 10 m: consumer phones reach about
    3-10 m under open sky (GPS.gov: ~4.9 m; Merry & Bettinger 2019, PLoS ONE 14:e0219890: 7-13 m), so a
    fix reported worse than that is degraded (canopy, buildings, cold start)."""
    field_edge_check: bool = True
    """Flag samples closer to their field's boundary than their position uncertainty (or half a pixel
    diagonal) and samples outside every field (:func:`mrv.samples.qa.flag_field_edges`)."""


@dataclass(frozen=True)
class RoundConfig:
    """One monitoring round: an imagery period and the samples taken in it."""

    name: str
    """Round name (a directory name in the run: letters, digits, '.', '_' or '-')."""
    start: dt.date
    """First day of the imagery period (YYYY-MM-DD)."""
    end: dt.date
    """Last day of the imagery period (YYYY-MM-DD)."""
    samples: tuple[SampleFileConfig, ...] = ()
    """Sample files of the round, each with its source, format profile and submitter."""
    store: StoreSamplesConfig | None = None
    """Samples taken from the sample store (``mrv samples submit``) as well as, or instead of, the files."""


@dataclass(frozen=True)
class StoreSamplesConfig:
    """Which stored samples a round takes from the sample store (``rounds[].store``, ``round_schedule.store``).

    Only samples of submissions in use (stored, not superseded or withdrawn) are taken. A run's
    sample step is keyed on the submissions matching this selection, so a scheduled run
    recomputes when a submission arrived, was corrected or withdrawn, and skips otherwise.
    """

    url: str = field(metadata={"optional": True})
    """Database URL without a password, or ``env:NAME`` (the URL in environment variable NAME; use it for
    PostgreSQL with a password); default ``env:MRV_SAMPLES_DB``."""
    start: dt.date | None = None
    """First sampling date taken (YYYY-MM-DD); default the round's start."""
    end: dt.date | None = None
    """Last sampling date taken (YYYY-MM-DD); default the round's end."""
    sources: tuple[SampleSource, ...] = ()
    """Only these sources (``lab``, ``crowd``); default all."""
    agencies: tuple[str, ...] = ()
    """Only these agencies; default all."""


@dataclass(frozen=True)
class RoundSchedule:
    """Rounds generated from a calendar (``round_schedule:``): one round per ``every_years`` years from ``first_year``.

    Each round's imagery period and sampling window is ``season_start``..``season_end`` of its
    year; its samples come from the store. Only rounds whose period has ended (by ``until``,
    default the day the config is loaded) are generated: a round's imagery is then final, and a
    monthly deployment does work only when a period ends or the store's submissions for a round
    change (late lab results, corrections), and skips otherwise.
    """

    first_year: int
    """Year of the first (baseline) round."""
    store: StoreSamplesConfig = field(metadata={"optional": True})
    """Where the rounds' samples come from; its ``start``/``end`` are set per round."""
    every_years: int = 1
    """Years between rounds."""
    season_start: str = "01-01"
    """First day (MM-DD) of each round's period."""
    season_end: str = "12-31"
    """Last day (MM-DD) of each round's period."""
    name: str = "{year}"
    """Round name pattern; ``{year}`` is replaced by the round's year."""
    until: dt.date | None = None
    """Generate rounds ending on or before this date (YYYY-MM-DD); default the day the config is loaded."""


@dataclass(frozen=True)
class ModelConfig:
    """The SOC model, its spatial cross-validation and where fitted models are registered."""

    kind: Literal["qrf", "gbm_quantile"] = "qrf"
    """``qrf``: quantile regression forest; ``gbm_quantile``: quantile gradient boosting (p05/p50/p95 + mean).
    Both get the same conformal (CQR) calibration from spatial CV."""
    n_estimators: int = 100
    """Trees of the QRF; prediction time is proportional to it. 100 trees with ``min_samples_leaf: 5`` had the
    spatial-CV RMSE, coverage and width of 200 trees with 3 on the demo data at ~2.5x the mapping speed
    (benchmarks/README.md)."""
    min_samples_leaf: int = 5
    """Smallest leaf of a QRF tree; larger leaves mean shallower trees and faster mapping."""
    max_features: float = 0.5
    gbm_max_iter: int = 100
    """Boosting iterations of each ``gbm_quantile`` model."""
    gbm_learning_rate: float = 0.1
    gbm_max_leaf_nodes: int = 15
    gbm_min_samples_leaf: int = 10
    cv_folds: int = 5
    cv_block_size_m: float | Literal["auto"] = "auto"
    """Edge of the square spatial-CV blocks (m), or ``auto``: max(autocorrelation range of the stock from an
    exponential variogram, ``cv_min_block_m``), see :mod:`mrv.modeling.variogram`. Used for the folds with
    ``cv_design: blocks``; recorded on the model card with ``knndm``."""
    cv_min_block_m: float = 500.0
    """Smallest block the ``auto`` rule returns."""
    cv_design: Literal["blocks", "knndm"] = "knndm"
    """Folds of the spatial CV (and so of the conformal calibration): ``knndm``, k-means clusters of the sites
    chosen so the held-out-to-training distances match the field-pixel-to-site distances (Linnenbrink et al.
    2024, :mod:`mrv.modeling.validation`); ``blocks``, whole square blocks of ``cv_block_size_m`` (more
    pessimistic than the maps: it holds sites out 2-3x farther from training data than field pixels lie
    from the nearest site)."""
    confidence: float = 0.9
    process_sd_t_ha: float = 5.0
    """Prior SD of the stock not explained by covariates; with each sample's measurement SD it sets
    the inverse-variance sample weights w_i = 1 / (process_sd^2 + sd_i^2)."""
    seed: int = 0
    registry_dir: Path = field(default_factory=default_model_registry, metadata=RESOLVED_DEFAULT)
    """Shared, content-addressed model registry (:mod:`mrv.modeling.registry`, ``models/README.md``) the
    trained model is registered in, relative to the config file. Unset or null: ``$MRV_MODEL_REGISTRY``, else
    ``models/`` of the source checkout, else ``~/.local/share/mrv/models`` (resolved when the config is loaded)."""
    round_normalisation: bool = True
    """Normalise each round's covariates by their own median and IQR over the field pixels before training
    and prediction (:func:`mrv.modeling.features.round_normalisation`), so imagery differences between
    rounds do not become SOC change. ``false`` pools raw covariates over rounds (the old behaviour)."""


@dataclass(frozen=True)
class DaskConfig:
    address: str | None = None
    """``tcp://host:8786`` of an existing scheduler; ``None`` starts a LocalCluster."""
    n_workers: int = 2
    threads_per_worker: int = 1


@dataclass(frozen=True)
class AccountingConfig:
    confidence: float = 0.9
    n_simulations: int = 400
    error_range_m: float | Literal["auto"] = "auto"
    """Distance parameter a (m) of the exponential correlation exp(-h/a) of prediction errors. ``auto``
    fits an exponential variogram to the standardized cross-validation errors and also uses its nugget
    share (:mod:`mrv.accounting.variogram`); a number overrides it, with no nugget (all error correlated)."""
    round_error_correlation: float | Literal["auto"] = 0.0
    """Correlation of the two rounds' spatially correlated prediction errors. 0 (the default) is
    conservative for the change when the true correlation is positive. ``auto`` estimates it from
    nearby cross-validation points of the first and last round (intrinsic coregionalization model,
    :func:`mrv.accounting.variogram.cross_round_correlation`), clipped to [0, 1]; its sampling error
    is not propagated."""
    methodology: str = "verra_vm0042_v2"
    seed: int = 0
    change_estimator: Literal["regression", "difference", "map"] = "regression"
    """How the credited change is estimated (:mod:`mrv.accounting.change`): ``regression`` (default) or
    ``difference``: design-based, from the sites re-measured in the first and last round with the map
    change as auxiliary (VM0042 v2.2 Eqs. 70-71); ``map``: the Monte Carlo change of the maps alone
    (not design-based; only for comparison)."""
    pair_distance_m: float = 10.0
    """A site of the last round within this distance (m) of a first-round site in the same field, each the
    other's nearest, is a re-measurement of it."""
    methodology_profile: MethodologyProfile | None = field(default=None, metadata=RESOLVED)
    """The parsed ``methodology`` profile (resolved when the config is loaded)."""


@dataclass(frozen=True)
class RunConfig:
    name: str
    """Name of the run; the default run directory is ``out/<name>``."""
    source_path: Path = field(metadata=RESOLVED)
    output_dir: Path = field(metadata={"optional": True})
    """Run directory (relative to the config file); default ``out/<name>`` in the working directory."""
    depth_cm: float = field(metadata={"optional": True})
    """Depth of the reported stocks (cm from the surface); default 30 (VM0042's minimum)."""
    region: RegionConfig
    imagery: ImageryConfig
    rounds: tuple[RoundConfig, ...]
    model: ModelConfig = field(default_factory=ModelConfig)
    dask: DaskConfig = field(default_factory=DaskConfig)
    accounting: AccountingConfig = field(default_factory=AccountingConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    stocks: StocksConfig = field(default_factory=lambda: StocksConfig())
    round_schedule: RoundSchedule | None = None
    """Rounds generated from a calendar, with samples from the store; added after ``rounds``."""


@dataclass(frozen=True)
class StocksConfig:
    """How a site's stock is computed from its lab layers (top-level ``stocks:`` section)."""

    method: Literal["fixed", "esm"] = "fixed"
    """``fixed``: 0-``depth_cm`` fixed-depth stocks; ``esm``: equivalent soil mass (Wendt & Hauser 2013, as
    VM0042 v2.2 Sect. 8.2.1.6 requires): cumulative SOC against cumulative fine-earth mass of each site's
    layers (measured bulk density, at least two increments, e.g. 0-30 and 30-50 cm), read at the reference
    mass (:mod:`mrv.samples.esm`). Sites without measured bulk density in every layer keep fixed-depth stocks."""
    reference_mass_mg_ha: float | Literal["baseline_mean"] = "baseline_mean"
    """Reference fine-earth mass (Mg/ha); ``baseline_mean``: the mean 0-``depth_cm`` mass of the first round's
    lab sites."""


class _Section:
    """A mapping being parsed, remembering where it came from for error messages."""

    def __init__(self, data: Any, where: str, base: Path) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping of keys, got {type(data).__name__}.")
        self.data = dict(data)
        self.where = where
        self.base = base
        self.used: set[str] = set()

    def get(self, key: str, default: Any = ..., kind: type | tuple[type, ...] | None = None) -> Any:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if default is ...:
                raise ConfigError(f"{self.where}: required key '{key}' is missing. Add it to the config file.")
            return default
        value = self.data[key]
        if kind is not None and not isinstance(value, kind) or isinstance(value, bool) and kind in (int, float, (int, float)):
            raise ConfigError(f"{self.where}.{key}: expected {_kind_name(kind)}, got {value!r}.")
        return value

    def path(self, key: str, default: Any = ...) -> Path | None:
        raw = self.get(key, default, str)
        if raw is None:
            return None
        p = Path(raw).expanduser()
        return p if p.is_absolute() else (self.base / p).resolve()

    def section(self, key: str) -> _Section:
        return _Section(self.get(key, {}), f"{self.where}.{key}", self.base)

    def close(self) -> None:
        unknown = set(self.data) - self.used
        if unknown:
            raise ConfigError(
                f"{self.where}: unknown key(s) {sorted(unknown)}; check the spelling (allowed: {sorted(self.used)})."
            )


def _kind_name(kind: type | tuple[type, ...] | None) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__ if kind else "a value"


def _date(value: Any, where: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError(f"{where}: '{value}' is not a date; write it as YYYY-MM-DD.") from exc


#: First Sentinel-2 acquisitions (Sentinel-2A launched 2015-06-23; ESA, Sentinel-2 mission guide).
SENTINEL2_START = dt.date(2015, 6, 23)
#: Pixel sizes a run accepts (m): Sentinel-2's finest bands are 10 m; below 1 m the grid only repeats pixels.
RESOLUTION_RANGE_M = (1.0, 1000.0)


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader without implicit timestamps: ``start: 2024-13-01`` stays text, so the date
    check reports it with its key instead of YAML raising a bare ``ValueError``."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_yaml(text: str, where: str) -> Any:
    """Parse YAML ``text`` (dates stay strings); any syntax problem becomes one :class:`ConfigError`."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}. Fix the syntax at the line shown.") from exc


def projected_crs(value: str, where: str) -> str:
    """``value`` as ``EPSG:<code>`` after checking it is a 2-D projected CRS in metres.

    Areas, pixel sizes and distances in this package are metres of the project CRS, so geographic
    (degrees), geocentric, vertical, compound and foot-based CRSs are refused with the reason
    (:func:`mrv.samples.crs_checks.project_crs`, the same rule the sample store applies).
    """
    from mrv.samples.crs_checks import project_crs

    text = str(value).strip()
    code = text[5:]
    if not text.upper().startswith("EPSG:") or not (code.isascii() and code.isdigit()):
        raise ConfigError(f"{where} must be an EPSG code like 'EPSG:32633' (UTM 33N), got {value!r}.")
    try:
        project_crs(f"EPSG:{int(code)}")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return f"EPSG:{int(code)}"


def _safe_name(value: str, where: str) -> str:
    if not is_safe_component(value):
        raise ConfigError(
            f"{where} {value!r} is used as a directory name: use letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, at most 128 characters, no '/' or '..')."
        )
    return value


def _positive(value: float, where: str) -> float:
    if value <= 0:
        raise ConfigError(f"{where} must be positive, got {value}.")
    return float(value)


def _fraction(value: float, where: str) -> float:
    if not 0 < value < 1:
        raise ConfigError(f"{where} must be between 0 and 1 (e.g. 0.9), got {value}.")
    return float(value)


#: The one interval level the outputs are labelled for (``lower_90``/``upper_90``, p05/p95 maps, "90 %" in
#: the report); any other level is refused rather than silently mislabelled.
SUPPORTED_CONFIDENCE = 0.9


def _confidence(value: float, where: str) -> float:
    value = _fraction(value, where)
    if abs(value - SUPPORTED_CONFIDENCE) > 1e-12:
        raise ConfigError(
            f"{where} is {value}, but only {SUPPORTED_CONFIDENCE} is supported: report keys (lower_90/upper_90), the "
            "p05/p95 map files and the report labels are fixed to 90 % intervals. Set it to 0.9 (or remove the key)."
        )
    return value


def load_config(path: str | Path, *, output_dir: str | Path | None = None) -> RunConfig:
    """Read and validate a run configuration YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror}. Check the path.") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}). Save it as UTF-8.") from exc
    raw = read_yaml(text, str(path))
    return parse_config(raw, source_path=path.resolve(), output_dir=output_dir)


def parse_config(raw: Any, *, source_path: Path, output_dir: str | Path | None = None) -> RunConfig:
    """Validate an already-parsed config mapping (see :func:`load_config`)."""
    base = source_path.parent
    top = _Section(raw, source_path.name, base)
    name = _safe_name(top.get("name", kind=str), "name")

    reg = top.section("region")
    region = RegionConfig(
        fields=reg.path("fields"),  # type: ignore[arg-type]
        crs=reg.get("crs", kind=str),
        resolution_m=_positive(reg.get("resolution_m", kind=(int, float)), f"{reg.where}.resolution_m"),
        buffer_m=float(reg.get("buffer_m", 0.0, (int, float))),
    )
    reg.close()
    region = replace(region, crs=projected_crs(region.crs, f"{reg.where}.crs"))
    lo, hi = RESOLUTION_RANGE_M
    if not lo <= region.resolution_m <= hi:
        raise ConfigError(
            f"{reg.where}.resolution_m is {region.resolution_m:g} m; use a pixel size between {lo:g} and {hi:g} m "
            "(Sentinel-2's finest bands are 10 m)."
        )

    img = top.section("imagery")
    bare = img.section("bare_soil")
    bare_cfg = BareSoilConfig(
        ndvi_max=float(bare.get("ndvi_max", BareSoilConfig.ndvi_max, (int, float))),
        nbr2_max=float(bare.get("nbr2_max", BareSoilConfig.nbr2_max, (int, float))),
        min_observations=int(bare.get("min_observations", 1, int)),
    )
    bare.close()
    source = img.get("source", kind=str)
    if source not in ("local", "stac", "sentinelhub"):
        raise ConfigError(f"imagery.source must be one of local, stac, sentinelhub; got {source!r}.")
    imagery = ImageryConfig(
        source=source,
        collection=img.get("collection", kind=str),
        catalog=img.path("catalog", None),
        url=img.get("url", None, str),
        provider=img.get("provider", None, str),
        max_cloud_pct=float(img.get("max_cloud_pct", 80.0, (int, float))),
        bands=tuple(img.get("bands", list(ImageryConfig.bands), list)),
        chunk_px=int(img.get("chunk_px", 256, int)),
        tile_px=int(img.get("tile_px", ImageryConfig.tile_px, int)),
        bare_soil=bare_cfg,
        max_items=int(img.get("max_items", 2000, int)),
        max_aoi_km2=_positive(img.get("max_aoi_km2", 10_000.0, (int, float)), "imagery.max_aoi_km2"),
        dem=_parse_dem(img.get("dem", None, (str, dict)), base),
        max_run_gb=_positive(img.get("max_run_gb", ImageryConfig.max_run_gb, (int, float)), "imagery.max_run_gb"),
    )
    img.close()
    if imagery.provider is not None:
        from mrv.imagery.providers import load_profile

        imagery = replace(imagery, provider_profile=load_profile(imagery.provider, config_path=source_path))
    if imagery.max_items < 1:
        raise ConfigError(f"imagery.max_items must be at least 1, got {imagery.max_items}.")
    if imagery.chunk_px < 16:
        raise ConfigError(f"imagery.chunk_px must be at least 16 pixels (256 is typical), got {imagery.chunk_px}.")
    if imagery.tile_px < imagery.chunk_px:
        raise ConfigError(
            f"imagery.tile_px ({imagery.tile_px}) must be at least imagery.chunk_px ({imagery.chunk_px}); 2048 is typical."
        )
    if imagery.dem is not None and imagery.dem.collection is not None and imagery.source != "stac":
        raise ConfigError(
            f"imagery.dem names the STAC collection {imagery.dem.collection!r}, but imagery.source is "
            f"'{imagery.source}'. Use source 'stac' or give imagery.dem as a path to a GeoTIFF."
        )
    if imagery.source == "local" and imagery.catalog is None:
        raise ConfigError("imagery.catalog is required for source 'local': give the path to the STAC collection.json.")
    if imagery.source == "stac" and not (imagery.url or imagery.provider):
        raise ConfigError(
            f"imagery.source '{imagery.source}' needs imagery.provider (a profile in mrv/profiles/providers/) or imagery.url."
        )

    rounds_raw = top.get("rounds", [], list)
    schedule = _parse_schedule(top.get("round_schedule", None, dict), base)
    if not rounds_raw and schedule is None:
        raise ConfigError("rounds: give at least one monitoring round with its dates and sample files.")
    rounds = tuple(_parse_round(r, f"rounds[{i}]", base, source_path) for i, r in enumerate(rounds_raw))
    if schedule is not None:
        rounds += scheduled_rounds(schedule)
        if not rounds:
            raise ConfigError(
                f"round_schedule: no round has ended yet (first_year {schedule.first_year}, until "
                f"{schedule.until or dt.date.today()}); the first round appears when its period ends."
            )
    names = [r.name for r in rounds]
    if len(set(names)) != len(names):
        raise ConfigError(f"rounds: round names must be unique, got {names}.")

    mod = top.section("model")
    raw_block = mod.get("cv_block_size_m", "auto", (int, float, str))
    if isinstance(raw_block, str) and raw_block != "auto":
        raise ConfigError(f"model.cv_block_size_m: expected a size in metres or 'auto', got {raw_block!r}.")
    kind = mod.get("kind", "qrf", str)
    if kind not in ("qrf", "gbm_quantile"):
        raise ConfigError(f"model.kind {kind!r} is not available; use 'qrf' or 'gbm_quantile'.")
    cv_design = mod.get("cv_design", ModelConfig.cv_design, str)
    if cv_design not in ("blocks", "knndm"):
        raise ConfigError(
            f"model.cv_design {cv_design!r} is not available; use 'blocks' (square spatial blocks) or 'knndm' "
            "(folds matched to the field-pixel-to-site distances)."
        )
    model = ModelConfig(
        kind=kind,
        n_estimators=int(mod.get("n_estimators", ModelConfig.n_estimators, int)),
        min_samples_leaf=int(mod.get("min_samples_leaf", ModelConfig.min_samples_leaf, int)),
        max_features=float(mod.get("max_features", ModelConfig.max_features, (int, float))),
        gbm_max_iter=int(mod.get("gbm_max_iter", ModelConfig.gbm_max_iter, int)),
        gbm_learning_rate=_positive(
            mod.get("gbm_learning_rate", ModelConfig.gbm_learning_rate, (int, float)), "model.gbm_learning_rate"
        ),
        gbm_max_leaf_nodes=int(mod.get("gbm_max_leaf_nodes", ModelConfig.gbm_max_leaf_nodes, int)),
        gbm_min_samples_leaf=int(mod.get("gbm_min_samples_leaf", ModelConfig.gbm_min_samples_leaf, int)),
        cv_folds=int(mod.get("cv_folds", ModelConfig.cv_folds, int)),
        cv_block_size_m="auto" if raw_block == "auto" else _positive(raw_block, "model.cv_block_size_m"),
        cv_min_block_m=_positive(mod.get("cv_min_block_m", ModelConfig.cv_min_block_m, (int, float)), "model.cv_min_block_m"),
        cv_design=cv_design,
        confidence=_confidence(mod.get("confidence", 0.9, float), "model.confidence"),
        process_sd_t_ha=_positive(mod.get("process_sd_t_ha", 5.0, (int, float)), "model.process_sd_t_ha"),
        seed=int(mod.get("seed", 0, int)),
        registry_dir=mod.path("registry_dir", None) or default_model_registry(),
        round_normalisation=bool(mod.get("round_normalisation", True, bool)),
    )
    mod.close()
    if model.cv_folds < 2:
        raise ConfigError(f"model.cv_folds must be at least 2, got {model.cv_folds}.")

    dsk = top.section("dask")
    dask_cfg = DaskConfig(
        address=dsk.get("address", None, str),
        n_workers=int(dsk.get("n_workers", 2, int)),
        threads_per_worker=int(dsk.get("threads_per_worker", 1, int)),
    )
    dsk.close()
    if dask_cfg.n_workers < 1 or dask_cfg.threads_per_worker < 1:
        raise ConfigError(
            f"dask.n_workers ({dask_cfg.n_workers}) and dask.threads_per_worker ({dask_cfg.threads_per_worker}) "
            "must be at least 1 (2 workers x 1 thread suits a 2-core machine)."
        )

    acc = top.section("accounting")
    range_raw = acc.get("error_range_m", "auto", (int, float, str))
    if isinstance(range_raw, str) and range_raw != "auto":
        raise ConfigError(f"accounting.error_range_m must be 'auto' or a distance in metres, got {range_raw!r}.")
    corr_raw = acc.get("round_error_correlation", 0.0, (int, float, str))
    if isinstance(corr_raw, str) and corr_raw != "auto":
        raise ConfigError(f"accounting.round_error_correlation must be 'auto' or a number in [-1, 1], got {corr_raw!r}.")
    if not isinstance(corr_raw, str) and not -1 <= corr_raw <= 1:
        raise ConfigError(f"accounting.round_error_correlation must be in [-1, 1] (0 is conservative), got {corr_raw}.")
    accounting = AccountingConfig(
        confidence=_confidence(acc.get("confidence", 0.9, float), "accounting.confidence"),
        n_simulations=int(acc.get("n_simulations", 400, int)),
        error_range_m="auto" if range_raw == "auto" else _positive(range_raw, "accounting.error_range_m"),
        round_error_correlation="auto" if corr_raw == "auto" else float(corr_raw),
        methodology=acc.get("methodology", "verra_vm0042_v2", str),
        seed=int(acc.get("seed", 0, int)),
        change_estimator=acc.get("change_estimator", "regression", str),
        pair_distance_m=_positive(acc.get("pair_distance_m", 10.0, (int, float)), "accounting.pair_distance_m"),
    )
    acc.close()
    if accounting.change_estimator not in ("regression", "difference", "map"):
        raise ConfigError(
            f"accounting.change_estimator must be 'regression', 'difference' or 'map', got {accounting.change_estimator!r}."
        )
    if accounting.n_simulations < 1:
        raise ConfigError(
            f"accounting.n_simulations must be at least 1, got {accounting.n_simulations} "
            "(VM0042 v2.2 §8.6.1.2.3 asks for 100 to 2000 Monte Carlo draws; 400 is the default)."
        )
    from mrv.accounting.methodology import load_methodology

    accounting = replace(
        accounting, methodology_profile=load_methodology(accounting.methodology, config_path=source_path)
    )
    samples = _parse_samples(top.section("samples"))
    stk = top.section("stocks")
    ref_raw = stk.get("reference_mass_mg_ha", "baseline_mean", (int, float, str))
    stocks = StocksConfig(
        method=stk.get("method", "fixed", str),
        reference_mass_mg_ha=(
            "baseline_mean" if ref_raw == "baseline_mean" else _positive(ref_raw, "stocks.reference_mass_mg_ha")
        ),
    )
    stk.close()
    if stocks.method not in ("fixed", "esm"):
        raise ConfigError(f"stocks.method must be 'fixed' or 'esm', got {stocks.method!r}.")

    configured_out = top.path("output_dir", None)
    out = Path(output_dir) if output_dir is not None else configured_out or Path("out") / name
    cfg = RunConfig(
        name=name,
        source_path=source_path,
        output_dir=Path(out),
        depth_cm=_positive(top.get("depth_cm", 30.0, (int, float)), "depth_cm"),
        region=region,
        imagery=imagery,
        rounds=rounds,
        model=model,
        dask=dask_cfg,
        accounting=accounting,
        samples=samples,
        stocks=stocks,
        round_schedule=schedule,
    )
    top.close()
    return cfg


DEM_SUFFIXES = (".tif", ".tiff", ".vrt")


def _parse_dem(raw: str | dict[str, Any] | None, base: Path) -> DemConfig | None:
    """``dem: path/to/dem.tif`` | ``dem: cop-dem-glo-30`` | ``dem: {path|collection, asset, tpi_radius_m}``."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = {"path": raw} if raw.lower().endswith(DEM_SUFFIXES) else {"collection": raw}
    sec = _Section(raw, "imagery.dem", base)
    dem = DemConfig(
        path=sec.path("path", None),
        collection=sec.get("collection", None, str),
        asset=sec.get("asset", "data", str),
        tpi_radius_m=_positive(sec.get("tpi_radius_m", 300.0, (int, float)), "imagery.dem.tpi_radius_m"),
    )
    sec.close()
    if (dem.path is None) == (dem.collection is None):
        raise ConfigError(
            "imagery.dem: give either path (a GeoTIFF, e.g. dem: data/dem.tif) or collection "
            "(a STAC DEM collection, e.g. dem: cop-dem-glo-30), not both or neither."
        )
    if dem.path is not None and not dem.path.is_file():
        raise ConfigError(f"imagery.dem.path {dem.path} does not exist. Check the path (relative to the config file).")
    return dem


def _parse_samples(sec: _Section) -> SamplesConfig:
    """``samples: {error_models: {lab: {soc_rel_sd: 0.04, bd_sd_g_cm3: 0.05}, crowd: {...}}, outliers: {...},
    duplicate_tolerance_m: 15, gps_tolerance_m: 10, field_edge_check: true}``."""
    models = _default_error_models()
    em = sec.section("error_models")
    for source in list(em.data):
        if source not in ("lab", "crowd"):
            raise ConfigError(f"{em.where}: unknown source {source!r}; error models are given for 'lab' and 'crowd'.")
        m = em.section(source)
        rel = float(m.get("soc_rel_sd", kind=(int, float)))
        bd_sd = float(m.get("bd_sd_g_cm3", models[source].bd_sd_g_cm3, (int, float)))
        m.close()
        if not 0 < rel <= 1:
            raise ConfigError(f"{m.where}.soc_rel_sd is a relative SD between 0 and 1 (0.04 = 4 %), got {rel}.")
        if not 0 <= bd_sd < 1:
            raise ConfigError(f"{m.where}.bd_sd_g_cm3 must be between 0 and 1 g/cm3, got {bd_sd}.")
        models[source] = SampleErrorModel(soc_rel_sd=rel, bd_sd_g_cm3=bd_sd)
    em.close()
    out = sec.section("outliers")
    cfg = SamplesConfig(
        error_models=models,
        outlier_radius_m=_positive(out.get("radius_m", 500.0, (int, float)), "samples.outliers.radius_m"),
        outlier_k=_positive(out.get("k", 3.5, (int, float)), "samples.outliers.k"),
        outlier_min_lab_sites=int(out.get("min_lab_sites", 3, int)),
        duplicate_tolerance_m=_positive(
            sec.get("duplicate_tolerance_m", 15.0, (int, float)), "samples.duplicate_tolerance_m"
        ),
        gps_tolerance_m=_positive(sec.get("gps_tolerance_m", 10.0, (int, float)), "samples.gps_tolerance_m"),
        field_edge_check=bool(sec.get("field_edge_check", True, bool)),
    )
    out.close()
    sec.close()
    if cfg.outlier_min_lab_sites < 2:
        raise ConfigError("samples.outliers.min_lab_sites must be at least 2 (a median and a spread need two sites).")
    return cfg


def _parse_round(raw: Any, where: str, base: Path, source_path: Path) -> RoundConfig:
    from mrv.samples.formats import load_format

    sec = _Section(raw, where, base)
    name = _safe_name(str(sec.get("name", kind=(str, int))), f"{where}.name")
    start = _date(sec.get("start"), f"{where}.start")
    end = _date(sec.get("end"), f"{where}.end")
    if end < start:
        raise ConfigError(f"{where}: end {end} is before start {start}; swap them.")
    if end < SENTINEL2_START:
        raise ConfigError(
            f"{where}: the round ends {end}, before the first Sentinel-2 images ({SENTINEL2_START}). Check the year."
        )
    samples = []
    for i, s in enumerate(sec.get("samples", [], list)):
        ss = _Section(s, f"{where}.samples[{i}]", base)
        src = ss.get("source", kind=str)
        if src not in ("lab", "crowd"):
            raise ConfigError(f"{ss.where}.source must be 'lab' or 'crowd', got {src!r}.")
        samples.append(
            SampleFileConfig(
                path=ss.path("path"),  # type: ignore[arg-type]
                source=src,
                format=ss.get("format", "lab_wide" if src == "lab" else "crowd", str),
                submitter=ss.get("submitter", "unknown", str),
            )
        )
        samples[-1] = replace(samples[-1], format_profile=load_format(samples[-1].format, config_path=source_path))
        ss.close()
    store = _parse_store(sec.get("store", None, (dict, str)), f"{where}.store", base)
    sec.close()
    if store is not None:
        store = replace(store, start=store.start or start, end=store.end or end)
    return RoundConfig(name=name, start=start, end=end, samples=tuple(samples), store=store)


def _parse_store(raw: Any, where: str, base: Path) -> StoreSamplesConfig | None:
    """``store: env:NAME`` | ``store: {url, start, end, sources, agencies}``."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = {"url": raw}
    sec = _Section(raw, where, base)
    url = str(sec.get("url", "env:MRV_SAMPLES_DB", str))
    if "://" in url:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            has_password = bool(make_url(url).password)
        except (ArgumentError, ValueError):
            raise ConfigError(f"{where}.url is not a database URL; use e.g. sqlite:///out/samples.db or env:NAME.") from None
        if has_password:
            raise ConfigError(
                f"{where}.url carries a password; put the URL in an environment variable and write url: env:NAME."
            )
    start = sec.get("start", None)
    end = sec.get("end", None)
    sources = tuple(str(v) for v in sec.get("sources", [], list))
    bad = [v for v in sources if v not in ("lab", "crowd")]
    if bad:
        raise ConfigError(f"{where}.sources: unknown source(s) {bad}; use lab and/or crowd.")
    cfg = StoreSamplesConfig(
        url=url,
        start=_date(start, f"{where}.start") if start is not None else None,
        end=_date(end, f"{where}.end") if end is not None else None,
        sources=sources,  # type: ignore[arg-type]
        agencies=tuple(str(v) for v in sec.get("agencies", [], list)),
    )
    sec.close()
    if cfg.start and cfg.end and cfg.end < cfg.start:
        raise ConfigError(f"{where}: end {cfg.end} is before start {cfg.start}; swap them.")
    return cfg


def _parse_schedule(raw: Any, base: Path) -> RoundSchedule | None:
    if raw is None:
        return None
    sec = _Section(raw, "round_schedule", base)
    store = _parse_store(sec.get("store", "env:MRV_SAMPLES_DB", (dict, str)), "round_schedule.store", base)
    until = sec.get("until", None)
    sched = RoundSchedule(
        first_year=int(sec.get("first_year", kind=int)),
        store=store,  # type: ignore[arg-type]
        every_years=int(sec.get("every_years", 1, int)),
        season_start=str(sec.get("season_start", "01-01", str)),
        season_end=str(sec.get("season_end", "12-31", str)),
        name=str(sec.get("name", "{year}", str)),
        until=_date(until, "round_schedule.until") if until is not None else None,
    )
    sec.close()
    if sched.every_years < 1:
        raise ConfigError(f"round_schedule.every_years must be at least 1, got {sched.every_years}.")
    if "{year}" not in sched.name:
        raise ConfigError("round_schedule.name must contain {year} (e.g. '{year}' or 'round-{year}').")
    for key in ("season_start", "season_end"):
        try:
            dt.date.fromisoformat(f"2001-{getattr(sched, key)}")
        except ValueError:
            raise ConfigError(f"round_schedule.{key} must be a day written MM-DD, got {getattr(sched, key)!r}.") from None
    if sched.first_year < SENTINEL2_START.year:
        raise ConfigError(f"round_schedule.first_year {sched.first_year} is before Sentinel-2 ({SENTINEL2_START.year}).")
    return sched


def scheduled_rounds(schedule: RoundSchedule, *, today: dt.date | None = None) -> tuple[RoundConfig, ...]:
    """The rounds of ``schedule`` whose period has ended by ``schedule.until`` (or ``today``)."""
    last = schedule.until or today or dt.date.today()
    rounds = []
    year = schedule.first_year
    while True:
        start = dt.date.fromisoformat(f"{year}-{schedule.season_start}")
        end = dt.date.fromisoformat(f"{year}-{schedule.season_end}")
        if end < start:  # a season across the new year ends in the next one
            end = end.replace(year=year + 1)
        if end > last:
            break
        name = _safe_name(schedule.name.replace("{year}", str(year)), "round_schedule.name")
        rounds.append(RoundConfig(name=name, start=start, end=end, store=replace(schedule.store, start=start, end=end)))
        year += schedule.every_years
    return tuple(rounds)

