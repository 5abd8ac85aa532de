"""Run configuration: parsed once from YAML into frozen, validated objects.

Paths in a config file are resolved relative to the directory of that file, so a config can be
moved together with its data. Nothing here is read at import time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mrv.errors import ConfigError

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
class ImageryConfig:
    """Where imagery comes from and how it is composited."""

    source: ImagerySourceKind
    collection: str
    catalog: Path | None = None
    """Local static STAC catalog or collection JSON (``source: local``)."""
    url: str | None = None
    """STAC API root (``source: stac``) or Sentinel Hub base URL (``source: sentinelhub``)."""
    provider: str | None = None
    """Provider profile in ``configs/providers/`` (``earth_search``, ``planetary_computer``, ``cdse``);
    gives the URL, signing and conventions of a known STAC API."""
    max_cloud_pct: float = 80.0
    bands: tuple[str, ...] = ("blue", "green", "red", "nir", "swir16", "swir22")
    """Reflectance bands by ``eo:bands`` common name."""
    chunk_px: int = 256
    bare_soil: BareSoilConfig = field(default_factory=BareSoilConfig)


@dataclass(frozen=True)
class SampleFileConfig:
    path: Path
    source: SampleSource
    format: str
    """Name of a sample format profile (``lab_wide``, ``crowd``) or a path to a profile YAML."""
    submitter: str = "unknown"


@dataclass(frozen=True)
class RoundConfig:
    """One monitoring round: an imagery period and the samples taken in it."""

    name: str
    start: dt.date
    end: dt.date
    samples: tuple[SampleFileConfig, ...]


@dataclass(frozen=True)
class ModelConfig:
    kind: Literal["qrf"] = "qrf"
    n_estimators: int = 200
    min_samples_leaf: int = 3
    max_features: float = 0.5
    cv_folds: int = 5
    cv_block_size_m: float = 1000.0
    confidence: float = 0.9
    process_sd_t_ha: float = 5.0
    """Prior SD of the stock not explained by covariates; with each sample's measurement SD it sets
    the inverse-variance sample weights w_i = 1 / (process_sd^2 + sd_i^2)."""
    seed: int = 0


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
    error_range_m: float = 500.0
    """Range of the exponential correlation of prediction errors (m)."""
    round_error_correlation: float = 0.0
    """Correlation of the two rounds' prediction errors; 0 is conservative for positive true correlation."""
    methodology: str = "verra_vm0042_v2"
    seed: int = 0


@dataclass(frozen=True)
class RunConfig:
    name: str
    source_path: Path
    output_dir: Path
    depth_cm: float
    region: RegionConfig
    imagery: ImageryConfig
    rounds: tuple[RoundConfig, ...]
    model: ModelConfig = field(default_factory=ModelConfig)
    dask: DaskConfig = field(default_factory=DaskConfig)
    accounting: AccountingConfig = field(default_factory=AccountingConfig)


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


def _positive(value: float, where: str) -> float:
    if value <= 0:
        raise ConfigError(f"{where} must be positive, got {value}.")
    return float(value)


def _fraction(value: float, where: str) -> float:
    if not 0 < value < 1:
        raise ConfigError(f"{where} must be between 0 and 1 (e.g. 0.9), got {value}.")
    return float(value)


def load_config(path: str | Path, *, output_dir: str | Path | None = None) -> RunConfig:
    """Read and validate a run configuration YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror}. Check the path.") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    return parse_config(raw, source_path=path.resolve(), output_dir=output_dir)


def parse_config(raw: Any, *, source_path: Path, output_dir: str | Path | None = None) -> RunConfig:
    """Validate an already-parsed config mapping (see :func:`load_config`)."""
    base = source_path.parent
    top = _Section(raw, source_path.name, base)
    name = top.get("name", kind=str)

    reg = top.section("region")
    region = RegionConfig(
        fields=reg.path("fields"),  # type: ignore[arg-type]
        crs=reg.get("crs", kind=str),
        resolution_m=_positive(reg.get("resolution_m", kind=(int, float)), f"{reg.where}.resolution_m"),
        buffer_m=float(reg.get("buffer_m", 0.0, (int, float))),
    )
    reg.close()
    if not region.crs.upper().startswith("EPSG:"):
        raise ConfigError(f"region.crs must be an EPSG code like 'EPSG:32633', got {region.crs!r}.")

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
        bare_soil=bare_cfg,
    )
    img.close()
    if imagery.source == "local" and imagery.catalog is None:
        raise ConfigError("imagery.catalog is required for source 'local': give the path to the STAC collection.json.")
    if imagery.source == "stac" and not (imagery.url or imagery.provider):
        raise ConfigError(
            f"imagery.source '{imagery.source}' needs imagery.provider (a profile in configs/providers/) or imagery.url."
        )

    rounds_raw = top.get("rounds", kind=list)
    if not rounds_raw:
        raise ConfigError("rounds: give at least one monitoring round with its dates and sample files.")
    rounds = tuple(_parse_round(r, f"rounds[{i}]", base) for i, r in enumerate(rounds_raw))
    names = [r.name for r in rounds]
    if len(set(names)) != len(names):
        raise ConfigError(f"rounds: round names must be unique, got {names}.")

    mod = top.section("model")
    model = ModelConfig(
        n_estimators=int(mod.get("n_estimators", 200, int)),
        min_samples_leaf=int(mod.get("min_samples_leaf", 3, int)),
        max_features=float(mod.get("max_features", 0.5, (int, float))),
        cv_folds=int(mod.get("cv_folds", 5, int)),
        cv_block_size_m=_positive(mod.get("cv_block_size_m", 1000.0, (int, float)), "model.cv_block_size_m"),
        confidence=_fraction(mod.get("confidence", 0.9, float), "model.confidence"),
        process_sd_t_ha=_positive(mod.get("process_sd_t_ha", 5.0, (int, float)), "model.process_sd_t_ha"),
        seed=int(mod.get("seed", 0, int)),
    )
    kind = mod.get("kind", "qrf", str)
    mod.close()
    if kind != "qrf":
        raise ConfigError(f"model.kind {kind!r} is not available; use 'qrf'.")

    dsk = top.section("dask")
    dask_cfg = DaskConfig(
        address=dsk.get("address", None, str),
        n_workers=int(dsk.get("n_workers", 2, int)),
        threads_per_worker=int(dsk.get("threads_per_worker", 1, int)),
    )
    dsk.close()

    acc = top.section("accounting")
    accounting = AccountingConfig(
        confidence=_fraction(acc.get("confidence", 0.9, float), "accounting.confidence"),
        n_simulations=int(acc.get("n_simulations", 400, int)),
        error_range_m=_positive(acc.get("error_range_m", 500.0, (int, float)), "accounting.error_range_m"),
        round_error_correlation=float(acc.get("round_error_correlation", 0.0, (int, float))),
        methodology=acc.get("methodology", "verra_vm0042_v2", str),
        seed=int(acc.get("seed", 0, int)),
    )
    acc.close()

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
    )
    top.close()
    return cfg


def _parse_round(raw: Any, where: str, base: Path) -> RoundConfig:
    sec = _Section(raw, where, base)
    name = str(sec.get("name", kind=(str, int)))
    start = _date(sec.get("start"), f"{where}.start")
    end = _date(sec.get("end"), f"{where}.end")
    if end < start:
        raise ConfigError(f"{where}: end {end} is before start {start}; swap them.")
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
        ss.close()
    sec.close()
    return RoundConfig(name=name, start=start, end=end, samples=tuple(samples))
