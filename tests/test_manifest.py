from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from mrv.errors import MRVError, VerificationError
from mrv.fsio import sha256_file
from mrv.report.manifest import (
    Mismatch,
    VerifyResult,
    build_manifest,
    raise_on_mismatch,
    verify_manifest,
    write_manifest,
)


@pytest.fixture
def run(tmp_path: Path) -> dict[str, Path]:
    """A run directory with three outputs and inputs (one a nested directory) outside it."""
    run_dir = tmp_path / "runs" / "demo"
    (run_dir / "maps").mkdir(parents=True)
    (run_dir / "tables").mkdir()
    (run_dir / "report.json").write_text('{"schema_version": 1}\n')
    (run_dir / "maps" / "soc_stock_mean.tif").write_bytes(bytes(range(256)) * 40)
    (run_dir / "tables" / "fields.csv").write_text("field_id,soc\nF001,55.1\n")

    inputs = tmp_path / "inputs"
    stac = inputs / "stac"
    (stac / "items" / "b").mkdir(parents=True)
    (stac / "catalog.json").write_text('{"type": "Catalog"}')
    (stac / "items" / "b" / "item2.json").write_text('{"id": "b"}')
    (stac / "items" / "a.json").write_text('{"id": "a"}')
    samples = inputs / "samples.csv"
    samples.write_text("sample_id,soc\nS1,1.2\n")
    config = tmp_path / "configs" / "demo.yaml"
    config.parent.mkdir()
    config.write_text("name: demo\n")
    return {"run_dir": run_dir, "stac": stac, "samples": samples, "config": config}


def _write(run: dict[str, Path], **kwargs: object) -> Path:
    return write_manifest(
        run["run_dir"],
        inputs={"samples": run["samples"], "stac_catalog": run["stac"]},
        config=run["config"],
        outputs=[Path("report.json"), Path("maps"), run["run_dir"] / "tables" / "fields.csv"],
        **kwargs,  # type: ignore[arg-type]
    )


def _load(run: dict[str, Path]) -> dict[str, object]:
    data = json.loads((run["run_dir"] / "manifest.json").read_text())
    assert isinstance(data, dict)
    return data


def test_sha256_file_matches_hashlib_across_chunk_boundary(tmp_path: Path) -> None:
    payload = bytes(range(256)) * (5 * 1024 + 3)  # > 1 MiB, not a multiple of the chunk
    path = tmp_path / "big.bin"
    path.write_bytes(payload)
    assert sha256_file(path) == hashlib.sha256(payload).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()


def test_manifest_contents(run: dict[str, Path]) -> None:
    path = _write(run, extra={"run_name": "demo"})
    assert path == run["run_dir"].resolve() / "manifest.json"
    data = _load(run)
    assert data["schema_version"] == 2
    assert data["kind"] == "run"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(data["created_utc"]))
    assert data["run_name"] == "demo"
    assert {"git_revision", "git_dirty", "python", "platform"} <= set(data)
    packages = data["packages"]
    assert isinstance(packages, dict)
    assert "numpy" in packages
    assert "GDAL" in packages
    config = data["config"]
    assert config == {
        "path": "../../configs/demo.yaml",  # relative to the run directory
        "sha256": hashlib.sha256(b"name: demo\n").hexdigest(),
        "bytes": len(b"name: demo\n"),
    }
    assert data["steps"] == []  # no step records among these outputs

    outputs = data["outputs"]
    assert isinstance(outputs, list)
    assert [o["path"] for o in outputs] == [
        "maps/soc_stock_mean.tif",
        "report.json",
        "tables/fields.csv",
    ]
    tif = run["run_dir"] / "maps" / "soc_stock_mean.tif"
    assert outputs[0]["bytes"] == tif.stat().st_size == 256 * 40
    assert outputs[0]["sha256"] == hashlib.sha256(tif.read_bytes()).hexdigest()


def test_directory_input_is_hashed_file_by_file(run: dict[str, Path]) -> None:
    _write(run)
    inputs = _load(run)["inputs"]
    assert isinstance(inputs, list)
    stac = run["stac"].resolve()
    stac_entries = [i for i in inputs if i["role"] == "stac_catalog"]
    assert [e["path"] for e in stac_entries] == [
        "../../inputs/stac/catalog.json",
        "../../inputs/stac/items/a.json",
        "../../inputs/stac/items/b/item2.json",
    ]
    assert [e["member"] for e in stac_entries] == ["catalog.json", "items/a.json", "items/b/item2.json"]
    for entry in stac_entries:
        content = (run["run_dir"] / entry["path"]).read_bytes()
        assert (run["run_dir"] / entry["path"]).resolve().is_relative_to(stac)
        assert entry["sha256"] == hashlib.sha256(content).hexdigest()
        assert entry["bytes"] == len(content)
    (samples,) = [i for i in inputs if i["role"] == "samples"]
    assert samples["path"] == "../../inputs/samples.csv"


def test_manifest_never_lists_itself(run: dict[str, Path]) -> None:
    _write(run)
    # Second write with the whole run directory (now containing manifest.json) as output.
    write_manifest(run["run_dir"], inputs={"samples": run["samples"]}, config=run["config"], outputs=[run["run_dir"]])
    outputs = _load(run)["outputs"]
    assert isinstance(outputs, list)
    paths = [o["path"] for o in outputs]
    assert "manifest.json" not in paths
    assert "report.json" in paths
    assert verify_manifest(run["run_dir"]).ok


def test_no_environment_variables_recorded(run: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRV_TEST_SECRET_TOKEN", "hunter2-do-not-record")
    _write(run)
    text = (run["run_dir"] / "manifest.json").read_text()
    assert "hunter2-do-not-record" not in text
    assert "MRV_TEST_SECRET_TOKEN" not in text


def test_verify_passes_on_untouched_run(run: dict[str, Path]) -> None:
    _write(run)
    result = verify_manifest(run["run_dir"])
    # config + samples + 3 STAC files + 3 outputs
    assert result == VerifyResult(ok=True, checked=8, mismatches=())
    raise_on_mismatch(result)  # no-op


def test_verify_survives_moving_the_run_directory(run: dict[str, Path], tmp_path: Path) -> None:
    _write(run)
    moved = tmp_path / "archive" / "demo"
    shutil.copytree(run["run_dir"], moved)
    shutil.rmtree(run["run_dir"])
    assert verify_manifest(moved).ok


def test_flipped_byte_in_output_is_named(run: dict[str, Path]) -> None:
    _write(run)
    tif = run["run_dir"] / "maps" / "soc_stock_mean.tif"
    payload = bytearray(tif.read_bytes())
    payload[100] ^= 0x01
    tif.write_bytes(bytes(payload))

    result = verify_manifest(run["run_dir"])
    assert not result.ok
    assert result.checked == 8
    (mismatch,) = result.mismatches
    assert mismatch.path == "maps/soc_stock_mean.tif"
    assert mismatch.reason == "sha256 mismatch"
    assert mismatch.actual == hashlib.sha256(bytes(payload)).hexdigest()
    assert mismatch.expected != mismatch.actual

    with pytest.raises(VerificationError) as excinfo:
        raise_on_mismatch(result)
    message = str(excinfo.value)
    assert "maps/soc_stock_mean.tif" in message
    assert "report.json" not in message
    assert "re-run" in message
    assert "Restore" in message


def test_deleted_output_is_missing(run: dict[str, Path]) -> None:
    _write(run)
    (run["run_dir"] / "report.json").unlink()
    result = verify_manifest(run["run_dir"])
    assert result.mismatches == (
        Mismatch(
            path="report.json",
            expected=hashlib.sha256(b'{"schema_version": 1}\n').hexdigest(),
            actual=None,
            reason="missing",
        ),
    )
    with pytest.raises(VerificationError, match=r"report\.json: missing"):
        raise_on_mismatch(result)


def test_changed_input_file_and_config_are_named(run: dict[str, Path]) -> None:
    _write(run)
    item = run["stac"] / "items" / "a.json"
    item.write_text('{"id": "A"}')
    run["config"].write_text("name: other\n")
    result = verify_manifest(run["run_dir"])
    named = {m.path for m in result.mismatches}
    assert named == {"../../inputs/stac/items/a.json", "../../configs/demo.yaml"}
    with pytest.raises(VerificationError) as excinfo:
        raise_on_mismatch(result)
    assert "2 files do not match the manifest (8 listed)" in str(excinfo.value)


def test_unlisted_files_and_empty_lists_are_reported(run: dict[str, Path]) -> None:
    _write(run)
    (run["run_dir"] / "maps" / "extra.tif").write_bytes(b"not in the manifest")
    result = verify_manifest(run["run_dir"])
    assert [(m.path, m.reason) for m in result.mismatches] == [("maps/extra.tif", "not listed in the manifest")]
    (run["run_dir"] / "maps" / "extra.tif").unlink()
    for key in ("inputs", "outputs"):
        _write(run)
        data = _load(run)
        data[key] = []
        (run["run_dir"] / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(VerificationError, match=f"lists no {key}"):
            verify_manifest(run["run_dir"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "holds a JSON list, not an object"),
        ('{"schema_version": 2, "config": {"path": "c", "sha256": "x"}, "outputs": "report.json"}', "'outputs' must be a list"),
        ('{"schema_version": 2, "config": {"path": "c", "sha256": "x"}, "inputs": [{"path": 3, "sha256": "x"}]}', "'inputs' must be a list"),
        ('{"schema_version": 2, "config": "demo.yaml"}', "no valid 'config' entry"),
        ('{"schema_version": 7}', "not a schema_version 1 or 2 manifest"),
        ("\x00\x01garbage", "cannot be read as JSON"),
    ],
)
def test_damaged_manifest_gives_one_message(run: dict[str, Path], text: str, message: str) -> None:
    _write(run)
    (run["run_dir"] / "manifest.json").write_text(text)
    with pytest.raises(VerificationError, match=re.escape(message)):
        verify_manifest(run["run_dir"])


def test_paths_leaving_the_directory_are_refused(run: dict[str, Path]) -> None:
    _write(run)
    data = _load(run)
    outputs = data["outputs"]
    assert isinstance(outputs, list)
    outputs[0]["path"] = "../../inputs/samples.csv"
    (run["run_dir"] / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(VerificationError, match="lies outside"):
        verify_manifest(run["run_dir"])
    outputs[0]["path"] = "/etc/passwd"
    (run["run_dir"] / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(VerificationError, match="absolute path"):
        verify_manifest(run["run_dir"])


def test_missing_manifest_raises(tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="manifest.json"):
        verify_manifest(tmp_path)


def test_corrupt_manifest_raises(run: dict[str, Path]) -> None:
    _write(run)
    (run["run_dir"] / "manifest.json").write_text("{not json")
    with pytest.raises(VerificationError, match="cannot be read as JSON"):
        verify_manifest(run["run_dir"])


def test_bad_arguments_raise_helpful_errors(run: dict[str, Path], tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("x")
    with pytest.raises(MRVError, match="outside the run directory"):
        build_manifest(run["run_dir"], inputs={}, config=run["config"], outputs=[outside])
    with pytest.raises(MRVError, match="does not exist"):
        build_manifest(run["run_dir"], inputs={}, config=run["config"], outputs=[Path("nope.tif")])
    with pytest.raises(MRVError, match="Input 'samples' does not exist"):
        build_manifest(
            run["run_dir"],
            inputs={"samples": tmp_path / "missing.csv"},
            config=run["config"],
            outputs=[],
        )
    with pytest.raises(MRVError, match="overwrite standard manifest fields"):
        build_manifest(
            run["run_dir"],
            inputs={},
            config=run["config"],
            outputs=[],
            extra={"outputs": []},
        )
    with pytest.raises(MRVError, match="JSON-serialisable"):
        write_manifest(
            run["run_dir"],
            inputs={},
            config=run["config"],
            outputs=[],
            extra={"bad": object()},
        )


def test_identity_from_git_or_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkout's git revision when there is one, else the build's ``MRV_SOURCE_REVISION``."""
    from mrv import identity as identity_mod

    identity_mod.identity.cache_clear()
    monkeypatch.setattr(identity_mod, "_git", lambda args, cwd: None)
    monkeypatch.setenv("MRV_SOURCE_REVISION", "0123abcd")
    built = identity_mod.identity()
    assert (built.revision, built.revision_source, built.dirty) == ("0123abcd", "build", None)
    assert built.version == identity_mod.package_version() != "0+unknown"
    identity_mod.identity.cache_clear()
    monkeypatch.delenv("MRV_SOURCE_REVISION")
    assert identity_mod.identity().revision_source == "unknown"
    identity_mod.identity.cache_clear()
    monkeypatch.undo()
    real = identity_mod.identity()
    assert real.revision_source == "git"
    assert real.revision is not None
    assert len(real.revision) == 40
    identity_mod.identity.cache_clear()
