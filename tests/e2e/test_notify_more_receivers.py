"""Email, Teams, Opsgenie and Jira as a user runs them: `ctrail run` killed with -9 while every
receiver is down (the SMTP server not listening, the HTTP receivers answering 503) delivers each
alert once after the restart, and no secret reaches a log line or a file in the data directory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit" / "sinks"))
from chat_ops_receivers import JiraReceiver, OpsgenieReceiver, TeamsReceiver  # noqa: E402
from smtp_server import SmtpServer, parts  # noqa: E402

sys.path.insert(0, str(REPO / "tests" / "e2e"))
from test_notify import (  # noqa: E402
    assert_no_secret_written,
    exec_event,
    metrics,
    outbox_counts,
    run_config,
)
from test_run import free_port  # noqa: E402

TEAMS_SIG = "teams-e2e-signature-9f8e"


def serving(ops_port: int) -> bool:
    """/metrics answers (the ops server starts once the intake process runs)."""
    try:
        metrics(ops_port)
        return True
    except OSError:
        return False


def failed_mails(ops_port: int) -> float:
    """Failed mail requests in /metrics (0 until the ops server listens)."""
    try:
        return metrics(ops_port).get(("ctrail_notify_failed_total",
                                      'kind="alert",receiver="mail"'), 0)
    except OSError:
        return 0


def test_kill_9_with_every_new_receiver_down_delivers_each_alert_once_after_restart(
        tmp_path: Path) -> None:
    down = lambda _now: (503, {})  # noqa: E731
    teams, og, jira = TeamsReceiver(fault=down), OpsgenieReceiver(fault=down), \
        JiraReceiver(fault=down)
    smtp = SmtpServer(tmp_path)
    smtp.stop()                                                   # connection refused
    audit_log, data_dir, ops_port = tmp_path / "audit.log", tmp_path / "data", free_port()
    alerts = 8
    audit_log.write_text("".join(exec_event(i) + "\n" for i in range(alerts)))
    config = run_config(tmp_path, audit_log, f"""
    mail: {{type: email, host: 127.0.0.1, port: {smtp.port}, username: {smtp.user},
           password: {{env: E2E_SMTP_PASSWORD}}, ca_file: {smtp.ca},
           from_address: ctrail@example.com, to: [secops@example.com], timeout_secs: 3}}
    teams: {{type: teams, webhook_url: {{env: E2E_TEAMS_URL}}}}
    pager: {{type: opsgenie, api_key: {{env: E2E_OG_KEY}}, url: "{og.base}"}}
    tickets: {{type: jira, url: "{jira.base}", user: {jira.user}, token: {{env: E2E_JIRA_TOKEN}},
              project: SEC}}
""", ops_port)
    env = {**os.environ, "E2E_SMTP_PASSWORD": smtp.password,
           "E2E_TEAMS_URL": f"{teams.base}/workflows/e2e/invoke?sig={TEAMS_SIG}",
           "E2E_OG_KEY": og.api_key, "E2E_JIRA_TOKEN": jira.token, "E2E_OPS_TOKEN": "ops-token-1"}
    command = [str(Path(sys.executable).with_name("ctrail")), "run", "--config", str(config),
               "--data-dir", str(data_dir)]
    logs = [tmp_path / "run-1.log", tmp_path / "run-2.log"]
    try:
        with open(logs[0], "w") as log:
            first = subprocess.Popen(command, cwd=REPO, env=env, stderr=log)
            wait_for(lambda: outbox_counts(data_dir).get("pending") == 4 * alerts, 120)
            wait_for(lambda: all(r.refused for r in (teams, og, jira)))
            wait_for(lambda: failed_mails(ops_port) >= 1)
            first.kill()                                          # kill -9
            first.wait(timeout=30)
        assert outbox_counts(data_dir) == {"pending": 4 * alerts}
        assert not (smtp.mails or teams.accepted or og.accepted or jira.accepted)
        smtp.restart()
        for receiver in (teams, og, jira):
            receiver.fault = None
        with open(logs[1], "w") as log:
            second = subprocess.Popen(command, cwd=REPO, env=env, stderr=log)
            wait_for(lambda: outbox_counts(data_dir) == {"delivered": 4 * alerts}, 120)
            time.sleep(1.0)                                       # anything extra would show
            wait_for(lambda: serving(ops_port))                   # it starts after intake
            up = metrics(ops_port)
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0
    finally:
        smtp.stop()
        for receiver in (teams, og, jira):
            receiver.close()
    texts_mailed = [parts(m.message)["text"].replace("\r\n", "\n") for m in smtp.mails]
    mailed = [i for text in texts_mailed           # "Alert: <id>" or a digest's "- ... (<id>)"
              for i in re.findall(r"^Alert: (\S+)$|^- .*\((\S+)\)$", text, re.M)]
    mailed_ids = [one or other for one, other in mailed]
    assert len(mailed_ids) == len(set(mailed_ids)) == alerts
    assert all(m.tls and m.login == smtp.user for m in smtp.mails)
    assert teams.alerts_covered() == alerts and not teams.problems
    groups = 4                                                    # one per pod
    assert og.created == groups and not og.problems
    assert len(jira.issues) == groups and jira.alerts_covered() == alerts and not jira.problems
    for receiver in ("mail", "teams", "pager", "tickets"):
        assert up["ctrail_notify_outbox_items", f'receiver="{receiver}",state="delivered"'] == alerts
    assert_no_secret_written([smtp.password, TEAMS_SIG, og.api_key, jira.token], logs, data_dir)
