"""Corrections, history, redaction, upgrades, queued writers and neighbourhood QA of the sample store (issues 15, 16).

Tests taking ``store`` / ``store_url`` run on SQLite and on the throw-away PostgreSQL server of
tests/postgres.py (see conftest.py).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from test_store import BOUNDS, FORMATS, TODAY, lab_row, run_cli, submit, table_counts, write_csv

from mrv.errors import ConfigError, SampleError
from mrv.samples import store as store_mod
from mrv.samples import submit as submit_mod
from mrv.samples.formats import SampleFormat, load_format
from mrv.samples.qa import SampleChecks, check_samples
from mrv.samples.store import (
    SCHEMA_VERSION,
    SampleQuery,
    SampleStore,
    StoreBusy,
    list_submissions,
    redact_url,
    samples_frame,
    store_state,
    submission_report,
)
from mrv.samples.store_qa import apply_qa, qa_frame
from mrv.samples.submit import profile_hash, submit_file, withdraw


@pytest.fixture
def lab() -> SampleFormat:
    return load_format("lab_wide", search_dirs=FORMATS)


@pytest.fixture
def store(store_url: str) -> Iterator[SampleStore]:
    with SampleStore.open(store_url) as s:
        yield s


def percent_profile(lab: SampleFormat) -> SampleFormat:
    """The lab profile with a wrong SOC unit (the file is in g/kg): the mistake a correction fixes."""
    return dataclasses.replace(lab, name="lab_wide_percent", soc_unit="percent")


# ------------------------------------------------------------------------------------ corrections


def test_resubmitting_under_a_corrected_profile_supersedes_and_keeps_history(
    store: SampleStore, lab: SampleFormat, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "a.csv", [lab_row("S1", soc="2.05"), lab_row("S2", soc="1.5")])
    wrong = submit_file(store, path, agency="LabA", source="lab", fmt=percent_profile(lab), project_crs="EPSG:32633",
                        region_bounds=BOUNDS, today=TODAY)  # fmt: skip
    assert sorted(samples_frame(store)["soc_g_kg"]) == [15.0, 20.5]  # read as percent: 10x too high
    assert profile_hash(lab) != profile_hash(percent_profile(lab))
    assert profile_hash(lab) == profile_hash(dataclasses.replace(lab, name="renamed", description="same content"))

    fixed = submit(store, path, lab)  # same bytes, corrected profile
    assert fixed.duplicate_of is None
    assert fixed.submission_id != wrong.submission_id
    assert sorted(samples_frame(store)["soc_g_kg"]) == [1.5, 2.05]  # only the corrected samples are in use
    subs = {s.submission_id: s for s in list_submissions(store)}
    old = subs[wrong.submission_id]
    assert (old.status, old.superseded_by) == ("superseded", fixed.submission_id)
    assert old.history == f"superseded by {fixed.submission_id}"
    # Nothing deleted: the superseded samples are kept and still reported.
    assert [a.sample_id for a in submission_report(store, wrong.submission_id).accepted_rows] == ["S1", "S2"]
    assert table_counts(store)["samples"] == 2
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM retired_samples")).scalar_one() == 2
    # The same file and profile again: a no-op.
    again = submit(store, path, lab)
    assert again.duplicate_of == fixed.submission_id
    assert len(list_submissions(store)) == 2


def test_replaces_supersedes_a_corrected_file_and_withdraw_retires(
    store: SampleStore, lab: SampleFormat, tmp_path: Path
) -> None:
    first = submit(store, write_csv(tmp_path / "a.csv", [lab_row("S1"), lab_row("S2")]), lab)
    other = submit(store, write_csv(tmp_path / "o.csv", [lab_row("S1")]), lab, agency="LabB")
    corrected = write_csv(tmp_path / "a2.csv", [lab_row("S1", soc="19.0"), lab_row("S2"), lab_row("S3")])
    # Without --replaces the reused ids are rejected (and say how to correct).
    clash = submit(store, corrected, lab)
    assert clash.submission.accepted == 1
    assert "--replaces" in clash.rejections[0].reason
    withdraw(store, clash.submission_id, reason="sent by mistake")
    rep = submit_file(store, corrected, agency="LabA", source="lab", fmt=lab, project_crs="EPSG:32633",
                      region_bounds=BOUNDS, today=TODAY, replaces=first.submission_id)  # fmt: skip
    assert rep.submission.accepted == 3
    frame = samples_frame(store)
    assert sorted(frame.loc[frame["agency"] == "LabA", "soc_g_kg"]) == [19.0, 20.5, 20.5]
    assert set(frame["submission_id"]) == {rep.submission_id, other.submission_id}

    with pytest.raises(SampleError, match="only a stored submission of the same agency"):
        submit_file(store, corrected, agency="LabA", source="lab", fmt=lab, project_crs="EPSG:32633",
                    region_bounds=BOUNDS, replaces=other.submission_id)  # fmt: skip
    done = withdraw(store, rep.submission_id, reason="lab\x1b[31m recalibrated\nthe analyser")
    assert done.submission.status == "withdrawn"
    assert done.submission.withdrawn_reason == "lab\x1b[31m recalibrated the analyser"  # newlines folded
    assert set(samples_frame(store)["agency"]) == {"LabB"}
    with pytest.raises(SampleError, match="is withdrawn, not stored"):
        withdraw(store, rep.submission_id, reason="again")
    with pytest.raises(SampleError, match="no submission 99"):
        withdraw(store, 99, reason="x")
    with pytest.raises(ConfigError, match="--reason"):
        withdraw(store, other.submission_id, reason="  ")
    statuses = [s.status for s in list_submissions(store)]
    assert statuses == ["superseded", "stored", "withdrawn", "withdrawn"]
    assert table_counts(store)["submissions"] == 4  # nothing deleted


def test_cli_withdraw_list_history_and_export(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    path = write_csv(tmp_path / "a.csv", [lab_row("S1", depth=(0, 15)), lab_row("S1b", site="PS1", depth=(15, 30)),
                                          lab_row("S2", date="2024-05-02")])  # fmt: skip
    assert run_cli(["submit", str(path), "--agency", "LabA", "--crs", "EPSG:32633", "--db", db])[0] == 0
    code, out, _ = run_cli(["withdraw", "1", "--reason", "wrong\x1b[2J field", "--db", db])
    assert code == 0
    assert "Withdrew submission 1" in out
    assert "\x1b" not in out
    assert "wrong\\x1b[2J field" in out
    code, out, _ = run_cli(["list", "--db", db])
    assert "withdrawn" in out
    assert "[withdrawn " in out
    assert "wrong\\x1b[2J field]" in out
    code, _, err = run_cli(["withdraw", "1", "--reason", "x", "--db", db])
    assert code == 2
    assert "not stored" in err

    other = write_csv(tmp_path / "b.csv", [lab_row("=HYPERLINK(1)", site="@SUM(1)"), lab_row("S5", date="2024-05-02")])
    assert run_cli(["submit", str(other), "--agency", "+LabB", "--crs", "EPSG:32633", "--db", db])[0] == 0
    out_csv = tmp_path / "export" / "layers.csv"
    code, out, _ = run_cli(["export", "-o", str(out_csv), "--db", db, "--end", "2023-12-31"])
    assert code == 0, out
    table = pd.read_csv(out_csv, dtype=str)
    assert list(table.columns[:5]) == ["profile_id", "round", "top_cm", "bottom_cm", "soc_g_kg"]
    assert list(table["profile_id"]) == ["'+LabB/@SUM(1)"]  # withdrawn LabA gone, 2024 left out, cell neutralised
    assert table.at[0, "sample_id"] == "'=HYPERLINK(1)"
    assert table.at[0, "round"] == "2021"
    code, _, err = run_cli(["export", "-o", str(out_csv), "--db", db, "--start", "21.01.2024"])
    assert code == 2
    assert "YYYY-MM-DD" in err


def test_submit_needs_a_project_crs_or_a_run_config(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    path = write_csv(tmp_path / "a.csv", [lab_row("S1")])
    code, _, err = run_cli(["submit", str(path), "--agency", "LabA", "--db", db])
    assert code == 2
    assert "--crs" in err
    assert "--config" in err


# --------------------------------------------------------------------------- URLs, files, secrets


def test_urls_are_redacted_and_env_names_resolved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert redact_url("postgresql+psycopg://agency:s3cret@db.example:5432/mrv") == (
        "postgresql+psycopg://agency:***@db.example:5432/mrv"
    )
    assert "hunter2" not in redact_url("postgresql://u@h/db?password=hunter2")
    assert redact_url("out/samples.db") == "out/samples.db"
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("AGENCY_DB", url)
    with SampleStore.open("env:AGENCY_DB") as store:
        assert store.url == url
    monkeypatch.setenv(store_mod.DB_ENV, url)
    with SampleStore.open(None) as store:
        assert store.url == url
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE, which is not set"):
        SampleStore.open("env:NOT_SET_ANYWHERE")


def test_wrong_password_and_port_messages_hide_the_password(postgres_server: object) -> None:
    port = int(postgres_server.port)  # type: ignore[attr-defined]
    for url in (
        f"postgresql+psycopg://mrv:Secr3tPw@127.0.0.1:{port + 1}/postgres",  # nobody listens there
        "postgresql+nosuchdriver://mrv:Secr3tPw@127.0.0.1/postgres",
        "postgresql+psycopg://mrv:Secr3tPw@127.0.0.1:notaport/postgres",
    ):
        with pytest.raises(ConfigError) as info:
            SampleStore.open(url)
        assert "Secr3tPw" not in str(info.value)
        assert "mrv:***@" in str(info.value) or "not a database URL" in str(info.value)


def test_a_non_sqlite_file_or_folder_as_db_is_one_clear_message(tmp_path: Path) -> None:
    text = tmp_path / "samples.csv"
    text.write_text("sample_id,x\n1,2\n")
    for db in (str(text), f"sqlite:///{text}"):
        code, _, err = run_cli(["list", "--db", db])
        assert code == 2
        assert "is not an SQLite database" in err
        assert err.count("\n") == 1
    code, _, err = run_cli(["list", "--db", str(tmp_path)])
    assert code == 2
    assert "not a regular file" in err
    assert text.read_text() == "sample_id,x\n1,2\n"  # untouched


# ---------------------------------------------------------------------------------------- upgrade


def _v2_schema(url: str) -> None:
    """The schema of version 2 (before corrections, cells and retired samples), with one stored submission."""
    md = sa.MetaData()
    subs = sa.Table(
        "submissions", md,
        sa.Column("submission_id", sa.Integer, primary_key=True, autoincrement=True),
        *[sa.Column(c, sa.Text, nullable=False) for c in ("agency", "source", "format", "filename", "sha256",
                                                           "received_utc")],
        *[sa.Column(c, sa.Integer, nullable=False) for c in ("submitted", "accepted", "rejected")],
        sa.Column("status", sa.Text, nullable=False), sa.Column("reason", sa.Text),
        sa.CheckConstraint("status IN ('stored', 'rejected')", name="ck_submissions_status"),
        sa.CheckConstraint("accepted + rejected = submitted", name="ck_submissions_counts"),
    )  # fmt: skip
    floats = {"x", "y", "lon", "lat", "top_cm", "bottom_cm", "soc_g_kg", "bulk_density_g_cm3",
              "coarse_fragments_vol_pct", "soc_sd_g_kg", "gps_accuracy_m"}  # fmt: skip
    from mrv.samples.ingest import CANONICAL_COLUMNS

    smp = sa.Table(
        "samples", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("submission_id", sa.Integer, sa.ForeignKey("submissions.submission_id"), nullable=False),
        sa.Column("agency", sa.Text, nullable=False),
        *[sa.Column(c, sa.Integer if c == "row" else sa.Double if c in floats else sa.Text) for c in CANONICAL_COLUMNS],
        sa.Column("qa_flag", sa.Text, nullable=False, server_default=""),
        sa.UniqueConstraint("agency", "sample_id"),
    )  # fmt: skip
    sa.Table("rejections", md, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("submission_id", sa.Integer, sa.ForeignKey("submissions.submission_id"), nullable=False),
             sa.Column("row", sa.Integer), sa.Column("column", sa.Text), sa.Column("value", sa.Text),
             sa.Column("reason", sa.Text))  # fmt: skip
    sa.Table("raw_files", md, sa.Column("sha256", sa.String(64), primary_key=True),
             sa.Column("size_bytes", sa.Integer), sa.Column("content", sa.LargeBinary))  # fmt: skip
    version = sa.Table("schema_version", md, sa.Column("version", sa.Integer))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        md.create_all(conn)
        conn.execute(version.insert().values(version=2))
        conn.execute(subs.insert().values(agency="LabA", source="lab", format="lab_wide", filename="old.csv",
                                          sha256="b" * 64, received_utc="2024-01-01T00:00:00+00:00", submitted=1,
                                          accepted=1, rejected=0, status="stored"))  # fmt: skip
        conn.execute(smp.insert().values(submission_id=1, agency="LabA", row=2, sample_id="S1", site_id="PS1",
                                          source="lab", x=581100.5, y=5356000.0, crs="EPSG:32633",
                                          sampling_date="2021-05-01", top_cm=0.0, bottom_cm=15.0, soc_g_kg=20.5))  # fmt: skip
    engine.dispose()


def test_version_2_database_is_upgraded_in_place(store_url: str, lab: SampleFormat, tmp_path: Path) -> None:
    _v2_schema(store_url)
    with SampleStore.open(store_url) as store:
        assert (store.migrated_from, store.schema_version()) == (2, SCHEMA_VERSION)
        old = list_submissions(store)[0]
        assert (old.status, old.profile_sha256) == ("stored", None)
        with store.engine.connect() as conn:
            gx, gy = conn.execute(sa.text("SELECT gx, gy FROM samples")).one()
            indexes = {i["name"] for i in sa.inspect(conn).get_indexes("samples")}
        assert (gx, gy) == (581, 5356)
        assert {"ix_samples_cell_date", "ix_samples_site"} <= indexes
        # The widened status check and the foreign keys work after the rebuild.
        rep = submit(store, write_csv(tmp_path / "n.csv", [lab_row("S1", soc="21")]), lab)
        assert rep.submission.accepted == 0  # S1 is in use by the old submission
        withdraw(store, 1, reason="superseded by a re-analysis")
        with pytest.raises(sa.exc.IntegrityError), store.transaction() as conn:
            conn.execute(store_mod.samples.insert().values(
                submission_id=999, agency="X", row=1, sample_id="Z", site_id="Z", source="lab", x=0.0, y=0.0,
                crs="EPSG:32633", sampling_date="2021-01-01", top_cm=0.0, bottom_cm=1.0, soc_g_kg=1.0))  # fmt: skip
    with SampleStore.open(store_url) as again:
        assert again.migrated_from is None
        assert [s.status for s in list_submissions(again)] == ["withdrawn", "stored"]


# ----------------------------------------------------------------------------------- writer queue


def test_a_waiting_writer_is_stored_and_one_that_times_out_is_recorded_as_failed(
    store: SampleStore, lab: SampleFormat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv(tmp_path / "a.csv", [lab_row("S1"), lab_row("S2")])
    held, release = threading.Event(), threading.Event()

    def hold(seconds: float) -> None:
        with SampleStore.open(store.url) as other, other.transaction():
            held.set()
            release.wait(seconds)

    waits: list[float] = []
    monkeypatch.setattr(store_mod, "WAIT_NOTE_S", 0.3)
    patient = SampleStore.open(store.url, lock_timeout_s=30.0, on_wait=waits.append)
    t = threading.Thread(target=hold, args=(1.5,))
    t.start()
    held.wait(10)
    started = time.monotonic()
    rep = submit(patient, path, lab)  # waits for the holder instead of failing
    t.join()
    assert time.monotonic() - started >= 1.0
    assert rep.submission.accepted == 2
    assert waits
    assert max(waits) >= 0.3
    patient.close()

    # The lock stays taken until the failed submission starts recording its failure.
    armed = threading.Event()
    real_record = submit_mod._record

    def record(*args: object, **kw: object) -> int:
        armed.set()
        return real_record(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(submit_mod, "_record", record)
    monkeypatch.setattr(submit_mod, "_FAILED_RECORD_WAIT_S", 30.0)
    hasty = SampleStore.open(store.url, lock_timeout_s=0.5, on_wait=lambda _s: armed.is_set() and release.set())
    held.clear()
    release.clear()
    t = threading.Thread(target=hold, args=(60.0,))
    t.start()
    held.wait(10)
    with pytest.raises(StoreBusy, match=r"stayed locked .*Recorded as failed submission 2"):
        submit(hasty, write_csv(tmp_path / "b.csv", [lab_row("S3")]), lab)
    release.set()
    t.join()
    hasty.close()
    failed = list_submissions(store)[-1]
    assert (failed.status, failed.filename, failed.submitted) == ("failed", "b.csv", 0)
    assert "--lock-timeout" in (failed.reason or "")
    assert table_counts(store)["samples"] == 2


# ---------------------------------------------------------------------------- neighbourhood QA


def _random_samples(rng: np.random.Generator, n: int, prefix: str, *, crowd: float = 0.3) -> list[str]:
    """Rows around a few hot spots (shared dates and depths), so duplicates, jitter and outliers all occur."""
    rows = []
    for i in range(n):
        hot = rng.integers(0, 4)
        x = 581000 + 1500 * hot + rng.normal(0, 25)
        y = 5356000 + rng.normal(0, 25)
        site = f"P{rng.integers(0, n // 3 + 1)}"
        soc = f"{rng.choice([20.5, 20.5, 18.0, rng.uniform(5, 60)]):.2f}"
        date = str(rng.choice(["2021-05-01", "2021-05-02"]))
        rows.append(lab_row(f"{prefix}{i}", soc=soc, site=site, x=float(x), y=float(y), date=date))
    return rows


def test_neighbourhood_qa_equals_qa_over_the_whole_store(store: SampleStore, lab: SampleFormat, tmp_path: Path) -> None:
    """The indexed neighbourhood (cells of the tolerance / radius) finds exactly what a scan of everything finds."""
    rng = np.random.default_rng(7)
    for k in range(3):
        path = write_csv(tmp_path / f"s{k}.csv", _random_samples(rng, 60, f"K{k}-"))
        submit(store, path, lab, agency=f"Lab{k % 2}")
    checks = SampleChecks()
    with store.engine.connect() as conn:
        stored = qa_frame(conn)
    last = int(stored["submission_id"].max())
    full = check_samples(stored, checks, site_by=("agency", "site_id"),
                         evaluate=(stored["submission_id"] == last).to_numpy())  # fmt: skip
    expected = full.loc[stored["submission_id"] == last, "qa_flag"].tolist()
    assert sum(1 for f in expected if f) >= 5  # the case has flags to find
    got = stored.loc[stored["submission_id"] == last, "qa_flag"].tolist()
    assert got == expected
    # Re-running the submission-time QA inside a transaction changes nothing.
    with store.transaction() as conn:
        outcome = apply_qa(conn, checks, submission_id=last)
    assert outcome.changed == 0
    assert 0 < outcome.neighbours < len(stored)


def test_qa_reads_only_the_neighbourhood(store: SampleStore, lab: SampleFormat, tmp_path: Path) -> None:
    far = [lab_row(f"F{i}", x=581000.0 + 10 * i, y=5359000.0) for i in range(200)]
    submit(store, write_csv(tmp_path / "far.csv", far), lab)
    near = [lab_row(f"N{i}", x=584000.0 + 10 * i, y=5355500.0) for i in range(5)]
    rep = submit(store, write_csv(tmp_path / "near.csv", near), lab, agency="LabB")
    with store.transaction() as conn:
        outcome = apply_qa(conn, SampleChecks(), submission_id=rep.submission_id)
    assert outcome.neighbours == 0  # 200 stored samples 3.5 km away are not read
    assert outcome.checked == 5


def test_every_occurrence_of_a_duplicate_id_is_reported(store: SampleStore, lab: SampleFormat, tmp_path: Path) -> None:
    """Issue 15: a repeated id no longer lets the first occurrence win silently (copies km apart)."""
    rows = [lab_row("S1"), lab_row("S2"), lab_row("S1", x=584000.0), lab_row("S2")]
    rep = submit(store, write_csv(tmp_path / "d.csv", rows), lab)
    lines = {row: result for row, _, result in rep.lines()}
    assert lines[2].startswith("REJECTED")
    assert lines[4].startswith("REJECTED")
    assert "2, 4" in lines[2]
    assert "2, 4" in lines[4]
    assert lines[5].startswith("REJECTED")
    assert "3" in lines[5]
    assert "sample id S2 (line 3) is used again on line(s) 5" in lines[3]  # and the kept S2 points at line 5
    assert rep.submission.accepted == 1


def test_store_state_and_query_follow_submissions(store: SampleStore, lab: SampleFormat, tmp_path: Path) -> None:
    a = submit(store, write_csv(tmp_path / "a.csv", [lab_row("S1"), lab_row("S2", date="2024-06-01")]), lab)
    before = store_state(store)
    b = submit(store, write_csv(tmp_path / "b.csv", [lab_row("S3", date="2024-06-02")]), lab, agency="LabB")
    after = store_state(store)
    assert before != after
    assert store_state(store, SampleQuery(agencies=("LabA",))) == before
    q = SampleQuery(start=pd.Timestamp("2024-01-01").date(), end=pd.Timestamp("2024-12-31").date())
    assert sorted(samples_frame(store, query=q)["sample_id"]) == ["S2", "S3"]
    withdraw(store, b.submission_id, reason="test")
    assert sorted(samples_frame(store, query=q)["sample_id"]) == ["S2"]
    assert store_state(store)["submissions"] == [a.submission_id]
