"""Submit an agency's sample file to the store: hash, ingest, and write everything in one transaction.

* A submission is identified by (file sha256, profile sha256) per agency. The same bytes read
  with the same profile are not stored again: the earlier submission is returned, flagged
  ``duplicate_of``. The same bytes under *another* profile (e.g. a corrected unit) are a
  correction: the new submission is stored and the earlier one marked ``superseded`` (its
  samples moved to ``retired_samples``, kept and reported, no longer used) in the same
  transaction. ``replaces=ID`` supersedes a submission of a different file the same way, and
  :func:`withdraw` withdraws one with a reason. Nothing is ever deleted.
* Otherwise the file is validated with :func:`mrv.samples.ingest.ingest` and the submission,
  its accepted samples, its rejected rows, its summary (counts by outcome and reason,
  :func:`summarise`) and the raw bytes are written in ONE transaction.
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
import hashlib
import json
import os
import re
import stat
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mrv.errors import ConfigError, SampleError, SubmissionRejected
from mrv.samples import ingest as ingest_mod
from mrv.samples.formats import SampleFormat
from mrv.samples.ingest import CANONICAL_COLUMNS, IngestResult, Rejection, ingest
from mrv.samples.qa import SampleChecks
from mrv.samples.store import (
    FAILED,
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
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
    sha = hashlib.sha256(raw).hexdigest()
    phash = profile_hash(fmt)
    meta = {"agency": agency, "source": source, "fmt": fmt, "filename": name, "sha": sha, "phash": phash}

    with store.engine.connect() as conn:
        earlier = _stored_submission_in(conn, agency, sha)
        if earlier is not None and earlier[1] == phash and replaces is None:
            return _report(conn, earlier[0], duplicate_of=earlier[0], store_url=store.safe_url)
        if replaces is not None:
            _check_replaceable(conn, replaces, agency, store.safe_url)

    try:
        result = _ingest_bytes(raw, name, fmt, source=source, agency=agency, project_crs=project_crs,
                               region_bounds=region_bounds, today=today)  # fmt: skip
    except SubmissionRejected as exc:
        submission_id = _record(store, meta, status=REJECTED, reason=str(exc))
        raise SubmissionRejected(f"{exc} (Recorded as rejected submission {submission_id}.)") from exc

    try:
        for attempt in range(_ATTEMPTS):
            try:
                with store.transaction() as conn:
                    found = _stored_submission_in(conn, agency, sha)
                    if found is not None and found[1] == phash and replaces is None:
                        return _report(conn, found[0], duplicate_of=found[0], store_url=store.safe_url)
                    # The replaced submissions are retired first: the new one may reuse their sample ids.
                    olds = sorted({i for i in (found[0] if found else None, replaces) if i is not None})
                    for old in olds:
                        _check_replaceable(conn, old, agency, store.safe_url)
                        _retire(conn, old, reason="superseded")
                    new_id = _insert_submission(conn, meta, counts=(0, 0, 0), status=STORED, reason=None)
                    _link_superseded(conn, olds, new_id)
                    rejected, stored = _store_rows(conn, new_id, result, meta=meta, raw=raw)
                    apply_qa(conn, checks, submission_id=new_id, new_samples=stored, new_agency=agency)
                    del stored
                    _write_summary(conn, new_id, result, rejected)
                stored_id = new_id
                break
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
    del result, raw  # the report of a 200,000-row file is built without the ingested frame in memory
    with store.engine.connect() as conn:
        return _report(conn, stored_id, store_url=store.safe_url)


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
    conn: Connection, submission_id: int, result: IngestResult, *, meta: dict[str, Any], raw: bytes
) -> tuple[tuple[Rejection, ...], pd.DataFrame]:
    """Counts into the ledger row, samples, rejections and the raw file; returns the rejected rows and the samples."""
    accepted, id_clashes = _split_known_ids(conn, result.accepted, agency=meta["agency"], fmt=meta["fmt"])
    # Counts are file lines: a long-layout record spans several lines (IngestResult.record_lines).
    lines = result.lines_by_row()
    id_clashes = [dataclasses.replace(r, row=n) for r in id_clashes for n in lines.get(r.row, (r.row,))]
    n_accepted = sum(len(lines.get(int(row), (row,))) for row in accepted["row"])
    rejected = tuple(sorted((*result.rejected, *id_clashes), key=lambda r: r.row))
    if n_accepted + len(rejected) != result.submitted:  # pragma: no cover - guards ingest's contract
        raise AssertionError(f"{n_accepted} accepted + {len(rejected)} rejected != {result.submitted} submitted")
    conn.execute(
        submissions.update()
        .where(submissions.c.submission_id == submission_id)
        .values(submitted=result.submitted, accepted=n_accepted, rejected=len(rejected))
    )
    _insert_samples(conn, submission_id, meta["agency"], accepted)
    _insert_rejections(conn, submission_id, rejected)
    _archive_raw(conn, meta["sha"], raw)
    return rejected, accepted


def _split_known_ids(
    conn: Connection, accepted: pd.DataFrame, *, agency: str, fmt: SampleFormat
) -> tuple[pd.DataFrame, list[Rejection]]:
    """Move rows whose sample id this agency already stored (in a submission in use) to the rejected rows."""
    known: dict[str, int] = {}
    stored_before = conn.execute(sa.select(samples.c.id).where(samples.c.agency == agency).limit(1)).first()
    ids = [str(s) for s in accepted["sample_id"]] if stored_before is not None else []
    for chunk in _chunks(ids, 500):
        query = sa.select(samples.c.sample_id, samples.c.submission_id).where(
            samples.c.agency == agency, samples.c.sample_id.in_(chunk)
        )
        known.update({str(sid): int(sub) for sid, sub in fetch_tuples(conn, query)})
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
            "give each sample its own id (or correct the earlier submission: mrv samples submit --replaces)",
            *(("id_already_stored", str(sid)) if "code" in Rejection.__dataclass_fields__ else ()),
        )
        for row, sid in zip(accepted.loc[clash, "row"], accepted.loc[clash, "sample_id"], strict=True)
    ]
    return accepted.loc[~clash], rejected


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _insert_samples(conn: Connection, submission_id: int, agency: str, accepted: pd.DataFrame) -> None:
    """Insert in batches of ``_BATCH`` rows, with the grid cells of the neighbourhood index."""
    if accepted.empty:
        return
    columns = ["submission_id", "agency", "qa_flag", "ingest_flag", "gx", "gy", *CANONICAL_COLUMNS]
    # In index order (cell, date): B-tree inserts then land next to each other, about 1.7x faster into a large store.
    order = np.lexsort((accepted["sampling_date"].astype(str).to_numpy(), cells(accepted["x"]), cells(accepted["y"])))
    for lo in range(0, len(order), _BATCH):
        part = accepted.iloc[order[lo : lo + _BATCH]]  # one batch copied at a time
        n = len(part)
        notes = part[INGEST_FLAG].fillna("").astype(str).tolist() if INGEST_FLAG in part.columns else [""] * n
        values = [
            [submission_id] * n, [agency] * n, [""] * n, notes,
            cells(part["x"]).tolist(), cells(part["y"]).tolist(),
            *[db_column(part[c]) for c in CANONICAL_COLUMNS],
        ]  # fmt: skip
        insert_rows(conn, samples, columns, list(zip(*values, strict=True)))


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
    result: IngestResult, *, accepted_lines: int, rejected: Sequence[Rejection], accepted_samples: int, flagged: int
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


def _write_summary(conn: Connection, submission_id: int, result: IngestResult, rejected: Sequence[Rejection]) -> None:
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
