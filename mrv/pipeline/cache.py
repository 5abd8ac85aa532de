"""Content-keyed, crash-safe steps: a step whose key has a complete directory is not run again.

A step is described by a :class:`StepSpec`, which its stage module (:mod:`mrv.pipeline.imagery`,
``samples``, ``model``, ``accounting``) builds beside the step function from one declaration of what
the step reads: the config values (dotted paths such as ``"region"`` or ``"model.process_sd_t_ha"``)
and the upstream outputs and input files. Its **key** is the SHA-256 of

* the step name,
* the SHA-256 of every input file (a directory input, e.g. a STAC catalog, is hashed file by file),
* the declared config values (as canonical JSON), and
* the code version (:func:`code_version`: package version + hash of the ``mrv`` sources).

The declaration is enforced, not trusted: :func:`run_cached` hands the step a config that raises
:class:`UndeclaredRead` on any value outside the declared paths, and a layout that raises on any
run-directory file outside the declared inputs (:class:`GuardedLayout`), so a step cannot read
something its key does not cover.

Outputs go to the step's keyed directory (:meth:`RunLayout.keyed_dir`). The step writes into a
staging directory beside it; when it returns, every output is fsynced, the step record
``step.json`` (key, inputs with hashes, config, output hashes) is written, and the staging
directory is renamed to the keyed one, atomically. Then the pointer ``<slug>.current`` is replaced.
A keyed directory is never written again (a damaged one is moved aside, not overwritten), so
re-running after a crash (even ``kill -9``) recomputes only the steps that had not finished, and a
changed input, config value or code version writes a new directory beside the old one.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from mrv.errors import MRVError
from mrv.fsio import fsync_dir, fsync_file, sha256_file, write_json, write_text
from mrv.pipeline.layout import STEP_RECORD, RunLayout, StepPlace

__all__ = [
    "CACHE_SCHEMA",
    "CODE_VERSION_ENV",
    "GuardedLayout",
    "StepKey",
    "StepSpec",
    "UndeclaredRead",
    "canonical_json",
    "code_version",
    "config_values",
    "declare",
    "find_done",
    "guard_config",
    "hash_input",
    "is_done",
    "run_cached",
    "source_digest",
    "step_key",
]

log = logging.getLogger(__name__)

CACHE_SCHEMA = 2
CODE_VERSION_ENV = "MRV_CODE_VERSION"
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]

T = TypeVar("T")


class UndeclaredRead(MRVError):
    """A step read a config value or a file that its spec does not declare (a bug in mrv, not a user mistake)."""


@dataclass(frozen=True)
class StepSpec:
    """What one step reads and writes.

    ``reads`` are the dotted config paths the step may read (``"region"`` allows the whole region
    section, ``"model.process_sd_t_ha"`` one value), resolved against ``{"cfg": ..., "round": ...,
    "tile": ...}``-style roots in ``config``; ``inputs`` are the files and directories it may read.
    ``outputs`` are file names inside its keyed directory.
    """

    name: str
    place: StepPlace
    inputs: tuple[Path, ...]
    config: Mapping[str, Any]
    """Declared config path -> value (the key's config part)."""
    outputs: tuple[str, ...]
    reads: tuple[str, ...] = ()
    """The declared dotted paths (``cfg.region``, ``round.start``, ...); :meth:`view` enforces them."""
    unkeyed: tuple[str, ...] = ()
    """Paths the step may read that cannot change its outputs (chunk sizes, worker counts): not in the key."""

    def __post_init__(self) -> None:
        if not self.outputs:
            raise ValueError(f"step {self.name!r} declares no outputs; a cached step needs at least one.")

    def view(self, root: str, obj: T) -> T:
        """``obj`` (the run config as ``"cfg"``, the round as ``"round"``) as this step may read it."""
        return guard_config(obj, root, (*self.reads, *self.unkeyed), step=self.name)


@dataclass(frozen=True)
class StepKey:
    """The key of a step and the input hashes it was computed from."""

    step: str
    digest: str
    code_version: str
    inputs: tuple[tuple[str, str], ...]
    """``(path, sha256)`` of every input, in declaration order."""


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+src.<16 hex>``: any change to a ``.py`` file of ``mrv`` changes it.

    ``MRV_CODE_VERSION`` in the environment replaces the source hash (``<version>+pinned.<value>``):
    set it to a release tag or commit when resuming runs while the source tree is being edited,
    accepting that outputs of the edited code are then reused.
    """
    try:
        version = importlib.metadata.version("soilcarbon-mrv")
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    pinned = os.environ.get(CODE_VERSION_ENV, "").strip()
    if pinned:
        return f"{version}+pinned.{pinned}"
    return f"{version}+src.{source_digest(_PACKAGE_ROOT)[:16]}"


def source_digest(package_root: Path) -> str:
    """SHA-256 over the relative names and contents of every ``.py`` file under ``package_root``."""
    digest = hashlib.sha256()
    for path in sorted(package_root.rglob("*.py")):
        digest.update(path.relative_to(package_root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def hash_input(path: Path) -> str:
    """SHA-256 of a file, or of a directory tree (relative names and file hashes)."""
    if path.is_file():
        return _file_sha256(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{f.relative_to(path).as_posix()}\0{_file_sha256(f)}\n".encode())
        return digest.hexdigest()
    raise MRVError(
        f"Input {path} of a pipeline step does not exist; check the config paths or re-run the earlier steps."
    )


def _file_sha256(path: Path) -> str:
    """:func:`sha256_file`, remembered per (path, inode, size, mtime): the tiles of a round share their inputs."""
    st = path.stat()
    return _sha256_of(str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _sha256_of(path: str, _ino: int, _size: int, _mtime_ns: int) -> str:
    return sha256_file(Path(path))


def canonical_json(value: Any) -> str:
    """Deterministic JSON of config values (dataclasses, paths, dates, tuples included)."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"config value {value!r} of type {type(value).__name__} cannot be part of a step key")


# ------------------------------------------------------------------------ declared reads, enforced


def config_values(roots: Mapping[str, Any], reads: Sequence[str]) -> dict[str, Any]:
    """``{path: value}`` of every declared dotted path, looked up from ``roots`` (``{"cfg": cfg, "round": rnd}``).

    A path's first part names the root; the key records the rest (``"cfg.region"`` -> ``"region"``,
    ``"round.start"`` -> ``"round.start"``), so keys read like the config file.
    """
    out: dict[str, Any] = {}
    for path in reads:
        root, *rest = path.split(".")
        value = roots[root]
        for part in rest:
            value = getattr(value, part)
        out[".".join(rest) if root == "cfg" else path] = value
    return out


class _Guarded:
    """A read-only view of a frozen config object that allows only the declared attribute paths."""

    __slots__ = ("_obj", "_path", "_allowed", "_step")

    def __init__(self, obj: Any, path: str, allowed: frozenset[str], step: str) -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_step", step)

    def __getattr__(self, name: str) -> Any:
        path = f"{self._path}.{name}"
        value = getattr(self._obj, name)
        if name.startswith("__") or path in self._allowed or any(path.startswith(a + ".") for a in self._allowed):
            return value
        if any(a.startswith(path + ".") for a in self._allowed):
            return _Guarded(value, path, self._allowed, self._step)
        raise UndeclaredRead(
            f"Step {self._step} read the config value {path.split('.', 1)[1]}, which is not part of its key; "
            "declare it in the step's reads (mrv/pipeline/<stage>.py). This is a bug in mrv: please report it."
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the config is frozen")

    def __repr__(self) -> str:
        return f"<config {self._path} as step {self._step} may read it>"


def guard_config(obj: T, root: str, reads: Sequence[str], *, step: str) -> T:
    """``obj`` (the run config, a round, ...) restricted to the declared paths under ``root``."""
    allowed = frozenset(r for r in reads if r == root or r.startswith(root + "."))
    if root in allowed:
        return obj
    return cast(T, _Guarded(obj, root, allowed, step))


@dataclass(frozen=True)
class GuardedLayout(RunLayout):
    """A layout whose artefact paths must be declared inputs of the step, or lie in its own directory."""

    step: str = ""
    allowed: frozenset[Path] = frozenset()
    own: Path = Path("/nonexistent")

    def _checked(self, path: Path) -> Path:
        if path.is_relative_to(self.own) or path in self.allowed or any(path.is_relative_to(a) for a in self.allowed):
            return path
        raise UndeclaredRead(
            f"Step {self.step} read {path.relative_to(self.root) if path.is_relative_to(self.root) else path}, "
            "which is not one of its declared inputs; add it to the step's inputs (mrv/pipeline/<stage>.py). "
            "This is a bug in mrv: please report it."
        )

    def step_dir(self, place: StepPlace) -> Path:
        return self._checked(super().step_dir(place))


def _guarded_layout(layout: RunLayout, spec: StepSpec, own: Path) -> RunLayout:
    # An upstream step is declared by its record (step.json, which holds the hash of every file it wrote), so
    # reading anything in that step's directory is covered by the key.
    allowed = frozenset(Path(p).parent for p in spec.inputs if Path(p).name == STEP_RECORD)
    return GuardedLayout(layout.root, layout.placed(spec.place, own).placed_at, step=spec.name, allowed=allowed,
                         own=own)  # fmt: skip


#: Config fields holding paths that are not inputs (where outputs go, where the config was read from).
_NOT_INPUTS = frozenset({"registry_dir", "output_dir", "source_path"})


def _config_files(value: Any, name: str = "") -> list[Path]:
    """Every path inside declared config values: each file the config names is an input of the step."""
    if name in _NOT_INPUTS:
        return []
    if isinstance(value, Path):
        from mrv.fields import field_files  # a Shapefile is read with its sidecars

        return list(field_files(value))
    if is_dataclass(value) and not isinstance(value, type):
        return [p for f in fields(value) for p in _config_files(getattr(value, f.name), f.name)]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _config_files(v, str(k))]
    if isinstance(value, list | tuple):
        return [p for v in value for p in _config_files(v, name)]
    return []


def _without(config: dict[str, Any], unkeyed: Sequence[str]) -> dict[str, Any]:
    """``config`` without the unkeyed paths nested in a declared value (e.g. ``cfg.model.registry_dir`` in ``model``)."""
    out = dict(config)
    for path in unkeyed:
        root, *rest = path.split(".")
        parts = rest if root == "cfg" else [root, *rest]
        for i in range(1, len(parts)):
            key = ".".join(parts[:i])
            if key in out:
                value = json.loads(canonical_json(out[key]))
                node = value
                for part in parts[i:-1]:
                    node = node[part]
                node.pop(parts[-1], None)
                out[key] = value
    return out


def declare(
    name: str,
    place: StepPlace,
    *,
    layout: RunLayout,
    roots: Mapping[str, Any],
    reads: Sequence[str],
    outputs: Sequence[str],
    upstream: Sequence[StepPlace] = (),
    files: Sequence[Path] = (),
    unkeyed: Sequence[str] = (),
) -> StepSpec:
    """A step's spec from what it reads: config paths (``reads``), upstream steps, and files beyond the config's.

    Inputs are ``files``, then every path inside the declared config values (sample files, field polygons,
    the DEM, ...), then the record of every upstream step, in that order and without repeats.
    """
    config = _without(config_values(roots, reads), unkeyed)
    found = [*files, *_config_files(config), *(layout.step_record(p) for p in upstream)]
    inputs = tuple(dict.fromkeys(Path(p) for p in found))
    return StepSpec(name=name, place=place, inputs=inputs, config=config, outputs=tuple(outputs), reads=tuple(reads),
                    unkeyed=tuple(unkeyed))  # fmt: skip


# ------------------------------------------------------------------------ keys, records, running


def step_key(spec: StepSpec, *, code: str | None = None) -> StepKey:
    code = code or code_version()
    inputs = tuple((str(p), hash_input(Path(p))) for p in spec.inputs)
    digest = hashlib.sha256()
    digest.update(f"schema={CACHE_SCHEMA}\nstep={spec.name}\ncode={code}\n".encode())
    for path, sha in inputs:
        digest.update(f"input={path}\0{sha}\n".encode())
    digest.update(f"config={canonical_json(spec.config)}\n".encode())
    return StepKey(step=spec.name, digest=digest.hexdigest(), code_version=code, inputs=inputs)


def is_done(directory: Path, spec: StepSpec, key: StepKey) -> bool:
    """True when ``directory`` holds the record of ``key`` and every output with its recorded SHA-256."""
    try:
        record = json.loads((directory / STEP_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("schema") != CACHE_SCHEMA or record.get("key") != key.digest:
        return False
    recorded = record.get("outputs")
    if not isinstance(recorded, dict):
        return False
    for name in spec.outputs:
        entry, out = recorded.get(name), directory / name
        if not isinstance(entry, dict) or not out.is_file():
            return False
        if out.stat().st_size != entry.get("bytes") or sha256_file(out) != entry.get("sha256"):
            return False
    return True


def _write_record(directory: Path, spec: StepSpec, key: StepKey) -> None:
    """Fsync the outputs, then write the step record (the step's commit record)."""
    outputs: dict[str, dict[str, Any]] = {}
    for name in spec.outputs:
        out = directory / name
        if not out.is_file():
            raise MRVError(
                f"Step {spec.name!r} finished without writing {name}; the step and its declared outputs disagree "
                "(a bug in mrv/pipeline: fix the step or its StepSpec)."
            )
        fsync_file(out)
        outputs[name] = {"sha256": sha256_file(out), "bytes": out.stat().st_size}
    write_json(directory / STEP_RECORD, {
        "schema": CACHE_SCHEMA,
        "step": spec.name,
        "key": key.digest,
        "code_version": key.code_version,
        "inputs": [{"path": p, "sha256": s} for p, s in key.inputs],
        "config": json.loads(canonical_json(spec.config)),
        "outputs": outputs,
        "finished_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })  # fmt: skip


def _point(layout: RunLayout, spec: StepSpec, directory: Path) -> None:
    write_text(layout.pointer(spec.place), directory.name + "\n")


def run_cached(spec: StepSpec, layout: RunLayout, compute: Callable[[RunLayout], object]) -> bool:
    """Run ``compute(layout)`` unless ``spec``'s keyed directory is complete; returns True when it ran.

    ``compute`` gets a layout that places this step in a staging directory and allows reading only
    the declared inputs; it must write exactly ``spec.outputs`` there.
    """
    key = step_key(spec)
    final = layout.keyed_dir(spec.place, key.digest)
    if is_done(final, spec, key):
        _point(layout, spec, final)
        log.info("step %s: outputs up to date (key %s), skipped", spec.name, key.digest[:12])
        return False
    if final.exists():  # incomplete or damaged: keep it for inspection, never write into it
        aside = final.with_name(f".{final.name}.damaged-{uuid.uuid4().hex[:8]}")
        log.warning("step %s: %s is incomplete or damaged; moved aside to %s", spec.name, final.name, aside.name)
        os.replace(final, aside)
    staging = final.with_name(f".{final.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    try:
        compute(_guarded_layout(layout, spec, staging))
        _write_record(staging, spec, key)
        fsync_dir(staging)
        try:
            os.rename(staging, final)  # atomic; fails if another process finished the same key meanwhile
        except OSError:
            if not is_done(final, spec, key):
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(final.parent)
    _point(layout, spec, final)
    log.info("step %s: done (key %s)", spec.name, key.digest[:12])
    return True


def find_done(spec: StepSpec, layout: RunLayout) -> Path | None:
    """The keyed directory of ``spec`` when it is complete for today's inputs, config and code (else None)."""
    key = step_key(spec)
    final = layout.keyed_dir(spec.place, key.digest)
    return final if is_done(final, spec, key) else None
