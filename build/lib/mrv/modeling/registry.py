"""A content-addressed directory of fitted SOC models and their model cards.

Layout: ``<registry_dir>/<model_id>/model.pkl`` (the pickled model, any :class:`SOCPredictor` kind) and
``<registry_dir>/<model_id>/model_card.json``. The card records the SHA-256 of ``model.pkl``;
:func:`load` refuses a pickle whose bytes no longer match it. An id is never overwritten:
registering the same bytes again is a no-op, different bytes under an existing id are an error.

Pickles execute code when loaded: only load registries you trust. The SHA-256 check detects
accidental or casual modification, not a forger who also rewrites the card.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterable, Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from mrv.errors import CovariateMismatch, ModelError
from mrv.modeling.model import SOCPredictor

#: Default registry location: ``models/`` at the repository root.
DEFAULT_REGISTRY = Path(__file__).resolve().parents[2] / "models"
MODEL_FILE = "model.pkl"
CARD_FILE = "model_card.json"
CARD_VERSION = 1
_VERSIONED_PACKAGES = ("numpy", "scikit-learn", "quantile-forest", "soilcarbon-mrv")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    if not model_id or "/" in model_id or "\\" in model_id or model_id in (".", ".."):
        raise ModelError(f"{model_id!r} is not a model id; use an id from list_models(), e.g. 'qrf-0123456789ab'.")
    return registry_dir / model_id


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_card(model: SOCPredictor, card: Mapping[str, Any], *, model_sha256: str) -> dict[str, Any]:
    """The stored card: the caller's entries (e.g. CV metrics) plus what the registry records itself.

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


def register(model: SOCPredictor, card: Mapping[str, Any], *, registry_dir: str | Path = DEFAULT_REGISTRY) -> Path:
    """Store ``model`` and its card under ``registry_dir/<model_id>/``; returns that directory.

    ``card`` holds what only the caller knows (CV metrics, region, notes). Registering an id that
    already exists is a no-op when the pickled bytes are identical and a :class:`ModelError`
    otherwise (the existing card and pickle are never touched).
    """
    registry_dir = Path(registry_dir)
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    digest = _sha256(blob)
    target = _model_dir(model.model_id, registry_dir)
    if target.exists():
        existing = target / MODEL_FILE
        if existing.is_file() and _sha256(existing.read_bytes()) == digest:
            return target
        raise ModelError(
            f"Model id {model.model_id} is already registered in {target} with different content "
            f"({existing.name} SHA-256 differs); registered models are never overwritten. Remove {target} by hand "
            "if it is obsolete, or change the training data, settings or calibration so the model gets a new id."
        )
    registry_dir.mkdir(parents=True, exist_ok=True)
    card_out = build_card(model, card, model_sha256=digest)
    staging = Path(tempfile.mkdtemp(dir=registry_dir, prefix=f".{model.model_id}."))
    try:
        _atomic_write(staging / MODEL_FILE, blob)
        _atomic_write(staging / CARD_FILE, (json.dumps(card_out, indent=2, sort_keys=True) + "\n").encode())
        os.rename(staging, target)  # atomic; fails if another process registered the id meanwhile
    except OSError as exc:
        for f in staging.glob("*"):
            f.unlink()
        staging.rmdir()
        if target.exists():
            return register(model, card, registry_dir=registry_dir)  # lost a race: identical -> ok, else error
        raise ModelError(f"Cannot write model {model.model_id} to {registry_dir}: {exc}. Check the directory.") from exc
    return target


def read_card(model_id: str, *, registry_dir: str | Path = DEFAULT_REGISTRY) -> dict[str, Any]:
    """The stored model card of ``model_id`` (no pickle is loaded)."""
    path = _model_dir(model_id, Path(registry_dir)) / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        known = ", ".join(list_models(registry_dir)) or "none"
        raise ModelError(f"No model {model_id!r} in {registry_dir} ({path} is missing); registered: {known}.") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read the model card {path}: {exc}. Re-register the model.") from exc
    if not isinstance(card, dict):
        raise ModelError(f"The model card {path} is not a JSON object; re-register the model.")
    return card


def load(model_id: str, *, registry_dir: str | Path = DEFAULT_REGISTRY) -> tuple[SOCPredictor, dict[str, Any]]:
    """The registered model and its card, after checking the pickle against the card's SHA-256."""
    card = read_card(model_id, registry_dir=registry_dir)
    path = _model_dir(model_id, Path(registry_dir)) / str(card.get("model_file", MODEL_FILE))
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"Cannot read {path}: {exc}. Re-register model {model_id}.") from exc
    expected = card.get("model_sha256")
    actual = _sha256(blob)
    if actual != expected:
        raise ModelError(
            f"{path} does not match its model card: SHA-256 {actual} but the card records {expected}. The file was "
            f"modified or corrupted after registration; do not use it - restore it or re-register model {model_id}."
        )
    model = pickle.loads(blob)  # bytes verified against the card above
    if not isinstance(model, SOCPredictor):
        raise ModelError(f"{path} holds a {type(model).__name__}, not an SOC model; re-register model {model_id}.")
    if model.model_id != model_id:
        raise ModelError(
            f"{path} holds model {model.model_id}, not {model_id}; the registry directory was renamed. "
            f"Move it back to {model.model_id}/."
        )
    return model, card


def list_models(registry_dir: str | Path = DEFAULT_REGISTRY) -> list[str]:
    """Ids of the registered models (directories with a model card), sorted."""
    root = Path(registry_dir)
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
