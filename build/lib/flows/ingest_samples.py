"""Sample submission flow: an agency's file -> validated rows in the sample store, with a row-level report.

The flow wires :func:`mrv.samples.submit.submit_file`; the report of every row (stored or rejected
with its reason) is published as a Prefect table artifact, the counts as a markdown artifact.
A file rejected whole is recorded in the ledger by ``submit_file``, published as a markdown
artifact with its reason, and fails the flow run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.regional_monitoring import retry_transient
from mrv.errors import SubmissionRejected
from mrv.resources import profile_dirs
from mrv.samples.cli import DEFAULT_FORMAT
from mrv.samples.formats import load_format
from mrv.samples.store import DEFAULT_URL, SampleStore, SubmissionReport
from mrv.samples.submit import submit_file

ROWS_ARTIFACT_KEY = "sample-submission-rows"
SUMMARY_ARTIFACT_KEY = "sample-submission"


def _summary(report: SubmissionReport) -> dict[str, Any]:
    s = report.submission
    return {
        "submission_id": s.submission_id,
        "agency": s.agency,
        "source": s.source,
        "format": s.format,
        "filename": s.filename,
        "sha256": s.sha256,
        "status": s.status,
        "submitted": s.submitted,
        "accepted": s.accepted,
        "rejected": s.rejected,
        "flagged": report.flagged,
        "duplicate_of": report.duplicate_of,
    }


def _publish(report: SubmissionReport) -> None:
    s = report.submission
    rows = [{"row": row, "sample / column": what, "result": result} for row, what, result in report.lines()]
    if report.duplicate_of is not None:
        headline = (
            f"`{s.filename}` was already stored as submission {s.submission_id} on {s.received_utc} "
            "(same SHA-256); nothing was stored again."
        )
    else:
        headline = f"Submission {s.submission_id}: `{s.filename}` stored."
    create_markdown_artifact(
        key=SUMMARY_ARTIFACT_KEY,
        markdown=(
            f"## Sample submission {s.submission_id}\n\n{headline}\n\n"
            "| agency | source | format | status | submitted | accepted | rejected | flagged by QA |\n"
            "|---|---|---|---|---|---|---|---|\n"
            f"| {s.agency} | {s.source} | {s.format} | {s.status} | {s.submitted} | {s.accepted} | {s.rejected} "
            f"| {report.flagged} |\n\n"
            f"SHA-256 `{s.sha256}`\n"
        ),
        description=f"Counts of submission {s.submission_id} from {s.agency}",
    )
    create_table_artifact(
        key=ROWS_ARTIFACT_KEY,
        table=rows,
        description=f"Every row of submission {s.submission_id} ({s.filename}): ACCEPTED (maybe FLAGGED) or REJECTED, with the reason",
    )


@task(name="submit-sample-file", retries=2, retry_delay_seconds=3, retry_condition_fn=retry_transient)
def submit_samples(
    file: str,
    agency: str,
    source: str,
    format_name: str,
    db_url: str,
    project_crs: str,
    region_bounds: tuple[float, float, float, float] | None,
) -> dict[str, Any]:
    fmt = load_format(format_name, search_dirs=profile_dirs("sample_formats"))
    try:
        with SampleStore.open(db_url) as store:
            report = submit_file(store, file, agency=agency, source=source, fmt=fmt, project_crs=project_crs,
                                 region_bounds=region_bounds)  # fmt: skip
    except SubmissionRejected as exc:
        create_markdown_artifact(
            key=SUMMARY_ARTIFACT_KEY,
            markdown=f"## Sample submission rejected\n\n`{file}` from {agency} was rejected whole:\n\n> {exc}\n",
            description=f"Rejected file from {agency}",
        )
        raise
    _publish(report)
    summary = _summary(report)
    get_run_logger().info(
        "submission %s: %s rows, %s accepted (%s flagged by QA), %s rejected%s",
        summary["submission_id"], summary["submitted"], summary["accepted"], summary["flagged"], summary["rejected"],
        " (duplicate, nothing stored)" if report.duplicate_of is not None else "",
    )  # fmt: skip
    return summary


@flow(name="ingest-samples", log_prints=False)
def ingest_samples(
    file: str,
    agency: str,
    source: str = "lab",
    format: str | None = None,
    db_url: str = DEFAULT_URL,
    project_crs: str = "EPSG:32633",
    region_bounds: tuple[float, float, float, float] | None = None,
) -> dict[str, Any]:
    """Validate ``file`` from ``agency`` and store it in the sample database at ``db_url``.

    ``format`` is a profile name in ``mrv/profiles/sample_formats/`` or a profile YAML path (default:
    ``lab_wide`` for lab, ``crowd`` for crowd files). Returns the submission's counts; the
    row-level report is the ``sample-submission-rows`` table artifact.
    """
    format_name = format or DEFAULT_FORMAT.get(source, "lab_wide")
    return submit_samples(str(file), agency, source, format_name, db_url, project_crs, region_bounds)
