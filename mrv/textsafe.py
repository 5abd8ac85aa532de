"""User text made safe for the places it ends up: spreadsheet cells, terminals, file names.

* **CSV cells.** A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is
  read as a formula by Excel, LibreOffice and Google Sheets (OWASP, "CSV Injection"). Such cells
  are prefixed with a single quote, which spreadsheets show as text. Numbers are never touched,
  so a negative number written as a number stays a number; only *text* cells are neutralised.
* **Terminal output.** Control characters (C0, DEL, C1, including ESC and newlines) inside user
  text are shown as ``\\x1b``-style escapes, so a sample id cannot move the cursor, recolour the
  screen or forge a second output line.
* **Path components.** Round, field and run names become directory and file names; they must be a
  single, plain component (no separators, no ``..``, no control characters).
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

__all__ = [
    "for_terminal",
    "for_terminal_lines",
    "FORMULA_PREFIXES",
    "is_safe_component",
    "neutralise_cell",
    "neutralise_frame",
    "write_csv",
]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def neutralise_cell(value: Any) -> Any:
    """``value`` with a leading ``'`` when it is text a spreadsheet would run as a formula.

    Line breaks inside text are written as ``\x0d``/``\x0a`` escapes: pandas does not quote a bare
    carriage return, which would split the row for every reader.
    """
    if not isinstance(value, str):
        return value
    if value.startswith(FORMULA_PREFIXES):
        value = "'" + value
    return value.replace("\r", "\\x0d").replace("\n", "\\x0a")


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells (and column names) are neutralised for spreadsheets."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(neutralise_cell)
    out.columns = [neutralise_cell(c) for c in out.columns]
    return out


def write_csv(frame: pd.DataFrame, path: Any, **kwargs: Any) -> None:
    """``frame.to_csv(path, index=False)`` with every text cell neutralised (the one CSV writer)."""
    kwargs.setdefault("index", False)
    neutralise_frame(frame).to_csv(path, **kwargs)


def for_terminal(text: Any) -> str:
    """``str(text)`` with control characters shown as escapes (``\\n`` -> ``\\x0a``)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def for_terminal_lines(text: Any) -> str:
    """Like :func:`for_terminal`, but keeps line breaks (multi-line messages of this package)."""
    return "\n".join(for_terminal(line) for line in str(text).split("\n"))


def is_safe_component(name: str) -> bool:
    """True when ``name`` can be used as one file or directory name inside a run directory."""
    return bool(_SAFE_COMPONENT.match(name)) and name not in (".", "..")
