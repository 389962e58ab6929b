"""SqliteStore: the embedded store behind `ctrail search`, `alerts` and `dlq list`.

Writes are idempotent (a document's id is unique: a replay after a crash inserts nothing
twice) and durable when `write` returns (WAL, synchronous=FULL: one fsync of the WAL per
`write`, which is one transaction of multi-row inserts), because the store stage commits its
input right after. One connection, shared by the threads of one process under a lock; other
processes (a `ctrail search` beside `ctrail run`) read concurrently.

What a row holds, and why (schema.sql says it in full): the hot fields as columns, filled here
from the item; the document and the raw record once, compressed together in `record`
(records.py; `kubernetes.audit` not kept when it is that record parsed, and an alert's raw
record not kept when its event holds it); the free text from fields chosen once, built here
from the item, never by parsing JSON.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Final, Iterable, Iterator, Sequence

import orjson
from pydantic import BaseModel, ValidationError

from ctrail.bus.codec import Item
from ctrail.components import WriteResult
from ctrail.errors import ConfigError, Retryable, Unavailable
from ctrail.event import Alert, DeadLetterReplay, Event, Rejection
from ctrail.query import Query, Text, as_query
from sinks.sqlite.records import TRAIN_ROWS, TRAIN_SAMPLES, Packer, payload
from sinks.sqlite.search import HOT, Condition, fts_match, micros, regexp

KINDS: Final = ("events", "alerts", "dead_letters", "dead_letter_replays")
# 2: dead_letter_replays. 3: hot fields as columns, the raw record kept once, free text from
# chosen fields. 4: the document and raw record in one zstd blob with a trained dictionary
# (an older store is migrated in place, in one transaction, when opened).
SCHEMA_VERSION: Final = 4
MODEL_OF_KIND: Final[dict[str, type[BaseModel]]] = {
    "events": Event, "alerts": Alert, "dead_letters": Rejection,
    "dead_letter_replays": DeadLetterReplay,
}
# What `search` reads back: the row's record and, for an alert that refers to its event's raw
# record, that event's record (schema.sql).
STREAM_PAGE: Final = 500              # rows `stream` reads and decodes at a time
READ: Final = {
    "events": "record, NULL",
    "alerts": "record, (SELECT e.record FROM events e WHERE e.id = alerts.original_of)",
    "dead_letters": "record, NULL",
    "dead_letter_replays": "record, NULL",
}
Row = list[Any]


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
        self._packer = Packer()
        self._packer.register(self._db)
        # Rows of a kind at which to train its dictionary (doubled when zstd finds too little).
        self._train_at = dict.fromkeys(KINDS, TRAIN_ROWS)
        # A new store's pages hold ~10 of its 1.5 KB event rows instead of 2 (a 4 KB page left a
        # third of itself empty); it takes effect only before the first table is created.
        self._db.execute("PRAGMA page_size = 16384")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")   # durable at commit: the bus commits next
        # A checkpoint syncs the WAL and the database file: every ~64 MiB, not every ~4 MiB
        # (the default 1000 pages is about one 1000-event batch).
        self._db.execute("PRAGMA wal_autocheckpoint = 16384")
        self._db.execute("PRAGMA journal_size_limit = 67108864")
        self._db.execute("PRAGMA cache_size = -65536")
        self._migrate()
        self._packer.refresh(self._db)
        # Rows per kind when the planner's statistics were last taken (see _plan_statistics).
        self._analyzed = {kind: self._rows(kind) if self._has_statistics() else 0
                          for kind in KINDS}

    def _rows(self, kind: str) -> int:
        (rows,) = self._db.execute(f"SELECT coalesce(max(seq), 0) FROM {kind}").fetchone()
        return int(rows)

    def _has_statistics(self) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'"
                                ).fetchone() is not None

    def _plan_statistics(self, kinds: Iterable[str]) -> None:
        """ANALYZE (sampled) each time a table has doubled: which hot-column index to lead
        with (`user.name:x AND event.action:y`) depends on how many rows each value has."""
        for kind in kinds:
            rows = self._rows(kind)
            if rows >= 1000 and rows >= 2 * self._analyzed[kind]:
                self._db.execute("PRAGMA analysis_limit = 1000")
                self._db.execute(f"ANALYZE {kind}")
                self._analyzed[kind] = rows

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise ConfigError(f"the store {self.path} was written by a newer ContainerTrail "
                              f"(schema {version}, this one knows {SCHEMA_VERSION})")
        if version == SCHEMA_VERSION:
            return
        schema = resources.files("sinks.sqlite").joinpath("schema.sql").read_text()
        with self._lock, _Transaction(self._db, self._packer):
            old = _rename_old_tables(self._db) if version > 0 else []
            for statement in statements(schema):
                self._db.execute(statement)
            for kind in old:            # events first: a v3 alert reads its event's raw record
                self._copy_old(kind)
            for kind in old:
                self._db.execute(f"DROP TABLE v{version}_{kind}")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if old:
            # The old tables' pages are free now: give them back (a 20 000-event v3 store of
            # 46 MB is 16 MB after, not 54), unless the disk is too full to rewrite the file
            # (then new rows reuse them).
            try:
                self._db.execute("VACUUM")
            except sqlite3.Error:
                pass

    def _copy_old(self, kind: str) -> None:
        """A table of an older schema (renamed v{N}_{kind}) into the new one, in arrival
        order, through the same rows as `write` builds."""
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        model = MODEL_OF_KIND[kind]
        cursor = self._db.execute(_old_documents(kind, version))
        while chunk := cursor.fetchmany(1000):
            items = []
            for id_, doc, original, audit in chunk:
                try:
                    items.append(model.model_validate_json(
                        orjson.dumps(document(doc, original, audit))))
                except ValidationError as exc:
                    raise ConfigError(
                        f"cannot migrate the store {self.path} to schema {SCHEMA_VERSION}: "
                        f"{kind} document {id_} does not read as this version's model "
                        f"({exc.error_count()} errors); the store is left as it was "
                        f"(schema {version}): open it with the version that wrote it and "
                        f"export it, or move it aside to start a new one") from None
            self._insert(kind, items)

    # ── the sink side ────────────────────────────────────────────────────────────────────────

    def write(self, items: Sequence[Item | DeadLetterReplay]) -> WriteResult:
        by_kind: dict[str, list[Any]] = {kind: [] for kind in KINDS}
        for item in items:
            by_kind[kind_of(item)].append(item)
        try:
            with self._lock, _Transaction(self._db, self._packer):
                for kind in KINDS:          # events before alerts: an alert refers to its event
                    if by_kind[kind]:
                        self._insert(kind, by_kind[kind])
            with self._lock:
                self._plan_statistics(kind for kind in KINDS if by_kind[kind])
        except sqlite3.OperationalError as exc:     # locked, disk full: try again later
            raise Retryable(f"store {self.path}: {exc}") from exc
        return WriteResult(delivered=len(items))

    def _insert(self, kind: str, items: Iterable[Any]) -> None:
        """Multi-row insert of the items not stored yet, and their free text; in the caller's
        transaction. New rows are told by their seq: SQLite gives a new row max(seq) + 1."""
        rows: dict[str, Row] = {}
        texts: dict[str, str] = {}
        build, text_of = ROW_OF[kind], TEXT_OF[kind]
        for item in items:
            row = build(item)
            if row[0] not in rows:                   # the first of a repeated id, as stored
                rows[row[0]] = row
                texts[row[0]] = text_of(item)
        if kind == "alerts":
            self._refer_to_events(rows.values())
        (before,) = self._db.execute(f"SELECT coalesce(max(seq), 0) FROM {kind}").fetchone()
        payloads = [payload(*row[-1]) for row in rows.values()]
        if not self._packer.has_dictionary(kind) and before + len(rows) >= self._train_at[kind]:
            self._train(kind, payloads)
        for row, data in zip(rows.values(), payloads):
            row[-1] = self._packer.pack(kind, data)
        self._db.executemany(INSERT[kind], rows.values())
        # The new rows are those past `before`: one range read of the primary key, not a
        # look-up by id per row.
        added = self._db.execute(f"SELECT seq, id FROM {kind} WHERE seq > ?", (before,))
        self._db.executemany(f"INSERT INTO {kind}_text (rowid, body) VALUES (?, ?)",
                             ((seq, texts[id_]) for seq, id_ in added.fetchall()))

    def _train(self, kind: str, payloads: list[bytes]) -> None:
        """Train `kind`'s dictionary on this batch and the newest rows stored, and pack the
        rows stored before it again with it (records.py); in the caller's transaction."""
        stored = self._db.execute(f"SELECT seq, record FROM {kind} WHERE substr(record, 1, 1) "
                                  f"= x'00' ORDER BY seq DESC").fetchall()
        unpack = self._packer.unpack
        samples = [*payloads, *(payload(parts.doc.encode(), parts.original, parts.audit)
                                for _, record in stored[:TRAIN_SAMPLES]
                                for parts in (unpack(record),))]
        if not self._packer.train(self._db, kind, samples[:TRAIN_SAMPLES]):
            self._train_at[kind] *= 2                # too little to learn from yet
            return
        self._db.executemany(f"UPDATE {kind} SET record = ? WHERE seq = ?", (
            (self._packer.pack(kind, payload(parts.doc.encode(), parts.original, parts.audit)),
             seq) for seq, record in stored for parts in (unpack(record),)))

    def _refer_to_events(self, rows: Iterable[Row]) -> None:
        """An alert whose raw record is its (stored) event's keeps only that event's id."""
        wanted = [row for row in rows if row[-1][ORIGINAL] and row[ALERT_ORIGINAL_OF]]
        ids = sorted({row[ALERT_ORIGINAL_OF] for row in wanted})
        stored: dict[str, str | None] = {}
        for at in range(0, len(ids), 500):
            part = ids[at:at + 500]
            stored.update((id_, self._packer.unpack(record).original) for id_, record in
                          self._db.execute(f"SELECT id, record FROM events WHERE id IN "
                                           f"({', '.join('?' * len(part))})", part))
        for row in rows:
            if row[ALERT_ORIGINAL_OF] is not None and \
                    stored.get(row[ALERT_ORIGINAL_OF]) == row[-1][ORIGINAL]:
                row[-1][ORIGINAL] = None
            else:
                row[ALERT_ORIGINAL_OF] = None

    def check(self) -> None:
        try:
            with self._lock:
                self._db.execute("SELECT 1 FROM events LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise Unavailable(f"store {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA optimize")     # statistics for the query planner
            except sqlite3.Error:
                pass
            self._db.close()

    # ── the search side ──────────────────────────────────────────────────────────────────────

    def search(self, query: str | Query, kind: str = "events",
               time_from: datetime | None = None, time_to: datetime | None = None,
               limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` matching documents, oldest first; time_to is exclusive."""
        where, params = self._where(query, kind, time_from, time_to)
        sql = (f"SELECT {READ[kind]} FROM {kind} WHERE {where} "
               f"ORDER BY ts DESC, seq DESC LIMIT ?")
        with self._lock:
            self._packer.refresh(self._db)         # dictionaries a writer trained since
            rows = self._db.execute(sql, (*params, limit)).fetchall()
            return [self._document(*row) for row in reversed(rows)]

    def stream(self, query: str | Query, kind: str = "events",
               time_from: datetime | None = None, time_to: datetime | None = None,
               limit: int = 100) -> Iterator[dict[str, Any]]:
        """What `search` returns, in its order, each document decoded as it is read: the
        oldest of the newest `limit` is found first (one walk of the ts index), then pages of
        rows are read forward from it, each after the last one given, so memory holds a page
        of rows, not `limit` documents."""
        where, params = self._where(query, kind, time_from, time_to)
        with self._lock:
            self._packer.refresh(self._db)
            start = self._db.execute(f"SELECT ts, seq FROM {kind} WHERE {where} "
                                     "ORDER BY ts DESC, seq DESC LIMIT 1 OFFSET ?",
                                     (*params, limit - 1)).fetchone()
        position, inclusive, left = (start or (None, None)), True, limit
        while left > 0:
            after = "" if position[0] is None else \
                f" AND (ts > ? OR (ts = ? AND seq {'>=' if inclusive else '>'} ?))"
            bounds = [] if position[0] is None else [position[0], position[0], position[1]]
            with self._lock:
                rows = self._db.execute(
                    f"SELECT ts, seq, {READ[kind]} FROM {kind} WHERE ({where}){after} "
                    "ORDER BY ts, seq LIMIT ?", (*params, *bounds, min(STREAM_PAGE, left))
                ).fetchall()
                page = [self._document(record, event_record) for _, _, record, event_record
                        in rows]
            yield from page
            if len(rows) < STREAM_PAGE:
                return
            position, inclusive, left = (rows[-1][0], rows[-1][1]), False, left - len(rows)

    def _document(self, record: bytes, event_record: bytes | None) -> dict[str, Any]:
        """The document of a row, and of an alert the raw record from its event's row."""
        parts = self._packer.unpack(record)
        original = parts.original
        if original is None and event_record is not None:
            original = self._packer.unpack(event_record).original
        return document(parts.doc, original, parts.audit)

    def count(self, query: str | Query, kind: str = "events",
              time_from: datetime | None = None, time_to: datetime | None = None) -> int:
        tree = as_query(query) if kind in KINDS else None
        if isinstance(tree, Text) and time_from is None and time_to is None:
            # Free text alone: the text index has one row per document, count its matches.
            sql = f"SELECT count(*) FROM {kind}_text WHERE {kind}_text MATCH ?"
            with self._lock:
                (found,) = self._db.execute(sql, (fts_match(tree),)).fetchone()
            return int(found)
        where, params = self._where(query, kind, time_from, time_to)
        with self._lock:
            self._packer.refresh(self._db)
            (found,) = self._db.execute(f"SELECT count(*) FROM {kind} WHERE {where}",
                                        params).fetchone()
        return int(found)

    def _where(self, query: str | Query, kind: str, time_from: datetime | None,
               time_to: datetime | None) -> tuple[str, list[Any]]:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        condition = Condition(kind)
        tree = as_query(query)
        where = condition.sql(tree)
        if time_from is not None:
            where += f" AND ts >= {micros(time_from.astimezone(timezone.utc))}"
        if time_to is not None:
            where += f" AND ts < {micros(time_to.astimezone(timezone.utc))}"
        return where, condition.params


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any error (the connection is in autocommit).
    The packer learns the outcome: a dictionary trained in a transaction rolled back is not
    in the file, so no record may be packed with it."""

    def __init__(self, db: sqlite3.Connection, packer: Packer) -> None:
        self._db = db
        self._packer = packer

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self._db.execute("COMMIT")
                self._packer.committed()
                return
        except sqlite3.Error:
            self._rollback()            # a COMMIT that failed (a full disk) may leave it open
            raise
        self._rollback()

    def _rollback(self) -> None:
        self._packer.rolled_back()
        if self._db.in_transaction:     # SQLite rolls back by itself after SQLITE_FULL
            self._db.execute("ROLLBACK")


def statements(script: str) -> Iterator[str]:
    """The SQL statements of a script, one at a time (executescript would commit first)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""


def _old_documents(kind: str, version: int) -> str:
    """SQL for (id, doc, original, audit) of an older schema's table, in arrival order: v1
    and v2 kept the whole document in `doc`; v3 kept the raw and audit records in columns of
    their own, and an alert's raw record in its event's row (see schema.sql)."""
    table = f"v{version}_{kind}"
    if version < 3 or kind not in ("events", "alerts"):
        return f"SELECT id, doc, NULL, NULL FROM {table} ORDER BY seq"
    if kind == "events":
        return f"SELECT id, doc, original, audit FROM {table} ORDER BY seq"
    # The alert's event may be in the new events table already (copied first) or still in v3's.
    return (f"SELECT a.id, a.doc, coalesce(a.original, (SELECT e.original FROM v{version}_events e "
            f"WHERE e.id = a.original_of)), a.audit FROM {table} a ORDER BY a.seq")


def _rename_old_tables(db: sqlite3.Connection) -> list[str]:
    """Set an older schema's tables aside as v{N}_{kind} (their indexes and text indexes
    dropped: the new schema reuses the names); the kinds found."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    found = []
    for kind in KINDS:
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                      (kind,)).fetchone() is None:
            continue
        for (index,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                                   "tbl_name = ? AND sql IS NOT NULL", (kind,)).fetchall():
            db.execute(f'DROP INDEX "{index}"')
        db.execute(f"DROP TABLE IF EXISTS {kind}_text")
        db.execute(f"ALTER TABLE {kind} RENAME TO v{version}_{kind}")
        found.append(kind)
    return found


# ── rows ─────────────────────────────────────────────────────────────────────────────────────

def document(doc: str, original: str | None, audit: str | None) -> dict[str, Any]:
    """The document as the bus carried it, from a row (schema.sql)."""
    found: dict[str, Any] = orjson.loads(doc)
    if original is not None:
        event = found.get("event")
        if isinstance(event, dict):             # event.original back in its place
            rebuilt = {}
            for key, value in event.items():
                if key == "ingested":
                    rebuilt["original"] = original
                rebuilt[key] = value
            rebuilt.setdefault("original", original)
            found["event"] = rebuilt
    if audit is not None:
        audit_doc = orjson.loads(original if audit == "" and original is not None else audit)
        found.setdefault("kubernetes", {})["audit"] = audit_doc
    return found


def _record_parts(item: Event | Alert) -> tuple[str | None, bytes]:
    """(audit column, doc) of an event or alert: the document without event.original, and
    without kubernetes.audit unless it cannot be kept apart."""
    k8s = item.kubernetes
    audit = k8s.audit if k8s is not None else None
    column: str | None = None
    exclude: dict[str, Any] = {"event": {"original"}}
    if audit is not None:
        try:
            as_json = orjson.dumps(audit)
        except (orjson.JSONEncodeError, TypeError):
            as_json = None                        # e.g. an integer beyond 64 bits: keep it in doc
        if as_json is not None:
            column = "" if _is_original(as_json, audit, item.event.original) else as_json.decode()
            exclude["kubernetes"] = {"audit"}
    doc = item.__pydantic_serializer__.to_json(item, by_alias=True, exclude_none=True,
                                               exclude=exclude)
    return column, doc


def _is_original(as_json: bytes, audit: dict[str, Any], original: str) -> bool:
    """Whether the audit record is the raw record parsed (an audit-log line), so the row can
    rebuild it from `original`. Comparing bytes decides most lines without parsing; a line
    kube-apiserver wrote with its own escaping (\\u0026) or spacing is parsed to compare."""
    if as_json == original.encode():
        return True
    # A webhook's EventList item never is (its kind and apiVersion come from the list, not
    # its bytes): told without parsing it, by the apiVersion missing from those bytes.
    version = audit.get("apiVersion")
    if isinstance(version, str) and f'"{version}"' not in original:
        return False
    try:
        return bool(orjson.loads(original) == audit)
    except orjson.JSONDecodeError:
        return False


def _event_row(item: Event) -> Row:
    audit, doc = _record_parts(item)
    info, user, k8s, container = item.event, item.user, item.kubernetes, item.container
    resource = item.orchestrator.resource if item.orchestrator is not None else None
    return [info.id, micros(item.timestamp),
            info.action,
            user.name if user is not None else None,
            k8s.namespace if k8s is not None else None,
            item.source.ip if item.source is not None else None,
            container.id if container is not None else None,
            k8s.pod.name if k8s is not None and k8s.pod is not None else None,
            resource.type if resource is not None else None,
            info.dataset, info.outcome,
            [doc, info.original, audit]]


def _alert_row(item: Alert) -> Row:
    audit, doc = _record_parts(item)
    k8s, user, container = item.kubernetes, item.user, item.container
    return [item.event.id, micros(item.timestamp),
            item.rule.id, item.alert.severity,
            user.name if user is not None else None,
            k8s.namespace if k8s is not None else None,
            container.id if container is not None else None,
            k8s.pod.name if k8s is not None and k8s.pod is not None else None,
            item.alert.event_ids[0] if item.alert.event_ids else None,
            [doc, item.event.original, audit]]


def _dead_letter_row(item: Rejection) -> Row:
    return [item.id, micros(item.timestamp), item.reason, item.stage, [_doc(item), None, None]]


def _replay_row(item: DeadLetterReplay) -> Row:
    return [item.id, micros(item.timestamp), item.dead_letter_id, [_doc(item), None, None]]


def _doc(item: BaseModel) -> bytes:
    return item.__pydantic_serializer__.to_json(item, by_alias=True, exclude_none=True)


ROW_OF: Final[dict[str, Callable[[Any], Row]]] = {
    "events": _event_row, "alerts": _alert_row, "dead_letters": _dead_letter_row,
    "dead_letter_replays": _replay_row,
}
# A built row is these columns' values, the last (`record`) still [doc, original, audit]
# until `_insert` packs it.
COLUMNS: Final = {
    "events": ("id", "ts", *HOT["events"].values(), "record"),
    "alerts": ("id", "ts", *HOT["alerts"].values(), "original_of", "record"),
    "dead_letters": ("id", "ts", *HOT["dead_letters"].values(), "record"),
    "dead_letter_replays": ("id", "ts", *HOT["dead_letter_replays"].values(), "record"),
}
ORIGINAL: Final = 1                 # in a built row's [doc, original, audit]
ALERT_ORIGINAL_OF: Final = COLUMNS["alerts"].index("original_of")
INSERT: Final = {
    kind: f"INSERT INTO {kind} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
          f"ON CONFLICT (id) DO NOTHING"
    for kind, columns in COLUMNS.items()
}


# ── free text (the fields schema.sql lists) ──────────────────────────────────────────────────

def _event_text(item: Event) -> str:
    info = item.event
    parts: list[Any] = [item.message, info.action, info.dataset, info.outcome, *item.tags]
    add, extend = parts.append, parts.extend
    if item.user is not None:
        extend((item.user.name, item.user.id))
    if item.related is not None:
        extend(item.related.user)
        extend(item.related.ip)
    if item.source is not None:
        add(item.source.ip)
    if item.user_agent is not None:
        add(item.user_agent.original)
    k8s = item.kubernetes
    if k8s is not None:
        add(k8s.namespace)
        for part in (k8s.pod, k8s.node, k8s.container):
            if part is not None:
                add(part.name)
    if item.container is not None:
        container = item.container
        extend((container.id, container.name))
        if container.image is not None:
            add(container.image.name)
            extend(container.image.tag)
    orchestrator = item.orchestrator
    if orchestrator is not None:
        add(orchestrator.namespace)
        if orchestrator.resource is not None:
            extend((orchestrator.resource.type, orchestrator.resource.name))
    trail = item.containertrail
    if trail is not None:
        if trail.workload is not None:
            extend((trail.workload.kind, trail.workload.name))
        for actor in (trail.deployed_by, trail.image_pushed_by):
            if actor is not None:
                extend((actor.name, actor.ip))
    if item.host is not None:
        add(item.host.name)
    process = item.process
    if process is not None:
        extend((process.name, process.executable, process.command_line))
        if process.parent is not None:
            extend((process.parent.name, process.parent.command_line))
    if item.rule is not None:
        extend((item.rule.id, item.rule.name))
    registry = item.registry
    if registry is not None:
        extend((registry.repository, registry.tag, registry.digest, registry.host))
    docker = item.docker
    if docker is not None:
        extend((docker.type, docker.actor_id))
        if docker.attributes:
            extend(docker.attributes.values())
    if item.falco:
        extend((item.falco.get("output"), item.falco.get("rule")))
    audit = k8s.audit if k8s is not None else None
    if audit:
        extend(_audit_text(audit))
    elif not item.message:
        add(info.original)                         # the raw record is its only text
    return "\n".join([part for part in parts if part and isinstance(part, str)])


def _audit_text(audit: dict[str, Any]) -> list[Any]:
    parts: list[Any] = [audit.get("requestURI"), audit.get("verb"), audit.get("userAgent")]
    for key in ("user", "impersonatedUser"):
        user = audit.get(key)
        if isinstance(user, dict):
            parts.append(user.get("username"))
            groups = user.get("groups")
            if isinstance(groups, list):
                parts.extend(groups)
    ref = audit.get("objectRef")
    if isinstance(ref, dict):
        parts.extend(ref.get(k) for k in ("resource", "subresource", "name", "namespace",
                                          "apiGroup"))
    status = audit.get("responseStatus")
    if isinstance(status, dict):
        parts.extend((status.get("reason"), status.get("message"), status.get("status")))
    annotations = audit.get("annotations")
    if isinstance(annotations, dict):
        parts.extend(annotations.values())
    request = audit.get("requestObject")
    if isinstance(request, dict):
        spec = _dict(request.get("spec"))
        for pod_spec in (spec, _dict(_dict(spec.get("template")).get("spec")),
                         _dict(_dict(_dict(_dict(spec.get("jobTemplate")).get("spec"))
                                     .get("template")).get("spec"))):
            for key in ("containers", "initContainers", "ephemeralContainers"):
                for container in _list(pod_spec.get(key)):
                    if isinstance(container, dict):
                        parts.extend((container.get("name"), container.get("image")))
                        parts.extend(_list(container.get("command")))
                        parts.extend(_list(container.get("args")))
        parts.append(_dict(request.get("roleRef")).get("name"))
        for subject in _list(request.get("subjects")):
            if isinstance(subject, dict):
                parts.extend((subject.get("kind"), subject.get("name")))
    return parts


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _alert_text(item: Alert) -> str:
    rule, alert = item.rule, item.alert
    parts: list[Any] = [rule.id, rule.name, rule.description, rule.ruleset, item.event.action,
                        alert.severity, alert.group_key, *item.tags]
    if item.threat is not None:
        if item.threat.technique is not None:
            parts.extend(item.threat.technique.id)
        if item.threat.tactic is not None:
            parts.extend(item.threat.tactic.name)
    if item.user is not None:
        parts.append(item.user.name)
    if item.source is not None:
        parts.append(item.source.ip)
    k8s = item.kubernetes
    if k8s is not None:
        parts.append(k8s.namespace)
        for part in (k8s.pod, k8s.node, k8s.container):
            if part is not None:
                parts.append(part.name)
    if item.container is not None:
        parts.extend((item.container.id, item.container.name))
        if item.container.image is not None:
            parts.append(item.container.image.name)
    if item.orchestrator is not None and item.orchestrator.resource is not None:
        parts.extend((item.orchestrator.resource.type, item.orchestrator.resource.name))
    return "\n".join([part for part in parts if part and isinstance(part, str)])


def _dead_letter_text(item: Rejection) -> str:
    parts = [item.stage, item.reason, item.detail, item.dataset, item.origin,
             item.original if item.original_encoding == "utf-8" else None]
    return "\n".join(part for part in parts if part)


def _replay_text(item: DeadLetterReplay) -> str:
    parts = [item.dead_letter_id, item.stage, item.outcome, item.successor, item.reason]
    return "\n".join(part for part in parts if part)


TEXT_OF: Final[dict[str, Callable[[Any], str]]] = {
    "events": _event_text, "alerts": _alert_text, "dead_letters": _dead_letter_text,
    "dead_letter_replays": _replay_text,
}
