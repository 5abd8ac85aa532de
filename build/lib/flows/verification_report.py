"""Verification flow: re-hash a run directory against its manifest and publish the result.

The result (files checked, every mismatching file with its reason) is a Prefect markdown
artifact; a mismatch fails the flow run with :class:`~mrv.errors.VerificationError` after the
artifact is written, so the evidence is kept with the failed run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.regional_monitoring import retry_transient
from mrv.report.manifest import VerifyResult, raise_on_mismatch, verify_manifest

ARTIFACT_KEY = "manifest-verification"


def _markdown(run_dir: Path, result: VerifyResult) -> str:
    if result.ok:
        return (
            f"## Manifest verification: OK\n\nAll {result.checked} files listed in `{run_dir}/manifest.json` match.\n"
        )
    rows = "\n".join(
        f"| `{m.path}` | {m.reason} | `{m.expected[:12]}` | `{(m.actual or '-')[:12]}` |" for m in result.mismatches
    )
    return (
        f"## Manifest verification: FAILED\n\n{len(result.mismatches)} of {result.checked} files listed in "
        f"`{run_dir}/manifest.json` do not match.\n\n| file | reason | expected sha256 | found sha256 |\n"
        f"|---|---|---|---|\n{rows}\n\nRestore the listed files from the original run (or its archive), "
        "or re-run the pipeline to regenerate the outputs and a fresh manifest.\n"
    )


@task(name="verify-manifest", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_transient)
def verify(run_dir: str) -> dict[str, Any]:
    path = Path(run_dir).expanduser().resolve()
    result = verify_manifest(path)
    create_markdown_artifact(
        key=ARTIFACT_KEY, markdown=_markdown(path, result), description=f"Manifest check of {path}"
    )
    raise_on_mismatch(result)
    return {"run_dir": str(path), "ok": result.ok, "checked": result.checked}


@flow(name="verification-report", log_prints=False)
def verification_report(run_dir: str) -> dict[str, Any]:
    """Re-hash every file in ``run_dir/manifest.json``; fails with the list of mismatching files."""
    return verify(str(run_dir))
