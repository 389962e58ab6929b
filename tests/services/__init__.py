"""Where the integration tests find the real Kafka and Elasticsearch.

`scripts/services up` starts both on loopback and prints these variables; `eval "$(scripts/services
env)"` exports them. Defaults match the script's default ports.

    from tests.services import elasticsearch_url, kafka_bootstrap
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

KAFKA_BOOTSTRAP_DEFAULT = "127.0.0.1:19092"
KAFKA_SASL_BOOTSTRAP_DEFAULT = "127.0.0.1:19094"
# The test credential scripts/services gives its SASL_SSL listener (Event Hubs' form).
KAFKA_SASL_CONNECTION_STRING_DEFAULT = (
    "Endpoint=sb://ctrail-test.servicebus.windows.net/;SharedAccessKeyName="
    "RootManageSharedAccessKey;SharedAccessKey=Y3RyYWlsLXRlc3Qta2V5")
ELASTICSEARCH_URL_DEFAULT = "http://127.0.0.1:19200"


def kafka_bootstrap() -> str:
    """Kafka's bootstrap servers, `host:port[,host:port...]` (env KAFKA_BOOTSTRAP)."""
    return os.environ.get("KAFKA_BOOTSTRAP") or KAFKA_BOOTSTRAP_DEFAULT


def elasticsearch_url() -> str:
    """Elasticsearch's base URL, without a trailing slash (env ELASTICSEARCH_URL)."""
    return (os.environ.get("ELASTICSEARCH_URL") or ELASTICSEARCH_URL_DEFAULT).rstrip("/")


def kafka_sasl() -> tuple[str, Path, str]:
    """Kafka's SASL_SSL (PLAIN) listener, as Azure Event Hubs' Kafka endpoint: its bootstrap
    servers, the PEM of the CA that signed its certificate, and the Event Hubs connection
    string it accepts as user `$ConnectionString` (env KAFKA_SASL_BOOTSTRAP, KAFKA_SASL_CA,
    KAFKA_SASL_CONNECTION_STRING)."""
    state = Path(os.environ.get("CTRAIL_SERVICES_STATE") or
                 Path.home() / ".cache" / "containertrail" / "services" / "state")
    return (os.environ.get("KAFKA_SASL_BOOTSTRAP") or KAFKA_SASL_BOOTSTRAP_DEFAULT,
            Path(os.environ.get("KAFKA_SASL_CA") or state / "kafka" / "tls" / "ca.pem"),
            os.environ.get("KAFKA_SASL_CONNECTION_STRING")
            or KAFKA_SASL_CONNECTION_STRING_DEFAULT)


def empty_elasticsearch_namespace(namespace: str, close: bool = False) -> None:
    """Empty a namespace's data streams as far as this server allows. It has no _data_stream
    API, so a stream, once created, cannot be deleted, nor its write index: each stream is
    rolled over and its older backing indices deleted. With `close`, the new, empty write index
    is closed too, so a namespace no longer used costs the node next to nothing."""
    from elasticsearch import Elasticsearch

    with Elasticsearch(elasticsearch_url()) as client:
        for data_stream in elasticsearch_streams(client, namespace):
            rolled = client.indices.rollover(alias=data_stream["name"])
            client.indices.delete(index=",".join(data_stream["backing_indices"]))
            if close:
                client.indices.close(index=rolled["new_index"])


def elasticsearch_streams(client: Any, namespace: str) -> list[dict[str, Any]]:
    """The data streams of a namespace of ours, as _resolve/index describes them."""
    resolved = client.indices.resolve_index(name=f"logs-containertrail.*-{namespace}")
    return list(resolved["data_streams"])
