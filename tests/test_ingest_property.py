"""Property-based: whatever bytes arrive, ``ingest``/``submit_file`` either account for every row or
reject the whole file with ``SubmissionRejected`` -- and the store is never left half-written."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrv.errors import SubmissionRejected
from mrv.samples.formats import SampleFormat, load_format
from mrv.samples.ingest import ingest
from mrv.samples.store import SampleStore
from mrv.samples.submit import submit_file

REPO = Path(__file__).resolve().parents[1]
FORMATS = (REPO / "mrv" / "profiles" / "sample_formats",)
LAB = load_format("lab_wide", search_dirs=FORMATS)
CROWD = load_format("crowd", search_dirs=FORMATS)
BOUNDS = (580000.0, 5355000.0, 585000.0, 5360000.0)
TODAY = dt.date(2025, 1, 1)
PROFILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LAB_HEADER = [
    "sample_id", "site_id", "field_id", "x", "y", "epsg", "sampling_date", "top_cm", "bottom_cm", "soc_g_kg",
    "bulk_density_g_cm3", "coarse_fragments_vol_pct", "method",
]  # fmt: skip
VALID = (
    ",".join(LAB_HEADER) + "\n"
    "S1,P1,F1,581000,5356000,32633,2021-05-01,0,15,20.5,1.30,5,dc\n"
    "S2,P1,F1,581000,5356000,32633,2021-05-01,15,30,14.1,1.40,5,dc\n"
    "S3,P2,F1,582000.5,5357000,32633,2021-05-01,0,30,11.0,,0,dc\n"
).encode()

# Cell contents that stress parsing: numbers in odd notations, quotes, separators, non-ASCII, control chars.
CELL_WORDS = st.sampled_from(
    ["", " ", "0", "-1", "1,5", "1.5", "nan", "-0", "1e3", "32633", "4326", "2021-05-01", "2099-01-01",
     "581000", "5356000", '"', '""', "a,b", "a;b", "\t", "Ä", "€", "\u2028", "\r", "x\ny", "NULL", "S1", "inf", "1e400"]
)  # fmt: skip
CELLS = st.one_of(CELL_WORDS, st.text(max_size=12))


def _ingest(path: Path, fmt: SampleFormat = LAB) -> None:
    """Run ingest; only SubmissionRejected may escape, and the rows must add up."""
    try:
        res = ingest(
            path, fmt, source="lab", submitter="a", project_crs="EPSG:32633", region_bounds=BOUNDS, today=TODAY
        )
    except SubmissionRejected:
        return
    assert len(res.accepted) + len(res.rejected) == res.submitted
    assert all(r.reason for r in res.rejected)
    assert res.accepted["sample_id"].is_unique


def _counts(store: SampleStore) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one())
            for t in ("submissions", "samples", "rejections", "raw_files")
        }


def _submit_and_check(store: SampleStore, path: Path, fmt: SampleFormat = LAB) -> None:
    """Submit; the store is either fully written for this submission or holds only a 'rejected' ledger row."""
    before = _counts(store)
    try:
        rep = submit_file(store, path, agency="A", source="lab", fmt=fmt, project_crs="EPSG:32633",
                          region_bounds=BOUNDS, today=TODAY)  # fmt: skip
    except SubmissionRejected:
        after = _counts(store)
        assert after == {**before, "submissions": before["submissions"] + 1}
        with store.engine.connect() as conn:
            status = conn.execute(sa.text("SELECT status FROM submissions ORDER BY submission_id DESC")).scalar()
        assert status == "rejected"
        return
    s = rep.submission
    assert s.status == "stored"
    assert s.accepted + s.rejected == s.submitted
    assert len(rep.accepted_rows) == s.accepted
    assert len(rep.rejections) == s.rejected
    after = _counts(store)
    if rep.duplicate_of is not None:
        assert after == before
        return
    assert after["submissions"] == before["submissions"] + 1
    assert after["samples"] == before["samples"] + s.accepted
    assert after["rejections"] == before["rejections"] + s.rejected
    assert after["raw_files"] - before["raw_files"] in (0, 1)
    assert {r.row for r in rep.rejections}.isdisjoint({a.row for a in rep.accepted_rows})


@st.composite
def csvish(draw: st.DrawFn) -> bytes:
    sep = draw(st.sampled_from([",", ";", "\t", "|", " "]))
    header = list(LAB_HEADER) if draw(st.booleans()) else draw(st.lists(CELLS, min_size=1, max_size=6))
    n_cols = len(header)
    rows = draw(
        st.lists(
            st.lists(CELLS, min_size=max(0, n_cols - 2), max_size=n_cols + 1),
            max_size=6,
        )
    )
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = eol.join(sep.join(r) for r in [header, *rows])
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16"]))
    return text.encode(encoding, errors="replace")


@st.composite
def mutated_valid(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "duplicate_line", "swap_sep"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6) | st.sampled_from([b",", b";", b'"', b"\n", b"-"]))
        elif kind == "replace" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "duplicate_line":
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = bytearray(b"\n".join(lines))
        elif kind == "swap_sep":
            data = bytearray(bytes(data).replace(b",", b";"))
    return bytes(data)


def _write(tmp: str, data: bytes) -> Path:
    path = Path(tmp) / "submission.csv"
    path.write_bytes(data)
    return path


@PROFILE
@given(data=st.binary(max_size=300))
def test_random_bytes_never_crash_ingest(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _ingest(_write(tmp, data))
        _ingest(_write(tmp, data), CROWD)


@PROFILE
@given(data=csvish())
def test_random_csvish_text_never_crashes_ingest(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _ingest(_write(tmp, data))


@PROFILE
@given(data=st.one_of(st.binary(max_size=200), csvish(), mutated_valid()))
def test_submit_is_all_or_only_a_rejected_ledger_row(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp, SampleStore.open("sqlite://") as store:
        _submit_and_check(store, _write(tmp, data))


def _valid_then_mutated(url: str, data: bytes) -> None:
    """The valid file is stored first, so mutated resubmissions meet already-stored sample ids and duplicates."""
    with tempfile.TemporaryDirectory() as tmp, SampleStore.open(url) as store:
        _submit_and_check(store, _write(tmp, VALID))
        _submit_and_check(store, _write(tmp, data))
        with store.engine.connect() as conn:
            dupes = conn.execute(
                sa.text("SELECT agency, sample_id FROM samples GROUP BY agency, sample_id HAVING count(*) > 1")
            ).all()
            stored = conn.execute(sa.text("SELECT sum(accepted) FROM submissions WHERE status = 'stored'")).scalar_one()
            n_samples = conn.execute(sa.text("SELECT count(*) FROM samples")).scalar_one()
        assert dupes == []
        assert stored == n_samples


@PROFILE
@given(data=mutated_valid())
def test_mutations_after_a_valid_submission_keep_the_store_consistent(data: bytes) -> None:
    _valid_then_mutated("sqlite://", data)


@settings(PROFILE, max_examples=10)
@given(data=mutated_valid())
def test_mutations_keep_a_postgresql_store_consistent(postgres_server: Any, data: bytes) -> None:
    """The same on PostgreSQL (fewer examples: each gets a fresh schema of the test server)."""
    _valid_then_mutated(postgres_server.new_schema_url("prop"), data)


def test_infinite_epsg_code_is_a_row_rejection(tmp_path: Path) -> None:
    path = _write(str(tmp_path), VALID.replace(b",32633,2021-05-01,0,15,20.5", b",1e400,2021-05-01,0,15,20.5"))
    res = ingest(path, LAB, source="lab", submitter="a", project_crs="EPSG:32633", region_bounds=BOUNDS, today=TODAY)
    assert len(res.rejected) == 1
    assert "EPSG" in res.rejected[0].reason


LONG_DE = load_format("agency_long_de", search_dirs=FORMATS)
LONG_VALID = (
    "Probennummer;Standort;Schlag;Rechtswert;Hochwert;Probenahmedatum;Tiefe_von_cm;Tiefe_bis_cm;Parameter;Messwert;Einheit;Methode\n"
    "P1-A;P1;S1;581000,5;5356000;14.09.2021;0;15;Corg;1,8;M%;DIN\n"
    "P1-A;P1;S1;581000,5;5356000;14.09.2021;0;15;Lagerungsdichte;1,32;g/cm3;DIN\n"
    "P1-A;P1;S1;581000,5;5356000;14.09.2021;0;15;pH;6,1;-;DIN\n"
    "P1-B;P1;S1;581000,5;5356000;14.09.2021;15;30;Humus;2,5;M%;DIN\n"
    "P1-B;P1;S1;581000,5;5356000;14.09.2021;15;30;Skelettgehalt;3;Vol.-%;DIN\n"
    "P2-A;P2;S1;582000;5357000;14.09.2021;0;30;Corg;1,1;M%;DIN\n"
).encode("latin-1")


@st.composite
def mutated_long(draw: st.DrawFn) -> bytes:
    lines = LONG_VALID.split(b"\n")
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["duplicate_line", "drop_line", "swap_cells", "edit_cell", "shuffle"]))
        i = draw(st.integers(1, len(lines) - 1))
        if kind == "duplicate_line":
            lines.insert(i, lines[i])
        elif kind == "drop_line" and len(lines) > 2:
            del lines[i]
        elif kind == "shuffle":
            body = lines[1:]
            lines = [lines[0], *draw(st.permutations(body))]
        else:
            cells = lines[i].split(b";")
            j = draw(st.integers(0, max(0, len(cells) - 1)))
            if kind == "swap_cells" and len(cells) > 1:
                k = draw(st.integers(0, len(cells) - 1))
                cells[j], cells[k] = cells[k], cells[j]
            else:
                cells[j] = draw(CELLS).encode("latin-1", errors="replace")
            lines[i] = b";".join(cells)
    return b"\n".join(lines)


@PROFILE
@given(data=st.one_of(mutated_long(), csvish()))
def test_long_layout_puts_every_line_in_exactly_one_place(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(tmp, data)
        try:
            res = ingest(path, LONG_DE, source="lab", submitter="a", project_crs="EPSG:32633", region_bounds=BOUNDS,
                         today=TODAY)  # fmt: skip
        except SubmissionRejected:
            return
        used = [n for lines in res.record_lines for n in lines]
        rejected = [r.row for r in res.rejected]
        assert sorted(used + rejected) == list(range(2, res.submitted + 2))
        assert res.accepted_lines + len(res.rejected) == res.submitted
        assert len(res.record_lines) == len(res.accepted)
        assert list(res.accepted["row"]) == [lines[0] for lines in res.record_lines]
        assert res.accepted["sample_id"].is_unique
        assert all(r.reason for r in res.rejected)
        # In the store's ledger too, counts are lines; the samples table holds one row per sample.
        with SampleStore.open("sqlite://") as store:
            rep = submit_file(store, path, agency="A", source="lab", fmt=LONG_DE, project_crs="EPSG:32633",
                              region_bounds=BOUNDS, today=TODAY)  # fmt: skip
            s = rep.submission
            assert (s.submitted, s.accepted, s.rejected) == (res.submitted, res.accepted_lines, len(res.rejected))
            assert _counts(store)["samples"] == len(rep.accepted_rows) == len(res.accepted)
            assert _counts(store)["rejections"] == s.rejected
