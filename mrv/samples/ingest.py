"""Read a submitted sample CSV into canonical records, rejecting bad rows with a reason.

Every data row ends either in ``accepted`` or in ``rejected`` (row number = line number in the
file, the header being line 1): ``len(accepted) + len(rejected) == submitted`` always holds.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from mrv.errors import SubmissionRejected
from mrv.samples.formats import SOC_UNITS, SampleFormat

#: Plausibility limits. SOC above 580 g/kg would exceed pure organic matter (van Bemmelen 0.58);
#: mineral bulk density cannot exceed quartz particle density, 2.65 g/cm3.
SOC_MAX_G_KG = 580.0
BD_RANGE_G_CM3 = (0.1, 2.65)
MAX_DEPTH_CM = 300.0

CANONICAL_COLUMNS = [
    "row", "sample_id", "site_id", "source", "submitter", "field_id", "x", "y", "crs", "lon", "lat",
    "sampling_date", "top_cm", "bottom_cm", "soc_g_kg", "bulk_density_g_cm3", "coarse_fragments_vol_pct", "method",
]  # fmt: skip


@dataclass(frozen=True)
class Rejection:
    row: int
    column: str
    value: str
    reason: str


@dataclass(frozen=True)
class IngestResult:
    submitted: int
    accepted: pd.DataFrame
    """Canonical columns (``CANONICAL_COLUMNS``); x/y in the project CRS."""
    rejected: tuple[Rejection, ...]

    def rejected_frame(self) -> pd.DataFrame:
        return pd.DataFrame([r.__dict__ for r in self.rejected], columns=["row", "column", "value", "reason"])


class _RowError(Exception):
    def __init__(self, column: str, value: str, reason: str) -> None:
        super().__init__(reason)
        self.column, self.value, self.reason = column, value, reason


def decode(raw: bytes, name: str) -> str:
    """UTF-8 (with or without BOM), else Latin-1 (common in agency exports from spreadsheets)."""
    if not raw.strip():
        raise SubmissionRejected(f"{name} is empty. Export the samples as CSV with a header row and resubmit.")
    if b"\x00" in raw[:4096]:
        raise SubmissionRejected(f"{name} is not a text CSV file (it contains binary data). Export it as CSV.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_table(text: str, name: str) -> tuple[list[str], list[list[str]], str]:
    """Header, rows and the decimal separator; ``;``-separated files use decimal commas."""
    first = text.splitlines()[0] if text else ""
    delimiter = ";" if first.count(";") > first.count(",") else ","
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise SubmissionRejected(f"{name} cannot be parsed as CSV: {exc}. Check quoting and resubmit.") from exc
    if not rows:
        raise SubmissionRejected(f"{name} has no header row.")
    header = [h.strip() for h in rows[0]]
    return header, rows[1:], "," if delimiter == ";" else "."


class _Row:
    def __init__(self, cells: dict[str, str], fmt: SampleFormat, decimal: str) -> None:
        self.cells, self.fmt, self.decimal = cells, fmt, decimal

    def text(self, role: str, *, required: bool = True) -> str:
        col = self.fmt.columns.get(role)
        value = self.cells.get(col, "").strip() if col else ""
        if required and not value:
            raise _RowError(col or role, value, f"'{col or role}' is empty; fill it in")
        return value

    def number(self, role: str, *, required: bool = True) -> float | None:
        value = self.text(role, required=required)
        if not value:
            return None
        try:
            num = float(value.replace(",", ".") if self.decimal == "," else value)
        except ValueError:
            raise _RowError(self.fmt.columns[role], value, f"'{value}' is not a number") from None
        if not math.isfinite(num):
            raise _RowError(self.fmt.columns[role], value, f"'{value}' is not a finite number")
        return num


def _check(ok: bool, row: _Row, role: str, value: object, reason: str) -> None:
    if not ok:
        raise _RowError(row.fmt.columns.get(role, role), str(value), reason)


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
    """Validate ``path`` row by row against ``fmt``.

    Coordinates are transformed from the row's EPSG code to ``project_crs``; rows outside
    ``region_bounds`` (in ``project_crs``) are rejected. SOC is converted to g/kg.
    """
    name = Path(path).name
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SubmissionRejected(f"Cannot read {path}: {exc.strerror}.") from exc
    header, rows, decimal = read_table(decode(raw, name), name)
    missing = [col for col in fmt.columns.values() if col not in header and col not in _optional_cols(fmt)]
    if missing:
        raise SubmissionRejected(
            f"{name} lacks column(s) {missing} required by sample format '{fmt.name}' (found {header}). "
            "Rename the columns or choose the matching --format profile."
        )
    today = today or dt.date.today()
    transformers: dict[int, Transformer] = {}
    accepted: list[dict[str, object]] = []
    rejected: list[Rejection] = []
    seen_ids: set[str] = set()
    for i, cells in enumerate(rows):
        line = i + 2
        if not any(c.strip() for c in cells):
            rejected.append(Rejection(line, "", "", "empty line"))
            continue
        if len(cells) != len(header):
            rejected.append(
                Rejection(line, "", ";".join(cells)[:80], f"has {len(cells)} cells but the header has {len(header)}")
            )
            continue
        row = _Row(dict(zip(header, cells, strict=True)), fmt, decimal)
        try:
            rec = _validate(row, fmt, project_crs, region_bounds, today, transformers)
            _check(rec["sample_id"] not in seen_ids, row, "sample_id", rec["sample_id"], "duplicate sample id in this file")
        except _RowError as err:
            rejected.append(Rejection(line, err.column, err.value, err.reason))
            continue
        seen_ids.add(str(rec["sample_id"]))
        rec.update(row=line, source=source, submitter=rec.get("submitter") or submitter)
        accepted.append(rec)
    frame = pd.DataFrame(accepted, columns=CANONICAL_COLUMNS)
    return IngestResult(submitted=len(rows), accepted=frame, rejected=tuple(rejected))


def _optional_cols(fmt: SampleFormat) -> set[str]:
    return {fmt.columns[r] for r in ("site_id", "field_id", "submitter", "bulk_density", "coarse_fragments", "method") if r in fmt.columns}


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
    try:
        date = dt.date.fromisoformat(date_text[:10])
    except ValueError:
        raise _RowError(fmt.columns["sampling_date"], date_text, "date must be written YYYY-MM-DD") from None
    _check(date <= today, row, "sampling_date", date_text, "sampling date is in the future")

    f = fmt.depth_factor_cm
    top, bottom = row.number("top"), row.number("bottom")
    assert top is not None
    assert bottom is not None
    top, bottom = top * f, bottom * f
    _check(top >= 0, row, "top", top, "top depth must be 0 or more")
    _check(bottom > top, row, "bottom", bottom, f"bottom depth {bottom:g} cm is not below top depth {top:g} cm")
    _check(bottom <= MAX_DEPTH_CM, row, "bottom", bottom, f"bottom depth {bottom:g} cm is deeper than {MAX_DEPTH_CM:g} cm")

    soc = row.number("soc")
    assert soc is not None
    soc_g_kg = soc * SOC_UNITS[fmt.soc_unit]
    _check(soc_g_kg > 0, row, "soc", soc, "SOC must be greater than 0")
    _check(soc_g_kg <= SOC_MAX_G_KG, row, "soc", soc, f"SOC of {soc_g_kg:g} g/kg is impossible (max {SOC_MAX_G_KG:g} g/kg)")

    bd = row.number("bulk_density", required=False) if "bulk_density" in fmt.columns else None
    if bd is not None:
        lo, hi = BD_RANGE_G_CM3
        _check(lo <= bd <= hi, row, "bulk_density", bd, f"bulk density {bd:g} g/cm3 is outside {lo}-{hi} g/cm3")
    cf = row.number("coarse_fragments", required=False) if "coarse_fragments" in fmt.columns else None
    if cf is not None:
        _check(0 <= cf < 100, row, "coarse_fragments", cf, "coarse fragments must be 0-99 volume %")

    x, y, lon, lat, epsg = _coordinates(row, fmt)
    tr = transformers.get(epsg)
    if tr is None:
        try:
            src = CRS.from_epsg(epsg)
        except CRSError:
            raise _RowError(fmt.columns.get("epsg", "epsg"), str(epsg), f"EPSG:{epsg} is not a known CRS") from None
        tr = transformers[epsg] = Transformer.from_crs(src, project_crs, always_xy=True)
    px, py = tr.transform(x, y)
    if not (math.isfinite(px) and math.isfinite(py)):
        raise _RowError("coordinates", f"{x}, {y}", f"coordinates cannot be placed in EPSG:{epsg}")
    if region_bounds is not None:
        inside = region_bounds[0] <= px <= region_bounds[2] and region_bounds[1] <= py <= region_bounds[3]
        _check(inside, row, "x" if "x" in fmt.columns else "lon", f"{x}, {y}", "point lies outside the project region")
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
        "bulk_density_g_cm3": bd,
        "coarse_fragments_vol_pct": cf if cf is not None else 0.0,
        "method": row.text("method", required=False),
    }


def _coordinates(row: _Row, fmt: SampleFormat) -> tuple[float, float, float | None, float | None, int]:
    if "epsg" in fmt.columns:
        code = row.text("epsg").upper().removeprefix("EPSG:")
        try:
            epsg = int(float(code))
        except (ValueError, OverflowError):
            raise _RowError(fmt.columns["epsg"], code, f"'{code}' is not an EPSG code like 32633") from None
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
