"""Submit an agency's sample file to the store: hash, ingest, and write everything in one transaction.

* A submission is identified by (file sha256, profile sha256) per agency. The same bytes read
  with the same profile are not stored again: the earlier submission is returned, flagged
  ``duplicate_of``. The same bytes under *another* profile (e.g. a corrected unit) are a
  correction: the new submission is stored and the earlier one marked ``superseded`` (its
  samples moved to ``retired_samples``, kept and reported, no longer used) in the same
  transaction. ``replaces=ID`` supersedes a submission of a different file the same way, and
  :func:`withdraw` withdraws one with a reason. Nothing is ever deleted.
* Otherwise the file is validated with :func:`mrv.samples.ingest.ingest_parts` and the
  submission, its accepted samples, its rejected rows, its summary (counts by outcome and
  reason, :func:`summarise`) and the raw bytes are written in ONE transaction.
* Memory follows a part of the file, not the file: the file is validated in parts of
  ``_PART_ROWS`` lines, each part's accepted records written to a staging SQLite database
  (in memory for a small file, else beside the file's copy; before the write lock is taken, so other writers are not held up by
  the parsing); the file-wide check of repeated sample ids runs there on the repeated ids
  only. Inside the transaction the staged records go into the store in batches, in the order
  of its neighbourhood index, and the QA reads them back in batches (200,000 rows: about
  320 MB peak, where holding the accepted frame as Python objects took 410 MB).
* A file that cannot be read as a sample table at all is recorded in the ledger as ``rejected``
  (with its reason, nothing else) and :class:`~mrv.errors.SubmissionRejected` is raised.
* A file that could not be written because the write lock never came (``lock_timeout_s``) is
  recorded as ``failed`` (one more, shorter wait for the lock) and
  :class:`~mrv.samples.store.StoreBusy` is raised: one message, exit 2 on the command line.
* Sample ids are unique per agency across submissions in use: a row reusing an id the agency
  stored earlier is rejected with that reason.
* In the same transaction the new samples are checked against the stored samples around them
  (:func:`mrv.samples.store_qa.apply_qa`: duplicates, GPS accuracy, jitter of re-visited sites,
  crowd outliers against nearby lab samples) and their flags written to ``qa_flag``. Flagged
  samples are stored, never rejected: the report lists them as ``ACCEPTED, FLAGGED: reason``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import sqlite3
import stat
import tempfile
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mrv.errors import ConfigError, SampleError, SubmissionRejected
from mrv.fsio import sha256_bytes
from mrv.samples import ingest as ingest_mod
from mrv.samples.formats import SampleFormat
from mrv.samples.ingest import (
    CANONICAL_COLUMNS,
    IngestResult,
    IngestSummary,
    Rejection,
    duplicate_ids,
    ingest_parts,
    ingest_summary,
)
from mrv.samples.qa import SampleChecks
from mrv.samples.store import (
    FAILED,
    FLOAT_COLUMNS,
    REJECTED,
    SAMPLE_TABLE_COLUMNS,
    STORED,
    SUPERSEDED,
    WITHDRAWN,
    SampleStore,
    StoreBusy,
    SubmissionReport,
    _report,
    cells,
    db_column,
    fetch_tuples,
    insert_rows,
    raw_files,
    rejections,
    retired_samples,
    samples,
    submissions,
    utc_now,
)
from mrv.samples.store_qa import apply_qa

__all__ = [
    "MAX_FILE_BYTES",
    "SOURCES",
    "profile_hash",
    "read_submission",
    "reason_key",
    "submit_file",
    "summarise",
    "withdraw",
]

SOURCES = ("lab", "crowd")
#: Column of ``IngestResult.accepted`` with the ingest's notes on a record (stored in ``samples.ingest_flag``).
INGEST_FLAG = str(getattr(ingest_mod, "FLAG_COLUMN", "ingest_flag"))
#: How often a submission is retried when a concurrent writer stored a conflicting row first.
_ATTEMPTS = 3
#: Largest file accepted (bytes) unless the ingest module sets its own limit.
MAX_FILE_BYTES = int(getattr(ingest_mod, "MAX_FILE_BYTES", 1 << 30))
#: Wait for the lock (s) when recording that a submission failed for want of it (once more, whatever the timeout).
_FAILED_RECORD_WAIT_S = 60.0
#: Rows per INSERT batch (bounds the memory of the parameter lists).
_BATCH = 10_000


def profile_hash(fmt: SampleFormat) -> str:
    """SHA-256 of a profile's content (every field but its name and description), as canonical JSON."""
    content = dataclasses.asdict(fmt) if dataclasses.is_dataclass(fmt) else dict(vars(fmt))
    content.pop("name", None)
    content.pop("description", None)
    text = json.dumps(content, sort_keys=True, default=str, separators=(",", ":"))
    return sha256_bytes(text.encode("utf-8"))


def read_submission(path: str | Path, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (no FIFOs, devices or folders)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise SubmissionRejected(f"Cannot read {path}: {exc.strerror}. Check the file name and path.") from exc
    if not stat.S_ISREG(info.st_mode):
        raise SubmissionRejected(f"{path} is not a regular file (a folder, FIFO or device). Submit the CSV file itself.")
    if info.st_size > max_bytes:
        raise SubmissionRejected(
            f"{path} has {info.st_size:,} bytes, more than the limit of {max_bytes:,}; split it into smaller files."
        )
    try:
        with path.open("rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise SubmissionRejected(f"Cannot read {path}: {exc.strerror}. Check the file name and path.") from exc
    if len(raw) > max_bytes:
        raise SubmissionRejected(f"{path} grew beyond the limit of {max_bytes:,} bytes while being read.")
    return raw


def submit_file(
    store: SampleStore,
    path: str | Path,
    *,
    agency: str,
    source: str,
    fmt: SampleFormat,
    project_crs: str,
    region_bounds: tuple[float, float, float, float] | None = None,
    today: dt.date | None = None,
    checks: SampleChecks | None = None,
    replaces: int | None = None,
    filename: str | None = None,
) -> SubmissionReport:
    """Store ``path`` submitted by ``agency`` and return its report.

    ``checks`` are the QA thresholds (default: those of :class:`mrv.config.SamplesConfig`);
    ``replaces`` the id of a stored submission of this agency that the file corrects;
    ``filename`` the name recorded in the ledger (default: the file's own name).

    Raises:
        SubmissionRejected: the file cannot be read as a sample table (recorded in the ledger
            as ``rejected`` when the file could be read at all).
        StoreBusy: the write lock did not come within the store's lock timeout (recorded as ``failed``).
    """
    agency = agency.strip()
    if not agency:
        raise ConfigError("Say which agency submits the file (--agency NAME).")
    if source not in SOURCES:
        raise ConfigError(f"The source must be one of {list(SOURCES)}, got {source!r}.")
    path = Path(path)
    name = Path(filename).name if filename else path.name
    raw = read_submission(path)
    sha = sha256_bytes(raw)
    phash = profile_hash(fmt)
    meta = {"agency": agency, "source": source, "fmt": fmt, "filename": name, "sha": sha, "phash": phash}

    with store.engine.connect() as conn:
        earlier = _stored_submission_in(conn, agency, sha)
        if earlier is not None and earlier[1] == phash and replaces is None:
            return _report(conn, earlier[0], duplicate_of=earlier[0], store_url=store.safe_url)
        if replaces is not None:
            _check_replaceable(conn, replaces, agency, store.safe_url)

    with tempfile.TemporaryDirectory(prefix="mrv-submit-") as tmp:
        try:
            staged = _stage(raw, name, fmt, Path(tmp), source=source, agency=agency, project_crs=project_crs,
                            region_bounds=region_bounds, today=today)  # fmt: skip
        except SubmissionRejected as exc:
            submission_id = _record(store, meta, status=REJECTED, reason=str(exc))
            raise SubmissionRejected(f"{exc} (Recorded as rejected submission {submission_id}.)") from exc
        with closing(staged.db):
            found_id, stored_id = _write(store, meta, staged, raw, checks=checks, replaces=replaces)
        del raw
    if found_id is not None:
        with store.engine.connect() as conn:
            return _report(conn, found_id, duplicate_of=found_id, store_url=store.safe_url)
    with store.engine.connect() as conn:
        return _report(conn, stored_id, store_url=store.safe_url)


def _write(
    store: SampleStore,
    meta: dict[str, Any],
    staged: _Staged,
    raw: bytes,
    *,
    checks: SampleChecks | None,
    replaces: int | None,
) -> tuple[int | None, int]:
    """The write transaction: ``(id of the identical stored submission, None)`` or ``(None, new id)``."""
    agency, sha, phash = meta["agency"], meta["sha"], meta["phash"]
    try:
        for attempt in range(_ATTEMPTS):
            try:
                with store.transaction() as conn:
                    found = _stored_submission_in(conn, agency, sha)
                    if found is not None and found[1] == phash and replaces is None:
                        return found[0], found[0]
                    # The replaced submissions are retired first: the new one may reuse their sample ids.
                    olds = sorted({i for i in (found[0] if found else None, replaces) if i is not None})
                    for old in olds:
                        _check_replaceable(conn, old, agency, store.safe_url)
                        _retire(conn, old, reason="superseded")
                    new_id = _insert_submission(conn, meta, counts=(0, 0, 0), status=STORED, reason=None)
                    _link_superseded(conn, olds, new_id)
                    rejected = _store_rows(conn, new_id, staged, meta=meta, raw=raw)
                    apply_qa(conn, checks, submission_id=new_id)
                    _write_summary(conn, new_id, staged, rejected)
                return None, new_id
            except sa.exc.IntegrityError:
                # A concurrent submission stored the same file or a sample id first: check again.
                if attempt == _ATTEMPTS - 1:
                    raise
    except StoreBusy as exc:
        try:
            failed = dataclasses.replace(store, lock_timeout_s=_FAILED_RECORD_WAIT_S)
            submission_id = _record(failed, meta, status=FAILED, reason=str(exc))
        except StoreBusy:
            raise StoreBusy(f"{exc} The failure could not be recorded in the ledger either.") from exc
        raise StoreBusy(f"{exc} (Recorded as failed submission {submission_id}.)") from exc
    raise AssertionError("unreachable: the last attempt re-raises")  # pragma: no cover


def withdraw(store: SampleStore, submission_id: int, *, reason: str) -> SubmissionReport:
    """Withdraw a stored submission: status ``withdrawn`` with the reason and time, samples retired (kept)."""
    reason = " ".join(reason.split())
    if not reason:
        raise ConfigError("Say why the submission is withdrawn (--reason TEXT); the reason is kept in the ledger.")
    with store.transaction() as conn:
        row = conn.execute(sa.select(submissions).where(submissions.c.submission_id == submission_id)).first()
        if row is None:
            raise SampleError(
                f"There is no submission {submission_id} in the sample database {store.safe_url}. "
                "Run 'mrv samples list' to see the submission numbers."
            )
        status = row._mapping["status"]
        if status != STORED:
            raise SampleError(
                f"Submission {submission_id} is {status}, not stored: only stored submissions can be withdrawn."
            )
        _retire(conn, submission_id, reason=f"withdrawn: {reason}", withdrawn=reason)
        return _report(conn, submission_id, store_url=store.safe_url)


def _check_replaceable(conn: Connection, submission_id: int, agency: str, shown: str) -> None:
    row = conn.execute(
        sa.select(submissions.c.agency, submissions.c.status).where(submissions.c.submission_id == submission_id)
    ).first()
    if row is None:
        raise SampleError(f"There is no submission {submission_id} in {shown} to replace; see 'mrv samples list'.")
    if row.agency != agency or row.status != STORED:
        raise SampleError(
            f"Submission {submission_id} is a {row.status} submission of {row.agency}; a file of {agency} can "
            "replace only a stored submission of the same agency."
        )


def _retire(conn: Connection, submission_id: int, *, reason: str, withdrawn: str | None = None) -> None:
    """Move a submission's samples to ``retired_samples`` and mark it superseded or withdrawn."""
    when = utc_now()
    cols = [samples.c[c] for c in SAMPLE_TABLE_COLUMNS]
    select = sa.select(*cols, sa.literal(when).label("retired_utc"), sa.literal(reason).label("retired_reason"))
    conn.execute(
        retired_samples.insert().from_select(
            [*SAMPLE_TABLE_COLUMNS, "retired_utc", "retired_reason"], select.where(samples.c.submission_id == submission_id)
        )
    )
    conn.execute(samples.delete().where(samples.c.submission_id == submission_id))
    values: dict[str, Any] = (
        {"status": WITHDRAWN, "withdrawn_utc": when, "withdrawn_reason": withdrawn}
        if withdrawn is not None
        else {"status": SUPERSEDED}
    )
    conn.execute(submissions.update().where(submissions.c.submission_id == submission_id).values(**values))


def _link_superseded(conn: Connection, olds: Sequence[int], new_id: int) -> None:
    if not olds:
        return
    conn.execute(
        submissions.update().where(submissions.c.submission_id.in_(list(olds))).values(superseded_by=new_id)
    )
    conn.execute(
        retired_samples.update()
        .where(retired_samples.c.submission_id.in_(list(olds)), retired_samples.c.retired_reason == "superseded")
        .values(retired_reason=f"superseded by submission {new_id}")
    )


@dataclass
class _Staged:
    """A file ingested into a staging SQLite database (outside the store's write lock).

    The ``staged`` table holds the accepted records (``_STAGED_COLUMNS``, file order in ``pos``),
    after the file-wide check of repeated sample ids; rejected lines and notes are kept here.
    """

    db: sqlite3.Connection
    """The staging database (in memory for a small file, else a file beside the copy); closed by the caller."""
    layout: str
    submitted: int
    rejected: list[Rejection]
    notes: list[Rejection]
    records: int
    lines: dict[int, tuple[int, ...]]
    """Long layout: record row -> its file lines (wide: empty, one line each)."""

    @property
    def summary(self) -> IngestSummary:
        accepted_lines = sum(len(v) for v in self.lines.values()) if self.lines else self.records
        ids = None
        if self.layout == "long":
            ids = {str(r[0]) for r in self.db.execute("SELECT sample_id FROM staged")}
        return ingest_summary(self.layout, self.submitted, accepted_lines, self.records, self.rejected, self.notes,
                              accepted_ids=ids)  # fmt: skip

    def lines_of(self, row: int) -> tuple[int, ...]:
        return self.lines.get(row, (row,)) if self.lines else (row,)


#: Columns of the staging table, in the order they are inserted into ``samples`` (after submission id, agency, qa_flag).
_STAGED_COLUMNS = ["gx", "gy", INGEST_FLAG, *CANONICAL_COLUMNS]
#: Positions of the sample id and the file row in a row read for insertion (submission id, agency, qa_flag, *staged).
_SID = 3 + _STAGED_COLUMNS.index("sample_id")
_ROW = 3 + _STAGED_COLUMNS.index("row")
#: Lines per ingest part: the memory of a submission follows this, not the file.
_PART_ROWS = 25_000
#: Files up to this size (bytes; ~30,000 lines of a wide file) are staged in memory, larger ones in a file.
_MEMORY_STAGE_BYTES = 4 << 20


def _stage(
    raw: bytes,
    filename: str,
    fmt: SampleFormat,
    tmp: Path,
    *,
    source: str,
    agency: str,
    project_crs: str,
    region_bounds: tuple[float, float, float, float] | None,
    today: dt.date | None,
) -> _Staged:
    """Ingest exactly the bytes that were hashed (a copy under the original name, for the messages), part by part,
    into a staging database: no more than one part of the file is held as Python objects at a time."""
    copy = tmp / (Path(filename).name or "submission.csv")
    copy.write_bytes(raw)
    parts = ingest_parts(copy, fmt, source=source, submitter=agency, project_crs=project_crs,
                         region_bounds=region_bounds, today=today, rows_per_chunk=_PART_ROWS)  # fmt: skip
    db = sqlite3.connect(":memory:" if len(raw) <= _MEMORY_STAGE_BYTES else tmp / "staged.sqlite")
    staged = _Staged(db, "long" if fmt.long is not None else "wide", 0, [], [], 0, {})
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        cols = ", ".join(f'"{c}"' for c in _STAGED_COLUMNS)
        db.execute(f"CREATE TABLE staged (pos INTEGER PRIMARY KEY, {cols})")
        insert = f"INSERT INTO staged ({cols}) VALUES ({', '.join('?' * len(_STAGED_COLUMNS))})"
        for part in parts:
            staged.submitted += part.submitted
            staged.rejected += part.rejected
            staged.notes += part.notes
            acc = part.accepted
            if part.record_lines:
                staged.lines.update((lines[0], lines) for lines in part.record_lines if lines)
            if len(acc):
                values = [cells(acc["x"]).tolist(), cells(acc["y"]).tolist(),
                          acc[INGEST_FLAG].fillna("").astype(str).tolist(), *[db_column(acc[c]) for c in CANONICAL_COLUMNS]]  # fmt: skip
                db.executemany(insert, zip(*values, strict=True))
            del part, acc
        if staged.layout == "wide":
            _staged_duplicates(db, fmt, staged)
        staged.records = int(db.execute("SELECT count(*) FROM staged").fetchone()[0])
        db.commit()
    except BaseException:
        db.close()
        raise
    staged.rejected.sort(key=lambda r: r.row)
    staged.notes.sort(key=lambda r: r.row)
    return staged


def _staged_duplicates(db: sqlite3.Connection, fmt: SampleFormat, staged: _Staged) -> None:
    """The file-wide repeated-id check (:func:`mrv.samples.ingest.duplicate_ids`) on the records of repeated ids only."""
    db.execute("CREATE INDEX staged_sample_id ON staged (sample_id)")
    cols = ", ".join(f'"{c}"' for c in CANONICAL_COLUMNS)
    rows = db.execute(
        f"SELECT pos, {cols} FROM staged WHERE sample_id IN "
        "(SELECT sample_id FROM staged GROUP BY sample_id HAVING count(*) > 1) ORDER BY pos"
    ).fetchall()
    if not rows:
        return
    frame = pd.DataFrame(rows, columns=["pos", *CANONICAL_COLUMNS])
    for col in FLOAT_COLUMNS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    kept, dup_rejections = duplicate_ids(frame, fmt)
    gone = sorted(set(frame["pos"].tolist()) - set(kept["pos"].tolist()))
    db.executemany("DELETE FROM staged WHERE pos = ?", [(int(p),) for p in gone])
    staged.rejected += dup_rejections
    lost = {r.row for r in dup_rejections}
    staged.notes = [n for n in staged.notes if n.row not in lost]


def _stored_submission_in(conn: Connection, agency: str, sha: str) -> tuple[int, str | None] | None:
    found = conn.execute(
        sa.select(submissions.c.submission_id, submissions.c.profile_sha256).where(
            submissions.c.agency == agency, submissions.c.sha256 == sha, submissions.c.status == STORED
        )
    ).first()
    return (int(found[0]), found[1]) if found is not None else None


def _record(store: SampleStore, meta: dict[str, Any], *, status: str, reason: str) -> int:
    with store.transaction() as conn:
        return _insert_submission(conn, meta, counts=(0, 0, 0), status=status, reason=reason)


def _insert_submission(
    conn: Connection, meta: dict[str, Any], *, counts: tuple[int, int, int], status: str, reason: str | None
) -> int:
    submitted, accepted, rejected = counts
    res = conn.execute(
        submissions.insert()
        .values(
            agency=meta["agency"],
            source=meta["source"],
            format=meta["fmt"].name,
            filename=meta["filename"],
            sha256=meta["sha"],
            profile_sha256=meta["phash"],
            received_utc=utc_now(),
            submitted=submitted,
            accepted=accepted,
            rejected=rejected,
            status=status,
            reason=reason,
        )  # fmt: skip
        .returning(submissions.c.submission_id)
    )
    return int(res.scalar_one())


def _store_rows(
    conn: Connection, submission_id: int, staged: _Staged, *, meta: dict[str, Any], raw: bytes
) -> tuple[Rejection, ...]:
    """Counts into the ledger row, samples (from the staging database, in batches), rejections and the raw file;
    returns the rejected rows."""
    agency = meta["agency"]
    column = meta["fmt"].columns.get("sample_id", "sample_id")
    check_ids = conn.execute(sa.select(samples.c.id).where(samples.c.agency == agency).limit(1)).first() is not None
    id_clashes: list[Rejection] = []
    n_accepted = 0
    columns = ["submission_id", "agency", "qa_flag", *_STAGED_COLUMNS]
    with closing(staged.db.cursor()) as cur:
        # In index order (cell, date): B-tree inserts then land next to each other, about 1.7x faster into a large store.
        # Rows come out ready to insert: (submission id, agency, qa_flag, *staged columns).
        cur.execute(f"SELECT ?, ?, '', {', '.join(chr(34) + c + chr(34) for c in _STAGED_COLUMNS)} FROM staged "
                         "ORDER BY gy, gx, sampling_date, pos", (submission_id, agency))  # fmt: skip
        while batch := cur.fetchmany(_BATCH):
            known = _known_ids(conn, agency, [str(r[_SID]) for r in batch]) if check_ids else {}
            if not known:
                insert_rows(conn, samples, columns, batch)
                n_accepted += sum(len(staged.lines_of(int(r[_ROW]))) for r in batch) if staged.lines else len(batch)
                continue
            keep = []
            for r in batch:
                sub = known.get(str(r[_SID]))
                if sub is None:
                    keep.append(r)
                    n_accepted += len(staged.lines_of(int(r[_ROW])))
                    continue
                # Counts are file lines: a long-layout record spans several lines.
                sid = str(r[_SID])
                id_clashes += [
                    Rejection(n, column, sid,
                              f"sample id '{sid}' was already stored by {agency} in submission {sub}; "
                              "give each sample its own id (or correct the earlier submission: mrv samples submit --replaces)",
                              "id_already_stored", sid)
                    for n in staged.lines_of(int(r[_ROW]))
                ]  # fmt: skip
            insert_rows(conn, samples, columns, keep)
            del batch, keep
    rejected = tuple(sorted((*staged.rejected, *id_clashes), key=lambda r: r.row))
    if n_accepted + len(rejected) != staged.submitted:  # pragma: no cover - guards ingest's contract
        raise AssertionError(f"{n_accepted} accepted + {len(rejected)} rejected != {staged.submitted} submitted")
    conn.execute(
        submissions.update()
        .where(submissions.c.submission_id == submission_id)
        .values(submitted=staged.submitted, accepted=n_accepted, rejected=len(rejected))
    )
    _insert_rejections(conn, submission_id, rejected)
    _archive_raw(conn, meta["sha"], raw)
    return rejected


def _known_ids(conn: Connection, agency: str, ids: list[str]) -> dict[str, int]:
    """Sample id -> submission of the ids this agency already stored (in a submission in use)."""
    known: dict[str, int] = {}
    for lo in range(0, len(ids), 500):
        query = sa.select(samples.c.sample_id, samples.c.submission_id).where(
            samples.c.agency == agency, samples.c.sample_id.in_(ids[lo : lo + 500])
        )
        known.update({str(sid): int(sub) for sid, sub in fetch_tuples(conn, query)})
    return known


def _insert_rejections(conn: Connection, submission_id: int, rejected: Sequence[Rejection]) -> None:
    columns = ["submission_id", "row", "column", "value", "reason", "code"]
    for lo in range(0, len(rejected), _BATCH):
        insert_rows(conn, rejections, columns, [
            (submission_id, int(r.row), str(r.column), str(r.value), str(r.reason), getattr(r, "code", "") or None)
            for r in rejected[lo : lo + _BATCH]
        ])  # fmt: skip


def _archive_raw(conn: Connection, sha: str, raw: bytes) -> None:
    """Content-addressed: the same bytes from two agencies are archived once."""
    if conn.execute(sa.select(raw_files.c.sha256).where(raw_files.c.sha256 == sha)).first() is None:
        conn.execute(raw_files.insert().values(sha256=sha, size_bytes=len(raw), content=raw))


# ------------------------------------------------------------------------------------------ summary

_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?")
_QUOTED = re.compile(r"'[^']*'")


def reason_key(column: str, reason: str) -> str:
    """A rejection reason without its values (``bulk_density_g_cm3: bulk density # g/cm3 is ...``), for counting."""
    text = _NUMBER.sub("#", _QUOTED.sub("'…'", reason))
    return f"{column or '(whole row)'}: {text}"


def summarise(
    result: IngestResult | _Staged, *, accepted_lines: int, rejected: Sequence[Rejection], accepted_samples: int, flagged: int
) -> dict[str, Any]:
    """Counts of one submission: lines and samples by outcome, rejected lines by reason.

    ``lines`` are file data lines (a long layout has several per sample: ``samples`` counts the
    records); ``by_reason`` maps :func:`reason_key` to the number of rejected lines. A
    ``summary`` (or ``counts``) mapping the ingest result carries is kept under ``ingest``.
    """
    by_reason = Counter(getattr(r, "code", "") or reason_key(r.column, r.reason) for r in rejected)
    out: dict[str, Any] = {
        "lines": {"submitted": result.submitted, "accepted": accepted_lines, "rejected": len(rejected)},
        "samples": {"accepted": accepted_samples, "flagged": flagged, "clean": accepted_samples - flagged},
        "by_reason": dict(by_reason.most_common()),
    }
    extra = getattr(result, "summary", None) or getattr(result, "counts", None)
    if extra is not None and not callable(extra):
        out["ingest"] = dataclasses.asdict(extra) if dataclasses.is_dataclass(extra) else extra  # type: ignore[arg-type]
    return out


def _write_summary(conn: Connection, submission_id: int, result: _Staged, rejected: Sequence[Rejection]) -> None:
    mine = samples.c.submission_id == submission_id
    n_samples = int(conn.execute(sa.select(sa.func.count()).select_from(samples).where(mine)).scalar_one())
    n_flagged = int(
        conn.execute(sa.select(sa.func.count()).select_from(samples).where(mine, samples.c.qa_flag != "")).scalar_one()
    )
    summary = summarise(result, accepted_lines=result.submitted - len(rejected), rejected=rejected,
                        accepted_samples=n_samples, flagged=n_flagged)  # fmt: skip
    conn.execute(
        submissions.update()
        .where(submissions.c.submission_id == submission_id)
        .values(summary=json.dumps(summary, default=str))
    )
