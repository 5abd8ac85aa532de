"""Bounded, streaming reading of a submitted CSV into chunks of text cells with their file line numbers.

* Only regular files are read (``os.stat`` before opening: FIFOs, devices such as ``/dev/zero``
  and directories are refused) and only up to a maximum size (:data:`DEFAULT_MAX_BYTES`,
  configurable per call); the size is checked again while reading, in case the file grows.
* The encoding is found in one streaming pass (UTF-8 with or without BOM, else the profile's
  fallback, Latin-1 by default); then the file is read record by record with :mod:`csv` and
  handed on in chunks of :data:`CHUNK_ROWS` rows, so memory follows the chunk, not the file.
* ``\\n``, ``\\r\\n`` and old spreadsheet exports' CR-only line ends, also mixed, are all line ends
  (``open(newline="")`` hands the csv module every line end unchanged).
* Line numbers are physical lines of the file (the header is line 1); a quoted cell spanning
  lines keeps the line its record starts on.
* Cells holding control characters (C0, DEL, C1: NUL, ESC, a newline inside a quoted cell, ...)
  are found per row anywhere in the file; the caller rejects those rows.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mrv.errors import SubmissionRejected

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Chunk",
    "Malformed",
    "Table",
    "check_regular_file",
    "detect_encoding",
    "irregular_kind",
    "iter_chunks",
    "looks_binary",
    "open_table",
]

#: Largest submission read by default (bytes); 200,000 rows of a wide lab file are about 25 MB.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: Rows per chunk handed to the validation.
CHUNK_ROWS = 50_000
#: Leading bytes inspected for binary content (a spreadsheet or archive instead of a CSV).
SNIFF_BYTES = 4096
_READ_BLOCK = 1 << 20
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f-\x9f]"
_CONTROL = re.compile(CONTROL_CHARACTERS)
_SEP = "\x1f"
_CONTROL_NO_SEP = re.compile(r"[\x00-\x1e\x7f-\x9f]")
_EDGE_SPACE = re.compile(r"(?:^|\x1f)\s|\s(?:\x1f|$)")


def irregular_kind(mode: int) -> str | None:
    """What a ``st_mode`` that is not a regular file is (``a directory``, ``a named pipe (FIFO)``...), else None."""
    if stat.S_ISREG(mode):
        return None
    return (
        "a directory" if stat.S_ISDIR(mode)
        else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
        else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket" if stat.S_ISSOCK(mode)
        else "not a regular file"
    )  # fmt: skip


def check_regular_file(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """Size of ``path`` in bytes after checking it is a regular file no larger than ``max_bytes``."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SubmissionRejected(f"Cannot read {path}: {exc.strerror}. Check the file name and path.") from exc
    kind = irregular_kind(st.st_mode)
    if kind is not None:
        raise SubmissionRejected(f"{path} is {kind}, not a regular file. Submit a CSV file saved on disk.")
    if st.st_size > max_bytes:
        raise SubmissionRejected(
            f"{path} is {st.st_size:,} bytes, more than the limit of {max_bytes:,} bytes. Split the file "
            "into smaller submissions, or raise the limit (max_bytes) if the file is really this large."
        )
    return int(st.st_size)


#: Leading bytes of files that are not CSV text: zip (xlsx, ods), OLE2 (xls), PDF, gzip.
BINARY_SIGNATURES = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0", b"%PDF", b"\x1f\x8b")


def looks_binary(head: bytes) -> bool:
    """A spreadsheet, archive or binary dump rather than CSV text: a known signature, a NUL in the header
    line, or more NUL bytes than 8 and 1 % of the first bytes. A stray NUL in a data row is not
    binary: that row is rejected on its own."""
    if head.startswith(BINARY_SIGNATURES):
        return True
    first_line = head.split(b"\n", 1)[0].split(b"\r", 1)[0]
    return b"\x00" in first_line or head.count(b"\x00") > max(8, len(head) // 100)


class _Scan:
    """Streams text blocks: any control character other than line ends (or a quote, which may hide a line
    break inside a cell), and any cell with white space at an edge (next to a line end or a likely delimiter)."""

    _EDGE = re.compile(r"(?:^|[,;|\t\r\n])[ \t]|[ \t](?:$|[,;|\r\n])")

    def __init__(self) -> None:
        self.control = False
        self.spaces = False
        self._tail = ""

    def feed(self, block: str) -> None:
        if not self.control:
            self.control = '"' in block or _INLINE_CONTROL.search(block) is not None
        if not self.spaces:
            text = self._tail + block
            self.spaces = self._EDGE.search(text[:-1]) is not None
            self._tail = text[-1:]

    def close(self) -> None:
        if not self.spaces and self._tail in (" ", "\t"):
            self.spaces = True


def detect_encoding(path: Path, name: str, *, fallback: str, max_bytes: int) -> tuple[str, bool, bool]:
    """(encoding, needs control checks, needs stripping): ``utf-8-sig`` when the whole file is UTF-8, else
    ``fallback``; one streaming, bounded pass (two for a non-UTF-8 file)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    seen = 0
    utf8 = True
    nonblank = False
    scan = _Scan()
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
        if looks_binary(head):
            raise SubmissionRejected(
                f"{name} is not a text CSV file (it contains binary data, e.g. a spreadsheet or archive). "
                "Export it as CSV."
            )
        block = head
        while block:
            seen += len(block)
            if seen > max_bytes:
                raise SubmissionRejected(f"{name} grew beyond the limit of {max_bytes:,} bytes while being read.")
            nonblank = nonblank or bool(block.strip())
            if utf8:
                try:
                    scan.feed(decoder.decode(block))
                except UnicodeDecodeError:
                    utf8 = False
            block = fh.read(_READ_BLOCK)
        if utf8:
            try:
                scan.feed(decoder.decode(b"", final=True))
            except UnicodeDecodeError:
                utf8 = False
    if not nonblank:
        raise SubmissionRejected(f"{name} is empty. Export the samples as CSV with a header row and resubmit.")
    if utf8:
        scan.close()
        return "utf-8-sig", scan.control, scan.spaces
    scan = _Scan()
    try:
        with open(path, encoding=fallback, newline="") as fh:
            while block_text := fh.read(_READ_BLOCK):
                scan.feed(block_text)
    except UnicodeDecodeError as exc:
        raise SubmissionRejected(
            f"{name} is neither UTF-8 nor {fallback} text (byte {exc.start} cannot be read). Export it as UTF-8 CSV."
        ) from exc
    scan.close()
    return fallback, scan.control, scan.spaces


@dataclass(frozen=True)
class Chunk:
    """Well-formed rows of one chunk: ``cells`` (text, stripped, columns = header) and their file ``lines``."""

    cells: pd.DataFrame
    lines: np.ndarray
    control: pd.Series
    """True where a cell of the row holds a control character (its column in ``control_column``)."""
    control_column: pd.Series


@dataclass(frozen=True)
class Malformed:
    line: int
    cells: int
    text: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    delimiter: str
    encoding: str
    check_control: bool = True
    """False when a scan of the whole text found no control character and no quote (so no row needs a check)."""
    check_spaces: bool = True
    """False when no cell starts or ends with white space (so no cell needs stripping)."""


_INLINE_CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def open_table(
    path: Path, name: str, *, delimiter: str | None, fallback_encoding: str, max_bytes: int
) -> Table:
    """Check the file, find its encoding and delimiter and read the header (duplicate names rejected)."""
    check_regular_file(path, max_bytes=max_bytes)
    encoding, control, spaces = detect_encoding(path, name, fallback=fallback_encoding, max_bytes=max_bytes)
    with open(path, encoding=encoding, newline="") as fh:
        try:
            first = next(csv.reader(fh, delimiter=delimiter or ","), None)
        except csv.Error as exc:
            raise SubmissionRejected(f"{name} cannot be parsed as CSV: {exc}. Check quoting and resubmit.") from exc
    if first is None:
        raise SubmissionRejected(f"{name} has no header row.")
    if delimiter is None:
        with open(path, encoding=encoding, newline="") as fh:
            line = fh.readline()
        delimiter = ";" if line.count(";") > line.count(",") else ","
        with open(path, encoding=encoding, newline="") as fh:
            first = next(csv.reader(fh, delimiter=delimiter), [])
    header = [h.strip() for h in first]
    if not any(header):
        raise SubmissionRejected(f"{name} has an empty header row; the first line must name the columns.")
    _check_header(header, name)
    return Table(header, delimiter, encoding, control, spaces)


def _check_header(header: list[str], name: str) -> None:
    seen: dict[str, int] = {}
    for i, col in enumerate(header, start=1):
        if re.search(CONTROL_CHARACTERS, col):
            raise SubmissionRejected(f"{name}: header column {i} contains a control character; rename it.")
        key = col.casefold()
        if col and key in seen:
            raise SubmissionRejected(
                f"{name}: columns {seen[key]} and {i} are both named '{col}' in the header; a value could be "
                "read from either. Rename or remove one of them."
            )
        seen.setdefault(key, i)


def iter_chunks(
    path: Path, table: Table, name: str, *, rows_per_chunk: int | None = None
) -> Iterator[tuple[Chunk | None, list[Malformed]]]:
    """Chunks of well-formed rows and the malformed ones (empty line, wrong number of cells) by line."""
    rows_per_chunk = rows_per_chunk or CHUNK_ROWS
    width = len(table.header)
    check_control, check_spaces = table.check_control, table.check_spaces
    with open(path, encoding=table.encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=table.delimiter)
        try:
            next(reader)
            rows: list[list[str]] = []
            lines: list[int] = []
            bad: list[Malformed] = []
            start = reader.line_num + 1
            control_rows: list[int] = []
            for cells in reader:
                if len(cells) == width:
                    if check_control or check_spaces:
                        joined = _SEP.join(cells)
                        if check_control and (_CONTROL_NO_SEP.search(joined) or joined.count(_SEP) != width - 1):
                            control_rows.append(len(rows))
                        if check_spaces and _EDGE_SPACE.search(joined):
                            cells = [c.strip() for c in cells]
                    rows.append(cells)
                    lines.append(start)
                elif not any(c.strip() for c in cells):
                    bad.append(Malformed(start, 0, ""))
                else:
                    bad.append(Malformed(start, len(cells), table.delimiter.join(cells)[:80]))
                start = reader.line_num + 1
                if len(rows) >= rows_per_chunk:
                    yield _chunk(rows, lines, table.header, control_rows), bad
                    rows, lines, bad, control_rows = [], [], [], []
        except csv.Error as exc:
            raise SubmissionRejected(
                f"{name} cannot be parsed as CSV near line {reader.line_num}: {exc}. Check quoting and resubmit."
            ) from exc
    yield (_chunk(rows, lines, table.header, control_rows) if rows else None), bad


def _chunk(rows: list[list[str]], lines: list[int], header: list[str], control_rows: list[int]) -> Chunk:
    """Cells are stripped; a row whose raw cells held a control character is marked (its first such column named)."""
    frame = pd.DataFrame(rows, columns=range(len(header)), dtype=object)
    control = np.zeros(len(rows), dtype=bool)
    control_column = np.full(len(rows), "", dtype=object)
    for i in control_rows:
        control[i] = True
        control_column[i] = next((header[j] or f"<column {j + 1}>" for j, c in enumerate(rows[i]) if _CONTROL.search(c)), "")
    control_s = pd.Series(control, index=frame.index)
    column_s = pd.Series(control_column, index=frame.index, dtype=object)
    frame.columns = pd.Index([h or f"<column {i + 1}>" for i, h in enumerate(header)])
    return Chunk(frame, np.asarray(lines, dtype=np.int64), control_s, column_s)
