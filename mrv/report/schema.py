"""The typed, versioned schema of ``report.json`` (frozen dataclasses) and its JSON Schema.

``report.json`` is written from a :class:`Report` (:meth:`Report.to_json`) and read back into one
(:meth:`Report.from_json`), which checks every section's shape and types and names the JSON path
of the first problem. The renderers (:mod:`mrv.report.html`, :mod:`~mrv.report.pdf`,
:mod:`~mrv.report.gpkg`) read attributes of the typed report, never dict keys.

Units are part of every amount: in the member name (``soc_stock_t_ha`` t C/ha, ``soc_total_t``
t C, ``co2e_t`` t CO2e, ``area_ha`` ha, ``_m`` metres) or, for the design-based blocks, in a
``unit`` member. Sections whose content is the free-form record of another stage (the model card's
training details, the uncertainty settings, the imagery summaries' extra keys, package versions)
are kept as JSON objects (:data:`JsonObject`) in ``extra`` members.

Mapping between attribute and JSON (also used by :func:`report_json_schema`):

* a member without a default is a required key (its value may be ``null`` where the type allows);
* a member with a default ``None`` is an optional key: absent in the JSON when ``None``;
* an ``extra`` member (field metadata ``extra=<regex>``) collects the keys of the object not named
  by another member whose name matches the regex; other unknown keys are an error.

Schema versions: 1 was the untyped dict of earlier releases (same sections and keys; read as is),
2 is this schema (:data:`REPORT_SCHEMA_VERSION`). The JSON Schema is published beside this module as
``report.schema.json``; regenerate it with ``mrv report schema -o mrv/report/report.schema.json`` (a
test checks it is current).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union

from mrv.config_schema import field_docs
from mrv.errors import VerificationError

__all__ = [
    "READABLE_SCHEMA_VERSIONS",
    "REPORT_SCHEMA_VERSION",
    "SCHEMA_ID",
    "CheckResult",
    "CoverageDecile",
    "CvMetrics",
    "Deduction",
    "DesignBased",
    "DesignChange",
    "DesignInterval",
    "DesignStock",
    "DesignTotals",
    "FieldResult",
    "ImageryRound",
    "ImagerySection",
    "Interval",
    "JsonObject",
    "MapPaths",
    "McChange",
    "Methodology",
    "ModelCard",
    "ProjectResult",
    "Provenance",
    "Report",
    "RoundStocks",
    "RunInfo",
    "SampleCounts",
    "SceneDecision",
    "Uncertainty",
    "Vt0014Check",
    "Vt0014Section",
    "read_report",
    "report_json_schema",
]

REPORT_SCHEMA_VERSION = 2
#: Versions :meth:`Report.from_json` reads (version 1 has the same keys, untyped).
READABLE_SCHEMA_VERSIONS = (1, 2)
SCHEMA_ID = "https://soilcarbon-mrv.org/schemas/report.schema.json"

#: A JSON object kept as parsed (string keys, JSON values).
JsonObject = Mapping[str, Any]
_FIX = "restore report.json from the original run (or re-run 'mrv run' to write a new one)"


def _opt(**metadata: Any) -> Any:
    """An optional key: default ``None``, absent from the JSON when ``None``."""
    return field(default=None, metadata=metadata)


def _extra(pattern: str = r".*") -> Any:
    """The unknown keys of the object matching ``pattern`` (regex), kept with their values."""
    return field(default_factory=dict, metadata={"extra": pattern})


# --------------------------------------------------------------------------- run and results


@dataclass(frozen=True)
class RunInfo:
    """What was run: name, config, CRS, depth and rounds."""

    name: str
    """Run name (config ``name``)."""
    created_utc: str
    """When report.json was written, ISO 8601 UTC (``2024-11-05T10:20:30Z``)."""
    crs: str
    """Project CRS of maps, fields and areas (``EPSG:<code>``, metres)."""
    depth_cm: float
    """Sampling depth (cm): stocks are for 0 to this depth."""
    rounds: tuple[str, ...]
    """Monitoring round names, oldest first."""
    latest_round: str
    """The round of the headline maps and stocks."""
    baseline_round: str
    """The first round, the baseline of the change."""
    confidence: float
    """Confidence level of the intervals (0.9 = 90 %)."""
    config: str | None = _opt()
    """Path of the run config the run read."""
    fields: str | None = _opt()
    """Path of the field polygons the run read (used to write report/fields.gpkg)."""
    resolution_m: float | None = _opt()
    """Pixel size of the maps (m)."""
    units: Mapping[str, str] | None = _opt()
    """Units of the amounts by member name (``soc_stock_t_ha`` -> ``t C/ha``)."""


@dataclass(frozen=True)
class Interval:
    """A Monte Carlo estimate with its interval; the unit is in the name of the member holding it."""

    mean: float | None
    """Estimate (the map-based value; ``null`` where no pixel was mapped)."""
    lower_90: float | None
    """Lower bound of the interval at the run's confidence (named for the default 90 %)."""
    upper_90: float | None
    """Upper bound of the interval."""
    sd: float | None = _opt()
    """Standard deviation of the Monte Carlo draws."""


@dataclass(frozen=True)
class RoundStocks:
    """Stock and total of one round."""

    soc_stock_t_ha: Interval
    """Mean SOC stock (t C/ha)."""
    soc_total_t: Interval | None = _opt()
    """Total SOC (t C)."""


@dataclass(frozen=True)
class McChange:
    """Change between the first and last round from the maps' Monte Carlo."""

    from_round: str | None = _opt()
    to_round: str | None = _opt()
    delta_soc_stock_t_ha: Interval | None = _opt()
    """Change of the mean stock (t C/ha)."""
    delta_soc_total_t: Interval | None = _opt()
    """Change of the total (t C)."""
    co2e_t: Interval | None = _opt()
    """Change as t CO2e (44/12 x t C)."""


@dataclass(frozen=True)
class ProjectResult:
    """Project totals (all fields together)."""

    area_ha: float
    """Area of the project's fields (ha)."""
    n_fields: int
    soc_stock_t_ha: Interval
    """Mean stock of the latest round (t C/ha)."""
    soc_total_t: Interval
    """Total of the latest round (t C)."""
    rounds: Mapping[str, RoundStocks]
    """Stock and total per round."""
    mapped_area_ha: float | None = _opt()
    """Area covered by mapped pixels (ha)."""
    total_area_ha: float | None = _opt()
    """Area of the zone as rasterized (ha)."""
    change: McChange | None = _opt()
    """Change between the first and last round (absent with one round)."""


@dataclass(frozen=True)
class FieldResult:
    """One field's results."""

    field_id: str
    name: str
    farm_id: str
    practice: str
    area_ha: float | None
    """Polygon area in the project CRS (ha)."""
    rounds: Mapping[str, RoundStocks]
    """Stock and total per round."""
    soc_stock_t_ha: Interval
    """Mean stock of the latest round (t C/ha)."""
    soc_total_t: Interval | None = _opt()
    """Total of the latest round (t C)."""
    mapped_fraction: float | None = _opt()
    """Share of the field covered by mapped pixels (0-1)."""
    mapped_area_ha: float | None = _opt()
    total_area_ha: float | None = _opt()
    change: McChange | None = _opt()


# --------------------------------------------------------------------------- design-based estimates


@dataclass(frozen=True)
class DesignInterval:
    """A design-based estimate with its standard error and interval in the unit ``unit``."""

    mean: float | None
    se: float | None
    """Standard error."""
    unit: str
    """``t C/ha``, ``t C`` or ``t CO2e``."""
    bounds: Mapping[str, float | None] = _extra(r"^(lower|upper)_[0-9.]+$")
    """``lower_<pct>`` / ``upper_<pct>``: the interval at the confidence level (pct = 100 x confidence)."""

    def bound(self, side: Literal["lower", "upper"]) -> float | None:
        """The lower or upper bound (whatever its confidence suffix)."""
        for key, value in self.bounds.items():
            if key.startswith(side + "_"):
                return value
        return None


@dataclass(frozen=True)
class DesignTotals:
    """Design-based estimate for a field or the project: per hectare, total and as CO2e."""

    per_ha: DesignInterval
    total: DesignInterval
    co2e: DesignInterval
    df: float | None
    """Degrees of freedom of the t interval."""
    n_sites: int
    design_based: bool
    """False for a synthetic (map) estimate of a field without sites (no interval)."""
    significant: bool
    """The interval excludes zero."""


@dataclass(frozen=True)
class DesignStock:
    """Design-based stock of one round (or the reason it could not be estimated)."""

    estimator: str | None = _opt()
    project: DesignTotals | None = _opt()
    fields: Mapping[str, DesignTotals] | None = _opt()
    info: JsonObject | None = _opt()
    """Estimator diagnostics (slope, pooled residual SD (t C/ha), strata)."""
    error: str | None = _opt()


@dataclass(frozen=True)
class DesignChange:
    """Design-based (model-assisted) change from the re-measured sites."""

    from_round: str
    to_round: str
    n_pairs: int
    """Number of re-measured site pairs."""
    note: str | None = _opt()
    estimator: str | None = _opt()
    project: DesignTotals | None = _opt()
    fields: Mapping[str, DesignTotals] | None = _opt()
    info: JsonObject | None = _opt()
    error: str | None = _opt()


@dataclass(frozen=True)
class DesignBased:
    """The design-based stocks and change from the lab sites (``accounting.json`` ``design_based``)."""

    unit_note: str | None = _opt()
    confidence: float | None = _opt()
    stock: Mapping[str, DesignStock] | None = _opt()
    change: DesignChange | None = _opt()
    error: str | None = _opt()


# --------------------------------------------------------------------------- inputs and model


@dataclass(frozen=True)
class SampleCounts:
    """Sample rows of one source, summed over rounds."""

    submitted: int
    accepted: int
    rejected: int
    flagged: int | None = _opt()


@dataclass(frozen=True)
class SceneDecision:
    """A scene the imagery step dropped, corrected or flagged, and why."""

    item: str
    reason: str | None


@dataclass(frozen=True)
class ImageryRound:
    """The imagery summary of one round (``work/<round>/imagery.json``)."""

    items: tuple[str, ...]
    """STAC item ids used."""
    dropped: tuple[SceneDecision, ...] | None = _opt()
    corrected: tuple[SceneDecision, ...] | None = _opt()
    flagged: tuple[SceneDecision, ...] | None = _opt()
    bare_observations_median: float | None = _opt()
    """Median number of bare-soil observations per pixel."""
    extra: JsonObject = _extra()
    """The summary's other keys (counts, covariates, tiles, ...)."""


@dataclass(frozen=True)
class ImagerySection:
    source: str
    """Imagery source kind (``local``, ``stac``, ``sentinelhub``)."""
    rounds: Mapping[str, ImageryRound]


@dataclass(frozen=True)
class CvMetrics:
    """Cross-validation metrics of one scheme; stocks in the card's unit (t C/ha)."""

    scheme: str | None = _opt()
    block_size_m: float | None = _opt()
    rmse: float | None = _opt()
    bias: float | None = _opt()
    r2: float | None = _opt()
    ccc: float | None = _opt()
    picp_90: float | None = _opt()
    """Share of observations inside the 90 % interval."""
    mean_width_90: float | None = _opt()
    baseline_rmse: float | None = _opt()
    """RMSE of the mean-only model."""
    extra: JsonObject = _extra()


@dataclass(frozen=True)
class CoverageDecile:
    """Spatial-CV 90 % interval coverage of the sites in one decile of the observed stock."""

    decile: int
    n: int
    picp: float | None
    """Share of the decile's sites inside their 90 % interval."""
    extra: JsonObject = _extra()
    """``observed_min_t_ha`` / ``observed_max_t_ha`` (t C/ha) and any later additions."""


@dataclass(frozen=True)
class ModelCard:
    """The model card (the model step's ``model_card.json``); members the report shows are typed, the rest kept."""

    kind: str | None = _opt()
    model_id: str | None = _opt()
    n_train: int | None = _opt()
    covariates: tuple[str, ...] | None = _opt()
    units: str | None = _opt()
    target_units: str | None = _opt()
    cv: CvMetrics | None = _opt()
    """Spatial CV (the reported one; kNNDM folds or square blocks, ``scheme``)."""
    cv_random: CvMetrics | None = _opt()
    """Random k-fold CV (optimistic, for comparison)."""
    cv_coverage_by_decile: tuple[CoverageDecile, ...] | None = _opt()
    """Spatial-CV interval coverage per decile of the observed stock."""
    extra: JsonObject = _extra()


@dataclass(frozen=True)
class Uncertainty:
    """How the intervals were simulated (``accounting.json``): settings and the error model."""

    method: str | None = _opt()
    n_simulations: int | None = _opt()
    error_range_m: float | None = _opt()
    error_range_source: str | None = _opt()
    nugget_share: float | None = _opt()
    round_error_correlation: float | None = _opt()
    round_error_correlation_source: str | None = _opt()
    settings: JsonObject | None = _opt()
    error_model: JsonObject | None = _opt()
    """Fitted CV-error variogram (``variogram``: nugget, partial_sill, range_m, empirical, ...) and sources."""

    @property
    def variogram(self) -> JsonObject | None:
        """The fitted error variogram, when one was fitted."""
        vario = (self.error_model or {}).get("variogram")
        return vario if isinstance(vario, Mapping) else None


@dataclass(frozen=True)
class MapPaths:
    """Headline maps (latest round), relative to the run directory; GeoTIFFs in t C/ha."""

    mean: str | None = _opt()
    p05: str | None = _opt()
    p50: str | None = _opt()
    p95: str | None = _opt()
    sd: str | None = _opt()
    width90: str | None = _opt()
    """p95 - p05."""
    extra: Mapping[str, str] = _extra()


# --------------------------------------------------------------------------- methodology


@dataclass(frozen=True)
class CheckResult:
    """One requirement of the methodology profile and its outcome (:class:`mrv.accounting.methodology.CheckResult`)."""

    requirement_id: str
    description: str
    section: str
    evidence_name: str
    evidence_value: float | bool | None
    threshold: float | bool | None
    op: str | None
    passed: bool | None
    """``null`` = not assessed (evidence missing)."""
    note: str
    section_confirmed: bool | None = _opt()


@dataclass(frozen=True)
class Vt0014Check:
    """One VT0014 validation criterion computed on the CV predictions."""

    id: str
    description: str
    value: float | tuple[int, ...] | None
    """The statistic (R², p, PICP) or the pair counts per lag bin."""
    threshold: str
    passed: bool | None
    note: str
    section: str | None = _opt()
    section_confirmed: bool | None = _opt()


@dataclass(frozen=True)
class Vt0014Section:
    """VT0014 digital-soil-mapping validation (:func:`mrv.accounting.vt0014.vt0014_section`)."""

    passed: bool | None
    note: str | None = _opt()
    tool: str | None = _opt()
    n_validation: int | None = _opt()
    selection: str | None = _opt()
    checks: tuple[Vt0014Check, ...] | None = _opt()
    profile_checks: tuple[CheckResult, ...] | None = _opt()
    extra: JsonObject = _extra()
    """Lag bins (m), pair counts, metrics, the profile's id and reference."""


@dataclass(frozen=True)
class Methodology:
    """The configured methodology profile and its checklist."""

    id: str
    name: str
    checks: tuple[CheckResult, ...]
    version: str | None = _opt()
    reference: str | None = _opt()
    vt0014: Vt0014Section | None = _opt()


@dataclass(frozen=True)
class Deduction:
    """An uncertainty deduction on the project change (:class:`mrv.accounting.deductions.DeductionResult`)."""

    methodology: str
    estimate: float | None
    """Net removal before the deduction, in ``units``."""
    standard_error: float | None
    """In ``units``."""
    uncertainty_fraction: float | None
    deduction_fraction: float | None
    credited: float | None
    """In ``units``."""
    note: str
    df: float | None = _opt()
    units: str | None = _opt()
    """Unit of estimate, standard error and credited (``t CO2e``)."""
    reported_as: str | None = _opt()
    """``removal``, ``emission`` or ``none``."""
    basis: str | None = _opt()
    """The estimator of the change the deduction applies to."""
    change_significant: bool | None = _opt()


@dataclass(frozen=True)
class Provenance:
    manifest: str | None = _opt()
    verify_with: str | None = _opt()
    mrv_version: str | None = _opt()
    source_revision: str | None = _opt()
    git_revision: str | None = _opt()
    """Older reports' name of ``source_revision``."""
    packages: Mapping[str, str | None] | None = _opt()
    extra: JsonObject = _extra()


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class Report:
    """``report.json``: the machine-readable source of truth of a run."""

    schema_version: int
    """Version of this schema (2); 1 = the untyped report of earlier releases."""
    run: RunInfo
    project: ProjectResult
    fields: tuple[FieldResult, ...]
    design_based: DesignBased | None = _opt()
    """Design-based stocks and change from the lab sites (the credited change when present)."""
    uncertainty: Uncertainty | None = _opt()
    model: ModelCard | None = _opt()
    samples: Mapping[str, SampleCounts] | None = _opt()
    """Sample counts per source (lab, crowd, ...)."""
    imagery: ImagerySection | None = _opt()
    maps: MapPaths | None = _opt()
    methodology: Methodology | None = _opt()
    deductions: tuple[Deduction, ...] | None = _opt()
    provenance: Provenance | None = _opt()

    def to_json(self) -> dict[str, Any]:
        """The report as JSON data (non-finite numbers as ``null``), ready for ``json.dumps(allow_nan=False)``."""
        out = _encode(self)
        assert isinstance(out, dict)
        return out

    @classmethod
    def from_json(cls, data: Any, *, source: str = "report.json") -> Report:
        """Read parsed ``report.json`` data; raises :class:`VerificationError` naming the JSON path of a problem."""
        if not isinstance(data, Mapping):
            raise VerificationError(
                f"{source} holds a JSON {type(data).__name__}, not an object; {_FIX}."
            )
        version = data.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise VerificationError(
                f"{source}: schema_version is {version!r}; this version of mrv reads report schema "
                f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}. Re-run the pipeline with this version, or {_FIX}."
            )
        out = _decode(cls, data, "", source)
        assert isinstance(out, Report)
        return out


def read_report(path: Path) -> Report:
    """``report.json`` at ``path`` as a :class:`Report` (shape and types checked, problems named by JSON path)."""
    if not path.is_file():
        raise VerificationError(f"{path.parent} has no report.json; pass a run directory written by 'mrv run'.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VerificationError(
            f"{path} cannot be read as JSON ({exc}); restore it from the original run or bundle."
        ) from exc
    return Report.from_json(data, source=str(path))


# --------------------------------------------------------------------------- dataclass <-> JSON


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(sys.modules[__name__]))


def _extra_field(cls: type) -> dataclasses.Field[Any] | None:
    return next((f for f in dataclasses.fields(cls) if "extra" in f.metadata), None)


def _is_optional_key(f: dataclasses.Field[Any]) -> bool:
    return f.default is None


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if "extra" in f.metadata:
                out.update({str(k): _encode(x) for k, x in v.items()})
            elif not (v is None and _is_optional_key(f)):
                out[f.name] = _encode(v)
        return out
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _bad(source: str, path: str, expected: str, value: Any) -> VerificationError:
    shown = repr(value) if not isinstance(value, Mapping | list) else _json_type(value)
    return VerificationError(
        f"{source}: {path or '(top level)'} is {shown if len(shown) <= 60 else shown[:57] + '...'}, expected "
        f"{expected} (report schema {REPORT_SCHEMA_VERSION}); {_FIX}."
    )


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return f"an object ({tp.__name__})"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return "a list"
    if origin in (dict, Mapping) or origin is typing.get_origin(Mapping[str, Any]):
        return "an object"
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean", type(None): "null"}.get(
        tp, "any JSON value"
    )


def _decode(tp: Any, value: Any, path: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise _bad(source, path, _describe(tp), value)
        hints = _hints(tp)
        kwargs: dict[str, Any] = {}
        known = set()
        extra = _extra_field(tp)
        for f in dataclasses.fields(tp):
            if f is extra:
                continue
            known.add(f.name)
            where = f"{path}.{f.name}" if path else f.name
            if f.name in value:
                kwargs[f.name] = _decode(hints[f.name], value[f.name], where, source)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise VerificationError(
                    f"{source}: {where} is missing ({_describe(hints[f.name])} required by report schema "
                    f"{REPORT_SCHEMA_VERSION}); {_FIX}."
                )
        rest = {k: v for k, v in value.items() if k not in known}
        if extra is not None:
            pattern = re.compile(extra.metadata["extra"])
            value_tp = typing.get_args(hints[extra.name])[1]
            kwargs[extra.name] = {
                k: _decode(value_tp, v, f"{path}.{k}" if path else k, source) for k, v in rest.items() if pattern.search(k)
            }
            rest = {k: v for k, v in rest.items() if not pattern.search(k)}
        if rest:
            key = next(iter(rest))
            raise VerificationError(
                f"{source}: {path + '.' if path else ''}{key} is not a member of {tp.__name__} in report schema "
                f"{REPORT_SCHEMA_VERSION} (members: {', '.join(sorted(known))}); {_FIX}."
            )
        return tp(**kwargs)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _bad(source, path, _describe(tp), value)
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _decode(arg, value, path, source)
            except VerificationError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise _bad(source, path, _describe(tp), value)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise _bad(source, path, _describe(tp), value)
        return value
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise _bad(source, path, "a list", value)
        item = typing.get_args(tp)[0]
        return tuple(_decode(item, v, f"{path}[{i}]", source) for i, v in enumerate(value))
    if origin is not None and issubclass(origin, Mapping):
        if not isinstance(value, Mapping):
            raise _bad(source, path, "an object", value)
        _, item = typing.get_args(tp)
        return {str(k): _decode(item, v, f"{path}.{k}", source) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(source, path, "a number", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(source, path, "an integer", value)
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise _bad(source, path, _describe(tp), value)
        return value
    raise TypeError(f"no JSON mapping for report type {tp!r}")  # pragma: no cover - a schema bug


# --------------------------------------------------------------------------- JSON Schema


def _schema_for(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if tp is Any:
        return {}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}  # placeholder against recursion
            defs[tp.__name__] = _object_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if origin in (Union, types.UnionType):
        options = [_schema_for(a, defs) for a in typing.get_args(tp)]
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin is Literal:
        return {"enum": list(typing.get_args(tp))}
    if origin in (tuple, list):
        return {"type": "array", "items": _schema_for(typing.get_args(tp)[0], defs)}
    if origin is not None and issubclass(origin, Mapping):
        item = typing.get_args(tp)[1]
        return {"type": "object", "additionalProperties": _schema_for(item, defs)} if item is not Any else {"type": "object"}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"no JSON Schema mapping for report type {tp!r}")  # pragma: no cover - a schema bug


def _object_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    docs = field_docs(cls)
    hints = _hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    out: dict[str, Any] = {"type": "object"}
    if cls.__doc__:
        out["description"] = " ".join(cls.__doc__.split())
    extra = _extra_field(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f is extra:
            continue
        schema = dict(_schema_for(hints[f.name], defs))  # an optional key may also be null (read as absent)
        if f.name in docs:
            schema["description"] = docs[f.name]
        properties[f.name] = schema
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    out["properties"] = properties
    if required:
        out["required"] = required
    if extra is None:
        out["additionalProperties"] = False
    else:
        value_schema = _schema_for(typing.get_args(hints[extra.name])[1], defs)
        if extra.metadata["extra"] == r".*":
            out["additionalProperties"] = value_schema
        else:
            out["patternProperties"] = {extra.metadata["extra"]: value_schema}
            out["additionalProperties"] = False
    return out


def report_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``report.json``, generated from :class:`Report`."""
    defs: dict[str, Any] = {}
    root = _object_schema(Report, defs)
    root["properties"]["schema_version"] = {
        "enum": list(READABLE_SCHEMA_VERSIONS),
        "description": root["properties"]["schema_version"].get("description", ""),
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "soilcarbon-mrv report.json",
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def schema_text() -> str:
    """:func:`report_json_schema` as the text of the published ``report.schema.json``."""
    return json.dumps(report_json_schema(), indent=2, ensure_ascii=False) + "\n"

