"""The outbox and the sender loop: nothing lost, nothing repeated, paced, in order per group.

The two acceptance runs (an outage of two minutes, a storm of 10 000 alerts in a minute) use a
simulated clock: the sender, the token buckets, the backoff and the receivers' fault windows all
read it, while the HTTP requests are real, to local receivers. The loop below jumps the clock to
the sender's next wake-up (or the next enqueue), so two simulated minutes take well under a second
of waiting.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest

from ctrail.errors import Retryable
from ctrail.event import Severity
from receivers import PagerDutyReceiver, SlackReceiver, WebhookReceiver, make_alert
from sinks.notify.config import NotifyConfig
from sinks.notify.message import Outcome, classify, parse_retry_after, redact, register_secret
from sinks.notify.outbox import NewRow, Outbox
from sinks.notify.policy import Backoff, Breaker, TokenBucket
from sinks.notify.routing import QuietHours, Route, route
from sinks.notify.service import NotifyService

START = 1_780_000_000.0
SLACK_SECRET = "T0000/B0000/slacksecretpath123"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def servers(clock: Clock, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[tuple[SlackReceiver, PagerDutyReceiver, WebhookReceiver]]:
    slack, pd, hook = SlackReceiver(clock), PagerDutyReceiver(clock), WebhookReceiver(clock)
    monkeypatch.setenv("T_SLACK_URL", f"{slack.base}/services/{SLACK_SECRET}")
    monkeypatch.setenv("T_PD_KEY", pd.routing_key)
    monkeypatch.setenv("T_HOOK_URL", f"{hook.base}/hooks/in?token=hooktoken42")
    monkeypatch.setenv("T_HOOK_SECRET", hook.secret.decode())
    yield slack, pd, hook
    for server in (slack, pd, hook):
        server.close()


def service(tmp_path: Path, clock: Clock, pd_url: str, hook_digest_min: int = 1000,
            **extra: object) -> NotifyService:
    config = NotifyConfig.model_validate({
        "receivers": {
            "chat": {"type": "slack", "webhook_url": {"env": "T_SLACK_URL"}},
            "oncall": {"type": "pagerduty", "routing_key": {"env": "T_PD_KEY"}, "url": pd_url,
                       "resolve_after_secs": 600},
            "hook": {"type": "webhook", "url": {"env": "T_HOOK_URL"},
                     "signing_secret": {"env": "T_HOOK_SECRET"},
                     "digest_min_alerts": hook_digest_min}},
        "delivery": {"breaker_failures": 5, "breaker_reset_secs": 30, "max_backoff_secs": 60},
        **extra})
    return config.build(tmp_path, clock=clock)


def run_until(svc: NotifyService, clock: Clock, end: float,
              arrivals: dict[float, list] | None = None) -> None:  # type: ignore[type-arg]
    """Drive the sender on the simulated clock, enqueueing `arrivals` at their times."""
    pending = sorted((arrivals or {}).items())
    while clock.now < end:
        while pending and pending[0][0] <= clock.now:
            svc.enqueue(pending.pop(0)[1])
        wake = svc.sender.tick()
        upcoming = pending[0][0] if pending else end
        clock.now = max(clock.now + 0.01, min(wake, upcoming, end))


def test_an_outage_of_two_minutes_loses_and_repeats_nothing_and_keeps_group_order(
        tmp_path: Path, clock: Clock, servers) -> None:  # type: ignore[no-untyped-def]
    slack, pd, hook = servers
    calls = {"n": 0}

    def outage(now: float) -> tuple[int, dict[str, str]] | None:
        if now >= START + 120:
            return None
        calls["n"] += 1
        return (429, {"Retry-After": "7"}) if calls["n"] % 2 else (500, {})
    for server in servers:
        server.fault = outage
    svc = service(tmp_path, clock, f"{pd.base}/v2/enqueue")
    groups = [("CT-K8S-004", "web-1"), ("CT-K8S-004", "web-2"), ("CT-K8S-001", "db-0")]
    alerts = [make_alert(i, rule=groups[i % 3][0], pod=groups[i % 3][1]) for i in range(30)]
    arrivals = {START + 5 * i: [a] for i, a in enumerate(alerts)}     # 0 s to 145 s
    try:
        run_until(svc, clock, START + 400, arrivals)
        assert svc.outbox.counts() == {"delivered": 90}
        assert len(slack.refused) + len(pd.refused) + len(hook.refused) > 10
        assert all(d.at >= START + 120 for s in servers for d in s.accepted)
        # Webhook: each alert once, and per group in the order raised.
        assert sorted(hook.alert_ids()) == sorted(a.event.id for a in alerts)
        for rule, pod in groups:
            raised = [a.event.id for a in alerts if a.alert.group_key.endswith(pod)
                      and a.rule.id == rule]
            assert [i for i in hook.alert_ids() if i in raised] == raised
        # Slack: the backlog went out (as digests), every alert counted once.
        assert slack.alerts_covered() == 30 and not slack.problems
        # PagerDuty: one incident per group, every alert counted once in its triggers.
        assert pd.created == 3 and not pd.problems
        per_group: dict[str, int] = defaultdict(int)
        for d in pd.accepted:
            if d.body["event_action"] == "trigger":
                per_group[d.body["dedup_key"]] += d.body["payload"]["custom_details"]["count"]
        assert sorted(per_group.values()) == [10, 10, 10]
    finally:
        svc.close()


def test_a_storm_of_10000_alerts_in_a_minute_is_digested_within_slacks_pace(
        tmp_path: Path, clock: Clock, servers) -> None:  # type: ignore[no-untyped-def]
    slack, pd, hook = servers
    svc = service(tmp_path, clock, f"{pd.base}/v2/enqueue", hook_digest_min=50)
    rules, pods = ["CT-K8S-001", "CT-K8S-002", "CT-K8S-004", "CT-K8S-007"], ["a", "b", "c", "d", "e"]
    arrivals = {START + 0.6 * tick: [make_alert(tick * 100 + j, rule=rules[j % 4],
                                                pod=pods[(j // 4) % 5]) for j in range(100)]
                for tick in range(100)}                              # 10 000 in 60 s
    try:
        run_until(svc, clock, START + 300, arrivals)
        assert svc.outbox.counts() == {"delivered": 30000}
        times = [d.at for d in slack.accepted]
        # A token bucket of 1/s with a burst of 3: no window of W seconds holds more than 3 + W.
        for i, t in enumerate(times):
            assert sum(1 for u in times[i:] if u < t + 10) <= 13
        assert len(times) <= 3 + (times[-1] - times[0]) + 1
        assert slack.alerts_covered() == 10000 and not slack.problems
        assert any("digest" in d.body["blocks"][0]["text"]["text"] for d in slack.accepted)
        assert pd.created == 20 and len(pd.incidents) == 20 and not pd.problems
        assert sorted(hook.alert_ids()) == sorted(f"alert-{i:06d}" for i in range(10000))
    finally:
        svc.close()


def test_a_redelivered_alert_is_not_enqueued_twice_and_rows_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    rows = [NewRow("chat", make_alert(1)), NewRow("chat", make_alert(2)),
            NewRow("oncall", make_alert(1), tracks_incidents=True)]
    assert outbox.enqueue(rows, START) == 3
    assert outbox.enqueue(rows, START + 1) == 0
    outbox.close()
    again = Outbox(path)
    assert [p.alert.event.id for p in again.pending("chat", 10)] == ["alert-000001", "alert-000002"]
    assert again.counts() == {"pending": 3}
    again.close()


def test_quiet_hours_hold_non_critical_alerts_and_release_them_as_a_digest(
        tmp_path: Path, clock: Clock, servers) -> None:  # type: ignore[no-untyped-def]
    slack, pd, _hook = servers
    night = datetime(2026, 5, 1, 23, 0, tzinfo=timezone.utc).timestamp()
    clock.now = night
    svc = service(tmp_path, clock, f"{pd.base}/v2/enqueue", routes=[
        {"receivers": ["chat"]}], quiet_hours={"start": "22:00", "end": "07:00",
                                               "timezone": "UTC", "digest": True})
    try:
        svc.enqueue([make_alert(1), make_alert(2, severity="high"),
                     make_alert(3, severity="critical")])
        run_until(svc, clock, night + 60)
        assert slack.alerts_covered() == 1                       # only the critical one
        assert svc.outbox.counts() == {"held": 2, "delivered": 1}
        run_until(svc, clock, night + 8 * 3600 + 60)             # 07:00 passes
        assert slack.alerts_covered() == 3
        assert "quiet hours digest" in slack.accepted[-1].body["blocks"][0]["text"]["text"]
    finally:
        svc.close()


def test_pagerduty_resolves_a_group_after_its_quiet_period(
        tmp_path: Path, clock: Clock, servers) -> None:  # type: ignore[no-untyped-def]
    _slack, pd, _hook = servers
    svc = service(tmp_path, clock, f"{pd.base}/v2/enqueue", routes=[{"receivers": ["oncall"]}])
    try:
        svc.enqueue([make_alert(1), make_alert(2, pod="other")])
        run_until(svc, clock, START + 300)
        svc.enqueue([make_alert(3)])                             # web-1 is still active
        run_until(svc, clock, START + 700)
        states = {k.split("/")[-1]: v["state"] for k, v in pd.incidents.items()}
        assert states == {"web-1": "triggered", "other": "resolved"}
        run_until(svc, clock, START + 1000)
        assert {v["state"] for v in pd.incidents.values()} == {"resolved"}
        assert pd.created == 2 and not pd.problems
    finally:
        svc.close()


def test_an_unwritable_outbox_is_retryable(tmp_path: Path, clock: Clock, servers) -> None:  # type: ignore[no-untyped-def]
    svc = service(tmp_path, clock, f"{servers[1].base}/v2/enqueue")
    svc.outbox.close()
    with pytest.raises(Retryable, match="notify outbox"):
        svc.enqueue([make_alert(1)])
    svc.outbox = Outbox(svc.outbox.path)
    svc.close()


def test_routes_pick_receivers_by_severity_rule_namespace_cluster_and_tag() -> None:
    routes = [Route.model_validate({"match": {"severity_min": "high", "namespaces": ["prod-*"]},
                                    "receivers": ["oncall"]}),
              Route.model_validate({"match": {"rules": ["CT-K8S-00*"], "clusters": ["prod-eu"]},
                                    "receivers": ["chat"]}),
              Route.model_validate({"match": {"tags": ["pci"]}, "receivers": ["audit"]})]
    names = ["chat", "oncall", "audit"]
    assert route(make_alert(1, severity="high", namespace="prod-a"), names, routes,
                 Severity.LOW) == ["oncall", "chat"]
    assert route(make_alert(1, namespace="prod-a", cluster="dev"), names, routes,
                 Severity.LOW) == []
    assert route(make_alert(1, severity="low"), names, routes, Severity.MEDIUM) == []
    assert route(make_alert(1), names, (), Severity.LOW) == names


def test_a_route_naming_an_unknown_receiver_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="unknown receivers: pager"):
        NotifyConfig.model_validate({"receivers": {}, "routes": [{"receivers": ["pager"]}]})


def test_quiet_hours_across_midnight_end_the_next_morning() -> None:
    quiet = QuietHours.model_validate({"start": "22:00", "end": "07:00", "timezone": "Europe/Paris"})
    at = quiet.release_at(datetime(2026, 1, 10, 22, 30, tzinfo=timezone.utc))   # 23:30 in Paris
    assert at == datetime(2026, 1, 11, 6, 0, tzinfo=timezone.utc)
    assert quiet.release_at(datetime(2026, 1, 10, 12, 0, tzinfo=timezone.utc)) is None


def test_the_token_bucket_paces_and_a_429_drains_it() -> None:
    bucket = TokenBucket(rate=1.0, burst=3)
    assert bucket.available(0.0) == 3
    for _ in range(3):
        bucket.take(0.0)
    assert bucket.available(0.5) == 0 and bucket.next_token_at(0.5) == pytest.approx(1.0)
    assert bucket.available(2.0) == 2
    bucket.drain(2.0)
    assert bucket.available(2.0) == 0


def test_the_breaker_opens_after_consecutive_failures_and_allows_a_trial_later() -> None:
    breaker = Breaker(failures_to_open=3, reset_secs=30)
    assert not breaker.failure(0) and not breaker.failure(1) and breaker.failure(2)
    assert not breaker.allows(10) and breaker.allows(32)
    assert breaker.success() and breaker.state == "closed"


def test_backoff_grows_with_jitter_caps_and_honours_retry_after() -> None:
    backoff = Backoff(initial_secs=1, max_secs=60)
    delays = [backoff.delay(n) for n in range(1, 10)]
    assert all(0.5 <= d <= 60 for d in delays) and delays[-1] >= 30
    assert backoff.delay(1, retry_after_secs=42) == 42


def test_classification_and_retry_after() -> None:
    assert classify(202).outcome is Outcome.DELIVERED
    assert classify(400).outcome is Outcome.REJECTED
    assert classify(404).outcome is Outcome.RETRY           # a revoked hook: keep the alerts
    limited = classify(429, {"retry-after": "12"})
    assert (limited.outcome, limited.retry_after_secs) == (Outcome.RETRY, 12.0)
    assert parse_retry_after("Fri, 01 May 2026 12:00:30 GMT",
                             datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)) == 30.0


def test_redaction_hides_registered_secrets_and_url_paths(caplog: pytest.LogCaptureFixture) -> None:
    register_secret("sekrit-token-77")
    assert "sekrit" not in redact("auth failed for sekrit-token-77")
    assert redact("POST https://hooks.slack.com/services/T1/B2/xyz") == \
        "POST https://hooks.slack.com/[redacted]"
    from sinks.notify.message import install_log_redaction
    install_log_redaction()
    with caplog.at_level(logging.INFO, logger="httpx"):
        logging.getLogger("httpx").info("HTTP Request: POST %s", "http://h/x/sekrit-token-77")
    assert "sekrit" not in caplog.text
