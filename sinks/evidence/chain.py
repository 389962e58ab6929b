"""The chain of manifests: appending one (segment or tombstone), signing it, and the head.

Every file is written to a temporary name, fsynced and renamed, so a crash leaves either the
old state or the new one. The chain is append-only: a manifest is never rewritten, and a
segment's manifest stays after the segment expires (the tombstone names it), so `prev` links
always resolve.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from ctrail.durable import write_atomic
from ctrail.errors import ConfigError
from ctrail.secrets import SecretRef, resolve_secret
from sinks.evidence.verify import GENESIS, canonical, manifest_hash

VERSION = 1


class Signer:
    """Ed25519 over a manifest's hash; the public key goes beside the archive and into exports."""

    def __init__(self, ref: SecretRef) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            PublicFormat,
            load_pem_private_key,
        )
        pem = resolve_secret(ref).get_secret_value().encode()
        try:
            key = load_pem_private_key(pem, password=None)
        except ValueError as exc:
            raise ConfigError(f"evidence.signing_key is not a PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("evidence.signing_key must be an Ed25519 key")
        self._key = key
        self.public_key = key.public_key()
        self.public_pem = key.public_key().public_bytes(Encoding.PEM,
                                                        PublicFormat.SubjectPublicKeyInfo)
        self.key_id = hashlib.sha256(self.public_pem).hexdigest()[:16]

    def sign(self, digest_hex: str) -> str:
        return base64.b64encode(self._key.sign(bytes.fromhex(digest_hex))).decode()


class Chain:
    """The manifests directory: where the chain ends, and appending to it."""

    def __init__(self, root: Path, signer: Signer | None) -> None:
        self.root = root
        self.signer = signer
        (root / "manifests").mkdir(parents=True, exist_ok=True)
        (root / "segments").mkdir(exist_ok=True)
        if signer is not None:
            key_file = root / "public_key.pem"
            if not key_file.exists() or key_file.read_bytes() != signer.public_pem:
                write_atomic(key_file, signer.public_pem)
        self.seq, self.head = 0, GENESIS
        last = self.manifests()[-1:]
        if last:
            self.seq, self.head = last[0]["seq"], manifest_hash(last[0])

    def manifests(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_bytes()) for p in sorted((self.root / "manifests").glob("*.json"))]

    def append(self, body: dict[str, Any]) -> dict[str, Any]:
        """Seal `body` as the next link: seq, prev, version, key id and signature added."""
        manifest = {**body, "version": VERSION, "seq": self.seq + 1, "prev": self.head}
        if self.signer is not None:
            manifest["key_id"] = self.signer.key_id
        digest = manifest_hash(manifest)
        if self.signer is not None:
            manifest["signature"] = self.signer.sign(digest)
        write_atomic(self.root / "manifests" / f"{manifest['seq']:08d}.json", canonical(manifest))
        self.seq, self.head = manifest["seq"], digest
        self._write_head()
        return manifest

    def _write_head(self) -> None:
        head: dict[str, Any] = {"seq": self.seq, "hash": self.head}
        if self.signer is not None:
            head["signature"] = self.signer.sign(hashlib.sha256(canonical(head)).hexdigest())
        write_atomic(self.root / "head.json", canonical(head))
