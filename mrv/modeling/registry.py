"""The model registry: a shared, content-addressed directory of fitted SOC models and their model cards.

Layout (``models/README.md`` documents it for users)::

    <registry_dir>/<model_id>/model.pkl         the pickled model (any SOCPredictor kind)
    <registry_dir>/<model_id>/model_card.json   what it is, how it was trained and validated (CARD_FIELDS)

The model id is derived from the training-table hash, covariates, estimator settings and calibration
(:attr:`SOCPredictor.model_id`), and the card records the SHA-256 of ``model.pkl``. An id is never
overwritten: registering the same bytes again is a no-op, different bytes under an existing id are an
error. Two processes registering one id at once both succeed: each writes a staging directory and
renames it into place (``rename`` is atomic; the loser finds the winner's identical entry).

A run does not keep a second pickle: it keeps a :class:`ModelRef` (``model_ref.json``: id, registry
directory, SHA-256 of ``model.pkl`` and of the card), and :func:`load_reference` loads exactly those
bytes. :func:`load` is the one place a model pickle is unpickled.

Pickles execute code when loaded: only load registries you trust. The SHA-256 checks detect accidental
or casual modification, not a forger who also rewrites the card and the run's reference.

The card's JSON Schema is generated from :data:`CARD_FIELDS` by :func:`card_json_schema` and published
as ``models/card.schema.json`` (``mrv models schema -o models/card.schema.json``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mrv.errors import CovariateMismatch, ModelError
from mrv.fsio import fsync_dir, sha256_bytes, sha256_file, write_bytes, write_json

if TYPE_CHECKING:
    from mrv.modeling.model import SOCPredictor
    from mrv.modeling.train import TrainingResult

__all__ = [
    "CARD_FIELDS",
    "CARD_FILE",
    "CARD_SCHEMA_ID",
    "CARD_VERSION",
    "KIND_NAMES",
    "MODEL_FILE",
    "REF_VERSION",
    "CardField",
    "ModelRef",
    "build_card",
    "card_json_schema",
    "check_compatible",
    "check_entry",
    "check_registry_writable",
    "copy_entry",
    "list_models",
    "load",
    "load_reference",
    "read_card",
    "read_reference",
    "reference",
    "register",
    "resolve_registry",
    "training_card",
    "write_reference",
]

MODEL_FILE = "model.pkl"
CARD_FILE = "model_card.json"
#: The reference a run keeps instead of a copy of the pickle (:func:`write_reference`).
#: Version of the card layout (:data:`CARD_FIELDS`); bump it and document the migration in models/README.md.
CARD_VERSION = 1
REF_VERSION = 1
CARD_SCHEMA_ID = "https://soilcarbon-mrv.org/schemas/model-card.schema.json"
#: ``kind`` entry of the card for each model kind (:attr:`SOCPredictor.kind`).
KIND_NAMES = {"qrf": "quantile_regression_forest", "gbm_quantile": "quantile_gradient_boosting"}
#: ``cv.scheme`` of the card for each ``model.cv_design`` (older cards: ``spatial_block`` only).
CV_SCHEMES = {"blocks": "spatial_block", "knndm": "knndm"}
_VERSIONED_PACKAGES = ("numpy", "scikit-learn", "quantile-forest", "soilcarbon-mrv")
_HEX = "^[0-9a-f]{64}$"


# --------------------------------------------------------------------------------------------- the card schema


@dataclass(frozen=True)
class CardField:
    """One top-level entry of a model card."""

    name: str
    schema: Mapping[str, Any]
    """JSON Schema (draft 2020-12) of the value."""
    unit: str
    """Unit of the value (``-`` when it has none; ``t C/ha`` is the 0-30 cm SOC stock)."""
    description: str
    written_by: Literal["registry", "pipeline", "run"]
    """``registry``: always present, written by :func:`build_card` (overrides a caller entry of that name);
    ``pipeline``: the model step's entries (:func:`training_card`), absent from cards registered by hand;
    ``run``: only in the run's copy (the model step's ``model_card.json``), never in the registry."""


_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR = {"type": "string"}
#: Cross-validation accuracy (:class:`mrv.modeling.validation.Metrics`); stocks in t C/ha, 0-30 cm.
_METRICS_PROPERTIES: dict[str, dict[str, Any]] = {
    "n": {"type": "integer", "minimum": 0, "description": "held-out sites"},
    "rmse": {**_NUM_OR_NULL, "description": "root mean square error of the mean prediction, t C/ha"},
    "bias": {**_NUM_OR_NULL, "description": "mean of predicted minus observed, t C/ha"},
    "r2": {**_NUM_OR_NULL, "description": "model efficiency 1 - SSE/SST (can be negative), -"},
    "ccc": {**_NUM_OR_NULL, "description": "Lin's (1989) concordance correlation coefficient, -"},
    "picp_90": {**_NUM_OR_NULL, "description": "share of observed stocks inside the calibrated 90 % interval, -"},
    "mean_width_90": {**_NUM_OR_NULL, "description": "mean width of the calibrated 90 % interval, t C/ha"},
    "baseline_rmse": {
        **_NUM_OR_NULL,
        "description": "RMSE of predicting every held-out site with the training mean, t C/ha",
    },
}
_METRICS = {"type": "object", "properties": _METRICS_PROPERTIES, "required": list(_METRICS_PROPERTIES)}
_DECILES = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "decile": {"type": "integer", "minimum": 1, "maximum": 10},
            "observed_min_t_ha": _NUM,
            "observed_max_t_ha": _NUM,
            "n": {"type": "integer", "minimum": 0},
            "picp": _NUM_OR_NULL,
        },
        "required": ["decile", "n", "picp"],
    },
}

#: Every documented top-level entry of a model card, in the order of models/README.md.
CARD_FIELDS: tuple[CardField, ...] = (
    CardField("card_version", {"type": "integer", "const": CARD_VERSION}, "-", "Version of this card layout.", "registry"),
    CardField("model_id", {"type": "string", "pattern": "^[a-z]+-[0-9a-f]{12}$"}, "-",
              "Content id `<kind>-<12 hex>`: hash of training-data hash, covariates, estimator settings and "
              "calibration margin; also the registry directory name.", "registry"),
    CardField("model_kind", {"enum": list(KIND_NAMES)}, "-", "Model kind: `qrf` (quantile regression forest) or "
              "`gbm_quantile` (quantile gradient boosting).", "registry"),
    CardField("model_file", {"const": MODEL_FILE}, "-", "Pickle file name inside the entry directory.", "registry"),
    CardField("model_sha256", {"type": "string", "pattern": _HEX}, "-",
              "SHA-256 of `model.pkl`; `load` refuses bytes that do not match it.", "registry"),
    CardField("training_sha256", {"type": "string", "pattern": _HEX}, "-",
              "SHA-256 of the training table (sites x covariates) the model was fitted on.", "registry"),
    CardField("covariates", {"type": "array", "items": _STR, "minItems": 1}, "-",
              "Covariate (band) names in the order the model expects them; a stack with other names or another "
              "order is refused (`check_compatible`).", "registry"),
    CardField("confidence", {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, "-",
              "Nominal coverage of the prediction interval p05-p95 (0.9).", "registry"),
    CardField("calibration_margin_t_ha", _NUM, "t C/ha", "Conformal (CQR) margin added to each side of the raw "
              "p05/p95 quantiles (Romano et al. 2019, Eq. 7); negative narrows the interval.", "registry"),
    CardField("estimator_params", {"type": "object"}, "-", "All scikit-learn / quantile-forest estimator "
              "parameters (`get_params`), as JSON.", "registry"),
    CardField("model_metadata", {"type": "object", "required": ["training_sha256"]}, "-",
              "The model's own metadata (training hash, n_train, CV block size ...).", "registry"),
    CardField("package_versions", {"type": "object", "additionalProperties": {"type": ["string", "null"]}}, "-",
              "Versions of numpy, scikit-learn, quantile-forest and soilcarbon-mrv that wrote the pickle (null: "
              "not installed); unpickling with other versions may fail or differ.", "registry"),
    CardField("created", {"type": "string", "format": "date-time"}, "UTC",
              "When the entry was registered (ISO 8601, seconds, UTC).", "registry"),
    CardField("kind", {"enum": list(KIND_NAMES.values())}, "-", "Long name of the model kind.", "pipeline"),
    CardField("n_train", {"type": "integer", "minimum": 1}, "sites", "Training sites (lab and crowd).", "pipeline"),
    CardField("params", {"type": "object"}, "-", "The scalar estimator parameters (a subset of `estimator_params`).",
              "pipeline"),
    CardField("calibration", {"type": "object", "properties": {"method": _STR, "margin_t_ha": _NUM},
                              "required": ["method", "margin_t_ha"]}, "t C/ha",
              "How the conformal margin was set: method, margin, the sites it came from (`calibration_sites`), "
              "conformal rank, margins by sample source, crowd bias, label-conditional diagnostics.", "pipeline"),
    CardField("cv_block_size_m", {"type": "number", "exclusiveMinimum": 0}, "m",
              "Edge of the square spatial cross-validation blocks.", "pipeline"),
    CardField("autocorrelation_range_m", _NUM_OR_NULL, "m", "Practical range of the residual variogram that set the "
              "block size (null when no variogram was fitted).", "pipeline"),
    CardField("cv_block_rule", _STR, "-", "The rule that chose the block size, in words, with its sources "
              "(Roberts et al. 2017; Valavi et al. 2019).", "pipeline"),
    CardField("cv_block", {"type": "object", "properties": {"block_size_m": _NUM, "rule": _STR},
                           "required": ["block_size_m", "rule"]}, "m",
              "The block-size choice in full: floor, cap, target range, range per repetition, variogram "
              "(`lags_m`, `gamma` in (t C/ha)^2, `n_pairs`).", "pipeline"),
    CardField("cv", {**_METRICS, "properties": {**_METRICS_PROPERTIES, "scheme": {"enum": list(CV_SCHEMES.values())},
                                                "block_size_m": _NUM}}, "t C/ha",
              "Spatial CV of the calibration-source sites (`knndm`: folds matched to the field-pixel-to-site "
              "distances; `spatial_block`: square blocks of `block_size_m`): the accuracy a verifier should "
              "quote. The design's record is `calibration.cv_design`.", "pipeline"),
    CardField("cv_random", {**_METRICS, "properties": {**_METRICS_PROPERTIES, "scheme": _STR}}, "t C/ha",
              "Random K-fold CV: optimistic under spatial autocorrelation, shown only beside `cv`.", "pipeline"),
    CardField("cv_by_source", {"type": "object", "additionalProperties": _METRICS}, "t C/ha",
              "Spatial CV accuracy by sample source (`lab`, `crowd`).", "pipeline"),
    CardField("cv_coverage_by_decile", _DECILES, "t C/ha",
              "Cross-conformal interval coverage (PICP) by decile of the observed stock.", "pipeline"),
    CardField("cv_fold_sizes", {"type": "array", "items": {"type": "integer", "minimum": 0}}, "sites",
              "Held-out sites per spatial CV fold.", "pipeline"),
    CardField("registry", {"type": "object", "properties": {"dir": _STR, "path": _STR}}, "-",
              "Run copy only: the registry directory and entry the run registered the model in.", "run"),
)  # fmt: skip


def card_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a model card, from :data:`CARD_FIELDS`.

    Registry-owned entries are required; other entries (a caller's notes, a region name) are allowed.
    """
    properties: dict[str, Any] = {}
    for f in CARD_FIELDS:
        unit = "" if f.unit == "-" else f" Unit: {f.unit}."
        properties[f.name] = {**f.schema, "description": f"{f.description}{unit} Written by: {f.written_by}."}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": CARD_SCHEMA_ID,
        "title": f"soilcarbon-mrv model card (card_version {CARD_VERSION})",
        "description": "models/<model_id>/model_card.json; see models/README.md.",
        "type": "object",
        "properties": properties,
        "required": [f.name for f in CARD_FIELDS if f.written_by == "registry"],
        "additionalProperties": True,
    }


# --------------------------------------------------------------------------------------------- references


@dataclass(frozen=True)
class ModelRef:
    """A registry entry, pinned by the hashes of its two files; what a run keeps instead of the pickle."""

    model_id: str
    registry_dir: Path
    """The registry the entry is in (absolute)."""
    model_sha256: str
    """SHA-256 of ``<registry_dir>/<model_id>/model.pkl``."""
    card_sha256: str
    """SHA-256 of ``<registry_dir>/<model_id>/model_card.json``."""

    @property
    def entry_dir(self) -> Path:
        return _model_dir(self.model_id, self.registry_dir)

    @property
    def model_path(self) -> Path:
        return self.entry_dir / MODEL_FILE

    @property
    def card_path(self) -> Path:
        return self.entry_dir / CARD_FILE

    def to_json(self) -> dict[str, Any]:
        return {
            "ref_version": REF_VERSION,
            "model_id": self.model_id,
            "registry_dir": str(self.registry_dir),
            "model_sha256": self.model_sha256,
            "card_sha256": self.card_sha256,
        }


def write_reference(path: str | Path, ref: ModelRef) -> Path:
    """Write ``ref`` as ``model_ref.json`` (atomically)."""
    return write_json(path, ref.to_json())


def read_reference(path: str | Path, *, registry_dir: str | Path | None = None) -> ModelRef:
    """The :class:`ModelRef` in ``path``; ``registry_dir`` replaces the recorded registry (e.g. a bundle's
    ``models/``). A relative recorded registry is relative to the reference's directory."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"{path} is missing: the run has no model reference; re-run the model step.") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read the model reference {path}: {exc}. Re-run the model step.") from exc
    if not isinstance(raw, dict) or raw.get("ref_version") != REF_VERSION:
        version = raw.get("ref_version") if isinstance(raw, dict) else None
        raise ModelError(
            f"{path} is not a version-{REF_VERSION} model reference (ref_version {version!r}); re-run the model step."
        )
    bad = [k for k in ("model_id", "registry_dir", "model_sha256", "card_sha256") if not isinstance(raw.get(k), str)]
    bad += [k for k in ("model_sha256", "card_sha256") if k not in bad and not _is_hex64(raw[k])]
    if bad:
        raise ModelError(f"{path}: {', '.join(bad)} missing or malformed; re-run the model step to rewrite it.")
    _model_dir(raw["model_id"], Path("."))  # a valid id
    recorded = Path(raw["registry_dir"]).expanduser()
    where = Path(registry_dir) if registry_dir is not None else recorded
    if not where.is_absolute():
        where = (path.parent if registry_dir is None else Path.cwd()) / where
    return ModelRef(raw["model_id"], where.resolve(), raw["model_sha256"], raw["card_sha256"])


def _is_hex64(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def reference(model_id: str, registry_dir: str | Path | None = None) -> ModelRef:
    """The current :class:`ModelRef` of a registered model, from the hashes of its files (nothing unpickled)."""
    root = resolve_registry(registry_dir)
    card = read_card(model_id, root)
    d = _model_dir(model_id, root)
    if card.get("model_file", MODEL_FILE) != MODEL_FILE:
        raise ModelError(
            f"{d / CARD_FILE} names model file {card.get('model_file')!r}, not {MODEL_FILE}; re-register it."
        )
    return ModelRef(model_id, root, _file_hash(d / MODEL_FILE, model_id), _file_hash(d / CARD_FILE, model_id))


def _file_hash(path: Path, model_id: str) -> str:
    try:
        return sha256_file(path)
    except OSError as exc:
        raise ModelError(f"Cannot read {path}: {exc}. Restore the registry entry of model {model_id}.") from exc


def check_entry(ref: ModelRef) -> None:
    """Raise :class:`ModelError` unless the registry entry holds exactly the bytes ``ref`` pins (no unpickling)."""
    current = reference(ref.model_id, ref.registry_dir)
    for want, got, where in (
        (ref.model_sha256, current.model_sha256, ref.model_path),
        (ref.card_sha256, current.card_sha256, ref.card_path),
    ):
        if want != got:
            raise ModelError(
                f"{where} has SHA-256 {got} but the run's model reference records {want}: the registry entry of "
                f"model {ref.model_id} was replaced or modified after the run. Restore the original entry (a bundle "
                f"of the run carries it under models/{ref.model_id}/) or re-run the model step."
            )
    card = read_card(ref.model_id, ref.registry_dir)
    if card.get("model_sha256") != ref.model_sha256:
        raise ModelError(
            f"{ref.card_path} records model SHA-256 {card.get('model_sha256')} but {ref.model_path} has "
            f"{ref.model_sha256}; the entry is inconsistent. Restore it or re-run the model step."
        )


def copy_entry(ref: ModelRef, dest_registry: str | Path) -> ModelRef:
    """Copy the entry ``ref`` pins into ``dest_registry/<model_id>/`` (checked first; e.g. into a bundle's
    ``models/``) and return the reference to the copy. An identical copy already there is kept."""
    check_entry(ref)
    dest = Path(dest_registry).resolve()
    target = _model_dir(ref.model_id, dest)
    moved = ModelRef(ref.model_id, dest, ref.model_sha256, ref.card_sha256)
    if target.exists():
        check_entry(moved)
        return moved
    _publish(dest, ref.model_id, {MODEL_FILE: ref.model_path.read_bytes(), CARD_FILE: ref.card_path.read_bytes()})
    check_entry(moved)
    return moved


def load_reference(ref: ModelRef) -> SOCPredictor:
    """The model ``ref`` pins: its card must hash to ``ref.card_sha256`` and its pickle to ``ref.model_sha256``."""
    got = _file_hash(ref.card_path, ref.model_id) if ref.card_path.is_file() else None
    if got is not None and got != ref.card_sha256:
        raise ModelError(
            f"{ref.card_path} has SHA-256 {got} but the run's model reference records {ref.card_sha256}: the card "
            f"was modified after the run. Restore the registry entry of model {ref.model_id} or re-run the model step."
        )
    return load(ref.model_id, ref.registry_dir, expected_sha256=ref.model_sha256)


# --------------------------------------------------------------------------------------------- registering


def resolve_registry(registry_dir: str | Path | None) -> Path:
    """``registry_dir`` as an absolute path; ``None``: the default registry (:func:`mrv.config.default_model_registry`)."""
    if registry_dir is None:
        from mrv.config import default_model_registry

        return default_model_registry()
    return Path(registry_dir).expanduser().resolve()


def check_registry_writable(registry_dir: str | Path | None = None) -> Path:
    """The registry directory, after checking that models can be registered there (for ``mrv validate``).

    The directory need not exist yet: its nearest existing ancestor must be a writable directory.
    """
    root = resolve_registry(registry_dir)
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        what = "is not a directory" if not probe.is_dir() else "is not writable"
        raise ModelError(
            f"Models cannot be registered in {root}: {probe} {what}. Set model.registry_dir (or $MRV_MODEL_REGISTRY) "
            "to a writable directory."
        )
    return root


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _VERSIONED_PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = None
    return out


def _json_safe(value: Any) -> Any:
    """Round-trip through JSON so the card written equals the card returned (tuples -> lists, etc.)."""
    try:
        return json.loads(json.dumps(value, allow_nan=True, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"The model card cannot be stored as JSON ({exc}); pass plain numbers, strings and lists."
        ) from exc


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    if isinstance(obj, dt.date | dt.datetime | Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):  # e.g. validation.Metrics
        return {k: getattr(obj, k) for k in obj.__dataclass_fields__}
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _model_dir(model_id: str, registry_dir: Path) -> Path:
    if not model_id or "/" in model_id or "\\" in model_id or model_id in (".", "..") or model_id.startswith("."):
        raise ModelError(f"{model_id!r} is not a model id; use an id from list_models(), e.g. 'qrf-0123456789ab'.")
    return registry_dir / model_id


def _cv_design(result: TrainingResult) -> str:
    design = result.calibration.get("cv_design")
    return str(design.get("design", "blocks")) if isinstance(design, dict) else "blocks"


def training_card(result: TrainingResult) -> dict[str, Any]:
    """The model step's card entries (``written_by: pipeline`` in :data:`CARD_FIELDS`) from a training result."""
    model = result.model
    block = result.block.to_dict()
    return {
        "kind": KIND_NAMES[model.kind],
        "n_train": model.metadata["n_train"],
        "params": {k: v for k, v in model.params().items() if isinstance(v, int | float | str)},
        "calibration": {
            "method": "conformalized quantile regression (spatial CV)",
            "margin_t_ha": model.margin_t_ha,
            **result.calibration,
        },  # fmt: skip
        "cv_block_size_m": result.block.block_size_m,
        "autocorrelation_range_m": block.get("range_m"),
        "cv_block_rule": result.block.rule,
        "cv_block": block,
        "cv": {"scheme": CV_SCHEMES[_cv_design(result)], "block_size_m": result.block.block_size_m,
               **result.spatial_cv.to_dict()},
        "cv_random": {"scheme": "random_kfold (optimistic)", **result.random_cv.to_dict()},
        "cv_by_source": {src: m.to_dict() for src, m in result.spatial_cv_by_source.items()},
        "cv_coverage_by_decile": result.coverage_by_decile,
        "cv_fold_sizes": result.fold_sizes,
    }


def build_card(model: SOCPredictor, card: Mapping[str, Any], *, model_sha256: str) -> dict[str, Any]:
    """The stored card: the caller's entries (e.g. :func:`training_card`) plus what the registry records itself.

    Registry-owned keys (model id, hashes, covariates, calibration, versions) override caller keys
    of the same name, so a card cannot contradict the model it describes.
    """
    training = model.metadata.get("training_sha256")
    if not training:
        raise ModelError(
            "The model has no metadata['training_sha256']; register models returned by mrv.modeling.train.train(), "
            "or set the SHA-256 of the training table in model.metadata first."
        )
    out: dict[str, Any] = dict(_json_safe(dict(card)))
    out.update(
        {
            "card_version": CARD_VERSION,
            "model_id": model.model_id,
            "model_kind": model.kind,
            "model_file": MODEL_FILE,
            "model_sha256": model_sha256,
            "training_sha256": training,
            "covariates": list(model.covariates),
            "confidence": model.confidence,
            "calibration_margin_t_ha": model.margin_t_ha,
            "estimator_params": _json_safe(model.params()),
            "model_metadata": _json_safe(model.metadata),
            "package_versions": _versions(),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
    )
    return out


def _publish(registry_dir: Path, model_id: str, files: Mapping[str, bytes]) -> bool:
    """Write ``files`` into ``registry_dir/<model_id>/`` all at once; False when the id appeared meanwhile."""
    registry_dir.mkdir(parents=True, exist_ok=True)
    target = _model_dir(model_id, registry_dir)
    staging = registry_dir / f".{model_id}.{uuid.uuid4().hex}.tmp"
    try:
        staging.mkdir()  # mode 0777 & ~umask, unlike mkdtemp's 0700: a shared registry is read by others
        file_mode = staging.stat().st_mode & 0o666
        for name, data in files.items():
            write_bytes(staging / name, data)
            os.chmod(staging / name, file_mode)  # write_bytes' temporary files are 0600
        os.rename(staging, target)  # atomic; fails when another process registered the id meanwhile
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if target.exists():
            return False
        raise ModelError(f"Cannot write model {model_id} to {registry_dir}: {exc}. Check the directory.") from exc
    fsync_dir(registry_dir)
    return True


def register(model: SOCPredictor, card: Mapping[str, Any], registry_dir: str | Path | None = None) -> ModelRef:
    """Store ``model`` and its card under ``registry_dir/<model_id>/``; returns the reference to the entry.

    ``card`` holds what only the caller knows (CV metrics, region, notes; :func:`training_card`).
    Registering an id that already exists is a no-op when the pickled bytes are identical (the
    existing card is kept, and the reference names it) and a :class:`ModelError` otherwise (the
    existing card and pickle are never touched).
    """
    root = resolve_registry(registry_dir)
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    digest = sha256_bytes(blob)
    target = _model_dir(model.model_id, root)
    for _attempt in range(2):
        if target.exists():
            existing = target / MODEL_FILE
            if existing.is_file() and sha256_file(existing) == digest:
                return reference(model.model_id, root)
            raise ModelError(
                f"Model id {model.model_id} is already registered in {target} with different content "
                f"({existing.name} SHA-256 differs); registered models are never overwritten. Remove {target} by "
                "hand if it is obsolete, or change the training data, settings or calibration so the model gets a new id."
            )
        card_bytes = (
            json.dumps(build_card(model, card, model_sha256=digest), indent=2, sort_keys=True) + "\n"
        ).encode()
        if _publish(root, model.model_id, {MODEL_FILE: blob, CARD_FILE: card_bytes}):
            return ModelRef(model.model_id, root, digest, sha256_bytes(card_bytes))
        # lost a race: the other process's entry is checked like any existing one
    raise ModelError(f"Model {model.model_id} could not be registered in {root}; try again.")  # pragma: no cover


# --------------------------------------------------------------------------------------------- reading


def read_card(model_id: str, registry_dir: str | Path | None = None) -> dict[str, Any]:
    """The stored model card of ``model_id`` (no pickle is loaded)."""
    root = resolve_registry(registry_dir)
    path = _model_dir(model_id, root) / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        known = ", ".join(list_models(root)) or "none"
        raise ModelError(
            f"No model {model_id!r} in {root} ({path} is missing); registered: {known}. Point model.registry_dir "
            "(or $MRV_MODEL_REGISTRY, or --registry) at the registry the model was registered in."
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read the model card {path}: {exc}. Re-register the model.") from exc
    if not isinstance(card, dict):
        raise ModelError(f"The model card {path} is not a JSON object; re-register the model.")
    return card


def load(model_id: str, registry_dir: str | Path | None = None, *, expected_sha256: str | None = None) -> SOCPredictor:
    """The registered model, after checking its pickle against the card's SHA-256 and, when given, against
    ``expected_sha256`` (a run's :class:`ModelRef`). The one place a model pickle is unpickled."""
    from mrv.modeling.model import SOCPredictor

    root = resolve_registry(registry_dir)
    card = read_card(model_id, root)
    path = _model_dir(model_id, root) / MODEL_FILE
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"Cannot read {path}: {exc}. Re-register model {model_id}.") from exc
    recorded = card.get("model_sha256")
    actual = sha256_bytes(blob)
    if actual != recorded:
        raise ModelError(
            f"{path} does not match its model card: SHA-256 {actual} but the card records {recorded}. The file was "
            f"modified or corrupted after registration; do not use it - restore it or re-register model {model_id}."
        )
    if expected_sha256 is not None and actual != expected_sha256:
        raise ModelError(
            f"{path} has SHA-256 {actual} but the run's model reference records {expected_sha256}: the registry "
            f"entry of model {model_id} was replaced after the run. Restore the original entry (a bundle of the run "
            f"carries it under models/{model_id}/) or re-run the model step."
        )
    try:
        model = pickle.loads(blob)  # bytes verified against the card (and the run's reference) above
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as exc:
        raise ModelError(
            f"Cannot unpickle {path} ({type(exc).__name__}: {exc}). It was written with {card.get('package_versions')}, "
            f"this environment has {_versions()}: install those versions or re-train the model."
        ) from exc
    if not isinstance(model, SOCPredictor):
        raise ModelError(f"{path} holds a {type(model).__name__}, not an SOC model; re-register model {model_id}.")
    if model.model_id != model_id:
        raise ModelError(
            f"{path} holds model {model.model_id}, not {model_id}; the registry directory was renamed. "
            f"Move it back to {model.model_id}/."
        )
    return model


def list_models(registry_dir: str | Path | None = None) -> list[str]:
    """Ids of the registered models (directories with a model card), sorted."""
    root = resolve_registry(registry_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / CARD_FILE).is_file()
    )


def check_compatible(card: Mapping[str, Any], covariate_names: Iterable[str]) -> None:
    """Raise :class:`CovariateMismatch` unless ``covariate_names`` are the card's covariates in the same order."""
    expected = [str(c) for c in card.get("covariates", [])]
    names = [str(c) for c in covariate_names]
    if names == expected:
        return
    missing = [c for c in expected if c not in names]
    extra = [c for c in names if c not in expected]
    problem = []
    if missing:
        problem.append(f"missing {missing}")
    if extra:
        problem.append(f"unexpected {extra}")
    if not problem:
        problem.append(f"same covariates in a different order: expected {expected}, got {names}")
    raise CovariateMismatch(
        f"Model {card.get('model_id', '?')} was trained on covariates {expected} but the stack has {names}: "
        f"{'; '.join(problem)}. Rebuild the covariate stack with the model's bands in the model's order, or "
        "retrain the model on the covariates you have."
    )
