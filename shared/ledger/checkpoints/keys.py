"""The checkpoint signing key pair: writing it (private key mode 0600, never overwritten), loading it, naming it."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.ledger.checkpoints.document import CheckpointError

PRIVATE_KEY_NAME = "checkpoint.key"
PUBLIC_KEY_NAME = "checkpoint.pub"


def generate_keys(folder: Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair into ``folder``: the private key readable by its owner only (mode 0600).

    Existing files are never overwritten: a lost private key means new checkpoints need a new public key, which an
    auditor must be told about, and an overwritten one cannot be recovered.
    """
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / PRIVATE_KEY_NAME, folder / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise CheckpointError(f"{path} exists already; relance never overwrites a key (choose another folder)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(private_pem)
    os.chmod(private_path, 0o600)  # whatever the umask
    public_path.write_bytes(_public_pem(key.public_key()))
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    raw = _read_key(path, "signing key")
    if os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise CheckpointError(
            f"the checkpoint signing key {path} can be read by other users: `chmod 600 {path}` (or mount it so)"
        )
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path} is not an Ed25519 key (`relance checkpoint keygen` makes one)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(_read_key(path, "public key"))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{path} is not an Ed25519 public key (`relance checkpoint keygen` makes one)")
    return key


def _read_key(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read the checkpoint {what} {path}: {exc.strerror}") from None


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
