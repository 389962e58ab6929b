"""An alert closed by a person in the console resolves its PagerDuty incident at the sender's
next pass (Outbox.request_resolve), before any quiet period, and also for a receiver that
resolves only by hand (resolve_after_secs: null). Real HTTP to the local PagerDuty receiver,
which checks the Events API v2 shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from receivers import make_alert
from sinks.notify.config import NotifyConfig
from sinks.notify.service import NotifyService
from test_outbox import START, Clock, clock, run_until, servers  # noqa: F401


def pagerduty(tmp_path: Path, clock: Clock, url: str,  # noqa: F811
              resolve_after_secs: float | None) -> NotifyService:
    config = NotifyConfig.model_validate({"receivers": {"oncall": {
        "type": "pagerduty", "routing_key": {"env": "T_PD_KEY"}, "url": url,
        "resolve_after_secs": resolve_after_secs}}})
    return config.build(tmp_path, clock=clock)


@pytest.mark.parametrize("quiet", [3600.0, None])
def test_a_closed_alert_resolves_its_incident_at_once(
        tmp_path: Path, clock: Clock, servers, quiet: float | None) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    _slack, pd, _hook = servers
    svc = pagerduty(tmp_path, clock, f"{pd.base}/v2/enqueue", quiet)
    try:
        svc.enqueue([make_alert(1), make_alert(2, pod="other")])
        run_until(svc, clock, START + 60)
        assert {v["state"] for v in pd.incidents.values()} == {"triggered"}
        assert svc.outbox.request_resolve(make_alert(1).alert.group_key) == 1
        run_until(svc, clock, START + 120)                 # well inside any quiet period
        states = {k.split("/")[-1]: v["state"] for k, v in pd.incidents.items()}
        assert states == {"web-1": "resolved", "other": "triggered"}
        assert svc.outbox.request_resolve(make_alert(1).alert.group_key) == 0   # done once
        svc.enqueue([make_alert(3)])                        # it fires again: a new trigger
        run_until(svc, clock, START + 180)
        states = {k.split("/")[-1]: v["state"] for k, v in pd.incidents.items()}
        assert states == {"web-1": "triggered", "other": "triggered"}
        assert not pd.problems
    finally:
        svc.close()
