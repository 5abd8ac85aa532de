"""Ed25519 signatures over a bundle's ``manifest.json``, through the ``cryptography`` package.

Why Ed25519 with ``cryptography``: the package is already installed with this project, a verifier
needs no account, network or transparency log (a Sigstore signature needs an OIDC identity and
Rekor on-line; a verifier's laptop may be off-line), signatures are deterministic (RFC 8032, sect. 5.1.6)
and 64 bytes, keys are PEM files that OpenSSL reads as well
(``openssl pkeyutl -verify -pubin -inkey operator.pub -rawin -in manifest.json -sigfile sig.bin``).

The manifest lists the SHA-256 of every file of the bundle and the chain of step keys, so signing
its bytes signs the whole bundle. The signature file ``manifest.sig`` (JSON) holds the algorithm,
the SHA-256 of the signed bytes, the fingerprint of the public key (SHA-256 of its raw 32 bytes)
and the base64 signature. Private keys are read only to sign; they are never copied, logged or
written into a bundle.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mrv.errors import MRVError, VerificationError
from mrv.report.manifest import MANIFEST_NAME, SIGNATURE_NAME

__all__ = ["SIGNATURE_FORMAT", "SignatureCheck", "fingerprint", "generate_keypair", "sign_manifest", "verify_signature"]

SIGNATURE_FORMAT = "mrv-ed25519-v1"


@dataclass(frozen=True)
class SignatureCheck:
    """What :func:`verify_signature` found: ``status`` is ``valid``, ``unsigned`` or ``not checked``."""

    status: str
    fingerprint: str | None


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """``SHA256:<hex>`` of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + hashlib.sha256(raw).hexdigest()


def generate_keypair(private_path: Path, public_path: Path, *, passphrase: bytes | None = None) -> str:
    """Write a new Ed25519 key pair (PKCS#8 PEM, mode 0600; SubjectPublicKeyInfo PEM); returns the fingerprint.

    Existing files are never overwritten. With ``passphrase`` the private key is encrypted.
    """
    for p in (private_path, public_path):
        if p.exists():
            raise MRVError(f"{p} already exists; choose another name or remove it first (keys are never overwritten).")
    key = Ed25519PrivateKey.generate()
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return fingerprint(public)


def _load_private(path: Path, passphrase: bytes | None) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MRVError(f"Cannot read the signing key {path}: {exc.strerror}. Check the path.") from exc
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as exc:
        raise MRVError(
            f"The signing key {path} is encrypted (or not): pass its passphrase through the environment variable "
            "named by --passphrase-env, or none for an unencrypted key."
        ) from exc
    except ValueError as exc:
        raise MRVError(
            f"{path} is not a PEM private key or the passphrase is wrong; create one with 'mrv report keygen'."
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise MRVError(f"{path} holds a {type(key).__name__}; sign with an Ed25519 key ('mrv report keygen').")
    return key


def _load_public(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VerificationError(f"Cannot read the public key {path}: {exc.strerror}. Check the path.") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise VerificationError(
            f"{path} is not a PEM public key; pass the operator's .pub file written by 'mrv report keygen'."
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key.")
    return key


def sign_manifest(root: Path, private_key: Path, *, passphrase: bytes | None = None) -> Path:
    """Sign ``root/manifest.json`` and write ``root/manifest.sig``."""
    key = _load_private(private_key, passphrase)
    data = (root / MANIFEST_NAME).read_bytes()
    record = {
        "format": SIGNATURE_FORMAT,
        "signed_file": MANIFEST_NAME,
        "signed_sha256": hashlib.sha256(data).hexdigest(),
        "public_key_fingerprint": fingerprint(key.public_key()),
        "signature": base64.b64encode(key.sign(data)).decode("ascii"),
    }
    target = root / SIGNATURE_NAME
    target.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return target


def verify_signature(root: Path, public_key: Path | None) -> SignatureCheck:
    """Check ``root/manifest.sig`` against ``public_key``.

    Without a key: ``unsigned`` or ``not checked`` (the bundle's claimed fingerprint is returned).
    With a key: raises :class:`VerificationError` when the bundle is unsigned, signed by another key
    or the signature does not match the manifest's bytes.
    """
    sig_path = root / SIGNATURE_NAME
    if not sig_path.is_file():
        if public_key is not None:
            raise VerificationError(
                f"{root} is unsigned (no {SIGNATURE_NAME}) but --key was given; ask the operator for a bundle "
                "signed with 'mrv report bundle --sign-key', or verify without --key knowing it is unsigned."
            )
        return SignatureCheck("unsigned", None)
    try:
        record = json.loads(sig_path.read_text(encoding="utf-8"))
        claimed = str(record["public_key_fingerprint"])
        signature = base64.b64decode(str(record["signature"]), validate=True)
        if record.get("format") != SIGNATURE_FORMAT:
            raise ValueError(f"format {record.get('format')!r}, expected {SIGNATURE_FORMAT!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VerificationError(
            f"{sig_path} is not a valid signature file ({exc}); the bundle's signature is damaged - ask the operator "
            "to sign it again."
        ) from exc
    if public_key is None:
        return SignatureCheck("not checked", claimed)
    key = _load_public(public_key)
    actual = fingerprint(key)
    if claimed != actual:
        raise VerificationError(
            f"{sig_path} was made with the key {claimed}, not with {public_key} ({actual}); the bundle is signed by "
            "someone else. Check the public key you were given."
        )
    try:
        key.verify(signature, (root / MANIFEST_NAME).read_bytes())
    except InvalidSignature as exc:
        raise VerificationError(
            f"The signature in {sig_path} does not match {MANIFEST_NAME}: the manifest was changed after it was "
            "signed (or the signature was forged). Do not accept this bundle; ask the operator for the original."
        ) from exc
    return SignatureCheck("valid", actual)
