"""SqliteStore: the embedded store behind `ctrail search`, `alerts` and `dlq list`.

Writes are idempotent (a document's id is its primary key: a replay after a crash inserts
nothing twice) and durable when `write` returns (WAL, synchronous=FULL), because the store
stage commits its input right after. One connection, shared by the threads of one process
under a lock; other processes (a `ctrail search` beside `ctrail run`) read concurrently.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Final, Sequence

import orjson

from ctrail.bus.codec import Item, encode
from ctrail.components import WriteResult
from ctrail.errors import ConfigError, Retryable, Unavailable
from ctrail.event import Alert, DeadLetterReplay, Event, Rejection
from ctrail.query import parse_query
from sinks.sqlite.search import Condition, micros, regexp

KINDS: Final = ("events", "alerts", "dead_letters", "dead_letter_replays")
# 2: dead_letter_replays. Every statement of schema.sql is IF NOT EXISTS, so an older store
# is brought up to date by running it again.
SCHEMA_VERSION: Final = 2


def kind_of(item: Item | DeadLetterReplay) -> str:
    if isinstance(item, Event):
        return "events"
    if isinstance(item, Alert):
        return "alerts"
    if isinstance(item, DeadLetterReplay):
        return "dead_letter_replays"
    assert isinstance(item, Rejection)
    return "dead_letters"


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the store {path}: {exc}") from None
        self._lock = threading.Lock()
        self._db.create_function("regexp", 2, regexp, deterministic=True)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")   # durable at commit: the bus commits next
        self._migrate()

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise ConfigError(f"the store {self.path} was written by a newer ContainerTrail "
                              f"(schema {version}, this one knows {SCHEMA_VERSION})")
        if version < SCHEMA_VERSION:
            schema = resources.files("sinks.sqlite").joinpath("schema.sql").read_text()
            with self._lock:
                self._db.executescript(f"BEGIN; {schema}; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")

    # ── the sink side ────────────────────────────────────────────────────────────────────────

    def write(self, items: Sequence[Item | DeadLetterReplay]) -> WriteResult:
        rows = [(kind_of(item), item, encode(item)) for item in items]
        try:
            with self._lock, _Transaction(self._db):
                for kind, item, doc in rows:
                    self._insert(kind, item, doc)
        except sqlite3.OperationalError as exc:     # locked, disk full: try again later
            raise Retryable(f"store {self.path}: {exc}") from exc
        return WriteResult(delivered=len(rows))

    def _insert(self, kind: str, item: Item | DeadLetterReplay, doc: bytes) -> None:
        cursor = self._db.execute(
            f"INSERT INTO {kind} (id, ts, doc) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (_id_of(item), micros(item.timestamp), doc.decode()))
        if cursor.rowcount == 1:                  # new: index its text too
            self._db.execute(f"INSERT INTO {kind}_text (rowid, body) VALUES (?, ?)",
                             (cursor.lastrowid, free_text(orjson.loads(doc))))

    def check(self) -> None:
        try:
            with self._lock:
                self._db.execute("SELECT 1 FROM events LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise Unavailable(f"store {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ── the search side ──────────────────────────────────────────────────────────────────────

    def search(self, query: str, kind: str = "events", time_from: datetime | None = None,
               time_to: datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` matching documents, oldest first; time_to is exclusive."""
        where, params = self._where(query, kind, time_from, time_to)
        sql = f"SELECT doc FROM {kind} WHERE {where} ORDER BY ts DESC, seq DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*params, limit)).fetchall()
        return [orjson.loads(doc) for (doc,) in reversed(rows)]

    def count(self, query: str, kind: str = "events", time_from: datetime | None = None,
              time_to: datetime | None = None) -> int:
        where, params = self._where(query, kind, time_from, time_to)
        with self._lock:
            (found,) = self._db.execute(f"SELECT count(*) FROM {kind} WHERE {where}",
                                        params).fetchone()
        return int(found)

    def _where(self, query: str, kind: str, time_from: datetime | None,
               time_to: datetime | None) -> tuple[str, list[Any]]:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        condition = Condition(kind)
        where = condition.sql(parse_query(query))
        if time_from is not None:
            where += f" AND ts >= {micros(time_from.astimezone(timezone.utc))}"
        if time_to is not None:
            where += f" AND ts < {micros(time_to.astimezone(timezone.utc))}"
        return where, condition.params


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any error (the connection is in autocommit)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _id_of(item: Item | DeadLetterReplay) -> str:
    return item.id if isinstance(item, Rejection | DeadLetterReplay) else item.event.id


def free_text(doc: dict[str, Any]) -> str:
    """What free-text search reads: the record as its source wrote it (event.original), and
    every other string and number except kubernetes.audit, which only repeats the original.
    (Tokenizing the original is ~5x faster than walking the parsed audit tree.)"""
    event = doc.get("event") or {}
    original = event.get("original", "")
    rest = {**doc, "event": {k: v for k, v in event.items() if k != "original"}}
    if isinstance(rest.get("kubernetes"), dict) and original:
        rest["kubernetes"] = {k: v for k, v in rest["kubernetes"].items() if k != "audit"}
    return "\n".join((original, *_strings(rest)))


def _strings(value: Any) -> list[str]:
    """Every string and number below `value` (an explicit stack: recursive generators pay
    once per level for every value they pass up)."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(reversed(item.values()))
        elif isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, str):
            found.append(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            found.append(str(item))
    return found
