"""The console database, DATA_DIR/console.db: users, API tokens, sessions, failed logins and
the triage records of alerts.

Secrets never enter it in the clear: passwords are argon2 hashes (auth.py), and API tokens and
session ids are kept as SHA-256 digests (they are 32 random bytes, so a digest cannot be
guessed back, and a stolen database opens no session). Triage records are append-only: SQL
triggers refuse UPDATE and DELETE on them, so an alert's history is what happened.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Iterator

import orjson

from ctrail.errors import ConfigError, UsageError

FILE_NAME: Final = "console.db"
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL,
    namespaces TEXT NOT NULL DEFAULT '[]', clusters TEXT NOT NULL DEFAULT '[]',
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    label TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    digest TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    csrf TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS failed_logins (key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS failed_logins_key ON failed_logins (key, at);
CREATE TABLE IF NOT EXISTS oidc_pending (
    state TEXT PRIMARY KEY, nonce TEXT NOT NULL, verifier TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS triage (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL, action TEXT NOT NULL,
    user TEXT NOT NULL, at REAL NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS triage_alert ON triage (alert_id, seq);
CREATE TRIGGER IF NOT EXISTS triage_no_update BEFORE UPDATE ON triage
    BEGIN SELECT RAISE(ABORT, 'triage records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS triage_no_delete BEFORE DELETE ON triage
    BEGIN SELECT RAISE(ABORT, 'triage records are append-only'); END;
"""


class Role(StrEnum):
    """What a user may do: read (viewer), also triage alerts (responder), also manage users
    (admin). Ordered: each role may do what the ones before it may."""

    VIEWER = "viewer"
    RESPONDER = "responder"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    namespaces: tuple[str, ...] = ()     # empty: every namespace
    clusters: tuple[str, ...] = ()       # empty: every cluster

    @property
    def scoped(self) -> bool:
        return bool(self.namespaces or self.clusters)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role.value, "namespaces": list(self.namespaces),
                "clusters": list(self.clusters)}


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ConsoleDb:
    """One connection, used under a lock (the console serves requests from a thread pool)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE_NAME
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the console database {self.path}: {exc}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # ── users ─────────────────────────────────────────────────────────────────────────────────

    def add_user(self, user: User, password_hash: str) -> None:
        try:
            self._run("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)",
                      (user.name, password_hash, user.role.value, _json(user.namespaces),
                       _json(user.clusters), time.time()))
        except sqlite3.IntegrityError:
            raise UsageError(f"user {user.name!r} exists already") from None

    def user(self, name: str) -> User | None:
        rows = self._run("SELECT name, role, namespaces, clusters FROM users WHERE name = ?",
                         (name,))
        return _user(rows[0]) if rows else None

    def password_hash(self, name: str) -> str | None:
        rows = self._run("SELECT password_hash FROM users WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def set_password_hash(self, name: str, password_hash: str) -> None:
        self._run("UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name))

    def users(self) -> list[User]:
        return [_user(row) for row in self._run(
            "SELECT name, role, namespaces, clusters FROM users ORDER BY name")]

    def update_user(self, user: User) -> None:
        """Role and scopes; a change ends the user's sessions (they log in again with it)."""
        self._need(user.name)
        self._run("UPDATE users SET role = ?, namespaces = ?, clusters = ? WHERE name = ?",
                  (user.role.value, _json(user.namespaces), _json(user.clusters), user.name))
        self._run("DELETE FROM sessions WHERE user = ?", (user.name,))

    def remove_user(self, name: str) -> None:
        """The user, their tokens and sessions. Their triage records stay: history is kept."""
        self._need(name)
        self._run("DELETE FROM users WHERE name = ?", (name,))

    def _need(self, name: str) -> None:
        if self.user(name) is None:
            raise UsageError(f"no user {name!r}")

    # ── API tokens and sessions (kept as digests) ────────────────────────────────────────────

    def add_token(self, user: str, token: str, label: str) -> None:
        self._need(user)
        self._run("INSERT INTO tokens VALUES (?, ?, ?, ?)", (digest(token), user, label,
                                                             time.time()))

    def token_user(self, token: str) -> User | None:
        rows = self._run("SELECT u.name, u.role, u.namespaces, u.clusters FROM tokens t "
                         "JOIN users u ON u.name = t.user WHERE t.digest = ?", (digest(token),))
        return _user(rows[0]) if rows else None

    def add_session(self, session_id: str, user: str, csrf: str, expires: float) -> None:
        self._run("DELETE FROM sessions WHERE expires < ?", (time.time(),))
        self._run("INSERT INTO sessions VALUES (?, ?, ?, ?)",
                  (digest(session_id), user, csrf, expires))

    def session(self, session_id: str) -> tuple[User, str] | None:
        """(the user, the session's CSRF token) of a live session."""
        rows = self._run("SELECT u.name, u.role, u.namespaces, u.clusters, s.csrf FROM sessions s"
                         " JOIN users u ON u.name = s.user WHERE s.digest = ? AND s.expires > ?",
                         (digest(session_id), time.time()))
        return (_user(rows[0][:4]), str(rows[0][4])) if rows else None

    def end_session(self, session_id: str) -> None:
        self._run("DELETE FROM sessions WHERE digest = ?", (digest(session_id),))

    # ── OpenID Connect logins under way (their state kept as a digest, used once) ──────────

    def add_oidc_pending(self, state: str, nonce: str, verifier: str, expires: float) -> None:
        self._run("DELETE FROM oidc_pending WHERE expires < ?", (time.time(),))
        self._run("INSERT INTO oidc_pending VALUES (?, ?, ?, ?)",
                  (digest(state), nonce, verifier, expires))

    def take_oidc_pending(self, state: str) -> tuple[str, str, float] | None:
        """(nonce, verifier, expires) of a login under way, removed: a state works once."""
        with self._lock:
            row = self._db.execute("DELETE FROM oidc_pending WHERE state = ? RETURNING nonce, "
                                   "verifier, expires", (digest(state),)).fetchone()
        return (str(row[0]), str(row[1]), float(row[2])) if row else None

    # ── failed logins ─────────────────────────────────────────────────────────────────────────

    def failed_login(self, keys: tuple[str, ...], at: float) -> None:
        for key in keys:
            self._run("INSERT INTO failed_logins VALUES (?, ?)", (key, at))

    def failures_since(self, key: str, since: float) -> int:
        self._run("DELETE FROM failed_logins WHERE at < ?", (since - 86400,))
        return int(self._run("SELECT count(*) FROM failed_logins WHERE key = ? AND at >= ?",
                             (key, since))[0][0])

    # ── triage: append-only ───────────────────────────────────────────────────────────────────

    def append_triage(self, alert_id: str, action: str, user: str,
                      detail: dict[str, Any]) -> dict[str, Any]:
        at = time.time()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO triage (alert_id, action, user, at, detail) VALUES (?, ?, ?, ?, ?)",
                (alert_id, action, user, at, _json(detail)))
        return {"seq": cursor.lastrowid, "alert_id": alert_id, "action": action, "user": user,
                "at": at, **detail}

    def triage_history(self, alert_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for chunk in _chunks(alert_ids, 500):
            marks = ", ".join("?" * len(chunk))
            for seq, alert_id, action, user, at, detail in self._run(
                    f"SELECT seq, alert_id, action, user, at, detail FROM triage "
                    f"WHERE alert_id IN ({marks}) ORDER BY seq", tuple(chunk)):
                found.setdefault(alert_id, []).append(
                    {"seq": seq, "alert_id": alert_id, "action": action, "user": user,
                     "at": at, **orjson.loads(detail)})
        return found


def _user(row: tuple[Any, ...]) -> User:
    name, role, namespaces, clusters = row
    return User(name, Role(role), tuple(orjson.loads(namespaces)), tuple(orjson.loads(clusters)))


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
