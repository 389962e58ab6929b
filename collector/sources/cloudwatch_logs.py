"""Source: a CloudWatch Logs log group, polled: EKS control-plane audit logs, which AWS writes to
`/aws/eks/<cluster>/cluster` in streams named `kube-apiserver-audit-<id>` (one audit event, as
a JSON line, per log event), where users cannot point kube-apiserver at a webhook.

Each poll lists the group's streams with the configured prefix (DescribeLogStreams) and reads
each from where it stopped with GetLogEvents and the stream's forward token. The position of a
stream is the token of the page being read and how many of its events are taken: pages are
requested with a fixed `limit`, so a token gives the same page again. Positions are saved in
commit(), after the records are durable on the bus, so a restart resumes after the last
published event; a read() that follows a read() without commit() (the batch failed) starts
again from the saved positions, so the same records come back. A token CloudWatch no longer
accepts (expired with the group's retention) restarts that stream from its oldest event.
New streams are read from their first event.

boto3 is imported when the source is built: a deployment without this source needs no AWS SDK.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, Literal, Sequence

import orjson
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

from ctrail.components import RawRecord
from ctrail.durable import write_atomic
from ctrail.secrets import SecretRef, resolve_secret

log = logging.getLogger(__name__)
PAGE_EVENTS: Final = 1000            # GetLogEvents limit: a page is re-read whole after a restart
IDLE_WAIT_SECS: Final = 0.5          # read() blocks at most this long when nothing is due


class CloudWatchLogsConfig(BaseModel):
    """Poll a CloudWatch Logs group: EKS audit logs (`/aws/eks/<cluster>/cluster`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["cloudwatch_logs"] = "cloudwatch_logs"
    log_group: str = Field(min_length=1, description="e.g. /aws/eks/prod-eu/cluster.")
    log_stream_prefix: str = Field(
        "kube-apiserver-audit-", description="Streams read; EKS names its audit streams so.")
    region: str = Field(min_length=1, description="The group's AWS region, e.g. eu-west-1.")
    endpoint_url: str | None = Field(
        None, description="A VPC endpoint or another CloudWatch Logs API; AWS's by default.")
    access_key_id: SecretRef | None = Field(
        None, description="Default: boto3's own chain (IRSA web identity, instance role, env).")
    secret_access_key: SecretRef | None = None
    poll_interval_secs: PositiveFloat = Field(10.0, description="Wait between polls when idle.")
    request_timeout_secs: PositiveFloat = 30.0

    @model_validator(mode="after")
    def _both_keys_or_neither(self) -> "CloudWatchLogsConfig":
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        return self

    @property
    def parser_name(self) -> str:
        return "k8s-audit"

    def build(self, name: str, data_dir: Path, max_record_bytes: int) -> "CloudWatchLogsSource":
        checkpoints = data_dir / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        return CloudWatchLogsSource(self, logs_client(self), checkpoints / f"{name}.json",
                                    max_record_bytes)


def logs_client(config: CloudWatchLogsConfig) -> Any:
    import boto3
    from botocore.config import Config

    key_id = secret = None
    if config.access_key_id is not None and config.secret_access_key is not None:
        key_id = resolve_secret(config.access_key_id).get_secret_value()
        secret = resolve_secret(config.secret_access_key).get_secret_value()
    options = Config(connect_timeout=config.request_timeout_secs,
                     read_timeout=config.request_timeout_secs, retries={"mode": "standard"})
    return boto3.client("logs", endpoint_url=config.endpoint_url, region_name=config.region,
                        config=options, aws_access_key_id=key_id, aws_secret_access_key=secret)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a stream is: the page `token` (None: its first page) and the events taken of it."""

    token: str | None = None
    taken: int = 0


class CloudWatchLogsSource:
    def __init__(self, config: CloudWatchLogsConfig, client: Any, checkpoint: Path,
                 max_record_bytes: int) -> None:
        self.config, self.client, self.checkpoint = config, client, checkpoint
        self.cap = max_record_bytes
        saved = orjson.loads(checkpoint.read_bytes()) if checkpoint.exists() else {}
        self._committed = {stream: Position(token, taken) for stream, (token, taken)
                           in saved.get("streams", {}).items()}
        self._read = dict(self._committed)
        self._buffer: list[RawRecord] = []
        self._after: dict[str, tuple[str, Position]] = {}   # origin -> (stream, position after)
        self._handed_out = False                              # read() returned, commit() not yet
        self._next_poll = 0.0

    def read(self, max_records: int) -> list[RawRecord]:
        if self._handed_out:                  # that batch failed: the same records again
            self._read, self._buffer, self._after = dict(self._committed), [], {}
            self._handed_out, self._next_poll = False, 0.0
        if not self._buffer:
            wait = self._next_poll - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, IDLE_WAIT_SECS))
                return []
            more = self._poll()
            self._next_poll = time.monotonic() + (0 if more else self.config.poll_interval_secs)
        batch, self._buffer = self._buffer[:max_records], self._buffer[max_records:]
        self._handed_out = bool(batch)
        return batch

    def commit(self, records: Sequence[RawRecord]) -> None:
        self._handed_out = False
        for record in records:
            stream, position = self._after.pop(record.origin)
            self._committed[stream] = position
        if records:
            state = {"streams": {s: [p.token, p.taken] for s, p in self._committed.items()}}
            write_atomic(self.checkpoint, orjson.dumps(state))

    def close(self) -> None:
        self.client.close()

    def _poll(self) -> bool:
        """Read one page of every stream into the buffer; True when a stream has more."""
        try:
            streams = self._stream_names()
        except Exception as exc:              # botocore's errors: retried at the next poll
            log.warning("Cannot list the CloudWatch log streams; retrying.",
                        extra={"log_group": self.config.log_group, "error": str(exc)})
            return False
        more = False
        for stream in streams:
            try:
                more |= self._read_page(stream)
            except Exception as exc:
                log.warning("Cannot read a CloudWatch log stream; retrying.",
                            extra={"log_group": self.config.log_group, "stream": stream,
                                   "error": str(exc)})
        return more

    def _stream_names(self) -> list[str]:
        pages = self.client.get_paginator("describe_log_streams").paginate(
            logGroupName=self.config.log_group, logStreamNamePrefix=self.config.log_stream_prefix)
        return sorted(s["logStreamName"] for page in pages for s in page.get("logStreams", ()))

    def _read_page(self, stream: str) -> bool:
        position = self._read.get(stream, Position())
        try:
            page = self._get_page(stream, position.token)
        except self.client.exceptions.InvalidParameterException:
            if position.token is None:
                raise
            log.warning("A CloudWatch position expired; reading the stream from its oldest "
                        "event.", extra={"log_group": self.config.log_group, "stream": stream})
            position = Position()
            page = self._get_page(stream, None)
        events = page.get("events", ())
        following = page.get("nextForwardToken")
        received = datetime.now(timezone.utc)
        for index in range(position.taken, len(events)):
            # After a page's last event, the next page's token: a restart starts there.
            after = (Position(following, 0) if following and index == len(events) - 1
                     else Position(position.token, index + 1))
            self._buffer.append(self._record(stream, events[index], position, index, after,
                                             received))
        if following and (events or following != position.token):
            self._read[stream] = Position(following, 0)
        elif events:
            self._read[stream] = Position(position.token, len(events))
        return len(events) >= PAGE_EVENTS

    def _get_page(self, stream: str, token: str | None) -> dict[str, Any]:
        request: dict[str, Any] = {"logGroupName": self.config.log_group,
                                   "logStreamName": stream, "startFromHead": True,
                                   "limit": PAGE_EVENTS}
        if token is not None:
            request["nextToken"] = token
        return self.client.get_log_events(**request)

    def _record(self, stream: str, event: dict[str, Any], position: Position, index: int,
                after: Position, received: datetime) -> RawRecord:
        data = str(event.get("message", "")).encode()
        origin = (f"cloudwatch {self.config.log_group}/{stream} "
                  f"{position.token or 'head'}#{index}")
        self._after[origin] = (stream, after)
        return RawRecord(data[:self.cap], origin, received, len(data) > self.cap, stream=stream)
