"""QA of the samples in the store: flags written into ``samples.qa_flag``, never deletions.

:func:`apply_qa` runs :func:`mrv.samples.qa.check_samples` inside the caller's write transaction:

* at submission time (``submission_id`` given, called by :func:`mrv.samples.submit.submit_file`)
  only the new submission's flags are written, and only the stored samples that can matter are
  read (:func:`neighbourhood`): those of the same sampling date in the grid cells within the
  duplicate tolerance of a new sample, those of the same agency and site id (jitter), and --
  for new crowd samples -- the lab samples in the cells within the outlier radius. The cells are
  the store's indexed ``gx``/``gy`` columns (1 km), queried through a temporary table of the new
  samples' cells joined on the index, so the cost grows with the new samples and their
  neighbourhoods, not with the store: a submission next to 1,000,000 stored samples elsewhere
  reads none of them. Stored samples are the reference (the earlier record of a duplicate or
  site is kept, their own flags are kept), and crowd outliers are judged for the new samples only;
* for ``mrv samples qa`` (``submission_id=None``) every flag is recomputed and the changed ones
  are written, e.g. after new lab data made a crowd sample an outlier (or cleared it).

Either way a sample id used on several lines of one file is reported on every line: the
later lines are rejected by the ingest, and the kept record is flagged with those lines.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mrv.samples.qa import SampleChecks, check_samples
from mrv.samples.store import CELL_M, SampleStore, cells, fetch_tuples, insert_rows, rejections, samples

__all__ = ["QAOutcome", "apply_qa", "neighbourhood", "qa_frame", "rerun_qa"]

#: Columns the checks read.
QA_COLUMNS = [
    "id", "submission_id", "row", "agency", "source", "submitter", "sample_id", "site_id", "x", "y",
    "sampling_date", "top_cm", "bottom_cm", "soc_g_kg", "soc_sd_g_kg", "bulk_density_g_cm3", "gps_accuracy_m",
    "qa_flag",
]  # fmt: skip
_FLOATS = ["x", "y", "top_cm", "bottom_cm", "soc_g_kg", "soc_sd_g_kg", "bulk_density_g_cm3", "gps_accuracy_m"]


@dataclass(frozen=True)
class QAOutcome:
    """What :func:`apply_qa` found and changed."""

    checked: int
    """Samples whose flags were (re)computed."""
    flagged: int
    """Of those, samples with a flag now."""
    newly_flagged: int
    """Samples that had no flag before and have one now."""
    cleared: int
    """Samples that had a flag before and have none now."""
    changed: int
    """Samples whose flag text changed (including the two above)."""
    neighbours: int = 0
    """Stored samples read as the new samples' neighbourhood (submission time only)."""


def _frame(rows: Iterable[tuple[object, ...]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=QA_COLUMNS)
    for col in _FLOATS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    frame["qa_flag"] = frame["qa_flag"].fillna("").astype(str)
    return frame


#: Text columns with few distinct values: one string object per value is kept (200,000 copies of a date cost 11 MB).
_SHARED = ("agency", "source", "submitter", "sampling_date", "qa_flag")
_INTS = ("id", "submission_id", "row")
#: Rows read from the database at a time.
_READ_BATCH = 20_000


def _read(conn: Connection, stmt: sa.Executable) -> pd.DataFrame:
    """The QA columns of ``stmt`` (a :func:`_select`), read in batches into typed columns.

    Rows are never all held as tuples of Python objects: each batch becomes numpy columns
    (floats, ints; repeated texts share one object) before the next is fetched.
    """
    result = conn.execute(stmt)
    cursor = result.cursor  # type: ignore[attr-defined]
    shared: dict[object, object] = {}
    parts: list[pd.DataFrame] = []
    try:
        while cursor is not None and (rows := cursor.fetchmany(_READ_BATCH)):
            data: dict[str, np.ndarray] = {}
            for name, col in zip(QA_COLUMNS, zip(*rows, strict=True), strict=True):
                if name in _FLOATS:
                    data[name] = np.array(col, dtype=float)  # None -> NaN
                elif name in _INTS:
                    data[name] = np.asarray(col, dtype=np.int64)
                elif name in _SHARED:
                    data[name] = np.array([shared.setdefault(v, v) for v in col], dtype=object)
                else:
                    data[name] = np.array(col, dtype=object)
            del rows
            parts.append(pd.DataFrame(data, columns=QA_COLUMNS))
    finally:
        result.close()
    if not parts:
        return _frame([])
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    frame["qa_flag"] = frame["qa_flag"].fillna("").astype(str)
    return frame


def _select() -> sa.Select[tuple[object, ...]]:
    return sa.select(*[samples.c[c] for c in QA_COLUMNS])


def qa_frame(conn: Connection) -> pd.DataFrame:
    """Every stored sample's QA columns, oldest first (submission, then file row)."""
    return _read(conn, _select().order_by(samples.c.submission_id, samples.c.row))


def _cell_keys(x: np.ndarray, y: np.ndarray, margin_m: float) -> pd.DataFrame:
    """Distinct ``(gy, gx)`` cells overlapping the squares ``x ± margin_m``, ``y ± margin_m``, with the row they came from."""
    x0, x1 = cells(x - margin_m), cells(x + margin_m)
    y0, y1 = cells(y - margin_m), cells(y + margin_m)
    reach = int(max(1, math.ceil(2 * margin_m / CELL_M) + 1))
    parts = []
    pos = np.arange(len(x))
    for dy in range(reach):
        for dx in range(reach):
            gy, gx = y0 + dy, x0 + dx
            keep = (gy <= y1) & (gx <= x1)
            parts.append(pd.DataFrame({"pos": pos[keep], "gy": gy[keep], "gx": gx[keep]}))
    return pd.concat(parts, ignore_index=True)


def _temp_table(conn: Connection, name: str, columns: list[sa.Column[object]], rows: pd.DataFrame) -> sa.Table:
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
    table = sa.Table(name, sa.MetaData(), *columns, prefixes=["TEMPORARY"])
    table.create(conn)
    names = [c.name for c in columns]
    for lo in range(0, len(rows), 20_000):  # in batches: a 200,000-sample submission has as many keys
        part = rows.iloc[lo : lo + 20_000]
        insert_rows(conn, table, names, list(zip(*[part[n].tolist() for n in names], strict=True)))
    return table


def neighbourhood(conn: Connection, new: pd.DataFrame, checks: SampleChecks) -> pd.DataFrame:
    """Stored samples (not in ``new``) that the checks of ``new`` can involve; see the module docstring."""
    submission_ids = {int(s) for s in new["submission_id"].unique()}
    not_new = samples.c.submission_id.notin_(sorted(submission_ids))
    if conn.execute(sa.select(samples.c.id).where(not_new).limit(1)).first() is None:
        return _frame([])  # nothing stored before: no neighbours
    x, y = new["x"].to_numpy(dtype=float), new["y"].to_numpy(dtype=float)
    parts: list[pd.DataFrame] = []

    # Duplicates: the same date in the cells within the tolerance.
    keys = _cell_keys(x, y, checks.duplicate_tolerance_m)
    keys["sampling_date"] = new["sampling_date"].astype(str).to_numpy()[keys["pos"].to_numpy()]
    keys = keys.drop(columns="pos").drop_duplicates()
    dup = _temp_table(conn, "mrv_qa_dup_cells", [sa.Column("sampling_date", sa.Text), sa.Column("gy", sa.Integer),
                                                  sa.Column("gx", sa.Integer)], keys)  # fmt: skip
    parts.append(_read(conn,
        _select().join(dup, sa.and_(samples.c.sampling_date == dup.c.sampling_date, samples.c.gy == dup.c.gy,
                                    samples.c.gx == dup.c.gx)).where(not_new)
    ))  # fmt: skip
    dup.drop(conn)

    # Jitter: the earlier records of the same sites (one join on the site index; none for a new agency).
    site_keys = new[["agency", "site_id"]].astype(str).drop_duplicates()
    site_keys = site_keys[site_keys["site_id"].str.strip() != ""]
    agencies = sorted(site_keys["agency"].unique())
    known = conn.execute(sa.select(samples.c.id).where(samples.c.agency.in_(agencies), not_new).limit(1)).first()
    if known is not None and len(site_keys):
        sites = _temp_table(conn, "mrv_qa_sites", [sa.Column("agency", sa.Text), sa.Column("site_id", sa.Text)],
                            site_keys)  # fmt: skip
        parts.append(_read(conn,
            _select().join(sites, sa.and_(samples.c.agency == sites.c.agency, samples.c.site_id == sites.c.site_id))
            .where(not_new)
        ))  # fmt: skip
        sites.drop(conn)

    # Outliers: lab samples within the radius of new crowd samples (any date).
    crowd = (new["source"] == "crowd").to_numpy()
    if crowd.any():
        ck = _cell_keys(x[crowd], y[crowd], checks.outlier_radius_m).drop(columns="pos").drop_duplicates()
        lab = _temp_table(conn, "mrv_qa_lab_cells", [sa.Column("gy", sa.Integer), sa.Column("gx", sa.Integer)], ck)
        parts.append(_read(conn,
            _select().join(lab, sa.and_(samples.c.gy == lab.c.gy, samples.c.gx == lab.c.gx))
            .where(samples.c.source == "lab", not_new)
        ))  # fmt: skip
        lab.drop(conn)
    if not parts:
        return _frame([])
    return pd.concat(parts, ignore_index=True).drop_duplicates(subset="id")


def apply_qa(
    conn: Connection,
    checks: SampleChecks | None = None,
    *,
    submission_id: int | None = None,
    new_samples: pd.DataFrame | None = None,
    new_agency: str | None = None,
) -> QAOutcome:
    """Recompute flags and write the changed ones (see the module docstring); call inside a write transaction.

    ``new_samples``: the submission's samples as inserted (canonical columns, ``agency``), so that
    they need not be read back; their database ids are looked up by file row.
    """
    c = checks or SampleChecks()
    n_neighbours = 0
    if submission_id is None:
        frame = qa_frame(conn)
    else:
        new = (
            _read(conn, _select().where(samples.c.submission_id == submission_id))
            if new_samples is None
            else _new_frame(conn, submission_id, new_samples, agency=new_agency)
        )
        if new.empty:
            return QAOutcome(0, 0, 0, 0, 0)
        near = neighbourhood(conn, new, c)
        n_neighbours = len(near)
        frame = pd.concat([near, new], ignore_index=True) if len(near) else new
        frame = frame.sort_values(["submission_id", "row"], kind="stable").reset_index(drop=True)
    if frame.empty:
        return QAOutcome(0, 0, 0, 0, 0)
    target = (
        (frame["submission_id"] == submission_id).to_numpy()
        if submission_id is not None
        else np.ones(len(frame), dtype=bool)
    )
    checked = check_samples(frame, c, site_by=("agency", "site_id"), evaluate=target)
    new_flags = checked["qa_flag"].to_numpy(dtype=object).copy()
    _note_reused_ids(conn, frame, new_flags, target, submission_id)
    old = frame["qa_flag"].to_numpy(dtype=object)
    write = target & (old != new_flags)
    if write.any():
        stmt = samples.update().where(samples.c.id == sa.bindparam("sample_pk")).values(qa_flag=sa.bindparam("flag"))
        pks, flags = frame["id"].to_numpy()[write], new_flags[write]
        for lo in range(0, len(pks), 20_000):
            conn.execute(stmt, [{"sample_pk": int(pk), "flag": str(f)}
                                for pk, f in zip(pks[lo : lo + 20_000], flags[lo : lo + 20_000], strict=True)])  # fmt: skip
    return QAOutcome(
        checked=int(target.sum()),
        flagged=int((target & (new_flags != "")).sum()),
        newly_flagged=int((write & (old == "")).sum()),
        cleared=int((write & (new_flags == "")).sum()),
        changed=int(write.sum()),
        neighbours=n_neighbours,
    )


def _new_frame(conn: Connection, submission_id: int, accepted: pd.DataFrame, *, agency: str | None) -> pd.DataFrame:
    """The QA columns of a just-inserted submission from its frame, with the ids looked up by row."""
    ids = dict(fetch_tuples(conn, sa.select(samples.c.row, samples.c.id).where(samples.c.submission_id == submission_id)))
    rows = accepted["row"].astype(int).to_numpy()
    frame = pd.DataFrame({
        "id": [ids[int(r)] for r in rows], "submission_id": submission_id, "row": rows,
        **{col: accepted[col].to_numpy() for col in QA_COLUMNS if col not in ("id", "submission_id", "row", "qa_flag",
                                                                             "agency")},
        "agency": agency if agency is not None else accepted["agency"].to_numpy(),
        "qa_flag": "",
    })[QA_COLUMNS]  # fmt: skip
    for col in _FLOATS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    for col in ("agency", "source", "submitter", "sample_id", "site_id"):
        frame[col] = [v if isinstance(v, str) else None if v is None or v != v else str(v) for v in frame[col].tolist()]
    # As the database returns it (YYYY-MM-DD text), whatever type the ingest used.
    frame["sampling_date"] = [v if isinstance(v, str) else v.isoformat()[:10] for v in frame["sampling_date"].tolist()]
    return frame


def _note_reused_ids(
    conn: Connection, frame: pd.DataFrame, flags: np.ndarray, target: np.ndarray, submission_id: int | None
) -> None:
    """Flag the kept record of a sample id that the file used on further (rejected) lines."""
    query = sa.select(rejections.c.submission_id, rejections.c.value, rejections.c.row).where(
        rejections.c.reason.like("%duplicate sample id%")
    )
    if submission_id is not None:
        query = query.where(rejections.c.submission_id == submission_id)
    lines: dict[tuple[int, str], list[int]] = {}
    for sub, value, row in conn.execute(query):
        lines.setdefault((int(sub), str(value)), []).append(int(row))
    if not lines:
        return
    subs = frame["submission_id"].to_numpy()
    ids = frame["sample_id"].astype(str).to_numpy()
    rows = frame["row"].to_numpy()
    for i in np.flatnonzero(target):
        more = lines.get((int(subs[i]), ids[i]))
        if not more:
            continue
        note = (
            f"sample id {ids[i]} (line {int(rows[i])}) is used again on line(s) "
            f"{', '.join(str(r) for r in sorted(more))} of the same file (rejected there); check which record is right"
        )
        flags[i] = f"{flags[i]}; {note}" if flags[i] else note


def rerun_qa(store: SampleStore, checks: SampleChecks | None = None) -> QAOutcome:
    """Recompute every sample's flags in one transaction (``mrv samples qa``)."""
    with store.transaction() as conn:
        return apply_qa(conn, checks)
