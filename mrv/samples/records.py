"""Vectorised validation of samples into canonical records (one pandas pass per chunk, no per-row Python).

Input is a *role frame*: one row per sample, one text column per role (``sample_id``, ``soc``, ...;
``""`` where missing after the profile's missing-value codes), ``_line`` (the sample's file line) and,
optionally per role, ``_label:<role>`` (the column to name in a message), ``_lineof:<role>`` (the file
line of that value), ``_unit:<role>`` (a unit code of :data:`~mrv.samples.formats.UNIT_FACTORS`) and
``_missing:<role>`` (the reason to give when the value is missing).

Each row either becomes a record or gets exactly one failure (the first check it fails, in the order
id, date, depths, SOC, position, GPS accuracy). Optional values that are implausible or unreadable
(bulk density, coarse fragments) become missing with a *note* and the record is kept (issue 15.2).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mrv.samples import cells
from mrv.samples.crs_checks import UnusableCRS, inside_area, project_area, source_crs
from mrv.samples.formats import DEPTH_UNITS, UNIT_FACTORS, SampleFormat
from mrv.samples.stocks import VAN_BEMMELEN_FACTOR, VAN_BEMMELEN_FACTOR_SD

__all__ = [
    "BD_RANGE_G_CM3",
    "GPS_ACCURACY_MAX_M",
    "MAX_DEPTH_CM",
    "SOC_MAX_G_KG",
    "SOM_MAX_G_KG",
    "Context",
    "Outcome",
    "validate",
]

#: Plausibility limits. SOC above 580 g/kg would exceed pure organic matter (van Bemmelen 0.58);
#: mineral bulk density cannot exceed quartz particle density, 2.65 g/cm3.
SOC_MAX_G_KG = 580.0
SOM_MAX_G_KG = 1000.0
BD_RANGE_G_CM3 = (0.1, 2.65)
MAX_DEPTH_CM = 300.0
#: Largest GPS accuracy (m) a file may report; beyond it the value is a typo (e.g. cm) or no fix.
GPS_ACCURACY_MAX_M = 10_000.0
#: SD of a value known only to lie in [0, L] (uniform): L / sqrt(12).
UNIFORM_SD_FACTOR = 1.0 / math.sqrt(12.0)

_DEFAULT_UNITS = {"bulk_density": "g_cm3", "coarse_fragments": "vol_percent"}
_LABELS = {"soc": "SOC", "som": "organic matter", "bulk_density": "bulk density", "coarse_fragments": "coarse fragments"}


@dataclass
class Context:
    fmt: SampleFormat
    project_crs: str
    region_bounds: tuple[float, float, float, float] | None
    today: dt.date
    source: str
    submitter: str
    decimal: str
    site_label: str = "site table"


@dataclass
class Outcome:
    """Validated rows: ``records`` (canonical columns, index = role-frame positions of accepted rows)."""

    records: pd.DataFrame
    failures: pd.DataFrame
    """Columns ``pos, line, column, value, reason, code`` (one row per failed sample)."""
    notes: pd.DataFrame
    """Columns ``pos, line, column, value, reason, code`` (flags on accepted records)."""


@dataclass
class _Collector:
    rf: pd.DataFrame
    ctx: Context
    failed: np.ndarray = field(init=False)
    parts: list[pd.DataFrame] = field(default_factory=list)
    notes: list[pd.DataFrame] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.failed = np.zeros(len(self.rf), dtype=bool)

    def label(self, role: str, pos: np.ndarray) -> Any:
        key = f"_label:{role}"
        if key in self.rf.columns:
            return self.rf[key].to_numpy()[pos]
        return _default_label(self.ctx.fmt, role, self.ctx.site_label)

    def line(self, role: str, pos: np.ndarray) -> np.ndarray:
        key = f"_lineof:{role}"
        base = self.rf["_line"].to_numpy()[pos]
        if key in self.rf.columns:
            own = self.rf[key].to_numpy()[pos]
            return np.where(pd.isna(own), base, own).astype(np.int64)
        return base

    def _frame(self, mask: np.ndarray, role: str, value: Any, reason: Any, code: str) -> pd.DataFrame | None:
        pos = np.flatnonzero(mask)
        if not len(pos):
            return None
        if callable(value):
            vals = value(pos)
        elif isinstance(value, (pd.Series, np.ndarray)):
            vals = np.asarray(value, dtype=object)[pos]
        else:
            vals = value
        why = reason(pos) if callable(reason) else reason
        return pd.DataFrame(
            {"pos": pos, "line": self.line(role, pos), "column": self.label(role, pos), "value": vals,
             "reason": why, "code": code}  # fmt: skip
        )

    def fail(self, mask: Any, role: str, value: Any, reason: str | Callable[[np.ndarray], Any], code: str) -> None:
        m = np.asarray(mask, dtype=bool) & ~self.failed
        part = self._frame(m, role, value, reason, code)
        if part is not None:
            self.parts.append(part)
            self.failed |= m

    def note(self, mask: Any, role: str, value: Any, reason: str | Callable[[np.ndarray], Any], code: str) -> None:
        part = self._frame(np.asarray(mask, dtype=bool), role, value, reason, code)
        if part is not None:
            self.notes.append(part)


def _default_label(fmt: SampleFormat, role: str, site_label: str) -> str:
    if role in fmt.columns:
        return fmt.columns[role]
    if role in fmt.constants:
        return f"constants.{role}"
    if fmt.sites is not None and role in fmt.sites.columns:
        return f"{site_label}:{fmt.sites.columns[role]}"
    if role in ("top", "bottom") and "depth" in fmt.columns:
        return fmt.columns["depth"]
    return role


def _text(rf: pd.DataFrame, role: str) -> pd.Series:
    if role in rf.columns:
        return rf[role]
    return pd.Series("", index=rf.index, dtype=object)


def _missing_reason(rf: pd.DataFrame, col: _Collector, role: str) -> Callable[[np.ndarray], Any]:
    def reason(pos: np.ndarray) -> Any:
        labels = col.label(role, pos)
        base = np.char.add(np.char.add("'", np.asarray(labels, dtype=str)), "' is empty; fill it in")
        key = f"_missing:{role}"
        if key in rf.columns:
            own = rf[key].to_numpy()[pos]
            return np.where(pd.isna(own) | (own == ""), base, own)
        return base

    return reason


def _quoted(template: str, values: pd.Series) -> Callable[[np.ndarray], Any]:
    arr = np.asarray(values, dtype=object)
    return lambda pos: [template.format(v=arr[i]) for i in pos]


def validate(rf: pd.DataFrame, ctx: Context) -> Outcome:
    """Check every row of ``rf`` (see the module docstring); pure apart from pyproj's CRS database."""
    fmt = ctx.fmt
    for role, value in fmt.constants.items():  # text constants; numbers and dates are used typed below
        if role not in rf.columns and role in ("site_id", "field_id", "submitter", "method"):
            rf[role] = str(value)
    col = _Collector(rf, ctx)
    n = len(rf)

    sample_id = _text(rf, "sample_id")
    col.fail(sample_id == "", "sample_id", sample_id, _missing_reason(rf, col, "sample_id"), "missing_value")
    if "_site_problem" in rf.columns:
        problem = rf["_site_problem"].fillna("")
        col.fail(problem != "", fmt.sites.on if fmt.sites else "site_id", _text(rf, fmt.sites.on if fmt.sites else "site_id"),
                 lambda pos: problem.to_numpy()[pos], "site_not_found")  # fmt: skip

    date = _dates(rf, ctx, col)
    top, bottom = _depths(rf, ctx, col)
    soc, soc_sd, conversion = _soc(rf, ctx, col)
    bd = _optional(rf, ctx, col, "bulk_density", BD_RANGE_G_CM3, upper_open=False)
    cf = _optional(rf, ctx, col, "coarse_fragments", (0.0, 100.0), upper_open=True)
    px, py, lon, lat = _positions(rf, ctx, col)
    gps = _gps(rf, ctx, col)

    ok = ~col.failed
    idx = np.flatnonzero(ok)
    method = _text(rf, "method").to_numpy()[idx]
    conv = conversion[idx]
    method = np.array([m if not c else (c if not m else f"{m}; {c}") for m, c in zip(method, conv, strict=True)], dtype=object)
    site = _text(rf, "site_id").to_numpy()[idx]
    sid = sample_id.to_numpy()[idx]
    submitter = _text(rf, "submitter").to_numpy()[idx]
    field_id = _text(rf, "field_id").to_numpy()[idx]
    records = pd.DataFrame(
        {
            "row": rf["_line"].to_numpy()[idx],
            "sample_id": sid,
            "site_id": np.where(site == "", sid, site),
            "source": ctx.source,
            "submitter": np.where(submitter == "", ctx.submitter, submitter),
            "field_id": pd.Series(field_id, dtype=object).where(field_id != "", None).to_numpy(),
            "x": px[idx],
            "y": py[idx],
            "crs": ctx.project_crs,
            "lon": lon[idx],
            "lat": lat[idx],
            "sampling_date": np.datetime_as_string(date[idx], unit="D").astype(object),
            "top_cm": top[idx],
            "bottom_cm": bottom[idx],
            "soc_g_kg": soc[idx],
            "bulk_density_g_cm3": bd[idx],
            "coarse_fragments_vol_pct": cf[idx],
            "method": method,
            "soc_sd_g_kg": soc_sd[idx],
            "gps_accuracy_m": gps[idx],
        },
        index=idx,
    )
    empty = pd.DataFrame(columns=["pos", "line", "column", "value", "reason", "code"])
    failures = pd.concat(col.parts, ignore_index=True) if col.parts else empty
    notes = pd.concat(col.notes, ignore_index=True) if col.notes else empty
    if len(notes):
        notes = notes[ok[notes["pos"].to_numpy(dtype=np.int64)]]
    assert len(records) + len(failures) == n
    return Outcome(records, failures, notes)


def _dates(rf: pd.DataFrame, ctx: Context, col: _Collector) -> np.ndarray:
    """Sampling dates as ``datetime64[D]`` (NaT where the row failed)."""
    fmt = ctx.fmt
    n = len(rf)
    today = np.datetime64(ctx.today.isoformat(), "D")
    if "sampling_date" in fmt.constants and "sampling_date" not in rf.columns:
        value = fmt.constants["sampling_date"]
        out = np.full(n, np.datetime64(value.isoformat(), "D"))
        if value > ctx.today:
            col.fail(np.ones(n, bool), "sampling_date", value.isoformat(), "sampling date is in the future", "future_date")
        return out
    text = _text(rf, "sampling_date")
    col.fail(text == "", "sampling_date", text, _missing_reason(rf, col, "sampling_date"), "missing_value")
    parsed = cells.parse_dates(text, fmt.formats)
    col.fail(parsed.bad, "sampling_date", text, f"date must be written {fmt.date_pattern}", "bad_date")
    col.fail(parsed.implausible, "sampling_date", text,
             f"date is before {cells.MIN_DATE.isoformat()}; check the year", "implausible_date")  # fmt: skip
    values = parsed.values
    future = ~np.isnat(values) & (values > today)
    col.fail(future, "sampling_date", text, "sampling date is in the future", "future_date")
    return values


def _fmt_g(values: np.ndarray) -> Callable[[np.ndarray], list[str]]:
    return lambda pos: [f"{values[i]:g}" for i in pos]


def _depths(rf: pd.DataFrame, ctx: Context, col: _Collector) -> tuple[np.ndarray, np.ndarray]:
    fmt = ctx.fmt
    n = len(rf)
    factor = fmt.depth_factor_cm
    if "depth" in rf.columns:
        text = rf["depth"]
        col.fail(text == "", "depth", text, _missing_reason(rf, col, "depth"), "missing_value")
        ranges = cells.parse_depth_ranges(text, ctx.decimal)
        col.fail(ranges.bad, "depth", text, _quoted("'{v}' is not a depth range such as 0-30 or 0–20 cm", text), "bad_depth")
        unit_factor = ranges.unit.map(DEPTH_UNITS).fillna(factor).to_numpy(dtype=float)
        top = ranges.top.to_numpy(dtype=float) * unit_factor
        bottom = ranges.bottom.to_numpy(dtype=float) * unit_factor
        roles = ("depth", "depth")
    else:
        values = []
        for role in ("top", "bottom"):
            if role in fmt.constants and role not in rf.columns:
                values.append(np.full(n, fmt.constants[role] * factor))
                continue
            text = _text(rf, role)
            col.fail(text == "", role, text, _missing_reason(rf, col, role), "missing_value")
            num = cells.parse_numbers(text, ctx.decimal)
            col.fail(num.bad, role, text, _quoted("'{v}' is not a number", text), "not_a_number")
            values.append(num.values.to_numpy(dtype=float) * factor)
        top, bottom = values
        roles = ("top", "bottom")
    with np.errstate(invalid="ignore"):
        col.fail(top < 0, roles[0], _fmt_g(top), "top depth must be 0 or more", "bad_depth")
        col.fail(
            ~(bottom > top) & np.isfinite(top) & np.isfinite(bottom), roles[1], _fmt_g(bottom),
            lambda pos: [f"bottom depth {bottom[i]:g} cm is not below top depth {top[i]:g} cm" for i in pos], "bad_depth",
        )  # fmt: skip
        col.fail(bottom > MAX_DEPTH_CM, roles[1], _fmt_g(bottom),
                 lambda pos: [f"bottom depth {bottom[i]:g} cm is deeper than {MAX_DEPTH_CM:g} cm" for i in pos], "bad_depth")
    return top, bottom


def _unit_factors(rf: pd.DataFrame, ctx: Context, col: _Collector, role: str, present: pd.Series) -> np.ndarray:
    """Per-row factor to the canonical unit of ``role`` (``_unit:<role>``, a unit column, or the profile's unit)."""
    fmt = ctx.fmt
    table = UNIT_FACTORS[role]
    default = {"soc": fmt.soc_unit, "som": fmt.som_unit}.get(role, _DEFAULT_UNITS.get(role, ""))
    key = f"_unit:{role}"
    if key in rf.columns:
        codes = rf[key].fillna(default).replace("", default)
        return codes.map(table).fillna(np.nan).to_numpy(dtype=float)
    if role in fmt.unit_columns and f"_unittext:{role}" in rf.columns:
        spec = fmt.unit_columns[role]
        text = rf[f"_unittext:{role}"].str.split().str.join(" ").fillna("")
        codes = text.map(spec.units)
        known = ", ".join(repr(u) for u in spec.units)
        bad = present & codes.isna()
        col.fail(bad, role, text, _quoted("unit '{v}' is not known for " + _LABELS[role] + f" (column '{spec.column}'); use one of {known}", text), "unknown_unit")
        return codes.map(table).to_numpy(dtype=float)
    return np.full(len(rf), table[default])


def _soc(rf: pd.DataFrame, ctx: Context, col: _Collector) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SOC (g/kg), the SD a conversion or detection limit added (NaN if none) and the conversion note.

    Measured SOC wins; otherwise SOM (e.g. loss on ignition) is converted with
    :func:`~mrv.samples.stocks.som_to_soc`: ``SOC = 0.58 x SOM`` (van Bemmelen factor), with the
    SD ``0.08 x SOM`` for the uncertain carbon fraction of organic matter (Pribyl 2010,
    Geoderma 156:75-83).
    """
    fmt = ctx.fmt
    n = len(rf)
    soc_text, som_text = _text(rf, "soc"), _text(rf, "som")
    use_soc = (soc_text != "").to_numpy()
    use_som = ~use_soc & (som_text != "").to_numpy()
    neither = ~use_soc & ~use_som
    missing_role = "som" if ("som" in fmt.columns and "soc" not in fmt.columns) else "soc"
    col.fail(neither, missing_role, "", _missing_reason(rf, col, missing_role), "missing_value")
    out = np.full(n, np.nan)
    sd = np.full(n, np.nan)
    note = np.full(n, "", dtype=object)
    for role, use, cap in (("soc", use_soc, SOC_MAX_G_KG), ("som", use_som, SOM_MAX_G_KG)):
        if not use.any():
            continue
        text = soc_text if role == "soc" else som_text
        value, value_sd = _measured(rf, ctx, col, role, text, pd.Series(use, index=rf.index))
        label = "SOC" if role == "soc" else "organic matter"
        with np.errstate(invalid="ignore"):
            col.fail(use & ~(value > 0), role, text, f"{label} must be greater than 0", "implausible_value")
            col.fail(use & (value > cap), role, text, _impossible(value, label, cap), "implausible_value")
        if role == "soc":
            out[use] = value[use]
            sd[use] = value_sd[use]
        else:
            out[use] = VAN_BEMMELEN_FACTOR * value[use]
            conv_sd = VAN_BEMMELEN_FACTOR_SD * value[use]
            extra = np.nan_to_num(value_sd[use] * VAN_BEMMELEN_FACTOR)
            sd[use] = np.sqrt(conv_sd**2 + extra**2)
            note[use] = f"SOC = {VAN_BEMMELEN_FACTOR:g} x organic matter (van Bemmelen)"
    return out, sd, note


def _impossible(value: np.ndarray, label: str, cap: float) -> Callable[[np.ndarray], list[str]]:
    return lambda pos: [f"{label} of {value[i]:g} g/kg is impossible (max {cap:g} g/kg)" for i in pos]


def _measured(
    rf: pd.DataFrame, ctx: Context, col: _Collector, role: str, text: pd.Series, present: pd.Series
) -> tuple[np.ndarray, np.ndarray]:
    """A measured value in its canonical unit, with the detection-limit policy applied (SD NaN unless ``<L``)."""
    fmt = ctx.fmt
    parsed = cells.parse_measured(text.where(present, ""), ctx.decimal)
    col.fail(parsed.bad & present, role, text, _quoted("'{v}' is not a number", text), "not_a_number")
    factor = _unit_factors(rf, ctx, col, role, present)
    value = parsed.values.to_numpy(dtype=float) * factor
    sd = np.full(len(rf), np.nan)
    col.fail(parsed.above & present, role, text, _quoted("'{v}' is above the measuring range; give the measured value", text), "above_range")
    below = (parsed.below & present).to_numpy()
    if below.any():
        if fmt.below_detection == "reject":
            col.fail(below, role, text, _quoted("'{v}' is below the detection limit (the profile's below_detection is 'reject')", text), "below_detection")
        else:
            limit = value[below]
            sd[below] = limit * UNIFORM_SD_FACTOR
            if fmt.below_detection == "half_limit":
                value[below] = limit / 2.0
            how = "half the limit" if fmt.below_detection == "half_limit" else "the limit"
            col.note(below, role, text, _quoted("'{v}' is below the detection limit; " + how + " is used (SD L/sqrt(12))", text), "below_detection")
    return value, sd


def _optional(
    rf: pd.DataFrame, ctx: Context, col: _Collector, role: str, bounds: tuple[float, float], *, upper_open: bool
) -> np.ndarray:
    """Bulk density or coarse fragments: missing stays NaN; unreadable or implausible becomes NaN with a note."""
    text = _text(rf, role)
    present = text != ""
    out = np.full(len(rf), np.nan)
    if not present.any():
        return out
    parsed = cells.parse_measured(text.where(present, ""), ctx.decimal)
    label = _LABELS[role]
    bad = (parsed.bad | parsed.above) & present
    col.note(bad, role, text, _quoted(f"{label} '{{v}}' is not a number; stored as missing, the sample is kept", text), f"{role}_unreadable")
    factor = _unit_factors(rf, ctx, col, role, present & ~bad)
    value = parsed.values.to_numpy(dtype=float) * factor
    below = (parsed.below & present).to_numpy()
    if below.any() and ctx.fmt.below_detection != "reject":
        if ctx.fmt.below_detection == "half_limit":
            value[below] = value[below] / 2.0
        col.note(below, role, text, _quoted(f"{label} '{{v}}' is below the detection limit; " + ("half the limit" if ctx.fmt.below_detection == "half_limit" else "the limit") + " is used", text), "below_detection")
    elif below.any():
        value[below] = np.nan
        col.note(below, role, text, _quoted(f"{label} '{{v}}' is below the detection limit; stored as missing", text), "below_detection")
    lo, hi = bounds
    unit = "g/cm3" if role == "bulk_density" else "volume %"
    with np.errstate(invalid="ignore"):
        outside = np.isfinite(value) & ((value < lo) | ((value >= hi) if upper_open else (value > hi)))
    rng = f"{lo:g}-{hi:g} {unit}" if not upper_open else f"{lo:g} to under {hi:g} {unit}"
    col.note(outside, role, text, lambda pos: [f"{label} {value[i]:g} {unit} is outside {rng}; stored as missing, the sample is kept" for i in pos], f"{role}_implausible")
    value[outside] = np.nan
    return value


def _positions(rf: pd.DataFrame, ctx: Context, col: _Collector) -> tuple[np.ndarray, ...]:
    fmt = ctx.fmt
    n = len(rf)
    epsg = np.full(n, np.nan)
    if "epsg" in rf.columns:
        text = rf["epsg"]
        col.fail(text == "", "epsg", text, _missing_reason(rf, col, "epsg"), "missing_value")
        code = cells.parse_epsg(text)
        col.fail(code.bad, "epsg", text, _quoted("'{v}' is not an EPSG code like 32633", text), "bad_epsg")
        epsg = code.values.to_numpy(dtype=float)
    elif "epsg" in fmt.constants or fmt.epsg is not None:
        epsg[:] = fmt.constants.get("epsg", fmt.epsg)

    lon = np.full(n, np.nan)
    lat = np.full(n, np.nan)
    if "geometry" in rf.columns:
        role_xy = "geometry"
        text = rf["geometry"]
        col.fail(text == "", "geometry", text, _missing_reason(rf, col, "geometry"), "missing_value")
        pts = cells.parse_points(text)
        col.fail(pts.bad, "geometry", text, _quoted("'{v}' is not a WKT or GeoJSON point", text), "bad_geometry")
        srid = pts.epsg.to_numpy(dtype=float)
        clash = np.isfinite(srid) & np.isfinite(epsg) & (srid != epsg)
        col.fail(clash, "geometry", text, "the SRID of the geometry differs from the row's EPSG code", "bad_epsg")
        epsg = np.where(np.isfinite(epsg), epsg, srid)
        x, y = pts.x.to_numpy(dtype=float), pts.y.to_numpy(dtype=float)
    else:
        geographic = "lon" in rf.columns or ("lon" in fmt.columns and "x" not in fmt.columns)
        names = ("lon", "lat") if geographic else ("x", "y")
        role_xy = names[0]
        values = []
        for role in names:
            text = _text(rf, role)
            col.fail(text == "", role, text, _missing_reason(rf, col, role), "missing_value")
            num = cells.parse_numbers(text, ctx.decimal)
            col.fail(num.bad, role, text, _quoted("'{v}' is not a number", text), "not_a_number")
            values.append(num.values.to_numpy(dtype=float))
        x, y = values
        if geographic:
            with np.errstate(invalid="ignore"):
                col.fail(np.abs(x) > 180, "lon", _fmt_g(x), "longitude must be between -180 and 180", "bad_coordinates")
                col.fail(np.abs(y) > 90, "lat", _fmt_g(y), "latitude must be between -90 and 90", "bad_coordinates")
            lon, lat = x.copy(), y.copy()
    col.fail(~np.isfinite(epsg) & ~col.failed, "epsg", "",
             "no CRS for this position: add an epsg column, an 'epsg:' in the profile or an SRID", "missing_value")  # fmt: skip

    px = np.full(n, np.nan)
    py = np.full(n, np.nan)
    def xy_text(pos: np.ndarray) -> list[str]:
        return [f"{x[i]:g}, {y[i]:g}" for i in pos]

    live = ~col.failed
    parea, pname = project_area(ctx.project_crs)
    for code in np.unique(epsg[live & np.isfinite(epsg)]):
        rows = live & (epsg == code)
        try:
            src = source_crs(int(code), ctx.project_crs)
        except UnusableCRS as exc:
            col.fail(rows, "epsg", f"{int(code)}", str(exc), "bad_crs")
            continue
        if src.to_lonlat is not None:
            glon, glat = src.to_lonlat.transform(x[rows], y[rows], errcheck=False)
        else:
            glon, glat = x[rows], y[rows]
        glon, glat = np.asarray(glon, dtype=float), np.asarray(glat, dtype=float)
        inside = inside_area(glon, glat, src.area)
        w, s, e, nn = src.area
        bad = rows.copy()
        bad[rows] = ~inside
        col.fail(bad, role_xy, xy_text,
                 f"position lies outside the area of use of EPSG:{int(code)} ({src.name}: {w:g} to {e:g} E, {s:g} to {nn:g} N); "
                 "check the coordinates, their order and the CRS (an easting without its zone prefix?)", "outside_crs_area")  # fmt: skip
        pbad = rows & ~bad
        pbad[rows] &= ~inside_area(glon, glat, parea)
        col.fail(pbad, role_xy, xy_text,
                 f"position lies outside the area of use of the project CRS {ctx.project_crs} ({pname}: "
                 f"{parea[0]:g} to {parea[2]:g} E, {parea[1]:g} to {parea[3]:g} N); it cannot be placed in the project", "outside_crs_area")
        tx, ty = src.to_project.transform(x[rows], y[rows], errcheck=False)
        px[rows], py[rows] = tx, ty
        unplaced = rows & ~(np.isfinite(px) & np.isfinite(py))
        col.fail(unplaced, role_xy, xy_text, f"coordinates cannot be placed in EPSG:{int(code)}", "bad_coordinates")
    if ctx.region_bounds is not None:
        b = ctx.region_bounds
        with np.errstate(invalid="ignore"):
            outside = ~((px >= b[0]) & (px <= b[2]) & (py >= b[1]) & (py <= b[3]))
        col.fail(outside, role_xy, xy_text, "point lies outside the project region", "outside_region")
    geographic_file = "lon" in rf.columns
    return px, py, (lon if geographic_file else np.full(n, np.nan)), (lat if geographic_file else np.full(n, np.nan))


def _gps(rf: pd.DataFrame, ctx: Context, col: _Collector) -> np.ndarray:
    text = _text(rf, "gps_accuracy")
    num = cells.parse_numbers(text, ctx.decimal)
    col.fail(num.bad, "gps_accuracy", text, _quoted("'{v}' is not a number", text), "not_a_number")
    v = num.values.to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        col.fail((v < 0) | (v > GPS_ACCURACY_MAX_M), "gps_accuracy", text,
                 f"GPS accuracy must be between 0 and {GPS_ACCURACY_MAX_M:g} m", "implausible_value")  # fmt: skip
    return np.where(v > 0, v, np.nan)  # 0 = no estimate (Android)
