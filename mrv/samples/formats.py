"""Column-mapping profiles that describe how one agency's sample file is laid out.

Two layouts are supported:

``wide`` (default)
    one row per sample (one depth interval at one site); every measured quantity has its own
    column (``columns: {soc: soc_g_kg, bulk_density: ...}``) in the unit the profile names
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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from mrv.errors import ConfigError
from mrv.resources import find_profile

#: Canonical column roles a profile may map. Required ones are checked in :func:`load_format`.
ROLES = (
    "sample_id", "site_id", "field_id", "submitter", "x", "y", "lon", "lat", "epsg", "sampling_date",
    "top", "bottom", "soc", "som", "bulk_density", "coarse_fragments", "method", "gps_accuracy",
)  # fmt: skip
REQUIRED = ("sample_id", "sampling_date", "top", "bottom")

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
    "date_format", "encoding", "delimiter", "decimal",
}  # fmt: skip
_LONG_KEYS = {"parameter", "value", "unit", "parameters", "units", "ignore"}


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

    @property
    def depth_factor_cm(self) -> float:
        return DEPTH_UNITS[self.depth_unit]

    @property
    def date_pattern(self) -> str:
        """The date format as a technician reads it (``DD.MM.YYYY``)."""
        out = self.date_format
        for code, text in (("%Y", "YYYY"), ("%m", "MM"), ("%d", "DD"), ("%y", "YY")):
            out = out.replace(code, text)
        return out


def load_format(
    name_or_path: str | Path, *, search_dirs: tuple[Path, ...] | None = None, config_path: Path | None = None
) -> SampleFormat:
    """Load a profile by name or by path.

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
    """Validate an already-parsed profile mapping (see :func:`load_format`)."""
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}.")
    layout = raw.get("layout", "wide")
    if layout not in ("wide", "long"):
        raise ConfigError(f"{where}: layout must be 'wide' (one row per sample) or 'long' (one row per parameter).")
    cols = raw.get("columns") or {}
    if not isinstance(cols, dict):
        raise ConfigError(f"{where}: 'columns' must map roles to column names.")
    bad_roles = set(cols) - set(ROLES)
    if bad_roles:
        raise ConfigError(f"{where}: unknown column role(s) {sorted(bad_roles)}; allowed: {list(ROLES)}.")
    missing = [r for r in REQUIRED if r not in cols]
    has_xy = {"x", "y"} <= set(cols) or {"lon", "lat"} <= set(cols)
    if missing or not has_xy:
        raise ConfigError(f"{where}: columns must map {list(REQUIRED)} and x/y or lon/lat; missing {missing}.")
    if "epsg" not in cols and raw.get("epsg") is None:
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
    date_format = str(raw.get("date_format", "%Y-%m-%d"))
    if not any(code in date_format for code in ("%Y", "%y")):
        raise ConfigError(f"{where}: date_format {date_format!r} has no year (%Y); write e.g. '%d.%m.%Y'.")
    delimiter = raw.get("delimiter")
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise ConfigError(f"{where}: delimiter must be a single character such as ';' or ','.")
    decimal = raw.get("decimal")
    if decimal is not None and decimal not in (".", ","):
        raise ConfigError(f"{where}: decimal must be '.' or ','.")
    encoding = raw.get("encoding")
    if encoding is not None:
        try:
            "".encode(str(encoding))
        except LookupError:
            raise ConfigError(f"{where}: encoding {encoding!r} is unknown; use e.g. latin-1 or cp1252.") from None
    return SampleFormat(
        name=str(raw.get("name", default_name)),
        columns={str(k): str(v) for k, v in cols.items()},
        soc_unit=soc_unit,
        depth_unit=depth_unit,
        epsg=int(raw["epsg"]) if raw.get("epsg") is not None else None,
        description=str(raw.get("description", "")),
        som_unit=som_unit,
        layout=layout,
        long=long,
        date_format=date_format,
        encoding=str(encoding) if encoding is not None else None,
        delimiter=delimiter,
        decimal=decimal,
    )


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
    return LongLayout(
        parameter_column=raw["parameter"].strip(),
        value_column=raw["value"].strip(),
        unit_column=raw["unit"].strip(),
        parameters={str(p): str(r) for p, r in params.items()},
        units=units,
        ignore=tuple(str(p) for p in ignore),
    )
