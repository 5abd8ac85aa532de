"""Read a submitted sample CSV into canonical records, rejecting bad rows with a reason.

Row numbers are line numbers in the file (the header being line 1). Every data line ends in
exactly one place: in an accepted record or in ``rejected``.

* Wide layout (one line per sample): ``len(accepted) + len(rejected) == submitted``.
* Long layout (one line per measured parameter, see :mod:`mrv.samples.formats`): lines are
  pivoted to one record per sample id. A line that cannot be read (unknown parameter or unit,
  value not a number, ...) is rejected on its own; a sample that fails validation is rejected
  with the reason on the line that caused it (e.g. the SOC line for an impossible SOC, the
  first line for a bad date) and each of its other lines is rejected with a pointer to that line.
  ``IngestResult.accepted_lines + len(rejected) == submitted``; ``record_lines`` says which lines
  built which record.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from mrv.errors import StockError, SubmissionRejected
from mrv.samples.formats import MEASURED_ROLES, UNIT_FACTORS, LongLayout, SampleFormat
from mrv.samples.stocks import VAN_BEMMELEN_FACTOR, som_to_soc

#: Plausibility limits. SOC above 580 g/kg would exceed pure organic matter (van Bemmelen 0.58);
#: mineral bulk density cannot exceed quartz particle density, 2.65 g/cm3.
SOC_MAX_G_KG = 580.0
SOM_MAX_G_KG = 1000.0
BD_RANGE_G_CM3 = (0.1, 2.65)
MAX_DEPTH_CM = 300.0

#: Largest GPS accuracy (m) a file may report; beyond it the value is a typo (e.g. cm) or no fix.
GPS_ACCURACY_MAX_M = 10_000.0

#: Columns of an accepted record, all stored in the sample store (:mod:`mrv.samples.store`).
#:
#: ``soc_sd_g_kg``: SD (g/kg) that a conversion added to the SOC value (SOM -> SOC, see
#: :func:`mrv.samples.stocks.som_to_soc`); NaN when SOC was measured.
#: :func:`mrv.samples.sites.site_stocks` adds it to the source's analytical error.
#: ``gps_accuracy_m``: horizontal position accuracy the device reported (m, the radius of ~68 %
#: confidence of Android's ``Location.getAccuracy()`` / iOS ``horizontalAccuracy``); NaN when the
#: file has no such column or the cell is empty or 0 (Android reports 0 when it has no estimate).
#: :func:`mrv.samples.qa.flag_gps_accuracy` flags values above the tolerance.
CANONICAL_COLUMNS = [
    "row", "sample_id", "site_id", "source", "submitter", "field_id", "x", "y", "crs", "lon", "lat",
    "sampling_date", "top_cm", "bottom_cm", "soc_g_kg", "bulk_density_g_cm3", "coarse_fragments_vol_pct", "method",
    "soc_sd_g_kg", "gps_accuracy_m",
]  # fmt: skip

_DEFAULT_UNITS = {"bulk_density": "g_cm3", "coarse_fragments": "vol_percent"}
_ROLE_LABELS = {
    "soc": "SOC",
    "som": "organic matter",
    "bulk_density": "bulk density",
    "coarse_fragments": "coarse fragments",
}


@dataclass(frozen=True)
class Rejection:
    row: int
    column: str
    value: str
    reason: str


@dataclass(frozen=True)
class IngestResult:
    submitted: int
    """Number of data lines in the file (header excluded)."""
    accepted: pd.DataFrame
    """``CANONICAL_COLUMNS``, one row per sample; x/y in the project CRS; ``row`` = first line of the sample."""
    rejected: tuple[Rejection, ...]
    record_lines: tuple[tuple[int, ...], ...] = field(default=())
    """File lines each accepted record was built from, in ``accepted`` order (one line each in a wide file)."""

    @property
    def accepted_lines(self) -> int:
        """Number of data lines that went into accepted records."""
        return sum(len(lines) for lines in self.record_lines)

    def lines_by_row(self) -> dict[int, tuple[int, ...]]:
        """Record ``row`` (its first line) -> every file line the record was built from."""
        return {lines[0]: lines for lines in self.record_lines if lines}

    def rejected_frame(self) -> pd.DataFrame:
        return pd.DataFrame([r.__dict__ for r in self.rejected], columns=["row", "column", "value", "reason"])


class _RowError(Exception):
    def __init__(self, column: str, value: str, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.column, self.value, self.reason, self.line = column, value, reason, line


def decode(raw: bytes, name: str, *, fallback: str = "latin-1") -> str:
    """UTF-8 (with or without BOM), else ``fallback`` (Latin-1: common in agency exports from spreadsheets)."""
    if not raw.strip():
        raise SubmissionRejected(f"{name} is empty. Export the samples as CSV with a header row and resubmit.")
    if b"\x00" in raw[:4096]:
        raise SubmissionRejected(f"{name} is not a text CSV file (it contains binary data). Export it as CSV.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode(fallback)
    except UnicodeDecodeError as exc:
        raise SubmissionRejected(
            f"{name} is neither UTF-8 nor {fallback} text (byte {exc.start} cannot be read). Export it as UTF-8 CSV."
        ) from exc


def read_table(
    text: str, name: str, *, delimiter: str | None = None, decimal: str | None = None
) -> tuple[list[str], list[list[str]], str]:
    """Header, rows and the decimal separator; ``;``-separated files use decimal commas unless told otherwise."""
    if delimiter is None:
        first = text.splitlines()[0] if text else ""
        delimiter = ";" if first.count(";") > first.count(",") else ","
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise SubmissionRejected(f"{name} cannot be parsed as CSV: {exc}. Check quoting and resubmit.") from exc
    if not rows:
        raise SubmissionRejected(f"{name} has no header row.")
    header = [h.strip() for h in rows[0]]
    return header, rows[1:], decimal or ("," if delimiter == ";" else ".")


class _Row:
    """The texts of one sample by role, with the column and file line each came from."""

    def __init__(
        self,
        values: dict[str, str],
        *,
        columns: dict[str, str],
        lines: dict[str, int],
        units: dict[str, str],
        decimal: str,
        line: int,
        missing: dict[str, str] | None = None,
    ) -> None:
        self.values, self.columns, self.lines, self.units = values, columns, lines, units
        self.decimal, self.line, self.missing = decimal, line, missing or {}

    def column(self, role: str) -> str:
        return self.columns.get(role, role)

    def line_of(self, role: str) -> int:
        return self.lines.get(role, self.line)

    def has(self, role: str) -> bool:
        return bool(self.values.get(role, "").strip())

    def text(self, role: str, *, required: bool = True) -> str:
        value = self.values.get(role, "").strip()
        if required and not value:
            reason = self.missing.get(role) or f"'{self.column(role)}' is empty; fill it in"
            raise _RowError(self.column(role), value, reason, self.line_of(role))
        return value

    def number(self, role: str, *, required: bool = True) -> float | None:
        value = self.text(role, required=required)
        if not value:
            return None
        num = _parse_number(value, self.decimal)
        if num is None:
            raise _RowError(self.column(role), value, f"'{value}' is not a number", self.line_of(role))
        if not math.isfinite(num):
            raise _RowError(self.column(role), value, f"'{value}' is not a finite number", self.line_of(role))
        return num

    def measured(self, role: str) -> float | None:
        """A measured value converted to its canonical unit (see ``UNIT_FACTORS``), or None if absent."""
        num = self.number(role, required=False)
        if num is None:
            return None
        return num * UNIT_FACTORS[role][self.units.get(role, _DEFAULT_UNITS.get(role, ""))]


def _parse_number(value: str, decimal: str) -> float | None:
    try:
        return float(value.replace(",", ".") if decimal == "," else value)
    except ValueError:
        return None


def _check(ok: bool, row: _Row, role: str, value: object, reason: str) -> None:
    if not ok:
        raise _RowError(row.column(role), str(value), reason, row.line_of(role))


@dataclass
class _Context:
    fmt: SampleFormat
    project_crs: str
    region_bounds: tuple[float, float, float, float] | None
    today: dt.date
    source: str
    submitter: str
    transformers: dict[int, Transformer] = field(default_factory=dict)

    def record(self, row: _Row) -> dict[str, object]:
        rec = _validate(row, self.fmt, self.project_crs, self.region_bounds, self.today, self.transformers)
        rec.update(source=self.source, submitter=rec.get("submitter") or self.submitter)
        return rec


def ingest(
    path: Path,
    fmt: SampleFormat,
    *,
    source: str,
    submitter: str,
    project_crs: str,
    region_bounds: tuple[float, float, float, float] | None = None,
    today: dt.date | None = None,
) -> IngestResult:
    """Validate ``path`` line by line against ``fmt``.

    Coordinates are transformed from the row's EPSG code to ``project_crs``; rows outside
    ``region_bounds`` (in ``project_crs``) are rejected. SOC is converted to g/kg; soil organic
    matter (SOM, loss on ignition) is converted to SOC with :func:`~mrv.samples.stocks.som_to_soc`
    (van Bemmelen factor 0.58) and the conversion SD is kept in ``soc_sd_g_kg``.
    """
    name = Path(path).name
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SubmissionRejected(f"Cannot read {path}: {exc.strerror}.") from exc
    text = decode(raw, name, fallback=fmt.encoding or "latin-1")
    header, rows, decimal = read_table(text, name, delimiter=fmt.delimiter, decimal=fmt.decimal)
    missing = [col for col in required_columns(fmt) if col not in header]
    if missing:
        raise SubmissionRejected(
            f"{name} lacks column(s) {missing} required by sample format '{fmt.name}' (found {header}). "
            "Rename the columns or choose the matching --format profile."
        )
    ctx = _Context(fmt, project_crs, region_bounds, today or dt.date.today(), source, submitter)
    if fmt.long is not None:
        accepted, record_lines, rejected = _ingest_long(header, rows, fmt.long, decimal, ctx)
    else:
        accepted, record_lines, rejected = _ingest_wide(header, rows, decimal, ctx)
    frame = pd.DataFrame(accepted, columns=CANONICAL_COLUMNS)
    frame["soc_sd_g_kg"] = frame["soc_sd_g_kg"].astype(float)
    frame["gps_accuracy_m"] = frame["gps_accuracy_m"].astype(float)
    return IngestResult(
        submitted=len(rows),
        accepted=frame,
        rejected=tuple(sorted(rejected, key=lambda r: r.row)),
        record_lines=tuple(record_lines),
    )


def required_columns(fmt: SampleFormat) -> list[str]:
    """File columns that ``fmt`` maps to a required role (and a long layout's parameter/value/unit columns)."""
    needed = [col for role, col in fmt.columns.items() if role not in _OPTIONAL_ROLES]
    if fmt.long is not None:
        needed += [fmt.long.parameter_column, fmt.long.value_column, fmt.long.unit_column]
    return needed


_OPTIONAL_ROLES = {
    "site_id", "field_id", "submitter", "bulk_density", "coarse_fragments", "method", "soc", "som", "gps_accuracy",
}  # fmt: skip


def _line_problem(cells: list[str], header: list[str], line: int) -> Rejection | None:
    if not any(c.strip() for c in cells):
        return Rejection(line, "", "", "empty line")
    if len(cells) != len(header):
        return Rejection(line, "", ";".join(cells)[:80], f"has {len(cells)} cells but the header has {len(header)}")
    return None


def _well_formed_lines(
    header: list[str], rows: list[list[str]], rejected: list[Rejection]
) -> Iterator[tuple[int, dict[str, str]]]:
    """``(file line, cells by column)`` of every row :func:`_line_problem` accepts; the others go to ``rejected``."""
    for i, cells in enumerate(rows):
        line = i + 2  # line 1 is the header
        problem = _line_problem(cells, header, line)
        if problem is not None:
            rejected.append(problem)
            continue
        yield line, dict(zip(header, cells, strict=True))


def _ingest_wide(
    header: list[str], rows: list[list[str]], decimal: str, ctx: _Context
) -> tuple[list[dict[str, object]], list[tuple[int, ...]], list[Rejection]]:
    fmt = ctx.fmt
    units: dict[str, str] = {"soc": fmt.soc_unit, "som": fmt.som_unit}
    accepted: list[dict[str, object]] = []
    lines: list[tuple[int, ...]] = []
    rejected: list[Rejection] = []
    seen_ids: set[str] = set()
    for line, by_col in _well_formed_lines(header, rows, rejected):
        values = {role: by_col.get(col, "") for role, col in fmt.columns.items()}
        row = _Row(values, columns=fmt.columns, lines={}, units=units, decimal=decimal, line=line)
        try:
            rec = ctx.record(row)
            _check(
                rec["sample_id"] not in seen_ids, row, "sample_id", rec["sample_id"], "duplicate sample id in this file"
            )
        except _RowError as err:
            rejected.append(Rejection(line, err.column, err.value, err.reason))
            continue
        seen_ids.add(str(rec["sample_id"]))
        rec["row"] = line
        accepted.append(rec)
        lines.append((line,))
    return accepted, lines, rejected


@dataclass
class _Param:
    line: int
    name: str
    value: str
    number: float
    unit: str


@dataclass
class _Sample:
    sample_id: str
    cells: dict[int, dict[str, str]] = field(default_factory=dict)
    """line -> cells of every line that belongs to the sample (parameter and ignored lines)."""
    params: dict[str, list[_Param]] = field(default_factory=dict)
    bad: dict[str, int] = field(default_factory=dict)
    """role -> a line of this sample with that role that was rejected on its own."""


def _ingest_long(
    header: list[str], rows: list[list[str]], long: LongLayout, decimal: str, ctx: _Context
) -> tuple[list[dict[str, object]], list[tuple[int, ...]], list[Rejection]]:
    fmt = ctx.fmt
    id_col = fmt.columns["sample_id"]
    rejected: list[Rejection] = []
    samples: dict[str, _Sample] = {}
    for line, by_col in _well_formed_lines(header, rows, rejected):
        sid = by_col[id_col].strip()
        if not sid:
            rejected.append(Rejection(line, id_col, "", f"'{id_col}' is empty; fill it in"))
            continue
        sample = samples.setdefault(sid, _Sample(sid))
        param = " ".join(by_col[long.parameter_column].split())
        role = long.role_of(param)
        if role is None:
            if param and long.is_ignored(param):
                sample.cells[line] = by_col
            else:
                rejected.append(_unknown_parameter(line, param, long, fmt.name))
            continue
        try:
            entry = _read_parameter(by_col, line, param, role, long, decimal)
        except _RowError as err:
            rejected.append(Rejection(line, err.column, err.value, err.reason))
            sample.bad.setdefault(role, line)
            continue
        sample.cells[line] = by_col
        sample.params.setdefault(role, []).append(entry)

    accepted: list[dict[str, object]] = []
    record_lines: list[tuple[int, ...]] = []
    for sample in sorted((s for s in samples.values() if s.cells), key=lambda s: min(s.cells)):
        try:
            _drop_repeats(sample, long, rejected)
            _check_consistent(sample, fmt)
            row = _long_row(sample, fmt, long, decimal)
            rec = ctx.record(row)
        except _RowError as err:
            rejected += _reject_sample(sample, err, id_col)
            continue
        first = min(sample.cells)
        rec["row"] = first
        accepted.append(rec)
        record_lines.append(tuple(sorted(sample.cells)))
    return accepted, record_lines, rejected


def _unknown_parameter(line: int, param: str, long: LongLayout, fmt_name: str) -> Rejection:
    if not param:
        return Rejection(line, long.parameter_column, "", f"'{long.parameter_column}' is empty; name the parameter")
    known = sorted({*long.parameters, *long.ignore})
    return Rejection(
        line,
        long.parameter_column,
        param,
        f"parameter '{param}' is unknown to sample format '{fmt_name}' (known: {', '.join(known)}); "
        "correct the name or add it to the format profile",
    )


def _read_parameter(by_col: dict[str, str], line: int, param: str, role: str, long: LongLayout, decimal: str) -> _Param:
    unit_text = " ".join(by_col[long.unit_column].split())
    known = ", ".join(repr(u) for u in long.units[role])
    if not unit_text:
        raise _RowError(long.unit_column, "", f"the unit of '{param}' is empty; write one of {known}")
    code = long.unit_code(role, unit_text)
    if code is None:
        raise _RowError(
            long.unit_column, unit_text, f"unit '{unit_text}' is not known for '{param}'; use one of {known}"
        )
    value = by_col[long.value_column].strip()
    if not value:
        raise _RowError(long.value_column, "", f"the value of '{param}' is empty; fill it in or remove the line")
    num = _parse_number(value, decimal)
    if num is None or not math.isfinite(num):
        raise _RowError(long.value_column, value, f"'{value}' ({param}) is not a number")
    return _Param(line, param, value, num * UNIT_FACTORS[role][code], code)


def _drop_repeats(sample: _Sample, long: LongLayout, out: list[Rejection]) -> None:
    """Lines repeating an earlier value of the same parameter are rejected (into ``out``); different
    values reject the sample."""
    for role, entries in sample.params.items():
        first = entries[0]
        for other in entries[1:]:
            if math.isclose(other.number, first.number, rel_tol=1e-9, abs_tol=1e-12):
                out.append(
                    Rejection(other.line, long.value_column, other.value,
                              f"repeats the {first.name} value of line {first.line} for sample {sample.sample_id}")
                )  # fmt: skip
                del sample.cells[other.line]
                continue
            raise _RowError(
                long.value_column,
                other.value,
                f"sample {sample.sample_id} has two different {_ROLE_LABELS[role]} values "
                f"({first.value} {first.unit} on line {first.line}, {other.value} {other.unit} here); keep one",
                other.line,
            )
        sample.params[role] = [first]


def _check_consistent(sample: _Sample, fmt: SampleFormat) -> None:
    """Every line of a sample must repeat the same sample columns (site, coordinates, date, depths; not the method)."""
    lines = sorted(sample.cells)
    base = sample.cells[lines[0]]
    for line in lines[1:]:
        cells = sample.cells[line]
        for role, col in fmt.columns.items():
            if role == "method":  # each parameter has its own method
                continue
            a, b = base.get(col, "").strip(), cells.get(col, "").strip()
            if a != b:
                raise _RowError(
                    col,
                    b,
                    f"'{col}' is '{b}' here but '{a}' on line {lines[0]} for the same sample {sample.sample_id}; "
                    "all lines of a sample must agree",
                    line,
                )


def _long_row(sample: _Sample, fmt: SampleFormat, long: LongLayout, decimal: str) -> _Row:
    first = min(sample.cells)
    base = sample.cells[first]
    values = {role: base.get(col, "") for role, col in fmt.columns.items()}
    columns = dict(fmt.columns)
    lines: dict[str, int] = {}
    units: dict[str, str] = {}
    missing: dict[str, str] = {}
    carbon = sample.params.get("soc") or sample.params.get("som")
    if carbon and "method" in fmt.columns:  # the method of the carbon measurement
        values["method"] = sample.cells[carbon[0].line].get(fmt.columns["method"], "")
    for role in MEASURED_ROLES:
        entries = sample.params.get(role)
        if entries:
            p = entries[0]
            values[role] = p.value
            columns[role] = f"{long.value_column} ({p.name})"
            lines[role] = p.line
            units[role] = p.unit
        elif role in sample.bad:
            missing[role] = f"the {_ROLE_LABELS[role]} line of this sample (line {sample.bad[role]}) was rejected"
            lines[role] = sample.bad[role]
    if "soc" not in values and "som" not in values:
        names = [p for p, r in long.parameters.items() if r in ("soc", "som")]
        bad = sample.bad.get("soc") or sample.bad.get("som")
        missing["soc"] = f"sample {sample.sample_id} has no usable {' or '.join(names)} line" + (
            f" (line {bad} was rejected)" if bad else "; add one"
        )
        lines.setdefault("soc", bad or first)
        columns["soc"] = long.parameter_column
    return _Row(values, columns=columns, lines=lines, units=units, decimal=decimal, line=first, missing=missing)


def _reject_sample(sample: _Sample, err: _RowError, id_col: str) -> list[Rejection]:
    """The cause on its own line; every other line of the sample points to it."""
    cause = err.line if err.line in sample.cells else min(sample.cells)
    out = [Rejection(cause, err.column, err.value, err.reason)]
    for line in sorted(sample.cells):
        if line != cause:
            out.append(
                Rejection(line, id_col, sample.sample_id,
                          f"sample {sample.sample_id} is rejected because of line {cause}: {err.reason}")
            )  # fmt: skip
    return out


def _parse_date(text: str, fmt: SampleFormat) -> dt.date | None:
    try:
        if fmt.date_format == "%Y-%m-%d":
            return dt.date.fromisoformat(text[:10])
        return dt.datetime.strptime(text.split()[0] if text.split() else text, fmt.date_format).date()
    except ValueError:
        return None


def _validate(
    row: _Row,
    fmt: SampleFormat,
    project_crs: str,
    region_bounds: tuple[float, float, float, float] | None,
    today: dt.date,
    transformers: dict[int, Transformer],
) -> dict[str, object]:
    sample_id = row.text("sample_id")
    date_text = row.text("sampling_date")
    date = _parse_date(date_text, fmt)
    if date is None:
        raise _RowError(row.column("sampling_date"), date_text, f"date must be written {fmt.date_pattern}", row.line)
    _check(date <= today, row, "sampling_date", date_text, "sampling date is in the future")

    f = fmt.depth_factor_cm
    top, bottom = row.number("top"), row.number("bottom")
    assert top is not None
    assert bottom is not None
    top, bottom = top * f, bottom * f
    _check(top >= 0, row, "top", top, "top depth must be 0 or more")
    _check(bottom > top, row, "bottom", bottom, f"bottom depth {bottom:g} cm is not below top depth {top:g} cm")
    _check(
        bottom <= MAX_DEPTH_CM, row, "bottom", bottom, f"bottom depth {bottom:g} cm is deeper than {MAX_DEPTH_CM:g} cm"
    )

    soc_g_kg, soc_sd, conversion = _soc(row)

    bd = row.measured("bulk_density")
    if bd is not None:
        lo, hi = BD_RANGE_G_CM3
        _check(lo <= bd <= hi, row, "bulk_density", bd, f"bulk density {bd:g} g/cm3 is outside {lo}-{hi} g/cm3")
    cf = row.measured("coarse_fragments")
    if cf is not None:
        _check(0 <= cf < 100, row, "coarse_fragments", cf, "coarse fragments must be 0-99 volume %")

    x, y, lon, lat, epsg = _coordinates(row, fmt)
    tr = transformers.get(epsg)
    if tr is None:
        try:
            src = CRS.from_epsg(epsg)
        except CRSError:
            raise _RowError(row.column("epsg"), str(epsg), f"EPSG:{epsg} is not a known CRS", row.line) from None
        tr = transformers[epsg] = Transformer.from_crs(src, project_crs, always_xy=True)
    px, py = tr.transform(x, y)
    if not (math.isfinite(px) and math.isfinite(py)):
        raise _RowError("coordinates", f"{x}, {y}", f"coordinates cannot be placed in EPSG:{epsg}", row.line)
    if region_bounds is not None:
        inside = region_bounds[0] <= px <= region_bounds[2] and region_bounds[1] <= py <= region_bounds[3]
        _check(inside, row, "x" if "x" in fmt.columns else "lon", f"{x}, {y}", "point lies outside the project region")
    gps_accuracy = row.number("gps_accuracy", required=False)
    if gps_accuracy is not None:
        _check(
            0 <= gps_accuracy <= GPS_ACCURACY_MAX_M,
            row,
            "gps_accuracy",
            row.text("gps_accuracy"),
            f"GPS accuracy must be between 0 and {GPS_ACCURACY_MAX_M:g} m",
        )
    method = row.text("method", required=False)
    if conversion:
        method = f"{method}; {conversion}" if method else conversion
    return {
        "sample_id": sample_id,
        "site_id": row.text("site_id", required=False) or sample_id,
        "submitter": row.text("submitter", required=False),
        "field_id": row.text("field_id", required=False) or None,
        "x": px,
        "y": py,
        "crs": project_crs,
        "lon": lon,
        "lat": lat,
        "sampling_date": date.isoformat(),
        "top_cm": top,
        "bottom_cm": bottom,
        "soc_g_kg": soc_g_kg,
        "soc_sd_g_kg": soc_sd,
        "bulk_density_g_cm3": bd,
        "coarse_fragments_vol_pct": cf if cf is not None else 0.0,
        "method": method,
        "gps_accuracy_m": gps_accuracy if gps_accuracy else math.nan,  # 0 = no estimate (Android)
    }


def _soc(row: _Row) -> tuple[float, float, str]:
    """SOC (g/kg), the SD a conversion added (NaN if measured) and a note on the conversion.

    Measured SOC wins; otherwise SOM (e.g. loss on ignition) is converted with
    :func:`~mrv.samples.stocks.som_to_soc`: ``SOC = 0.58 x SOM`` (van Bemmelen factor), with the
    SD ``0.08 x SOM`` for the uncertain carbon fraction of organic matter (Pribyl 2010,
    Geoderma 156:75-83).
    """
    if row.has("soc"):
        soc = row.measured("soc")
        assert soc is not None
        raw = row.text("soc")
        _check(soc > 0, row, "soc", raw, "SOC must be greater than 0")
        _check(soc <= SOC_MAX_G_KG, row, "soc", raw, f"SOC of {soc:g} g/kg is impossible (max {SOC_MAX_G_KG:g} g/kg)")
        return soc, math.nan, ""
    if not row.has("som"):
        row.text("som" if "som" in row.columns and "soc" not in row.columns else "soc")  # raises: say what is empty
    som = row.measured("som")
    assert som is not None
    raw = row.text("som")
    _check(som > 0, row, "som", raw, "organic matter must be greater than 0")
    _check(som <= SOM_MAX_G_KG, row, "som", raw, f"organic matter of {som:g} g/kg is impossible (max 1000 g/kg)")
    try:
        soc_arr, sd_arr = som_to_soc(som)
    except StockError as exc:  # pragma: no cover - som is checked above
        raise _RowError(row.column("som"), str(som), str(exc), row.line_of("som")) from None
    return float(soc_arr), float(sd_arr), f"SOC = {VAN_BEMMELEN_FACTOR:g} x organic matter (van Bemmelen)"


def _coordinates(row: _Row, fmt: SampleFormat) -> tuple[float, float, float | None, float | None, int]:
    if "epsg" in fmt.columns:
        code = row.text("epsg").upper().removeprefix("EPSG:")
        try:
            epsg = int(float(code))
        except (ValueError, OverflowError):
            raise _RowError(row.column("epsg"), code, f"'{code}' is not an EPSG code like 32633", row.line) from None
    else:
        assert fmt.epsg is not None
        epsg = fmt.epsg
    if "lon" in fmt.columns:
        lon, lat = row.number("lon"), row.number("lat")
        assert lon is not None
        assert lat is not None
        _check(-180 <= lon <= 180, row, "lon", lon, "longitude must be between -180 and 180")
        _check(-90 <= lat <= 90, row, "lat", lat, "latitude must be between -90 and 90")
        return lon, lat, lon, lat, epsg
    x, y = row.number("x"), row.number("y")
    assert x is not None
    assert y is not None
    return x, y, None, None, epsg
