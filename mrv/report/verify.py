"""Verify a run directory or bundle as a verifier who does not trust the operator.

Order of the checks (each ends in one :class:`~mrv.errors.VerificationError` naming the artefact
and the broken link):

1. **Signature** (:mod:`mrv.report.signing`): with ``--key`` the bundle must be signed by that key.
2. **Hashes and completeness** (:func:`mrv.report.manifest.verify_manifest`): every listed file has
   its SHA-256, every file present is listed, neither inputs nor outputs are empty.
3. **Step chain**: every step the config implies (:func:`mrv.pipeline.plan.step_specs`) has its
   ``step.json`` record in the manifest with the key the manifest's ``steps`` list, in the directory its
   pointer names, which is named after that key; every output a
   step recorded is listed with the hash the step recorded; every input a step consumed has, in the
   bundle, the hash the step recorded; the step's config values match the config's.
4. **Re-derivation**: each derived artefact is recomputed from its inputs in the bundle by the
   same functions the pipeline runs (the stage modules of :mod:`mrv.pipeline`, :mod:`mrv.report.build`) and
   compared with the stored one, link by link (each link reads the bundle's stored inputs, so the
   first broken link is the one named):

   ========================  ============================================  ===================================
   link                      recomputed from                               compared
   ========================  ============================================  ===================================
   ``samples[<round>]``      sample files, field polygons, config          sites.csv, samples_rejected.csv,
                                                                           samples.json (exact)
   ``imagery[<round>]``      local STAC catalog (item JSON + assets)       tiles, covariates.tif (|d| <= 1e-6),
                                                                           imagery.json; *hashed only* for a
                                                                           live STAC API / Sentinel Hub
   ``model``                 sites.csv + covariates.tif of every round,    features.csv, cv_predictions.csv,
                             config seed (full refit, spatial CV, CQR)     model_card.json, model.pkl bytes
   ``maps[<round>]``         covariates.tif + the refitted model           mean/p05/p50/p95/sd
                                                                           (|d| <= 1e-4 t C/ha)
   ``index``                 the steps' pointers, the latest round's maps  index.json; width90 = p95 - p05
   ``accounting``            maps, field polygons, CV predictions, config  accounting.json (rel. 1e-6)
   ``report``                accounting.json, model card, samples.json,    report.json sections (project,
                             imagery.json, methodology profile, config     fields, deductions, ...)
   ``rendering``             report.json + figures + field polygons        report.html, report.pdf,
                                                                           fields.gpkg (byte for byte)
   ========================  ============================================  ===================================

   Only hashed (and covered by the signature): figures/*.png, the model registry copy under models/,
   and report.json's run metadata and provenance.

The pickled model in the bundle is never unpickled (loading a pickle runs code of the pickle's
author): the maps are predicted with the model refitted here, whose bytes must equal the bundle's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mrv.config import RunConfig
from mrv.errors import MRVError, VerificationError
from mrv.pipeline.layout import STEP_RECORD, RunLayout, StepPlace
from mrv.report.bundle import _config_path_keys, open_bundle, run_config
from mrv.report.manifest import (
    MANIFEST_NAME,
    load_manifest,
    manifest_entries,
    raise_on_mismatch,
    resolve_entry,
    verify_manifest,
)
from mrv.report.schema import Report, read_report
from mrv.report.signing import SignatureCheck, verify_signature

__all__ = [
    "COVARIATE_TOLERANCE",
    "MAP_TOLERANCE_T_HA",
    "REL_TOLERANCE",
    "Link",
    "Verification",
    "check_run_files",
    "check_step_chain",
    "diff_csv",
    "diff_json",
    "diff_raster",
    "format_verification",
    "rebuild_checked",
    "verify",
]

#: Largest absolute difference (t C/ha) between a stored and a re-predicted map pixel. Prediction is
#: deterministic (float32); the tolerance only absorbs summation order across Dask chunkings.
MAP_TOLERANCE_T_HA = 1e-4
#: Largest absolute difference between stored and recomputed covariates (reflectance / indices, 1).
COVARIATE_TOLERANCE = 1e-6
#: Relative tolerance of recomputed numbers (the Monte Carlo is seeded, so they repeat exactly).
REL_TOLERANCE = 1e-6
_ABS_FLOOR = 1e-9
_CARD_VOLATILE = frozenset({"created", "registry", "package_versions"})


@dataclass(frozen=True)
class Link:
    """One link of the derivation chain and how verify checked it."""

    name: str
    method: str
    """``re-derived`` or ``hashed only``."""
    artefacts: tuple[str, ...]
    detail: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Verification:
    """What :func:`verify` checked."""

    source: str
    kind: str
    signature: SignatureCheck
    files: int
    steps: int
    links: tuple[Link, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    code_note: str = ""
    """Set when the run was made by another version of this package than the verifier's."""


# --------------------------------------------------------------------------- comparisons


def _same(a: Any, b: Any, rel: float = REL_TOLERANCE) -> bool:
    """Equal strings/booleans; numbers within ``rel`` (relative); NaN equals null (JSON stores NaN as null)."""
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return bool(a == b) and type(a) is type(b)
    if (a is None or isinstance(a, int | float)) and (b is None or isinstance(b, int | float)):
        fa = math.nan if a is None else float(a)
        fb = math.nan if b is None else float(b)
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        return abs(fa - fb) <= max(rel * max(abs(fa), abs(fb)), _ABS_FLOOR)
    return bool(a == b)


def diff_json(
    stored: Any, recomputed: Any, where: str, *, ignore: frozenset[str] = frozenset(), absent_is_null: bool = False
) -> str | None:
    """The first place where ``stored`` and ``recomputed`` differ (keys both ways), as a message; None if equal.

    With ``absent_is_null`` a key that one side lacks and the other holds as null or empty is no
    difference (a setting added to the code later, at an empty default).
    """
    if isinstance(recomputed, Mapping):
        if not isinstance(stored, Mapping):
            return f"{where}: stored {type(stored).__name__}, recomputed an object"
        for k in sorted(set(stored) | set(recomputed), key=str):
            if k in ignore:
                continue
            if absent_is_null and (k not in stored or k not in recomputed):
                present = stored.get(k) if k in stored else recomputed.get(k)
                if present is None or present in ([], {}, ""):
                    continue
            if k not in stored:
                return f"{where}.{k}: missing from the stored file (recomputed {recomputed[k]!r})"
            if k not in recomputed:
                return f"{where}.{k}: in the stored file ({stored[k]!r}) but not recomputed"
            msg = diff_json(stored[k], recomputed[k], f"{where}.{k}", ignore=ignore, absent_is_null=absent_is_null)
            if msg:
                return msg
        return None
    if isinstance(recomputed, list | tuple):
        if not isinstance(stored, list) or len(stored) != len(recomputed):
            n = len(stored) if isinstance(stored, list) else type(stored).__name__
            return f"{where}: stored {n} entries, recomputed {len(recomputed)}"
        for i, (a, b) in enumerate(zip(stored, recomputed, strict=True)):
            msg = diff_json(a, b, f"{where}[{i}]", ignore=ignore, absent_is_null=absent_is_null)
            if msg:
                return msg
        return None
    if not _same(stored, recomputed):
        return f"{where}: stored {stored!r}, recomputed {recomputed!r}"
    return None


def _plain_json(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples -> lists, NaN -> null, dates -> strings)."""

    def finite(o: Any) -> Any:
        if isinstance(o, float):
            return o if math.isfinite(o) else None
        if isinstance(o, Mapping):
            return {str(k): finite(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [finite(v) for v in o]
        return o

    return json.loads(json.dumps(finite(obj), default=str))


def _read_json(path: Path, label: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VerificationError(
            f"{label} cannot be read as JSON ({exc}); restore it from the original run or bundle."
        ) from exc


def _damaged(label: str, what: str, exc: BaseException) -> VerificationError:
    return VerificationError(
        f"{label} cannot be read as {what} ({type(exc).__name__}: {exc}); the file is damaged or was replaced. "
        "Restore it from the original run or bundle."
    )


def diff_csv(stored: Path, recomputed: Path, label: str | None = None) -> str | None:
    """None when the two CSV files are equal (numbers within 1e-9 relative), else where they first differ."""
    if stored.read_bytes() == recomputed.read_bytes():
        return None
    try:
        a = pd.read_csv(stored, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise _damaged(label or stored.name, "CSV", exc) from exc
    b = pd.read_csv(recomputed, dtype=str, keep_default_na=False)
    if list(a.columns) != list(b.columns):
        return f"columns {list(a.columns)} stored, {list(b.columns)} recomputed"
    if len(a) != len(b):
        return f"{len(a)} rows stored, {len(b)} recomputed"
    for col in a.columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if (x == y).all():
            continue
        xf = pd.to_numeric(a[col], errors="coerce").to_numpy(float)
        yf = pd.to_numeric(b[col], errors="coerce").to_numpy(float)
        numeric = ~(np.isnan(xf) & (x != "")) & ~(np.isnan(yf) & (y != ""))
        close = np.where(numeric, np.isclose(xf, yf, rtol=1e-9, atol=1e-12, equal_nan=True), x == y)
        if not close.all():
            i = int(np.flatnonzero(~close)[0])
            return f"row {i + 1} column {col!r}: stored {x[i]!r}, recomputed {y[i]!r}"
    return None


def diff_raster(stored: Path, recomputed: Path, *, atol: float, label: str | None = None) -> str | None:
    """None when grid, band names and every pixel agree within ``atol`` (NaN where NaN), else the difference."""
    import rasterio

    from mrv.raster import read_raster

    try:
        a, ga, na = read_raster(stored)
    except (rasterio.errors.RasterioError, OSError, ValueError) as exc:
        raise _damaged(label or stored.name, "a GeoTIFF", exc) from exc
    b, gb, nb = read_raster(recomputed)
    if ga != gb or a.shape != b.shape:
        return f"grid {ga} {a.shape} stored, {gb} {b.shape} recomputed"
    if na != nb:
        return f"bands {na} stored, {nb} recomputed"
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if (nan_a != nan_b).any():
        return f"{int((nan_a != nan_b).sum())} pixels are NaN in one and not the other"
    d = np.abs(np.where(nan_a, 0.0, a - b))
    worst = float(d.max()) if d.size else 0.0
    if worst > atol:
        band, row, col = (int(v) for v in np.unravel_index(int(d.argmax()), d.shape))
        return (
            f"band {na[band]!r} pixel (row {row}, col {col}): stored {float(a[band, row, col]):.6g}, recomputed "
            f"{float(b[band, row, col]):.6g}; {int((d > atol).sum())} pixels differ by more than {atol:g} (max {worst:.3g})"
        )
    return None


# --------------------------------------------------------------------------- structure checks


def check_run_files(root: Path) -> Report:
    """``report.json`` of ``root`` read into the typed :class:`~mrv.report.schema.Report`; returns it.

    Shape and types are checked against report schema 2 (:meth:`Report.from_json`), so a damaged
    report ends in one message naming the JSON path (before re-rendering or re-deriving).
    """
    return read_report(RunLayout(root).report_json)


# --------------------------------------------------------------------------- step chain


def _expected_steps(cfg: RunConfig, layout: RunLayout) -> list[Any]:
    from mrv.pipeline.plan import step_specs

    return step_specs(cfg, layout)


def _normalise_config(value: Any) -> Any:
    """Step config values with machine-specific parts removed: absolute paths -> file name, no registry/output dir."""
    if isinstance(value, Mapping):
        return {
            k: _normalise_config(v) for k, v in value.items() if k not in ("registry_dir", "output_dir", "source_path")
        }
    if isinstance(value, list):
        return [_normalise_config(v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return Path(value).name
    return value


def check_step_chain(cfg: RunConfig, root: Path, manifest: Mapping[str, Any]) -> int:
    """Every step the config implies: record present and listed, outputs as recorded, inputs as consumed.

    Returns the number of steps checked; raises :class:`VerificationError` at the first broken link.
    """
    from mrv.pipeline import cache

    layout = RunLayout(root)
    outputs = {e["path"]: e["sha256"] for e in manifest_entries(manifest, "outputs", root / MANIFEST_NAME)}
    chain = {str(s["sidecar"]): s for s in manifest.get("steps", [])}
    specs = _expected_steps(cfg, layout)
    expected_sidecars = set()
    for spec in specs:
        try:
            step_dir = layout.step_dir(spec.place)
        except MRVError as exc:
            raise VerificationError(
                f"Step {spec.name}: {exc} The run is incomplete or its pointer was deleted; re-run the pipeline."
            ) from exc
        sidecar = (step_dir / STEP_RECORD).relative_to(root).as_posix()
        expected_sidecars.add(sidecar)
        if sidecar not in outputs:
            raise VerificationError(
                f"Step {spec.name}: its record {sidecar} is not in the manifest (the step never finished, or the record "
                "and its manifest entry were deleted). The run is incomplete; re-run the pipeline."
            )
        record = _read_json(root / sidecar, sidecar)
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("outputs"), dict)
            or not isinstance(record.get("inputs"), list)
        ):
            raise VerificationError(
                f"Step record {sidecar} is not a step record (outputs/inputs missing); the run is damaged."
            )
        listed = chain.get(sidecar)
        if listed is None or listed.get("key") != record.get("key"):
            raise VerificationError(
                f"Step {spec.name}: the manifest's step chain {'lacks' if listed is None else 'has another key for'} "
                f"{sidecar}; the step record or the manifest was changed after the run."
            )
        if layout.keyed_dir(spec.place, str(record.get("key"))) != step_dir:
            raise VerificationError(
                f"Step {spec.name}: its directory {step_dir.relative_to(root).as_posix()} is not named after the key its "
                f"record holds ({str(record.get('key'))[:16]}...); the directory or its record was replaced after the run."
            )
        for name in spec.outputs:
            rel = (step_dir / name).relative_to(root).as_posix()
            recorded = record["outputs"].get(name)
            if rel not in outputs:
                raise VerificationError(
                    f"{rel} is an output of step {spec.name} ({sidecar}) but is not in the manifest: it was deleted "
                    "together with its manifest entry. Restore it from the original run."
                )
            if not isinstance(recorded, dict) or recorded.get("sha256") != outputs[rel]:
                raise VerificationError(
                    f"{rel}: the manifest's SHA-256 is not the one step {spec.name} recorded when it wrote the file "
                    f"({sidecar}); the file was replaced after the step (and the manifest re-hashed)."
                )
        consumed = record["inputs"]
        if len(consumed) != len(spec.inputs):
            raise VerificationError(
                f"Step {spec.name} recorded {len(consumed)} inputs in {sidecar}; this config implies {len(spec.inputs)}. "
                "The run was made with another config or code."
            )
        for entry, path in zip(consumed, spec.inputs, strict=True):
            sha = entry.get("sha256") if isinstance(entry, dict) else None
            name = Path(str(entry.get("path", "?"))).name if isinstance(entry, dict) else "?"
            actual = cache.hash_input(Path(path))
            if sha != actual:
                rel = Path(os.path.relpath(path, root)).as_posix() if _inside(path, root) else str(path)
                raise VerificationError(
                    f"Step {spec.name} consumed {name} with SHA-256 {str(sha)[:12]}..., "
                    f"but {rel} has {actual[:12]}... ({sidecar}): the input was changed after the run."
                )
        recorded_cfg = _normalise_config(record.get("config"))
        implied_cfg = _normalise_config(json.loads(cache.canonical_json(spec.config)))
        msg = diff_json(recorded_cfg, implied_cfg, "config", absent_is_null=True)
        if msg:
            raise VerificationError(
                f"Step {spec.name} ran with other settings than the bundle's config ({sidecar}): {msg}. The config was "
                "edited after the run."
            )
    extra = sorted(set(chain) - expected_sidecars)
    if extra:
        raise VerificationError(
            f"The manifest's step chain lists {extra[0]}, a step this config does not imply; the run was made with "
            "another config, or the config was edited."
        )
    return len(specs)


def _inside(path: Path, root: Path) -> bool:
    return Path(path).resolve().is_relative_to(root.resolve())


def _check_required(cfg: RunConfig, root: Path, manifest: Mapping[str, Any]) -> None:
    """Every input file the config names is listed; the report's outputs are listed."""
    listed_inputs = {
        resolve_entry(root, e["path"], inside=False, schema=int(manifest["schema_version"])).resolve()
        for e in manifest_entries(manifest, "inputs", root / MANIFEST_NAME)
    }
    for key, path in _config_path_keys({}, cfg):
        if Path(path).resolve() not in listed_inputs:
            raise VerificationError(
                f"The config's {'.'.join(map(str, key))} names {Path(path).name}, which the manifest does not list as an "
                "input; the entry was removed. Restore the manifest from the original run or bundle."
            )
    outputs = {e["path"] for e in manifest_entries(manifest, "outputs", root / MANIFEST_NAME)}
    layout = RunLayout(root)
    required = ["report.json", "report.html", "index.json", "report/fields.gpkg", "report/report.pdf"]
    try:
        required += [_rel(root, layout.accounting), _rel(root, layout.model_card)]
        required += [_rel(root, p) for p in layout.round_maps(cfg.rounds[-1].name).values()]
    except MRVError as exc:
        raise VerificationError(f"{exc} The run is incomplete: restore it from the original run.") from exc
    for rel in required:
        if rel not in outputs:
            raise VerificationError(
                f"{rel} is not in the manifest: every run writes it, so it was deleted together with its manifest entry. "
                "Restore it from the original run."
            )


# --------------------------------------------------------------------------- re-derivation


def _mismatch(artefact: str, link: str, sources: str, msg: str) -> VerificationError:
    return VerificationError(
        f"{artefact} does not follow from {sources} (link '{link}'): {msg}. It was changed after the run (or made by "
        "other code); do not accept the run - restore the original or have the operator re-run the pipeline."
    )


def _run_link(name: str, artefacts: Sequence[str], fn: Callable[[], str]) -> Link:
    """Run one re-derivation; any failure of the recomputation itself is reported as a damaged link."""
    t0 = time.perf_counter()
    try:
        with _quiet_gdal():
            detail = fn()
    except VerificationError:
        raise
    except MRVError as exc:
        raise VerificationError(
            f"Link '{name}' ({', '.join(artefacts)}) cannot be re-derived from the bundle: {exc}"
        ) from exc
    except Exception as exc:  # untrusted files can break any reader in any way: name the link, not a traceback
        raise VerificationError(
            f"Link '{name}': re-deriving {', '.join(artefacts)} from the bundle failed ({type(exc).__name__}: {exc}); "
            "one of its input files is damaged or was replaced. Restore the bundle from the original run."
        ) from exc
    return Link(name, "re-derived", tuple(artefacts), detail, time.perf_counter() - t0)


@contextlib.contextmanager
def _quiet_gdal() -> Iterator[None]:
    """GDAL's warnings about a damaged file stay out of the terminal: verify names the file in its own message."""
    logger = logging.getLogger("rasterio")
    level = logger.level
    logger.setLevel(logging.ERROR + 10)
    try:
        yield
    finally:
        logger.setLevel(level)


def _rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def _mkdir(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return d


def _link_samples(cfg: RunConfig, rnd: Any, root: Path, scratch: Path) -> Callable[[], str]:
    def run() -> str:
        from mrv.pipeline.samples import prepare_samples

        b = RunLayout(root)
        s = b.placed(StepPlace("samples", rnd.name), _mkdir(scratch / "samples"))
        prepare_samples(cfg, rnd, s)
        sources = ", ".join(sf.path.name for sf in rnd.samples)
        for stored, new in ((b.sites(rnd.name), s.sites(rnd.name)), (b.rejected(rnd.name), s.rejected(rnd.name))):
            msg = diff_csv(stored, new, _rel(root, stored))
            if msg:
                raise _mismatch(_rel(root, stored), f"samples[{rnd.name}]", sources, msg)
        stored_json = b.samples_summary(rnd.name)
        msg = diff_json(
            _read_json(stored_json, _rel(root, stored_json)),
            _read_json(s.samples_summary(rnd.name), "recomputed"),
            "samples.json",
        )
        if msg:
            raise _mismatch(_rel(root, stored_json), f"samples[{rnd.name}]", sources, msg)
        return f"{len(rnd.samples)} sample file(s) re-ingested"

    return run


def _link_imagery(cfg: RunConfig, rnd: Any, root: Path, scratch: Path) -> Callable[[], str]:
    def run() -> str:
        from mrv.pipeline import imagery

        b = RunLayout(root)
        grid = imagery.project_grid(cfg)
        tiles = imagery.imagery_tiles(cfg, grid)
        s = b
        for tile in tiles:  # each tile recomputed into scratch; the mosaic then reads the recomputed tiles
            s = s.placed(StepPlace("tile", rnd.name, tile.name), _mkdir(scratch / "tiles" / tile.name))
            imagery.prepare_imagery_tile(cfg, rnd, s, tile, grid=grid)
            stored = b.imagery_tile(rnd.name, tile.name)
            msg = diff_raster(
                stored, s.imagery_tile(rnd.name, tile.name), atol=COVARIATE_TOLERANCE, label=_rel(root, stored)
            )
            if msg:
                raise _mismatch(_rel(root, stored), f"imagery[{rnd.name}]", "the STAC catalog in the bundle", msg)
            stored_json = b.imagery_tile_summary(rnd.name, tile.name)
            msg = diff_json(
                _read_json(stored_json, _rel(root, stored_json)),
                _read_json(s.imagery_tile_summary(rnd.name, tile.name), "recomputed"),
                "tile", ignore=frozenset({"computed_by"}),
            )  # fmt: skip
            if msg:
                raise _mismatch(_rel(root, stored_json), f"imagery[{rnd.name}]", "the STAC catalog", msg)
        s = s.placed(StepPlace("imagery", rnd.name), _mkdir(scratch / "mosaic"))
        imagery.mosaic_imagery(cfg, rnd, s)
        msg = diff_raster(
            b.covariates(rnd.name),
            s.covariates(rnd.name),
            atol=COVARIATE_TOLERANCE,
            label=_rel(root, b.covariates(rnd.name)),
        )
        if msg:
            raise _mismatch(_rel(root, b.covariates(rnd.name)), f"imagery[{rnd.name}]", "the round's tiles", msg)
        msg = diff_json(
            _read_json(b.imagery_summary(rnd.name), "imagery.json"),
            _read_json(s.imagery_summary(rnd.name), "recomputed"),
            "imagery.json",
        )
        if msg:
            raise _mismatch(_rel(root, b.imagery_summary(rnd.name)), f"imagery[{rnd.name}]", "the round's tiles", msg)
        return f"{len(tiles)} tile(s) composited from the catalog"

    return run


def _link_model(cfg: RunConfig, root: Path, scratch: Path) -> Callable[[], str]:
    def run() -> str:
        from mrv.pipeline.model import fit_model

        m = RunLayout(root).placed(StepPlace("model"), _mkdir(scratch / "model"))
        cfg_m = replace(cfg, model=replace(cfg.model, registry_dir=scratch / "registry"))
        fit_model(cfg_m, m)
        stored = RunLayout(root)
        sources = "every round's sites.csv and covariates.tif (refit with the config's seed)"
        for old, new in ((stored.features, m.features), (stored.cv_predictions, m.cv_predictions)):
            msg = diff_csv(old, new, _rel(root, old))
            if msg:
                raise _mismatch(_rel(root, old), "model", sources, msg)
        card_rel = _rel(root, stored.model_card)
        card = _read_json(stored.model_card, card_rel)
        new_card = _read_json(m.model_card, "recomputed")
        msg = diff_json(card, new_card, "model_card", ignore=_CARD_VOLATILE)
        if msg:
            raise _mismatch(card_rel, "model", sources, msg)
        from mrv.modeling.registry import check_entry, read_reference

        ref_rel = _rel(root, stored.model_ref)
        try:
            stored_ref = read_reference(stored.model_ref)
            bundled = root / "models"
            if (bundled / stored_ref.model_id).is_dir():  # a bundle carries the registry entry it pins
                stored_ref = read_reference(stored.model_ref, registry_dir=bundled)
        except MRVError as exc:
            raise _damaged(ref_rel, "a model reference", exc) from exc
        new_ref = read_reference(m.model_ref)
        if stored_ref.model_id != new_ref.model_id:
            raise _mismatch(ref_rel, "model", sources, f"the refitted model is {new_ref.model_id}, the run references "
                            f"{stored_ref.model_id}")  # fmt: skip
        entry = "registry entry not present here: checked through its reference"
        if stored_ref.entry_dir.is_dir():
            try:
                check_entry(stored_ref)  # hashes only: the run's pickle is never unpickled
            except MRVError as exc:
                raise _mismatch(_rel_or_abs(root, stored_ref.model_path), "model", ref_rel, str(exc)) from exc
            entry = f"registry entry {_rel_or_abs(root, stored_ref.entry_dir)} matches the reference"
        if stored_ref.model_sha256 != new_ref.model_sha256:
            if card.get("package_versions") == new_card.get("package_versions"):
                raise _mismatch(
                    ref_rel, "model", sources,
                    f"the refitted model pickles to SHA-256 {new_ref.model_sha256[:12]}..., the run's is "
                    f"{stored_ref.model_sha256[:12]}... with the same package versions",
                )  # fmt: skip
            return f"model id {new_ref.model_id} refitted (pickle bytes differ: package versions differ from the run's); {entry}"
        return f"model {new_ref.model_id} refitted byte for byte, CV and card identical; {entry}"

    return run


def _rel_or_abs(root: Path, p: Path) -> str:
    return _rel(root, p) if p.resolve().is_relative_to(root.resolve()) else str(p)


def _link_maps(cfg: RunConfig, rnd: Any, root: Path, scratch: Path) -> Callable[[], str]:
    def run() -> str:
        from mrv.pipeline.model import predict_round

        # The refitted model (scratch/model, checked against the bundle's by the model link) predicts.
        p = RunLayout(root).placed(StepPlace("model"), scratch / "model")
        p = p.placed(StepPlace("maps", rnd.name), _mkdir(scratch / "maps" / rnd.name))
        predict_round(cfg, rnd, p, client=None)
        stored = RunLayout(root).round_maps(rnd.name)
        for kind, path in stored.items():
            msg = diff_raster(path, p.round_maps(rnd.name)[kind], atol=MAP_TOLERANCE_T_HA, label=_rel(root, path))
            if msg:
                raise _mismatch(
                    _rel(root, path), f"maps[{rnd.name}]", f"{_rel(root, p.covariates(rnd.name))} and the model", msg
                )
        return f"{len(stored)} maps re-predicted (tolerance {MAP_TOLERANCE_T_HA:g} t C/ha)"

    return run


def _link_index(cfg: RunConfig, root: Path) -> Callable[[], str]:
    def run() -> str:
        from mrv.pipeline.plan import places
        from mrv.raster import read_raster

        layout = RunLayout(root)
        index = _read_json(layout.index, "index.json")
        steps = index.get("steps") if isinstance(index, dict) else None
        implied = {p.label: _rel(root, layout.step_dir(p)) for p in places(cfg)}
        msg = diff_json(steps, implied, "steps")
        if msg:
            raise _mismatch("index.json", "index", "the steps' pointers (<step>.current)", msg)
        latest = cfg.rounds[-1].name
        maps = {k: _rel(root, p) for k, p in layout.round_maps(latest).items()}
        msg = diff_json(index.get("latest_maps"), maps, "latest_maps")
        if msg:
            raise _mismatch("index.json", "index", f"the maps of round {latest}", msg)
        p05, _, _ = read_raster(layout.round_maps(latest)["p05"])
        p95, _, _ = read_raster(layout.round_maps(latest)["p95"])
        width, _, _ = read_raster(layout.round_maps(latest)["width90"])
        ok = np.isclose(width, p95 - p05, atol=MAP_TOLERANCE_T_HA, equal_nan=True)
        if not ok.all():
            rel = _rel(root, layout.round_maps(latest)["width90"])
            raise _mismatch(rel, "index", "p95 - p05", f"{int((~ok).sum())} pixels differ")
        return f"index.json names every step's current directory; width90 = p95 - p05 in round {latest}"

    return run


def _link_accounting(cfg: RunConfig, root: Path, scratch: Path) -> Callable[[], str]:
    def run() -> str:
        from mrv.pipeline.accounting import account

        b = RunLayout(root)
        a = b.placed(StepPlace("accounting"), _mkdir(scratch / "accounting"))
        account(cfg, a)
        stored = _read_json(b.accounting, _rel(root, b.accounting))
        new = _read_json(a.accounting, "recomputed")
        for d in (stored, new):
            if isinstance(d, dict) and isinstance(d.get("inputs"), dict):
                d["inputs"].pop("fields", None)  # a machine-specific path
        msg = diff_json(stored, new, "accounting")
        if msg:
            raise _mismatch(
                _rel(root, b.accounting),
                "accounting",
                "the maps, the field polygons, the model's cv_predictions.csv and the config",
                msg,
            )
        n = len(new.get("fields", [])) if isinstance(new, dict) else 0
        return f"Monte Carlo redone for {n} fields and the project ({cfg.accounting.n_simulations} simulations, seed {cfg.accounting.seed})"

    return run


_REPORT_DERIVED = (
    "project", "fields", "uncertainty", "model", "samples", "imagery", "methodology", "deductions", "maps", "design_based",
)  # fmt: skip
_REPORT_RUN_KEYS = ("name", "crs", "resolution_m", "depth_cm", "rounds", "latest_round", "baseline_round", "confidence")


def _link_report(cfg: RunConfig, root: Path, report: Report) -> Callable[[], str]:
    def run() -> str:
        from mrv.report import build

        layout = RunLayout(root)
        acc = _read_json(layout.accounting, _rel(root, layout.accounting))
        card = _read_json(layout.model_card, _rel(root, layout.model_card))
        samples, imagery_rounds = build.input_summaries(cfg, layout)
        methodology, deductions = build.methodology_section(cfg, layout, acc, card, int(card["n_train"]))
        latest = {k: _rel(root, p) for k, p in layout.round_maps(cfg.rounds[-1].name).items()}
        expected = {
            "project": acc["project"],
            "fields": acc["fields"],
            "uncertainty": build.uncertainty_section(acc),
            "model": card,
            "samples": samples,
            "imagery": {"source": cfg.imagery.source, "rounds": imagery_rounds},
            "methodology": methodology,
            "deductions": deductions,
            "maps": latest,
            "design_based": acc.get("design_based"),  # the change estimator's section, as accounted
        }
        stored = report.to_json()
        sources = "accounting.json, model_card.json, every round's samples.json and imagery.json and the methodology profile"
        for key in _REPORT_DERIVED:
            msg = diff_json(stored.get(key), _plain_json(expected[key]), key)
            if msg:
                raise _mismatch("report.json", "report", sources, msg)
        implied_run = {
            "name": cfg.name, "crs": cfg.region.crs, "resolution_m": cfg.region.resolution_m, "depth_cm": cfg.depth_cm,
            "rounds": [r.name for r in cfg.rounds], "latest_round": cfg.rounds[-1].name,
            "baseline_round": cfg.rounds[0].name, "confidence": cfg.accounting.confidence,
        }  # fmt: skip
        run_section = stored["run"]
        msg = diff_json({k: run_section.get(k) for k in _REPORT_RUN_KEYS}, _plain_json(implied_run), "run")
        if msg:
            raise _mismatch("report.json", "report", "the config", msg)
        return f"sections {', '.join(_REPORT_DERIVED)} recomputed (report schema {report.schema_version})"

    return run


def _link_rendering(root: Path, scratch: Path, report: Report, cfg: RunConfig) -> Callable[[], str]:
    def run() -> str:
        from mrv.report import render

        # As render.render_outputs renders them: report.json, the figures it embeds, the field polygons.
        layout = RunLayout(root)
        outputs = render.render_into(
            report, root, html=scratch / "report.html", pdf=scratch / "report.pdf", gpkg=scratch / "fields.gpkg",
            fields_path=cfg.region.fields,
        )  # fmt: skip
        stored = (layout.report_html, layout.report_gpkg, layout.report_pdf)
        for path, out in zip(stored, outputs, strict=True):
            rel = _rel(root, path)
            if path.read_bytes() != out.read_bytes():
                raise _mismatch(
                    rel,
                    "rendering",
                    "report.json, figures/ and the field polygons",
                    f"the {rel} rendered from report.json differs",
                )
        return "report.html, report/report.pdf and report/fields.gpkg re-rendered byte for byte"

    return run


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mrv-rederive-") as tmp:
        yield Path(tmp)


def verify(path: Path, *, public_key: Path | None = None, rederive: bool = True) -> Verification:
    """Verify a run directory, bundle directory or bundle ``.zip`` (see the module docstring).

    Raises :class:`VerificationError` at the first problem; returns what was checked otherwise.
    """
    t0 = time.perf_counter()
    with open_bundle(Path(path)) as root:
        signature = verify_signature(root, public_key)
        result = verify_manifest(root)
        raise_on_mismatch(result)
        manifest = load_manifest(root)
        if manifest["schema_version"] != 2:
            raise VerificationError(
                f"{root / MANIFEST_NAME} is a schema-1 manifest (absolute paths, no step chain); it can be re-hashed "
                "but not verified. Re-run the pipeline with this version."
            )
        note = _code_note(manifest)
        links: list[Link] = []
        try:
            cfg = run_config(root, manifest)
            _check_required(cfg, root, manifest)
            n_steps = check_step_chain(cfg, root, manifest)
            report = check_run_files(root)
            if rederive:
                with _scratch() as scratch:
                    links += _rederive(cfg, root, scratch, report)
        except VerificationError as exc:
            if not note:
                raise
            raise VerificationError(f"{exc} Note: {note}.") from exc
        return Verification(
            code_note=note,
            source=str(path), kind=str(manifest.get("kind")), signature=signature, files=result.checked,
            steps=n_steps, links=tuple(links), seconds=time.perf_counter() - t0,
        )  # fmt: skip


def _code_note(manifest: Mapping[str, Any]) -> str:
    """Empty when the verifier runs the code the run's steps recorded (:func:`mrv.pipeline.cache.code_version`)."""
    from mrv.pipeline.cache import code_version

    recorded = sorted({str(s.get("code_version")) for s in manifest.get("steps", []) if isinstance(s, Mapping)})
    mine = code_version()
    if recorded == [mine]:
        return ""
    return (
        f"the run's steps were computed by code {', '.join(recorded) or 'unknown'} (revision "
        f"{manifest.get('source_revision') or manifest.get('git_revision')}), this verifier runs {mine}; a difference "
        "found by re-derivation may also come from the code - verify with the run's version"
    )


def _rederive(cfg: RunConfig, root: Path, scratch: Path, report: Report) -> list[Link]:
    links: list[Link] = []
    for rnd in cfg.rounds:
        b = RunLayout(root)
        links.append(_run_link(
            f"samples[{rnd.name}]", [_rel(root, b.sites(rnd.name)), _rel(root, b.samples_summary(rnd.name))],
            _link_samples(cfg, rnd, root, scratch / f"s{rnd.name}"),
        ))  # fmt: skip
        remote_dem = cfg.imagery.dem is not None and cfg.imagery.dem.path is None
        if cfg.imagery.source == "local" and not remote_dem:
            links.append(_run_link(
                f"imagery[{rnd.name}]", [_rel(root, b.covariates(rnd.name))],
                _link_imagery(cfg, rnd, root, scratch / f"i{rnd.name}"),
            ))  # fmt: skip
        else:
            links.append(Link(
                f"imagery[{rnd.name}]", "hashed only", (_rel(root, b.covariates(rnd.name)),),
                f"imagery from {cfg.imagery.source}: the assets are not in the bundle, so the composite is not recomputed",
            ))  # fmt: skip
    b = RunLayout(root)
    model_files = [_rel(root, p) for p in (b.model_ref, b.model_card, b.cv_predictions)]
    links.append(_run_link("model", model_files, _link_model(cfg, root, scratch)))
    for rnd in cfg.rounds:
        maps_dir = _rel(root, b.step_dir(StepPlace("maps", rnd.name))) + "/"
        links.append(_run_link(f"maps[{rnd.name}]", [maps_dir], _link_maps(cfg, rnd, root, scratch)))
    links.append(_run_link("index", ["index.json"], _link_index(cfg, root)))
    links.append(_run_link("accounting", [_rel(root, b.accounting)], _link_accounting(cfg, root, scratch)))
    links.append(_run_link("report", ["report.json"], _link_report(cfg, root, report)))
    links.append(
        _run_link(
            "rendering",
            ["report.html", "report/report.pdf", "report/fields.gpkg"],
            _link_rendering(root, scratch, report, cfg),
        )
    )
    links.append(
        Link(
            "outputs",
            "hashed only",
            ("figures/*.png", "models/"),
            "signed and hashed",
        )
    )
    return links


def format_verification(v: Verification) -> str:
    """The verify result as lines for the terminal: signature, files, steps, each link and its time."""
    sig = {
        "valid": f"signature valid ({v.signature.fingerprint})",
        "unsigned": "UNSIGNED: nobody vouches for this bundle (the operator can sign it with 'mrv report bundle --sign-key')",
        "not checked": f"signed by {v.signature.fingerprint}, NOT checked: pass --key with the operator's public key",
    }[v.signature.status]
    lines = [
        f"OK: {v.source} ({v.kind}): {sig}",
        f"  {v.files} files match manifest.json, no file unlisted; {v.steps} steps chained (records, outputs, inputs, settings)",
    ]
    width = max((len(link.name) for link in v.links), default=0)
    for link in v.links:
        lines.append(f"  {link.name:<{width}}  {link.method:<11}  {link.seconds:6.2f} s  {link.detail}")
    if not v.links:
        lines.append("  re-derivation skipped (--hash-only)")
    if v.code_note:
        lines.append(f"  note: {v.code_note}")
    lines.append(f"  total {v.seconds:.1f} s")
    return "\n".join(lines)


def rebuild_checked(run_dir: Path) -> tuple[tuple[Path, ...], list[str]]:
    """``mrv report build`` with damaged files reported in one message naming the file.

    The manifest (when present) and report.json are checked for shape first; a failure while
    rendering is reported as a damaged report.json.
    """
    from mrv.report.render import rebuild_report

    root = Path(run_dir).expanduser().resolve()
    if (root / MANIFEST_NAME).exists():
        load_manifest(root)
    check_run_files(root)
    try:
        return rebuild_report(root)
    except MRVError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise VerificationError(
            f"{root / 'report.json'} cannot be rendered ({type(exc).__name__}: {exc}); a value in it has the wrong "
            "type or is missing. Restore report.json from the original run."
        ) from exc
    except OSError as exc:
        raise VerificationError(
            f"Rendering the report of {root} failed: {exc}. Check that the run directory is writable."
        ) from exc
