"""Teams: Adaptive Cards in the Workflows webhook's message envelope, within Teams' limits."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from chat_ops_receivers import TeamsReceiver, adaptive_card_problems
from receivers import make_alert
from sinks.notify.digest import summarise
from sinks.notify.message import Outcome, Pending
from sinks.notify.report_notice import ReportNotice
from sinks.teams import TeamsConfig, TeamsNotifier, alert_card, digest_card, report_card


def problems(message: dict) -> list[str]:  # type: ignore[type-arg]
    return adaptive_card_problems(message, len(orjson.dumps(message)))


@pytest.fixture
def teams() -> Iterator[TeamsReceiver]:
    receiver = TeamsReceiver()
    yield receiver
    receiver.close()


def notifier(teams: TeamsReceiver, monkeypatch: pytest.MonkeyPatch) -> TeamsNotifier:
    monkeypatch.setenv("T_TEAMS", f"{teams.base}/workflows/1/triggers/manual/paths/invoke"
                                  "?api-version=1&sig=s3cr3tsig")
    return TeamsConfig.model_validate({"webhook_url": {"env": "T_TEAMS"}}).build(
        "teams", "https://kibana.example.com")


def test_an_alert_card_says_what_who_where_how_often_and_what_next() -> None:
    message = alert_card(make_alert(7, severity="high", count=4), "https://kibana.example.com")
    assert problems(message) == []
    assert message["type"] == "message"
    [attachment] = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts["Who"] == "alice@example.com" and facts["Repeated"] == "4×"
    assert facts["Image"] == "registry.example.com/shop/web:1.4.2"
    assert card["body"][0]["text"] == "HIGH: Rule CT-K8S-004 in shop/web-1"
    assert card["body"][0]["color"] == "Attention"
    assert "ctrail timeline --pod shop/web-1" in str(card["body"])
    assert card["actions"][0]["type"] == "Action.OpenUrl"
    assert card["actions"][0]["url"].startswith("https://kibana.example.com/app/discover#/")


def test_markdown_in_names_is_escaped_and_huge_values_fit_in_28_kb() -> None:
    alert = make_alert(1, pod="[click](https://evil.example)", user="*boss*" + "u" * 50_000,
                       rule="R" * 40_000)
    message = alert_card(alert, None)
    assert problems(message) == [] and "actions" not in message["attachments"][0]["content"]
    facts = {f["title"]: f["value"] for f in message["attachments"][0]["content"]["body"][2]["facts"]}
    assert facts["Pod"] == "\\[click\\](https://evil.example)"
    assert facts["Who"].startswith("\\*boss\\*u")
    assert len(orjson.dumps(message)) < 28 * 1024


def test_a_digest_card_counts_and_names_the_critical_alerts() -> None:
    alerts = [make_alert(i, severity="critical" if i == 5 else "low") for i in range(40)]
    message = digest_card(summarise(alerts, "storm"), None)
    assert problems(message) == []
    card = message["attachments"][0]["content"]
    assert card["body"][0]["text"] == "40 alerts (storm digest)"
    assert "alert-000005" in str(card)


def test_a_report_card_links_to_the_report() -> None:
    notice = ReportNotice(name="weekly", title="Weekly audit report",
                          time_from=datetime(2026, 11, 30, tzinfo=timezone.utc),
                          time_to=datetime(2026, 12, 7, tzinfo=timezone.utc),
                          generated=datetime(2026, 12, 7, 6, 1, tzinfo=timezone.utc),
                          summary=(("Events", "1204"), ("Alerts", "17")),
                          files=(Path("/r/weekly.html"), Path("/r/weekly.md")),
                          link="https://reports.example.com/weekly/weekly.html")
    message = report_card(notice)
    assert problems(message) == []
    card = message["attachments"][0]["content"]
    assert card["body"][2]["facts"] == [{"title": "Events", "value": "1204"},
                                        {"title": "Alerts", "value": "17"}]
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open the report",
                                "url": "https://reports.example.com/weekly/weekly.html"}]


def test_the_workflow_accepts_a_card_and_its_answers_are_classified(
        teams: TeamsReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    n = notifier(teams, monkeypatch)
    [message] = n.messages([Pending(1, make_alert(1))], 3)
    assert n.post(message).outcome is Outcome.DELIVERED and len(teams.accepted) == 1
    teams.fault = lambda now: (429, {"Retry-After": "30"})
    throttled = n.post(message)
    assert throttled.outcome is Outcome.RETRY and throttled.retry_after_secs == 30
    teams.fault = None
    broken = message.__class__(message.seqs, {"type": "message", "attachments": []})
    assert n.post(broken).outcome is Outcome.REJECTED
    assert "s3cr3tsig" not in str(teams.problems) + n.post(broken).detail
