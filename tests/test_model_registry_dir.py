"""Where the model registry is (``model.registry_dir``, resolved at config load) and ``mrv models``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mrv import config as config_module
from mrv.cli import main
from mrv.config import MODEL_REGISTRY_ENV, ModelConfig, default_model_registry, parse_config
from mrv.config_schema import run_config_schema
from mrv.modeling.model import SOCModel, make_forest
from mrv.modeling.registry import register

REPO = Path(__file__).resolve().parents[1]


def _raw(**model: object) -> dict[str, object]:
    return {
        "name": "t",
        "region": {"fields": "f.geojson", "crs": "EPSG:32633", "resolution_m": 10},
        "imagery": {"source": "local", "collection": "s2", "catalog": "c.json"},
        "rounds": [{"name": "r1", "start": "2021-03-01", "end": "2021-10-31"}],
        **({"model": model} if model else {}),
    }


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(MODEL_REGISTRY_ENV, raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    return monkeypatch


def _installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Pretend mrv/config.py sits in site-packages (no pyproject.toml beside a models/ directory)."""
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    (site / "mrv").mkdir(parents=True)
    (site / "models").mkdir()  # some other distribution's top-level directory: still not a checkout
    monkeypatch.setattr(config_module, "__file__", str(site / "mrv" / "config.py"))
    return site


def test_environment_variable_comes_first(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    no_env.setenv(MODEL_REGISTRY_ENV, str(tmp_path / "shared"))
    assert default_model_registry() == tmp_path / "shared"
    no_env.chdir(tmp_path)
    no_env.setenv(MODEL_REGISTRY_ENV, "rel/models")
    assert default_model_registry() == tmp_path / "rel" / "models"  # relative to the working directory


def test_checkout_uses_its_models_directory(no_env: pytest.MonkeyPatch) -> None:
    assert (REPO / "pyproject.toml").is_file()
    assert (REPO / "models" / "README.md").is_file()  # the directory exists in a clone
    assert default_model_registry() == REPO / "models"


def test_installed_package_never_writes_into_site_packages(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    site = _installed(no_env, tmp_path)
    no_env.setenv("HOME", str(tmp_path / "home"))
    got = default_model_registry()
    assert got == tmp_path / "home" / ".local" / "share" / "mrv" / "models"
    assert not got.is_relative_to(site)
    no_env.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_model_registry() == tmp_path / "xdg" / "mrv" / "models"
    no_env.setenv("XDG_DATA_HOME", "relative/xdg")  # the XDG spec: relative values are ignored
    assert default_model_registry() == tmp_path / "home" / ".local" / "share" / "mrv" / "models"


def test_config_resolves_the_registry_at_load(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    src = tmp_path / "cfgs" / "run.yaml"
    assert parse_config(_raw(), source_path=src).model.registry_dir == REPO / "models"
    assert parse_config(_raw(registry_dir=None), source_path=src).model.registry_dir == REPO / "models"
    no_env.setenv(MODEL_REGISTRY_ENV, str(tmp_path / "env"))
    cfg = parse_config(_raw(), source_path=src)
    assert cfg.model.registry_dir == tmp_path / "env"
    # a configured path wins and is relative to the config file, not to the working directory
    no_env.chdir(REPO)
    cfg = parse_config(_raw(registry_dir="../team/models"), source_path=src)
    assert cfg.model.registry_dir == tmp_path / "team" / "models"
    assert cfg.model.registry_dir.is_absolute()
    with pytest.raises(AttributeError):
        cfg.model.registry_dir = tmp_path  # type: ignore[misc]  # frozen
    assert ModelConfig().registry_dir == tmp_path / "env"  # constructed in code: the same default


def test_schema_has_the_key_but_no_machine_specific_default() -> None:
    prop = run_config_schema()["properties"]["model"]["properties"]["registry_dir"]
    assert prop["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert "default" not in prop
    assert "MRV_MODEL_REGISTRY" in prop["description"]
    assert str(REPO) not in json.dumps(run_config_schema())


# --------------------------------------------------------------------------------------------- mrv models


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    reg = tmp_path_factory.mktemp("reg")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2)).astype("float32")
    forest = make_forest(ModelConfig(n_estimators=5)).fit(X, 40 + X[:, 0])
    model = SOCModel(forest, ("red", "nir"), confidence=0.9, margin_t_ha=1.25,
                     metadata={"training_sha256": "ef" * 32, "n_train": 40})  # fmt: skip
    card = {"n_train": 40, "cv": {"rmse": 4.25, "picp_90": 0.9125, "r2": 0.5, "mean_width_90": 14.0}}
    return reg, register(model, card, reg).model_id


def test_models_list_and_show(registered: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    reg, model_id = registered
    assert main(["models", "list", "--registry", str(reg)]) == 0
    out = capsys.readouterr().out
    assert f"1 model(s) in {reg}" in out
    line = next(x for x in out.splitlines() if x.startswith(model_id))
    assert line.split() == [model_id, "qrf", line.split()[2], "40", "2", "4.25", "0.912"]
    assert main(["models", "list", "--registry", str(reg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"registry_dir": str(reg), "models": [model_id]}
    assert main(["models", "show", model_id, "--registry", str(reg)]) == 0
    out = capsys.readouterr().out
    assert "(matches the card)" in out
    assert "RMSE 4.25 t C/ha" in out
    assert "covariates   red, nir" in out
    assert main(["models", "show", model_id, "--registry", str(reg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_id"] == model_id


def test_models_commands_report_mistakes(
    registered: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg, model_id = registered
    assert main(["models", "show", "qrf-000000000000", "--registry", str(reg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No model 'qrf-000000000000'")
    assert f"registered: {model_id}" in err
    assert "Traceback" not in err
    assert main(["models", "list", "--registry", str(tmp_path / "empty")]) == 0
    assert "no models registered in" in capsys.readouterr().out


def test_models_schema_writes_the_published_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "card.schema.json"
    assert main(["models", "schema", "-o", str(out)]) == 0
    assert out.read_bytes() == (REPO / "models" / "card.schema.json").read_bytes()
