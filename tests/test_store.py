"""The sample store on SQLite and PostgreSQL: idempotent, atomic submissions; ids unique per agency;
QA flags written at submission and by ``mrv samples qa``; schema upgrade; concurrent writers; CLI.

Tests taking the ``store`` (or ``store_url``) fixture run once per backend: an SQLite file and a
database of the throw-away PostgreSQL server of tests/postgres.py (see conftest.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import multiprocessing
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pyproj import Transformer

from mrv.errors import ConfigError, MRVError, SampleError, SubmissionRejected
from mrv.samples import store_qa
from mrv.samples import submit as submit_mod
from mrv.samples.cli import add_commands
from mrv.samples.formats import SampleFormat, load_format
from mrv.samples.ingest import CANONICAL_COLUMNS
from mrv.samples.store import (
    SCHEMA_VERSION,
    SampleStore,
    flag_counts,
    flagged_samples,
    list_submissions,
    raw_file,
    samples_frame,
    submission_report,
)
from mrv.samples.store_qa import rerun_qa
from mrv.samples.submit import submit_file

REPO = Path(__file__).resolve().parents[1]
FORMATS = (REPO / "mrv" / "profiles" / "sample_formats",)
BOUNDS = (580000.0, 5355000.0, 585000.0, 5360000.0)
TODAY = dt.date(2025, 1, 1)
HEADER = (
    "sample_id,site_id,field_id,x,y,epsg,sampling_date,top_cm,bottom_cm,soc_g_kg,"
    "bulk_density_g_cm3,coarse_fragments_vol_pct,method"
)
CROWD_HEADER = "sample_id,submitter,lon,lat,sampling_date,top_cm,bottom_cm,soc_percent,method"


def lab_row(
    sample_id: str,
    soc: str = "20.5",
    bd: str = "1.30",
    *,
    site: str | None = None,
    x: float | None = None,
    y: float = 5356000.0,
    depth: tuple[int, int] = (0, 15),
    date: str = "2021-05-01",
) -> str:
    """One lab row; by default every sample id is its own site, 100 m from the others (S1 at x=581100)."""
    n = int(re.sub(r"\D", "", sample_id) or 0)
    x = 581000.0 + 100.0 * n if x is None else x
    site = site or f"P{sample_id}"
    return f"{sample_id},{site},F1,{x},{y},32633,{date},{depth[0]},{depth[1]},{soc},{bd},5,dc"


def lonlat(x: float, y: float) -> str:
    """``lon,lat`` (WGS 84) of a point given in the project CRS (UTM 33N), as a crowd file writes it."""
    lon, lat = Transformer.from_crs(32633, 4326, always_xy=True).transform(x, y)
    return f"{lon:.7f},{lat:.7f}"


def write_csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def lab() -> SampleFormat:
    return load_format("lab_wide", search_dirs=FORMATS)


@pytest.fixture
def crowd() -> SampleFormat:
    return load_format("crowd", search_dirs=FORMATS)


@pytest.fixture
def store(store_url: str) -> Iterator[SampleStore]:
    with SampleStore.open(store_url) as s:
        yield s


def submit(store: SampleStore, path: Path, fmt: SampleFormat, agency: str = "LabA", source: str = "lab"):
    return submit_file(
        store, path, agency=agency, source=source, fmt=fmt, project_crs="EPSG:32633", region_bounds=BOUNDS, today=TODAY
    )


def table_counts(store: SampleStore) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one())
            for t in ("submissions", "samples", "rejections", "raw_files")
        }


def flags_by_id(store: SampleStore) -> dict[str, str]:
    frame = samples_frame(store)
    return {f"{a}/{s}": f for a, s, f in zip(frame["agency"], frame["sample_id"], frame["qa_flag"], strict=True)}


# ---------------------------------------------------------------------------------------- schema


def test_open_creates_schema_with_wal_foreign_keys_and_version(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "s.db"
    with SampleStore.open(f"sqlite:///{db}") as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.backend == "sqlite"
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert set(sa.inspect(conn).get_table_names()) >= {"submissions", "samples", "rejections", "raw_files"}
    # WAL is persistent in the file: a plain sqlite3 connection sees it too.
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Reopening keeps the data and the version.
    with SampleStore.open(db) as again:
        assert again.schema_version() == SCHEMA_VERSION
        assert again.migrated_from is None


def test_schema_on_both_backends(store: SampleStore, store_url: str) -> None:
    assert store.backend == store_url.split(":")[0].split("+")[0]
    assert store.schema_version() == SCHEMA_VERSION
    with store.engine.connect() as conn:
        cols = {c["name"] for c in sa.inspect(conn).get_columns("samples")}
        indexes = {i["name"]: i for i in sa.inspect(conn).get_indexes("submissions")}
    assert {*CANONICAL_COLUMNS, "qa_flag", "soc_sd_g_kg", "gps_accuracy_m"} <= cols
    assert indexes["uq_submissions_agency_sha256_stored"]["unique"]
    # The index is partial (only stored submissions): check the DDL the backend kept.
    with store.engine.connect() as conn:
        if store.backend == "postgresql":
            ddl = conn.execute(
                sa.text(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                    "AND indexname = 'uq_submissions_agency_sha256_stored'"
                )
            ).scalar_one()
        else:
            ddl = conn.execute(
                sa.text("SELECT sql FROM sqlite_master WHERE name = 'uq_submissions_agency_sha256_stored'")
            ).scalar_one()
    assert "WHERE" in ddl.upper()
    assert "stored" in ddl


def _insert_submission(conn: sa.Connection, status: str, sha: str = "a" * 64) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO submissions (agency, source, format, filename, sha256, received_utc, submitted, accepted, "
            "rejected, status) VALUES ('A', 'lab', 'f', 'x.csv', :sha, 'now', 0, 0, 0, :status)"
        ),
        {"sha": sha, "status": status},
    )


def test_partial_unique_index_allows_retried_rejections_but_one_stored_file(store: SampleStore) -> None:
    with store.transaction() as conn:
        _insert_submission(conn, "rejected")
        _insert_submission(conn, "rejected")
        _insert_submission(conn, "stored")
    with pytest.raises(sa.exc.IntegrityError), store.transaction() as conn:
        _insert_submission(conn, "stored")
    with store.transaction() as conn:
        _insert_submission(conn, "stored", sha="b" * 64)  # another file is fine
    assert [s.status for s in list_submissions(store)] == ["rejected", "rejected", "stored", "stored"]


def test_count_constraint_and_foreign_key_are_enforced(store: SampleStore) -> None:
    with pytest.raises(sa.exc.IntegrityError), store.transaction() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO rejections (submission_id, \"row\", \"column\", value, reason) "
                "VALUES (999, 2, 'a', 'b', 'c')"
            )
        )
    with pytest.raises(sa.exc.IntegrityError), store.transaction() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO submissions (agency, source, format, filename, sha256, received_utc, submitted, "
                "accepted, rejected, status) VALUES ('A', 'lab', 'f', 'x.csv', 'c', 'now', 3, 1, 1, 'stored')"
            )
        )
    assert table_counts(store) == {"submissions": 0, "samples": 0, "rejections": 0, "raw_files": 0}


def test_other_schema_version_is_refused(store_url: str) -> None:
    with SampleStore.open(store_url) as store, store.transaction() as conn:
        conn.execute(sa.text("UPDATE schema_version SET version = 99"))
    with pytest.raises(ConfigError, match="schema version 99"):
        SampleStore.open(store_url)


def test_version_1_database_is_upgraded_in_place(store_url: str, tmp_path: Path) -> None:
    """A schema-1 store (no soc_sd_g_kg / gps_accuracy_m) is upgraded on open and keeps its data."""
    fmt_path = tmp_path / "som.yaml"
    fmt_path.write_text(
        "name: som\ncolumns: {sample_id: id, x: x, y: y, sampling_date: date, top: top, bottom: bottom, som: loi}\n"
        "epsg: 32633\nsom_unit: percent\n"
    )
    som_fmt = load_format(fmt_path, search_dirs=())
    path = tmp_path / "som.csv"
    path.write_text("id,x,y,date,top,bottom,loi\nA,581000,5356000,2021-05-01,0,30,3.0\n")
    with SampleStore.open(store_url) as store:
        submit(store, path, som_fmt)
        submit(store, write_csv(tmp_path / "lab.csv", [lab_row("S1")]), load_format("lab_wide", search_dirs=FORMATS))
        with store.transaction() as conn:  # make it look like schema 1
            conn.exec_driver_sql("ALTER TABLE samples DROP COLUMN soc_sd_g_kg")
            conn.exec_driver_sql("ALTER TABLE samples DROP COLUMN gps_accuracy_m")
            conn.execute(sa.text("UPDATE schema_version SET version = 1"))
    with SampleStore.open(store_url) as store:
        assert store.migrated_from == 1
        assert store.schema_version() == SCHEMA_VERSION
        frame = samples_frame(store).set_index("sample_id")
        assert frame.loc["A", "soc_sd_g_kg"] == pytest.approx(0.08 * 30.0)  # restored from the method note
        assert frame.loc["S1", "soc_sd_g_kg"] != frame.loc["S1", "soc_sd_g_kg"]  # measured SOC: NaN
        assert len(list_submissions(store)) == 2
    with SampleStore.open(store_url) as again:
        assert again.migrated_from is None


def test_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="database URL"):
        SampleStore.open("nosuchdb+driver://x/y")


# ------------------------------------------------------------------------------------ submissions


def test_submit_stores_samples_rejections_and_raw_bytes(store: SampleStore, lab: SampleFormat, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [lab_row("S1"), lab_row("S2", soc="abc"), lab_row("S3")])
    rep = submit(store, path, lab)
    s = rep.submission
    assert rep.duplicate_of is None
    assert (s.status, s.submitted, s.accepted, s.rejected) == ("stored", 3, 2, 1)
    assert s.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (s.agency, s.source, s.format, s.filename) == ("LabA", "lab", "lab_wide", "a.csv")
    assert [(a.row, a.sample_id) for a in rep.accepted_rows] == [(2, "S1"), (4, "S3")]
    assert [(r.row, r.column, r.value) for r in rep.rejections] == [(3, "soc_g_kg", "abc")]
    assert rep.flagged == 0
    assert raw_file(store, s.sha256) == path.read_bytes()
    frame = samples_frame(store)
    assert list(frame.columns[: len(CANONICAL_COLUMNS)]) == CANONICAL_COLUMNS
    assert list(frame["sample_id"]) == ["S1", "S3"]
    assert set(frame["submission_id"]) == {s.submission_id}
    assert frame["soc_g_kg"].tolist() == pytest.approx([20.5, 20.5])
    assert frame["x"].tolist() == pytest.approx([581100.0, 581300.0])
    assert (frame["qa_flag"] == "").all()


def test_resubmitting_the_same_bytes_is_idempotent(store: SampleStore, lab: SampleFormat, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [lab_row("S1"), lab_row("S2")])
    first = submit(store, path, lab)
    before = table_counts(store)
    renamed = tmp_path / "copy_of_a.csv"
    renamed.write_bytes(path.read_bytes())
    again = submit(store, renamed, lab)
    assert again.duplicate_of == first.submission_id
    assert again.submission == first.submission
    assert table_counts(store) == before
    # The same bytes from another agency are a new submission (its own sample ids), archived once;
    # its samples are flagged as duplicates of the first agency's (kept, not rejected).
    other = submit(store, path, lab, agency="LabB")
    assert other.duplicate_of is None
    assert other.submission.accepted == 2
    assert other.flagged == 2
    assert "duplicate of sample S1 (LabA, submission 1)" in other.accepted_rows[0].qa_flag
    counts = table_counts(store)
    assert (counts["submissions"], counts["samples"], counts["raw_files"]) == (2, 4, 1)
    assert first.flagged == submission_report(store, first.submission_id).flagged == 0  # the earlier one is kept


def test_sample_ids_are_unique_per_agency_across_submissions(
    store: SampleStore, lab: SampleFormat, tmp_path: Path
) -> None:
    first = submit(store, write_csv(tmp_path / "a.csv", [lab_row("S1"), lab_row("S2")]), lab)
    second = submit(store, write_csv(tmp_path / "b.csv", [lab_row("S2"), lab_row("S3"), lab_row("S1", soc="-1")]), lab)
    s = second.submission
    assert (s.submitted, s.accepted, s.rejected) == (3, 1, 2)
    assert s.accepted + s.rejected == s.submitted
    reasons = {r.row: r for r in second.rejections}
    assert reasons[2].column == "sample_id"
    assert reasons[2].value == "S2"
    assert f"already stored by LabA in submission {first.submission_id}" in reasons[2].reason
    assert "greater than 0" in reasons[4].reason  # invalid rows keep their own reason
    assert [a.sample_id for a in second.accepted_rows] == ["S3"]
    assert sorted(samples_frame(store)["sample_id"]) == ["S1", "S2", "S3"]
    # Another agency may use the same ids.
    third = submit(store, write_csv(tmp_path / "c.csv", [lab_row("S1", site="Q1", x=584000)]), lab, agency="LabB")
    assert third.submission.accepted == 1
    assert submission_report(store, second.submission_id) == second


def test_failure_during_write_rolls_everything_back(
    store: SampleStore, lab: SampleFormat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv(tmp_path / "a.csv", [lab_row("S1"), lab_row("S2", soc="abc")])

    def boom(*_args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(submit_mod, "_insert_rejections", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        submit(store, path, lab)
    assert table_counts(store) == {"submissions": 0, "samples": 0, "rejections": 0, "raw_files": 0}

    monkeypatch.undo()
    rep = submit(store, path, lab)  # not mistaken for a duplicate of the rolled-back attempt
    assert rep.duplicate_of is None
    assert table_counts(store) == {"submissions": 1, "samples": 1, "rejections": 1, "raw_files": 1}


def test_failure_archiving_raw_file_rolls_back_samples(
    store: SampleStore, lab: SampleFormat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_args: object) -> None:
        raise OSError("archive unavailable")

    monkeypatch.setattr(submit_mod, "_archive_raw", boom)
    with pytest.raises(OSError, match="archive unavailable"):
        submit(store, write_csv(tmp_path / "a.csv", [lab_row("S1")]), lab)
    assert sum(table_counts(store).values()) == 0


def test_failure_in_qa_rolls_back_the_whole_submission(
    store: SampleStore, lab: SampleFormat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The QA runs inside the submission's transaction: when it fails, nothing of the file is left."""
    submit(store, write_csv(tmp_path / "a.csv", [lab_row("S1")]), lab)
    before = table_counts(store)

    def boom(*_args: object, **_kw: object) -> None:
        raise RuntimeError("QA crashed")

    monkeypatch.setattr(store_qa, "check_samples", boom)
    with pytest.raises(RuntimeError, match="QA crashed"):
        submit(store, write_csv(tmp_path / "b.csv", [lab_row("S2"), lab_row("S3", soc="x")]), lab)
    assert table_counts(store) == before


def test_whole_file_rejection_is_recorded_and_raised(store: SampleStore, lab: SampleFormat, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,lat,lon\n1,2,3\n")
    with pytest.raises(SubmissionRejected, match=r"lacks column.*Recorded as rejected submission 1"):
        submit(store, bad, lab)
    (entry,) = list_submissions(store)
    assert entry.status == "rejected"
    assert "lacks column" in (entry.reason or "")
    assert (entry.submitted, entry.accepted, entry.rejected) == (0, 0, 0)
    assert entry.sha256 == hashlib.sha256(bad.read_bytes()).hexdigest()
    assert table_counts(store) == {"submissions": 1, "samples": 0, "rejections": 0, "raw_files": 0}
    # A rejected file is not a duplicate: resubmitting records another attempt.
    with pytest.raises(SubmissionRejected):
        submit(store, bad, lab)
    assert [s.status for s in list_submissions(store)] == ["rejected", "rejected"]


def test_missing_file_is_rejected_without_a_ledger_row(store: SampleStore, lab: SampleFormat, tmp_path: Path) -> None:
    with pytest.raises(SubmissionRejected, match="Cannot read"):
        submit(store, tmp_path / "nope.csv", lab)
    assert list_submissions(store) == []


def test_queries_filter_and_unknown_submission(
    store: SampleStore, lab: SampleFormat, crowd: SampleFormat, tmp_path: Path
) -> None:
    submit(store, write_csv(tmp_path / "a.csv", [lab_row("S1")]), lab)
    cpath = write_csv(tmp_path / "crowd.csv", ["C1,anna,16.107012,48.360845,2021-05-02,0,30,1.8,kit"], CROWD_HEADER)
    rep = submit_file(store, cpath, agency="Crowd", source="crowd", fmt=crowd, project_crs="EPSG:32633", today=TODAY)
    assert rep.submission.accepted == 1
    assert list(samples_frame(store, source="crowd")["sample_id"]) == ["C1"]
    assert list(samples_frame(store, source="lab")["sample_id"]) == ["S1"]
    assert samples_frame(store, source="nothing").empty
    assert [s.agency for s in list_submissions(store)] == ["LabA", "Crowd"]
    with pytest.raises(SampleError, match="no submission 42"):
        submission_report(store, 42)
    with pytest.raises(SampleError, match="no submission 42"):
        flagged_samples(store, submission_id=42)


# -------------------------------------------------------------------------------------- concurrency


def _submit_in_child(url: str, path: str, sample_ids: list[str], barrier: Any, results: Any) -> None:
    """Child process: open the store itself, wait for the sibling, submit, report (id, duplicate_of, accepted)."""
    try:
        fmt = load_format("lab_wide", search_dirs=FORMATS)
        with SampleStore.open(url) as store:
            barrier.wait(timeout=30)
            rep = submit(store, Path(path), fmt)
        results.put((rep.submission_id, rep.duplicate_of, rep.submission.accepted))
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put(("error", repr(exc), 0))


def _run_concurrently(store: SampleStore, paths: list[Path]) -> list[tuple[Any, Any, int]]:
    # No SQLite file descriptor may cross the fork: a child closing an inherited one drops its own POSIX
    # locks on the database, letting another writer in mid-transaction (sqlite.org/howtocorrupt.html, 2.6).
    store.engine.dispose()
    url = store.url
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(len(paths)), ctx.Queue()
    procs = [ctx.Process(target=_submit_in_child, args=(url, str(p), [], barrier, results)) for p in paths]
    for p in procs:
        p.start()
    out = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert not [r for r in out if r[0] == "error"], out
    return out


def test_concurrent_submissions_of_one_file_store_it_once(store: SampleStore, lab: SampleFormat, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [lab_row(f"S{i}") for i in range(1, 30)])
    copy = tmp_path / "a_again.csv"
    copy.write_bytes(path.read_bytes())
    out = _run_concurrently(store, [path, copy])
    ids = {r[0] for r in out}
    assert len(ids) == 1  # both processes report the same submission
    assert sorted(r[1] is None for r in out) == [False, True]  # one stored it, the other got the duplicate
    subs = list_submissions(store)
    assert [(s.status, s.accepted) for s in subs] == [("stored", 29)]
    assert table_counts(store) == {"submissions": 1, "samples": 29, "rejections": 0, "raw_files": 1}


def test_concurrent_files_with_the_same_sample_ids_store_each_id_once(
    store: SampleStore, lab: SampleFormat, tmp_path: Path
) -> None:
    a = write_csv(tmp_path / "a.csv", [lab_row(f"S{i}") for i in range(1, 11)])
    b = write_csv(tmp_path / "b.csv", [lab_row(f"S{i}", soc="21.5") for i in range(1, 11)])
    out = _run_concurrently(store, [a, b])
    assert sorted(r[2] for r in out) == [0, 10]  # the later file's rows are all rejected as known ids
    assert sorted(s.accepted + s.rejected for s in list_submissions(store)) == [10, 10]
    assert table_counts(store)["samples"] == 10


# --------------------------------------------------------------------------------------------- QA


def test_submission_qa_flags_gps_accuracy_jitter_and_outliers_and_keeps_them(
    store: SampleStore, lab: SampleFormat, crowd: SampleFormat, tmp_path: Path
) -> None:
    # Five lab sites 100 m apart with 0-15 and 15-30 cm layers, ~15 g/kg.
    rows = []
    for i in range(1, 6):
        rows += [
            lab_row(f"L{i}A", soc=f"{15 + 0.3 * i:.1f}", site=f"P{i}", x=581000 + 100 * i, depth=(0, 15)),
            lab_row(f"L{i}B", soc=f"{12 + 0.3 * i:.1f}", site=f"P{i}", x=581000 + 100 * i, depth=(15, 30)),
        ]
    first = submit(store, write_csv(tmp_path / "lab.csv", rows), lab)
    assert first.flagged == 0
    # Crowd 0-30 cm cores next to those sites.
    header = CROWD_HEADER + ",gps_accuracy_m"
    crowd_rows = [
        f"C1,anna,{lonlat(581250, 5356020)},2021-05-02,0,30,1.45,kit,4",  # fine: 14.5 g/kg
        f"C2,anna,{lonlat(581350, 5356020)},2021-05-02,0,30,14.5,kit,4",  # % typed as g/kg: ten times too high
        f"C3,sepp,{lonlat(581250, 5356040)},2021-05-02,0,30,1.5,kit,35",  # GPS accuracy 35 m
        f"C4,sepp,{lonlat(581250, 5356060)},2021-05-02,0,30,1.5,kit,",  # no accuracy reported: not judged
    ]
    rep = submit_file(store, write_csv(tmp_path / "crowd.csv", crowd_rows, header), agency="App", source="crowd",
                      fmt=crowd, project_crs="EPSG:32633", region_bounds=BOUNDS, today=TODAY)  # fmt: skip
    flags = {a.sample_id: a.qa_flag for a in rep.accepted_rows}
    assert rep.submission.accepted == 4  # flagged samples are stored, not rejected
    assert flags["C1"] == ""
    assert flags["C4"] == ""
    assert "SOC 145.0 g/kg (0-30 cm) is far above the 5 lab sites within 500 m" in flags["C2"]
    assert "GPS accuracy 35 m is worse than the 10 m tolerance" in flags["C3"]
    assert rep.flagged == 2
    assert ("ACCEPTED, FLAGGED: " + flags["C2"]) in {line[2] for line in rep.lines()}
    stored = samples_frame(store, source="crowd").set_index("sample_id")
    assert stored.loc["C3", "gps_accuracy_m"] == 35.0
    assert stored.loc["C2", "qa_flag"] == flags["C2"]

    # A lab re-visit of site P1 placed 40 m away: GPS jitter (the first record is the reference).
    revisit = submit(store, write_csv(tmp_path / "lab2.csv", [
        lab_row("L1A-2024", site="P1", x=581140, depth=(0, 15), date="2024-05-01"),
    ]), lab)  # fmt: skip
    (row,) = revisit.accepted_rows
    assert "positions of site P1 differ by 40 m" in row.qa_flag
    assert "L1A (LabA, submission 1)" in row.qa_flag
    assert flag_counts(store) == {rep.submission_id: 2, revisit.submission_id: 1}
    listed = flagged_samples(store)
    assert list(listed["sample_id"]) == ["C2", "C3", "L1A-2024"]
    assert list(flagged_samples(store, submission_id=revisit.submission_id)["sample_id"]) == ["L1A-2024"]


def test_rerun_qa_updates_flags_when_lab_data_arrives_later(
    store: SampleStore, lab: SampleFormat, crowd: SampleFormat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crowd_rows = [f"C1,anna,{lonlat(581250, 5356020)},2021-05-02,0,30,15.0,kit"]  # 150 g/kg: 1.5 % typed as 15
    c = submit_file(store, write_csv(tmp_path / "crowd.csv", crowd_rows, CROWD_HEADER), agency="App",
                    source="crowd", fmt=crowd, project_crs="EPSG:32633", today=TODAY)  # fmt: skip
    assert c.flagged == 0  # no lab data yet: nothing to judge against
    rows = [lab_row(f"L{i}", soc="15", site=f"P{i}", x=581000 + 100 * i, depth=(0, 30)) for i in range(1, 6)]
    submit(store, write_csv(tmp_path / "lab.csv", rows), lab)
    assert flags_by_id(store)["App/C1"] == ""  # a submission does not re-judge earlier samples

    # Re-running the QA is one transaction: a failure after the flags were written leaves them as they were.
    def fail_after_writing(*_args: object, **_kw: object) -> None:
        raise RuntimeError("connection lost")

    monkeypatch.setattr(store_qa, "QAOutcome", fail_after_writing)
    with pytest.raises(RuntimeError, match="connection lost"):
        rerun_qa(store)
    assert flags_by_id(store)["App/C1"] == ""
    monkeypatch.undo()

    outcome = rerun_qa(store)
    assert (outcome.checked, outcome.flagged, outcome.newly_flagged, outcome.cleared) == (6, 1, 1, 0)
    assert "far above the 5 lab sites" in flags_by_id(store)["App/C1"]
    assert rerun_qa(store).changed == 0  # idempotent

    # Looser thresholds clear the flag again.
    from mrv.samples.qa import SampleChecks

    cleared = rerun_qa(store, SampleChecks(outlier_k=100.0))
    assert (cleared.cleared, cleared.flagged) == (1, 0)
    assert flags_by_id(store)["App/C1"] == ""


# ------------------------------------------------------------------------------------------ CLI


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """What ``mrv samples ...`` does: parse, run, print MRVError on stderr with exit 2."""
    parser = argparse.ArgumentParser(prog="mrv")
    group = parser.add_subparsers(dest="command", required=True)
    samples = group.add_parser("samples").add_subparsers(dest="samples_command", required=True)
    add_commands(samples)
    args = parser.parse_args(["samples", *argv])
    out, err = io.StringIO(), io.StringIO()
    try:
        code = args.func(args, out=out)
    except MRVError as exc:
        err.write(f"error: {exc}\n")
        code = 2
    return code, out.getvalue(), err.getvalue()


def test_cli_submit_list_report(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    path = write_csv(tmp_path / "a.csv", [lab_row("S1"), lab_row("S2", soc="900"), lab_row("S3", bd="3.9")])
    bounds = ",".join(str(b) for b in BOUNDS)
    code, out, _ = run_cli(["submit", str(path), "--agency", "LabA", "--crs", "EPSG:32633", "--db", db,
                            "--bounds", bounds])  # fmt: skip
    assert code == 0
    assert "Submission 1: a.csv from LabA" in out
    assert "     2  S1" in out
    assert "ACCEPTED" in out
    assert "     3  soc_g_kg" in out
    assert "REJECTED: SOC of 900 g/kg is impossible" in out
    assert "     4  S3                       ACCEPTED, NOTE: bulk density 3.9 g/cm3" in out  # value dropped, SOC kept
    assert "3 rows submitted, 2 accepted, 1 rejected." in out
    assert "Rejected lines by reason:\n       1  " in out
    assert "0 accepted samples flagged by QA." in out

    code, out, _ = run_cli(["submit", str(path), "--agency", "LabA", "--crs", "EPSG:32633", "--db", db])
    assert code == 0
    assert "already submitted by LabA as submission 1" in out
    assert "--replaces 1" in out  # says how to correct it

    bad = tmp_path / "bad.csv"
    bad.write_text("id,lat,lon\n1,2,3\n")
    code, out, err = run_cli(["submit", str(bad), "--agency", "LabA", "--crs", "EPSG:32633", "--db", db])
    assert code == 2
    assert "lacks column" in err
    assert out == ""

    code, out, _ = run_cli(["list", "--db", db])
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 4  # header, rule, two submissions
    assert "flag" in lines[0]
    assert "stored" in lines[2]
    assert "a.csv" in lines[2]
    assert "rejected" in lines[3]
    assert "bad.csv" in lines[3]

    code, out, _ = run_cli(["report", "2", "--db", db])
    assert code == 0
    assert "status REJECTED" in out
    assert "Reason:" in out
    assert "lacks column" in out
    assert "flagged by QA" not in out

    code, _, err = run_cli(["report", "7", "--db", db])
    assert code == 2
    assert "no submission 7" in err


def test_cli_flags_and_qa(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    code, out, _ = run_cli(["flags", "--db", db])
    assert (code, out) == (0, f"No flagged samples in {db}.\n")
    first = write_csv(tmp_path / "a.csv", [lab_row("S1"), lab_row("S2")])
    run_cli(["submit", str(first), "--agency", "LabA", "--crs", "EPSG:32633", "--db", db])
    # S9 repeats S1's sample 3 m away on the same day and depth.
    second = write_csv(tmp_path / "b.csv", [lab_row("S9", x=581103), lab_row("S3")])
    code, out, _ = run_cli(["submit", str(second), "--agency", "LabA", "--crs", "EPSG:32633", "--db", db])
    assert code == 0
    assert "ACCEPTED, FLAGGED: 3.0 m from sample S1 (LabA, submission 1) with the same date and depth" in out
    assert "1 accepted sample flagged by QA (stored with the reason; see 'mrv samples flags')." in out

    code, out, _ = run_cli(["list", "--db", db])
    assert re.search(r"\s1\s+b\.csv$", out.splitlines()[3])  # flag count column of submission 2

    code, out, _ = run_cli(["flags", "2", "--db", db])
    assert code == 0
    assert "S9" in out
    assert "1 flagged sample in submission 2 (kept in the store)." in out
    code, out, _ = run_cli(["flags", "1", "--db", db])
    assert out == "No flagged samples in submission 1.\n"
    code, _, err = run_cli(["flags", "5", "--db", db])
    assert code == 2
    assert "no submission 5" in err

    config = tmp_path / "run.yaml"  # --config takes the thresholds of a run config; a bad one is a clear error
    config.write_text("name: x\n")
    code, _, err = run_cli(["qa", "--db", db, "--config", str(config)])
    assert code == 2
    assert "error:" in err

    code, out, _ = run_cli(["qa", "--db", db])
    assert code == 0
    assert "QA of 4 stored samples: 1 flagged (0 newly flagged, 0 cleared, 0 flags changed)." in out


def test_cli_list_empty_and_bad_options(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'empty.db'}"
    code, out, _ = run_cli(["list", "--db", db])
    assert code == 0
    assert "No submissions" in out
    path = write_csv(tmp_path / "a.csv", [lab_row("S1")])
    code, _, err = run_cli(["submit", str(path), "--agency", "X", "--crs", "EPSG:32633", "--db", db, "--bounds", "1,2,3"])
    assert code == 2
    assert "--bounds" in err
    code, _, err = run_cli(["submit", str(path), "--agency", "X", "--crs", "EPSG:32633", "--db", db, "--format", "nosuchprofile"])
    assert code == 2
    assert "Unknown sample format profile" in err


def test_cli_tells_about_a_schema_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    SampleStore.open(db).close()
    with sqlite3.connect(db) as raw:
        raw.execute("ALTER TABLE samples DROP COLUMN gps_accuracy_m")
        raw.execute("ALTER TABLE samples DROP COLUMN soc_sd_g_kg")
        raw.execute("UPDATE schema_version SET version = 1")
    code, out, _ = run_cli(["list", "--db", str(db)])
    assert code == 0
    assert f"Upgraded the sample database {db} from schema version 1 to {SCHEMA_VERSION}" in out
    assert "mrv samples qa" in out
