"""Verification a stranger can run: a portable signed bundle, and 16+ tamperings each caught by a named link.

One pipeline run per module (the steps of ``mrv run`` with its step cache, without Prefect) on a small
generated region, bundled once; every test tampers with its own copy of the bundle, as an operator
covering their tracks would: re-hashing the manifest and, where it says so, rewriting the step records.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import rasterio
from regions import region_config

from mrv.cli import main
from mrv.errors import VerificationError
from mrv.fsio import sha256_file
from mrv.pipeline.layout import STEP_RECORD, RunLayout
from mrv.report.bundle import make_bundle
from mrv.report.manifest import MANIFEST_NAME
from mrv.report.signing import generate_keypair
from mrv.report.verify import verify
from mrv.synthetic import SceneSpec

SPEC = SceneSpec(seed=11, width_px=64, height_px=64, n_fields=4, n_lab_sites=30, n_crowd=10)
SECTIONS = {
    "imagery": {"tile_px": 64, "chunk_px": 64},
    "model": {"n_estimators": 20, "cv_block_size_m": 160},
    "accounting": {"n_simulations": 60},
    "dask": {"n_workers": 1},
}


def run_pipeline(config: Path) -> Path:
    """The steps of the regional-monitoring flow in order, each through the step cache (as the flow runs them)."""
    from mrv.config import load_config
    from mrv.pipeline import plan
    from mrv.report.build import build_report

    cfg = load_config(config)
    layout = RunLayout(cfg.output_dir.resolve())
    plan.run_steps(cfg, layout)
    build_report(cfg, layout)
    return layout.root


def _rel(root: Path, path: Path) -> str:
    """``path`` relative to the run or bundle ``root``, as the manifest and verify's messages spell it."""
    return path.relative_to(root).as_posix()


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The operator's machine: region, config, run directory, key pair; and a signed and an unsigned bundle."""
    root = tmp_path_factory.mktemp("operator")
    config, _ = region_config(root, SPEC, name="bundle-test", output_dir=root / "run", sections=SECTIONS)
    run = run_pipeline(config)
    generate_keypair(root / "keys" / "operator.key", root / "keys" / "operator.pub")
    handover = tmp_path_factory.mktemp("handover")
    shutil.copy(root / "keys" / "operator.pub", handover / "operator.pub")
    signed = make_bundle(run, handover / "run.zip", sign_key=root / "keys" / "operator.key")
    unsigned_dir = make_bundle(run, handover / "unsigned")
    return {
        "root": root,
        "run": run,
        "config": config,
        "signed": signed,
        "unsigned": unsigned_dir,
        "pub": handover / "operator.pub",
    }


@pytest.fixture
def bundle(operator: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the unsigned bundle directory to tamper with."""
    dst = tmp_path / "bundle"
    shutil.copytree(operator["unsigned"], dst)
    return dst


# ----------------------------------------------------------------------------- an operator covering tracks


def _rehash(root: Path) -> None:
    """Make every manifest entry match the files as they are now (config, inputs, outputs)."""
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    for e in [manifest["config"], *manifest["inputs"], *manifest["outputs"]]:
        p = root / e["path"]
        if p.is_file():
            e["sha256"], e["bytes"] = sha256_file(p), p.stat().st_size
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))


def _forge(root: Path) -> None:
    """Also rewrite every step record so that its outputs and consumed inputs have their current hashes."""
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: -len(p.parts))

    def bundle_file(original: str) -> Path | None:  # the bundle file whose path ends like the operator's
        best = [p for p in files if original.endswith("/" + p.relative_to(root).as_posix())]
        best += [p for p in files if "inputs" in p.parts and original.endswith("/" + "/".join(p.parts[-1:]))]
        return best[0] if best else None

    # A step's record is an input of the steps downstream of it: rewrite until every record agrees (a fixed point).
    for _ in range(20):
        changed = False
        for sidecar in sorted(root.rglob(STEP_RECORD)):
            record = json.loads(sidecar.read_text())
            for rel, e in record["outputs"].items():
                p = sidecar.parent / rel
                e["sha256"], e["bytes"] = sha256_file(p), p.stat().st_size
            for e in record["inputs"]:
                p = bundle_file(e["path"])
                if p is not None:
                    e["sha256"] = sha256_file(p)
            text = json.dumps(record, indent=2)
            if text != sidecar.read_text():
                sidecar.write_text(text)
                changed = True
        if not changed:
            break
    _rehash(root)


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def _scale_raster(path: Path, factor: float) -> None:
    with rasterio.open(path) as src:
        profile, arr, names, tags = src.profile, src.read(), src.descriptions, src.tags()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr * factor)
        dst.descriptions = names
        dst.update_tags(**tags)


def _fails(root: Path, *patterns: str, capsys: pytest.CaptureFixture[str]) -> str:
    """``mrv report verify`` exits 2 with one message matching every pattern, and no traceback."""
    assert main(["report", "verify", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert "Traceback" not in err, err
    for pattern in patterns:
        assert pattern in err, f"{pattern!r} not in:\n{err}"
    return err


# ----------------------------------------------------------------------------- clean bundle


def test_clean_signed_bundle_verifies_elsewhere_with_another_home(operator: dict[str, Path], tmp_path: Path) -> None:
    """A stranger's machine: another directory, another HOME, the operator's files out of reach."""
    stranger = tmp_path / "stranger"
    (stranger / "home").mkdir(parents=True)
    zip_copy = stranger / "received.zip"
    shutil.copy(operator["signed"], zip_copy)
    shutil.copy(operator["pub"], stranger / "operator.pub")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MRV_PROFILE", "XDG_"))}
    env.update(HOME=str(stranger / "home"), PYTHONUNBUFFERED="1")
    hidden = operator["root"].with_name(operator["root"].name + "-away")
    operator["root"].rename(hidden)  # the operator's file system is not there
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mrv.cli", "report", "verify", "received.zip", "--key", "operator.pub"],
            cwd=stranger, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    finally:
        hidden.rename(operator["root"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "signature valid (SHA256:" in out
    for link in ("samples[2021]", "imagery[2024]", "model", "maps[2024]", "accounting", "report", "rendering"):
        assert f"  {link} " in out
        assert "re-derived" in out
    assert "refitted byte for byte" in out
    assert "  outputs" in out
    assert "hashed only" in out
    assert "operator.key" not in out


def test_bundle_is_portable_and_lists_every_file(operator: dict[str, Path]) -> None:
    with zipfile.ZipFile(operator["signed"]) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read(MANIFEST_NAME))
        key_text = (operator["root"] / "keys" / "operator.key").read_bytes()
        assert not any(key_text in zf.read(n) for n in names), "the private key must never enter the bundle"
    listed = {
        manifest["config"]["path"],
        *(e["path"] for e in manifest["inputs"]),
        *(e["path"] for e in manifest["outputs"]),
    }
    assert names == listed | {MANIFEST_NAME, "manifest.sig"}
    assert manifest["kind"] == "bundle"
    assert not any(p.startswith(("/", "..")) for p in listed)
    assert "inputs/config/sample_formats/lab_wide.yaml" in names
    assert any(p.startswith("inputs/stac_catalog/") and p.endswith(".json") for p in names)  # the STAC items
    assert {s["step"] for s in manifest["steps"]} >= {"fit-model", "account", "predict-maps[2024]"}
    run_manifest = json.loads((operator["run"] / MANIFEST_NAME).read_text())
    assert run_manifest["config"]["path"] == "../bundle-test.yaml"  # relative to the run directory


# ----------------------------------------------------------------------------- signatures


def test_signature_unsigned_wrong_key_and_changed_manifest(
    operator: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fails_key = ["report", "verify", "--hash-only", "--key", str(operator["pub"])]
    assert main([*_fails_key, str(operator["unsigned"])]) == 2
    assert "is unsigned" in capsys.readouterr().err
    generate_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    assert main(["report", "verify", "--hash-only", "--key", str(tmp_path / "other.pub"), str(operator["signed"])]) == 2
    assert "signed by someone else" in capsys.readouterr().err
    signed_dir = tmp_path / "signed"
    with zipfile.ZipFile(operator["signed"]) as zf:
        zf.extractall(signed_dir)
    _edit_json(signed_dir / MANIFEST_NAME, lambda m: m.update(run_name="forged"))
    assert main([*_fails_key, str(signed_dir)]) == 2
    assert "does not match manifest.json" in capsys.readouterr().err
    assert main(["report", "verify", "--hash-only", str(operator["unsigned"])]) == 0
    assert "UNSIGNED" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the tamperings


def test_01_flipped_bit_in_a_map(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tif = RunLayout(bundle).round_maps("2024")["mean"]
    data = bytearray(tif.read_bytes())
    data[len(data) // 2] ^= 0x01
    tif.write_bytes(bytes(data))
    _fails(bundle, f"{_rel(bundle, tif)}: sha256 mismatch", capsys=capsys)


def test_02_report_edited_without_rehash(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit_json(bundle / "report.json", lambda r: r["project"]["soc_stock_t_ha"].update(mean=99.0))
    _fails(bundle, "report.json: sha256 mismatch", capsys=capsys)


def test_03_forged_project_number_rehashed(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit_json(
        bundle / "report.json",
        lambda r: r["project"]["soc_total_t"].update(mean=r["project"]["soc_total_t"]["mean"] * 1.01),
    )
    _rehash(bundle)
    _fails(bundle, "report.json does not follow from", "link 'report'", "project.soc_total_t.mean", capsys=capsys)


def test_04_edited_accounting_settings_with_forged_records(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    accounting = RunLayout(bundle).accounting
    _edit_json(accounting, lambda a: a["settings"].update(n_simulations=5000))
    _forge(bundle)
    _fails(bundle, f"{_rel(bundle, accounting)} does not follow from", "link 'accounting'", "settings.n_simulations",
           capsys=capsys)  # fmt: skip


def test_05_missing_file(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cv = RunLayout(bundle).model_dir / "cv_predictions.csv"
    cv.unlink()
    _fails(bundle, f"{_rel(bundle, cv)}: missing", capsys=capsys)


def test_06_credited_deduction_rerendered_with_build(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def credit(r: dict) -> None:
        r["deductions"][0]["credited"] = 250_000.0

    _edit_json(bundle / "report.json", credit)
    _rehash(bundle)
    assert main(["report", "build", str(bundle)]) == 0  # the project's own renderer, manifest entries updated
    assert "250,000" in (bundle / "report.html").read_text() or "250000" in (bundle / "report.html").read_text()
    capsys.readouterr()
    _fails(bundle, "report.json does not follow from", "deductions[0].credited", capsys=capsys)


def test_07_mean_maps_scaled_and_accounting_redone_with_project_code(
    bundle: Path, operator: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from mrv.pipeline.accounting import account
    from mrv.report.build import build_report
    from mrv.report.bundle import bundle_config
    from mrv.report.manifest import load_manifest

    cfg = bundle_config(bundle, load_manifest(bundle))
    layout = RunLayout(bundle)
    before = json.loads(layout.accounting.read_text())["project"]["soc_total_t"]["mean"]
    for rnd in ("2021", "2024"):
        _scale_raster(layout.round_maps(rnd)["mean"], 1.2)
    account(cfg, layout)  # the step function itself, rewriting accounting.json in its keyed directory
    manifest = (bundle / MANIFEST_NAME).read_text()
    build_report(cfg, layout)  # report, figures, rendering and a fresh run manifest ...
    (bundle / MANIFEST_NAME).write_text(manifest)  # ... put back as the bundle's, re-hashed
    _forge(bundle)
    after = json.loads(layout.accounting.read_text())["project"]["soc_total_t"]["mean"]
    assert after == pytest.approx(1.2 * before, rel=0.05)
    _fails(
        bundle,
        f"{_rel(bundle, layout.round_maps('2021')['mean'])} does not follow from",
        "link 'maps[2021]'",
        "band 'soc_stock_mean'",
        capsys=capsys,
    )


def test_08_cv_metrics_edited_in_card_and_report(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def better(d: dict) -> None:
        d["cv"]["rmse"] *= 0.5
        d["cv"]["r2"] = 0.95

    card = RunLayout(bundle).model_dir / "model_card.json"
    _edit_json(card, better)
    _edit_json(bundle / "report.json", lambda r: better(r["model"]))
    _forge(bundle)
    _fails(bundle, f"{_rel(bundle, card)} does not follow from", "link 'model'", "model_card.cv.", capsys=capsys)


def test_09_sample_counts_edited(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit_json(
        bundle / "report.json", lambda r: r["samples"]["lab"].update(accepted=r["samples"]["lab"]["accepted"] + 40)
    )
    _rehash(bundle)
    _fails(bundle, "report.json does not follow from", "samples.lab.accepted", capsys=capsys)


def test_10_sample_file_edited_with_its_input_hash(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (csv,) = (bundle / "inputs").glob("samples_2021_*/*.csv")
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines[:-3]))  # three inconvenient samples gone
    _rehash(bundle)
    _fails(
        bundle, "Step prepare-samples[2021] consumed", csv.name, "the input was changed after the run", capsys=capsys
    )
    _forge(bundle)  # the step record rewritten as well: the re-ingested sites give it away
    sites = _rel(bundle, RunLayout(bundle).sites("2021"))
    _fails(bundle, f"{sites} does not follow from", "link 'samples[2021]'", capsys=capsys)


def test_11_file_deleted_with_its_manifest_entry(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = _rel(bundle, RunLayout(bundle).rejected("2021"))
    (bundle / target).unlink()
    _edit_json(bundle / MANIFEST_NAME, lambda m: m.update(outputs=[e for e in m["outputs"] if e["path"] != target]))
    _fails(
        bundle,
        f"{target} is an output of step prepare-samples[2021]",
        "deleted together with its manifest entry",
        capsys=capsys,
    )


def test_12_emptied_inputs(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit_json(bundle / MANIFEST_NAME, lambda m: m.update(inputs=[]))
    for f in (bundle / "inputs").rglob("*"):
        if f.is_file() and "inputs/config/" not in f.as_posix():
            f.unlink()
    _fails(bundle, "lists no inputs", capsys=capsys)


def test_13_emptied_outputs(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit_json(bundle / MANIFEST_NAME, lambda m: m.update(outputs=[]))
    _fails(bundle, "lists no outputs", capsys=capsys)


def test_14_unlisted_file_added(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bundle / "maps" / "soc_stock_mean_alternative.tif").write_bytes(b"II*\x00")
    _fails(bundle, "maps/soc_stock_mean_alternative.tif: not listed in the manifest", capsys=capsys)


def test_15_forged_field_stock_rehashed(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit_json(bundle / "report.json", lambda r: r["fields"][2]["rounds"]["2024"]["soc_stock_t_ha"].update(mean=80.0))
    _rehash(bundle)
    _fails(bundle, "report.json does not follow from", "fields[2].rounds.2024.soc_stock_t_ha.mean", capsys=capsys)


def test_16_config_setting_edited_with_rehash(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cfg,) = (bundle / "inputs" / "config").glob("*.yaml")
    cfg.write_text(cfg.read_text().replace("n_simulations: 60", "n_simulations: 61"))
    _rehash(bundle)
    _fails(bundle, "Step account ran with other settings than the bundle's config", "n_simulations", capsys=capsys)


def test_17_covariates_forged_with_records(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    covariates = RunLayout(bundle).covariates("2024")
    _scale_raster(covariates, 1.05)
    _forge(bundle)
    _fails(bundle, f"{_rel(bundle, covariates)} does not follow from", "link 'imagery[2024]'", capsys=capsys)


def test_18_model_swapped_with_records(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mrv.modeling.registry import read_reference

    # the registry entry the run's model reference pins travels in the bundle under models/<model_id>/
    ref = read_reference(RunLayout(bundle).model_ref, registry_dir=bundle / "models")
    pkl = ref.model_path
    assert pkl.is_relative_to(bundle)
    pkl.write_bytes(pkl.read_bytes() + b"\x00")  # never unpickled by verify: compared with the refit
    _forge(bundle)
    _fails(bundle, f"{_rel(bundle, pkl)} does not follow from", "link 'model'", capsys=capsys)


def test_zip_bundle_with_path_traversal_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escaped.txt", "x")
    with pytest.raises(VerificationError, match="outside the bundle"):
        verify(evil)
    assert not (tmp_path / "escaped.txt").exists()


def test_run_directory_verifies_in_place_with_relative_paths(
    operator: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """``mrv report verify RUN_DIR`` (hashes, completeness, step chain) on the operator's own run directory."""
    assert main(["report", "verify", "--hash-only", str(operator["run"])]) == 0
    out = capsys.readouterr().out
    assert "(run): UNSIGNED" in out
    assert "steps chained" in out


def test_bundle_refuses_existing_output_and_a_run_that_fails_its_manifest(
    operator: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "bundle", str(operator["run"]), "-o", str(operator["signed"])]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["report", "bundle", str(operator["run"]), "-o", str(operator["run"] / "inside.zip")]) == 2
    assert "inside the run directory" in capsys.readouterr().err
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(operator["run"], moved)  # without its inputs beside it
    assert main(["report", "bundle", str(moved), "-o", str(tmp_path / "b.zip")]) == 2
    err = capsys.readouterr().err
    assert "../bundle-test.yaml: missing" in err
    assert not (tmp_path / "b.zip").exists()
