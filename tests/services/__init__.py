"""Where the integration tests find the real Kafka and Elasticsearch.

`scripts/services up` starts both on loopback and prints these variables; `eval "$(scripts/services
env)"` exports them. Defaults match the script's default ports.

    from tests.services import elasticsearch_url, kafka_bootstrap
"""

from __future__ import annotations

import os

KAFKA_BOOTSTRAP_DEFAULT = "127.0.0.1:19092"
ELASTICSEARCH_URL_DEFAULT = "http://127.0.0.1:19200"


def kafka_bootstrap() -> str:
    """Kafka's bootstrap servers, `host:port[,host:port...]` (env KAFKA_BOOTSTRAP)."""
    return os.environ.get("KAFKA_BOOTSTRAP") or KAFKA_BOOTSTRAP_DEFAULT


def elasticsearch_url() -> str:
    """Elasticsearch's base URL, without a trailing slash (env ELASTICSEARCH_URL)."""
    return (os.environ.get("ELASTICSEARCH_URL") or ELASTICSEARCH_URL_DEFAULT).rstrip("/")
