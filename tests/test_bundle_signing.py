"""Ed25519 signing of a bundle's manifest (mrv.report.signing): keys, signatures, failures, OpenSSL interop."""

from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from mrv.errors import MRVError, VerificationError
from mrv.report.manifest import MANIFEST_NAME, SIGNATURE_NAME
from mrv.report.signing import generate_keypair, sign_manifest, verify_signature


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "bundle"
    root.mkdir()
    (root / MANIFEST_NAME).write_text(json.dumps({"schema_version": 2, "outputs": [{"path": "a", "sha256": "0" * 64}]}))
    fp = generate_keypair(tmp_path / "op.key", tmp_path / "op.pub")
    sign_manifest(root, tmp_path / "op.key")
    record = json.loads((root / SIGNATURE_NAME).read_text())
    assert record["public_key_fingerprint"] == fp
    return root, tmp_path / "op.key", tmp_path / "op.pub"


def test_private_key_is_private_and_never_overwritten(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, key, pub = signed
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()
    assert b"PRIVATE" not in pub.read_bytes()
    before = key.read_bytes()
    with pytest.raises(MRVError, match="already exists"):
        generate_keypair(key, tmp_path / "other.pub")
    assert key.read_bytes() == before


def test_valid_unsigned_not_checked(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, _, pub = signed
    assert verify_signature(root, pub).status == "valid"
    assert verify_signature(root, None).status == "not checked"
    unsigned = tmp_path / "unsigned"
    shutil.copytree(root, unsigned)
    (unsigned / SIGNATURE_NAME).unlink()
    assert verify_signature(unsigned, None).status == "unsigned"
    with pytest.raises(VerificationError, match="is unsigned"):
        verify_signature(unsigned, pub)


def test_changed_manifest_wrong_key_and_forged_signature(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, _, pub = signed
    manifest = root / MANIFEST_NAME
    original = manifest.read_bytes()
    manifest.write_bytes(original.replace(b'"a"', b'"b"'))
    with pytest.raises(VerificationError, match="changed after it was signed"):
        verify_signature(root, pub)
    manifest.write_bytes(original)
    generate_keypair(tmp_path / "x.key", tmp_path / "x.pub")
    with pytest.raises(VerificationError, match="signed by someone else"):
        verify_signature(root, tmp_path / "x.pub")
    # A signature made with another key but claiming the operator's fingerprint.
    other = tmp_path / "forged"
    shutil.copytree(root, other)
    sign_manifest(other, tmp_path / "x.key")
    forged = json.loads((other / SIGNATURE_NAME).read_text())
    forged["public_key_fingerprint"] = json.loads((root / SIGNATURE_NAME).read_text())["public_key_fingerprint"]
    (other / SIGNATURE_NAME).write_text(json.dumps(forged))
    with pytest.raises(VerificationError, match="does not match manifest.json"):
        verify_signature(other, pub)
    (tmp_path / "junk.pub").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(VerificationError, match="not a PEM public key"):
        verify_signature(root, tmp_path / "junk.pub")


def test_encrypted_key_needs_its_passphrase(tmp_path: Path) -> None:
    root = tmp_path / "b"
    root.mkdir()
    (root / MANIFEST_NAME).write_text("{}")
    generate_keypair(tmp_path / "e.key", tmp_path / "e.pub", passphrase=b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "e.key").read_bytes()
    with pytest.raises(MRVError, match="encrypted"):
        sign_manifest(root, tmp_path / "e.key")
    with pytest.raises(MRVError, match="passphrase is wrong"):
        sign_manifest(root, tmp_path / "e.key", passphrase=b"wrong")
    sign_manifest(root, tmp_path / "e.key", passphrase=b"correct horse")
    assert verify_signature(root, tmp_path / "e.pub").status == "valid"


def test_openssl_verifies_the_signature(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """The claim in the module docstring: the PEM keys and raw signature work with OpenSSL too."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    root, _, pub = signed
    sig = base64.b64decode(json.loads((root / SIGNATURE_NAME).read_text())["signature"])
    (tmp_path / "sig.bin").write_bytes(sig)
    cmd = [openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin", "-in", str(root / MANIFEST_NAME), "-sigfile", str(tmp_path / "sig.bin")]  # fmt: skip
    ok = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (root / MANIFEST_NAME).write_text("{}")
    bad = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert bad.returncode != 0
