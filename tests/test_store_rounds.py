"""Issue 15.8: the sample store feeds the runs; a round schedule; the ingest flow takes file content.

The demo region's 2024 lab file is submitted to a store; a run config whose 2024 round reads
``store:`` instead of the file prepares that round's sites from the store, skips the step while
nothing changes, and recomputes it (with the new sites) once another agency submits samples --
what a monthly scheduled deployment of that config does.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from mrv.config import load_config, scheduled_rounds
from mrv.errors import ConfigError
from mrv.pipeline import imagery, samples
from mrv.pipeline.layout import RunLayout, StepPlace
from mrv.resources import profile_dirs
from mrv.samples.formats import load_format
from mrv.samples.store import SampleStore, list_submissions
from mrv.samples.submit import submit_file, withdraw

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"
LAB_2024 = REPO / "sample_data" / "demo" / "samples" / "lab_2024.csv"


def _config(tmp_path: Path, db_url: str, **round_store: Any) -> Path:
    raw = yaml.safe_load(DEMO.read_text())
    base = DEMO.parent
    raw["region"]["fields"] = str((base / raw["region"]["fields"]).resolve())
    raw["imagery"]["catalog"] = str((base / raw["imagery"]["catalog"]).resolve())
    raw["output_dir"] = str(tmp_path / "run")
    raw.pop("round_schedule", None)
    for rnd in raw["rounds"]:
        for s in rnd.get("samples", []):
            s["path"] = str((base / s["path"]).resolve())
    raw["rounds"][1].pop("samples")
    raw["rounds"][1]["store"] = {"url": db_url, **round_store}
    path = tmp_path / "store_run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _submit(db_url: str, path: Path, agency: str) -> int:
    cfg = load_config(DEMO)
    grid = imagery.project_grid(cfg)
    fmt = load_format("lab_wide", search_dirs=profile_dirs("sample_formats"))
    with SampleStore.open(db_url) as store:
        return submit_file(store, path, agency=agency, source="lab", fmt=fmt, project_crs=cfg.region.crs,
                           region_bounds=grid.bounds).submission_id  # fmt: skip


def _prepare(config: Path) -> tuple[bool, pd.DataFrame, dict[str, Any]]:
    cfg = load_config(config)
    layout = RunLayout(cfg.output_dir)
    rnd = cfg.rounds[1]
    _spec, ran = samples.run_samples(cfg, rnd, layout)
    sites = pd.read_csv(layout.sites(rnd.name), keep_default_na=False, na_values=[""])
    return ran, sites, json.loads(layout.samples_summary(rnd.name).read_text())


def _current_dir(config: Path) -> Path:
    """The samples step directory of the store-fed round that the run directory's pointer names."""
    cfg = load_config(config)
    return RunLayout(cfg.output_dir).step_dir(StepPlace("samples", cfg.rounds[1].name))


@pytest.mark.slow
def test_a_round_takes_its_samples_from_the_store_and_reruns_only_when_they_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_url = f"sqlite:///{tmp_path / 'samples.db'}"
    monkeypatch.setenv("AGENCY_STORE", db_url)
    first = _submit(db_url, LAB_2024, "Lower Austria Soil Service")
    config = _config(tmp_path, "env:AGENCY_STORE", sources=["lab"])

    ran, sites, summary = _prepare(config)
    expected = pd.read_csv(LAB_2024)["site_id"].nunique()
    assert ran
    first_dir = _current_dir(config)
    assert len(sites) == expected
    assert summary["lab"]["from_store"]["submissions"] == [first]
    assert summary["lab"]["from_store"]["database"] == db_url

    ran, _, _ = _prepare(config)
    assert not ran  # nothing new in the store: the monthly run skips the step

    # Another agency submits later samples of 2024 (a copy of the file, moved 2 km north, new ids).
    later = pd.read_csv(LAB_2024, dtype=str)
    later["sample_id"] = "L-" + later["sample_id"]
    later["site_id"] = "L-" + later["site_id"]
    later["y"] = (later["y"].astype(float) - 2000).map(lambda v: f"{v:.2f}")
    later_path = tmp_path / "later.csv"
    later.to_csv(later_path, index=False)
    second = _submit(db_url, later_path, "Second Lab")
    ran, sites, summary = _prepare(config)
    assert ran  # new data: real work
    assert _current_dir(config) != first_dir  # a new keyed directory beside the first one
    assert summary["lab"]["from_store"]["submissions"] == [first, second]
    assert len(sites) > expected

    with SampleStore.open(db_url) as store:
        withdraw(store, second, reason="wrong plot")
        assert [s.status for s in list_submissions(store)] == ["stored", "withdrawn"]
    ran, sites, _ = _prepare(config)
    # the store holds what it held at first again: the first run's keyed directory is current again, not recomputed
    assert not ran
    assert _current_dir(config) == first_dir
    assert len(sites) == expected

    out_of_window = _config(tmp_path, "env:AGENCY_STORE", start="2030-01-01", end="2030-12-31")
    _, sites, _ = _prepare(out_of_window)
    assert sites.empty


def test_round_store_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="carries a password"):
        load_config(_config(tmp_path, "postgresql+psycopg://u:pw@h/db"))
    with pytest.raises(ConfigError, match="sources"):
        load_config(_config(tmp_path, "env:X", sources=["satellite"]))
    cfg = load_config(_config(tmp_path, "env:X"))
    store = cfg.rounds[1].store
    assert store is not None
    assert (store.start, store.end) == (cfg.rounds[1].start, cfg.rounds[1].end)  # default window: the round


def test_round_schedule_generates_the_ended_yearly_rounds(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEMO.read_text())
    base = DEMO.parent
    raw["region"]["fields"] = str((base / raw["region"]["fields"]).resolve())
    raw["imagery"]["catalog"] = str((base / raw["imagery"]["catalog"]).resolve())
    raw.pop("rounds")
    raw["round_schedule"] = {"first_year": 2021, "every_years": 1, "season_start": "03-01", "season_end": "10-31",
                             "until": "2024-06-30", "store": {"url": "env:MRV_SAMPLES_DB", "sources": ["lab"]}}  # fmt: skip
    path = tmp_path / "scheduled.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    assert [r.name for r in cfg.rounds] == ["2021", "2022", "2023"]  # 2024's season has not ended by until
    assert cfg.rounds[0].store is not None
    assert (cfg.rounds[0].store.start, cfg.rounds[0].store.end) == (dt.date(2021, 3, 1), dt.date(2021, 10, 31))
    assert cfg.round_schedule is not None
    later = scheduled_rounds(cfg.round_schedule.__class__(**{**cfg.round_schedule.__dict__, "until": None}),
                             today=dt.date(2025, 11, 1))  # fmt: skip
    assert [r.name for r in later] == ["2021", "2022", "2023", "2024", "2025"]  # the monthly run after Oct 2025
    raw["round_schedule"]["until"] = "2021-05-01"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="no round has ended yet"):
        load_config(path)
