"""Which dead letters still stand: those without a replay verdict (DeadLetterReplay) in the store.

A verdict is written when a replay resolved a dead letter: its record now succeeds, or it was
rejected again for another reason and a new dead letter keeps it. A record rejected again for
the same reason keeps its dead letter (same id) and gets no verdict: it still stands.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Final, Sequence

from collector.identity import replay_id
from ctrail.components import Store
from ctrail.errors import CtrailError, Reason
from ctrail.event import DeadLetterReplay
from ctrail.runtime.replay import Verdict

KIND: Final = "dead_letter_replays"
IDS_PER_QUERY: Final = 200
# Distinct verdicts one dead letter can collect: succeeded, and one per successor, whose ids
# differ only by their reason. Bounds how many documents a lookup returns per dead letter.
VERDICTS_PER_DEAD_LETTER: Final = len(Reason) + 1


def verdict_record(verdict: Verdict, now: datetime | None = None) -> DeadLetterReplay | None:
    """The record that marks `verdict.dead` resolved, or None when it still stands."""
    dead = verdict.dead
    if verdict.outcome == "replayed":
        outcome, successor, reason = "succeeded", None, None
    elif verdict.outcome == "still_rejected" and verdict.now and verdict.now.id != dead.id:
        outcome, successor, reason = "rejected_again", verdict.now.id, verdict.now.reason
    else:
        return None
    return DeadLetterReplay(id=replay_id(dead.id, outcome, successor),
                            timestamp=now or datetime.now(timezone.utc), dead_letter_id=dead.id,
                            stage=dead.stage, outcome=outcome, successor=successor,
                            reason=reason)


def write_verdicts(store: Store, records: Sequence[DeadLetterReplay]) -> None:
    """Store the verdicts (idempotent by id); CtrailError when the store keeps refusing some."""
    if not records:
        return
    written = store.write(records)  # type: ignore[arg-type]
    if written.retry or written.rejected:
        raise CtrailError(f"the store did not take {len(written.retry) + len(written.rejected)} "
                          "replay verdicts; replaying again records them (nothing is stored twice)")


def verdicts_of(store: Store, dead_letter_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """dead letter id -> its newest replay verdict, for those that have one."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(dead_letter_ids), IDS_PER_QUERY):
        chunk = dead_letter_ids[start:start + IDS_PER_QUERY]
        query = "dead_letter_id:(" + " OR ".join(f'"{i}"' for i in chunk) + ")"
        for doc in store.search(query, KIND, None, None, len(chunk) * VERDICTS_PER_DEAD_LETTER):
            found[doc["dead_letter_id"]] = doc             # oldest first: the newest wins
    return found


def select(store: Store, query: str, time_from: datetime | None, time_to: datetime | None,
           limit: int, include_resolved: bool = False
           ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The newest `limit` dead letters matching, oldest first, leaving out the resolved ones
    unless include_resolved; and the verdicts of those returned that have one."""
    window = limit
    while True:
        docs = store.search(query, "dead_letters", time_from, time_to, window)
        verdicts = verdicts_of(store, [doc["id"] for doc in docs])
        chosen = [doc for doc in docs if include_resolved or doc["id"] not in verdicts]
        if len(chosen) >= limit or len(docs) < window:
            chosen = chosen[-limit:]
            return chosen, {doc["id"]: verdicts[doc["id"]] for doc in chosen
                            if doc["id"] in verdicts}
        window *= 4                  # resolved ones filled the window: look further back
