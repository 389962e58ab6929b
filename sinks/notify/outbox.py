"""The durable outbox: one SQLite row per (receiver, alert), in the data directory.

Written by the notify stage before it commits its input, read by the sender loop. WAL with
synchronous=FULL makes every committed enqueue survive kill -9 and power loss; the primary key
(receiver, alert id) makes a redelivered alert a no-op. A row's life:

    held (quiet hours) ──► pending ──► delivered          (a 2xx covered it)
                                   └─► rejected           (the receiver refused the message: 4xx)

Rows are kept after delivery (`prune` removes old ones) so a replay of the bus finds them and
sends nothing twice. `incidents` tracks PagerDuty, Opsgenie and Jira groups (their dedup key,
alias or issue key) for the resolve after a quiet period. `report_outbox` holds rendered reports
waiting for their receivers (email, Slack, Teams), with the same life minus `held`.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ctrail.bus.codec import encode
from ctrail.event import Alert
from sinks.notify.message import Pending

CACHE_ALERTS = 20_000
SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order alerts go out in
    receiver     TEXT NOT NULL,
    alert_id     TEXT NOT NULL,
    group_key    TEXT NOT NULL,
    state        TEXT NOT NULL,                      -- held | pending | delivered | rejected
    digest       INTEGER NOT NULL DEFAULT 0,         -- released from quiet hours as a digest
    release_at   REAL,
    enqueued_at  REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    delivered_at REAL,
    sent_as      TEXT,                               -- alert | digest | trigger
    last_error   TEXT,                               -- redacted
    alert        BLOB NOT NULL,
    UNIQUE (receiver, alert_id)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (receiver, state, seq);
CREATE INDEX IF NOT EXISTS outbox_held ON outbox (state, release_at);
CREATE TABLE IF NOT EXISTS incidents (
    receiver      TEXT NOT NULL,
    group_key     TEXT NOT NULL,
    dedup_key     TEXT,
    last_alert_at REAL NOT NULL,
    state         TEXT NOT NULL,                     -- waiting | open | resolved
    PRIMARY KEY (receiver, group_key)
);
CREATE TABLE IF NOT EXISTS report_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver     TEXT NOT NULL,
    delivery_id  TEXT NOT NULL,                      -- report name and period end
    state        TEXT NOT NULL,                      -- pending | delivered | rejected
    enqueued_at  REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    delivered_at REAL,
    last_error   TEXT,                               -- redacted
    notice       BLOB NOT NULL,                      -- ReportNotice JSON: paths, no contents
    UNIQUE (receiver, delivery_id)
);
"""


@dataclass(frozen=True, slots=True)
class NewRow:
    receiver: str
    alert: Alert
    release_at: float | None = None       # quiet hours: held until then
    tracks_incidents: bool = False        # PagerDuty: remember the group for the resolve


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection shared by the stage thread and the sender thread, behind a lock: the
        # writes are short, and a single writer avoids SQLITE_BUSY between our own threads.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=30.0)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")      # the commit is on disk when it returns
        self._db.executescript(SCHEMA)
        self._cache: OrderedDict[str, Alert] = OrderedDict()

    def _tx(self, statements: Iterable[tuple[str, Sequence[object]]]) -> list[int]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                counts = [self._db.execute(sql, args).rowcount for sql, args in statements]
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite has rolled back already after some errors (SQLITE_FULL): a second
                # ROLLBACK would fail and hide the error that says what happened.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            return counts

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def enqueue(self, rows: Sequence[NewRow], now: float) -> int:
        """Add rows in one durable transaction; returns how many were new (the rest were
        already there: a redelivery)."""
        statements: list[tuple[str, Sequence[object]]] = []
        for row in rows:
            held = row.release_at is not None and row.release_at > now
            statements.append((
                "INSERT OR IGNORE INTO outbox (receiver, alert_id, group_key, state, release_at,"
                " enqueued_at, alert) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.receiver, row.alert.event.id, row.alert.alert.group_key,
                 "held" if held else "pending", row.release_at if held else None, now,
                 encode(row.alert))))
            if row.tracks_incidents:
                statements.append((
                    "INSERT INTO incidents (receiver, group_key, last_alert_at, state)"
                    " VALUES (?, ?, ?, 'waiting') ON CONFLICT (receiver, group_key) DO UPDATE"
                    " SET last_alert_at = max(last_alert_at, excluded.last_alert_at),"
                    " state = CASE state WHEN 'resolved' THEN 'waiting' ELSE state END",
                    (row.receiver, row.alert.alert.group_key, now)))
        counts = self._tx(statements)
        return sum(count for (sql, _args), count in zip(statements, counts)
                   if sql.startswith("INSERT OR IGNORE"))

    def release_held(self, now: float, digest: bool) -> int:
        return self._tx([("UPDATE outbox SET state = 'pending', digest = ? WHERE state = 'held'"
                          " AND release_at <= ?", (int(digest), now))])[0]

    def next_release_at(self) -> float | None:
        return self._query("SELECT min(release_at) FROM outbox WHERE state = 'held'")[0][0]

    def pending(self, receiver: str, limit: int) -> list[Pending]:
        rows = self._query(
            "SELECT o.seq, o.alert_id, o.alert, o.digest, i.dedup_key FROM outbox o LEFT JOIN"
            " incidents i ON i.receiver = o.receiver AND i.group_key = o.group_key AND"
            " i.state = 'open' WHERE o.receiver = ? AND o.state = 'pending' ORDER BY o.seq"
            " LIMIT ?", (receiver, limit))
        return [Pending(seq, self._decoded(alert_id, alert), bool(digest), incident)
                for seq, alert_id, alert, digest, incident in rows]

    def _decoded(self, alert_id: str, raw: bytes) -> Alert:
        # A backlog is read again on every pass (and once per receiver); decoding dominated a
        # storm's cost, and a row's alert never changes, so keep the recent ones decoded.
        alert = self._cache.pop(alert_id, None) or Alert.model_validate_json(raw)
        self._cache[alert_id] = alert
        if len(self._cache) > CACHE_ALERTS:
            self._cache.popitem(last=False)
        return alert

    def mark_delivered(self, receiver: str, seqs: Sequence[int], now: float, sent_as: str) -> None:
        if sent_as == "report":
            self._tx([("UPDATE report_outbox SET state = 'delivered', delivered_at = ?,"
                       " attempts = attempts + 1, last_error = NULL WHERE receiver = ? AND"
                       " seq = ? AND state = 'pending'", (now, receiver, seq)) for seq in seqs])
            return
        self._tx([("UPDATE outbox SET state = 'delivered', delivered_at = ?, sent_as = ?,"
                   " attempts = attempts + 1, last_error = NULL WHERE receiver = ? AND seq = ?"
                   " AND state = 'pending'", (now, sent_as, receiver, seq)) for seq in seqs])

    def mark_rejected(self, receiver: str, seqs: Sequence[int], detail: str,
                      kind: str = "alert") -> None:
        self._tx([(f"UPDATE {_table(kind)} SET state = 'rejected', attempts = attempts + 1,"
                   " last_error = ? WHERE receiver = ? AND seq = ?", (detail, receiver, seq))
                  for seq in seqs])

    def note_failure(self, receiver: str, seqs: Sequence[int], detail: str,
                     kind: str = "alert") -> None:
        self._tx([(f"UPDATE {_table(kind)} SET attempts = attempts + 1, last_error = ? WHERE"
                   " receiver = ? AND seq = ?", (detail, receiver, seq)) for seq in seqs])

    def incident_opened(self, receiver: str, group_key: str, dedup_key: str) -> None:
        self._tx([("UPDATE incidents SET state = 'open', dedup_key = ? WHERE receiver = ? AND"
                   " group_key = ?", (dedup_key, receiver, group_key))])

    def incidents_due(self, receiver: str, quiet_secs: float | None,
                      now: float) -> list[tuple[str, str]]:
        """(group_key, dedup_key) of open incidents with no alert for quiet_secs (never, when
        None), or closed by a person (request_resolve), and none still waiting to be sent."""
        return [(g, d) for g, d in self._query(
            "SELECT group_key, dedup_key FROM incidents i WHERE receiver = ? AND (state ="
            " 'closing' OR (state = 'open' AND last_alert_at + ? <= ?)) AND NOT EXISTS"
            " (SELECT 1 FROM outbox o WHERE o.receiver = i.receiver AND o.group_key ="
            " i.group_key AND o.state IN ('pending', 'held'))",
            (receiver, math.inf if quiet_secs is None else quiet_secs, now))]

    def request_resolve(self, group_key: str) -> int:
        """A person closed the group's alert (the console): each receiver's open incident of
        the group is resolved at the sender's next pass, whatever its quiet period. Returns
        the incidents marked."""
        return self._tx([("UPDATE incidents SET state = 'closing' WHERE group_key = ? AND"
                          " state IN ('open', 'waiting')", (group_key,))])[0]

    def next_resolve_at(self, receiver: str, quiet_secs: float) -> float | None:
        return self._query("SELECT min(last_alert_at) + ? FROM incidents WHERE receiver = ?"
                           " AND state = 'open'", (quiet_secs, receiver))[0][0]

    def incident_resolved(self, receiver: str, group_key: str, resolved_before: float) -> None:
        # Only if no new alert arrived while the resolve was in flight.
        self._tx([("UPDATE incidents SET state = 'resolved' WHERE receiver = ? AND"
                   " group_key = ? AND (state = 'closing' OR last_alert_at <= ?)",
                   (receiver, group_key, resolved_before))])

    def enqueue_report(self, receivers: Sequence[str], delivery_id: str, notice: bytes,
                       now: float) -> int:
        """One row per receiver, durably; a delivery already there is not added again (a
        report run repeated after a crash). Returns how many were new."""
        return sum(self._tx([(
            "INSERT OR IGNORE INTO report_outbox (receiver, delivery_id, state, enqueued_at,"
            " notice) VALUES (?, ?, 'pending', ?, ?)", (receiver, delivery_id, now, notice))
            for receiver in receivers]))

    def pending_reports(self, receiver: str, limit: int) -> list[tuple[int, bytes]]:
        return self._query("SELECT seq, notice FROM report_outbox WHERE receiver = ? AND"
                           " state = 'pending' ORDER BY seq LIMIT ?", (receiver, limit))

    def report_counts(self) -> dict[tuple[str, str], int]:
        """(receiver, state) -> report deliveries: what /metrics shows of them."""
        return {(receiver, state): count for receiver, state, count in self._query(
            "SELECT receiver, state, count(*) FROM report_outbox GROUP BY receiver, state")}

    def counts_by_receiver(self) -> dict[tuple[str, str], int]:
        """(receiver, state) -> rows: what /metrics shows of the outbox."""
        return {(receiver, state): count for receiver, state, count in self._query(
            "SELECT receiver, state, count(*) FROM outbox GROUP BY receiver, state")}

    def counts(self, receiver: str | None = None) -> dict[str, int]:
        where, args = ("WHERE receiver = ?", (receiver,)) if receiver else ("", ())
        return dict(self._query(f"SELECT state, count(*) FROM outbox {where} GROUP BY state",
                                args))

    def prune(self, older_than: float) -> int:
        """Forget delivered and rejected rows older than `older_than` (the bus's own
        retention makes a replay of them unlikely after that)."""
        return sum(self._tx([(f"DELETE FROM {table} WHERE state IN ('delivered', 'rejected')"
                              " AND enqueued_at < ?", (older_than,))
                             for table in ("outbox", "report_outbox")]))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _table(kind: str) -> str:
    """Report deliveries have their own table (their rows are not alerts)."""
    return "report_outbox" if kind == "report" else "outbox"
