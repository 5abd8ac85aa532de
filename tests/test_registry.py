from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mrv.config import ModelConfig
from mrv.errors import CovariateMismatch, ModelError
from mrv.modeling.model import SOCModel, make_forest
from mrv.modeling.registry import CARD_FILE, MODEL_FILE, check_compatible, list_models, load, read_card, register

COVS = ("blue", "red", "nir")


def tiny_model(*, margin: float = 1.5, seed: int = 0, sha: str = "ab" * 32) -> SOCModel:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(50, len(COVS))).astype("float32")
    y = 40 + 5 * X[:, 0] + rng.normal(size=50)
    forest = make_forest(ModelConfig(n_estimators=10, seed=seed)).fit(X, y)
    return SOCModel(forest, COVS, confidence=0.9, margin_t_ha=margin, metadata={"training_sha256": sha, "n_train": 50})


@pytest.fixture(scope="module")
def model() -> SOCModel:
    return tiny_model()


CARD = {"spatial_cv": {"rmse": 4.2, "r2": 0.61, "coverage": 0.91}, "random_cv": {"rmse": 3.1}, "region": "demo"}


def test_round_trip(tmp_path: Path, model: SOCModel) -> None:
    where = register(model, CARD, registry_dir=tmp_path)
    assert where == tmp_path / model.model_id
    assert (where / MODEL_FILE).is_file()
    assert (where / CARD_FILE).is_file()
    loaded, card = load(model.model_id, registry_dir=tmp_path)
    assert loaded.model_id == model.model_id
    X = np.random.default_rng(1).normal(size=(20, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert card["model_id"] == model.model_id
    assert card["training_sha256"] == "ab" * 32
    assert card["covariates"] == list(COVS)
    assert card["calibration_margin_t_ha"] == 1.5
    assert card["confidence"] == 0.9
    assert card["spatial_cv"] == CARD["spatial_cv"]
    assert card["region"] == "demo"
    assert set(card["package_versions"]) >= {"numpy", "scikit-learn", "quantile-forest"}
    assert card["package_versions"]["numpy"] == np.__version__
    assert card["created"].endswith("+00:00")
    assert card == read_card(model.model_id, registry_dir=tmp_path)
    assert json.loads((where / CARD_FILE).read_text()) == card


def test_register_is_idempotent_for_identical_bytes(tmp_path: Path, model: SOCModel) -> None:
    first = register(model, CARD, registry_dir=tmp_path)
    card_before = (first / CARD_FILE).read_bytes()
    assert register(model, {"other": "card"}, registry_dir=tmp_path) == first
    assert (first / CARD_FILE).read_bytes() == card_before
    assert list_models(tmp_path) == [model.model_id]


def test_refuses_to_overwrite_with_different_content(tmp_path: Path, model: SOCModel) -> None:
    where = register(model, CARD, registry_dir=tmp_path)
    before = (where / MODEL_FILE).read_bytes()
    # Same id (same training hash, covariates, forest params and margin) but different pickled bytes.
    other = tiny_model(seed=0)
    other.metadata["note"] = "refit"
    assert other.model_id == model.model_id
    with pytest.raises(ModelError, match=r"already registered .* never overwritten"):
        register(other, CARD, registry_dir=tmp_path)
    assert (where / MODEL_FILE).read_bytes() == before


def test_tampered_pickle_is_detected(tmp_path: Path, model: SOCModel) -> None:
    where = register(model, CARD, registry_dir=tmp_path)
    pkl = where / MODEL_FILE
    data = bytearray(pkl.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pkl.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model\.pkl does not match its model card") as err:
        load(model.model_id, registry_dir=tmp_path)
    assert str(pkl) in str(err.value)


def test_unknown_id_lists_known_models(tmp_path: Path, model: SOCModel) -> None:
    register(model, CARD, registry_dir=tmp_path)
    with pytest.raises(ModelError, match=model.model_id):
        load("qrf-000000000000", registry_dir=tmp_path)
    with pytest.raises(ModelError, match="not a model id"):
        load("../etc", registry_dir=tmp_path)


def test_missing_training_hash_is_refused(tmp_path: Path) -> None:
    m = tiny_model(sha="")
    with pytest.raises(ModelError, match="training_sha256"):
        register(m, CARD, registry_dir=tmp_path)
    assert list_models(tmp_path) == []


def test_listing(tmp_path: Path, model: SOCModel) -> None:
    assert list_models(tmp_path / "nowhere") == []
    other = tiny_model(margin=2.0)
    ids = {register(m, CARD, registry_dir=tmp_path).name for m in (model, other)}
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / ".qrf-partial.tmp").mkdir()
    assert list_models(tmp_path) == sorted(ids)
    assert len(ids) == 2


def test_card_must_be_json(tmp_path: Path, model: SOCModel) -> None:
    with pytest.raises(ModelError, match="JSON"):
        register(model, {"bad": object()}, registry_dir=tmp_path)


def test_numpy_values_in_card_are_stored(tmp_path: Path, model: SOCModel) -> None:
    register(model, {"rmse": np.float64(4.5), "folds": np.arange(3)}, registry_dir=tmp_path)
    card = read_card(model.model_id, registry_dir=tmp_path)
    assert card["rmse"] == 4.5
    assert card["folds"] == [0, 1, 2]


def test_check_compatible() -> None:
    card = {"model_id": "qrf-x", "covariates": list(COVS)}
    check_compatible(card, COVS)
    with pytest.raises(CovariateMismatch, match=r"missing \['nir'\]; unexpected \['swir16'\]"):
        check_compatible(card, ["blue", "red", "swir16"])
    with pytest.raises(CovariateMismatch, match=r"missing \['nir'\]\. Rebuild"):
        check_compatible(card, ["blue", "red"])
    with pytest.raises(CovariateMismatch, match="different order"):
        check_compatible(card, ["red", "blue", "nir"])


def test_round_trip_of_the_gbm_kind(tmp_path: Path) -> None:
    from mrv.modeling.model import GBMQuantileModel, calibrated, fit_estimator

    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, len(COVS))).astype("float32")
    y = 40 + 5 * X[:, 0] + rng.normal(size=80)
    cfg = ModelConfig(kind="gbm_quantile", gbm_max_iter=5)
    gbm = calibrated(fit_estimator(cfg, X, y, np.ones(80), COVS), margin_t_ha=1.0, metadata={"training_sha256": "cd" * 32})
    where = register(gbm, CARD, registry_dir=tmp_path)
    loaded, card = load(gbm.model_id, registry_dir=tmp_path)
    assert isinstance(loaded, GBMQuantileModel)
    assert where.name.startswith("gbm-")
    assert card["model_kind"] == "gbm_quantile"
    assert card["estimator_params"]["lower.quantile"] == pytest.approx(0.05)
    np.testing.assert_array_equal(loaded.predict(X), gbm.predict(X))
