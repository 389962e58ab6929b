"""Building dead letters: the reason, the stage, the origin and the original bytes, always."""

from __future__ import annotations

import base64
import logging
from datetime import datetime, timezone
from typing import Final

from ctrail.identity import rejection_id
from ctrail.errors import Reason
from ctrail.event import Rejection

DETAIL_CHARS: Final = 500
log = logging.getLogger(__name__)


def rejection(*, stage: str, reason: Reason, detail: str, origin: str, raw: bytes,
              dataset: str | None) -> Rejection:
    """A Rejection keeping `raw` whole: UTF-8 text where it is text, base64 otherwise."""
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
