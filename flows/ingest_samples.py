"""Sample submission flow: an agency's file content -> validated rows in the sample store, with a row-level report.

The flow takes the file's *content* (text, or base64 for binary-safe transport), not a path on
the server, so an agency can submit from afar through the Prefect API::

    prefect deployment run ingest-samples/submit-demo -p filename=lab.csv -p agency="Soil Lab" \\
        -p content="$(cat lab.csv)"

The project CRS and region come from the run config the deployment belongs to (``config_path``,
fixed per deployment by :mod:`flows.deploy`); there is no default CRS. The database is named,
never given with its credentials: ``db`` is ``secret:BLOCK`` (a Prefect Secret block holding
the URL), ``env:NAME`` (an environment variable of the worker), a URL without a password, or
unset (``$MRV_SAMPLES_DB``, else ``sqlite:///out/samples.db``). A URL with a password is refused:
flow parameters are shown in the Prefect UI and API. Logs and artifacts show URLs redacted.

It wires :func:`mrv.samples.submit.submit_file`; the report of every row (stored or rejected
with its reason) is published as a Prefect table artifact, the counts and reasons as a markdown
artifact. A file rejected whole is recorded in the ledger by ``submit_file``, published as a
markdown artifact with its reason, and fails the flow run.
"""

from __future__ import annotations

import base64
import binascii
import json
import tempfile
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.regional_monitoring import retry_transient
from mrv.errors import ConfigError, SubmissionRejected
from mrv.samples.cli import DEFAULT_FORMAT, project_of
from mrv.samples.formats import load_format
from mrv.samples.store import SampleStore, SubmissionReport, redact_url, resolve_url
from mrv.samples.submit import MAX_FILE_BYTES, submit_file
from mrv.textsafe import is_safe_component

ROWS_ARTIFACT_KEY = "sample-submission-rows"
SUMMARY_ARTIFACT_KEY = "sample-submission"


def database_url(db: str | None) -> str:
    """The URL that the ``db`` parameter names (``secret:BLOCK``, ``env:NAME``, a URL without password, None)."""
    if db and db.startswith("secret:"):
        from prefect.blocks.system import Secret

        name = db[len("secret:") :]
        try:
            block: Any = Secret.load(name)  # sync call from sync code (a coroutine only inside an event loop)
            value = block.get()
        except ValueError as exc:
            raise ConfigError(
                f"There is no Prefect Secret block {name!r} holding the sample database URL; create it, e.g. "
                f"Secret(value='postgresql+psycopg://user:password@host/db').save({name!r})."
            ) from exc
        return str(value)
    if db and "://" in db and sa.engine.make_url(db).password:
        raise ConfigError(
            f"The database URL {redact_url(db)} carries a password in a flow parameter, which the Prefect UI and "
            "API show to everyone; store it in a Secret block and pass db='secret:NAME', or pass db='env:NAME'."
        )
    return resolve_url(db)


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
        "counts": json.loads(s.summary) if s.summary else None,
    }


def _md(text: object) -> str:
    """User text for a markdown table cell (no pipes, no line breaks)."""
    return " ".join(str(text).replace("|", "\\|").split())


def _publish(report: SubmissionReport) -> None:
    s = report.submission
    rows = [{"row": row, "sample / column": what, "result": result} for row, what, result in report.lines()]
    if report.duplicate_of is not None:
        headline = (
            f"`{_md(s.filename)}` was already stored as submission {s.submission_id} on {s.received_utc} "
            "(same SHA-256 and profile); nothing was stored again."
        )
    else:
        headline = f"Submission {s.submission_id}: `{_md(s.filename)}` stored."
    reasons = (json.loads(s.summary).get("by_reason") if s.summary else None) or {}
    by_reason = "".join(f"| {_md(k)} | {n} |\n" for k, n in reasons.items())
    create_markdown_artifact(
        key=SUMMARY_ARTIFACT_KEY,
        markdown=(
            f"## Sample submission {s.submission_id}\n\n{headline}\n\n"
            "| agency | source | format | status | submitted | accepted | rejected | flagged by QA |\n"
            "|---|---|---|---|---|---|---|---|\n"
            f"| {_md(s.agency)} | {s.source} | {_md(s.format)} | {s.status} | {s.submitted} | {s.accepted} | "
            f"{s.rejected} | {report.flagged} |\n\n"
            + (f"| rejected lines by reason | lines |\n|---|---|\n{by_reason}\n" if by_reason else "")
            + f"SHA-256 `{s.sha256}`\n"
        ),
        description=f"Counts of submission {s.submission_id} from {_md(s.agency)}",
    )
    create_table_artifact(
        key=ROWS_ARTIFACT_KEY,
        table=rows,
        description=f"Every row of submission {s.submission_id} ({_md(s.filename)}): ACCEPTED (maybe FLAGGED) or "
        "REJECTED, with the reason",
    )


def decode_content(content: str, encoding: str) -> bytes:
    """The submitted bytes: ``content`` as UTF-8 text or base64, at most :data:`MAX_FILE_BYTES`."""
    if encoding == "base64":
        try:
            raw = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SubmissionRejected(f"The content is not valid base64 ({exc}); encode the file with base64.") from exc
    elif encoding == "text":
        raw = content.encode("utf-8")
    else:
        raise ConfigError(f"encoding must be 'text' or 'base64', got {encoding!r}.")
    if len(raw) > MAX_FILE_BYTES:
        raise SubmissionRejected(f"The file has {len(raw):,} bytes, more than {MAX_FILE_BYTES:,}; split it.")
    return raw


@task(name="submit-sample-file", retries=2, retry_delay_seconds=3, retry_condition_fn=retry_transient)
def submit_samples(
    content: str,
    filename: str,
    agency: str,
    source: str,
    format_name: str,
    db: str | None,
    config_path: str,
    encoding: str = "text",
    replaces: int | None = None,
) -> dict[str, Any]:
    name = Path(filename).name
    if not is_safe_component(name):
        raise ConfigError(f"filename {filename!r} must be a plain file name (letters, digits, '.', '_', '-').")
    raw = decode_content(content, encoding)
    crs, bounds = project_of(Path(config_path))
    fmt = load_format(format_name, config_path=Path(config_path))
    url = database_url(db)
    logger = get_run_logger()
    logger.info("submission of %s by %s into %s (project CRS %s)", name, agency, redact_url(url), crs)
    with tempfile.TemporaryDirectory(prefix="mrv-ingest-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(raw)
        try:
            with SampleStore.open(url, on_wait=lambda s: logger.info("waiting for the write lock (%.0f s)", s)) as store:
                report = submit_file(store, path, agency=agency, source=source, fmt=fmt, project_crs=crs,
                                     region_bounds=bounds, replaces=replaces)  # fmt: skip
        except SubmissionRejected as exc:
            create_markdown_artifact(
                key=SUMMARY_ARTIFACT_KEY,
                markdown=f"## Sample submission rejected\n\n`{_md(name)}` from {_md(agency)} was rejected whole:\n\n"
                f"> {_md(exc)}\n",
                description=f"Rejected file from {_md(agency)}",
            )
            raise
    _publish(report)
    summary = _summary(report)
    logger.info(
        "submission %s: %s rows, %s accepted (%s flagged by QA), %s rejected%s",
        summary["submission_id"], summary["submitted"], summary["accepted"], summary["flagged"], summary["rejected"],
        " (duplicate, nothing stored)" if report.duplicate_of is not None else "",
    )  # fmt: skip
    return summary


@flow(name="ingest-samples", log_prints=False)
def ingest_samples(
    content: str,
    filename: str,
    agency: str,
    config_path: str,
    source: str = "lab",
    format: str | None = None,
    db: str | None = None,
    encoding: Literal["text", "base64"] = "text",
    replaces: int | None = None,
) -> dict[str, Any]:
    """Validate the file ``content`` (named ``filename``) from ``agency`` and store it in the sample database.

    ``config_path`` is the run config whose ``region.crs`` and region the samples belong to;
    ``format`` a profile name in ``mrv/profiles/sample_formats/`` (or next to the run config) or a
    profile YAML path (default: ``lab_wide`` for lab, ``crowd`` for crowd files); ``db`` names the
    database (see the module docstring); ``replaces`` a stored submission this file corrects.
    Returns the submission's counts; the row-level report is the ``sample-submission-rows`` table artifact.
    """
    format_name = format or DEFAULT_FORMAT.get(source, "lab_wide")
    return submit_samples(content, filename, agency, source, format_name, db, config_path, encoding, replaces)
