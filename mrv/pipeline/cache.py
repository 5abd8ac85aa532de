"""Crash-safe resume: a step whose outputs exist and were made from the same inputs is not run again.

Every step of a run is described by a :class:`StepSpec`: its input files, the config values it
reads and the files it writes. Its **key** is the SHA-256 of

* the step name,
* the SHA-256 of every input file (a directory input, e.g. a STAC catalog, is hashed file by file),
* the relevant config values (as canonical JSON), and
* the code version (:func:`code_version`: package version + hash of the ``mrv`` sources).

When the step finishes, :func:`run_cached` fsyncs its outputs and then writes the sidecar
``<first output>.done.json`` atomically (temporary file, fsync, ``os.replace``). The sidecar holds
the key and the SHA-256 and size of every output. A later run skips the step when the sidecar's
key equals the new key and every output still has its recorded hash, so re-running after a crash
(even ``kill -9``) recomputes only the steps that had not finished, and a changed input, config
value or code version recomputes the step and everything downstream of its changed outputs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from mrv.config import RoundConfig, RunConfig
from mrv.errors import MRVError
from mrv.grid import Tile
from mrv.pipeline.layout import RunLayout
from mrv.report.manifest import sha256_file

log = logging.getLogger(__name__)

CACHE_SCHEMA = 1
SIDECAR_SUFFIX = ".done.json"
CODE_VERSION_ENV = "MRV_CODE_VERSION"
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]

T = TypeVar("T")


@dataclass(frozen=True)
class StepSpec:
    """What one step reads and writes; ``outputs[0]`` carries the sidecar."""

    name: str
    inputs: tuple[Path, ...]
    config: Mapping[str, Any]
    outputs: tuple[Path, ...]

    def __post_init__(self) -> None:
        if not self.outputs:
            raise ValueError(f"step {self.name!r} declares no outputs; a cached step needs at least one.")

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.outputs[0])


@dataclass(frozen=True)
class StepKey:
    """The key of a step and the input hashes it was computed from."""

    step: str
    digest: str
    code_version: str
    inputs: tuple[tuple[str, str], ...]
    """``(path, sha256)`` of every input, in declaration order."""


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + SIDECAR_SUFFIX)


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


def step_key(spec: StepSpec, *, code: str | None = None) -> StepKey:
    code = code or code_version()
    inputs = tuple((str(p), hash_input(p)) for p in spec.inputs)
    digest = hashlib.sha256()
    digest.update(f"schema={CACHE_SCHEMA}\nstep={spec.name}\ncode={code}\n".encode())
    for path, sha in inputs:
        digest.update(f"input={path}\0{sha}\n".encode())
    digest.update(f"config={canonical_json(spec.config)}\n".encode())
    return StepKey(step=spec.name, digest=digest.hexdigest(), code_version=code, inputs=inputs)


def is_done(spec: StepSpec, key: StepKey) -> bool:
    """True when the sidecar matches ``key`` and every output still has its recorded SHA-256."""
    try:
        record = json.loads(spec.sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("schema") != CACHE_SCHEMA or record.get("key") != key.digest:
        return False
    recorded = record.get("outputs")
    if not isinstance(recorded, dict):
        return False
    base = spec.sidecar.parent
    for out in spec.outputs:
        entry = recorded.get(os.path.relpath(out, base))
        if not isinstance(entry, dict) or not out.is_file():
            return False
        if out.stat().st_size != entry.get("bytes") or sha256_file(out) != entry.get("sha256"):
            return False
    return True


def mark_done(spec: StepSpec, key: StepKey) -> Path:
    """Fsync the outputs, then write the sidecar atomically (it is the step's commit record)."""
    base = spec.sidecar.parent
    outputs: dict[str, dict[str, Any]] = {}
    for out in spec.outputs:
        if not out.is_file():
            raise MRVError(
                f"Step {spec.name!r} finished without writing {out}; the step and its declared outputs disagree "
                "(fix the step or its StepSpec in mrv/pipeline/cache.py)."
            )
        _fsync(out)
        outputs[os.path.relpath(out, base)] = {"sha256": sha256_file(out), "bytes": out.stat().st_size}
    record = {
        "schema": CACHE_SCHEMA,
        "step": spec.name,
        "key": key.digest,
        "code_version": key.code_version,
        "inputs": [{"path": p, "sha256": s} for p, s in key.inputs],
        "config": json.loads(canonical_json(spec.config)),
        "outputs": outputs,
        "finished_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    target = spec.sidecar
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    _fsync_dir(base)
    return target


def invalidate(spec: StepSpec) -> None:
    """Remove the sidecar so a half-rewritten output is never taken for a finished one."""
    spec.sidecar.unlink(missing_ok=True)


def run_cached(spec: StepSpec, compute: Callable[[], T]) -> bool:
    """Run ``compute`` unless ``spec``'s outputs are up to date; returns True when it ran."""
    key = step_key(spec)
    if is_done(spec, key):
        log.info("step %s: outputs up to date (key %s), skipped", spec.name, key.digest[:12])
        return False
    invalidate(spec)
    compute()
    mark_done(spec, key)
    log.info("step %s: done (key %s)", spec.name, key.digest[:12])
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # directories cannot be fsynced on every platform
        _fsync(path)


# ------------------------------------------------------------------------ the steps of a run
# Each StepSpec must list every file and config value its step in mrv.pipeline.steps reads: when a
# step starts reading something new, add it here, or a changed value will not recompute the step.


def _round_dates(rnd: RoundConfig) -> dict[str, Any]:
    return {"name": rnd.name, "start": rnd.start, "end": rnd.end}


def imagery_tile_step(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout, tile: Tile) -> StepSpec:
    inputs = [cfg.region.fields]
    if cfg.imagery.source == "local" and cfg.imagery.catalog is not None:
        inputs.append(cfg.imagery.catalog.parent)  # the whole static catalog: JSON and COGs
    if cfg.imagery.dem is not None and cfg.imagery.dem.path is not None:
        inputs.append(cfg.imagery.dem.path)
    out = layout.imagery_tile(rnd.name, tile.name)
    live = () if cfg.imagery.source == "local" else (layout.imagery_items(rnd.name, tile.name),)
    return StepSpec(
        name=f"prepare-imagery[{rnd.name}/{tile.name}]",
        inputs=tuple(inputs),
        config={"region": cfg.region, "imagery": cfg.imagery, "round": _round_dates(rnd), "tile": tile},
        outputs=(out, out.with_suffix(".json"), *live),
    )


def mosaic_step(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout, tiles: Sequence[Tile]) -> StepSpec:
    parts = [layout.imagery_tile(rnd.name, t.name) for t in tiles]
    return StepSpec(
        name=f"mosaic-imagery[{rnd.name}]",
        inputs=(cfg.region.fields, *parts, *(p.with_suffix(".json") for p in parts)),
        config={"region": cfg.region, "tile_px": cfg.imagery.tile_px, "round": _round_dates(rnd)},
        outputs=(layout.covariates(rnd.name), layout.imagery_summary(rnd.name)),
    )


def samples_step(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout) -> StepSpec:
    inputs = [cfg.region.fields]
    # The parsed format profiles are part of ``rnd`` (resolved when the config was loaded), so a changed
    # profile changes the key through the config values.
    inputs += [sf.path for sf in rnd.samples]
    store: dict[str, Any] | None = None
    if rnd.store is not None:  # keyed on the store's submissions in the round's window (new, corrected, withdrawn)
        from mrv.samples.store import SampleStore, store_query, store_state

        url, query = store_query(rnd.store)
        with SampleStore.open(url) as opened:
            store = store_state(opened, query)
    return StepSpec(
        name=f"prepare-samples[{rnd.name}]",
        inputs=tuple(inputs),
        config={
            "region": cfg.region,
            "depth_cm": cfg.depth_cm,
            "round": rnd,
            "samples": cfg.samples,
            "process_sd_t_ha": cfg.model.process_sd_t_ha,
            **({"store": store} if store is not None else {}),
        },
        outputs=(layout.sites(rnd.name), layout.rejected(rnd.name), layout.samples_summary(rnd.name)),
    )


def model_step(cfg: RunConfig, layout: RunLayout) -> StepSpec:
    inputs = []
    for rnd in cfg.rounds:
        inputs += [layout.sites(rnd.name), layout.covariates(rnd.name)]
    d = layout.model_dir
    return StepSpec(
        name="fit-model",
        inputs=tuple(inputs),
        config={"model": cfg.model, "rounds": [r.name for r in cfg.rounds]},
        outputs=(d / "model.pkl", d / "model_card.json", d / "features.csv", d / "cv_predictions.csv"),
    )


def predict_step(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout) -> StepSpec:
    maps = layout.round_maps(rnd.name)
    return StepSpec(
        name=f"predict-maps[{rnd.name}]",
        inputs=(layout.model_dir / "model.pkl", layout.model_dir / "model_card.json", layout.covariates(rnd.name)),
        # Chunking and the Dask cluster do not change per-pixel predictions: not part of the key.
        config={"round": rnd.name, "depth_cm": cfg.depth_cm},
        outputs=tuple(maps.values()),
    )


def account_step(cfg: RunConfig, layout: RunLayout) -> StepSpec:
    # The error model is estimated from the cross-validation predictions of the model step.
    inputs = [cfg.region.fields, layout.model_dir / "cv_predictions.csv", layout.model_dir / "features.csv"]
    for rnd in cfg.rounds:
        maps = layout.round_maps(rnd.name)
        inputs += [maps["mean"], maps["sd"]]
    return StepSpec(
        name="account",
        inputs=tuple(inputs),
        config={
            "accounting": cfg.accounting,
            "model": cfg.model,
            "region": cfg.region,
            "rounds": [r.name for r in cfg.rounds],
        },
        outputs=(layout.accounting,),
    )
