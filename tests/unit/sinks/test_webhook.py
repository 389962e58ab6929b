"""Webhooks: signed JSON, verifiable by the receiver, replay-protected by the timestamp."""

from __future__ import annotations

import time
from typing import Iterator

import orjson
import pytest

from receivers import WebhookReceiver, make_alert
from sinks.notify.message import Outcome, Pending
from sinks.webhook import WebhookConfig, WebhookNotifier, sign, verify_signature


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[WebhookReceiver, WebhookNotifier]]:
    receiver = WebhookReceiver()
    monkeypatch.setenv("T_URL", f"{receiver.base}/in?token=abc123")
    monkeypatch.setenv("T_SECRET", receiver.secret.decode())
    notifier = WebhookConfig.model_validate({"url": {"env": "T_URL"},
                                             "signing_secret": {"env": "T_SECRET"}}
                                            ).build("siem", None)
    yield receiver, notifier
    notifier.close()
    receiver.close()


def test_the_signature_covers_the_timestamp_and_the_raw_body() -> None:
    now = time.time()
    ts, body = str(int(now)), b'{"type":"alert"}'
    signature = sign(b"s3cret", ts, body)
    assert verify_signature(b"s3cret", ts, body, signature, now=now)
    assert not verify_signature(b"s3cret", ts, body + b" ", signature, now=now)
    assert not verify_signature(b"other", ts, body, signature, now=now)
    assert not verify_signature(b"s3cret", ts, body, signature, now=now + 301)   # a replay
    assert not verify_signature(b"s3cret", "soon", body, signature, now=now)


def test_an_alert_is_posted_signed_with_its_delivery_id(hook) -> None:  # type: ignore[no-untyped-def]
    receiver, notifier = hook
    [message] = notifier.messages([Pending(1, make_alert(9))], budget=5)
    assert notifier.post(message).outcome is Outcome.DELIVERED
    [delivery] = receiver.accepted
    assert delivery.body["type"] == "alert" and delivery.body["alert"]["event"]["id"] == "alert-000009"
    assert receiver.delivery_ids == ["siem:alert-000009"] and not receiver.problems


def test_a_backlog_goes_as_one_digest_with_every_alert(hook) -> None:  # type: ignore[no-untyped-def]
    receiver, notifier = hook
    batch = [Pending(i, make_alert(i)) for i in range(60)]
    [digest] = notifier.messages(batch, budget=20)
    assert notifier.post(digest).outcome is Outcome.DELIVERED
    assert receiver.alert_ids() == [f"alert-{i:06d}" for i in range(60)]
    assert receiver.delivery_ids == ["siem:digest:0-59"]


def test_a_wrong_secret_is_refused_by_the_receiver(hook, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    receiver, _notifier = hook
    monkeypatch.setenv("T_SECRET", "not-the-secret")
    wrong = WebhookConfig.model_validate({"url": {"env": "T_URL"},
                                          "signing_secret": {"env": "T_SECRET"}}).build("x", None)
    [message] = wrong.messages([Pending(1, make_alert(1))], budget=1)
    assert wrong.post(message).outcome is Outcome.REJECTED
    assert receiver.problems == ["bad signature or stale timestamp"]
    wrong.close()


def test_the_body_is_the_ecs_alert_as_stored() -> None:
    alert = make_alert(2)
    from sinks.webhook import alert_body
    body = alert_body("siem", alert)
    assert orjson.loads(orjson.dumps(body))["alert"]["@timestamp"] == "2026-05-01T12:00:02.000000Z"
