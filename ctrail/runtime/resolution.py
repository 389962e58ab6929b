"""Which dead letters still stand: those whose newest replay verdict (DeadLetterReplay) in the
store is not a resolution.

A replay run writes, per dead letter it replayed: `succeeded` when its record now succeeds;
`rejected_again` (naming the successor) when a new dead letter with another reason keeps it,
and `reopened` for that successor; `reopened` for the dead letter itself when the same
rejection came back. Verdict ids include the run, so the newest verdict is always this run's.
Not seen here: a record dead-lettered again by a new ingest (not a replay) under the id of a
dead letter a replay had resolved; the store keeps one document per id, so nothing tells.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Final, Sequence

from ctrail.components import Store
from ctrail.errors import CtrailError, Reason
from ctrail.event import DeadLetterReplay
from ctrail.identity import replay_id
from ctrail.runtime.replay import Verdict

KIND: Final = "dead_letter_replays"
IDS_PER_QUERY: Final = 200
# Verdicts one lookup returns per dead letter at most: the newest is the one that counts, and
# a dead letter collects a few per replay run (succeeded, rejected again, reopened).
VERDICTS_PER_DEAD_LETTER: Final = 4 * (len(Reason) + 2)


def verdict_records(verdict: Verdict, run: str, now: datetime | None = None
                    ) -> list[DeadLetterReplay]:
    """The records a replay run writes for one verdict: `verdict.dead` resolved (its record
    now succeeds, or a successor with another reason keeps it), and the dead letter that keeps
    a record rejected again marked as standing (`reopened`): it may be one an earlier replay
    had resolved (A replayed as B, B replayed back as A), which must not stay hidden."""
    dead, at = verdict.dead, now or datetime.now(timezone.utc)

    def record(dead_letter_id: str, outcome: str, successor: str | None = None,
               reason: str | None = None) -> DeadLetterReplay:
        return DeadLetterReplay(id=replay_id(dead_letter_id, outcome, successor, run),
                                timestamp=at, dead_letter_id=dead_letter_id, stage=dead.stage,
                                outcome=outcome, successor=successor,  # type: ignore[arg-type]
                                reason=reason)
    if verdict.outcome == "replayed":
        return [record(dead.id, "succeeded")]
    if verdict.outcome != "still_rejected" or verdict.now is None:
        return []
    if verdict.now.id == dead.id:            # the same rejection again: it stands (again)
        return [record(dead.id, "reopened")]
    return [record(dead.id, "rejected_again", verdict.now.id, verdict.now.reason),
            record(verdict.now.id, "reopened")]


def write_verdicts(store: Store, records: Sequence[DeadLetterReplay]) -> None:
    """Store the verdicts (idempotent by id); CtrailError when the store keeps refusing some."""
    if not records:
        return
    written = store.write(records)  # type: ignore[arg-type]
    if written.retry or written.rejected:
        raise CtrailError(f"the store did not take {len(written.retry) + len(written.rejected)} "
                          "replay verdicts; replaying again records them (nothing is stored twice)")


def verdicts_of(store: Store, dead_letter_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """dead letter id -> its newest replay verdict, for those that have one (resolved unless
    that verdict is `reopened`)."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(dead_letter_ids), IDS_PER_QUERY):
        chunk = dead_letter_ids[start:start + IDS_PER_QUERY]
        query = "dead_letter_id:(" + " OR ".join(f'"{i}"' for i in chunk) + ")"
        for doc in store.search(query, KIND, None, None, len(chunk) * VERDICTS_PER_DEAD_LETTER):
            found[doc["dead_letter_id"]] = doc             # oldest first: the newest wins
    return found


def resolved(verdict: dict[str, Any] | None) -> bool:
    return verdict is not None and verdict["outcome"] != "reopened"


def select(store: Store, query: str, time_from: datetime | None, time_to: datetime | None,
           limit: int, include_resolved: bool = False
           ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The newest `limit` dead letters matching, oldest first, leaving out the resolved ones
    unless include_resolved; and the verdicts of those returned that have one."""
    window = limit
    while True:
        docs = store.search(query, "dead_letters", time_from, time_to, window)
        verdicts = verdicts_of(store, [doc["id"] for doc in docs])
        chosen = [doc for doc in docs if include_resolved or not resolved(verdicts.get(doc["id"]))]
        if len(chosen) >= limit or len(docs) < window:
            chosen = chosen[-limit:]
            return chosen, {doc["id"]: verdicts[doc["id"]] for doc in chosen
                            if doc["id"] in verdicts}
        window *= 4                  # resolved ones filled the window: look further back
