"""Strict, vectorised parsing of the text cells of a sample file (numbers, dates, depth ranges, points).

Every parser takes a pandas Series of stripped text (``""`` = missing) and returns the parsed
values with NaN / NaT where a cell is missing or cannot be read, plus a boolean mask of the cells
that were present but unreadable, so that callers can reject exactly those rows with a reason.

Strictness (issue 16.3): only ASCII decimal numbers in the profile's decimal mark are numbers
(``1_5``, Arabic-Indic ``١٥`` and full-width ``１５`` digits are not, although Python's ``float``
reads all three as 15); dates must match a format over the whole cell (``2024-02-29garbage`` is not
a date) and lie between :data:`MIN_DATE` and the day of ingest; EPSG codes are whole numbers.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Earliest plausible sampling date. Soil survey laboratory data start in the early 20th century;
#: an earlier year is a typo (``0001-01-01``, ``1021`` for ``2021``) or a placeholder.
MIN_DATE = dt.date(1900, 1, 1)

#: Excel's 1900 date system: serial 1 is 1900-01-01 and serial 60 the non-existent 1900-02-29
#: (kept for Lotus 1-2-3 compatibility), so from serial 61 (1900-03-01) on the day is
#: 1899-12-30 + serial (Microsoft, "Differences between the 1900 and the 1904 date system in Excel").
EXCEL_EPOCH = dt.date(1899, 12, 30)
EXCEL_MIN_SERIAL = 61
EXCEL_MAX_SERIAL = 2_958_465  # 9999-12-31
EXCEL = "excel"
"""Token in ``date_format`` for Excel serial day numbers (``44927`` = 2023-01-01)."""


def number_pattern(decimal: str) -> re.Pattern[str]:
    """ASCII decimal number with ``decimal`` as the decimal mark, optional sign and exponent."""
    d = re.escape(decimal)
    return re.compile(rf"[+-]?(?:[0-9]+(?:{d}[0-9]*)?|{d}[0-9]+)(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Parsed:
    """Result of a vectorised parse: ``values`` (NaN where missing or bad) and ``bad`` (present but unreadable)."""

    values: pd.Series
    bad: pd.Series


def parse_numbers(text: pd.Series, decimal: str) -> Parsed:
    """Strict ASCII numbers; ``bad`` marks non-empty cells that are not one (or not finite)."""
    present = text != ""
    ok = text.str.fullmatch(number_pattern(decimal)).fillna(False).astype(bool) & present
    values = pd.Series(np.nan, index=text.index, dtype=float)
    if ok.any():
        sub = text[ok]
        if decimal == ",":
            sub = sub.str.replace(",", ".", regex=False)
        with np.errstate(over="ignore"):
            values[ok] = sub.astype(float).to_numpy()
    finite = np.isfinite(values.to_numpy())
    ok &= finite
    values[~ok] = np.nan
    return Parsed(values, present & ~ok)


@dataclass(frozen=True)
class Measured:
    """Measured values with detection limits: ``values`` in the file's unit; ``below`` marks ``<L`` cells
    (``values`` holds L there, before the policy is applied); ``above`` marks ``>L`` cells."""

    values: pd.Series
    bad: pd.Series
    below: pd.Series
    above: pd.Series


_LIMIT = re.compile(r"^\s*([<>])\s*(.*)$")


def parse_measured(text: pd.Series, decimal: str) -> Measured:
    """Numbers that may carry a detection-limit prefix (``<0.1``, ``< 0,1``, ``>600``)."""
    parts = text.str.extract(_LIMIT)
    has_prefix = parts[0].notna()
    plain = text.where(~has_prefix, parts[1].fillna("").str.strip())
    parsed = parse_numbers(plain, decimal)
    below = has_prefix & (parts[0] == "<") & parsed.values.notna()
    above = has_prefix & (parts[0] == ">") & parsed.values.notna()
    bad = parsed.bad | (has_prefix & parsed.values.isna())
    return Measured(parsed.values, bad, below, above)


_TIME_SUFFIX = re.compile(r"^(.*?)(?:[ T][0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?)?$")


@dataclass(frozen=True)
class Dates:
    values: pd.Series
    """``datetime.date`` objects (None where missing or bad)."""
    bad: pd.Series
    """Non-empty cells that match none of the formats."""
    implausible: pd.Series
    """Cells that are dates but before :data:`MIN_DATE`."""


def parse_dates(text: pd.Series, formats: tuple[str, ...]) -> Dates:
    """Dates in the first of ``formats`` that reads the whole cell (a time of day may follow).

    ``formats`` are ``strptime`` patterns or :data:`EXCEL` (serial day numbers). Non-ASCII cells are
    never dates (``strptime`` would read full-width digits).
    """
    present = text != ""
    ascii_ok = present & text.map(str.isascii, na_action="ignore").fillna(False).astype(bool)
    result = pd.Series(pd.NaT, index=text.index, dtype="datetime64[s]")
    todo = ascii_ok.copy()
    for fmt in formats:
        if not todo.any():
            break
        sub = text[todo]
        if fmt == EXCEL:
            serial = parse_numbers(sub, ".").values
            ok = serial.notna() & (serial >= EXCEL_MIN_SERIAL) & (serial <= EXCEL_MAX_SERIAL)
            days = np.floor(serial[ok].to_numpy()).astype("int64")
            base = np.datetime64(EXCEL_EPOCH.isoformat(), "D")
            result[ok[ok].index] = (base + days.astype("timedelta64[D]")).astype("datetime64[s]")
        else:
            if "%H" not in fmt:
                sub = sub.str.extract(_TIME_SUFFIX, expand=False).fillna(sub)
            parsed = pd.to_datetime(sub, format=fmt, errors="coerce")
            ok = parsed.notna()
            result[ok[ok].index] = parsed[ok].astype("datetime64[s]")
        todo &= result.isna()
    got = result.notna()
    dates = pd.Series(None, index=text.index, dtype=object)
    if got.any():
        dates[got] = [d.date() for d in result[got].dt.to_pydatetime()]
    implausible = got & (result < pd.Timestamp(MIN_DATE))
    dates[implausible] = None
    return Dates(dates, present & ~got, implausible)


_DEPTH_RANGE = r"^([0-9]+(?:{d}[0-9]+)?)\s*(?:-|‐|‑|–|—|−|to|bis)\s*([0-9]+(?:{d}[0-9]+)?)\s*(cm|mm|m)?$"


@dataclass(frozen=True)
class DepthRanges:
    top: pd.Series
    bottom: pd.Series
    unit: pd.Series
    """Unit written in the cell (``cm``, ``mm``, ``m``) or ``""`` for the profile's ``depth_unit``."""
    bad: pd.Series


def parse_depth_ranges(text: pd.Series, decimal: str) -> DepthRanges:
    """``"0-30"``, ``"0–20 cm"`` (en dash), ``"30 - 60cm"``, ``"0,5-1 m"`` -> top, bottom (in the cell's unit)."""
    present = text != ""
    parts = text.str.extract(re.compile(_DEPTH_RANGE.format(d=re.escape(decimal)), re.IGNORECASE))
    ok = parts[0].notna() & present
    top = parse_numbers(parts[0].fillna(""), decimal).values.where(ok)
    bottom = parse_numbers(parts[1].fillna(""), decimal).values.where(ok)
    unit = parts[2].fillna("").str.lower()
    return DepthRanges(top, bottom, unit, present & ~ok)


_EPSG = re.compile(r"(?:EPSG:)?([0-9]{4,6})", re.IGNORECASE)


def parse_epsg(text: pd.Series) -> Parsed:
    """EPSG codes written ``32633`` or ``EPSG:32633``; ``32633.9`` or ``3.2633e4`` are not codes."""
    present = text != ""
    code = text.str.fullmatch(_EPSG).fillna(False).astype(bool) & present
    values = pd.Series(np.nan, index=text.index, dtype=float)
    if code.any():
        values[code] = text[code].str.extract(_EPSG, expand=False).astype(float).to_numpy()
    return Parsed(values, present & ~code)


_NUM = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_WKT_POINT = re.compile(rf"^(?:SRID=([0-9]{{4,6}});)?\s*POINT\s*(?:Z\s*|M\s*|ZM\s*)?\(\s*({_NUM})\s+({_NUM})(?:\s+{_NUM}){{0,2}}\s*\)$", re.IGNORECASE)
_GEOJSON_POINT = re.compile(
    rf'^\{{\s*"type"\s*:\s*"Point"\s*,\s*"coordinates"\s*:\s*\[\s*({_NUM})\s*,\s*({_NUM})(?:\s*,\s*{_NUM})?\s*\]\s*\}}$'
)
_GEOJSON_POINT_REV = re.compile(
    rf'^\{{\s*"coordinates"\s*:\s*\[\s*({_NUM})\s*,\s*({_NUM})(?:\s*,\s*{_NUM})?\s*\]\s*,\s*"type"\s*:\s*"Point"\s*\}}$'
)


@dataclass(frozen=True)
class Points:
    x: pd.Series
    y: pd.Series
    epsg: pd.Series
    """EPSG code of an EWKT ``SRID=...;`` prefix, NaN when the cell has none."""
    bad: pd.Series


def parse_points(text: pd.Series) -> Points:
    """Points from WKT (``POINT (x y)``, EWKT ``SRID=25832;POINT(x y)``, ``POINT Z``) or a GeoJSON Point.

    Coordinates are in axis order x (easting / longitude), y (northing / latitude), as both
    standards define them (OGC 06-103r4 Simple Features; RFC 7946 section 3.1.1). The decimal mark
    is always ``.``. Other geometry types are not sample positions and are rejected.
    """
    present = text != ""
    wkt = text.str.extract(_WKT_POINT)
    gj = text.str.extract(_GEOJSON_POINT)
    gj2 = text.str.extract(_GEOJSON_POINT_REV)
    xs = wkt[1].fillna(gj[0]).fillna(gj2[0])
    ys = wkt[2].fillna(gj[1]).fillna(gj2[1])
    ok = xs.notna() & present
    x = parse_numbers(xs.fillna(""), ".").values
    y = parse_numbers(ys.fillna(""), ".").values
    ok &= x.notna() & y.notna()
    epsg = pd.to_numeric(wkt[0], errors="coerce").astype(float)
    return Points(x.where(ok), y.where(ok), epsg.where(ok), present & ~ok)


def is_missing(text: pd.Series, codes: frozenset[str]) -> pd.Series:
    """Cells equal (ignoring case) to one of the profile's missing-value codes; ``codes`` are casefolded."""
    if not codes:
        return text == ""
    return text.str.casefold().isin(codes) | (text == "")


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
