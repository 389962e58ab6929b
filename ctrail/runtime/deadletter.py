"""Building dead letters: the reason, the stage, the origin and the original bytes, always.

A record that did not parse was not redacted as its events are (its structure is unknown), so
the builder hashes what the redaction policy recognises in text form (collector.redact,
Redactor.redact_text: Bearer and Basic credentials, JWTs, URL passwords, PEM private keys,
`password=`/`--token` assignments) before anything is kept: no dead letter holds a clear
secret, in the DLQ or in the store. The hash is the deployment's keyed one, so a replay of the
redacted record stores what a clean parse would have stored. The caller says how (`redact`):
The parser's `redact_text` holds the deployment's key.
"""

from __future__ import annotations

import base64
import logging
from datetime import datetime, timezone
from typing import Callable, Final, Literal

from ctrail.errors import Reason
from ctrail.event import Rejection
from ctrail.identity import rejection_id

DETAIL_CHARS: Final = 500
log = logging.getLogger(__name__)


def rejection(*, stage: str, reason: Reason, detail: str, origin: str, raw: bytes,
              dataset: str | None, redact: Callable[[str], str] | None = None) -> Rejection:
    """A Rejection keeping `raw` whole: UTF-8 text where it is text, base64 otherwise.

    `redact` (Redactor.redact_text), for bytes from outside that no parser redacted: applied
    to `raw` (its text; bytes that are not UTF-8 are kept as they are around it) and to
    `detail` (an error message may quote the record) before anything else."""
    if redact is not None:
        raw = redacted_bytes(raw, redact)
        detail = redact(detail)
    encoding: Literal["utf-8", "base64"]
    try:
        original, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        original, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    dead = Rejection(id=rejection_id(stage, origin, raw, reason.value),
                     timestamp=datetime.now(timezone.utc), stage=stage, reason=reason.value,
                     detail=detail[:DETAIL_CHARS], dataset=dataset, origin=origin,
                     original=original, original_encoding=encoding)
    log.debug("Dead-lettered a record.", extra={"stage": stage, "reason": reason.value,
                                                  "origin": origin, "dataset": dataset})
    return dead


def redacted_bytes(raw: bytes, redact: Callable[[str], str]) -> bytes:
    """`raw` with `redact` applied to its text; `raw` itself when nothing changed. Bytes that
    are not UTF-8 round-trip unchanged (surrogateescape), so a secret in a binary frame (a bad
    forward message) is hashed too."""
    text = raw.decode("utf-8", "surrogateescape")
    new = redact(text)
    return raw if new == text else new.encode("utf-8", "surrogateescape")
