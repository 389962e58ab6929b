"""Which public key (and which TSA) `ctrail evidence verify` trusts.

The `public_key.pem` beside an archive proves only that the archive is self-consistent: whoever
can rewrite the archive can re-sign it and replace that file. So the key comes from where the
host's writer cannot reach, in this order: `--public-key`, `evidence.public_key`, the public half
of `evidence.signing_key`; the key beside the archive is used only when nothing is configured,
and `evidence.public_key_sha256` pins it (any chosen key must match that fingerprint).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctrail.errors import UsageError
from sinks.evidence import EvidenceConfig
from sinks.evidence.verify import Finding, TsaTrust, key_fingerprint, load_public_key


@dataclass(frozen=True)
class TrustedKey:
    key: Any                      # an Ed25519PublicKey, or None: signatures not checked
    source: str                   # where it came from, for the summary line
    problem: Finding | None = None

    def describe(self) -> str:
        if self.key is None:
            return "signatures NOT checked (no public key)"
        # The whole fingerprint: what evidence.public_key_sha256 or verify.py --fingerprint pins.
        return f"signatures checked with key {key_fingerprint(self.key)} ({self.source})"


def _load(path: Path, what: str) -> Any:
    try:
        return load_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {what} {path}: {exc}") from None


def trusted_key(config: EvidenceConfig, root: Path, override: Path | None) -> TrustedKey:
    if override is not None:
        chosen = TrustedKey(_load(override, "the public key"), f"--public-key {override}")
    elif config.public_key is not None:
        chosen = TrustedKey(_load(config.public_key, "evidence.public_key"),
                            "pinned by evidence.public_key")
    elif config.signing_key is not None:
        from sinks.evidence.chain import Signer
        chosen = TrustedKey(Signer(config.signing_key).public_key, "of evidence.signing_key")
    elif (root / "public_key.pem").exists():
        source = ("beside the archive, pinned by evidence.public_key_sha256"
                  if config.public_key_sha256 else "beside the archive: NOT pinned")
        chosen = TrustedKey(_load(root / "public_key.pem", "the archive's key"), source)
    elif config.public_key_sha256:
        return TrustedKey(None, "", Finding("key_missing", 0, "evidence.public_key_sha256 pins a "
                                            "key, but the archive has no public_key.pem"))
    else:
        return TrustedKey(None, "")
    return _pinned(chosen, config.public_key_sha256)


def _pinned(chosen: TrustedKey, fingerprint: str | None) -> TrustedKey:
    if fingerprint is None or key_fingerprint(chosen.key) == fingerprint:
        return chosen
    return TrustedKey(chosen.key, chosen.source, Finding(
        "key_untrusted", 0, f"the key ({chosen.source}) has fingerprint "
        f"{key_fingerprint(chosen.key)}, not the pinned {fingerprint}: re-signed?"))


def check_signer(config: EvidenceConfig, public_key: Any) -> None:
    """At start: a signing key that is not the pinned one would seal an archive that fails
    its own verify; stop instead."""
    from ctrail.errors import ConfigError
    fingerprint = key_fingerprint(public_key)
    if config.public_key is not None and fingerprint != key_fingerprint(
            _load(config.public_key, "evidence.public_key")):
        raise ConfigError("evidence.signing_key is not the pinned evidence.public_key")
    if config.public_key_sha256 not in (None, fingerprint):
        raise ConfigError(f"evidence.signing_key has fingerprint {fingerprint}, not the pinned "
                          "evidence.public_key_sha256")


def tsa_trust(config: EvidenceConfig, root: Path) -> tuple[TsaTrust | None, str]:
    """Whom timestamp tokens must come from: the configured TSA certificates, else the copies
    beside the archive or in the bundle (self-consistency only), else nobody (not checked)."""
    if config.timestamp is not None:
        return (TsaTrust(config.timestamp.ca_file, config.timestamp.tsa_cert),
                "timestamps checked against evidence.timestamp")
    ca_file, tsa_cert = root / "tsa_ca.pem", root / "tsa_cert.pem"
    if ca_file.exists() or tsa_cert.exists():
        return (TsaTrust(ca_file if ca_file.exists() else None,
                         tsa_cert if tsa_cert.exists() else None),
                "timestamps checked against the TSA certificates beside the archive: NOT pinned")
    return None, "timestamps NOT checked (no TSA configured)"
