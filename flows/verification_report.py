"""Verification flow: check a run directory or bundle and publish the result.

``verification_report(run_dir)`` runs the same verifier as ``mrv report verify``
(:func:`mrv.report.verify.verify`): signature with ``public_key``, every file's hash, the step chain
and the re-derivation of every artefact from its inputs. ``hash_only=True`` mirrors
``mrv report verify --hash-only`` (signature, hashes, completeness and step chain; no re-derivation).
The result is a Prefect markdown artifact; a failure fails the flow run with
:class:`~mrv.errors.VerificationError` after the artifact is written, so the evidence is kept with the
failed run (for a run directory, the artifact lists every file that does not match the manifest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from mrv.errors import MRVError, VerificationError
from mrv.report.manifest import verify_manifest
from mrv.report.verify import Verification, verify

ARTIFACT_KEY = "run-verification"


def _ok_markdown(result: Verification) -> str:
    rows = "\n".join(f"| {lk.name} | {lk.method} | {lk.seconds:.2f} | {lk.detail} |" for lk in result.links)
    links = (
        f"\n\n| link | method | s | detail |\n|---|---|---|---|\n{rows}\n"
        if result.links
        else "\n\nRe-derivation skipped (hash_only).\n"
    )
    return (
        f"## Verification: OK\n\nSignature: {result.signature.status}; {result.files} files match manifest.json, "
        f"{result.steps} steps chained.{links}"
    )


def _failed_markdown(path: Path, exc: VerificationError) -> str:
    text = f"## Verification: FAILED\n\n{exc}\n"
    if not path.is_dir():
        return text
    try:
        mismatches = verify_manifest(path).mismatches
    except MRVError:
        return text
    if mismatches:
        rows = "\n".join(
            f"| `{m.path}` | {m.reason} | `{m.expected[:12]}` | `{(m.actual or '-')[:12]}` |" for m in mismatches
        )
        text += (
            f"\n{len(mismatches)} files do not match `manifest.json`:\n\n| file | reason | expected sha256 | found sha256 |\n"
            f"|---|---|---|---|\n{rows}\n\nRestore the listed files from the original run (or its archive), "
            "or re-run the pipeline to regenerate the outputs and a fresh manifest.\n"
        )
    return text


@task(name="verify-run", retries=0)
def verify_run(run_dir: str, public_key: str | None = None, hash_only: bool = False) -> dict[str, Any]:
    """:func:`mrv.report.verify.verify` on ``run_dir`` (a run directory, bundle directory or bundle zip)."""
    path = Path(run_dir).expanduser().resolve()
    try:
        result = verify(path, public_key=Path(public_key) if public_key else None, rederive=not hash_only)
    except VerificationError as exc:
        create_markdown_artifact(
            key=ARTIFACT_KEY, markdown=_failed_markdown(path, exc), description=f"Verification of {path}"
        )
        raise
    create_markdown_artifact(key=ARTIFACT_KEY, markdown=_ok_markdown(result), description=f"Verification of {path}")
    return {
        "run_dir": str(path),
        "ok": True,
        "files": result.files,
        "steps": result.steps,
        "links": [lk.name for lk in result.links],
        "signature": result.signature.status,
        "seconds": result.seconds,
    }


@flow(name="verification-report", log_prints=False)
def verification_report(run_dir: str, hash_only: bool = False, public_key: str | None = None) -> dict[str, Any]:
    """Verify ``run_dir`` as ``mrv report verify`` does (re-deriving every artefact unless ``hash_only``)."""
    return verify_run(str(run_dir), public_key, hash_only)
