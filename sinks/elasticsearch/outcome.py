"""What one bulk item result means for its document: the one place that classifies them.

An Elasticsearch bulk request answers 200 even when some documents failed, so every item is read.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Final, Mapping

from ctrail.errors import Reason
from ctrail.event import Rejection
from ctrail.runtime.deadletter import rejection
from sinks.elasticsearch.documents import Document

# 408/429/5xx: the cluster is busy or broken. 401/403/404: the cluster refuses every document
# alike (credentials, a read-only block, auto-creation switched off); dead-lettering would empty
# the stream into the DLQ for a problem an operator fixes, so the batch waits instead.
RETRYABLE_STATUS: Final = frozenset({401, 403, 404, 408, 429})


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"


def classify(result: Mapping[str, Any]) -> Outcome:
    """One item of a bulk response ({"create": {...}}'s inner object)."""
    status = int(result["status"])
    if 200 <= status < 300 or status == 409:     # 409 on create: the id is already stored
        return Outcome.DELIVERED
    if status in RETRYABLE_STATUS or status >= 500:
        return Outcome.RETRY
    return Outcome.REJECTED                      # 400: this document can never be indexed


def error_detail(result: Mapping[str, Any]) -> str:
    """`type: reason`, with the cause's when there is one (the field and the value's trouble)."""
    error = result.get("error") or {}
    detail = f"{error.get('type', 'status ' + str(result.get('status')))}: {error.get('reason')}"
    cause = error.get("caused_by")
    if cause:
        detail += f" (caused by {cause.get('type')}: {cause.get('reason')})"
    return detail


def rejected(doc: Document, result: Mapping[str, Any]) -> Rejection:
    """The dead letter for a document the cluster refused, keeping the document whole."""
    item = doc.item
    if isinstance(item, Rejection):
        dataset = item.dataset
    else:                                     # a replay verdict has no dataset
        dataset = getattr(getattr(item, "event", None), "dataset", None)
    return rejection(stage="store", reason=Reason.REJECTED_BY_STORE, detail=error_detail(result),
                     origin=f"elasticsearch {doc.stream} {doc.id}", raw=doc.source,
                     dataset=dataset)
