"""Where events, alerts and dead letters go: the stores (searchable) and, later, notifiers.

The registry is a type, so pydantic checks `store.type` and its keys.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from sinks.sqlite import SqliteConfig

# One member per store; `store.type` picks it. (A discriminated union of one member is not
# allowed by pydantic, so this becomes Annotated[A | B, Field(discriminator="type")] with two.)
StoreConfig = Annotated[SqliteConfig, Field(discriminator="type")]

__all__ = ["SqliteConfig", "StoreConfig"]
