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

The file is checked and read in bounded chunks (:mod:`mrv.samples.reading`), every cell parsed
strictly (:mod:`mrv.samples.cells`) and every sample validated vectorised
(:mod:`mrv.samples.records`). A file whose header lacks a column the format profile requires is
rejected whole, in one message naming each column and the format profile key that asks for it, before
any row is read. Accepted records may carry notes (``IngestResult.notes``, also joined into the
record's ``ingest_flag``): an implausible bulk density stored as missing, a value below the
detection limit, ... ``IngestResult.summary`` counts lines and samples by outcome and reason.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mrv.errors import SubmissionRejected
from mrv.samples import cells, reading
from mrv.samples.crs_checks import project_crs as check_project_crs
from mrv.samples.formats import MEASURED_ROLES, LongLayout, SampleFormat
from mrv.samples.reading import DEFAULT_MAX_BYTES, Chunk, Malformed
from mrv.samples.records import (  # noqa: F401  (re-exported: the plausibility limits live with the checks)
    BD_RANGE_G_CM3,
    GPS_ACCURACY_MAX_M,
    MAX_DEPTH_CM,
    SOC_MAX_G_KG,
    SOM_MAX_G_KG,
    Context,
    validate,
)

__all__ = [
    "CANONICAL_COLUMNS",
    "IngestPart",
    "IngestResult",
    "IngestSummary",
    "Rejection",
    "decode",
    "duplicate_ids",
    "header_problems",
    "ingest",
    "ingest_parts",
    "ingest_summary",
    "read_table",
]

#: Columns of an accepted record, all stored in the sample store (:mod:`mrv.samples.store`).
#:
#: ``soc_sd_g_kg``: SD (g/kg) that a conversion (SOM -> SOC, see :func:`mrv.samples.stocks.som_to_soc`)
#: or a detection limit added to the SOC value; NaN when SOC was measured.
#: ``coarse_fragments_vol_pct``: NaN when not measured (never 0: stone-free is not assumed here;
#: :func:`mrv.samples.sites.site_stocks` applies a stated default with its uncertainty and a flag).
#: ``gps_accuracy_m``: horizontal position accuracy the device reported (m, the radius of ~68 %
#: confidence of Android's ``Location.getAccuracy()`` / iOS ``horizontalAccuracy``); NaN when the
#: file has no such column or the cell is empty or 0 (Android reports 0 when it has no estimate).
CANONICAL_COLUMNS = [
    "row", "sample_id", "site_id", "source", "submitter", "field_id", "x", "y", "crs", "lon", "lat",
    "sampling_date", "top_cm", "bottom_cm", "soc_g_kg", "bulk_density_g_cm3", "coarse_fragments_vol_pct", "method",
    "soc_sd_g_kg", "gps_accuracy_m",
]  # fmt: skip
#: Extra column of ``IngestResult.accepted``: the notes on the record joined with "; " ("" if none).
FLAG_COLUMN = "ingest_flag"

_ROLE_LABELS = {"soc": "SOC", "som": "organic matter", "bulk_density": "bulk density", "coarse_fragments": "coarse fragments"}
_OPTIONAL_ROLES = {
    "site_id", "field_id", "submitter", "bulk_density", "coarse_fragments", "method", "soc", "som", "gps_accuracy",
}  # fmt: skip


@dataclass(frozen=True)
class Rejection:
    row: int
    column: str
    value: str
    reason: str
    code: str = ""
    """Machine-readable reason (``not_a_number``, ``outside_crs_area``, ...), counted in the summary."""
    sample_id: str = ""


@dataclass(frozen=True)
class IngestSummary:
    """Counts of one submission by outcome and by reason (issue 15.7)."""

    layout: str
    lines_submitted: int
    lines_accepted: int
    lines_rejected: int
    samples_accepted: int
    samples_rejected: int
    samples_flagged: int
    rejected_by_reason: dict[str, int]
    """Reason code -> rejected lines."""
    flagged_by_reason: dict[str, int]
    """Note code -> accepted samples carrying it."""

    def text(self) -> str:
        """One paragraph for a terminal or a log (no user text in it)."""
        head = (
            f"{self.samples_accepted} samples accepted from {self.lines_accepted} lines, "
            f"{self.samples_rejected} samples rejected ({self.lines_rejected} lines), "
            f"{self.samples_flagged} accepted samples with notes; {self.lines_submitted} lines submitted."
            if self.layout == "long"
            else f"{self.lines_submitted} rows submitted: {self.samples_accepted} accepted, "
            f"{self.lines_rejected} rejected, {self.samples_flagged} accepted with notes."
        )
        parts = [head]
        if self.rejected_by_reason:
            parts.append("Rejected by reason: " + ", ".join(f"{k} {v}" for k, v in self.rejected_by_reason.items()) + ".")
        if self.flagged_by_reason:
            parts.append("Notes by reason: " + ", ".join(f"{k} {v}" for k, v in self.flagged_by_reason.items()) + ".")
        return " ".join(parts)


@dataclass(frozen=True)
class IngestResult:
    submitted: int
    """Number of data lines in the file (header excluded)."""
    accepted: pd.DataFrame
    """``CANONICAL_COLUMNS`` + ``ingest_flag``, one row per sample; x/y in the project CRS; ``row`` = first line."""
    rejected: tuple[Rejection, ...]
    record_lines: tuple[tuple[int, ...], ...] = field(default=())
    """File lines each accepted record was built from, in ``accepted`` order (one line each in a wide file)."""
    notes: tuple[Rejection, ...] = ()
    """Notes on accepted records (``row`` = the line of the value), e.g. a bulk density stored as missing."""
    layout: str = "wide"

    @property
    def accepted_lines(self) -> int:
        """Number of data lines that went into accepted records."""
        return sum(len(lines) for lines in self.record_lines)

    def lines_by_row(self) -> dict[int, tuple[int, ...]]:
        """Record ``row`` (its first line) -> every file line the record was built from."""
        return {lines[0]: lines for lines in self.record_lines if lines}

    def rejected_frame(self) -> pd.DataFrame:
        cols = ["row", "column", "value", "reason", "code"]
        return pd.DataFrame([{c: getattr(r, c) for c in cols} for r in self.rejected], columns=cols)

    def notes_frame(self) -> pd.DataFrame:
        cols = ["row", "column", "value", "reason", "code", "sample_id"]
        return pd.DataFrame([{c: getattr(r, c) for c in cols} for r in self.notes], columns=cols)

    @property
    def summary(self) -> IngestSummary:
        accepted_ids = set(self.accepted["sample_id"].astype(str)) if len(self.accepted) else set()
        return ingest_summary(self.layout, self.submitted, self.accepted_lines, len(self.accepted), self.rejected,
                              self.notes, accepted_ids=accepted_ids)  # fmt: skip


@dataclass(frozen=True)
class IngestPart:
    """What one chunk of a file (or a whole long-layout file) gave: see :func:`ingest_parts`."""

    submitted: int
    """Data lines read."""
    accepted: pd.DataFrame
    """Like :attr:`IngestResult.accepted`; in a wide file before the file-wide duplicate-id check."""
    rejected: list[Rejection]
    notes: list[Rejection]
    record_lines: tuple[tuple[int, ...], ...] = ()
    """Long layout: the file lines of each accepted record (wide: one line each, left empty)."""


def ingest_summary(
    layout: str,
    submitted: int,
    accepted_lines: int,
    samples_accepted: int,
    rejected: tuple[Rejection, ...] | list[Rejection],
    notes: tuple[Rejection, ...] | list[Rejection],
    *,
    accepted_ids: set[str] | None = None,
) -> IngestSummary:
    """Counts by outcome and reason (:class:`IngestSummary`); ``accepted_ids`` is needed for a long layout only."""
    if layout == "long":
        ids = {r.sample_id for r in rejected if r.sample_id}
        loose = sum(1 for r in rejected if not r.sample_id and r.code != "empty_line")
        samples_rejected = len(ids - (accepted_ids or set())) + loose
    else:
        samples_rejected = sum(1 for r in rejected if r.code != "empty_line")
    flagged: Counter[str] = Counter()
    for code in {(r.sample_id, r.code) for r in notes}:
        flagged[code[1]] += 1
    return IngestSummary(
        layout=layout,
        lines_submitted=submitted,
        lines_accepted=accepted_lines,
        lines_rejected=len(rejected),
        samples_accepted=samples_accepted,
        samples_rejected=samples_rejected,
        samples_flagged=len({r.sample_id for r in notes}),
        rejected_by_reason=dict(Counter(r.code or "other" for r in rejected).most_common()),
        flagged_by_reason=dict(flagged.most_common()),
    )


# ----------------------------------------------------------------------------------- header helpers


def decode(raw: bytes, name: str, *, fallback: str = "latin-1") -> str:
    """UTF-8 (with or without BOM), else ``fallback`` (Latin-1: common in agency exports from spreadsheets)."""
    if not raw.strip():
        raise SubmissionRejected(f"{name} is empty. Export the samples as CSV with a header row and resubmit.")
    if reading.looks_binary(raw[: reading.SNIFF_BYTES]):
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
    """Header, rows and the decimal separator of an in-memory text (small files, header checks)."""
    if delimiter is None:
        first = text.splitlines()[0] if text else ""
        delimiter = ";" if first.count(";") > first.count(",") else ","
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise SubmissionRejected(f"{name} cannot be parsed as CSV: {exc}. Check quoting and resubmit.") from exc
    if not rows:
        raise SubmissionRejected(f"{name} has no header row.")
    header = [h.strip() for h in rows[0]]
    return header, rows[1:], decimal or ("," if delimiter == ";" else ".")


def header_problems(header: list[str], fmt: SampleFormat) -> list[str]:
    """Each missing column with the format profile key that asks for it (empty when the header is complete)."""
    have = set(header)
    problems = [
        f"'{col}' (columns.{role})"
        for role, col in fmt.columns.items()
        if col not in have and (role not in _OPTIONAL_ROLES or (fmt.sites is not None and role == fmt.sites.on))
    ]
    problems += [f"'{c}' (sample_id_from)" for c in fmt.sample_id_columns if c not in have]
    if fmt.long is not None:
        for key, col in (("parameter", fmt.long.parameter_column), ("value", fmt.long.value_column),
                         ("unit", fmt.long.unit_column)):  # fmt: skip
            if col not in have:
                problems.append(f"'{col}' (long.{key})")
    else:
        carbon = [(r, c) for r in ("soc", "som") if r in fmt.columns for c in (fmt.columns[r], *fmt.alternatives.get(r, ()))]
        if carbon and not any(c in have for _, c in carbon):
            problems.append(" or ".join(f"'{c}' (columns.{r})" for r, c in carbon))
        for role, spec in fmt.unit_columns.items():
            if role in fmt.columns and fmt.columns[role] in have and spec.column not in have:
                problems.append(f"'{spec.column}' (units.{role}.column)")
    return problems


def _reject_header(header: list[str], fmt: SampleFormat, name: str) -> None:
    problems = header_problems(header, fmt)
    if problems:
        shown = ", ".join(header[:30]) + (", ..." if len(header) > 30 else "")
        raise SubmissionRejected(
            f"{name} lacks column(s) {', '.join(problems)} required by sample format '{fmt.name}' (its header has: "
            f"{shown}). Rename the columns in the file or in the profile, or choose the matching --format profile; "
            "nothing was stored."
        )


# ----------------------------------------------------------------------------------- ingest


def ingest(
    path: Path,
    fmt: SampleFormat,
    *,
    source: str,
    submitter: str,
    project_crs: str,
    region_bounds: tuple[float, float, float, float] | None = None,
    today: dt.date | None = None,
    sites: Path | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> IngestResult:
    """Validate ``path`` against ``fmt``.

    Coordinates are transformed from the row's EPSG code to ``project_crs`` (checked: projected,
    2-D, metres); positions outside the CRS's area of use, or outside ``region_bounds`` (in
    ``project_crs``) are rejected. SOC is converted to g/kg; soil organic matter (SOM, loss on
    ignition) to SOC with :func:`~mrv.samples.stocks.som_to_soc` (van Bemmelen factor 0.58), the
    conversion SD kept in ``soc_sd_g_kg``. ``sites`` is the site table of a format profile with
    ``sites:`` (default: its ``sites.file`` next to ``path``). Files larger than ``max_bytes``,
    and anything that is not a regular file, are rejected whole.

    Raises:
        SubmissionRejected: the file (or its site table) cannot be used at all.
        ConfigError: ``project_crs`` is not a usable project CRS.
    """
    path = Path(path)
    table, ctx, site_frame = _prepare(path, fmt, source=source, submitter=submitter, project_crs=project_crs,
                                      region_bounds=region_bounds, today=today, sites=sites, max_bytes=max_bytes)  # fmt: skip
    if fmt.long is not None:
        return _ingest_long(path, table, fmt.long, ctx, site_frame)
    return _ingest_wide(path, table, ctx, site_frame)


def ingest_parts(
    path: Path,
    fmt: SampleFormat,
    *,
    source: str,
    submitter: str,
    project_crs: str,
    region_bounds: tuple[float, float, float, float] | None = None,
    today: dt.date | None = None,
    sites: Path | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    rows_per_chunk: int | None = None,
) -> Iterator[IngestPart]:
    """:func:`ingest` in bounded parts, for a caller that stores each part before reading the next.

    The file is checked (size, encoding, header, site table) before this returns, so a file that
    cannot be used at all raises :class:`~mrv.errors.SubmissionRejected` here, before any part.
    A wide file yields one part per ``rows_per_chunk`` lines; the caller applies the file-wide
    check of repeated sample ids (:func:`duplicate_ids`) to the records of the ids that occur more
    than once. A long file (whose lines are pivoted across the file) yields one part, complete.
    """
    path = Path(path)
    table, ctx, site_frame = _prepare(path, fmt, source=source, submitter=submitter, project_crs=project_crs,
                                      region_bounds=region_bounds, today=today, sites=sites, max_bytes=max_bytes)  # fmt: skip
    if fmt.long is not None:
        long = fmt.long

        def whole() -> Iterator[IngestPart]:
            res = _ingest_long(path, table, long, ctx, site_frame)
            yield IngestPart(res.submitted, res.accepted, list(res.rejected), list(res.notes), res.record_lines)

        return whole()
    return _wide_parts(path, table, ctx, site_frame, rows_per_chunk)


def _prepare(
    path: Path,
    fmt: SampleFormat,
    *,
    source: str,
    submitter: str,
    project_crs: str,
    region_bounds: tuple[float, float, float, float] | None,
    today: dt.date | None,
    sites: Path | None,
    max_bytes: int,
) -> tuple[reading.Table, Context, pd.DataFrame | None]:
    crs_text = str(project_crs)
    check_project_crs(crs_text)
    name = path.name
    table = reading.open_table(path, name, delimiter=fmt.delimiter, fallback_encoding=fmt.encoding or "latin-1",
                               max_bytes=max_bytes)  # fmt: skip
    _reject_header(table.header, fmt, name)
    decimal = fmt.decimal or ("," if table.delimiter == ";" else ".")
    site_frame, site_label = _site_table(fmt, path, sites, decimal, max_bytes)
    ctx = Context(fmt, crs_text, region_bounds, today or dt.date.today(), source, submitter, decimal, site_label)
    return table, ctx, site_frame


def _structural(bad: list[Malformed], chunk: Chunk | None, out: list[Rejection]) -> None:
    for m in bad:
        if m.cells == 0:
            out.append(Rejection(m.line, "", "", "empty line", "empty_line"))
        else:
            out.append(Rejection(m.line, "", m.text, f"has {m.cells} cells but the header has a different number", "cell_count"))
    if chunk is not None and chunk.control.any():
        pos = np.flatnonzero(chunk.control.to_numpy())
        for i in pos:
            out.append(
                Rejection(int(chunk.lines[i]), str(chunk.control_column.iloc[i]), "",
                          "a cell contains a control character (NUL, escape, tab or a line break inside a cell); "
                          "remove it and resubmit the row", "control_character")
            )  # fmt: skip


def _role_text(cells_: pd.DataFrame, column: str, missing: frozenset[str]) -> pd.Series:
    if column not in cells_.columns:
        return pd.Series("", index=cells_.index, dtype=object)
    text = cells_[column]
    return text.where(~cells.is_missing(text, missing), "")


def _wide_role_frame(chunk: Chunk, fmt: SampleFormat, site_frame: pd.DataFrame | None, ctx: Context) -> pd.DataFrame:
    keep = ~chunk.control.to_numpy()
    cells_ = chunk.cells[keep].reset_index(drop=True)
    missing = fmt.missing_codes
    rf = pd.DataFrame(index=cells_.index)
    for role, column in fmt.columns.items():
        text = _role_text(cells_, column, missing)
        alts = fmt.alternatives.get(role, ())
        if alts:
            label = pd.Series(column, index=cells_.index, dtype=object)
            for alt in alts:
                empty = text == ""
                other = _role_text(cells_, alt, missing)
                use = empty & (other != "")
                text = text.where(~use, other)
                label = label.where(~use, alt)
            rf[f"_label:{role}"] = label
        rf[role] = text
    if fmt.sample_id_columns:
        parts = [_role_text(cells_, c, missing).to_numpy() for c in fmt.sample_id_columns]
        rf["sample_id"] = ["/".join(p) if all(p) else "" for p in zip(*parts, strict=True)]
        rf["_label:sample_id"] = "+".join(fmt.sample_id_columns)
    for role, spec in fmt.unit_columns.items():
        rf[f"_unittext:{role}"] = _role_text(cells_, spec.column, frozenset())
    rf["_line"] = chunk.lines[keep]
    if site_frame is not None:
        rf = _join_sites(rf, fmt, site_frame, ctx)
    return rf


def _join_sites(rf: pd.DataFrame, fmt: SampleFormat, site_frame: pd.DataFrame, ctx: Context) -> pd.DataFrame:
    assert fmt.sites is not None
    key = rf[fmt.sites.on]
    found = key.isin(site_frame.index)
    for role in site_frame.columns:
        if role in fmt.columns:  # the sample file's own column wins
            continue
        rf[role] = key.map(site_frame[role]).where(found, "").fillna("")
    rf["_site_problem"] = np.where(
        (key != "") & ~found, "site '" + key.astype(str) + f"' is not in the site table {ctx.site_label}; add it there", ""
    )
    return rf


def _site_table(
    fmt: SampleFormat, path: Path, given: Path | None, decimal: str, max_bytes: int
) -> tuple[pd.DataFrame | None, str]:
    """The site table as text per role, indexed by its key (missing codes applied, duplicates checked)."""
    spec = fmt.sites
    if spec is None:
        if given is not None:
            raise SubmissionRejected(f"A site table was given, but sample format '{fmt.name}' has no 'sites:' block saying how to join it.")
        return None, ""
    site_path = Path(given) if given is not None else (path.parent / spec.file if spec.file else None)
    if site_path is None:
        raise SubmissionRejected(
            f"Sample format '{fmt.name}' takes positions from a site table; give it with the submission (--sites FILE)."
        )
    sname = site_path.name
    table = reading.open_table(site_path, sname, delimiter=spec.delimiter,
                               fallback_encoding=spec.encoding or fmt.encoding or "latin-1", max_bytes=max_bytes)  # fmt: skip
    need = {"key": spec.key, **{f"columns.{r}": c for r, c in spec.columns.items()}}
    absent = [f"'{c}' (sites.{k})" for k, c in need.items() if c not in table.header]
    if absent:
        raise SubmissionRejected(
            f"The site table {sname} lacks column(s) {', '.join(absent)} required by sample format '{fmt.name}' "
            f"(its header has: {', '.join(table.header[:30])}). Nothing was stored."
        )
    frames = []
    for chunk, bad in reading.iter_chunks(site_path, table, sname):
        if bad or (chunk is not None and chunk.control.any()):
            line = bad[0].line if bad else int(chunk.lines[np.flatnonzero(chunk.control.to_numpy())[0]])  # type: ignore[union-attr]
            if not (bad and all(b.cells == 0 for b in bad)):
                raise SubmissionRejected(f"The site table {sname} has an unreadable line {line} (wrong number of cells or a control character); correct it and resubmit.")
        if chunk is not None:
            frames.append(chunk.cells)
    cells_ = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=table.header)
    missing = fmt.missing_codes
    out = pd.DataFrame({role: _role_text(cells_, col, missing) for role, col in spec.columns.items()})
    site_dec = spec.decimal or ("," if table.delimiter == ";" else ".")
    if site_dec != decimal:
        for role in ("x", "y", "lon", "lat"):
            if role in out.columns:
                out[role] = out[role].str.replace(site_dec, decimal, regex=False)
    keys = _role_text(cells_, spec.key, missing)
    out.index = pd.Index(keys)
    out = out[keys.to_numpy() != ""]
    dup = out.index.duplicated(keep=False)
    if dup.any():
        clashes = out[dup].groupby(level=0).nunique()
        differing = clashes[(clashes > 1).any(axis=1)].index.tolist()
        if differing:
            raise SubmissionRejected(
                f"The site table {sname} lists site(s) {', '.join(map(str, differing[:5]))} more than once with different "
                f"values (column '{spec.key}'); keep one row per site and resubmit."
            )
        out = out[~out.index.duplicated(keep="first")]
    return out, sname


def _wide_parts(
    path: Path, table: reading.Table, ctx: Context, site_frame: pd.DataFrame | None, rows_per_chunk: int | None = None
) -> Iterator[IngestPart]:
    """One :class:`IngestPart` per chunk of the file (before the file-wide duplicate-id check)."""
    for chunk, bad in reading.iter_chunks(path, table, path.name, rows_per_chunk=rows_per_chunk):
        submitted = len(bad) + (len(chunk.lines) if chunk is not None else 0)
        rejected: list[Rejection] = []
        _structural(bad, chunk, rejected)
        if chunk is None or not (~chunk.control).any():
            yield IngestPart(submitted, _typed(pd.DataFrame(columns=CANONICAL_COLUMNS)), rejected, [])
            continue
        rf = _wide_role_frame(chunk, ctx.fmt, site_frame, ctx)
        del chunk
        out = validate(rf, ctx)
        ids = rf["sample_id"].to_numpy()
        del rf
        rejected += _rejections(out.failures, ids)
        notes = _rejections(out.notes, ids)
        records = out.records.reset_index(drop=True)
        records[FLAG_COLUMN] = _flag_text(records["row"], notes).to_numpy()
        yield IngestPart(submitted, _typed(records), rejected, notes)


def _ingest_wide(path: Path, table: reading.Table, ctx: Context, site_frame: pd.DataFrame | None) -> IngestResult:
    fmt = ctx.fmt
    rejected: list[Rejection] = []
    notes: list[Rejection] = []
    records: list[pd.DataFrame] = []
    submitted = 0
    for part in _wide_parts(path, table, ctx, site_frame):
        submitted += part.submitted
        rejected += part.rejected
        notes += part.notes
        if len(part.accepted):
            records.append(part.accepted)
    frame = pd.concat(records, ignore_index=True) if records else _typed(pd.DataFrame(columns=CANONICAL_COLUMNS))
    frame, dup_rejections = duplicate_ids(frame, fmt)
    rejected += dup_rejections
    if dup_rejections:
        gone = {r.row for r in dup_rejections}
        notes = [n for n in notes if n.row not in gone]
    frame = _typed(frame)
    return IngestResult(
        submitted=submitted,
        accepted=frame,
        rejected=tuple(sorted(rejected, key=lambda r: r.row)),
        record_lines=tuple(zip(frame["row"].tolist())),
        notes=tuple(sorted(notes, key=lambda r: r.row)),
        layout="wide",
    )


def _rejections(frame: pd.DataFrame, ids: np.ndarray) -> list[Rejection]:
    if not len(frame):
        return []
    pos = frame["pos"].to_numpy(dtype=np.int64)
    return [
        Rejection(int(line), str(column), "" if value is None else str(value), str(reason), str(code), str(sid))
        for line, column, value, reason, code, sid in zip(
            frame["line"], frame["column"], frame["value"], frame["reason"], frame["code"], ids[pos], strict=True
        )
    ]


def _flag_text(rows: pd.Series, notes: list[Rejection]) -> pd.Series:
    by_row: dict[int, list[str]] = {}
    for n in notes:
        by_row.setdefault(n.row, []).append(n.reason)
    return pd.Series(["; ".join(by_row.get(int(r), [])) for r in rows], dtype=object)


_SIGNATURE = ["site_id", "x", "y", "sampling_date", "top_cm", "bottom_cm", "soc_g_kg", "bulk_density_g_cm3",
              "coarse_fragments_vol_pct"]  # fmt: skip


def duplicate_ids(frame: pd.DataFrame, fmt: SampleFormat) -> tuple[pd.DataFrame, list[Rejection]]:
    """A sample id used twice in one file: exact repeats are dropped (the first kept), differing copies all rejected."""
    if frame.empty:
        return frame, []
    dup = frame["sample_id"].duplicated(keep=False).to_numpy()
    if not dup.any():
        return frame, []
    column = fmt.columns.get("sample_id", "+".join(fmt.sample_id_columns) or "sample_id")
    drop = np.zeros(len(frame), dtype=bool)
    out: list[Rejection] = []
    sub = frame[dup]
    for sid, grp in sub.groupby("sample_id", sort=False):
        lines = [int(r) for r in grp["row"]]
        sig = {repr(tuple(t)) for t in grp[_SIGNATURE].round(6).itertuples(index=False)}
        if len(sig) == 1:
            for line in lines[1:]:
                out.append(Rejection(line, column, str(sid), f"duplicate sample id: repeats line {lines[0]} (same values)", "duplicate_id", str(sid)))
            drop[frame.index.get_indexer(grp.index[1:])] = True
        else:
            where = ", ".join(map(str, lines))
            for line in lines:
                out.append(Rejection(line, column, str(sid), f"duplicate sample id '{sid}' on lines {where} with different values; give each sample its own id", "duplicate_id", str(sid)))
            drop[frame.index.get_indexer(grp.index)] = True
    return frame[~drop].reset_index(drop=True), out


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    cols = [*CANONICAL_COLUMNS, FLAG_COLUMN]
    for c in cols:
        if c not in frame.columns:
            frame[c] = pd.Series(dtype=object)
    frame = frame[cols].reset_index(drop=True)
    for c in ("x", "y", "lon", "lat", "top_cm", "bottom_cm", "soc_g_kg", "bulk_density_g_cm3",
              "coarse_fragments_vol_pct", "soc_sd_g_kg", "gps_accuracy_m"):  # fmt: skip
        frame[c] = frame[c].astype(float)
    frame["row"] = frame["row"].astype(np.int64)
    return frame


# ----------------------------------------------------------------------------------- long layout


@dataclass
class _Param:
    line: int
    name: str
    value: str
    number: float
    unit: str
    method: str = ""


@dataclass
class _Sample:
    sample_id: str
    cells: dict[int, None] = field(default_factory=dict)
    """Every line that belongs to the sample (parameter and ignored lines), in file order."""
    base: tuple[str, ...] = ()
    """Sample-column cells (all but the method) of the sample's first line."""
    first_method: str = ""
    conflicts: list[tuple[int, int, str]] = field(default_factory=list)
    """(line, column index, value) of each line whose sample columns differ from the first line's."""
    params: dict[str, list[_Param]] = field(default_factory=dict)
    bad: dict[str, int] = field(default_factory=dict)
    """role -> a line of this sample with that role that was rejected on its own."""
    unused: list[tuple[int, str, str]] = field(default_factory=list)
    """(line, column, reason) of lines kept with the sample but not used (a less preferred method)."""


class _LineError(Exception):
    def __init__(self, column: str, value: str, reason: str, code: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.column, self.value, self.reason, self.code, self.line = column, value, reason, code, line


def _ingest_long(
    path: Path, table: reading.Table, long: LongLayout, ctx: Context, site_frame: pd.DataFrame | None
) -> IngestResult:
    fmt = ctx.fmt
    id_col = fmt.columns["sample_id"]
    sample_cols = list(fmt.columns.values())
    missing = fmt.missing_codes
    number = cells.number_pattern(ctx.decimal)
    rejected: list[Rejection] = []
    samples: dict[str, _Sample] = {}
    submitted = 0
    method_col = fmt.columns.get("method")
    check = _check_columns(fmt)
    roles_of: dict[str, tuple[str | None, bool]] = {}
    for chunk, bad in reading.iter_chunks(path, table, path.name):
        submitted += len(bad) + (len(chunk.lines) if chunk is not None else 0)
        _structural(bad, chunk, rejected)
        if chunk is None:
            continue
        frame = chunk.cells
        keep = ~chunk.control.to_numpy()
        params = frame[long.parameter_column].to_numpy()
        values = frame[long.value_column].to_numpy()
        units = frame[long.unit_column].to_numpy()
        own = list(zip(*(frame[sample_cols[j]].tolist() for j in check), strict=True)) if check else None
        ids = frame[id_col].to_numpy()
        methods = frame[method_col].to_numpy() if method_col else None
        for i in np.flatnonzero(keep):
            line = int(chunk.lines[i])
            sid = str(ids[i])
            if sid in missing:
                rejected.append(Rejection(line, id_col, "", f"'{id_col}' is empty; fill it in", "missing_value"))
                continue
            sample = samples.setdefault(sid, _Sample(sid))
            raw_param = str(params[i])
            known = roles_of.get(raw_param)
            if known is None:
                param_key = " ".join(raw_param.split())
                known = roles_of[raw_param] = (long.role_of(param_key), long.is_ignored(param_key))
            param = " ".join(raw_param.split())
            role = known[0]
            row_cells = own[i] if own is not None else ()
            if not sample.cells and methods is not None:
                sample.first_method = str(methods[i])
            if role is None:
                if param and known[1]:
                    _add_line(sample, line, row_cells, check)
                else:
                    rejected.append(_unknown_parameter(line, param, long, fmt.name, sid))
                continue
            value = str(values[i])
            if value in missing and role in ("bulk_density", "coarse_fragments"):
                _add_line(sample, line, row_cells, check)  # not measured: the line stays with its sample
                continue
            try:
                entry = _read_parameter(value, str(units[i]), line, param, role, long, number, ctx.decimal, missing)
            except _LineError as err:
                rejected.append(Rejection(line, err.column, err.value, err.reason, err.code, sid))
                sample.bad.setdefault(role, line)
                continue
            entry.method = str(methods[i]) if methods is not None else ""
            _add_line(sample, line, row_cells, check)
            sample.params.setdefault(role, []).append(entry)

    ordered = sorted((s for s in samples.values() if s.cells), key=lambda s: next(iter(s.cells)))
    usable: list[_Sample] = []
    for sample in ordered:
        try:
            _choose(sample, long, rejected)
            _check_consistent(sample, fmt, sample_cols)
        except _LineError as err:
            rejected += _reject_sample(sample, err, id_col)
            continue
        usable.append(sample)
    rf = _long_role_frame(usable, fmt, long, sample_cols, missing, method_known=method_col is not None)
    if site_frame is not None and len(rf):
        rf = _join_sites(rf, fmt, site_frame, ctx)
    out = validate(rf, ctx) if len(rf) else None
    notes: list[Rejection] = []
    record_lines: list[tuple[int, ...]] = []
    frame = pd.DataFrame(columns=CANONICAL_COLUMNS)
    if out is not None:
        fails = out.failures
        for p, column, value, reason, code, line in zip(
            fails["pos"].tolist(), fails["column"].tolist(), fails["value"].tolist(), fails["reason"].tolist(),
            fails["code"].tolist(), fails["line"].tolist(), strict=True,
        ):  # fmt: skip
            cause = _LineError(str(column), "" if value is None else str(value), str(reason), str(code), int(line))
            rejected += _reject_sample(usable[int(p)], cause, id_col)
        frame = out.records.copy()
        pos = out.records.index.to_numpy()
        record_lines = [tuple(sorted(usable[p].cells)) for p in pos]
        ids = np.array([s.sample_id for s in usable], dtype=object)
        notes = _rejections(out.notes, ids)
        for p in pos:
            s = usable[p]
            notes += [Rejection(line, column, "", reason, "not_preferred", s.sample_id) for line, column, reason in s.unused]
        frame = frame.reset_index(drop=True)
        frame[FLAG_COLUMN] = _flag_text(frame["row"], [n for n in notes if n.code != "not_preferred"]).to_numpy()
    frame = _typed(frame)
    return IngestResult(
        submitted=submitted,
        accepted=frame,
        rejected=tuple(sorted(rejected, key=lambda r: r.row)),
        record_lines=tuple(record_lines),
        notes=tuple(sorted(notes, key=lambda r: r.row)),
        layout="long",
    )


def _unknown_parameter(line: int, param: str, long: LongLayout, fmt_name: str, sid: str) -> Rejection:
    if not param:
        return Rejection(line, long.parameter_column, "", f"'{long.parameter_column}' is empty; name the parameter", "missing_value", sid)
    known = sorted({*long.parameters, *long.ignore})
    return Rejection(
        line,
        long.parameter_column,
        param,
        f"parameter '{param}' is unknown to sample format '{fmt_name}' (known: {', '.join(known)}); "
        "correct the name or add it to the format profile",
        "unknown_parameter",
        sid,
    )


def _read_parameter(
    value: str, unit_cell: str, line: int, param: str, role: str, long: LongLayout, number: object,
    decimal: str, missing: frozenset[str],
) -> _Param:  # fmt: skip
    unit_text = unit_cell if " " not in unit_cell else " ".join(unit_cell.split())
    code = long.units[role].get(unit_text)
    if code is None:
        known = ", ".join(repr(u) for u in long.units[role])
        if not unit_text:
            raise _LineError(long.unit_column, "", f"the unit of '{param}' is empty; write one of {known}", "unknown_unit")
        raise _LineError(long.unit_column, unit_text, f"unit '{unit_text}' is not known for '{param}'; use one of {known}", "unknown_unit")
    if value in missing:
        raise _LineError(long.value_column, value, f"the value of '{param}' is empty; fill it in or remove the line", "missing_value")
    plain = value.lstrip("<>").strip() if value[:1] in "<>" else value
    if not number.fullmatch(plain):  # type: ignore[attr-defined]
        raise _LineError(long.value_column, value, f"'{value}' ({param}) is not a number", "not_a_number")
    num = float(plain.replace(",", ".") if decimal == "," else plain)
    if not np.isfinite(num):
        raise _LineError(long.value_column, value, f"'{value}' ({param}) is not a finite number", "not_a_number")
    return _Param(line, param, value, num, code)


def _choose(sample: _Sample, long: LongLayout, out: list[Rejection]) -> None:
    """One value per role: the most preferred parameter/method (``long.prefer``); repeats of the same
    value are rejected (into ``out``); different values at the same preference reject the sample."""
    for role, entries in sample.params.items():
        if len(entries) == 1:  # nothing to choose
            continue
        ranks = [long.rank(role, e.name, e.method) for e in entries]
        best = min(ranks)
        top = [e for e, r in zip(entries, ranks, strict=True) if r == best]
        first = top[0]
        for e, r in zip(entries, ranks, strict=True):
            if r != best:
                sample.unused.append((e.line, long.value_column,
                                      f"{e.name} ({e.method or 'no method'}) not used: {first.name} ({first.method or 'no method'}) "
                                      f"on line {first.line} is preferred by the format profile"))  # fmt: skip
        for other in top[1:]:
            if np.isclose(other.number, first.number, rtol=1e-9, atol=1e-12) and other.unit == first.unit:
                out.append(
                    Rejection(other.line, long.value_column, other.value,
                              f"repeats the {first.name} value of line {first.line} for sample {sample.sample_id}",
                              "repeated_line", sample.sample_id)
                )  # fmt: skip
                del sample.cells[other.line]
                continue
            raise _LineError(
                long.value_column,
                other.value,
                f"sample {sample.sample_id} has two different {_ROLE_LABELS[role]} values "
                f"({first.value} {first.unit} on line {first.line}, {other.value} {other.unit} here); keep one, "
                "or list the preferred parameter or method under long.prefer in the format profile",
                "conflicting_values",
                other.line,
            )
        sample.params[role] = [first]


def _check_columns(fmt: SampleFormat) -> list[int]:
    """Indices (into ``fmt.columns``) of the sample columns every line of a sample must repeat (all but the method)."""
    return [i for i, r in enumerate(fmt.columns) if r != "method"]


def _add_line(sample: _Sample, line: int, cells_: tuple[str, ...], check: list[int]) -> None:
    """Add a line to its sample, comparing its sample columns with the first line's as it comes."""
    if not sample.cells:
        sample.base = cells_
    elif cells_ != sample.base:
        k = next(k for k in range(len(cells_)) if cells_[k] != sample.base[k])
        sample.conflicts.append((line, check[k], cells_[k]))
    sample.cells[line] = None


def _check_consistent(sample: _Sample, fmt: SampleFormat, sample_cols: list[str]) -> None:
    """Every line of a sample must repeat the same sample columns (site, coordinates, date, depths; not the method)."""
    live = [c for c in sample.conflicts if c[0] in sample.cells]
    if not live:
        return
    line, i, b = live[0]
    col, a = sample_cols[i], sample.base[_check_columns(fmt).index(i)]
    raise _LineError(
        col, b,
        f"'{col}' is '{b}' here but '{a}' on line {next(iter(sample.cells))} for the same sample {sample.sample_id}; "
        "all lines of a sample must agree",
        "inconsistent_sample", line,
    )  # fmt: skip


def _long_role_frame(
    samples: list[_Sample], fmt: SampleFormat, long: LongLayout, sample_cols: list[str], missing: frozenset[str],
    *, method_known: bool,
) -> pd.DataFrame:  # fmt: skip
    roles = list(fmt.columns)
    data: dict[str, list[object]] = {r: [] for r in roles}
    extra: dict[str, list[object]] = {"_line": []}
    for role in MEASURED_ROLES:
        for prefix in ("_label:", "_lineof:", "_unit:", "_missing:"):
            extra[prefix + role] = []
        data[role] = []
    for s in samples:
        first = next(iter(s.cells))
        values = iter(s.base)
        for r in roles:
            v = s.first_method if r == "method" else next(values)
            data[r].append("" if v in missing else v)
        carbon = s.params.get("soc") or s.params.get("som")
        if carbon and method_known:
            data["method"][-1] = carbon[0].method
        extra["_line"].append(first)
        for role in MEASURED_ROLES:
            entries = s.params.get(role)
            miss = ""
            if entries:
                p = entries[0]
                data[role].append(p.value)
                extra["_label:" + role].append(f"{long.value_column} ({p.name})")
                extra["_lineof:" + role].append(p.line)
                extra["_unit:" + role].append(p.unit)
            else:
                data[role].append("")
                extra["_label:" + role].append(long.parameter_column if role in ("soc", "som") else role)
                extra["_lineof:" + role].append(s.bad.get(role, np.nan))
                extra["_unit:" + role].append("")
                if role in s.bad:
                    miss = f"the {_ROLE_LABELS[role]} line of this sample (line {s.bad[role]}) was rejected"
            if role == "soc" and not entries and not s.params.get("som"):
                names = [p for p, r in long.parameters.items() if r in ("soc", "som")]
                bad = s.bad.get("soc") or s.bad.get("som")
                miss = f"sample {s.sample_id} has no usable {' or '.join(names)} line" + (
                    f" (line {bad} was rejected)" if bad else "; add one"
                )
                extra["_lineof:soc"][-1] = bad if bad else first
            extra["_missing:" + role].append(miss)
    frame = pd.DataFrame({**data, **extra})
    for role in MEASURED_ROLES:
        frame["_lineof:" + role] = pd.to_numeric(frame["_lineof:" + role], errors="coerce")
    return frame


def _reject_sample(sample: _Sample, err: _LineError, id_col: str) -> list[Rejection]:
    """The cause on its own line; every other line of the sample points to it."""
    cause = err.line if err.line in sample.cells else next(iter(sample.cells))
    out = [Rejection(cause, err.column, err.value, err.reason, err.code, sample.sample_id)]
    for line in sorted(sample.cells):
        if line != cause:
            out.append(
                Rejection(line, id_col, sample.sample_id,
                          f"sample {sample.sample_id} is rejected because of line {cause}: {err.reason}",
                          "sample_rejected", sample.sample_id)
            )  # fmt: skip
    return out
