"""Submit an agency's sample file to the store: hash, ingest, and write everything in one transaction.

* The same bytes (sha256) already stored for the same agency are not stored again: the earlier
  submission is returned, flagged ``duplicate_of``.
* Otherwise the file is validated with :func:`mrv.samples.ingest.ingest` and the submission,
  its accepted samples, its rejected rows and the raw bytes are written in ONE transaction.
* A file that cannot be read as a sample table at all is recorded in the ledger as ``rejected``
  (with its reason, nothing else) and :class:`~mrv.errors.SubmissionRejected` is raised.
* Sample ids are unique per agency across submissions: a row reusing an id the agency stored
  earlier is rejected with that reason.
* In the same transaction the new samples are checked against every stored sample
  (:func:`mrv.samples.store_qa.apply_qa`: duplicates, GPS accuracy, jitter of re-visited sites,
  crowd outliers against nearby lab samples) and their flags written to ``qa_flag``. Flagged
  samples are stored, never rejected: the report lists them as ``ACCEPTED, FLAGGED: reason``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mrv.errors import ConfigError, SubmissionRejected
from mrv.samples.formats import SampleFormat
from mrv.samples.ingest import CANONICAL_COLUMNS, IngestResult, Rejection, ingest
from mrv.samples.qa import SampleChecks
from mrv.samples.store import (
    REJECTED,
    STORED,
    SampleStore,
    SubmissionReport,
    _report,
    db_value,
    raw_files,
    rejections,
    samples,
    submissions,
    utc_now,
)
from mrv.samples.store_qa import apply_qa

SOURCES = ("lab", "crowd")
#: How often a submission is retried when a concurrent writer stored a conflicting row first.
_ATTEMPTS = 3


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
) -> SubmissionReport:
    """Store ``path`` submitted by ``agency`` and return its report.

    ``checks`` are the QA thresholds (default: those of :class:`mrv.config.SamplesConfig`).

    Raises:
        SubmissionRejected: the file cannot be read as a sample table (recorded in the ledger
            as ``rejected`` when the file could be read at all).
    """
    agency = agency.strip()
    if not agency:
        raise ConfigError("Say which agency submits the file (--agency NAME).")
    if source not in SOURCES:
        raise ConfigError(f"The source must be one of {list(SOURCES)}, got {source!r}.")
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SubmissionRejected(f"Cannot read {path}: {exc.strerror}. Check the file name and path.") from exc
    sha = hashlib.sha256(raw).hexdigest()

    earlier = _stored_submission(store, agency, sha)
    if earlier is not None:
        return _duplicate_report(store, earlier)

    try:
        result = _ingest_bytes(raw, path.name, fmt, source=source, agency=agency, project_crs=project_crs,
                               region_bounds=region_bounds, today=today)  # fmt: skip
    except SubmissionRejected as exc:
        submission_id = _record_rejected(store, agency=agency, source=source, fmt=fmt, filename=path.name, sha=sha,
                                         reason=str(exc))  # fmt: skip
        raise SubmissionRejected(f"{exc} (Recorded as rejected submission {submission_id}.)") from exc

    for attempt in range(_ATTEMPTS):
        try:
            with store.transaction() as conn:
                earlier = _stored_submission_in(conn, agency, sha)
                if earlier is not None:
                    break
                submission_id = _write_submission(conn, result, agency=agency, source=source, fmt=fmt,
                                                  filename=path.name, sha=sha, raw=raw)  # fmt: skip
                apply_qa(conn, checks, submission_id=submission_id)
                return _report(conn, submission_id, store_url=store.url)
        except sa.exc.IntegrityError:
            # A concurrent submission stored the same file or a sample id first: check again.
            if attempt == _ATTEMPTS - 1:
                raise
    assert earlier is not None
    return _duplicate_report(store, earlier)


def _ingest_bytes(
    raw: bytes,
    filename: str,
    fmt: SampleFormat,
    *,
    source: str,
    agency: str,
    project_crs: str,
    region_bounds: tuple[float, float, float, float] | None,
    today: dt.date | None,
) -> IngestResult:
    """Ingest exactly the bytes that were hashed (a copy under the original name, for the messages)."""
    with tempfile.TemporaryDirectory(prefix="mrv-submit-") as tmp:
        copy = Path(tmp) / (Path(filename).name or "submission.csv")
        copy.write_bytes(raw)
        return ingest(copy, fmt, source=source, submitter=agency, project_crs=project_crs,
                      region_bounds=region_bounds, today=today)  # fmt: skip


def _stored_submission(store: SampleStore, agency: str, sha: str) -> int | None:
    with store.engine.connect() as conn:
        return _stored_submission_in(conn, agency, sha)


def _stored_submission_in(conn: Connection, agency: str, sha: str) -> int | None:
    found = conn.execute(
        sa.select(submissions.c.submission_id).where(
            submissions.c.agency == agency, submissions.c.sha256 == sha, submissions.c.status == STORED
        )
    ).scalar()
    return int(found) if found is not None else None


def _duplicate_report(store: SampleStore, earlier: int) -> SubmissionReport:
    with store.engine.connect() as conn:
        return _report(conn, earlier, duplicate_of=earlier, store_url=store.url)


def _record_rejected(
    store: SampleStore, *, agency: str, source: str, fmt: SampleFormat, filename: str, sha: str, reason: str
) -> int:
    with store.transaction() as conn:
        return _insert_submission(conn, agency=agency, source=source, fmt=fmt, filename=filename, sha=sha,
                                  counts=(0, 0, 0), status=REJECTED, reason=reason)  # fmt: skip


def _insert_submission(
    conn: Connection,
    *,
    agency: str,
    source: str,
    fmt: SampleFormat,
    filename: str,
    sha: str,
    counts: tuple[int, int, int],
    status: str,
    reason: str | None,
) -> int:
    submitted, accepted, rejected = counts
    res = conn.execute(
        submissions.insert()
        .values(
            agency=agency,
            source=source,
            format=fmt.name,
            filename=filename,
            sha256=sha,
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


def _write_submission(
    conn: Connection,
    result: IngestResult,
    *,
    agency: str,
    source: str,
    fmt: SampleFormat,
    filename: str,
    sha: str,
    raw: bytes,
) -> int:
    accepted, id_clashes = _split_known_ids(conn, result.accepted, agency=agency, fmt=fmt)
    # Counts are file lines: a long-layout record spans several lines (IngestResult.record_lines).
    lines = result.lines_by_row()
    id_clashes = [Rejection(n, r.column, r.value, r.reason) for r in id_clashes for n in lines.get(r.row, (r.row,))]
    n_accepted = sum(len(lines.get(int(row), (row,))) for row in accepted["row"])
    rejected = tuple(sorted((*result.rejected, *id_clashes), key=lambda r: r.row))
    if n_accepted + len(rejected) != result.submitted:  # pragma: no cover - guards ingest's contract
        raise AssertionError(f"{n_accepted} accepted + {len(rejected)} rejected != {result.submitted} submitted")
    submission_id = _insert_submission(conn, agency=agency, source=source, fmt=fmt, filename=filename, sha=sha,
                                       counts=(result.submitted, n_accepted, len(rejected)), status=STORED,
                                       reason=None)  # fmt: skip
    _insert_samples(conn, submission_id, agency, accepted)
    _insert_rejections(conn, submission_id, rejected)
    _archive_raw(conn, sha, raw)
    return submission_id


def _split_known_ids(
    conn: Connection, accepted: pd.DataFrame, *, agency: str, fmt: SampleFormat
) -> tuple[pd.DataFrame, list[Rejection]]:
    """Move rows whose sample id this agency already stored to the rejected rows."""
    ids = [str(s) for s in accepted["sample_id"]]
    known: dict[str, int] = {}
    for chunk in _chunks(ids, 500):
        query = sa.select(samples.c.sample_id, samples.c.submission_id).where(
            samples.c.agency == agency, samples.c.sample_id.in_(chunk)
        )
        known.update({str(r.sample_id): int(r.submission_id) for r in conn.execute(query)})
    if not known:
        return accepted, []
    clash = accepted["sample_id"].astype(str).isin(list(known))
    column = fmt.columns.get("sample_id", "sample_id")
    rejected = [
        Rejection(
            int(row),
            column,
            str(sid),
            f"sample id '{sid}' was already stored by {agency} in submission {known[str(sid)]}; "
            "give each sample its own id (or correct the earlier submission)",
        )
        for row, sid in zip(accepted.loc[clash, "row"], accepted.loc[clash, "sample_id"], strict=True)
    ]
    return accepted.loc[~clash], rejected


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _insert_samples(conn: Connection, submission_id: int, agency: str, accepted: pd.DataFrame) -> None:
    if accepted.empty:
        return
    qa = accepted["qa_flag"] if "qa_flag" in accepted.columns else pd.Series("", index=accepted.index)
    records = [
        {
            "submission_id": submission_id,
            "agency": agency,
            "qa_flag": str(flag or ""),
            **{c: db_value(rec[c]) for c in CANONICAL_COLUMNS},
        }  # fmt: skip
        for rec, flag in zip(accepted.to_dict("records"), qa, strict=True)
    ]
    conn.execute(samples.insert(), records)


def _insert_rejections(conn: Connection, submission_id: int, rejected: Sequence[Rejection]) -> None:
    if not rejected:
        return
    conn.execute(
        rejections.insert(),
        [
            {"submission_id": submission_id, "row": r.row, "column": r.column, "value": r.value, "reason": r.reason}
            for r in rejected
        ],  # fmt: skip
    )


def _archive_raw(conn: Connection, sha: str, raw: bytes) -> None:
    """Content-addressed: the same bytes from two agencies are archived once."""
    if conn.execute(sa.select(raw_files.c.sha256).where(raw_files.c.sha256 == sha)).first() is None:
        conn.execute(raw_files.insert().values(sha256=sha, size_bytes=len(raw), content=raw))
