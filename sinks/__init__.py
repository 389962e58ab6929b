"""Where events, alerts and dead letters go: the stores (searchable) and, later, notifiers.

The registry is a type, so pydantic checks `store.type` and its keys.
"""

from __future__ import annotations

from sinks.sqlite import SqliteConfig

StoreConfig = SqliteConfig

__all__ = ["SqliteConfig", "StoreConfig"]
