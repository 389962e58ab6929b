"""Slack: Block Kit messages within the documented limits, sent by webhook or chat.postMessage."""

from __future__ import annotations

from typing import Iterator

import pytest

from receivers import SlackReceiver, block_kit_problems, make_alert
from sinks.notify.digest import summarise
from sinks.notify.message import Message, Outcome, Pending
from sinks.slack import SlackConfig, SlackNotifier, alert_message, digest_message


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    receiver = SlackReceiver()
    yield receiver
    receiver.close()


def webhook(slack: SlackReceiver, monkeypatch: pytest.MonkeyPatch, **extra: object) -> SlackNotifier:
    monkeypatch.setenv("T_SLACK", f"{slack.base}/services/T1/B2/secretpath")
    config = SlackConfig.model_validate({"webhook_url": {"env": "T_SLACK"}, **extra})
    return config.build("chat", "https://kibana.example.com")


def test_an_alert_message_says_what_who_where_how_often_and_what_next() -> None:
    message = alert_message(make_alert(7, severity="high", count=4), "https://kibana.example.com")
    assert block_kit_problems(message) == []
    text = str(message)
    for expected in ("HIGH: Rule CT-K8S-004", "CT-K8S-004", "alice@example.com", "prod-eu",
                     "shop", "web-1", "registry.example.com/shop/web:1.4.2",
                     "sha256:" + "ab" * 32, "4×", "ctrail timeline --pod shop/web-1",
                     "ctrail timeline --container 3f2a", "ctrail timeline --user alice@example.com",
                     "https://kibana.example.com/app/discover#/", "alert-000007"):
        assert expected in text, expected
    assert [b["type"] for b in message["blocks"]] == ["header", "section", "section", "actions",
                                                       "context"]
    assert message["text"].startswith("[HIGH] Rule CT-K8S-004 (CT-K8S-004) by alice@example.com")


def test_long_values_are_cut_to_the_block_kit_limits() -> None:
    alert = make_alert(1, rule="R" * 5000, pod="p" * 2500, user="u" * 4000)
    message = alert_message(alert, None)
    assert block_kit_problems(message) == []
    assert len(message["blocks"][0]["text"]["text"]) == 150
    assert not any(b["type"] == "actions" for b in message["blocks"])


def test_a_digest_names_counts_top_rules_and_critical_alerts() -> None:
    alerts = [make_alert(i, rule=f"CT-K8S-00{i % 3}", severity="critical" if i == 5 else "low")
              for i in range(40)]
    message = digest_message(summarise(alerts, "storm"), None)
    assert block_kit_problems(message) == []
    assert message["blocks"][0]["text"]["text"] == "40 alerts (storm digest)"
    assert "*Critical*" in str(message) and "alert-000005" in str(message)


def test_the_webhook_delivers_and_the_receiver_accepts_it(
        slack: SlackReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    notifier = webhook(slack, monkeypatch)
    [message] = notifier.messages([Pending(1, make_alert(1))], budget=3)
    assert notifier.post(message).outcome is Outcome.DELIVERED
    assert slack.accepted[0].path == "/services/T1/B2/secretpath" and not slack.problems
    notifier.close()


def test_a_429_is_retried_after_its_retry_after(slack: SlackReceiver,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    slack.fault = lambda _now: (429, {"Retry-After": "30"})
    notifier = webhook(slack, monkeypatch)
    [message] = notifier.messages([Pending(1, make_alert(1))], budget=3)
    result = notifier.post(message)
    assert (result.outcome, result.status, result.retry_after_secs) == (Outcome.RETRY, 429, 30.0)
    notifier.close()


def test_an_invalid_message_is_rejected_not_retried(slack: SlackReceiver,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    notifier = webhook(slack, monkeypatch)
    bad = Message((1,), {"blocks": [{"type": "section"}]})
    result = notifier.post(bad)
    assert (result.outcome, result.status) == (Outcome.REJECTED, 400)
    notifier.close()


def test_chat_post_message_uses_the_bot_token_and_channel(
        slack: SlackReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_BOT", slack.token)
    notifier = SlackConfig.model_validate({"token": {"env": "T_BOT"}, "channel": "C0SECURITY",
                                           "api_url": f"{slack.base}/api"}).build("chat", None)
    [message] = notifier.messages([Pending(1, make_alert(1))], budget=1)
    assert notifier.post(message).outcome is Outcome.DELIVERED
    assert slack.accepted[0].body["channel"] == "C0SECURITY"
    monkeypatch.setenv("T_BOT", "xoxb-revoked")
    revoked = SlackConfig.model_validate({"token": {"env": "T_BOT"}, "channel": "C0SECURITY",
                                          "api_url": f"{slack.base}/api"}).build("chat", None)
    result = revoked.post(message)             # a revoked token: kept and retried, not dropped
    assert (result.outcome, result.detail) == (Outcome.RETRY, "chat.postMessage: invalid_auth")
    notifier.close()
    revoked.close()


def test_a_backlog_beyond_the_pace_becomes_one_digest(
        slack: SlackReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    notifier = webhook(slack, monkeypatch)
    few = [Pending(i, make_alert(i)) for i in range(5)]
    assert [m.kind for m in notifier.messages(few, budget=2)] == ["alert", "alert"]
    many = [Pending(i, make_alert(i)) for i in range(25)]
    [digest] = notifier.messages(many, budget=2)
    assert digest.kind == "digest" and digest.seqs == tuple(range(25))
    notifier.close()


def test_config_needs_exactly_one_way_to_post() -> None:
    with pytest.raises(ValueError, match="either webhook_url, or token and channel"):
        SlackConfig.model_validate({})
    with pytest.raises(ValueError, match="token needs a channel"):
        SlackConfig.model_validate({"token": {"env": "X"}})


def _parsed_texts(message: dict) -> list[str]:  # type: ignore[type-arg]
    """The top-level `text` and every mrkdwn text: what Slack parses for mentions and links."""
    found = [message["text"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(message["blocks"])
    return found


def test_mentions_and_links_in_names_are_escaped_everywhere_slack_parses_text() -> None:
    alert = make_alert(3, user="<!channel> & <@U123>", pod="<!here>",
                       namespace="<https://evil.example|shop>")
    for message in (alert_message(alert, None), digest_message(summarise([alert], "storm"), None)):
        for text in _parsed_texts(message):
            assert "<" not in text and ">" not in text, text
            assert "& " not in text, text
    fallback = alert_message(alert, None)["text"]
    assert "by &lt;!channel&gt; &amp; &lt;@U123&gt; in " in fallback
