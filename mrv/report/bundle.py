"""A portable, optionally signed bundle of one run, for a verifier on another machine.

``mrv report bundle RUN -o RUN.zip`` (or ``-o DIR``) writes::

    manifest.json            schema 2, kind "bundle": every path below relative to the bundle root
    manifest.sig             Ed25519 signature of manifest.json (with --sign-key; mrv.report.signing)
    report.json, maps/, model/, work/, figures/, accounting.json, report/, ...   the run's outputs
    inputs/config/<run>.yaml the run config, byte for byte
    inputs/config/<kind>/    the sample-format, methodology and provider profiles the run resolved
    inputs/<role>/...        every input: field polygons, each sample file, the STAC catalog (item JSON
                             and assets, for a local catalog), a DEM file

The config is kept unchanged (its SHA-256 is the run's); ``config_paths`` in the manifest says which
config keys point at which bundle file, so :func:`bundle_config` can load it on any machine. Profiles
sit next to the config, where :mod:`mrv.resources` looks first, so the verifier's own profile
directory (``$HOME``) plays no part. The step records (``step.json``) travel with their outputs and
the manifest lists the chain of step keys.

Only a run whose files still match its own manifest is bundled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from mrv.config import RunConfig, load_config, parse_config, read_yaml
from mrv.errors import ConfigError, MRVError, VerificationError
from mrv.fsio import atomic_path, sha256_file
from mrv.modeling.registry import copy_entry, read_reference
from mrv.pipeline.layout import RunLayout
from mrv.report.manifest import (
    MANIFEST_NAME,
    dump_manifest,
    load_manifest,
    manifest_entries,
    raise_on_mismatch,
    resolve_entry,
    verify_manifest,
)
from mrv.resources import find_profile
from mrv.textsafe import is_safe_component

__all__ = ["MAX_EXTRACT_BYTES", "bundle_config", "make_bundle", "open_bundle", "run_config"]

#: Largest total size a bundle archive may expand to (guards against zip bombs); 64 GiB.
MAX_EXTRACT_BYTES = 64 * 1024**3
INPUTS_DIR = "inputs"
CONFIG_DIR = f"{INPUTS_DIR}/config"
#: Where a bundle carries the registry entry of the model its run references (``models/<model_id>/``).
BUNDLED_REGISTRY = "models"


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _config_path_keys(raw: Mapping[str, Any], cfg: RunConfig) -> list[tuple[list[str | int], Path]]:
    """``(key path in the YAML, resolved file)`` of every config value naming an input file."""
    keys: list[tuple[list[str | int], Path]] = [(["region", "fields"], cfg.region.fields)]
    if cfg.imagery.catalog is not None:
        keys.append((["imagery", "catalog"], cfg.imagery.catalog))
    dem = (raw.get("imagery") or {}).get("dem")
    if cfg.imagery.dem is not None and cfg.imagery.dem.path is not None:
        keys.append((["imagery", "dem"] if isinstance(dem, str) else ["imagery", "dem", "path"], cfg.imagery.dem.path))
    for i, rnd in enumerate(cfg.rounds):
        for j, sf in enumerate(rnd.samples):
            keys.append((["rounds", i, "samples", j, "path"], sf.path))
    return keys


def _profiles(cfg: RunConfig) -> list[tuple[str, str, Path]]:
    """``(kind, name, file)`` of every named profile the run resolves (sample formats, methodology, provider)."""
    found: list[tuple[str, str, Path]] = []
    for rnd in cfg.rounds:
        for sf in rnd.samples:
            found.append(
                ("sample_formats", sf.format, find_profile("sample_formats", sf.format, config_path=cfg.source_path))
            )
    found.append(
        (
            "methodologies",
            cfg.accounting.methodology,
            find_profile("methodologies", cfg.accounting.methodology, config_path=cfg.source_path),
        )
    )
    if cfg.imagery.provider:
        found.append(
            (
                "providers",
                cfg.imagery.provider,
                find_profile("providers", cfg.imagery.provider, config_path=cfg.source_path),
            )
        )
    return found


def run_config(root: Path, manifest: Mapping[str, Any]) -> RunConfig:
    """The config of a run directory or bundle, loaded so that its outputs are ``root``.

    A bundle's config is loaded with the ``config_paths`` of its manifest (see :func:`bundle_config`);
    a run directory's from where its manifest says (relative to the run directory).
    """
    if manifest.get("kind") == "bundle":
        return bundle_config(root, manifest)
    config = manifest["config"]
    path = resolve_entry(root, config["path"], inside=False, schema=int(manifest["schema_version"]))
    return load_config(path, output_dir=root)  # model.registry_dir: the registry the run used


def bundle_config(root: Path, manifest: Mapping[str, Any]) -> RunConfig:
    """The bundle's run config with every input path pointed into the bundle and its outputs at ``root``."""
    config = manifest["config"]
    path = resolve_entry(root, config["path"], inside=True)
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"), f"The bundle's config {config['path']}")
    except (OSError, UnicodeDecodeError, ConfigError) as exc:
        raise VerificationError(
            f"The bundle's config {config['path']} cannot be read as YAML ({exc}); restore the bundle."
        ) from exc
    if not isinstance(raw, dict):
        raise VerificationError(f"The bundle's config {config['path']} is not a YAML mapping; restore the bundle.")
    mapping = manifest.get("config_paths")
    if not isinstance(mapping, list):
        raise VerificationError(f"{root / MANIFEST_NAME} has no 'config_paths' list; it is not a complete bundle.")
    for item in mapping:
        try:
            key, rel = list(item["key"]), str(item["path"])
            target: Any = raw
            for k in key[:-1]:
                target = target[k]
            target[key[-1]] = str(resolve_entry(root, rel, inside=True))
        except (KeyError, IndexError, TypeError) as exc:
            raise VerificationError(
                f"{root / MANIFEST_NAME}: config_paths entry {item!r} does not fit the config ({exc!r}); the bundle is damaged."
            ) from exc
    raw.pop("output_dir", None)
    if isinstance(raw.get("model"), dict):
        raw["model"]["registry_dir"] = str(root / BUNDLED_REGISTRY)  # the entry the run references travels along
    try:
        return parse_config(raw, source_path=path.resolve(), output_dir=root)
    except ConfigError as exc:
        raise VerificationError(f"The bundle's config {config['path']} is not a valid run config: {exc}") from exc


def make_bundle(run_dir: Path, out: Path, *, sign_key: Path | None = None, passphrase: bytes | None = None) -> Path:
    """Bundle ``run_dir`` into ``out`` (a ``.zip`` file, or a new directory); sign it with ``sign_key``."""
    run_dir = Path(run_dir).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    if out.exists() and (out.is_file() or any(out.iterdir())):
        raise MRVError(
            f"{out} already exists; choose a new file or directory for the bundle (bundles are never overwritten)."
        )
    if out.is_relative_to(run_dir):
        raise MRVError(f"{out} lies inside the run directory {run_dir}; write the bundle elsewhere.")
    raise_on_mismatch(verify_manifest(run_dir))
    manifest = load_manifest(run_dir)
    if manifest.get("kind") != "run" or manifest.get("schema_version") != 2:
        raise MRVError(
            f"{run_dir / MANIFEST_NAME} is not a schema-2 run manifest; re-run the pipeline with this version."
        )
    cfg = run_config(run_dir, manifest)
    config_file = resolve_entry(run_dir, manifest["config"]["path"], inside=False)
    raw = read_yaml(config_file.read_text(encoding="utf-8"), str(config_file))

    with contextlib.ExitStack() as stack:
        if out.suffix == ".zip":
            stage = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mrv-bundle-"))) / "bundle"
        else:
            stage = out
        stage.mkdir(parents=True, exist_ok=True)
        bundled = _stage(run_dir, manifest, cfg, raw, stage)
        dump_manifest(bundled, stage / MANIFEST_NAME)
        if sign_key is not None:
            from mrv.report.signing import sign_manifest

            sign_manifest(stage, sign_key, passphrase=passphrase)
        raise_on_mismatch(verify_manifest(stage))
        if out.suffix == ".zip":
            _zip(stage, out)
    return out


def _stage(run_dir: Path, manifest: Mapping[str, Any], cfg: RunConfig, raw: Any, stage: Path) -> dict[str, Any]:
    run_manifest = run_dir / MANIFEST_NAME
    outputs = manifest_entries(manifest, "outputs", run_manifest)
    for e in outputs:
        _copy(resolve_entry(run_dir, e["path"], inside=True), stage / e["path"])
    outputs = [*outputs, *_registry_entry(run_dir, stage, {e["path"] for e in outputs})]

    config_src = resolve_entry(run_dir, manifest["config"]["path"], inside=False)
    config_rel = f"{CONFIG_DIR}/{config_src.name}"
    _copy(config_src, stage / config_rel)

    inputs: list[dict[str, Any]] = []
    where: dict[Path, str] = {}  # original file -> bundle path
    for e in manifest_entries(manifest, "inputs", run_manifest):
        role, member = str(e.get("role", "")), str(e.get("member", ""))
        parts = PurePosixPath(member).parts
        if not is_safe_component(role) or not parts or not all(is_safe_component(p) for p in parts):
            raise MRVError(
                f"Input entry {e['path']!r} has an unsafe role or member name; re-run the pipeline with this version."
            )
        src = resolve_entry(run_dir, e["path"], inside=False)
        rel = f"{INPUTS_DIR}/{role}/{member}"
        _copy(src, stage / rel)
        where[src.resolve()] = rel
        inputs.append({**e, "path": rel, "origin": e["path"]})

    for kind, name, src in _profiles(cfg):
        rel = f"{CONFIG_DIR}/{kind}/{src.name}"
        if (stage / rel).exists():
            continue
        _copy(src, stage / rel)
        inputs.append(
            {
                "role": f"profile_{kind}",
                "path": rel,
                "member": src.name,
                "name": name,
                "sha256": sha256_file(src),
                "bytes": src.stat().st_size,
            }
        )

    config_paths = []
    for key, path in _config_path_keys(raw, cfg):
        found = where.get(Path(path).resolve())
        if found is None:
            raise MRVError(
                f"The config key {'.'.join(map(str, key))} names {path}, which the run's manifest does not list as an "
                "input; re-run the pipeline so the manifest records it."
            )
        config_paths.append({"key": key, "path": found})
    # Profiles given as a path (not a name) are pointed at their copy next to the bundle's config.
    named: list[tuple[list[str | int], str, str]] = [
        (["rounds", i, "samples", j, "format"], "sample_formats", sf.format)
        for i, rnd in enumerate(cfg.rounds)
        for j, sf in enumerate(rnd.samples)
    ]
    named.append((["accounting", "methodology"], "methodologies", cfg.accounting.methodology))
    if cfg.imagery.provider:
        named.append((["imagery", "provider"], "providers", cfg.imagery.provider))
    for key, kind, value in named:
        if value.endswith((".yaml", ".yml")) or "/" in value:
            src = find_profile(kind, value, config_path=cfg.source_path)
            config_paths.append({"key": key, "path": f"{CONFIG_DIR}/{kind}/{src.name}"})

    local = cfg.imagery.source == "local"
    return {
        **manifest,
        "kind": "bundle",
        "bundled_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run_manifest_sha256": sha256_file(run_manifest),
        "config": {**manifest["config"], "path": config_rel, "origin": manifest["config"]["path"]},
        "config_paths": config_paths,
        "inputs": inputs,
        "outputs": list(outputs),
        "imagery_items": (
            "the static STAC catalog (item JSON and assets) is in inputs/stac_catalog"
            if local
            else "item ids only (work/<round>/imagery.json): the run did not keep the item JSON it fetched"
        ),
    }


def _registry_entry(run_dir: Path, stage: Path, listed: set[str]) -> list[dict[str, Any]]:
    """Copy the registry entry the run's model reference pins into ``models/<id>/`` (hashes checked first)."""
    ref_path = RunLayout(run_dir).model_ref
    try:
        copied = copy_entry(read_reference(ref_path), stage / BUNDLED_REGISTRY)
    except MRVError as exc:
        raise MRVError(f"The run's model cannot be bundled: {exc}") from exc
    out = []
    for f in (copied.model_path, copied.card_path):
        rel = f.relative_to(stage).as_posix()
        if rel not in listed:
            out.append({"path": rel, "sha256": sha256_file(f), "bytes": f.stat().st_size})
    return out


def _zip(stage: Path, out: Path) -> None:
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(p for p in stage.rglob("*") if p.is_file()):
            zf.write(f, f.relative_to(stage).as_posix())


@contextlib.contextmanager
def open_bundle(path: Path, *, max_bytes: int = MAX_EXTRACT_BYTES) -> Iterator[Path]:
    """The directory of a run directory or bundle; a ``.zip`` bundle is extracted to a temporary directory.

    Members with absolute paths, ``..``, links or a total size above ``max_bytes`` are refused.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        yield path.resolve()
        return
    if not path.is_file():
        raise VerificationError(f"{path} does not exist; pass a run directory, a bundle directory or a bundle .zip.")
    if not zipfile.is_zipfile(path):
        raise VerificationError(
            f"{path} is neither a directory nor a zip archive; pass a bundle written by 'mrv report bundle'."
        )
    with tempfile.TemporaryDirectory(prefix="mrv-verify-") as tmp:
        root = Path(tmp) / "bundle"
        root.mkdir()
        try:
            _extract(path, root, max_bytes)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise VerificationError(
                f"{path} is a damaged zip archive ({exc}); ask the operator for the bundle again."
            ) from exc
        yield root


def _extract(path: Path, root: Path, max_bytes: int) -> None:
    total = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = PurePosixPath(info.filename)
            mode = info.external_attr >> 16
            if info.is_dir():
                continue
            if name.is_absolute() or ".." in name.parts or "\\" in info.filename or stat.S_ISLNK(mode):
                raise VerificationError(
                    f"{path} holds the member {info.filename!r}, which would be written outside the bundle (or is a "
                    "link); the archive is not a bundle of 'mrv report bundle'. Do not extract it."
                )
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                while chunk := src.read(1024 * 1024):
                    total += len(chunk)
                    if total > max_bytes:
                        raise VerificationError(
                            f"{path} expands to more than {max_bytes / 1024**3:.0f} GiB; refusing to extract it."
                        )
                    dst.write(chunk)
