"""PagerDuty Events API v2: the documented event shape, one incident per group, 202/400/429."""

from __future__ import annotations

from typing import Iterator

import pytest

from receivers import PagerDutyReceiver, make_alert
from sinks.notify.message import Outcome, Pending
from sinks.pagerduty import PagerDutyConfig, PagerDutyNotifier, dedup_key, pagerduty_event


@pytest.fixture
def pd(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PagerDutyReceiver, PagerDutyNotifier]]:
    receiver = PagerDutyReceiver()
    monkeypatch.setenv("T_PD", receiver.routing_key)
    notifier = PagerDutyConfig.model_validate({"routing_key": {"env": "T_PD"},
                                               "url": f"{receiver.base}/v2/enqueue"}
                                              ).build("oncall", "https://kibana.example.com")
    yield receiver, notifier
    notifier.close()
    receiver.close()


def test_the_trigger_event_has_the_documented_shape() -> None:
    alert = make_alert(3, severity="high", count=2)
    event = pagerduty_event(alert, "KEY", count=5, first_seen="2026-05-01T12:00:00+00:00",
                            alert_ids=["a", "b"], kibana_url="https://kibana.example.com")
    payload = event.pop("payload")
    links = event.pop("links")
    assert event == {"routing_key": "KEY", "event_action": "trigger",
                     "dedup_key": "CT-K8S-004|alice@example.com|shop/web-1",
                     "client": "ContainerTrail", "client_url": "https://kibana.example.com"}
    assert links[0]["text"] == "Open in Kibana" and links[0]["href"].startswith("https://kibana")
    details = payload.pop("custom_details")
    assert payload == {"summary": "[HIGH] Rule CT-K8S-004: alice@example.com in shop/web-1 (5×)",
                       "severity": "error", "source": "prod-eu",
                       "timestamp": "2026-05-01T12:00:03+00:00", "class": "CT-K8S-004",
                       "component": "web-1", "group": "shop"}
    assert details["count"] == 5 and details["image"] == "registry.example.com/shop/web:1.4.2"
    assert details["next_steps"][0] == "ctrail timeline --pod shop/web-1"


@pytest.mark.parametrize(("ours", "theirs"), [("critical", "critical"), ("high", "error"),
                                              ("medium", "warning"), ("low", "info")])
def test_severity_mapping(ours: str, theirs: str) -> None:
    event = pagerduty_event(make_alert(1, severity=ours), "K", count=1, first_seen="",
                            alert_ids=[])
    assert event["payload"]["severity"] == theirs


def test_a_long_group_key_is_hashed_into_255_characters() -> None:
    key = dedup_key("x" * 1000)
    assert len(key) == 255 and key == dedup_key("x" * 1000) != dedup_key("x" * 999 + "y")


def test_pending_alerts_of_a_group_go_as_one_trigger(pd) -> None:  # type: ignore[no-untyped-def]
    receiver, notifier = pd
    batch = [Pending(i, make_alert(i, pod="a" if i % 2 else "b")) for i in range(6)]
    messages = notifier.messages(batch, budget=5)
    assert [m.seqs for m in messages] == [(0, 2, 4), (1, 3, 5)]
    for message in messages:
        assert notifier.post(message).outcome is Outcome.DELIVERED
    assert receiver.created == 2 and not receiver.problems
    assert notifier.post(messages[0]).outcome is Outcome.DELIVERED   # a retry: same incident
    assert receiver.created == 2


def test_a_resolve_closes_the_incident(pd) -> None:  # type: ignore[no-untyped-def]
    receiver, notifier = pd
    [trigger] = notifier.messages([Pending(1, make_alert(1))], budget=1)
    notifier.post(trigger)
    assert notifier.post(notifier.resolve_message(trigger.group_key or "", trigger.key)
                         ).outcome is Outcome.DELIVERED
    assert receiver.incidents[trigger.key]["state"] == "resolved"


def test_an_invalid_event_is_rejected_with_the_apis_reasons(pd) -> None:  # type: ignore[no-untyped-def]
    _receiver, notifier = pd
    [trigger] = notifier.messages([Pending(1, make_alert(1))], budget=1)
    trigger.body["payload"]["severity"] = "high"
    result = notifier.post(trigger)
    assert (result.outcome, result.status) == (Outcome.REJECTED, 400)
    assert "'payload.severity' is invalid" in result.detail


def test_429_and_5xx_are_retried(pd) -> None:  # type: ignore[no-untyped-def]
    receiver, notifier = pd
    [trigger] = notifier.messages([Pending(1, make_alert(1))], budget=1)
    for status in (429, 500, 503):
        receiver.fault = lambda _now, s=status: (s, {})
        assert notifier.post(trigger).outcome is Outcome.RETRY
    receiver.close()
    assert notifier.post(trigger).outcome is Outcome.RETRY          # the network is down
