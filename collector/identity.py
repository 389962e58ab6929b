"""Deterministic ids: the same raw record from the same source always gets the same id, so a
replay after a crash is stored once (Elasticsearch `_id`, SQLite primary key)."""

from __future__ import annotations

import hashlib


def event_id(source: str, raw: bytes) -> str:
    return hashlib.blake2b(source.encode() + b"\x00" + raw, digest_size=16).hexdigest()


def rejection_id(stage: str, origin: str, raw: bytes) -> str:
    """Dead letters include their origin: two identical bad lines are two dead letters."""
    return event_id(f"dlq\x00{stage}\x00{origin}", raw)
