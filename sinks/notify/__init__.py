"""Notifications: alerts to Slack, PagerDuty, signed webhooks, email, Teams, Opsgenie and Jira,
never lost and never repeated; rendered reports to email, Slack and Teams.

How an alert travels (the `notify` stage, then the sender loop in the same process):

    ctrail.alerts ──► notify stage ──► outbox (SQLite in the data dir) ──► sender ──► receiver
                      route; INSERT OR IGNORE     WAL, synchronous=FULL      rate limit,
                      (receiver, alert id);       committed BEFORE the       backoff, breaker,
                      then the bus commit         stage commits its input    digest in a storm

- Nothing is lost: an alert is in the outbox, fsynced, before its bus offset is committed, and
  an outbox row is marked delivered only after the receiver answered 2xx.
- Nothing is repeated: the outbox is keyed by (receiver, alert id), so an alert redelivered by
  the bus after a crash is not enqueued twice; a row is sent until one 2xx, then never again.
  The one window left is a crash between a 2xx and the mark (one SQLite commit): that message
  goes out again. PagerDuty and Opsgenie absorb it (same dedup_key, alias); webhooks carry an
  idempotency key; a mail carries the same Message-ID.

Modules: `routing` (routes, quiet hours), `outbox` (the table), `policy` (token bucket, circuit
breaker, backoff), `delivery` (the sender loop), `message` (the receiver protocol, HTTP outcome
classification, secret redaction), `digest` (storm summaries), `config` (the `notify:` section),
`service` (the stage handler and the sender thread), `report_notice` (a rendered report on its
way). The receivers themselves are sinks/slack.py, sinks/pagerduty.py, sinks/webhook.py,
sinks/smtp.py, sinks/teams.py, sinks/opsgenie.py and sinks/jira.py. This package imports none of them at
import time, so they can import from it.
"""
