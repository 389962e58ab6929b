"""Email, Teams, Opsgenie and Jira through the outbox: the outage pattern of test_outbox.py.

A simulated clock drives the sender, backoff and breakers and the receivers' fault windows;
the requests are real: SMTP with STARTTLS and AUTH to aiosmtpd, HTTP to local receivers that
check every request against the documented API shape.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from chat_ops_receivers import JiraReceiver, OpsgenieReceiver, TeamsReceiver
from receivers import make_alert
from sinks.notify.config import NotifyConfig
from sinks.notify.service import NotifyService
from smtp_server import SmtpServer, parts
from test_outbox import START, Clock, run_until

TEAMS_SIG = "sig=Zx9TeamsWorkflowSignature0123"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def world(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[SmtpServer, TeamsReceiver, OpsgenieReceiver, JiraReceiver]]:
    smtp = SmtpServer(tmp_path, clock=clock)
    teams, og, jira = TeamsReceiver(clock), OpsgenieReceiver(clock), JiraReceiver(clock)
    monkeypatch.setenv("T_SMTP_PASSWORD", smtp.password)
    monkeypatch.setenv("T_TEAMS_URL", f"{teams.base}/workflows/7f3e/triggers/manual/paths/"
                                      f"invoke?api-version=1&{TEAMS_SIG}")
    monkeypatch.setenv("T_OG_KEY", og.api_key)
    monkeypatch.setenv("T_JIRA_TOKEN", jira.token)
    yield smtp, teams, og, jira
    smtp.stop()
    for server in (teams, og, jira):
        server.close()


def service(tmp_path: Path, clock: Clock, world: tuple) -> NotifyService:  # type: ignore[type-arg]
    smtp, teams, og, jira = world
    config = NotifyConfig.model_validate({
        "receivers": {
            "mail": {"type": "email", "host": "127.0.0.1", "port": smtp.port,
                     "username": smtp.user, "password": {"env": "T_SMTP_PASSWORD"},
                     "ca_file": str(smtp.ca), "from_address": "ctrail@example.com",
                     "to": ["secops@example.com", "audit@example.com"]},
            "teams": {"type": "teams", "webhook_url": {"env": "T_TEAMS_URL"}},
            "pager": {"type": "opsgenie", "api_key": {"env": "T_OG_KEY"}, "url": og.base,
                      "resolve_after_secs": 600,
                      "responders": [{"type": "team", "name": "platform-security"}]},
            "tickets": {"type": "jira", "url": jira.base, "user": jira.user,
                        "token": {"env": "T_JIRA_TOKEN"}, "project": "SEC",
                        "priorities": {"medium": "Medium"}, "resolve_after_secs": 600}},
        "delivery": {"breaker_failures": 5, "breaker_reset_secs": 30, "max_backoff_secs": 60}})
    return config.build(tmp_path / "data", clock=clock)


def test_an_outage_of_two_minutes_loses_and_repeats_nothing_on_every_new_receiver(
        tmp_path: Path, clock: Clock, world, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    smtp, teams, og, jira = world
    calls = Counter[str]()

    def outage(now: float) -> tuple[int, dict[str, str]] | None:
        if now >= START + 120:
            return None
        calls["http"] += 1
        return (429, {"Retry-After": "7"}) if calls["http"] % 2 else (503, {})
    for server in (teams, og, jira):
        server.fault = outage
    smtp.fault = lambda now: "451 4.3.0 Try again later" if now < START + 120 else None
    svc = service(tmp_path, clock, world)
    groups = [("CT-K8S-004", "web-1"), ("CT-K8S-004", "web-2"), ("CT-K8S-001", "db-0")]
    alerts = [make_alert(i, rule=groups[i % 3][0], pod=groups[i % 3][1]) for i in range(30)]
    arrivals = {START + 5 * i: [a] for i, a in enumerate(alerts)}     # 0 s to 145 s
    caplog.set_level(logging.DEBUG)
    try:
        run_until(svc, clock, START + 400, arrivals)
        assert svc.outbox.counts() == {"delivered": 120}
        assert smtp.refused and teams.refused and og.refused and jira.refused
        assert all(m.at >= START + 120 for m in smtp.mails)
        assert all(d.at >= START + 120 for s in (teams, og, jira) for d in s.accepted)
        ids = sorted(a.event.id for a in alerts)
        # Email: over STARTTLS, logged in, each alert in exactly one mail.
        assert all(m.tls and m.login == smtp.user for m in smtp.mails)
        assert all(m.rcpt_tos == ["secops@example.com", "audit@example.com"] for m in smtp.mails)
        mailed = [i for m in smtp.mails for i in re.findall(r"alert-\d{6}",
                                                             parts(m.message)["text"])]
        assert sorted(mailed) == ids
        assert len({m.message["Message-ID"] for m in smtp.mails}) == len(smtp.mails)
        # Teams: every card valid, every alert counted once (cards and digests).
        assert not teams.problems and teams.alerts_covered() == 30
        # Opsgenie: one alert per group, its creates counting every alert once.
        assert not og.problems and og.created == 3
        assert sorted(sum(int(c["details"]["count"]) for c in a["creates"])
                      for a in og.alerts.values()) == [10, 10, 10]
        # Jira: one issue per group, later alerts as comments on it, each alert counted once.
        assert not jira.problems and len(jira.issues) == 3
        assert jira.alerts_covered() == 30
        assert all(i["fields"]["priority"] == {"name": "Medium"} for i in jira.issues.values())
        # A later alert of an open group: a comment on its issue, a repeat of its alias.
        run_until(svc, clock, START + 450, {START + 401: [make_alert(30, pod="web-1")]})
        [web1] = [i for i in jira.issues.values() if "web-1" in i["fields"]["summary"]]
        assert len(web1["comments"]) >= 1 and jira.alerts_covered() == 31
        assert len(jira.issues) == 3 and og.created == 3
        # Quiet for resolve_after_secs: Opsgenie closes by alias, Jira transitions to Done.
        run_until(svc, clock, START + 1100)
        assert [a["status"] for a in og.alerts.values()] == ["closed"] * 3
        assert og.close_misses == 0
        assert [i["status"] for i in jira.issues.values()] == ["Done"] * 3
        # A new alert of a resolved group: a new Opsgenie alert and a new Jira issue.
        run_until(svc, clock, START + 1200, {START + 1101: [make_alert(99, pod="web-1")]})
        assert og.created == 4 and len(jira.issues) == 4
        assert not og.problems and not jira.problems and not teams.problems
    finally:
        svc.close()
    stored = b"".join(path.read_bytes() for path in (tmp_path / "data" / "notify").iterdir()
                      if path.name.startswith("outbox.sqlite3"))     # with its WAL
    secrets = (smtp.password, og.api_key, jira.token, TEAMS_SIG.split("=")[1])
    for secret in secrets:
        assert secret.encode() not in stored
        assert secret not in caplog.text


def test_receivers_that_refuse_connections_for_two_minutes_get_every_alert_once_after(
        tmp_path: Path, clock: Clock, world) -> None:  # type: ignore[no-untyped-def]
    """Down for real: the SMTP server and the HTTP receivers stop listening (connection
    refused), then listen again on the same ports."""
    smtp, teams, og, jira = world
    http = (teams, og, jira)
    smtp.stop()
    for server in http:
        server.close()
    svc = service(tmp_path, clock, world)
    alerts = [make_alert(i, pod=f"web-{i % 2}") for i in range(20)]
    pending = {START + 6 * i: [a] for i, a in enumerate(alerts)}     # 0 s to 114 s
    down = True
    try:
        while clock.now < START + 400:
            for at in [t for t in pending if t <= clock.now]:
                svc.enqueue(pending.pop(at))
            if down and clock.now >= START + 120:
                smtp.restart()
                for server in http:
                    server.restart()
                down = False
            wake = svc.sender.tick()
            nxt = min([*pending, START + 120 if down else START + 400])
            clock.now = max(clock.now + 0.01, min(wake, nxt, START + 400))
        assert svc.outbox.counts() == {"delivered": 80}
        status = svc.status()["receivers"]
        assert all(s["breaker"] == "closed" for s in status.values())       # it closed again
        assert max(svc.sender.receivers["mail"].failed.values()) >= 3
        ids = sorted(a.event.id for a in alerts)
        mailed = [i for m in smtp.mails for i in re.findall(r"alert-\d{6}",
                                                             parts(m.message)["text"])]
        assert sorted(mailed) == ids and all(m.at >= START + 120 for m in smtp.mails)
        assert teams.alerts_covered() == 20 and og.created == 2 and len(jira.issues) == 2
        assert jira.alerts_covered() == 20
        assert sorted(sum(int(c["details"]["count"]) for c in a["creates"])
                      for a in og.alerts.values()) == [10, 10]
        assert not (teams.problems or og.problems or jira.problems)
    finally:
        svc.close()
