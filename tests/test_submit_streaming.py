"""A submission is validated and stored in parts (issue 15.11: memory follows a part, not the file).

The store must come out exactly as if the whole file had been ingested at once
(:func:`mrv.samples.ingest.ingest`): repeated sample ids whose copies fall in different parts,
rows rejected or noted in any part, ids the agency stored before -- every line in one place.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from test_store import BOUNDS, FORMATS, HEADER, TODAY

from mrv.samples import submit as submit_mod
from mrv.samples.formats import load_format
from mrv.samples.ingest import ingest, ingest_parts
from mrv.samples.store import SampleStore, samples
from mrv.samples.submit import submit_file

ROWS = 2_400
PART = 500


def _row(i: int, *, sid: str | None = None, soc: str | None = None, bd: str = "1.30") -> str:
    x, y = 580_050.0 + 100.0 * (i % 50), 5_355_050.0 + 100.0 * (i // 50)
    soc = soc or f"{10 + (i % 17) * 0.7:.2f}"
    return f"{sid or f'S{i}'},P{i},F1,{x},{y},32633,2021-05-01,0,30,{soc},{bd},5,dc"


def _file(path: Path) -> Path:
    rows = [_row(i) for i in range(ROWS)]
    rows[1_800] = rows[10]  # an exact repeat of line 12, three parts later: dropped, noted on its line
    rows[2_200] = _row(2_200, sid="S20")  # id S20 again with other values: both copies rejected
    rows[700] = _row(700, soc="abc")  # unreadable SOC: rejected
    rows[1_300] = _row(1_300, bd="9.9")  # implausible bulk density: kept as missing, with a note
    rows[2_300] = ""  # an empty line
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def test_a_wide_file_is_read_in_parts_of_bounded_size(tmp_path: Path) -> None:
    fmt = load_format("lab_wide", search_dirs=FORMATS)
    parts = list(ingest_parts(_file(tmp_path / "a.csv"), fmt, source="lab", submitter="A", project_crs="EPSG:32633",
                              region_bounds=BOUNDS, today=TODAY, rows_per_chunk=PART))  # fmt: skip
    assert len(parts) == 5
    assert sum(p.submitted for p in parts) == ROWS
    assert max(len(p.accepted) for p in parts) <= PART


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_file_stored_in_parts_equals_the_whole_file_ingested(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submit_mod, "_PART_ROWS", PART)
    fmt = load_format("lab_wide", search_dirs=FORMATS)
    path = _file(tmp_path / "agency.csv")
    whole = ingest(path, fmt, source="lab", submitter="Agency", project_crs="EPSG:32633", region_bounds=BOUNDS,
                   today=TODAY)  # fmt: skip
    assert {r.code for r in whole.rejected} >= {"duplicate_id", "not_a_number", "empty_line"}
    with SampleStore.open(store_url) as store:
        # The agency stored S5 before: its line is rejected as an id already stored, whatever part it is in.
        early = tmp_path / "early.csv"
        early.write_text(HEADER + "\n" + _row(5).replace("2021-05-01", "2020-05-01") + "\n", encoding="utf-8")
        submit_file(store, early, agency="Agency", source="lab", fmt=fmt, project_crs="EPSG:32633",
                    region_bounds=BOUNDS, today=TODAY)  # fmt: skip
        rep = submit_file(store, path, agency="Agency", source="lab", fmt=fmt, project_crs="EPSG:32633",
                          region_bounds=BOUNDS, today=TODAY)  # fmt: skip
        with store.engine.connect() as conn:
            stored = conn.execute(
                sa.select(samples.c.row, samples.c.sample_id, samples.c.bulk_density_g_cm3, samples.c.ingest_flag)
                .where(samples.c.submission_id == rep.submission_id)
                .order_by(samples.c.row)
            ).all()
    sub = rep.submission
    assert sub.submitted == ROWS
    assert sub.accepted + sub.rejected == sub.submitted
    expected = [(int(r), str(s)) for r, s in zip(whole.accepted["row"], whole.accepted["sample_id"], strict=True)]
    assert [(r.row, r.sample_id) for r in stored] == [e for e in expected if e[1] != "S5"]
    got = {(r.row, r.code) for r in rep.rejections}
    assert got == {(r.row, r.code) for r in whole.rejected} | {(7, "id_already_stored")}
    # The exact repeat of line 12 is rejected on its own line only; both copies of S20 are rejected.
    assert {r.row for r in rep.rejections if r.code == "duplicate_id"} == {1_802, 22, 2_202}
    noted = {r.row: r.ingest_flag for r in stored if r.ingest_flag}
    assert list(noted) == [1_302]
    assert stored[[r.row for r in stored].index(1_302)].bulk_density_g_cm3 is None
    summary = rep.submission.summary
    assert summary is not None
    assert '"id_already_stored": 1' in summary
