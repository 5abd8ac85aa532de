"""Strict, vectorised parsing of the text cells of a sample file (numbers, dates, depth ranges, points).

Every parser takes a pandas Series of stripped text (``""`` = missing) and returns the parsed
values with NaN / NaT where a cell is missing or cannot be read, plus a boolean mask of the cells
that were present but unreadable, so that callers can reject exactly those rows with a reason.

Strictness (issue 16.3): only ASCII decimal numbers in the format profile's decimal mark are numbers
(``1_5``, Arabic-Indic ``١٥`` and full-width ``１５`` digits are not, although Python's ``float``
reads all three as 15); dates must match a format over the whole cell (``2024-02-29garbage`` is not
a date) and lie between :data:`MIN_DATE` and the day of ingest; EPSG codes are whole numbers.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "Dates",
    "DepthRanges",
    "Measured",
    "Parsed",
    "Points",
    "is_missing",
    "missing_variants",
    "number_pattern",
    "parse_dates",
    "parse_depth_ranges",
    "parse_epsg",
    "parse_measured",
    "parse_numbers",
    "parse_points",
]

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


def _objects(text: pd.Series) -> np.ndarray:
    return np.asarray(text, dtype=object)


def _mask(flags: object, n: int) -> np.ndarray:
    return np.fromiter(flags, dtype=bool, count=n)  # type: ignore[call-overload]


_SEP = "\x1f"


def _fast_numbers(a: np.ndarray, decimal: str) -> np.ndarray | None:
    """All non-empty cells at once when every one is a plain number (the common case), else None.

    One C-level pass: the cells joined must hold only digits, signs, exponent marks and the
    decimal mark, and every cell must match the strict pattern's shape as ``float`` reads it.
    """
    joined = _SEP.join(a)
    allowed = _FAST_CHARS[decimal]
    if allowed.fullmatch(joined) is None:
        return None
    if decimal == ",":
        joined = joined.replace(",", ".")
    parts = joined.split(_SEP)
    if len(parts) != len(a):
        return None
    try:
        with np.errstate(over="ignore"):
            return np.array(parts, dtype=object).astype(float)
    except (ValueError, OverflowError):
        return None


_FAST_CHARS = {
    ".": re.compile(r"(?:[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?(?:\x1f|$))*"),
    ",": re.compile(r"(?:[+-]?(?:[0-9]+(?:,[0-9]*)?|,[0-9]+)(?:[eE][+-]?[0-9]+)?(?:\x1f|$))*"),
}


def _numbers(a: np.ndarray, decimal: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, bad) of an object array of stripped texts; ``""`` is missing, not bad."""
    n = len(a)
    present = a != ""
    if present.all() and n:
        fast = _fast_numbers(a, decimal)
        if fast is not None:
            ok = np.isfinite(fast)
            return np.where(ok, fast, np.nan), ~ok
    match = number_pattern(decimal).fullmatch
    ok = _mask((v != "" and match(v) is not None for v in a), n)
    values = np.full(n, np.nan)
    if ok.any():
        sub = a[ok]
        if decimal == ",":
            sub = np.array([v.replace(",", ".") for v in sub], dtype=object)
        with np.errstate(over="ignore"):
            values[ok] = sub.astype(float)
    ok &= np.isfinite(values)
    values[~ok] = np.nan
    present = a != ""
    return values, present & ~ok


def parse_numbers(text: pd.Series, decimal: str) -> Parsed:
    """Strict ASCII numbers; ``bad`` marks non-empty cells that are not one (or not finite)."""
    values, bad = _numbers(_objects(text), decimal)
    return Parsed(pd.Series(values, index=text.index), pd.Series(bad, index=text.index))


@dataclass(frozen=True)
class Measured:
    """Measured values with detection limits: ``values`` in the file's unit; ``below`` marks ``<L`` cells
    (``values`` holds L there, before the policy is applied); ``above`` marks ``>L`` cells."""

    values: pd.Series
    bad: pd.Series
    below: pd.Series
    above: pd.Series


def parse_measured(text: pd.Series, decimal: str) -> Measured:
    """Numbers that may carry a detection-limit prefix (``<0.1``, ``< 0,1``, ``>600``)."""
    a = _objects(text)
    joined = _SEP.join(a)
    if "<" in joined or ">" in joined:
        first = np.array([v[:1] for v in a], dtype=object)
        lt, gt = first == "<", first == ">"
    else:
        lt = gt = np.zeros(len(a), dtype=bool)
    prefixed = lt | gt
    if prefixed.any():
        a = a.copy()
        a[prefixed] = np.array([v[1:].strip() for v in a[prefixed]], dtype=object)
    values, bad = _numbers(a, decimal)
    got = np.isfinite(values)
    bad = bad | (prefixed & ~got)
    idx = text.index
    return Measured(
        pd.Series(values, index=idx), pd.Series(bad, index=idx),
        pd.Series(lt & got, index=idx), pd.Series(gt & got, index=idx),
    )  # fmt: skip


_TIME_SUFFIX = re.compile(r"^(.*?)(?:[ T][0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?)?$")


@dataclass(frozen=True)
class Dates:
    values: np.ndarray
    """``datetime64[D]`` (NaT where missing, bad or implausible)."""
    bad: pd.Series
    """Non-empty cells that match none of the formats."""
    implausible: pd.Series
    """Cells that are dates but before :data:`MIN_DATE`."""


def parse_dates(text: pd.Series, formats: tuple[str, ...]) -> Dates:
    """Dates in the first of ``formats`` that reads the whole cell (a time of day may follow).

    ``formats`` are ``strptime`` patterns or :data:`EXCEL` (serial day numbers). Non-ASCII cells are
    never dates (``strptime`` would read full-width digits).
    """
    a = _objects(text)
    n = len(a)
    present = a != ""
    result = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    todo = present & _mask((v.isascii() for v in a), n)
    for fmt in formats:
        if not todo.any():
            break
        sub = a[todo]
        if fmt == EXCEL:
            serial, _ = _numbers(sub, ".")
            ok = np.isfinite(serial) & (serial >= EXCEL_MIN_SERIAL) & (serial <= EXCEL_MAX_SERIAL)
            days = np.full(len(sub), np.datetime64("NaT"), dtype="datetime64[D]")
            days[ok] = np.datetime64(EXCEL_EPOCH.isoformat(), "D") + np.floor(serial[ok]).astype("int64")
        else:
            joined = _SEP.join(sub)
            if "%H" not in fmt and (" " in joined or "T" in joined):
                sub = np.array([_TIME_SUFFIX.match(v).group(1) for v in sub], dtype=object)  # type: ignore[union-attr]
            parsed = pd.to_datetime(pd.Series(sub, dtype=object), format=fmt, errors="coerce")
            days = parsed.to_numpy().astype("datetime64[D]")
        where = np.flatnonzero(todo)
        result[where] = days
        todo &= np.isnat(result)
    got = ~np.isnat(result)
    implausible = got & (result < np.datetime64(MIN_DATE.isoformat(), "D"))
    result[implausible] = np.datetime64("NaT")
    idx = text.index
    return Dates(result, pd.Series(present & ~got, index=idx), pd.Series(implausible, index=idx))


_DEPTH_RANGE = r"^([0-9]+(?:{d}[0-9]+)?)\s*(?:-|‐|‑|–|—|−|to|bis)\s*([0-9]+(?:{d}[0-9]+)?)\s*(cm|mm|m)?$"


@dataclass(frozen=True)
class DepthRanges:
    top: pd.Series
    bottom: pd.Series
    unit: pd.Series
    """Unit written in the cell (``cm``, ``mm``, ``m``) or ``""`` for the format profile's ``depth_unit``."""
    bad: pd.Series


def parse_depth_ranges(text: pd.Series, decimal: str) -> DepthRanges:
    """``"0-30"``, ``"0–20 cm"`` (en dash), ``"30 - 60cm"``, ``"0,5-1 m"`` -> top, bottom (in the cell's unit)."""
    a = _objects(text)
    n = len(a)
    pat = re.compile(_DEPTH_RANGE.format(d=re.escape(decimal)), re.IGNORECASE)
    matches = [pat.match(v) if v else None for v in a]
    ok = _mask((m is not None for m in matches), n)
    tops = np.array([m.group(1) if m else "" for m in matches], dtype=object)
    bottoms = np.array([m.group(2) if m else "" for m in matches], dtype=object)
    units = [(m.group(3) or "").lower() if m else "" for m in matches]
    top, _ = _numbers(tops, decimal)
    bottom, _ = _numbers(bottoms, decimal)
    idx = text.index
    return DepthRanges(
        pd.Series(np.where(ok, top, np.nan), index=idx), pd.Series(np.where(ok, bottom, np.nan), index=idx),
        pd.Series(units, index=idx, dtype=object), pd.Series((a != "") & ~ok, index=idx),
    )  # fmt: skip


_EPSG = re.compile(r"(?:EPSG:)?([0-9]{4,6})", re.IGNORECASE)


def parse_epsg(text: pd.Series) -> Parsed:
    """EPSG codes written ``32633`` or ``EPSG:32633``; ``32633.9`` or ``3.2633e4`` are not codes."""
    a = _objects(text)
    cache: dict[str, float] = {}
    values = np.empty(len(a))
    for i, v in enumerate(a):
        got = cache.get(v)
        if got is None:
            m = _EPSG.fullmatch(v) if v else None
            got = cache[v] = float(m.group(1)) if m else np.nan
        values[i] = got
    bad = (a != "") & np.isnan(values)
    return Parsed(pd.Series(values, index=text.index), pd.Series(bad, index=text.index))


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


def missing_variants(codes: tuple[str, ...]) -> frozenset[str]:
    """The codes as written, in lower and upper case and capitalised (``NA``, ``na``, ``Na``), and ``""``."""
    out = {""}
    for c in codes:
        c = c.strip()
        out |= {c, c.lower(), c.upper(), c.capitalize()}
    return frozenset(out)


def is_missing(text: pd.Series, codes: frozenset[str]) -> pd.Series:
    """Cells equal to one of ``codes`` (see :func:`missing_variants`); a hash lookup per cell, in C."""
    return pd.Series(pd.Series(np.asarray(text, dtype=object)).isin(codes | {""}).to_numpy(), index=text.index)

