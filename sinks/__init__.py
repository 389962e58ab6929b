"""Where events, alerts and dead letters go: the stores (searchable) and the notifiers
(sinks/notify: Slack, PagerDuty, webhooks; `NotifyConfig` is the `notify:` section).

The registry is a type, so pydantic checks `store.type` and its keys.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from sinks.elasticsearch import ElasticsearchConfig
from sinks.notify.config import NotifyConfig, ReceiverConfig
from sinks.sqlite import SqliteConfig

# One member per store; `store.type` picks it.
StoreConfig = Annotated[SqliteConfig | ElasticsearchConfig, Field(discriminator="type")]

__all__ = ["ElasticsearchConfig", "NotifyConfig", "ReceiverConfig", "SqliteConfig",
           "StoreConfig"]
