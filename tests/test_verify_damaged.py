"""Damaged run directories and bundles: `mrv report verify` and `build` end in one message, exit 2, naming the file.

Each case damages its own copy; where the damage would be caught by the hashes alone, the manifest
(and the step records) are rewritten too, so that the damaged file reaches the code that parses it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from regions import region_config
from test_verify_bundle import SECTIONS, SPEC, _forge, _rehash, run_pipeline

from mrv.cli import main
from mrv.pipeline.layout import RunLayout, StepPlace
from mrv.report.bundle import make_bundle
from mrv.report.manifest import MANIFEST_NAME

#: Files inside keyed step directories, named ``{name}`` in the cases below and resolved through the run's
#: pointers (RunLayout) of the copy being damaged, so the cases spell no keyed directory.
STEP_FILES: dict[str, Callable[[RunLayout], Path]] = {
    "accounting": lambda lay: lay.accounting,
    "accounting_record": lambda lay: lay.step_record(StepPlace("accounting")),
    "cv_predictions": lambda lay: lay.model_dir / "cv_predictions.csv",
    "features": lambda lay: lay.model_dir / "features.csv",
    "model_card": lambda lay: lay.model_dir / "model_card.json",
    "sd_2024": lambda lay: lay.round_maps("2024")["sd"],
    "covariates_2021": lambda lay: lay.covariates("2021"),
    "sites_2021": lambda lay: lay.sites("2021"),
    "samples_2024": lambda lay: lay.samples_summary("2024"),
    "imagery_2024": lambda lay: lay.imagery_summary("2024"),
}


def _step_files(root: Path) -> dict[str, str]:
    """``{name: path relative to root}`` of :data:`STEP_FILES` in the run or bundle at ``root``."""
    layout = RunLayout(root)
    return {name: where(layout).relative_to(root).as_posix() for name, where in STEP_FILES.items()}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("damaged")
    config, _ = region_config(root, SPEC, name="damaged-test", output_dir=root / "run", sections=SECTIONS)
    run = run_pipeline(config)
    bundle = make_bundle(run, tmp_path_factory.mktemp("handover") / "bundle")
    return {"root": root, "run": run, "bundle": bundle}


def _json(rel: str, edit: Callable[[object], object]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        p = root / rel.format(**_step_files(root))
        p.write_text(json.dumps(edit(json.loads(p.read_text()))))

    return damage


def _bytes(rel: str, data: bytes | Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        p = root / rel.format(**_step_files(root))
        p.write_bytes(data(p.read_bytes()) if callable(data) else data)

    return damage


def _pop(path: list[str], key: str) -> Callable[[object], object]:
    def edit(d: object) -> object:
        target = d
        for k in path:
            target = target[k]  # type: ignore[index]
        target.pop(key)  # type: ignore[attr-defined]
        return d

    return edit


def _set(path: list[str], key: str, value: object) -> Callable[[object], object]:
    def edit(d: object) -> object:
        target = d
        for k in path:
            target = target[k]  # type: ignore[index]
        target[key] = value  # type: ignore[index]
        return d

    return edit


# (damage, then: "none" | "rehash" | "forge", expected text in the one message)
VERIFY_CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "manifest not JSON": (_bytes(MANIFEST_NAME, b"{not json"), "none", "manifest.json cannot be read as JSON"),
    "manifest a list": (_bytes(MANIFEST_NAME, b"[]"), "none", "manifest.json holds a JSON list"),
    "outputs a string": (_json(MANIFEST_NAME, _set([], "outputs", "report.json")), "none", "'outputs' must be a list"),
    "input sha256 a number": (
        _json(MANIFEST_NAME, lambda m: {**m, "inputs": [{**m["inputs"][0], "sha256": 5}, *m["inputs"][1:]]}),  # type: ignore[index,dict-item]
        "none",
        "'inputs' must be a list of objects with string 'path' and 'sha256'",
    ),  # fmt: skip
    "steps not a list": (_json(MANIFEST_NAME, _set([], "steps", {"a": 1})), "none", "'steps' must be a list"),
    "config_paths damaged": (
        _json(MANIFEST_NAME, _set([], "config_paths", [{"key": ["region", "nope", "x"], "path": "inputs/fields/x"}])),
        "none",
        "config_paths entry",
    ),  # fmt: skip
    "report.json binary": (
        _bytes("report.json", b"\x89PNG\r\n\x1a\n\x00\x00"),
        "rehash",
        "report.json cannot be read as JSON",
    ),
    "report.json fields a string": (_json("report.json", _set([], "fields", "F1")), "rehash", "fields is 'F1', expected a list"),
    "report.json project a number": (_json("report.json", _set([], "project", 3)), "rehash", "project is 3, expected an object (ProjectResult)"),
    "report.json a list": (_bytes("report.json", b"[1]"), "rehash", "report.json holds a JSON list"),
    "accounting without interval_confidence": (
        _json("{accounting}", _pop(["error_model"], "interval_confidence")),
        "forge",
        "{accounting} does not follow from",
    ),  # fmt: skip
    "accounting negative n_simulations": (
        _json("{accounting}", _set(["settings"], "n_simulations", -5)),
        "forge",
        "settings.n_simulations",
    ),
    "config negative n_simulations": (
        lambda root: (
            [
                p.write_text(p.read_text().replace("n_simulations: 60", "n_simulations: -60"))
                for p in (root / "inputs" / "config").glob("*.yaml")
            ]
            and None
        ),
        "rehash",
        "accounting.n_simulations must be at least 1",
    ),  # fmt: skip
    "config not YAML": (
        lambda root: (
            [p.write_text("rounds: [unclosed\n") for p in (root / "inputs" / "config").glob("*.yaml")] and None
        ),
        "rehash",
        "cannot be read as YAML",
    ),  # fmt: skip
    "garbage cv_predictions.csv": (
        _bytes("{cv_predictions}", b'x,"y\n\x00\x01"\n1,2,3,4\n'),
        "forge",
        "{cv_predictions} does not follow from",
    ),
    "garbage features.csv": (
        _bytes("{features}", b"\xff\xfe\x00garbage"),
        "forge",
        "{features} cannot be read as CSV",
    ),
    "model card not JSON": (
        _bytes("{model_card}", b"{"),
        "forge",
        "{model_card} cannot be read as JSON",
    ),
    "truncated map": (
        _bytes("{sd_2024}", lambda b: b[: len(b) // 3]),
        "forge",
        "{sd_2024} cannot be read as a GeoTIFF",
    ),
    "truncated covariates": (
        _bytes("{covariates_2021}", lambda b: b[:500]),
        "forge",
        "{covariates_2021} cannot be read as a GeoTIFF",
    ),
    "garbage sites.csv": (
        _bytes("{sites_2021}", b"\x00\x00\x00"),
        "forge",
        "{sites_2021} does not follow from",
    ),
    "samples.json a list": (
        _bytes("{samples_2024}", b"[]"),
        "forge",
        "{samples_2024} does not follow from",
    ),
    "imagery.json key removed": (_json("{imagery_2024}", _pop([], "items")), "forge", "{imagery_2024}"),
    "step record not JSON": (
        _bytes("{accounting_record}", b"\x00"),
        "rehash",
        "{accounting_record} cannot be read as JSON",
    ),
    "step record outputs a list": (
        _json("{accounting_record}", _set([], "outputs", [])),
        "rehash",
        "is not a step record",
    ),
}


@pytest.mark.parametrize("case", list(VERIFY_CASES))
def test_verify_damaged_bundle_one_message(
    case: str, made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damage, cover, expected = VERIFY_CASES[case]
    root = tmp_path / "bundle"
    shutil.copytree(made["bundle"], root)
    expected = expected.format(**_step_files(root))
    damage(root)
    if cover == "rehash":
        _rehash(root)
    elif cover == "forge":
        _forge(root)
    assert main(["report", "verify", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "Traceback" not in err
    assert expected in err, err


def test_verify_damaged_zip_and_signature(
    made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.make_archive(str(tmp_path / "b"), "zip", made["bundle"])
    data = (tmp_path / "b.zip").read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[: len(data) // 2] + data[-200:])
    assert main(["report", "verify", str(tmp_path / "cut.zip")]) == 2
    assert "cut.zip" in capsys.readouterr().err
    root = tmp_path / "signed"
    shutil.copytree(made["bundle"], root)
    (root / "manifest.sig").write_text("{garbage")
    (tmp_path / "k.pub").write_text("not a key")
    assert main(["report", "verify", "--hash-only", "--key", str(tmp_path / "k.pub"), str(root)]) == 2
    assert "manifest.sig is not a valid signature file" in capsys.readouterr().err


BUILD_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "manifest not JSON": (_bytes(MANIFEST_NAME, b"\x00{"), "manifest.json cannot be read as JSON"),
    "manifest a list": (_bytes(MANIFEST_NAME, b"[1, 2]"), "manifest.json holds a JSON list"),
    "outputs a string": (_json(MANIFEST_NAME, _set([], "outputs", "x")), "'outputs' must be a list"),
    "report.json binary": (_bytes("report.json", bytes(range(256))), "report.json cannot be read as JSON"),
    "report.json fields a string": (_json("report.json", _set([], "fields", "x")), "fields is 'x', expected a list"),
    "report.json a field is a list": (_json("report.json", _set([], "fields", [[1]])), "fields[0] is a list"),
    "report.json run.crs a number": (_json("report.json", _set(["run"], "crs", 32633)), "run.crs is 32633"),
    "report.json without run": (_json("report.json", _pop([], "run")), "report.json"),
    "report.json deductions an object": (
        _json("report.json", _set([], "deductions", {"credited": 1})),
        "deductions is an object, expected a list",
    ),
}


@pytest.mark.parametrize("case", list(BUILD_CASES))
def test_build_damaged_run_one_message(
    case: str, made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damage, expected = BUILD_CASES[case]
    root = tmp_path / "run"
    shutil.copytree(made["run"], root)
    damage(root)
    if case.startswith("report.json"):  # past the report.json hash check, into the renderer
        manifest = json.loads((root / MANIFEST_NAME).read_text())
        from mrv.fsio import sha256_file

        for e in manifest["outputs"]:
            if e["path"] == "report.json":
                e["sha256"] = sha256_file(root / "report.json")
        (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    code = main(["report", "build", str(root)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ")
    assert "Traceback" not in err
    assert expected in err, err
