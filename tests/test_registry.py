"""The model registry: content-addressed entries, references a run keeps, the card schema, concurrency."""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from mrv.config import ModelConfig
from mrv.errors import CovariateMismatch, ModelError
from mrv.fsio import sha256_bytes, sha256_file
from mrv.modeling import registry
from mrv.modeling.model import SOCModel, make_forest
from mrv.modeling.registry import (
    CARD_FIELDS,
    ModelRef,
    card_json_schema,
    check_compatible,
    check_entry,
    check_registry_writable,
    copy_entry,
    list_models,
    load,
    load_reference,
    read_card,
    read_reference,
    reference,
    register,
    training_card,
    write_reference,
)

REPO = Path(__file__).resolve().parents[1]
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


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------------------------- entries


def test_round_trip(tmp_path: Path, model: SOCModel) -> None:
    ref = register(model, CARD, tmp_path)
    assert isinstance(ref, ModelRef)
    assert ref.entry_dir == tmp_path.resolve() / model.model_id
    assert ref.model_sha256 == sha256_file(ref.model_path)
    assert ref.card_sha256 == sha256_file(ref.card_path)
    loaded = load(model.model_id, tmp_path)
    assert loaded.model_id == model.model_id
    X = np.random.default_rng(1).normal(size=(20, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    card = read_card(model.model_id, tmp_path)
    assert card["model_id"] == model.model_id
    assert card["model_sha256"] == ref.model_sha256
    assert card["training_sha256"] == "ab" * 32
    assert card["covariates"] == list(COVS)
    assert card["calibration_margin_t_ha"] == 1.5
    assert card["confidence"] == 0.9
    assert card["spatial_cv"] == CARD["spatial_cv"]
    assert card["region"] == "demo"
    assert set(card["package_versions"]) >= {"numpy", "scikit-learn", "quantile-forest"}
    assert card["package_versions"]["numpy"] == np.__version__
    assert card["created"].endswith("+00:00")
    assert json.loads(ref.card_path.read_text()) == card
    assert reference(model.model_id, tmp_path) == ref


def test_default_registry_is_the_configured_one(
    tmp_path: Path, model: SOCModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MRV_MODEL_REGISTRY", str(tmp_path / "env-registry"))
    ref = register(model, CARD)
    assert ref.registry_dir == tmp_path / "env-registry"
    assert list_models() == [model.model_id]
    assert load(model.model_id).model_id == model.model_id


def test_register_is_idempotent_for_identical_bytes(tmp_path: Path, model: SOCModel) -> None:
    first = register(model, CARD, tmp_path)
    card_before = first.card_path.read_bytes()
    assert register(model, {"other": "card"}, registry_dir=tmp_path) == first  # the existing card is kept
    assert first.card_path.read_bytes() == card_before
    assert list_models(tmp_path) == [model.model_id]


def test_refuses_to_overwrite_with_different_content(tmp_path: Path, model: SOCModel) -> None:
    ref = register(model, CARD, tmp_path)
    before = ref.model_path.read_bytes()
    # Same id (same training hash, covariates, forest params and margin) but different pickled bytes.
    other = tiny_model(seed=0)
    other.metadata["note"] = "refit"
    assert other.model_id == model.model_id
    with pytest.raises(ModelError, match=r"already registered .* never overwritten"):
        register(other, CARD, tmp_path)
    assert ref.model_path.read_bytes() == before


def test_tampered_pickle_is_detected(tmp_path: Path, model: SOCModel) -> None:
    ref = register(model, CARD, tmp_path)
    _flip_byte(ref.model_path)
    with pytest.raises(ModelError, match=r"model\.pkl does not match its model card") as err:
        load(model.model_id, tmp_path)
    assert str(ref.model_path) in str(err.value)
    with pytest.raises(ModelError, match="replaced or modified after the run"):
        check_entry(ref)


def test_unknown_id_lists_known_models(tmp_path: Path, model: SOCModel) -> None:
    register(model, CARD, tmp_path)
    with pytest.raises(ModelError, match=rf"registered: {model.model_id}\. Point model\.registry_dir"):
        load("qrf-000000000000", tmp_path)
    for bad in ("../etc", ".hidden", ""):
        with pytest.raises(ModelError, match="not a model id"):
            load(bad, tmp_path)


def test_unpicklable_bytes_name_the_versions(tmp_path: Path, model: SOCModel) -> None:
    """A pickle that no longer loads (e.g. other library versions) is a ModelError, not a traceback."""
    ref = register(model, CARD, tmp_path)
    _replace_pickle(ref, b"not a pickle at all")
    with pytest.raises(ModelError, match=r"Cannot unpickle .*written with \{.*scikit-learn"):
        load(model.model_id, tmp_path)


def _replace_pickle(ref: ModelRef, blob: bytes) -> None:
    """Swap the entry's pickle and make the card agree (a consistent but wrong entry)."""
    card = json.loads(ref.card_path.read_text())
    ref.model_path.write_bytes(blob)
    ref.card_path.write_text(json.dumps({**card, "model_sha256": sha256_bytes(blob)}))


def test_entries_holding_something_else_are_refused(tmp_path: Path, model: SOCModel) -> None:
    import pickle

    ref = register(model, CARD, tmp_path)
    _replace_pickle(ref, pickle.dumps({"not": "a model"}))
    with pytest.raises(ModelError, match="holds a dict, not an SOC model"):
        load(model.model_id, tmp_path)
    other = tiny_model(margin=3.0)
    _replace_pickle(ref, pickle.dumps(other))
    with pytest.raises(ModelError, match=rf"holds model {other.model_id}, not {model.model_id}.*Move it back"):
        load(model.model_id, tmp_path)


def test_missing_training_hash_is_refused(tmp_path: Path) -> None:
    m = tiny_model(sha="")
    with pytest.raises(ModelError, match="training_sha256"):
        register(m, CARD, tmp_path)
    assert list_models(tmp_path) == []


def test_listing(tmp_path: Path, model: SOCModel) -> None:
    assert list_models(tmp_path / "nowhere") == []
    other = tiny_model(margin=2.0)
    ids = {register(m, CARD, tmp_path).model_id for m in (model, other)}
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / ".qrf-partial.tmp").mkdir()
    assert list_models(tmp_path) == sorted(ids)
    assert len(ids) == 2


def test_entries_are_readable_by_others(tmp_path: Path, model: SOCModel) -> None:
    """Staging via mkdir (umask) and chmod: not the 0700/0600 of mkdtemp/mkstemp."""
    old = os.umask(0o022)
    try:
        ref = register(model, CARD, tmp_path)
    finally:
        os.umask(old)
    assert ref.entry_dir.stat().st_mode & 0o777 == 0o755
    assert ref.model_path.stat().st_mode & 0o777 == ref.card_path.stat().st_mode & 0o777 == 0o644


def test_card_must_be_json(tmp_path: Path, model: SOCModel) -> None:
    with pytest.raises(ModelError, match="JSON"):
        register(model, {"bad": object()}, tmp_path)


def test_numpy_values_in_card_are_stored(tmp_path: Path, model: SOCModel) -> None:
    register(model, {"rmse": np.float64(4.5), "folds": np.arange(3)}, tmp_path)
    card = read_card(model.model_id, tmp_path)
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
    gbm = calibrated(
        fit_estimator(cfg, X, y, np.ones(80), COVS), margin_t_ha=1.0, metadata={"training_sha256": "cd" * 32}
    )
    ref = register(gbm, CARD, tmp_path)
    loaded = load(gbm.model_id, tmp_path)
    card = read_card(gbm.model_id, tmp_path)
    assert isinstance(loaded, GBMQuantileModel)
    assert ref.model_id.startswith("gbm-")
    assert card["model_kind"] == "gbm_quantile"
    assert card["estimator_params"]["lower.quantile"] == pytest.approx(0.05)
    np.testing.assert_array_equal(loaded.predict(X), gbm.predict(X))


# --------------------------------------------------------------------------------------------- concurrency


def test_concurrent_registration_of_one_id_all_succeed(tmp_path: Path, model: SOCModel) -> None:
    """Eight registrations of the same model started together: one entry, identical references, no debris."""
    start = threading.Barrier(8)
    refs: list[ModelRef] = []
    errors: list[BaseException] = []

    def worker() -> None:
        start.wait()
        try:
            refs.append(register(model, CARD, tmp_path))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(refs) == 8
    assert len(set(refs)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [model.model_id]
    check_entry(refs[0])


def _win_race_with(entry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make another process's entry appear between the existence check and our rename."""
    real_rename = os.rename

    def rename(src: str | Path, dst: str | Path) -> None:
        if not Path(dst).exists():
            shutil.copytree(entry, dst)
        real_rename(src, dst)

    monkeypatch.setattr(registry.os, "rename", rename)


def test_lost_race_against_identical_entry_succeeds(tmp_path: Path, model: SOCModel, monkeypatch) -> None:
    winner = register(model, {"by": "the other process"}, tmp_path / "elsewhere")
    _win_race_with(winner.entry_dir, monkeypatch)
    ref = register(model, CARD, tmp_path / "reg")
    assert read_card(model.model_id, tmp_path / "reg")["by"] == "the other process"  # the winner's card is kept
    assert ref.card_sha256 == winner.card_sha256
    assert ref.model_sha256 == winner.model_sha256
    assert sorted(p.name for p in (tmp_path / "reg").iterdir()) == [model.model_id]  # staging removed


def test_lost_race_against_different_bytes_is_an_error(tmp_path: Path, model: SOCModel, monkeypatch) -> None:
    other = tiny_model(seed=0)
    other.metadata["note"] = "refit"
    winner = register(other, CARD, tmp_path / "elsewhere")
    _win_race_with(winner.entry_dir, monkeypatch)
    with pytest.raises(ModelError, match="already registered"):
        register(model, CARD, tmp_path / "reg")
    assert sorted(p.name for p in (tmp_path / "reg").iterdir()) == [model.model_id]


# --------------------------------------------------------------------------------------------- references


def test_reference_round_trip_and_load(tmp_path: Path, model: SOCModel) -> None:
    ref = register(model, CARD, tmp_path / "reg")
    path = write_reference(tmp_path / "run" / "model_ref.json", ref)
    raw = json.loads(path.read_text())
    assert raw == {
        "ref_version": 1,
        "model_id": model.model_id,
        "registry_dir": str(tmp_path / "reg"),
        "model_sha256": ref.model_sha256,
        "card_sha256": ref.card_sha256,
    }
    back = read_reference(path)
    assert back == ref
    assert load_reference(back).model_id == model.model_id


def test_reference_pins_the_bytes(tmp_path: Path, model: SOCModel) -> None:
    """An entry replaced after the run (removed and re-registered with other bytes) is refused for that run."""
    ref = register(model, CARD, tmp_path)
    shutil.rmtree(ref.entry_dir)
    other = tiny_model(seed=0)
    other.metadata["note"] = "refit"
    register(other, CARD, tmp_path)
    with pytest.raises(ModelError, match=r"run's model reference records .* replaced after the run"):
        load(model.model_id, tmp_path, expected_sha256=ref.model_sha256)
    with pytest.raises(ModelError, match="model_card.json has SHA-256 .* card was modified after the run"):
        load_reference(ref)
    assert load(model.model_id, tmp_path).model_id == model.model_id  # without the pin it is a valid entry


def test_bad_references_are_refused(tmp_path: Path, model: SOCModel) -> None:
    ref = register(model, CARD, tmp_path / "reg")
    path = write_reference(tmp_path / "model_ref.json", ref)
    with pytest.raises(ModelError, match="missing: the run has no model reference"):
        read_reference(tmp_path / "nope.json")
    raw = json.loads(path.read_text())
    for change, match in (
        ({"ref_version": 2}, "not a version-1 model reference"),
        ({"model_sha256": "xyz"}, "model_sha256 missing or malformed"),
        ({"card_sha256": None}, "card_sha256 missing or malformed"),
        ({"model_id": "../x"}, "not a model id"),
    ):
        path.write_text(json.dumps({**raw, **change}))
        with pytest.raises(ModelError, match=match):
            read_reference(path)
    path.write_text("{")
    with pytest.raises(ModelError, match="Cannot read the model reference"):
        read_reference(path)


def test_reference_to_a_relative_or_moved_registry(tmp_path: Path, model: SOCModel) -> None:
    ref = register(model, CARD, tmp_path / "run" / "models")
    path = tmp_path / "run" / "model" / "model_ref.json"
    write_reference(path, replace(ref, registry_dir=Path("../models")))
    assert read_reference(path) == ref  # relative to the reference's directory
    moved = copy_entry(ref, tmp_path / "bundle" / "models")
    assert moved == replace(ref, registry_dir=(tmp_path / "bundle" / "models").resolve())
    assert read_reference(path, registry_dir=tmp_path / "bundle" / "models") == moved
    assert moved.model_path.read_bytes() == ref.model_path.read_bytes()
    assert moved.card_path.read_bytes() == ref.card_path.read_bytes()
    assert copy_entry(ref, tmp_path / "bundle" / "models") == moved  # again: the identical copy is kept
    check_entry(moved)
    assert load_reference(moved).model_id == model.model_id


def test_copy_of_a_damaged_entry_is_refused(tmp_path: Path, model: SOCModel) -> None:
    ref = register(model, CARD, tmp_path / "reg")
    card = json.loads(ref.card_path.read_text())
    ref.card_path.write_text(json.dumps({**card, "region": "elsewhere"}))
    with pytest.raises(ModelError, match=r"model_card\.json has SHA-256 .* replaced or modified after the run"):
        copy_entry(ref, tmp_path / "bundle")
    assert not (tmp_path / "bundle" / model.model_id).exists()


# --------------------------------------------------------------------------------------------- the card schema


def test_published_schema_is_the_generated_one() -> None:
    published = json.loads((REPO / "models" / "card.schema.json").read_text(encoding="utf-8"))
    assert published == card_json_schema(), "regenerate it: mrv models schema -o models/card.schema.json"
    jsonschema.Draft202012Validator.check_schema(published)


def test_schema_requires_exactly_what_the_registry_writes(tmp_path: Path, model: SOCModel) -> None:
    ref = register(model, {}, tmp_path)
    card = read_card(ref.model_id, tmp_path)
    registry_fields = {f.name for f in CARD_FIELDS if f.written_by == "registry"}
    assert set(card) == registry_fields
    assert set(card_json_schema()["required"]) == registry_fields
    validator = jsonschema.Draft202012Validator(card_json_schema(), format_checker=jsonschema.FormatChecker())
    validator.validate(card)
    for broken in ({**card, "model_sha256": "abc"}, {**card, "card_version": 2}, {k: card[k] for k in list(card)[1:]}):
        assert not validator.is_valid(broken)


def test_metrics_schema_follows_validation_metrics() -> None:
    import dataclasses

    from mrv.modeling.validation import Metrics

    props = dict(card_json_schema()["properties"]["cv_by_source"]["additionalProperties"]["properties"])
    assert list(props) == [f.name for f in dataclasses.fields(Metrics)]


@pytest.fixture(scope="module")
def trained():
    """A real training result (spatial CV, CQR calibration) on 150 synthetic sites, 2 sources."""
    from mrv.modeling.train import train

    rng = np.random.default_rng(7)
    n = 150
    x, y = rng.uniform(0, 6000, n), rng.uniform(0, 6000, n)
    cov = np.column_stack([np.sin(x / 900), np.cos(y / 1300), np.sin((x + y) / 2000)])
    stock = 45 + 8 * cov[:, 0] + 5 * cov[:, 1] * cov[:, 2] + rng.normal(0, 2, n)
    table = pd.DataFrame(cov, columns=list(COVS)).assign(
        x=x, y=y, soc_stock_t_ha=stock, soc_stock_sd_t_ha=1.5, source=np.where(np.arange(n) % 5 == 0, "crowd", "lab")
    )
    return train(table, list(COVS), ModelConfig(n_estimators=20, cv_folds=3, cv_block_size_m=1000.0))


def test_a_pipeline_card_validates(tmp_path: Path, trained) -> None:
    card_in = training_card(trained)
    assert set(card_in) == {f.name for f in CARD_FIELDS if f.written_by == "pipeline"}
    ref = register(trained.model, card_in, tmp_path)
    card = read_card(ref.model_id, tmp_path)
    jsonschema.Draft202012Validator(card_json_schema(), format_checker=jsonschema.FormatChecker()).validate(card)
    assert card["cv"]["rmse"] == trained.spatial_cv.rmse
    assert card["calibration"]["margin_t_ha"] == card["calibration_margin_t_ha"] == trained.model.margin_t_ha
    assert card["kind"] == "quantile_regression_forest"


def test_readme_documents_every_card_field() -> None:
    readme = (REPO / "models" / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip().strip("`"): line for line in readme.splitlines() if line.startswith("| `")}
    for f in CARD_FIELDS:
        assert f.name in rows, f"models/README.md has no row for card field {f.name}"
        cells = [c.strip() for c in rows[f.name].split("|")]
        assert (cells[3], cells[4]) == (f.unit, f.written_by), f"models/README.md row of {f.name}: {cells}"
    assert f"`card_version` {registry.CARD_VERSION}" in readme


def test_registry_writability_is_checked_before_any_work(tmp_path: Path) -> None:
    assert check_registry_writable(tmp_path / "new" / "models") == tmp_path / "new" / "models"  # created on use
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match=r"file is not a directory\. Set model\.registry_dir"):
        check_registry_writable(tmp_path / "file" / "models")


def test_read_only_registry_is_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    if os.access(ro, os.W_OK):  # root ignores permissions
        pytest.skip("running as root: directory permissions are not enforced")
    with pytest.raises(ModelError, match="ro is not writable"):
        check_registry_writable(ro / "models")
