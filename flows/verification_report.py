"""Verification flow: check a run directory or bundle and publish the result.

``verification_report(run_dir)`` re-hashes every file of the manifest and reports unlisted files
(:func:`~mrv.report.manifest.verify_manifest`). With ``rederive=True`` it runs the whole verifier of
``mrv report verify`` (:func:`mrv.report.verify.verify`: signature with ``public_key``, step chain,
re-derivation of every artefact from its inputs). The result is a Prefect markdown artifact; a
failure fails the flow run with :class:`~mrv.errors.VerificationError` after the artifact is
written, so the evidence is kept with the failed run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.regional_monitoring import retry_transient
from mrv.errors import VerificationError
from mrv.report.manifest import VerifyResult, raise_on_mismatch, verify_manifest

ARTIFACT_KEY = "manifest-verification"
REDERIVE_ARTIFACT_KEY = "run-verification"


def _markdown(run_dir: Path, result: VerifyResult) -> str:
    if result.ok:
        return (
            f"## Manifest verification: OK\n\nAll {result.checked} files listed in `{run_dir}/manifest.json` match.\n"
        )
    rows = "\n".join(
        f"| `{m.path}` | {m.reason} | `{m.expected[:12]}` | `{(m.actual or '-')[:12]}` |" for m in result.mismatches
    )
    return (
        f"## Manifest verification: FAILED\n\n{len(result.mismatches)} files of `{run_dir}` do not match "
        f"`manifest.json` ({result.checked} listed).\n\n| file | reason | expected sha256 | found sha256 |\n"
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


@task(name="rederive-run", retries=0)
def rederive(run_dir: str, public_key: str | None) -> dict[str, Any]:
    from mrv.report.verify import verify as verify_run

    path = Path(run_dir).expanduser()
    try:
        result = verify_run(path, public_key=Path(public_key) if public_key else None)
    except VerificationError as exc:
        create_markdown_artifact(
            key=REDERIVE_ARTIFACT_KEY, markdown=f"## Verification: FAILED\n\n{exc}\n", description=f"Verification of {path}"
        )
        raise
    rows = "\n".join(f"| {lk.name} | {lk.method} | {lk.seconds:.2f} | {lk.detail} |" for lk in result.links)
    create_markdown_artifact(
        key=REDERIVE_ARTIFACT_KEY,
        markdown=(
            f"## Verification: OK\n\nSignature: {result.signature.status}; {result.files} files, {result.steps} steps "
            f"chained.\n\n| link | method | s | detail |\n|---|---|---|---|\n{rows}\n"
        ),
        description=f"Verification of {path}",
    )
    return {"links": [lk.name for lk in result.links], "signature": result.signature.status, "seconds": result.seconds}


@flow(name="verification-report", log_prints=False)
def verification_report(run_dir: str, rederive_all: bool = False, public_key: str | None = None) -> dict[str, Any]:
    """Re-hash every file in ``run_dir/manifest.json``; with ``rederive_all`` also re-derive every artefact."""
    out = verify(str(run_dir))
    if rederive_all:
        out = {**out, **rederive(str(run_dir), public_key)}
    return out
