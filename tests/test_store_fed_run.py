"""Issue 15.8 through the whole run: a round fed by the sample store, submissions changing between runs.

An agency submits half of a generated region's 2024 lab samples with ``mrv samples submit``; the
run config's 2024 round reads ``rounds[].store`` instead of a file. ``mrv run`` (the CLI, as a
subprocess on the session's Prefect server) reports those samples. A second submission (the other
half) makes the next ``mrv run`` recompute the 2024 sample step -- and only that round's: the 2021
step, fed by its file, is reused -- and the report counts both; withdrawing the first submission
(``mrv samples withdraw``) changes the sites and the counts again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from regions import finish_mrv_run, region_config, run_env, start_mrv_run
from test_store import run_cli

from mrv.pipeline.layout import RunLayout, StepPlace
from mrv.synthetic import SceneSpec

pytestmark = pytest.mark.slow  # three small `mrv run`s: about 2-3 minutes on 2 busy cores

SPEC = SceneSpec(seed=11, width_px=96, height_px=96, n_fields=4, n_lab_sites=40, n_crowd=10)
SECTIONS = {"model": {"n_estimators": 30}, "accounting": {"n_simulations": 100}, "dask": {"n_workers": 1}}


def _report(layout: RunLayout) -> dict[str, Any]:
    return json.loads(layout.report_json.read_text())


def _store_summary(layout: RunLayout) -> dict[str, Any]:
    return json.loads(layout.samples_summary("2024").read_text())["lab"]


def _record(layout: RunLayout, round_name: str) -> dict[str, Any]:
    """The step record of a round's current samples step (its key, code version and the store state it was keyed on)."""
    return json.loads(layout.step_record(StepPlace("samples", round_name)).read_text())


def _site_ids(layout: RunLayout) -> set[str]:
    return set(pd.read_csv(layout.sites("2024"), dtype=str, keep_default_na=False)["site_id"])


def test_a_store_fed_round_follows_submissions_through_mrv_run(tmp_path: Path, prefect_api: str) -> None:
    config, region = region_config(tmp_path, SPEC, name="store-fed", output_dir=tmp_path / "run", sections=SECTIONS)
    db = f"sqlite:///{tmp_path / 'agency' / 'samples.db'}"
    raw = yaml.safe_load(config.read_text())
    assert [r["name"] for r in raw["rounds"]] == ["2021", "2024"]
    raw["rounds"][1].pop("samples")
    raw["rounds"][1]["store"] = {"url": db, "sources": ["lab"]}
    config.write_text(yaml.safe_dump(raw))

    lab = pd.read_csv(region.lab_samples["2024"], dtype=str, keep_default_na=False)
    sites = sorted(lab["site_id"].unique())
    first_sites, later_sites = set(sites[: len(sites) // 2]), set(sites[len(sites) // 2 :])
    first, later = tmp_path / "first.csv", tmp_path / "later.csv"
    lab[lab["site_id"].isin(first_sites)].to_csv(first, index=False)
    lab[lab["site_id"].isin(later_sites)].to_csv(later, index=False)
    n_first, n_later = int(lab["site_id"].isin(first_sites).sum()), int(lab["site_id"].isin(later_sites).sum())

    def submit(path: Path, agency: str) -> None:
        code, out, err = run_cli(["submit", str(path), "--agency", agency, "--db", db, "--config", str(config)])
        assert code == 0, (out, err)

    env = run_env(tmp_path, prefect_api)
    layout = RunLayout(tmp_path / "run")

    def run(label: str) -> None:
        finish_mrv_run(start_mrv_run(config, layout.root, env, tmp_path / f"{label}.log"), label)

    submit(first, "Soil Service")
    run("first")
    summary = _store_summary(layout)
    assert summary["from_store"]["submissions"] == [1]
    assert summary["from_store"]["samples"] == summary["accepted"] == n_first
    n_2021 = int(json.loads(layout.samples_summary("2021").read_text())["lab"]["accepted"])
    assert _report(layout)["samples"]["lab"]["accepted"] == n_2021 + n_first
    assert _site_ids(layout) == first_sites
    assert _record(layout, "2024")["config"]["store"]["submissions"] == [1]
    before = {r: _record(layout, r) for r in ("2021", "2024")}

    submit(later, "Second Lab")
    run("second")
    after = {r: _record(layout, r) for r in ("2021", "2024")}
    # The store's new submission: the 2024 step was recomputed, keyed on the store's submissions.
    assert after["2024"]["key"] != before["2024"]["key"]
    assert after["2024"]["config"]["store"]["submissions"] == [1, 2]
    assert after["2024"]["config"]["store"]["samples"] == [n_first, n_later]
    if after["2021"]["code_version"] == before["2021"]["code_version"]:  # (a tree edited meanwhile re-keys every step)
        assert after["2021"]["key"] == before["2021"]["key"]  # the file-fed round: reused
        assert after["2021"]["finished_utc"] == before["2021"]["finished_utc"]
    summary = _store_summary(layout)
    assert summary["from_store"]["submissions"] == [1, 2]
    assert summary["from_store"]["samples"] == summary["accepted"] == n_first + n_later
    assert _report(layout)["samples"]["lab"]["accepted"] == n_2021 + n_first + n_later
    assert _site_ids(layout) == first_sites | later_sites

    code, out, err = run_cli(["withdraw", "1", "--reason", "wrong plot numbers", "--db", db])
    assert code == 0, (out, err)
    run("withdrawn")
    summary = _store_summary(layout)
    assert summary["from_store"]["submissions"] == [2]
    assert summary["from_store"]["samples"] == summary["accepted"] == n_later
    assert _report(layout)["samples"]["lab"]["accepted"] == n_2021 + n_later
    assert _site_ids(layout) == later_sites
