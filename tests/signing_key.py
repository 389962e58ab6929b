"""A fresh Ed25519 evidence signing key, as the PEM file `evidence.signing_key` reads."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat


def write_signing_key(path: Path) -> Path:
    """A new key written to `path` (PKCS#8 PEM, unencrypted); returns `path`."""
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return path
