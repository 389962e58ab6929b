"""A scheduled report, once rendered, reaches its receivers through the notify outbox: by email
(the report's HTML as the body, the rendered files attached) to a real SMTP server with
STARTTLS and AUTH, and as a summary with a link to Slack and Teams receivers that check the
documented shapes. A failed delivery stays pending, is retried, and shows in /metrics."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
from apscheduler.executors.debug import DebugExecutor

from chat_ops_receivers import TeamsReceiver
from ctrail.runtime.ops import prometheus_text
from ctrail.runtime.scheduler import Scheduler
from ctrail.runtime.telemetry import Telemetry
from ctrail.settings import Settings
from receivers import SlackReceiver
from sinks.notify.report_notice import enqueue_report
from sinks.notify.service import NotifyService
from smtp_server import SmtpServer, parts
from test_outbox import START, Clock
from tests.scheduler_time import SimulatedClock, simulated_scheduler_time

LINK = "https://reports.example.com/weekly"


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[Settings, Clock, SmtpServer, TeamsReceiver, SlackReceiver]]:
    clock = Clock()
    smtp = SmtpServer(tmp_path, clock=clock)
    teams, slack = TeamsReceiver(clock), SlackReceiver(clock)
    monkeypatch.setenv("T_SMTP_PASSWORD", smtp.password)
    monkeypatch.setenv("T_TEAMS_URL", f"{teams.base}/workflows/1/invoke?sig=teamsreportsig")
    monkeypatch.setenv("T_SLACK_URL", f"{slack.base}/services/T1/B2/slackreportsecret")
    settings = Settings(data_dir=tmp_path / "data", notify={"receivers": {
        "mail": {"type": "email", "host": "127.0.0.1", "port": smtp.port, "username": smtp.user,
                 "password": {"env": "T_SMTP_PASSWORD"}, "ca_file": str(smtp.ca),
                 "from_address": "ctrail@example.com", "to": ["compliance@example.com"]},
        "teams": {"type": "teams", "webhook_url": {"env": "T_TEAMS_URL"}},
        "chat": {"type": "slack", "webhook_url": {"env": "T_SLACK_URL"}}}},
        reports={"weekly": {"template": "weekly", "schedule": "0 6 * * 1",
                            "deliver_to": ["mail", "teams", "chat"], "link_url": LINK}})
    yield settings, clock, smtp, teams, slack
    smtp.stop()
    teams.close()
    slack.close()


@pytest.fixture
def when(monkeypatch: pytest.MonkeyPatch) -> SimulatedClock:
    """The scheduler's time (the notify side keeps its own Clock)."""
    return simulated_scheduler_time(monkeypatch)


def deliver(service: NotifyService, clock: Clock, secs: float) -> None:
    end = clock.now + secs
    while clock.now < end:
        wake = service.sender.tick()
        clock.now = max(clock.now + 0.01, min(wake, end))


def test_a_scheduled_weekly_report_arrives_by_mail_and_as_chat_summaries_once(world, when) -> None:  # type: ignore[no-untyped-def]
    settings, clock, smtp, teams, slack = world
    scheduler = Scheduler(settings, clock=when, executor=DebugExecutor())
    service = settings.notify.build(settings.data_dir, clock=clock)
    telemetry = Telemetry()
    telemetry.add_source(service.samples)
    try:
        scheduler.start()
        when.now = datetime(2026, 1, 5, 6, 0, 1, tzinfo=timezone.utc)   # Monday 06:00 passes
        scheduler.wakeup()
        outbox = service.outbox
        deadline = time.monotonic() + 20
        while sum(outbox.report_counts().values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert outbox.report_counts() == {(r, "pending"): 1 for r in ("chat", "mail", "teams")}
        report_dir = settings.data_dir / "reports" / "weekly"
        files = sorted(report_dir.iterdir())
        html_file = next(p for p in files if p.suffix == ".html")
        assert html_file.name == "weekly-20260105T0600.html" and len(files) >= 3
        # The relay is briefly unhappy: the mail stays pending, is retried, and says so.
        smtp.fault = lambda now: "451 4.3.0 Try again later" if now < START + 30 else None
        deliver(service, clock, 5)
        metrics = prometheus_text(telemetry)
        assert 'ctrail_notify_report_deliveries{receiver="mail",state="pending"} 1' in metrics
        assert 'ctrail_notify_failed_total{kind="report",receiver="mail"}' in metrics
        assert 'ctrail_notify_report_deliveries{receiver="teams",state="delivered"} 1' in metrics
        assert not smtp.mails and smtp.refused >= 1
        deliver(service, clock, 120)
        assert 'ctrail_notify_report_deliveries{receiver="mail",state="delivered"} 1' in \
            prometheus_text(telemetry)
        # Once: a second run of the same scheduled time, or the same notice again, adds nothing.
        scheduler.run("report:weekly")
        assert enqueue_report(settings.data_dir, ["mail"], _notice(service)) == 0
        deliver(service, clock, 60)
        [mail] = smtp.mails
        assert mail.tls and mail.login == smtp.user
        message = mail.message
        assert message["Subject"].startswith("[ContainerTrail] Weekly") and \
            "2025-12-29 06:00 to 2026-01-05 06:00 UTC" in message["Subject"]
        body = parts(message)
        assert body["html"].replace("\r\n", "\n") == html_file.read_text()   # SMTP: CRLF
        assert body["attachments"] == {p.name: p.read_bytes() for p in files}
        assert f"Open the report: {LINK}/{html_file.name}" in body["text"]
        [card] = teams.cards()
        assert not teams.problems and card["actions"][0]["url"] == f"{LINK}/{html_file.name}"
        [posted] = slack.accepted
        assert not slack.problems
        assert posted.body["blocks"][-1]["elements"][0]["url"] == f"{LINK}/{html_file.name}"
    finally:
        scheduler.stop()
        service.close()


def _notice(service: NotifyService):  # type: ignore[no-untyped-def]
    from sinks.notify.report_notice import ReportNotice
    [(_, raw)] = service.outbox._query("SELECT seq, notice FROM report_outbox WHERE receiver = 'mail'")
    return ReportNotice.model_validate_json(raw)


def test_deliver_to_must_name_a_receiver_that_can_carry_a_report(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reports.weekly.deliver_to: 'pager' is not a receiver"):
        Settings(data_dir=tmp_path, notify={"receivers": {"pager": {
            "type": "opsgenie", "api_key": {"env": "X"}}}},
            reports={"weekly": {"template": "weekly", "deliver_to": ["pager"]}})
