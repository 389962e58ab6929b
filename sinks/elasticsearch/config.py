"""ElasticsearchConfig: where the store's data streams live, how long they are kept, and how to
reach the cluster. Importing this module does not import the `elasticsearch` client."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from ctrail.secrets import SecretRef

if TYPE_CHECKING:
    from sinks.elasticsearch.store import ElasticsearchStore


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetentionConfig(_Section):
    """Days each data class is kept after its backing index rolls over (enforced by ILM, where
    the cluster has it). PCI DSS 10.5.1 asks for 12 months of audit trail, 3 of them at hand."""

    events_days: PositiveInt = Field(90, description="Days events are kept.")
    alerts_days: PositiveInt = Field(365, description="Days alerts are kept.")
    dead_letters_days: PositiveInt = Field(
        365, description="Days dead letters are kept (time to fix the cause and replay them).")
    rollover_days: PositiveInt = Field(
        7, description="Start a new backing index after this many days (or 50 GB per primary "
                       "shard): retention is enforced per backing index, to this granularity.")


class ElasticsearchConfig(_Section):
    """Store events, alerts and dead letters in Elasticsearch data streams
    (`logs-containertrail.<dataset>-<namespace>`, `logs-containertrail.alerts-<namespace>`,
    `logs-containertrail.dlq-<namespace>`), with index templates and ILM policies installed at
    startup."""

    type: Literal["elasticsearch"] = "elasticsearch"
    hosts: list[str] = Field(min_length=1, description="Node URLs, e.g. https://es-1:9200.")
    api_key: SecretRef | None = Field(
        None, description="API key (the encoded form), as a reference: {env: NAME} or {file: PATH}.")
    username: str | None = Field(None, description="User for basic authentication.")
    password: SecretRef | None = Field(
        None, description="Password for basic authentication, as a reference: {env: NAME} or "
                          "{file: PATH}.")
    ca_file: Path | None = Field(
        None, description="PEM file of the CA that signed the nodes' certificates (https); "
                          "system CAs when absent.")
    namespace: str = Field(
        "default", pattern=r"^[a-z0-9_]{1,64}$",
        description="Data stream namespace (lowercase letters, digits, _): separates "
                    "environments sharing a cluster, e.g. prod and staging.")
    retention: RetentionConfig = RetentionConfig()
    request_timeout_secs: PositiveFloat = Field(30.0, description="Timeout of one request.")
    max_retries: int = Field(
        3, ge=0, description="Retries of a request after a connection error or timeout, on "
                             "another node. Rejections (429) are not retried here: the stage "
                             "that wrote (process for events, store for alerts and dead "
                             "letters) backs off and redelivers the batch.")
    concurrent_requests: PositiveInt = Field(
        2, description="Bulk requests one write sends at once (a batch of at least 200 "
                       "documents per request is split): a lone request keeps one write thread "
                       "of the cluster busy while the pipeline waits for it.")
    refresh_on_write: bool = Field(
        False, description="Return from a write only once its documents are searchable "
                           "(refresh=wait_for). Costs up to a refresh interval per batch; for "
                           "tests and demos.")

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> "ElasticsearchConfig":
        if self.api_key is not None and (self.username or self.password):
            raise ValueError("use either api_key or username and password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self

    def build(self, data_dir: Path) -> ElasticsearchStore:
        """Connect and install the templates; data_dir is unused (the data lives in the cluster).
        Raises Unavailable when the cluster cannot be reached."""
        from sinks.elasticsearch.store import ElasticsearchStore

        return ElasticsearchStore(self)
