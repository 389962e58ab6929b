"""Opsgenie Alert API v2: one alert per group by alias, closed by alias, within the field limits."""

from __future__ import annotations

from typing import Iterator
from urllib.parse import quote

import pytest

from chat_ops_receivers import OpsgenieReceiver, opsgenie_create_problems
from receivers import make_alert
from sinks.notify.message import Message, Outcome, Pending
from sinks.opsgenie import OpsgenieConfig, OpsgenieNotifier, Responder, alias, create_alert


@pytest.fixture
def og() -> Iterator[OpsgenieReceiver]:
    receiver = OpsgenieReceiver()
    yield receiver
    receiver.close()


def notifier(og: OpsgenieReceiver, monkeypatch: pytest.MonkeyPatch, key: str | None = None
             ) -> OpsgenieNotifier:
    monkeypatch.setenv("T_OG", key or og.api_key)
    return OpsgenieConfig.model_validate({
        "api_key": {"env": "T_OG"}, "url": og.base,
        "responders": [{"type": "team", "name": "secops"}, {"type": "user", "name": "a@b.c"}],
    }).build("pager", "https://kibana.example.com")


def test_a_create_request_carries_the_group_as_alias_and_the_priority() -> None:
    alerts = [make_alert(i, severity="critical") for i in range(3)]
    body = create_alert(alerts[-1], count=3, first_seen=alerts[0].timestamp.isoformat(),
                        alert_ids=[a.event.id for a in alerts],
                        responders=[Responder(type="team", name="secops")],
                        tags=["containertrail"], kibana_url="https://kibana.example.com")
    assert opsgenie_create_problems(body) == {}
    assert body["alias"] == "CT-K8S-004|alice@example.com|shop/web-1"
    assert body["priority"] == "P1" and body["source"] == "ContainerTrail"
    assert body["message"] == "[CRITICAL] Rule CT-K8S-004: alice@example.com in shop/web-1 (3×)"
    assert body["responders"] == [{"type": "team", "name": "secops"}]
    assert body["details"]["count"] == "3" and body["entity"] == "shop/web-1"
    assert "Alerts: 3 (3 occurrences)" in body["description"]
    assert "Open in Kibana: https://kibana.example.com/app/discover" in body["description"]


def test_long_values_are_cut_to_the_api_limits_and_the_alias_stays_stable() -> None:
    alert = make_alert(1, pod="p" * 3000, user="u" * 9000, rule="R" * 600)
    body = create_alert(alert, count=1, first_seen="x", alert_ids=["a"] * 50,
                        tags=[f"t{i}" * 30 for i in range(30)])
    assert opsgenie_create_problems(body) == {}
    assert len(body["alias"]) == 512 and body["alias"] == alias(alert.alert.group_key)
    assert alias(alert.alert.group_key + "x") != body["alias"]


def test_creates_and_closes_by_alias_at_the_receiver(og: OpsgenieReceiver,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    n = notifier(og, monkeypatch)
    batch = [Pending(i, make_alert(i, pod="web/1" if i % 2 else "db|0")) for i in range(4)]
    messages = n.messages(batch, 10)
    assert [m.seqs for m in messages] == [(0, 2), (1, 3)]
    assert all(n.post(m).outcome is Outcome.DELIVERED for m in messages)
    assert og.created == 2 and not og.problems
    assert og.accepted[0].headers["authorization"] == f"GenieKey {og.api_key}"
    assert og.accepted[0].body["responders"][1] == {"type": "user", "username": "a@b.c"}
    close = n.resolve_message(messages[1].group_key or "", messages[1].key)
    assert n.post(close).outcome is Outcome.DELIVERED
    assert og.accepted[-1].path.endswith("/close?identifierType=alias")
    assert f"/v2/alerts/{quote(messages[1].key, safe='')}/close" in og.accepted[-1].path
    assert "%2F" in og.accepted[-1].path            # the alias's slashes stay in one segment
    assert og.alerts[messages[1].key]["status"] == "closed"
    assert og.alerts[messages[0].key]["status"] == "open" and og.close_misses == 0


def test_a_bad_key_is_retried_and_an_unprocessable_request_rejected(
        og: OpsgenieReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    n = notifier(og, monkeypatch, key="revoked-key-000")
    [message] = n.messages([Pending(1, make_alert(1))], 3)
    unauthorised = n.post(message)
    assert unauthorised.outcome is Outcome.RETRY and unauthorised.status == 401
    assert "revoked-key-000" not in unauthorised.detail
    good = notifier(og, monkeypatch)
    bad = Message((1,), {**message.body, "priority": "P9"}, "trigger", message.key)
    rejected = good.post(bad)
    assert rejected.outcome is Outcome.REJECTED and rejected.status == 422
    assert "priority" in rejected.detail and og.created == 0
