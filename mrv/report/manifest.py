"""Provenance manifest for a run directory or a bundle: what went in, what came out, and with which code.

``manifest.json`` records the SHA-256 of the configuration, of every input file (an input
directory such as a STAC catalog is hashed file by file) and of every output, the chain of step
keys (every ``step.json`` record of :mod:`mrv.pipeline.cache` among the outputs), the git
revision of this package's checkout and the versions of the numerical packages.

Every path is relative to the directory holding the manifest (schema 2): outputs lie inside it;
in a run directory (``kind: run``) inputs and the config may lie beside it (``../``), in a bundle
(``kind: bundle``, :mod:`mrv.report.bundle`) everything lies inside. :func:`verify_manifest`
re-hashes every entry and reports files under the directory that the manifest does not list.

Environment variables and credentials are never recorded.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import posixpath
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mrv.errors import MRVError, VerificationError
from mrv.fsio import sha256_file, write_text
from mrv.identity import identity

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "SIGNATURE_NAME",
    "Mismatch",
    "VerifyResult",
    "build_manifest",
    "load_manifest",
    "manifest_entries",
    "package_versions",
    "raise_on_mismatch",
    "resolve_entry",
    "verify_manifest",
    "write_manifest",
]

MANIFEST_NAME = "manifest.json"
#: Detached signature of ``manifest.json`` (:mod:`mrv.report.signing`); never listed in the manifest.
SIGNATURE_NAME = "manifest.sig"
SCHEMA_VERSION = 2
_READABLE_SCHEMAS = (1, 2)
#: The record every cached step writes into its keyed directory (:mod:`mrv.pipeline.cache`).
_STEP_RECORD = "step.json"

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
        "kind",
        "created_utc",
        "git_revision",
        "git_dirty",
        "python",
        "platform",
        "packages",
        "config",
        "inputs",
        "outputs",
        "steps",
    }
)


@dataclass(frozen=True)
class Mismatch:
    """One file whose current content does not match the manifest.

    ``path`` is as written in the manifest (relative to the manifest's directory); ``actual`` is
    ``None`` when the file is missing or not listed.
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


def _iter_files(directory: Path) -> Iterator[Path]:
    """Every regular file under ``directory``, recursively, in sorted order."""
    yield from sorted(p for p in directory.rglob("*") if p.is_file())


def _file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


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


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form (``../`` where it lies beside ``root``)."""
    return Path(os.path.relpath(path, root)).as_posix()


def _input_entries(role: str, path: Path, run_dir: Path) -> list[dict[str, Any]]:
    resolved = Path(path).expanduser().resolve()
    if resolved.is_dir():
        files = list(_iter_files(resolved))
        if not files:
            raise MRVError(
                f"Input {role!r} is the directory {resolved} which contains no files; "
                "point the input at the populated directory (e.g. the STAC catalog) or drop it."
            )
        return [
            {"role": role, "path": _relative(f, run_dir), "member": f.relative_to(resolved).as_posix(), **_file_entry(f)}
            for f in files
        ]
    if not resolved.is_file():
        raise MRVError(
            f"Input {role!r} does not exist: {resolved}; check the path in the configuration "
            "or create the input before writing the manifest."
        )
    return [{"role": role, "path": _relative(resolved, run_dir), "member": resolved.name, **_file_entry(resolved)}]


def _output_files(run_dir: Path, outputs: Iterable[Path]) -> list[Path]:
    """The files of ``outputs`` (directories expanded)."""
    skip = {run_dir / MANIFEST_NAME, run_dir / SIGNATURE_NAME}
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
            if f in skip or f in seen:
                continue
            seen.add(f)
            files.append(f)
    return sorted(files)


def step_chain(root: Path, output_paths: Iterable[str]) -> list[dict[str, Any]]:
    """``{step, key, code_version, sidecar}`` of every step record (``<keyed dir>/step.json``) among ``output_paths``."""
    chain = []
    for rel in sorted(output_paths):
        if Path(rel).name != _STEP_RECORD:
            continue
        try:
            record = json.loads((root / rel).read_text(encoding="utf-8"))
            chain.append(
                {"step": str(record["step"]), "key": str(record["key"]), "code_version": str(record["code_version"]), "sidecar": rel}
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MRVError(
                f"The step record {root / rel} cannot be read ({exc!r}); re-run the pipeline to rewrite it."
            ) from exc
    return chain


def build_manifest(
    run_dir: Path,
    *,
    inputs: Mapping[str, Path | Sequence[Path]],
    config: Path,
    outputs: Iterable[Path],
    extra: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """Describe a run directory: config, inputs and outputs with their SHA-256, step chain, code versions.

    ``inputs`` maps a role (e.g. ``"samples"``, ``"stac_catalog"``) to a file or directory
    anywhere on disk; a directory is hashed file by file (``member`` is each file's path inside
    it). ``outputs`` are files or directories inside ``run_dir`` (relative paths are taken
    relative to ``run_dir``). Every path
    is recorded relative to ``run_dir``. ``manifest.json`` and ``manifest.sig`` are never listed.
    ``extra`` keys are merged into the top level and must not shadow the standard keys.
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
    for role, paths in inputs.items():
        for path in (paths,) if isinstance(paths, str | Path) else paths:
            input_entries.extend(_input_entries(role, path, run_dir))

    output_entries = [
        {"path": f.relative_to(run_dir).as_posix(), **_file_entry(f)} for f in _output_files(run_dir, outputs)
    ]
    code = identity()
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "run",
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mrv_version": code.version,
        "source_revision": code.revision,
        "source_revision_from": code.revision_source,
        "git_revision": code.revision if code.revision_source == "git" else None,
        "git_dirty": code.dirty,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "config": {"path": _relative(config_path, run_dir), **_file_entry(config_path)},
        "inputs": input_entries,
        "outputs": output_entries,
        "steps": step_chain(run_dir, (e["path"] for e in output_entries)),
    }
    manifest.update(extra)
    return manifest


def dump_manifest(manifest: Mapping[str, Any], target: Path) -> Path:
    """Write ``manifest`` as indented JSON to ``target`` atomically."""
    try:
        text = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MRVError(
            f"The manifest cannot be written as JSON ({exc}); pass only JSON-serialisable, finite values in `extra`."
        ) from exc
    return write_text(target, text + "\n")


def write_manifest(
    run_dir: Path,
    *,
    inputs: Mapping[str, Path | Sequence[Path]],
    config: Path,
    outputs: Iterable[Path],
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Build the manifest (see :func:`build_manifest`) and write ``run_dir/manifest.json``."""
    manifest = build_manifest(run_dir, inputs=inputs, config=config, outputs=outputs, extra=extra)
    return dump_manifest(manifest, Path(run_dir).expanduser().resolve() / MANIFEST_NAME)


# --------------------------------------------------------------------------- reading and verifying

_FIX = "the manifest is damaged - restore it from the original run or bundle, or re-run the pipeline."


def load_manifest(root: Path) -> dict[str, Any]:
    """``root/manifest.json`` checked for shape: an object of a known schema with a config and entry lists."""
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise VerificationError(
            f"No {MANIFEST_NAME} in {root}; this is not a complete run directory or bundle. Re-run the "
            "pipeline to produce one, or pass the right directory."
        )
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VerificationError(
            f"{manifest_path} cannot be read as JSON ({exc}); restore it from the original run or re-run the pipeline."
        ) from exc
    if not isinstance(data, dict):
        raise VerificationError(f"{manifest_path} holds a JSON {type(data).__name__}, not an object; {_FIX}")
    if data.get("schema_version") not in _READABLE_SCHEMAS:
        raise VerificationError(
            f"{manifest_path} is not a schema_version {' or '.join(map(str, _READABLE_SCHEMAS))} manifest "
            f"(found {data.get('schema_version')!r}); verify it with the package version that wrote it, or re-run the pipeline."
        )
    config = data.get("config")
    if not isinstance(config, Mapping) or not isinstance(config.get("path"), str) or not isinstance(config.get("sha256"), str):
        raise VerificationError(f"{manifest_path} has no valid 'config' entry (an object with 'path' and 'sha256'); {_FIX}")
    for key in ("inputs", "outputs"):
        manifest_entries(data, key, manifest_path)
    steps = data.get("steps", [])
    if not isinstance(steps, list) or not all(isinstance(s, Mapping) and isinstance(s.get("sidecar"), str) for s in steps):
        raise VerificationError(f"{manifest_path}: 'steps' must be a list of objects with 'sidecar'; {_FIX}")
    return data


def manifest_entries(data: Mapping[str, Any], key: str, manifest_path: Path) -> list[Mapping[str, Any]]:
    """The ``inputs`` or ``outputs`` list, each entry an object with string ``path`` and ``sha256``."""
    entries = data.get(key, [])
    if not isinstance(entries, list) or not all(
        isinstance(e, Mapping) and isinstance(e.get("path"), str) and isinstance(e.get("sha256"), str) for e in entries
    ):
        raise VerificationError(
            f"{manifest_path}: {key!r} must be a list of objects with string 'path' and 'sha256'; {_FIX}"
        )
    return entries


def resolve_entry(root: Path, rel: str, *, inside: bool, schema: int = SCHEMA_VERSION) -> Path:
    """The file a manifest path names: relative to ``root``; with ``inside`` it may not leave ``root``.

    Schema-1 manifests recorded inputs and the config by absolute path; those are accepted as such.
    """
    p = Path(rel)
    if p.is_absolute():
        if schema == 1 and not inside:
            return p
        raise VerificationError(
            f"{root / MANIFEST_NAME} lists the absolute path {rel!r}; manifests record paths relative to their "
            "directory. Re-create the run or bundle with this version."
        )
    normal = posixpath.normpath(p.as_posix())
    if inside and (normal == ".." or normal.startswith("../")):
        raise VerificationError(
            f"{root / MANIFEST_NAME} lists {rel!r}, which lies outside {root}; every file of a bundle (and every "
            "output of a run) must lie inside it. The manifest was edited or written by a broken tool."
        )
    return root / normal


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


def verify_manifest(run_dir: Path) -> VerifyResult:
    """Re-hash the config, every input and every output listed in ``run_dir/manifest.json``.

    Paths are taken relative to ``run_dir``, so a run directory may be moved together with its
    inputs and a bundle may be moved anywhere. Every file under ``run_dir`` must be listed (the
    manifest and its signature excepted): an unlisted file is reported as ``not listed``. A
    manifest that lists no inputs or no outputs is rejected.
    """
    run_dir = Path(run_dir).expanduser().resolve()
    data = load_manifest(run_dir)
    manifest_path = run_dir / MANIFEST_NAME
    schema = int(data["schema_version"])
    bundle = data.get("kind") == "bundle"
    inputs = manifest_entries(data, "inputs", manifest_path)
    outputs = manifest_entries(data, "outputs", manifest_path)
    for key, entries in (("outputs", outputs), ("inputs", inputs)):
        if not entries:
            raise VerificationError(
                f"{manifest_path} lists no {key}; a manifest must name every {key[:-1]} of the run. It was emptied "
                "or written for an incomplete run - restore it from the original run or bundle."
            )
    config = data["config"]
    to_check: list[tuple[str, Path, object]] = [
        (config["path"], resolve_entry(run_dir, config["path"], inside=bundle, schema=schema), config["sha256"])
    ]
    to_check += [(e["path"], resolve_entry(run_dir, e["path"], inside=bundle, schema=schema), e["sha256"]) for e in inputs]
    to_check += [(e["path"], resolve_entry(run_dir, e["path"], inside=True, schema=schema), e["sha256"]) for e in outputs]

    mismatches: list[Mismatch] = []
    listed: set[Path] = set()
    for label, path, expected in to_check:
        listed.add(path.resolve() if path.exists() else path)
        mismatch = _check(label, path, expected)
        if mismatch is not None:
            mismatches.append(mismatch)
    for f in _iter_files(run_dir):
        if f.name in (MANIFEST_NAME, SIGNATURE_NAME) and f.parent == run_dir:
            continue
        if f.resolve() not in listed and not _superseded(f, run_dir, listed):
            mismatches.append(
                Mismatch(path=f.relative_to(run_dir).as_posix(), expected="-", actual=None, reason="not listed in the manifest")
            )
    return VerifyResult(ok=not mismatches, checked=len(to_check), mismatches=tuple(mismatches))


def _superseded(path: Path, run_dir: Path, listed: set[Path]) -> bool:
    """True for a file of a step directory this run does not use: an earlier run's keyed directory (kept, never
    overwritten, with its own unlisted ``step.json``) or an interrupted step's staging directory (``.<name>.partial-*``)."""
    rel = path.relative_to(run_dir)
    if rel.parts[0] not in ("work", "maps"):
        return False
    for depth in range(1, len(rel.parts)):
        d = run_dir.joinpath(*rel.parts[:depth])
        if rel.parts[depth - 1].startswith("."):
            return True
        record = d / _STEP_RECORD
        if record.is_file() and record.resolve() not in listed:
            return True
    return False


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
        f"{len(result.mismatches)} files do not match the manifest ({result.checked} listed):\n"
        + "\n".join(lines)
        + "\nRestore the listed files from the original run (or its archive) and remove files that are not part "
        "of it, or re-run the pipeline to regenerate the outputs and a fresh manifest."
    )
