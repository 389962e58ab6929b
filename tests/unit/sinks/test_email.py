"""Email: a text and an HTML part, sent over STARTTLS with AUTH to a real SMTP server (aiosmtpd)
on loopback with a throwaway certificate; SMTP answers classified; no password in the clear."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
from pydantic import ValidationError

from receivers import make_alert
from sinks.notify.message import Outcome, Pending
from sinks.notify.report_notice import ReportNotice
from sinks.smtp import EmailConfig, EmailNotifier, digest_mail
from smtp_server import SmtpServer, parts


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path)
    yield server
    server.stop()


def notifier(smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch, password: str | None = None,
             **extra: object) -> EmailNotifier:
    monkeypatch.setenv("T_SMTP_PASSWORD", password or smtp.password)
    config = EmailConfig.model_validate({
        "host": "127.0.0.1", "port": smtp.port, "username": smtp.user,
        "password": {"env": "T_SMTP_PASSWORD"}, "ca_file": str(smtp.ca),
        "from_address": "ctrail@example.com", "to": ["secops@example.com"], **extra})
    return config.build("mail", "https://kibana.example.com")


def send_one(n: EmailNotifier, i: int = 1, **alert: object):  # type: ignore[no-untyped-def]
    return n.post(n.messages([Pending(i, make_alert(i, **alert))], 3)[0])  # type: ignore[arg-type]


def test_an_alert_mail_has_text_and_html_parts_over_starttls_with_auth(
        smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    result = send_one(notifier(smtp, monkeypatch), 7, severity="high", pod="<b>web</b>-1")
    assert result.outcome is Outcome.DELIVERED and result.status == 250
    [mail] = smtp.mails
    assert mail.tls and mail.login == "ctrail"
    assert mail.mail_from == "ctrail@example.com" and mail.rcpt_tos == ["secops@example.com"]
    message = mail.message
    assert message["Subject"] == ("[ContainerTrail] [HIGH] Rule CT-K8S-004: alice@example.com in "
                                  "shop/<b>web</b>-1")
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    body = parts(message)
    for expected in ("Who: alice@example.com", "Pod: <b>web</b>-1", "Alert: alert-000007",
                     "ctrail timeline --container 3f2a", "Open in Kibana: https://kibana"):
        assert expected in body["text"], expected
    assert "&lt;b&gt;web&lt;/b&gt;-1" in body["html"] and "<b>web</b>" not in body["html"]
    assert '<a href="https://kibana.example.com/app/discover#/' in body["html"]


def test_the_same_alert_sent_again_keeps_its_message_id(smtp: SmtpServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    n = notifier(smtp, monkeypatch)
    send_one(n, 3)
    send_one(n, 3)
    send_one(n, 4)
    ids = [m.message["Message-ID"] for m in smtp.mails]
    assert ids[0] == ids[1] != ids[2] and ids[0].endswith("@example.com>")


def test_a_wrong_password_is_retried_and_never_logged(
        smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    result = send_one(notifier(smtp, monkeypatch, password="not-the-Pa55word"))
    assert result.outcome is Outcome.RETRY and result.status == 535
    assert smtp.failed_logins >= 1 and not smtp.mails      # smtplib tries PLAIN, then LOGIN
    assert "not-the-Pa55word" not in result.detail + caplog.text


def test_a_server_we_cannot_verify_gets_no_password(smtp: SmtpServer, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the test CA the certificate fails verification: no AUTH is attempted."""
    monkeypatch.setenv("T_SMTP_PASSWORD", smtp.password)
    config = EmailConfig.model_validate({
        "host": "127.0.0.1", "port": smtp.port, "username": smtp.user,
        "password": {"env": "T_SMTP_PASSWORD"}, "from_address": "ctrail@example.com",
        "to": ["secops@example.com"]})
    result = send_one(config.build("mail", None))
    assert result.outcome is Outcome.RETRY and "CERTIFICATE_VERIFY_FAILED" in result.detail
    assert smtp.failed_logins == 0 and not smtp.mails


def test_a_server_down_is_retried_and_a_refused_message_is_rejected(
        smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    n = notifier(smtp, monkeypatch)
    smtp.fault = lambda now: "451 4.3.0 Try again later"
    assert send_one(n).outcome is Outcome.RETRY
    smtp.fault = lambda now: "554 5.7.1 Message rejected as spam"
    rejected = send_one(n)
    assert rejected.outcome is Outcome.REJECTED and rejected.status == 554
    assert "rejected as spam" in rejected.detail
    smtp.stop()
    down = send_one(n)
    assert down.outcome is Outcome.RETRY and "ConnectionRefusedError" in down.detail
    smtp.restart()


def test_a_backlog_beyond_the_pace_is_one_digest_naming_every_alert(
        smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    n = notifier(smtp, monkeypatch)
    batch = [Pending(i, make_alert(i, severity="critical" if i == 9 else "low"))
             for i in range(25)]
    [message] = n.messages(batch, 3)
    assert message.kind == "digest" and message.seqs == tuple(range(25))
    assert n.post(message).outcome is Outcome.DELIVERED
    text = parts(smtp.mails[0].message)["text"]
    assert smtp.mails[0].message["Subject"] == "[ContainerTrail] 25 alerts (storm digest)"
    assert all(f"alert-{i:06d}" in text for i in range(25))
    assert text.index("alert-000009") < text.index("alert-000000")   # critical first


def test_config_keeps_the_password_off_plain_connections() -> None:
    base = {"host": "smtp.example.com", "from_address": "c@example.com", "to": ["s@example.com"]}
    with pytest.raises(ValidationError, match="only over starttls or tls"):
        EmailConfig.model_validate({**base, "security": "none", "username": "u",
                                    "password": {"env": "X"}})
    with pytest.raises(ValidationError, match="both username and password"):
        EmailConfig.model_validate({**base, "username": "u"})
    with pytest.raises(ValidationError, match="not one email address"):
        EmailConfig.model_validate({**base, "to": ["a@example.com, b@example.com"]})
    assert EmailConfig.model_validate({**base, "security": "none"}).port is None


def test_digest_text_is_pure_and_quiet_hours_say_so() -> None:
    mail = digest_mail([make_alert(1), make_alert(2)], "quiet hours", "[CT]")
    assert mail["subject"] == "[CT] 2 alerts (quiet hours digest)"
    assert "quiet hours ended" in mail["text"] and "alert-000002" in mail["html"]


def test_implicit_tls_on_a_submissions_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = SmtpServer(tmp_path, implicit_tls=True)
    try:
        result = send_one(notifier(server, monkeypatch, security="tls"))
        assert result.outcome is Outcome.DELIVERED
        assert server.mails[0].tls and server.mails[0].login == "ctrail"
        starttls = send_one(notifier(server, monkeypatch))       # plain hello to a TLS port
        assert starttls.outcome is Outcome.RETRY and not server.failed_logins
    finally:
        server.stop()


def test_a_report_whose_files_are_gone_is_rejected_with_the_reason(
        smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "weekly.html"
    page.write_text("<html><body><h1>Weekly</h1></body></html>")
    notice = ReportNotice(name="weekly", title="Weekly audit report",
                          time_from=datetime(2026, 11, 30, tzinfo=timezone.utc),
                          time_to=datetime(2026, 12, 7, tzinfo=timezone.utc),
                          generated=datetime(2026, 12, 7, 6, 1, tzinfo=timezone.utc),
                          files=(page, tmp_path / "weekly-alerts.csv"))
    n = notifier(smtp, monkeypatch)
    result = n.post(n.report_message(5, notice))
    assert result.outcome is Outcome.REJECTED and "weekly-alerts.csv" in result.detail
    assert not smtp.mails
    (tmp_path / "weekly-alerts.csv").write_text("rule,count\nCT-K8S-004,3\n")
    assert n.post(n.report_message(5, notice)).outcome is Outcome.DELIVERED
    body = parts(smtp.mails[0].message)
    assert "<h1>Weekly</h1>" in body["html"] and set(body["attachments"]) == {
        "weekly.html", "weekly-alerts.csv"}
