"""Sample format profiles: column mappings that describe how one agency's sample file is laid out.

Two layouts are supported:

``wide`` (default)
    one row per sample (one depth interval at one site); every measured quantity has its own
    column (``columns: {soc: soc_g_kg, bulk_density: ...}``) in the unit the format profile names
    (``soc_unit``, ``som_unit``).
``long``
    one row per measured parameter of a sample, as many agency databases export them::

        Probennummer;...;Parameter;Messwert;Einheit
        P1-A;...;Organischer Kohlenstoff;1,8;M%
        P1-A;...;Lagerungsdichte;1,32;g/cm3

    The per-sample columns (id, site, coordinates, date, depths) are mapped in ``columns`` and
    repeated on every line of a sample; the measured quantities come from the ``long:`` block,
    which maps parameter names to roles (``soc``, ``som``, ``bulk_density``,
    ``coarse_fragments``) and, per role, the unit texts of the file to known unit codes.
    :func:`mrv.samples.ingest.ingest` pivots such a file to one record per sample.

Format profile features for files as agencies publish them (no preprocessing):

``constants:``
    values that hold for the whole file, e.g. ``{top: 0, bottom: 30, sampling_date: 2019-05-01}``.
``columns: {depth: Tiefe}``
    top and bottom from one text column (``"0-30"``, ``"0–20 cm"``; a unit in the cell wins over
    ``depth_unit``).
``columns: {geometry: WKT}``
    positions from a WKT (``POINT (x y)``, EWKT ``SRID=4326;POINT(...)``) or GeoJSON Point column.
``columns: {soc: [Corg_DC, Corg_WB]}``
    several columns for one role, in order of preference: the first non-missing cell is used.
``missing_values:``
    cell texts meaning "not measured" (compared ignoring case); default :data:`DEFAULT_MISSING`.
``below_detection:``
    what a ``<L`` cell (below the limit of detection L) becomes, see :data:`DETECTION_POLICIES`.
``date_format:``
    one ``strptime`` pattern or a list tried in order; ``excel`` reads Excel serial day numbers.
``units: {soc: {column: Einheit, map: {"%": percent, "g/kg": g_kg}}}``
    per-row unit columns of a wide file.
``sites: {file: sites.csv, key: pedon, columns: {lon: x_dd, lat: y_dd}}``
    a second table (the sites) joined on the sample file's ``site_id`` column; its columns
    supply the roles the sample file lacks (position, CRS, date, field). ``file`` is relative to
    the sample file; ``ingest(..., sites=PATH)`` (``--sites``) names it instead.
``sample_id_from: [pedon, horizon]``
    a wide file without a sample id column: the id is the cells of these columns joined with ``/``
    (a horizon table identifies a sample by its soil profile and horizon name).
``long: {prefer: {soc: [Corg (Dumas), DIN EN 15936]}}``
    several SOC parameters or methods on one sample: the first listed (parameter name or method)
    that the sample has is used; the other lines stay with the sample, noted as not used.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml

from mrv.errors import ConfigError
from mrv.resources import find_profile

__all__ = [
    "DEPTH_UNITS",
    "MEASURED_ROLES",
    "UNIT_FACTORS",
    "LongLayout",
    "SampleFormat",
    "SiteTable",
    "UnitColumn",
    "load_format",
    "normalize_name",
    "parse_format",
]

#: Canonical column roles a format profile may map. Required ones are checked in :func:`load_format`.
ROLES = (
    "sample_id", "site_id", "field_id", "submitter", "x", "y", "lon", "lat", "epsg", "sampling_date",
    "top", "bottom", "soc", "som", "bulk_density", "coarse_fragments", "method", "gps_accuracy", "depth", "geometry",
)  # fmt: skip
REQUIRED = ("sample_id", "sampling_date", "top", "bottom")

#: Missing-value codes used when a format profile gives none (compared ignoring case, after trimming).
DEFAULT_MISSING = ("", "NA", "N/A", "n.a.", "-9999")

#: Policies for values below the limit of detection (``<L``):
#:
#: * ``half_limit`` (default): L/2 with SD L/sqrt(12), the mean and SD of a value spread uniformly
#:   over [0, L]; substitution by L/2 is the approach of US EPA (2000) *Guidance for Data Quality
#:   Assessment*, EPA QA/G-9, section 4.7 (for a small share of non-detects) and of Croghan &
#:   Egeghy (2003), *Methods of dealing with values below the limit of detection using SAS*.
#:   The record is flagged ``below detection limit``.
#: * ``limit``: L itself (an upper bound), flagged; SD as for ``half_limit``.
#: * ``reject``: the row is rejected.
DETECTION_POLICIES = ("half_limit", "limit", "reject")

#: Roles a ``constants:`` block may set (not the sample id, not measured values).
CONSTANT_ROLES = ("site_id", "field_id", "submitter", "epsg", "sampling_date", "top", "bottom", "method")

#: Roles a site table may supply.
SITE_ROLES = ("x", "y", "lon", "lat", "epsg", "geometry", "sampling_date", "field_id", "submitter")

#: Roles holding measured values: columns in a wide file, parameter rows in a long file.
MEASURED_ROLES = ("soc", "som", "bulk_density", "coarse_fragments")

#: SOC (and SOM) concentration units and the factor to g/kg. ``mass_percent`` (M%, M.-%) is
#: g/100 g like ``percent``; SOM units are the same and are converted to SOC by
#: :func:`mrv.samples.stocks.som_to_soc`.
SOC_UNITS = {"g_kg": 1.0, "mg_g": 1.0, "percent": 10.0, "mass_percent": 10.0}

#: Units of every measured role: unit code -> factor to the canonical unit
#: (g/kg for soc and som, g/cm3 for bulk density, volume % for coarse fragments).
UNIT_FACTORS: dict[str, dict[str, float]] = {
    "soc": SOC_UNITS,
    "som": SOC_UNITS,
    "bulk_density": {"g_cm3": 1.0, "t_m3": 1.0, "kg_m3": 0.001, "kg_dm3": 1.0},
    "coarse_fragments": {"vol_percent": 1.0, "vol_fraction": 100.0},
}

#: Depth units and the factor to cm.
DEPTH_UNITS = {"cm": 1.0, "m": 100.0, "mm": 0.1}

_TOP_KEYS = {
    "name", "description", "layout", "columns", "soc_unit", "som_unit", "depth_unit", "epsg", "long",
    "date_format", "encoding", "delimiter", "decimal", "constants", "missing_values", "below_detection", "units",
    "sites", "sample_id_from",
}  # fmt: skip
_LONG_KEYS = {"parameter", "value", "unit", "parameters", "units", "ignore", "prefer"}
_SITE_KEYS = {"file", "key", "on", "columns", "delimiter", "decimal", "encoding"}


@dataclass(frozen=True)
class UnitColumn:
    """A wide file's per-row unit column for one measured role."""

    column: str
    units: dict[str, str]
    """Unit text as written in the file (trimmed) -> unit code of ``UNIT_FACTORS``."""


@dataclass(frozen=True)
class SiteTable:
    """A second table with one row per site, joined on the sample file's ``on`` role (``site_id``)."""

    key: str
    """Column of the site table holding the site key."""
    columns: dict[str, str]
    """Role -> column of the site table (roles of :data:`SITE_ROLES`)."""
    on: str = "site_id"
    file: str | None = None
    """Path relative to the sample file; ``None`` when it is given with the submission."""
    delimiter: str | None = None
    decimal: str | None = None
    encoding: str | None = None


@dataclass(frozen=True)
class LongLayout:
    """How the parameter rows of a long file are read (see the module docstring)."""

    parameter_column: str
    value_column: str
    unit_column: str
    parameters: dict[str, str]
    """Parameter name (compared case-insensitively, spaces collapsed) -> measured role."""
    units: dict[str, dict[str, str]]
    """Measured role -> {unit text as written in the file -> unit code of ``UNIT_FACTORS``}."""
    ignore: tuple[str, ...] = ()
    """Parameter names that are known but not used (e.g. pH): their lines go with their sample."""
    prefer: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Measured role -> parameter names or methods in order of preference (compared like names)."""

    def rank(self, role: str, parameter: str, method: str) -> int:
        """Position of ``parameter`` or ``method`` in ``prefer[role]`` (lower is better; unlisted last)."""
        order = self._prefer_order.get(role, {})
        ranks = [order[k] for k in (normalize_name(parameter), normalize_name(method)) if k in order]
        return min(ranks, default=len(order))

    @cached_property
    def _prefer_order(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for role, names in self.prefer.items():
            order: dict[str, int] = {}
            for i, p in enumerate(names):
                order.setdefault(normalize_name(p), i)
            out[role] = order
        return out

    def role_of(self, parameter: str) -> str | None:
        key = normalize_name(parameter)
        return next((r for p, r in self.parameters.items() if normalize_name(p) == key), None)

    def is_ignored(self, parameter: str) -> bool:
        key = normalize_name(parameter)
        return any(normalize_name(p) == key for p in self.ignore)

    def unit_code(self, role: str, unit_text: str) -> str | None:
        """Unit code for ``unit_text`` (exact match after trimming; units are case-sensitive: Mg vs mg)."""
        return self.units.get(role, {}).get(" ".join(unit_text.split()))


def normalize_name(text: str) -> str:
    """Parameter names compare case-insensitively with runs of whitespace collapsed."""
    return " ".join(text.split()).casefold()


@dataclass(frozen=True)
class SampleFormat:
    name: str
    columns: dict[str, str]
    """Canonical role -> column name in the file."""
    soc_unit: Literal["g_kg", "mg_g", "percent", "mass_percent"]
    depth_unit: Literal["cm", "m", "mm"]
    epsg: int | None = None
    """CRS of the coordinates when the file has no ``epsg`` column."""
    description: str = ""
    som_unit: Literal["g_kg", "mg_g", "percent", "mass_percent"] = "percent"
    """Unit of a wide file's ``som`` column (soil organic matter / loss on ignition)."""
    layout: Literal["wide", "long"] = "wide"
    long: LongLayout | None = None
    """Parameter-row description; set exactly when ``layout == 'long'``."""
    date_format: str = "%Y-%m-%d"
    """``strptime`` pattern of the sampling date, e.g. ``%d.%m.%Y`` for 14.09.2021."""
    encoding: str | None = None
    """Encoding used when the file is not UTF-8 (default Latin-1)."""
    delimiter: str | None = None
    """Cell separator; ``None`` detects ``;`` or ``,`` from the header line."""
    decimal: str | None = None
    """Decimal mark; ``None`` means ``,`` for ``;``-separated files and ``.`` otherwise."""
    date_formats: tuple[str, ...] = ()
    """Every accepted date format in order (``date_format`` is the first); ``excel`` = serial days."""
    alternatives: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Role -> further columns used, in order, where the ``columns`` one is missing (wide layout)."""
    constants: dict[str, Any] = field(default_factory=dict)
    """Role -> value for the whole file: floats for top/bottom, a date, an int EPSG code, else text."""
    missing_values: tuple[str, ...] = DEFAULT_MISSING
    """Cell texts meaning "not measured" (after trimming; as written, lower-, upper- or capitalised)."""
    below_detection: Literal["half_limit", "limit", "reject"] = "half_limit"
    """Policy for ``<L`` cells, see :data:`DETECTION_POLICIES`."""
    unit_columns: dict[str, UnitColumn] = field(default_factory=dict)
    """Measured role -> its per-row unit column (wide layout)."""
    sites: SiteTable | None = None
    sample_id_columns: tuple[str, ...] = ()
    """Columns whose cells, joined with ``/``, are the sample id (``sample_id_from``); empty: ``columns.sample_id``."""

    @property
    def depth_factor_cm(self) -> float:
        return DEPTH_UNITS[self.depth_unit]

    @property
    def formats(self) -> tuple[str, ...]:
        return self.date_formats or (self.date_format,)

    @property
    def date_pattern(self) -> str:
        """The date formats as a technician reads them (``DD.MM.YYYY``, ``or`` between several)."""
        shown = []
        for out in self.formats:
            if out == "excel":
                shown.append("an Excel date number")
                continue
            for code, text in (("%Y", "YYYY"), ("%m", "MM"), ("%d", "DD"), ("%y", "YY")):
                out = out.replace(code, text)
            shown.append(out)
        return " or ".join(shown)

    def has_role(self, role: str) -> bool:
        """True when the file, a constant or the site table supplies ``role``."""
        return (
            role in self.columns
            or role in self.constants
            or (self.sites is not None and role in self.sites.columns)
            or (role in ("top", "bottom") and self.has_role("depth") and role not in ("depth",))
        )

    @property
    def missing_codes(self) -> frozenset[str]:
        """Every cell text read as missing: each code as written, lower-, upper- or capitalised, and ``""``."""
        from mrv.samples.cells import missing_variants

        return missing_variants(self.missing_values)


def load_format(
    name_or_path: str | Path, *, search_dirs: tuple[Path, ...] | None = None, config_path: Path | None = None
) -> SampleFormat:
    """Load a format profile by name or by path.

    With ``search_dirs`` (tests) a name is looked up only there; by default through
    :func:`mrv.resources.find_profile` (next to ``config_path``, the user directory, the package).
    """
    if search_dirs is None:
        path: Path | None = find_profile("sample_formats", name_or_path, config_path=config_path)
    else:
        candidates = [Path(name_or_path)] + [d / f"{name_or_path}.yaml" for d in search_dirs]
        path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ConfigError(
            f"Sample format '{name_or_path}' not found (looked in {[str(d) for d in search_dirs or ()]}). "
            "Give the name of a profile in mrv/profiles/sample_formats/ or a path to a profile YAML."
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sample format profile must be a mapping of keys.")
    return parse_format(raw, where=str(path), default_name=path.stem)


def parse_format(raw: dict[str, Any], *, where: str, default_name: str) -> SampleFormat:
    """Validate an already-parsed format profile mapping (see :func:`load_format`)."""
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}.")
    layout = raw.get("layout", "wide")
    if layout not in ("wide", "long"):
        raise ConfigError(f"{where}: layout must be 'wide' (one row per sample) or 'long' (one row per parameter).")
    cols_raw = raw.get("columns") or {}
    if not isinstance(cols_raw, dict):
        raise ConfigError(f"{where}: 'columns' must map roles to column names.")
    bad_roles = set(cols_raw) - set(ROLES)
    if bad_roles:
        raise ConfigError(f"{where}: unknown column role(s) {sorted(bad_roles)}; allowed: {list(ROLES)}.")
    cols, alternatives = _columns(cols_raw, where, layout)
    constants = _constants(raw.get("constants"), where)
    sites = _sites(raw.get("sites"), where)
    id_from = raw.get("sample_id_from")
    if id_from is not None:
        if not isinstance(id_from, list) or len(id_from) < 2 or not all(isinstance(c, str) and c.strip() for c in id_from):
            raise ConfigError(f"{where}: sample_id_from must list two or more columns, e.g. [pedon, horizon].")
        if "sample_id" in cols or layout == "long":
            raise ConfigError(f"{where}: give either columns.sample_id or sample_id_from (wide layout only), not both.")
    elif "sample_id" not in cols:
        raise ConfigError(f"{where}: columns must map 'sample_id' to the column holding each sample's id.")
    if "depth" in cols and ({"top", "bottom"} & (set(cols) | set(constants))):
        raise ConfigError(f"{where}: give the depths either as one 'depth' column (\"0-30\") or as top and bottom, not both.")
    if sites is not None and sites.on not in cols:
        raise ConfigError(f"{where}: sites.on is '{sites.on}', but columns does not map it; map the column holding the site key.")
    supplied = set(cols) | set(constants) | (set(sites.columns) if sites else set()) | ({"sample_id"} if id_from else set())
    if "depth" in supplied:
        supplied |= {"top", "bottom"}
    missing = [r for r in REQUIRED if r not in supplied]
    has_xy = {"x", "y"} <= supplied or {"lon", "lat"} <= supplied or "geometry" in supplied
    if missing or not has_xy:
        raise ConfigError(
            f"{where}: columns (or constants, or the site table) must give {list(REQUIRED)} and x/y, lon/lat or "
            f"geometry; missing {missing + ([] if has_xy else ['x/y or lon/lat or geometry'])}."
        )
    if "epsg" not in supplied and raw.get("epsg") is None and "geometry" not in supplied:
        raise ConfigError(f"{where}: say which CRS the coordinates are in: an 'epsg' column or a fixed 'epsg:' value.")
    soc_unit = raw.get("soc_unit", "g_kg")
    som_unit = raw.get("som_unit", "percent")
    for key, unit in (("soc_unit", soc_unit), ("som_unit", som_unit)):
        if unit not in SOC_UNITS:
            raise ConfigError(f"{where}: {key} must be one of {sorted(SOC_UNITS)}, got {unit!r}.")
    depth_unit = raw.get("depth_unit", "cm")
    if depth_unit not in DEPTH_UNITS:
        raise ConfigError(f"{where}: depth_unit must be one of {sorted(DEPTH_UNITS)}, got {depth_unit!r}.")
    long = None
    if layout == "long":
        in_columns = sorted(set(cols) & set(MEASURED_ROLES))
        if in_columns:
            raise ConfigError(
                f"{where}: in a long layout {in_columns} come from parameter rows; map them under "
                "'long: parameters:' instead of 'columns:'."
            )
        long = _parse_long(raw.get("long"), where)
    else:
        if raw.get("long") is not None:
            raise ConfigError(f"{where}: a 'long:' block needs 'layout: long'.")
        if "soc" not in cols and "som" not in cols:
            raise ConfigError(f"{where}: columns must map 'soc' (organic carbon) or 'som' (organic matter).")
    date_formats = _date_formats(raw.get("date_format", "%Y-%m-%d"), where)
    delimiter = raw.get("delimiter")
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise ConfigError(f"{where}: delimiter must be a single character such as ';' or ','.")
    decimal = raw.get("decimal")
    if decimal is not None and decimal not in (".", ","):
        raise ConfigError(f"{where}: decimal must be '.' or ','.")
    if decimal is not None and decimal == delimiter:
        raise ConfigError(f"{where}: decimal and delimiter are both {decimal!r}; they must differ.")
    encoding = _encoding(raw.get("encoding"), where, "encoding")
    missing_values = raw.get("missing_values", list(DEFAULT_MISSING))
    if not isinstance(missing_values, list) or not all(isinstance(m, (str, int, float)) for m in missing_values):
        raise ConfigError(f"{where}: missing_values must be a list of texts such as [NA, -9999, 'n.a.'].")
    below = raw.get("below_detection", "half_limit")
    if below not in DETECTION_POLICIES:
        raise ConfigError(f"{where}: below_detection must be one of {list(DETECTION_POLICIES)}, got {below!r}.")
    unit_columns = _unit_columns(raw.get("units"), where, layout)
    epsg = raw.get("epsg")
    if epsg is not None and (isinstance(epsg, bool) or not isinstance(epsg, int)):
        raise ConfigError(f"{where}: epsg must be a whole EPSG code such as 25832, got {epsg!r}.")
    return SampleFormat(
        name=str(raw.get("name", default_name)),
        columns=cols,
        soc_unit=soc_unit,
        depth_unit=depth_unit,
        epsg=int(epsg) if epsg is not None else None,
        description=str(raw.get("description", "")),
        som_unit=som_unit,
        layout=layout,
        long=long,
        date_format=date_formats[0],
        encoding=encoding,
        delimiter=delimiter,
        decimal=decimal,
        date_formats=date_formats,
        alternatives=alternatives,
        constants=constants,
        missing_values=tuple(str(m) for m in missing_values),
        below_detection=below,
        unit_columns=unit_columns,
        sites=sites,
        sample_id_columns=tuple(c.strip() for c in id_from) if id_from else (),
    )


def _columns(raw: dict[str, Any], where: str, layout: str) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    cols: dict[str, str] = {}
    alternatives: dict[str, tuple[str, ...]] = {}
    for role, value in raw.items():
        names = value if isinstance(value, list) else [value]
        if not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise ConfigError(f"{where}: columns.{role} must name a column (or list columns in order of preference).")
        if len(names) > 1 and (layout == "long" or role in ("sample_id", "site_id")):
            raise ConfigError(f"{where}: columns.{role} may name only one column.")
        cols[str(role)] = names[0].strip()
        if len(names) > 1:
            alternatives[str(role)] = tuple(n.strip() for n in names[1:])
    return cols, alternatives


def _constants(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: constants must map roles to values, e.g. {{top: 0, bottom: 30}}.")
    bad = sorted(set(raw) - set(CONSTANT_ROLES))
    if bad:
        raise ConfigError(f"{where}: constants {bad} cannot be constant; allowed: {list(CONSTANT_ROLES)}.")
    out: dict[str, Any] = {}
    for role, value in raw.items():
        if role in ("top", "bottom"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{where}: constants.{role} must be a depth (a number >= 0), got {value!r}.")
            out[role] = float(value)
        elif role == "sampling_date":
            date = value if isinstance(value, dt.date) else None
            if date is None:
                try:
                    date = dt.date.fromisoformat(str(value))
                except ValueError:
                    raise ConfigError(f"{where}: constants.sampling_date must be a date written YYYY-MM-DD, got {value!r}.") from None
            out[role] = date.date() if isinstance(date, dt.datetime) else date
        elif role == "epsg":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}: constants.epsg must be a whole EPSG code such as 25832, got {value!r}.")
            out[role] = int(value)
        else:
            out[role] = str(value)
    if "top" in out and "bottom" in out and not out["bottom"] > out["top"]:
        raise ConfigError(f"{where}: constants.bottom ({out['bottom']:g}) must be below constants.top ({out['top']:g}).")
    return out


def _sites(raw: Any, where: str) -> SiteTable | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: sites must be a mapping with key, columns and optionally file.")
    unknown = set(raw) - _SITE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) under 'sites:' {sorted(unknown)}; allowed: {sorted(_SITE_KEYS)}.")
    key = raw.get("key")
    if not isinstance(key, str) or not key.strip():
        raise ConfigError(f"{where}: sites.key must name the site table's column holding the site key.")
    cols = raw.get("columns") or {}
    if not isinstance(cols, dict) or not cols:
        raise ConfigError(f"{where}: sites.columns must map roles {list(SITE_ROLES)} to site table columns.")
    bad = sorted(set(cols) - set(SITE_ROLES))
    if bad:
        raise ConfigError(f"{where}: sites.columns has role(s) {bad} a site table cannot give; allowed: {list(SITE_ROLES)}.")
    on = str(raw.get("on", "site_id"))
    if on not in ("site_id", "sample_id", "field_id"):
        raise ConfigError(f"{where}: sites.on must be site_id, sample_id or field_id, got {on!r}.")
    file = raw.get("file")
    if file is not None and (not isinstance(file, str) or not file.strip()):
        raise ConfigError(f"{where}: sites.file must be a file name relative to the sample file.")
    decimal = raw.get("decimal")
    if decimal is not None and decimal not in (".", ","):
        raise ConfigError(f"{where}: sites.decimal must be '.' or ','.")
    delimiter = raw.get("delimiter")
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise ConfigError(f"{where}: sites.delimiter must be a single character.")
    return SiteTable(
        key=key.strip(),
        columns={str(r): str(c).strip() for r, c in cols.items()},
        on=on,
        file=file.strip() if file else None,
        delimiter=delimiter,
        decimal=decimal,
        encoding=_encoding(raw.get("encoding"), where, "sites.encoding"),
    )


def _date_formats(raw: Any, where: str) -> tuple[str, ...]:
    formats = raw if isinstance(raw, list) else [raw]
    if not formats:
        raise ConfigError(f"{where}: date_format must be a strptime pattern such as '%d.%m.%Y' or a list of them.")
    out = []
    for f in formats:
        f = str(f)
        if f.lower() == "excel":
            out.append("excel")
            continue
        if not any(code in f for code in ("%Y", "%y")):
            raise ConfigError(f"{where}: date_format {f!r} has no year (%Y); write e.g. '%d.%m.%Y'.")
        out.append(f)
    return tuple(out)


def _encoding(raw: Any, where: str, key: str) -> str | None:
    if raw is None:
        return None
    try:
        "".encode(str(raw))
    except LookupError:
        raise ConfigError(f"{where}: {key} {raw!r} is unknown; use e.g. latin-1 or cp1252.") from None
    return str(raw)


def _unit_columns(raw: Any, where: str, layout: str) -> dict[str, UnitColumn]:
    if raw is None:
        return {}
    if layout == "long":
        raise ConfigError(f"{where}: a long layout has its units in long.unit and long.units, not 'units:'.")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: units must map measured roles to {{column: ..., map: {{unit text: unit code}}}}.")
    out: dict[str, UnitColumn] = {}
    for role, spec in raw.items():
        if role not in MEASURED_ROLES:
            raise ConfigError(f"{where}: units.{role}: only measured roles {list(MEASURED_ROLES)} have units.")
        if not isinstance(spec, dict) or not isinstance(spec.get("column"), str) or not isinstance(spec.get("map"), dict):
            raise ConfigError(f"{where}: units.{role} needs 'column' (the unit column) and 'map' (unit text -> code).")
        bad = {str(t): c for t, c in spec["map"].items() if c not in UNIT_FACTORS[role]}
        if bad or not spec["map"]:
            raise ConfigError(
                f"{where}: units.{role}.map {bad} uses unknown unit codes; allowed: {sorted(UNIT_FACTORS[role])}."
            )
        out[str(role)] = UnitColumn(spec["column"].strip(), {" ".join(str(t).split()): str(c) for t, c in spec["map"].items()})
    return out


def _parse_long(raw: Any, where: str) -> LongLayout:
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: layout 'long' needs a 'long:' block with the parameter, value and unit columns, "
            "'parameters:' (name -> role) and 'units:' (role -> {unit text: unit code})."
        )
    unknown = set(raw) - _LONG_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) under 'long:' {sorted(unknown)}; allowed: {sorted(_LONG_KEYS)}.")
    for key in ("parameter", "value", "unit"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ConfigError(f"{where}: long.{key} must name the column holding the {key} of each line.")
    params = raw.get("parameters") or {}
    if not isinstance(params, dict) or not params:
        raise ConfigError(f"{where}: long.parameters must map parameter names to roles {list(MEASURED_ROLES)}.")
    bad = {str(p): r for p, r in params.items() if r not in MEASURED_ROLES}
    if bad:
        raise ConfigError(f"{where}: long.parameters {bad} map to unknown roles; allowed: {list(MEASURED_ROLES)}.")
    keys = [normalize_name(str(p)) for p in params]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}: long.parameters lists a parameter name twice (names ignore case and spaces).")
    if "soc" not in params.values() and "som" not in params.values():
        raise ConfigError(f"{where}: long.parameters must map a parameter to 'soc' or 'som'.")
    units_raw = raw.get("units") or {}
    if not isinstance(units_raw, dict):
        raise ConfigError(f"{where}: long.units must map each role to {{unit text: unit code}}.")
    units: dict[str, dict[str, str]] = {}
    for role in sorted(set(params.values())):
        table = units_raw.get(role)
        if not isinstance(table, dict) or not table:
            raise ConfigError(
                f"{where}: long.units.{role} is missing; list the unit texts used for {role} and their codes "
                f"(one of {sorted(UNIT_FACTORS[role])})."
            )
        bad_units = {str(t): c for t, c in table.items() if c not in UNIT_FACTORS[role]}
        if bad_units:
            raise ConfigError(
                f"{where}: long.units.{role} {bad_units} use unknown unit codes; allowed: {sorted(UNIT_FACTORS[role])}."
            )
        units[role] = {" ".join(str(t).split()): str(c) for t, c in table.items()}
    extra_roles = set(units_raw) - set(units)
    if extra_roles - set(MEASURED_ROLES):
        raise ConfigError(f"{where}: long.units has unknown role(s) {sorted(extra_roles - set(MEASURED_ROLES))}.")
    ignore = raw.get("ignore") or []
    if not isinstance(ignore, list):
        raise ConfigError(f"{where}: long.ignore must be a list of parameter names.")
    prefer_raw = raw.get("prefer") or {}
    if not isinstance(prefer_raw, dict) or not all(isinstance(v, list) for v in prefer_raw.values()):
        raise ConfigError(f"{where}: long.prefer must map roles to lists of parameter names or methods, best first.")
    bad_prefer = sorted(set(prefer_raw) - set(MEASURED_ROLES))
    if bad_prefer:
        raise ConfigError(f"{where}: long.prefer has unknown role(s) {bad_prefer}; allowed: {list(MEASURED_ROLES)}.")
    return LongLayout(
        parameter_column=raw["parameter"].strip(),
        value_column=raw["value"].strip(),
        unit_column=raw["unit"].strip(),
        parameters={str(p): str(r) for p, r in params.items()},
        units=units,
        ignore=tuple(str(p) for p in ignore),
        prefer={str(r): tuple(str(p) for p in v) for r, v in prefer_raw.items()},
    )
