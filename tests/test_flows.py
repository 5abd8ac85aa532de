"""The ingest and verification flows under a Prefect test server, task retries, and the deployments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from flows.regional_monitoring import retry_transient
from mrv.errors import ConfigError, SubmissionRejected, VerificationError

REPO = Path(__file__).resolve().parents[1]
HEADER = (
    "sample_id,site_id,field_id,x,y,epsg,sampling_date,top_cm,bottom_cm,soc_g_kg,"
    "bulk_density_g_cm3,coarse_fragments_vol_pct,method"
)


def _lab_csv(path: Path) -> Path:
    rows = [
        "S1,P1,F1,581000,5356000,32633,2021-05-01,0,15,20.5,1.30,5,dc",
        "S2,P1,F1,581000,5356000,32633,2021-05-01,15,30,14.0,1.40,5,dc",
        "S3,P2,F1,581200,5356100,32633,2021-05-01,0,30,18.0,1.35,3,dc",
        "S4,P3,F1,581300,5356200,32633,2021-05-01,0,30,-4,1.35,3,dc",  # negative SOC
        "S5,P4,F1,581300,5356200,32633,not-a-date,0,30,18.0,1.35,3,dc",
    ]
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def _artifacts(flow_run_id: UUID) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_ingest_flow_stores_rows_and_publishes_row_report(tmp_path: Path) -> None:
    from flows.ingest_samples import ROWS_ARTIFACT_KEY, SUMMARY_ARTIFACT_KEY, ingest_samples
    from mrv.samples.store import SampleStore, list_submissions

    db = f"sqlite:///{tmp_path / 'samples.db'}"
    content = _lab_csv(tmp_path / "lab.csv").read_text(encoding="utf-8")  # the content, not a server path
    demo = str(REPO / "configs" / "demo.yaml")  # the project CRS and region come from the run config
    state = ingest_samples(content=content, filename="lab.csv", agency="Soil Lab", source="lab", config_path=demo,
                           db=db, return_state=True)  # fmt: skip
    assert state.is_completed()
    summary = state.result()
    assert (summary["submitted"], summary["accepted"], summary["rejected"]) == (5, 3, 2)
    assert summary["duplicate_of"] is None
    assert summary["counts"]["lines"] == {"submitted": 5, "accepted": 3, "rejected": 2}

    arts = _artifacts(state.state_details.flow_run_id)
    rows = json.loads(arts[ROWS_ARTIFACT_KEY].data)
    assert [r["row"] for r in rows] == sorted(r["row"] for r in rows)
    assert len(rows) == 5
    rejected = [r for r in rows if r["result"].startswith("REJECTED: ")]
    assert len(rejected) == 2
    assert all(len(r["result"]) > len("REJECTED: ") for r in rejected)  # each with its reason
    assert arts[ROWS_ARTIFACT_KEY].type == "table"
    assert "| Soil Lab | lab | lab_wide | stored | 5 | 3 | 2 |" in arts[SUMMARY_ARTIFACT_KEY].data

    again = ingest_samples(content=content, filename="lab.csv", agency="Soil Lab", config_path=demo, db=db)  # a no-op
    assert again["duplicate_of"] == summary["submission_id"]
    with SampleStore.open(db) as store:
        subs = list_submissions(store)
    assert [(s.status, s.accepted, s.rejected) for s in subs] == [("stored", 3, 2)]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_ingest_flow_fails_on_unreadable_file_with_reason_artifact(tmp_path: Path) -> None:
    from flows.ingest_samples import SUMMARY_ARTIFACT_KEY, ingest_samples
    from mrv.samples.store import SampleStore, list_submissions

    db = f"sqlite:///{tmp_path / 'samples.db'}"
    demo = str(REPO / "configs" / "demo.yaml")
    state = ingest_samples(content="this,is\nnot,a sample file\n", filename="junk.csv", agency="Soil Lab",
                           config_path=demo, db=db, return_state=True)  # fmt: skip
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), SubmissionRejected)
    markdown = _artifacts(state.state_details.flow_run_id)[SUMMARY_ARTIFACT_KEY].data
    assert "rejected whole" in markdown
    with SampleStore.open(db) as store:
        assert [s.status for s in list_submissions(store)] == ["rejected"]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_ingest_flow_takes_the_database_url_from_a_secret_block_never_from_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16.6: no credentials in flow parameters; the URL comes from a Prefect Secret block or the environment."""
    from prefect.blocks.system import Secret

    from flows.ingest_samples import database_url, ingest_samples

    db = f"sqlite:///{tmp_path / 'secret.db'}"
    Secret(value=db).save("mrv-test-samples-db", overwrite=True)
    content = _lab_csv(tmp_path / "lab.csv").read_text(encoding="utf-8")
    demo = str(REPO / "configs" / "demo.yaml")
    state = ingest_samples(content=content, filename="lab.csv", agency="Soil Lab", config_path=demo,
                           db="secret:mrv-test-samples-db", return_state=True)  # fmt: skip
    assert state.is_completed()
    assert state.result()["accepted"] == 3
    assert Path(tmp_path / "secret.db").is_file()
    monkeypatch.setenv("MRV_TEST_DB", db)
    assert database_url("env:MRV_TEST_DB") == db
    with pytest.raises(ConfigError, match=r"postgresql\+psycopg://agency:\*\*\*@host/db carries a password"):
        database_url("postgresql+psycopg://agency:hunter2@host/db")
    with pytest.raises(ConfigError, match="no Prefect Secret block"):
        database_url("secret:no-such-block")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_verification_flow_is_the_cli_verify_and_fails_on_tampered_output(tmp_path: Path) -> None:
    """The flow runs mrv.report.verify.verify (re-derivation by default, --hash-only as hash_only=True)."""
    from regions import region_config

    from flows.verification_report import ARTIFACT_KEY, verification_report
    from mrv.config import load_config
    from mrv.pipeline.layout import RunLayout
    from mrv.pipeline.plan import run_steps
    from mrv.report.build import build_report
    from mrv.synthetic import SceneSpec

    spec = SceneSpec(seed=11, width_px=64, height_px=64, n_fields=4, n_lab_sites=30, n_crowd=10)
    sections = {"imagery": {"tile_px": 64, "chunk_px": 64}, "model": {"n_estimators": 10, "cv_block_size_m": 160},
                "accounting": {"n_simulations": 40}, "dask": {"n_workers": 1}}  # fmt: skip
    config, _ = region_config(tmp_path, spec, name="flow-verify", output_dir=tmp_path / "run", sections=sections)
    cfg = load_config(config)
    layout = RunLayout(cfg.output_dir.resolve())
    run_steps(cfg, layout)
    build_report(cfg, layout)
    run = layout.root
    state = verification_report(run_dir=str(run), return_state=True)
    out = state.result()
    assert out["ok"] is True
    assert {"model", "accounting", "report", "rendering"} <= set(out["links"])  # re-derived, as the CLI does
    markdown = _artifacts(state.state_details.flow_run_id)[ARTIFACT_KEY].data
    assert "## Verification: OK" in markdown
    assert "| accounting | re-derived |" in markdown

    state = verification_report(run_dir=str(run), hash_only=True, return_state=True)
    assert state.result()["links"] == []
    assert "Re-derivation skipped" in _artifacts(state.state_details.flow_run_id)[ARTIFACT_KEY].data

    with (run / "report.html").open("ab") as f:
        f.write(b"<!-- tampered -->")
    state = verification_report(run_dir=str(run), return_state=True)
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), VerificationError)
    markdown = _artifacts(state.state_details.flow_run_id)[ARTIFACT_KEY].data
    assert "## Verification: FAILED" in markdown
    assert "| `report.html` | sha256 mismatch |" in markdown


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_tasks_retry_transient_errors_but_not_user_mistakes() -> None:
    from prefect import flow, task

    calls: dict[str, int] = {"transient": 0, "mistake": 0}

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_transient)
    def flaky() -> str:
        calls["transient"] += 1
        if calls["transient"] < 3:
            raise OSError("connection reset")
        return "ok"

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_transient)
    def mistaken() -> None:
        calls["mistake"] += 1
        raise ConfigError("region.crs must be an EPSG code; fix the config.")

    @flow
    def both() -> str:
        out = flaky()
        mistaken()
        return out

    state = both(return_state=True)
    assert state.is_failed()
    assert calls == {"transient": 3, "mistake": 1}


def _config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "configs"
    (d / "methodologies").mkdir(parents=True)
    for name in ("alpha", "beta"):
        cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
        cfg["name"] = name
        (d / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    (d / "notes.yaml").write_text(yaml.safe_dump({"title": "not a run config"}))
    (d / "methodologies" / "x.yaml").write_text(yaml.safe_dump({"rounds": []}))  # subdirectories are not scanned
    return d


def test_deployments_schedule_each_run_config_monthly_and_serve_the_rest_on_demand(tmp_path: Path) -> None:
    from flows.deploy import MONTHLY_CRON, build_deployments

    d = _config_dir(tmp_path)
    deployments = build_deployments(d, timezone="Europe/Vienna", db="env:AGENCY_DB")
    by_name = {(dep.flow_name, dep.name): dep for dep in deployments}
    assert set(by_name) == {
        ("regional-monitoring", "monitoring-alpha"),
        ("regional-monitoring", "monitoring-beta"),
        ("ingest-samples", "submit-alpha"),
        ("ingest-samples", "submit-beta"),
        ("verification-report", "verify"),
    }
    alpha = by_name[("regional-monitoring", "monitoring-alpha")]
    assert alpha.parameters == {"config_path": str((d / "alpha.yaml").resolve())}
    assert len(alpha.schedules) == 1
    sched = alpha.schedules[0].schedule
    assert (sched.cron, sched.timezone) == (MONTHLY_CRON, "Europe/Vienna")
    assert alpha.entrypoint == "flows/regional_monitoring.py:regional_monitoring"
    for key in (("ingest-samples", "submit-alpha"), ("verification-report", "verify")):
        assert not by_name[key].schedules
    assert by_name[("ingest-samples", "submit-alpha")].parameters == {
        "config_path": str((d / "alpha.yaml").resolve()), "db": "env:AGENCY_DB"}  # the run config's CRS, no secret
    with pytest.raises(ConfigError, match=r"agency:\*\*\*@host/db carries a password"):
        build_deployments(d, db="postgresql+psycopg://agency:hunter2@host/db")


def test_deployments_need_a_run_config(tmp_path: Path) -> None:
    from flows.deploy import build_deployments, run_configs

    assert run_configs(REPO / "configs") == [(REPO / "configs" / "demo.yaml").resolve()]
    (tmp_path / "notes.yaml").write_text("title: none\n")
    with pytest.raises(ConfigError, match="No run config"):
        build_deployments(tmp_path)
