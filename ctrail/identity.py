"""Deterministic ids: the same raw record from the same source always gets the same id, so a
replay after a crash is stored once (Elasticsearch `_id`, SQLite primary key)."""

from __future__ import annotations

import hashlib
import re
from typing import Final

# A secret hashed by the redactor (collector.redact: `hmac-sha256:` and 64 hex digits). Intake
# hashes secrets before anything is written, under a key each data directory may have its own
# of: ids leave the hash out, so one record gets one id whichever process took it in.
KEYED_HASH: Final = re.compile(rb"hmac-sha256:[0-9a-f]{64}")
KEYED_HASH_PREFIX: Final = b"hmac-sha256:"


def event_id(source: str, raw: bytes) -> str:
    if KEYED_HASH_PREFIX in raw:
        raw = KEYED_HASH.sub(KEYED_HASH_PREFIX, raw)
    return hashlib.blake2b(source.encode() + b"\x00" + raw, digest_size=16).hexdigest()


def rejection_id(stage: str, origin: str, raw: bytes, reason: str) -> str:
    """Dead letters include their origin: two identical bad lines are two dead letters. They
    include the reason, so a record that `ctrail dlq replay` finds rejected for a new reason is
    kept anew under that reason, while one rejected again for the same reason stores nothing."""
    return event_id(f"dlq\x00{stage}\x00{origin}\x00{reason}", raw)


def replay_id(dead_letter_id: str, outcome: str, successor: str | None, run: str) -> str:
    """One verdict of one replay run on one dead letter (a run repeated after a crash writes
    it once; a later run writes its own, which is then the newest)."""
    return event_id(f"dlq-replay\x00{outcome}\x00{successor or ''}\x00{run}",
                    dead_letter_id.encode())
