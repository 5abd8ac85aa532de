"""Provenance manifest for a run directory: what went in, what came out, and with which code.

``manifest.json`` records the SHA-256 of the configuration, of every input file (an input
directory such as a STAC catalog is hashed file by file) and of every output, together with the
git revision of this package's checkout and the versions of the numerical packages. A verifier
re-hashes everything with :func:`verify_manifest`.

Environment variables and credentials are never recorded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mrv.errors import MRVError, VerificationError

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "Mismatch",
    "VerifyResult",
    "build_manifest",
    "git_state",
    "package_versions",
    "raise_on_mismatch",
    "sha256_file",
    "verify_manifest",
    "write_manifest",
]

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
_CHUNK = 1024 * 1024

#: Distribution names whose versions are recorded (missing ones are skipped). GDAL is added
#: separately from ``rasterio.__gdal_version__``.
_PACKAGES: tuple[str, ...] = (
    "numpy",
    "pandas",
    "xarray",
    "dask",
    "distributed",
    "rasterio",
    "odc-stac",
    "pystac",
    "pystac-client",
    "scikit-learn",
    "quantile-forest",
    "scipy",
    "prefect",
    "shapely",
    "pyproj",
)

_RESERVED_KEYS = frozenset(
    {
        "schema_version",
        "created_utc",
        "git_revision",
        "git_dirty",
        "python",
        "platform",
        "packages",
        "config",
        "inputs",
        "outputs",
    }
)


@dataclass(frozen=True)
class Mismatch:
    """One file whose current content does not match the manifest.

    ``path`` is as written in the manifest (outputs relative to the run directory, inputs and
    config absolute); ``actual`` is ``None`` when the file is missing.
    """

    path: str
    expected: str
    actual: str | None
    reason: str


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify_manifest`."""

    ok: bool
    checked: int
    mismatches: tuple[Mismatch, ...]


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _iter_files(directory: Path) -> Iterator[Path]:
    """Every regular file under ``directory``, recursively, in sorted order."""
    yield from sorted(p for p in directory.rglob("*") if p.is_file())


def _file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _git(args: list[str], cwd: Path) -> str | None:
    # A minimal environment: never let the caller's environment leak into anything recorded.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env=env,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout


def git_state() -> tuple[str | None, bool | None]:
    """(revision, dirty) of the checkout this package is imported from, or (None, None)."""
    source_root = Path(__file__).resolve().parents[2]
    revision_out = _git(["rev-parse", "HEAD"], source_root)
    status_out = _git(["status", "--porcelain", "--untracked-files=no"], source_root)
    revision = revision_out.strip() if revision_out else None
    if status_out is None:
        return revision, None
    return revision, bool(status_out.strip())


def package_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import rasterio

        versions["GDAL"] = str(rasterio.__gdal_version__)
    except ImportError:
        pass
    return versions


def _input_entries(role: str, path: Path) -> list[dict[str, Any]]:
    resolved = Path(path).expanduser().resolve()
    if resolved.is_dir():
        files = list(_iter_files(resolved))
        if not files:
            raise MRVError(
                f"Input {role!r} is the directory {resolved} which contains no files; "
                "point the input at the populated directory (e.g. the STAC catalog) or drop it."
            )
        return [{"role": role, "path": str(f), **_file_entry(f)} for f in files]
    if not resolved.is_file():
        raise MRVError(
            f"Input {role!r} does not exist: {resolved}; check the path in the configuration "
            "or create the input before writing the manifest."
        )
    return [{"role": role, "path": str(resolved), **_file_entry(resolved)}]


def _output_files(run_dir: Path, outputs: Iterable[Path]) -> list[Path]:
    manifest_path = run_dir / MANIFEST_NAME
    seen: set[Path] = set()
    files: list[Path] = []
    for out in outputs:
        candidate = Path(out).expanduser()
        if not candidate.is_absolute():
            candidate = run_dir / candidate
        candidate = candidate.resolve()
        if not candidate.is_relative_to(run_dir):
            raise MRVError(
                f"Output {candidate} is outside the run directory {run_dir}; write every output "
                "inside the run directory (or record it as an input instead)."
            )
        if candidate.is_dir():
            expanded = list(_iter_files(candidate))
        elif candidate.is_file():
            expanded = [candidate]
        else:
            raise MRVError(
                f"Output {candidate} does not exist; write it before building the manifest or "
                "remove it from the list of outputs."
            )
        for f in expanded:
            if f == manifest_path or f in seen:
                continue
            seen.add(f)
            files.append(f)
    return sorted(files)


def build_manifest(
    run_dir: Path,
    *,
    inputs: Mapping[str, Path],
    config: Path,
    outputs: Iterable[Path],
    extra: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """Describe a run directory: config, inputs and outputs with their SHA-256, code versions.

    ``inputs`` maps a role (e.g. ``"samples"``, ``"stac_catalog"``) to a file or directory
    anywhere on disk; a directory is hashed file by file. ``outputs`` are files or directories
    inside ``run_dir`` (relative paths are taken relative to ``run_dir``) and are recorded
    relative to it. ``manifest.json`` itself is never listed. ``extra`` keys are merged into the
    top level and must not shadow the standard keys.
    """
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise MRVError(f"Run directory {run_dir} does not exist; create it (run the pipeline) first.")
    config_path = Path(config).expanduser().resolve()
    if not config_path.is_file():
        raise MRVError(f"Config file {config_path} does not exist; pass the configuration file the run was made with.")
    extra = dict(extra or {})
    clash = sorted(_RESERVED_KEYS.intersection(extra))
    if clash:
        raise MRVError(f"extra keys {clash} would overwrite standard manifest fields; rename them.")

    input_entries: list[dict[str, Any]] = []
    for role, path in inputs.items():
        input_entries.extend(_input_entries(role, path))

    output_entries = [
        {"path": f.relative_to(run_dir).as_posix(), **_file_entry(f)} for f in _output_files(run_dir, outputs)
    ]
    revision, dirty = git_state()
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_revision": revision,
        "git_dirty": dirty,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "config": {"path": str(config_path), "sha256": sha256_file(config_path)},
        "inputs": input_entries,
        "outputs": output_entries,
    }
    manifest.update(extra)
    return manifest


def write_manifest(
    run_dir: Path,
    *,
    inputs: Mapping[str, Path],
    config: Path,
    outputs: Iterable[Path],
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Build the manifest (see :func:`build_manifest`) and write ``run_dir/manifest.json``."""
    manifest = build_manifest(run_dir, inputs=inputs, config=config, outputs=outputs, extra=extra)
    try:
        text = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MRVError(
            f"The manifest cannot be written as JSON ({exc}); pass only JSON-serialisable, finite values in `extra`."
        ) from exc
    target = Path(run_dir).expanduser().resolve() / MANIFEST_NAME
    tmp = target.with_name(MANIFEST_NAME + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


def _check(path_label: str, path: Path, expected: object) -> Mismatch | None:
    expected_str = str(expected)
    if not path.is_file():
        return Mismatch(path=path_label, expected=expected_str, actual=None, reason="missing")
    actual = sha256_file(path)
    if actual != expected_str:
        return Mismatch(
            path=path_label,
            expected=expected_str,
            actual=actual,
            reason="sha256 mismatch",
        )
    return None


def _load_manifest(run_dir: Path) -> dict[str, Any]:
    manifest_path = run_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise VerificationError(
            f"No {MANIFEST_NAME} in {run_dir}; this is not a complete run directory. Re-run the "
            "pipeline to produce one, or pass the right directory."
        )
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VerificationError(
            f"{manifest_path} cannot be read as JSON ({exc}); restore it from the original run or re-run the pipeline."
        ) from exc
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise VerificationError(
            f"{manifest_path} is not a schema_version {SCHEMA_VERSION} manifest; verify it with "
            "the package version that wrote it, or re-run the pipeline."
        )
    return data


def _entries(data: Mapping[str, Any], key: str, manifest_path: Path) -> list[Mapping[str, Any]]:
    entries = data.get(key, [])
    if not isinstance(entries, list) or not all(
        isinstance(e, Mapping) and "path" in e and "sha256" in e for e in entries
    ):
        raise VerificationError(
            f"{manifest_path}: {key!r} must be a list of objects with 'path' and 'sha256'; "
            "the manifest is damaged - restore it or re-run the pipeline."
        )
    return entries


def verify_manifest(run_dir: Path) -> VerifyResult:
    """Re-hash the config, every input and every output listed in ``run_dir/manifest.json``.

    Outputs are looked up relative to ``run_dir`` (so a run directory may be moved); inputs and
    the config at their recorded absolute paths.
    """
    run_dir = Path(run_dir).expanduser().resolve()
    data = _load_manifest(run_dir)
    manifest_path = run_dir / MANIFEST_NAME
    mismatches: list[Mismatch] = []
    checked = 0

    config = data.get("config")
    if not isinstance(config, Mapping) or "path" not in config or "sha256" not in config:
        raise VerificationError(
            f"{manifest_path} has no valid 'config' entry; the manifest is damaged - restore it or re-run the pipeline."
        )
    to_check: list[tuple[str, Path, object]] = [(str(config["path"]), Path(str(config["path"])), config["sha256"])]
    for entry in _entries(data, "inputs", manifest_path):
        to_check.append((str(entry["path"]), Path(str(entry["path"])), entry["sha256"]))
    for entry in _entries(data, "outputs", manifest_path):
        rel = str(entry["path"])
        to_check.append((rel, run_dir / rel, entry["sha256"]))

    for label, path, expected in to_check:
        checked += 1
        mismatch = _check(label, path, expected)
        if mismatch is not None:
            mismatches.append(mismatch)
    return VerifyResult(ok=not mismatches, checked=checked, mismatches=tuple(mismatches))


def raise_on_mismatch(result: VerifyResult) -> None:
    """Raise :class:`VerificationError` naming every mismatching file; no-op when ``ok``."""
    if result.ok and not result.mismatches:
        return
    lines = [
        f"  - {m.path}: {m.reason}"
        + (f" (expected sha256 {m.expected[:12]}..., found {m.actual[:12]}...)" if m.actual else "")
        for m in result.mismatches
    ]
    raise VerificationError(
        f"{len(result.mismatches)} of {result.checked} files do not match the manifest:\n"
        + "\n".join(lines)
        + "\nRestore the listed files from the original run (or its archive), or re-run the "
        "pipeline to regenerate the outputs and a fresh manifest."
    )
