"""Sources: file tailing with checkpoints and rotation, and the authenticated audit webhook."""

from __future__ import annotations

import http.client
import os
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr

from collector.lines import LineReader
from collector.parsers.k8s_audit import K8sAuditParser
from collector.sources.k8s_audit_webhook import K8sAuditWebhookConfig, WebhookSource
from collector.tail import FileTail
from ctrail.bus import RAW
from ctrail.bus.local import LocalBus
from ctrail.errors import ConfigError
from ctrail.runtime.collect import Collector
from ctrail.runtime.telemetry import Telemetry
from ctrail.secrets import EnvRef


def test_a_line_longer_than_the_cap_is_truncated_and_the_next_line_is_intact(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"short\n" + b"x" * 5000 + b"\nafter\n")
    with open(path, "rb") as handle:
        reader = LineReader(handle, cap=100)
        got = [reader.next_line(final=True) for _ in range(3)]
    assert [(l.data[:5], l.number, l.truncated) for l in got if l] == [
        (b"short", 1, False), (b"xxxxx", 2, True), (b"after", 3, False)]
    assert got[1] is not None and len(got[1].data) == 100


_open_tails: list[FileTail] = []


def _tail(path: Path, tmp_path: Path) -> FileTail:
    tail = FileTail(path, tmp_path / "checkpoint.json", 1024, poll_interval_secs=0.01)
    _open_tails.append(tail)
    return tail


@pytest.fixture(autouse=True)
def _close_tails():  # type: ignore[no-untyped-def]
    yield
    while _open_tails:
        _open_tails.pop().close()


def test_the_tail_resumes_after_the_last_committed_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"one\ntwo\nthree\n")
    tail = _tail(log, tmp_path)
    tail.commit(tail.read(2))
    tail.close()
    again = _tail(log, tmp_path)
    assert [r.data for r in again.read(10)] == [b"three"]


def test_the_tail_waits_for_a_line_being_written(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"whole\npart")
    tail = _tail(log, tmp_path)
    assert [r.data for r in tail.read(10)] == [b"whole"]
    with open(log, "ab") as handle:
        handle.write(b"ial\n")
    assert [r.data for r in tail.read(10)] == [b"partial"]


def test_the_tail_finishes_a_rotated_file_then_follows_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"old-1\n")
    tail = _tail(log, tmp_path)
    assert [r.data for r in tail.read(10)] == [b"old-1"]
    with open(log, "ab") as handle:
        handle.write(b"old-2\n")
    os.rename(log, tmp_path / "audit-2026-01-01.log")       # kube-apiserver's rotation
    log.write_bytes(b"new-1\n")
    assert [r.data for r in tail.read(10)] == [b"old-2"]
    assert [r.data for r in tail.read(10)] == [b"new-1"]


def test_the_tail_starts_over_after_copytruncate(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"line-1\nline-2\n")
    tail = _tail(log, tmp_path)
    assert len(tail.read(10)) == 2
    log.write_bytes(b"fresh\n")                              # truncated in place, same inode
    assert [r.data for r in tail.read(10)] == [b"fresh"]


def test_the_webhook_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a token"):
        K8sAuditWebhookConfig(port=0).build("hook", tmp_path, 1024)


def test_a_missing_token_variable_is_a_config_error(tmp_path: Path) -> None:
    config = K8sAuditWebhookConfig(port=0, token=EnvRef(env="CTRAIL_TEST_UNSET_TOKEN"))
    with pytest.raises(ConfigError, match="CTRAIL_TEST_UNSET_TOKEN is not set"):
        config.build("hook", tmp_path, 1024)


def post(port: int, body: bytes, token: str | None) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("POST", "/audit", body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, dict(response.getheaders())


@pytest.fixture
def webhook(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = K8sAuditWebhookConfig(port=0, max_body_bytes=4096, ack_timeout_secs=5)
    source = WebhookSource(config, "hook", SecretStr("s3cret-token"))
    bus = LocalBus(tmp_path / "bus")
    collector = Collector("hook", source, K8sAuditParser(), bus.producer(), Telemetry(), 4096, 100)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            collector.run_once()
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield source, bus, collector
    stop.set()
    thread.join()
    source.close()
    bus.close()


EVENT_LIST = (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":['
              b'{"kind":"Event","auditID":"a1","verb":"get","stage":"ResponseComplete",'
              b'"requestReceivedTimestamp":"2026-01-01T00:00:00Z"},'
              b'{"kind":"Event","auditID":"a2","verb":"list","stage":"ResponseComplete",'
              b'"requestReceivedTimestamp":"2026-01-01T00:00:01Z"}]}')


def test_the_webhook_answers_only_after_the_batch_is_durable(webhook) -> None:  # type: ignore[no-untyped-def]
    source, bus, collector = webhook
    status, _ = post(source.port, EVENT_LIST, "s3cret-token")
    assert status == 200
    assert collector.counts.accepted == 2                  # published and flushed before the 200
    assert len(bus.consumer("check", [RAW]).poll(10, timeout_secs=0)) == 2


def test_the_webhook_rejects_missing_and_wrong_tokens_and_large_bodies(webhook) -> None:  # type: ignore[no-untyped-def]
    source, _bus, collector = webhook
    assert post(source.port, EVENT_LIST, None)[0] == 401
    assert post(source.port, EVENT_LIST, "s3cret-tokex")[0] == 401
    assert post(source.port, b"{" + b" " * 5000 + b"}", "s3cret-token")[0] == 413
    assert collector.counts.accepted == 0


def test_a_malformed_webhook_body_is_kept_as_a_dead_letter(webhook) -> None:  # type: ignore[no-untyped-def]
    source, _bus, collector = webhook
    assert post(source.port, b'{"kind":"EventList","items":[', "s3cret-token")[0] == 200
    assert collector.counts.dead_lettered == 1
