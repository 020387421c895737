"""Ed25519 key pairs for checkpoint signing: generate, save to and load from PEM files.

The signing key is PKCS#8 PEM (unencrypted; the file is written with mode 0600 and belongs on
a disk only the dispatcher's account reads, or in an HSM/KMS later); the public key is
SubjectPublicKeyInfo PEM, to hand to auditors and to `fleet custody verify --public-key`.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)


def generate_signing_key() -> Ed25519PrivateKey:
    """A new random Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def signing_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def signing_key_from_pem(data: bytes, source: str = "signing key") -> Ed25519PrivateKey:
    """Parse a PKCS#8 PEM Ed25519 private key; ValueError naming `source` otherwise."""
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{source}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{source}: not an Ed25519 key ({type(key).__name__})")
    return key


def public_key_from_pem(data: bytes, source: str = "public key") -> Ed25519PublicKey:
    """Parse a SubjectPublicKeyInfo PEM Ed25519 public key; ValueError naming `source`."""
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{source}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{source}: not an Ed25519 key ({type(key).__name__})")
    return key


def save_signing_key(key: Ed25519PrivateKey, path: str | Path) -> None:
    """Write `key` to `path` (PEM, mode 0600); refuses to overwrite an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(signing_key_pem(key))


def save_public_key(key: Ed25519PublicKey, path: str | Path) -> None:
    """Write `key` to `path` (PEM), replacing the file if it exists."""
    Path(path).write_bytes(public_key_pem(key))


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 signing key in the PEM file at `path` (OSError, ValueError)."""
    return signing_key_from_pem(Path(path).read_bytes(), str(path))


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM file at `path`; a signing key file is accepted too
    (its public half is used)."""
    data = Path(path).read_bytes()
    if b"PRIVATE KEY" in data:
        return signing_key_from_pem(data, str(path)).public_key()
    return public_key_from_pem(data, str(path))
