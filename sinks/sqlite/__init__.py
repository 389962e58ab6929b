"""The embedded store: SQLite (WAL) with an FTS5 index, answering the shared search language."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from sinks.sqlite.store import SqliteStore


class SqliteConfig(BaseModel):
    """Store events, alerts and dead letters in one SQLite file in the data directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["sqlite"] = "sqlite"
    path: Path | None = Field(None, description="The database file (default: DATA_DIR/store.sqlite3).")

    def build(self, data_dir: Path) -> SqliteStore:
        from sinks.sqlite.store import SqliteStore

        return SqliteStore(self.path or data_dir / "store.sqlite3")
