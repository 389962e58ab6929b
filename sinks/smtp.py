"""Receiver: email over SMTP (STARTTLS on 587 by default, or implicit TLS on 465), with AUTH.

One mail per alert, with a plain text and an HTML part: what happened, who, where, how often,
what to run next, a Kibana link when `notify.kibana_url` is set. A backlog beyond the pace goes
as one digest mail listing every alert it covers. A rendered report goes as a mail whose HTML
body is the report itself (rendered self-contained for mail clients) with the rendered files
attached, up to `max_attachment_bytes`; files beyond that are named, not attached.

Each mail's Message-ID is derived from the receiver and what it covers, so a mail sent again
after a lost answer or a crash carries the same id and mail clients show it once.
The password never travels in the clear: `password` needs `starttls` or `tls`, and the server's
certificate is verified (against `ca_file` when given, else the system's trust store).
Answers: 250 delivered; a 5xx at DATA (size, content policy) or a 552 at MAIL FROM is this
mail refused for good (kept as rejected); everything else (4xx, an AUTH failure, a refused
recipient, no STARTTLS, a network error) is retried, as a broken receiver is until fixed.
"""

from __future__ import annotations

import hashlib
import html
import mimetypes
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, Final, Literal, Sequence

from pydantic import Field, PositiveInt, model_validator

from ctrail.event import Alert
from ctrail.secrets import SecretRef
from sinks.notify.context import cut, facts, headline, kibana_link, next_steps, subject, who
from sinks.notify.digest import digest_reason, digest_why
from sinks.notify.message import (
    DigestReceiverBase,
    Message,
    NotifierBase,
    Outcome,
    Pending,
    Result,
    one_per_alert,
    redact,
    secret_value,
)
from sinks.notify.report_notice import ReportNotice
from sinks.notify.routing import alert_severity

DEFAULT_PORT: Final = {"starttls": 587, "tls": 465, "none": 25}
STYLE: Final = ("font-family:Arial,Helvetica,sans-serif;font-size:14px;color:#212529")


class EmailConfig(DigestReceiverBase):
    """Mail to one or more addresses through an SMTP server (a relay or a provider's submission
    port)."""

    type: Literal["email"] = "email"
    host: str
    port: int | None = Field(None, description="Default 587 (starttls), 465 (tls), 25 (none).")
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretRef | None = Field(None, description="With `username` (a secret).")
    ca_file: Path | None = Field(None, description="Trust this CA (PEM) for the server's "
                                 "certificate instead of the system's.")
    from_address: str
    to: tuple[str, ...] = Field(min_length=1)
    subject_prefix: str = "[ContainerTrail]"
    max_attachment_bytes: PositiveInt = Field(
        20 * 1024 * 1024, description="Report files attached, in all, up to this size.")

    @model_validator(mode="after")
    def _credentials(self) -> "EmailConfig":
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password, or neither")
        if self.password is not None and self.security == "none":
            raise ValueError("a password is sent only over starttls or tls")
        for address in (self.from_address, *self.to):
            if "@" not in address or any(c in address for c in "\r\n,;"):
                raise ValueError(f"not one email address: {address!r}")
        return self

    def build(self, name: str, kibana_url: str | None) -> "EmailNotifier":
        return EmailNotifier(name, self, kibana_url)


def one_line(text: str, limit: int = 200) -> str:
    return cut(" ".join(text.splitlines()), limit)


def _facts(alert: Alert) -> list[tuple[str, str]]:
    return [*facts(alert), ("Repeated", f"{alert.alert.count}×"), ("Alert", alert.event.id),
            ("Group", alert.alert.group_key), ("Time", alert.timestamp.isoformat())]


def _html_page(title: str, inner: str) -> str:
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f'</title></head><body style="{STYLE}"><h2>{html.escape(title)}</h2>{inner}'
            "</body></html>")


def _html_table(rows: Sequence[tuple[str, str]]) -> str:
    cells = "".join(f'<tr><th align="left" style="padding:2px 12px 2px 0">{html.escape(k)}</th>'
                    f"<td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def alert_mail(alert: Alert, kibana_url: str | None, prefix: str) -> dict[str, Any]:
    """Subject, text and HTML of the mail for one alert (pure)."""
    severity = alert_severity(alert).word
    rule = alert.rule
    title = headline(alert)
    intro = f"{rule.name} ({rule.id}), severity {severity}."
    steps, link = next_steps(alert), kibana_link(kibana_url, alert)
    text = [intro, *([rule.description] if rule.description else []), "",
            *(f"{k}: {v}" for k, v in _facts(alert))]
    inner = f"<p>{html.escape(intro)}</p>"
    if rule.description:
        inner += f"<p>{html.escape(rule.description)}</p>"
    inner += _html_table(_facts(alert))
    if steps:
        text += ["", "What to run next:", *(f"  {s}" for s in steps)]
        inner += "<h3>What to run next</h3><pre>" + html.escape("\n".join(steps)) + "</pre>"
    if link:
        text += ["", f"Open in Kibana: {link}"]
        inner += f'<p><a href="{html.escape(link)}">Open in Kibana</a></p>'
    return {"subject": one_line(f"{prefix} {title}"), "text": "\n".join(text) + "\n",
            "html": _html_page(title, inner)}


def digest_mail(alerts: Sequence[Alert], reason: str, prefix: str) -> dict[str, Any]:
    """One mail naming every alert of a backlog, most severe first (pure)."""
    ordered = sorted(alerts, key=lambda a: -int(alert_severity(a)))
    title = f"{len(alerts)} alerts ({reason} digest)"
    intro = f"{len(alerts)} alerts in one mail because {digest_why(reason, 'this receiver')}."
    lines = [f"[{alert_severity(a).word.upper()}] {a.rule.name} ({a.rule.id}): "
             f"{who(a) or 'unknown'} in {subject(a)}, {a.timestamp.isoformat()} ({a.event.id})"
             for a in ordered]
    inner = (f"<p>{html.escape(intro)}</p><ul>"
             + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"
             "<p>Run <code>ctrail alerts --since 1h</code> for every alert.</p>")
    return {"subject": one_line(f"{prefix} {title}"),
            "text": "\n".join([intro, "", *(f"- {line}" for line in lines)]) + "\n",
            "html": _html_page(title, inner)}


def report_mail(notice: ReportNotice, prefix: str) -> dict[str, Any]:
    """The report's own HTML as the body when it was rendered, else a summary (pure: the file
    is read when sent)."""
    lines = [f"{notice.title}, {notice.period}.", "",
             *(f"{label}: {value}" for label, value in notice.summary)]
    if notice.link:
        lines += ["", f"Open the report: {notice.link}"]
    lines += ["", "Files: " + ", ".join(p.name for p in notice.files)]
    summary_html = _html_page(notice.title, f"<p>{html.escape(notice.period)}</p>"
                              + _html_table(notice.summary))
    html_file = notice.html_file()
    return {"subject": one_line(f"{prefix} {notice.title}: {notice.period}"),
            "text": "\n".join(lines) + "\n", "html": None if html_file else summary_html,
            "html_file": str(html_file) if html_file else None,
            "attachments": [str(p) for p in notice.files]}


class EmailNotifier(NotifierBase[EmailConfig]):
    def __init__(self, name: str, config: EmailConfig, kibana_url: str | None) -> None:
        super().__init__(name, config, kibana_url)
        self._password = secret_value(config.password) if config.password is not None else None
        self._context = ssl.create_default_context(
            cafile=str(config.ca_file) if config.ca_file else None)

    def messages(self, batch: Sequence[Pending], budget: int) -> list[Message]:
        reason = digest_reason(batch, budget, self.config.digest_min_alerts)
        if reason is not None:
            body = digest_mail([p.alert for p in batch], reason, self.config.subject_prefix)
            key = f"digest:{batch[0].seq}-{batch[-1].seq}"
            return [Message(tuple(p.seq for p in batch), body, "digest", key)]
        return one_per_alert(batch, budget, lambda alert: alert_mail(
            alert, self.kibana_url, self.config.subject_prefix))

    def report_message(self, seq: int, notice: ReportNotice) -> Message:
        return Message((seq,), report_mail(notice, self.config.subject_prefix), "report",
                       notice.delivery_id)

    def mail(self, message: Message) -> EmailMessage:
        """The MIME message: text, then HTML as its alternative, then attachments. Reads the
        report's files (OSError when one is gone)."""
        body = message.body
        mail = EmailMessage()
        mail["Subject"] = body["subject"]
        mail["From"] = self.config.from_address
        mail["To"] = ", ".join(self.config.to)
        mail["Date"] = formatdate(usegmt=True)
        digest = hashlib.blake2b(f"{self.name}\0{message.key}".encode(), digest_size=16)
        domain = self.config.from_address.rsplit("@", 1)[1]
        mail["Message-ID"] = f"<{digest.hexdigest()}@{domain}>"
        mail["Auto-Submitted"] = "auto-generated"           # RFC 3834: no auto-replies
        mail.set_content(body["text"])
        page = body.get("html") or Path(body["html_file"]).read_text(encoding="utf-8")
        mail.add_alternative(page, subtype="html")
        left, skipped = self.config.max_attachment_bytes, []
        for name in body.get("attachments", []):
            path = Path(name)
            data = path.read_bytes()
            if len(data) > left:
                skipped.append(path.name)
                continue
            left -= len(data)
            kind = (mimetypes.guess_type(path.name)[0] or "application/octet-stream").split("/")
            mail.add_attachment(data, maintype=kind[0], subtype=kind[1], filename=path.name)
        if skipped:
            mail["X-ContainerTrail-Not-Attached"] = ", ".join(skipped)
        return mail

    def post(self, message: Message) -> Result:
        try:
            mail = self.mail(message)
        except OSError as exc:       # a rendered file removed since: this mail cannot be made
            return Result(Outcome.REJECTED, detail=redact(f"{exc.filename}: {exc.strerror}"))
        try:
            with self._connect() as smtp:
                if self.config.username and self._password:
                    smtp.login(self.config.username, self._password)
                refused = smtp.send_message(mail)
        except smtplib.SMTPDataError as exc:
            return smtp_result(exc.smtp_code, exc.smtp_error, refused_for_good=exc.smtp_code >= 500)
        except smtplib.SMTPSenderRefused as exc:
            return smtp_result(exc.smtp_code, exc.smtp_error, refused_for_good=exc.smtp_code == 552)
        except smtplib.SMTPResponseException as exc:
            return smtp_result(exc.smtp_code, exc.smtp_error, refused_for_good=False)
        except (smtplib.SMTPException, OSError) as exc:
            return Result(Outcome.RETRY, detail=redact(f"{type(exc).__name__}: {exc}"))
        detail = f"refused by the server: {', '.join(refused)}" if refused else ""
        return Result(Outcome.DELIVERED, 250, detail=redact(detail))

    def _connect(self) -> smtplib.SMTP:
        port = self.config.port or DEFAULT_PORT[self.config.security]
        timeout = self.config.timeout_secs
        if self.config.security == "tls":
            return smtplib.SMTP_SSL(self.config.host, port, timeout=timeout,
                                    context=self._context)
        smtp = smtplib.SMTP(self.config.host, port, timeout=timeout)
        if self.config.security == "starttls":
            try:
                smtp.starttls(context=self._context)
            except BaseException:
                smtp.close()
                raise
        return smtp


def smtp_result(code: int, error: bytes | str, refused_for_good: bool) -> Result:
    text = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
    outcome = Outcome.REJECTED if refused_for_good else Outcome.RETRY
    return Result(outcome, code, detail=redact(f"SMTP {code}: {text}"[:300]))
