"""The sample store: idempotent, atomic submissions; ids unique per agency; list/report; CLI."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mrv.errors import ConfigError, MRVError, SampleError, SubmissionRejected
from mrv.samples import submit as submit_mod
from mrv.samples.cli import add_commands
from mrv.samples.formats import SampleFormat, load_format
from mrv.samples.ingest import CANONICAL_COLUMNS
from mrv.samples.store import (
    SCHEMA_VERSION,
    SampleStore,
    list_submissions,
    raw_file,
    samples_frame,
    submission_report,
)
from mrv.samples.submit import submit_file

REPO = Path(__file__).resolve().parents[1]
FORMATS = (REPO / "configs" / "sample_formats",)
BOUNDS = (580000.0, 5355000.0, 585000.0, 5360000.0)
TODAY = dt.date(2025, 1, 1)
HEADER = (
    "sample_id,site_id,field_id,x,y,epsg,sampling_date,top_cm,bottom_cm,soc_g_kg,"
    "bulk_density_g_cm3,coarse_fragments_vol_pct,method"
)


def lab_row(sample_id: str, soc: str = "20.5", bd: str = "1.30") -> str:
    return f"{sample_id},P1,F1,581000,5356000,32633,2021-05-01,0,15,{soc},{bd},5,dc"


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def lab() -> SampleFormat:
    return load_format("lab_wide", search_dirs=FORMATS)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SampleStore]:
    with SampleStore.open(f"sqlite:///{tmp_path / 'db' / 'samples.db'}") as s:
        yield s


def submit(store: SampleStore, path: Path, fmt: SampleFormat, agency: str = "LabA"):
    return submit_file(
        store, path, agency=agency, source="lab", fmt=fmt, project_crs="EPSG:32633", region_bounds=BOUNDS, today=TODAY
    )


def table_counts(store: SampleStore) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one())
            for t in ("submissions", "samples", "rejections", "raw_files")
        }


def test_open_creates_schema_with_wal_foreign_keys_and_version(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "s.db"
    with SampleStore.open(f"sqlite:///{db}") as store:
        assert store.schema_version() == SCHEMA_VERSION
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


def test_foreign_key_is_enforced(store: SampleStore) -> None:
    with pytest.raises(sa.exc.IntegrityError), store.transaction() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO rejections (submission_id, row, \"column\", value, reason) VALUES (999, 2, 'a', 'b', 'c')"
            )
        )
    assert table_counts(store)["rejections"] == 0


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    SampleStore.open(db).close()
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(ConfigError, match="schema version 99"):
        SampleStore.open(db)


def test_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="database URL"):
        SampleStore.open("nosuchdb+driver://x/y")


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
    assert raw_file(store, s.sha256) == path.read_bytes()
    frame = samples_frame(store)
    assert list(frame.columns[: len(CANONICAL_COLUMNS)]) == CANONICAL_COLUMNS
    assert list(frame["sample_id"]) == ["S1", "S3"]
    assert set(frame["submission_id"]) == {s.submission_id}
    assert frame["soc_g_kg"].tolist() == pytest.approx([20.5, 20.5])
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
    # The same bytes from another agency are a new submission (its own sample ids), archived once.
    other = submit(store, path, lab, agency="LabB")
    assert other.duplicate_of is None
    assert other.submission.accepted == 2
    counts = table_counts(store)
    assert (counts["submissions"], counts["samples"], counts["raw_files"]) == (2, 4, 1)


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
    third = submit(store, write_csv(tmp_path / "c.csv", [lab_row("S1")]), lab, agency="LabB")
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


def test_queries_filter_and_unknown_submission(store: SampleStore, lab: SampleFormat, tmp_path: Path) -> None:
    submit(store, write_csv(tmp_path / "a.csv", [lab_row("S1")]), lab)
    crowd = load_format("crowd", search_dirs=FORMATS)
    cpath = tmp_path / "crowd.csv"
    cpath.write_text(
        "sample_id,submitter,lon,lat,sampling_date,top_cm,bottom_cm,soc_percent,method\n"
        "C1,anna,16.107012,48.360845,2021-05-02,0,30,1.8,kit\n"
    )
    rep = submit_file(store, cpath, agency="Crowd", source="crowd", fmt=crowd, project_crs="EPSG:32633", today=TODAY)
    assert rep.submission.accepted == 1
    assert list(samples_frame(store, source="crowd")["sample_id"]) == ["C1"]
    assert list(samples_frame(store, source="lab")["sample_id"]) == ["S1"]
    assert samples_frame(store, source="nothing").empty
    assert [s.agency for s in list_submissions(store)] == ["LabA", "Crowd"]
    with pytest.raises(SampleError, match="no submission 42"):
        submission_report(store, 42)


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
    path = write_csv(tmp_path / "a.csv", [lab_row("S1"), lab_row("S2", bd="3.9")])
    bounds = ",".join(str(b) for b in BOUNDS)
    code, out, _ = run_cli(["submit", str(path), "--agency", "LabA", "--db", db, "--bounds", bounds])
    assert code == 0
    assert "Submission 1: a.csv from LabA" in out
    assert "     2  S1" in out
    assert "ACCEPTED" in out
    assert "     3  bulk_density_g_cm3" in out
    assert "REJECTED: bulk density 3.9 g/cm3" in out
    assert "2 rows submitted, 1 accepted, 1 rejected." in out

    code, out, _ = run_cli(["submit", str(path), "--agency", "LabA", "--db", db])
    assert code == 0
    assert "already submitted by LabA as submission 1" in out

    bad = tmp_path / "bad.csv"
    bad.write_text("id,lat,lon\n1,2,3\n")
    code, out, err = run_cli(["submit", str(bad), "--agency", "LabA", "--db", db])
    assert code == 2
    assert "lacks column" in err
    assert out == ""

    code, out, _ = run_cli(["list", "--db", db])
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 4  # header, rule, two submissions
    assert "stored" in lines[2]
    assert "a.csv" in lines[2]
    assert "rejected" in lines[3]
    assert "bad.csv" in lines[3]

    code, out, _ = run_cli(["report", "2", "--db", db])
    assert code == 0
    assert "status REJECTED" in out
    assert "Reason:" in out
    assert "lacks column" in out

    code, _, err = run_cli(["report", "7", "--db", db])
    assert code == 2
    assert "no submission 7" in err


def test_cli_list_empty_and_bad_options(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'empty.db'}"
    code, out, _ = run_cli(["list", "--db", db])
    assert code == 0
    assert "No submissions" in out
    path = write_csv(tmp_path / "a.csv", [lab_row("S1")])
    code, _, err = run_cli(["submit", str(path), "--agency", "X", "--db", db, "--bounds", "1,2,3"])
    assert code == 2
    assert "--bounds" in err
    code, _, err = run_cli(["submit", str(path), "--agency", "X", "--db", db, "--format", "nosuchprofile"])
    assert code == 2
    assert "not found" in err
