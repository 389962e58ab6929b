"""The pipeline watching itself (ctrail.runtime.self_watch): CT-OPS-001 silence on arrival time and
on event time, with its resolve and a restart in the middle; /readyz and /metrics saying the
same; CT-OPS-002 on the chain's real counters; CT-OPS-003 from a real evidence archive; CT-OPS-004
from a real notify service whose Slack receiver is down, then back; and the alerts reaching the
store through ctrail.alerts like any alert."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from ctrail.bus import RAW
from ctrail.bus.codec import RawEntry
from ctrail.event import Alert
from ctrail.runtime.evidence_watch import EvidenceWatch
from ctrail.runtime.ops import OpsConfig
from ctrail.runtime.pipeline import Pipeline
from ctrail.runtime.self_watch import Problems, SelfWatch, WatchConfig
from ctrail.runtime.telemetry import Telemetry
from ctrail.settings import Settings
from detectors.ops_rules import SILENT_SOURCE, ops_alert
from detectors.window_state import Checkpoint

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0.timestamp()

    def __call__(self) -> float:
        return self.now

    def at(self, secs: float) -> datetime:
        return datetime.fromtimestamp(T0.timestamp() + secs, timezone.utc)


def watch(tmp_path: Path, clock: Clock, telemetry: Telemetry | None = None,
          problems: Problems | None = None, **config: Any) -> SelfWatch:
    settings = WatchConfig(**{"silence": {"quiet_secs": 300, "sources": {"falco": 60}},
                              **config})
    return SelfWatch(settings, telemetry or Telemetry(), Checkpoint(tmp_path / "watch.json"),
                     publish=lambda alerts: None, problems=problems or Problems(), clock=clock)


def said(alerts: list[Alert]) -> list[tuple[str, str, str]]:
    return [(a.rule.id, a.alert.group_key, a.event.type[0]) for a in alerts]


# ── CT-OPS-001 ─────────────────────────────────────────────────────────────────────────────

def test_a_source_silent_on_arrival_time_fires_once_and_resolves_when_it_returns(
        tmp_path: Path) -> None:
    clock = Clock()
    w = watch(tmp_path, clock)
    w.heard("audit-webhook", clock.at(0), clock.at(-2))
    clock.now += 299
    assert w.check() == []
    clock.now += 2                                       # 301 s without a record
    (alert,) = w.check()
    assert said([alert]) == [("CT-OPS-001", "CT-OPS-001|audit-webhook|arrival", "start")]
    assert alert.alert.severity == "high" and alert.event.outcome == "failure"
    assert alert.timestamp == clock.at(300)              # when the quiet period ran out
    w.pending = []                                       # published
    clock.now += 600
    assert w.check() == []                               # one alert per silence
    w.heard("audit-webhook", clock.at(901), clock.at(900))
    (back,) = w.check()
    assert said([back]) == [("CT-OPS-001", "CT-OPS-001|audit-webhook|arrival", "end")]
    assert back.event.outcome == "success" and back.event.id != alert.event.id


def test_a_source_silent_on_event_time_while_others_go_on(tmp_path: Path) -> None:
    """Falco still delivers, but only events of a minute ago and older: its arrival is fresh,
    its event time lags the audit webhook's by more than its 60 s quiet period."""
    clock = Clock()
    w = watch(tmp_path, clock)
    for second in range(0, 200, 10):
        clock.now = T0.timestamp() + second
        w.heard("audit-webhook", clock.at(second), clock.at(second))
        w.heard("falco", clock.at(second), clock.at(min(second, 50)))    # stuck at 50 s
        alerts = w.check()
        w.pending = []
        if second == 120:        # the webhook's event time reached 120 > 50 + 60 at 120 s
            assert said(alerts) == [("CT-OPS-001", "CT-OPS-001|falco|event", "start")]
            assert alerts[0].timestamp == clock.at(110)
        else:
            assert alerts == [], second
    w.heard("falco", clock.at(200), clock.at(199))
    assert said(w.check()) == [("CT-OPS-001", "CT-OPS-001|falco|event", "end")]


def test_a_restart_in_the_middle_of_a_silence_neither_forgets_nor_repeats(
        tmp_path: Path) -> None:
    clock = Clock()
    first = watch(tmp_path, clock)
    first.heard("audit-webhook", clock.at(0), clock.at(0))
    first.heard("kubelet-log", clock.at(0), clock.at(0))
    clock.now += 100
    first.heard("kubelet-log", clock.at(100), clock.at(100))
    first.check()
    # Restarted after the webhook went quiet: the state came back from the checkpoint.
    clock.now += 250
    second = watch(tmp_path, clock)
    alerts = second.check()
    assert said(alerts) == [("CT-OPS-001", "CT-OPS-001|audit-webhook|arrival", "start")]
    second.pending = []
    second.check()                                       # saves the published state
    third = watch(tmp_path, clock)                       # and once more
    assert third.check() == []
    third.heard("audit-webhook", clock.at(400), clock.at(400))
    assert said(third.check()) == [("CT-OPS-001", "CT-OPS-001|audit-webhook|arrival", "end")]


def test_a_source_removed_from_the_configuration_is_forgotten_not_silent(
        tmp_path: Path) -> None:
    clock = Clock()
    first = watch(tmp_path, clock)
    first.heard("old-file", clock.at(0), clock.at(0))
    first.heard("audit-webhook", clock.at(0), clock.at(0))
    first.check()
    clock.now += 1000
    again = SelfWatch(WatchConfig(), Telemetry(), Checkpoint(tmp_path / "watch.json"),
                      publish=lambda alerts: None, problems=Problems(), clock=clock,
                      sources={"audit-webhook"})
    assert said(again.check()) == [("CT-OPS-001", "CT-OPS-001|audit-webhook|arrival", "start")]


def test_silence_is_suspended_while_several_process_workers_share_the_raw_topic(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="ctrail.runtime.self_watch")
    clock = Clock()
    sole = [False]
    w = SelfWatch(WatchConfig(silence={"quiet_secs": 60}), Telemetry(),
                  Checkpoint(tmp_path / "watch.json"), publish=lambda alerts: None,
                  problems=Problems(), clock=clock, sole_reader=lambda: sole[0])
    w.heard("audit-file", clock.at(0), clock.at(0))
    clock.now += 600                     # another worker may have the file's partition now
    assert w.check() == [] and w.check() == []
    assert caplog.text.count("is suspended") == 1
    sole[0] = True                       # the only process worker again
    assert said(w.check()) == [("CT-OPS-001", "CT-OPS-001|audit-file|arrival", "start")]
    assert "watched again" in caplog.text


def test_an_unpublished_alert_is_published_after_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    first = watch(tmp_path, clock)
    first.heard("audit-webhook", clock.at(0), None)
    clock.now += 400
    (alert,) = first.check()                             # the process dies before publishing
    again = watch(tmp_path, clock)
    assert [a.event.id for a in again.check()] == [alert.event.id]


def test_a_backlog_is_not_a_silence_and_a_clock_ahead_is_not_the_event_clock(
        tmp_path: Path) -> None:
    clock = Clock()
    telemetry = Telemetry()
    w = watch(tmp_path, clock, telemetry)
    w.heard("audit-webhook", clock.at(0), clock.at(0))
    # A sender whose clock is an hour ahead: its events count as of their arrival.
    w.heard("falco", clock.at(0), clock.at(3600))
    clock.now += 30
    w.heard("falco", clock.at(30), clock.at(3630))
    assert w.check() == []                               # the webhook is not event-silent
    telemetry.set_lag("process", 5000)                   # records wait to be parsed
    clock.now += 600
    assert w.check() == []
    telemetry.set_lag("process", 0)                      # drained, and still nothing
    assert said(w.check()) == [("CT-OPS-001", "CT-OPS-001|audit-webhook|arrival", "start"),
                               ("CT-OPS-001", "CT-OPS-001|falco|arrival", "start")]


def test_readyz_and_metrics_say_the_same(tmp_path: Path) -> None:
    clock = Clock()
    telemetry = Telemetry()
    w = watch(tmp_path, clock, telemetry)
    w.heard("audit-webhook", clock.at(0), clock.at(0))
    w.heard("falco", clock.at(0), clock.at(0))
    ops = OpsConfig(port=0, allow_unauthenticated=True).build(telemetry, lambda: True)
    try:
        w.check()
        assert ops.answer("/readyz") == (200, "text/plain", "ready\n")
        metrics = ops.answer("/metrics")[2]
        assert 'ctrail_source_silent{source="falco",clock="arrival"} 0' in metrics
        clock.now += 120                                 # falco's 60 s passed, not the 300 s
        w.check()
        status, _type, body = ops.answer("/readyz")
        assert status == 200 and body == "ready\nsilent source: falco (arrival time)\n"
        metrics = ops.answer("/metrics")[2]
        assert 'ctrail_source_silent{source="falco",clock="arrival"} 1' in metrics
        assert 'ctrail_source_silent{source="audit-webhook",clock="arrival"} 0' in metrics
        w.heard("falco", clock.at(121), clock.at(121))
        w.check()
        assert ops.answer("/readyz")[2] == "ready\n"
        assert 'ctrail_source_silent{source="falco",clock="arrival"} 0' in ops.answer(
            "/metrics")[2]
    finally:
        ops.close()


# ── CT-OPS-002 ─────────────────────────────────────────────────────────────────────────────

def test_the_dead_letter_rate_of_a_source_above_its_threshold(tmp_path: Path) -> None:
    clock = Clock()
    telemetry = Telemetry()
    w = watch(tmp_path, clock, telemetry)
    assert w.check() == []
    telemetry.record("collect.audit-file", sent=95, dead_lettered=5)     # 5 %: not above
    clock.now += 60
    assert w.check() == []
    telemetry.record("collect.audit-file", sent=90, dead_lettered=10)    # 15 of 200 in 120 s
    clock.now += 60
    (alert,) = w.check()
    assert said([alert]) == [("CT-OPS-002", "CT-OPS-002|audit-file", "start")]
    assert "15 of 200" in (alert.message or "")
    w.pending = []
    # Six minutes of clean records: the window holds none of the bad ones any more.
    for _ in range(6):
        telemetry.record("collect.audit-file", sent=100)
        clock.now += 60
        alerts = w.check()
        w.pending = []
    assert said(alerts) == [] and "audit-file" not in w.breached
    telemetry.record("collect.tiny", sent=1, dead_lettered=2)            # too few to judge
    clock.now += 60
    assert w.check() == []


def test_the_dead_letter_rate_resolves(tmp_path: Path) -> None:
    clock = Clock()
    telemetry = Telemetry()
    w = watch(tmp_path, clock, telemetry, dead_letters={"window_secs": 120})
    w.check()
    telemetry.record("collect.registry", sent=10, dead_lettered=30)
    clock.now += 60
    assert said(w.check()) == [("CT-OPS-002", "CT-OPS-002|registry", "start")]
    w.pending = []
    ends = []
    for _ in range(3):
        telemetry.record("collect.registry", sent=50)
        clock.now += 60
        ends += w.check()
        w.pending = []
    assert said(ends) == [("CT-OPS-002", "CT-OPS-002|registry", "end")]


# ── CT-OPS-003 ─────────────────────────────────────────────────────────────────────────────

def test_evidence_that_cannot_be_sealed_or_was_changed_raises_ct_ops_003(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sinks.evidence import EvidenceConfig
    from sinks.evidence.archive import EvidenceArchive
    from tests.hunt_replay import records

    archive = EvidenceArchive.open_shared(EvidenceConfig(seal_after_secs=0), tmp_path / "d")
    problems = Problems()
    evidence = EvidenceWatch(problems)
    clock = Clock()
    w = watch(tmp_path, clock, problems=problems)
    try:
        archive.write(list(_events(records()[:20])))
        evidence.seal(archive)
        assert w.check() == []                           # sealed and verified: nothing
        # A sealed manifest edited by hand: the next pass's verification finds the chain broken.
        manifest = sorted((archive.root / "manifests").glob("*.json"))[0]
        doc = json.loads(manifest.read_bytes())
        doc["records"] += 1
        manifest.write_text(json.dumps(doc))
        evidence.seal(archive)
        alerts = w.check()
        assert alerts and {a.rule.id for a in alerts} == {"CT-OPS-003"}
        assert all(a.alert.severity == "critical" for a in alerts)
        w.pending = []
        evidence.seal(archive)
        assert w.check() == []                           # the same finding is said once

        def full_disk(*_args: Any) -> None:
            raise OSError(28, "No space left on device")
        archive.write(list(_events(records()[20:30])))
        monkeypatch.setattr(archive, "seal_due", full_disk)
        with pytest.raises(OSError):
            evidence.seal(archive)
        (alert,) = w.check()
        assert alert.alert.group_key == "CT-OPS-003|seal|evidence archive"
        assert "No space left" in (alert.message or "")
    finally:
        archive.close()


def _events(items: list[tuple[str, dict[str, Any]]]) -> Iterator[Any]:
    from collector import PARSERS
    from ctrail.components import RawRecord

    for fmt, record in items:
        yield from PARSERS[fmt]().parse(RawRecord(orjson.dumps(record), "test", T0))


# ── CT-OPS-004 ─────────────────────────────────────────────────────────────────────────────

class SlackWebhook(BaseHTTPRequestHandler):
    """Slack's incoming webhook as documented: a JSON POST with text or blocks, answered `ok`."""

    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ok = self.headers.get("Content-Type", "").startswith("application/json") and (
            "text" in body or "blocks" in body)
        SlackWebhook.bodies.append(body)
        data = b"ok" if ok else b"invalid_payload"
        self.send_response(200 if ok else 400)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_receiver_circuit_open_longer_than_its_limit_raises_ct_ops_004(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import time

    from sinks.notify.config import NotifyConfig

    with socket.socket() as probe:                     # a port nobody listens on, yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SLACK_HOOK", f"http://127.0.0.1:{port}/services/T/B/X")
    notify = NotifyConfig(receivers={"oncall": {"type": "slack",
                                                "webhook_url": {"env": "SLACK_HOOK"}}},
                          delivery={"breaker_failures": 1, "breaker_reset_secs": 0.5,
                                    "initial_backoff_secs": 0.1, "max_backoff_secs": 0.2,
                                    "poll_interval_secs": 0.05})
    service = notify.build(tmp_path / "notify")
    telemetry = Telemetry()
    telemetry.add_source(service.samples)
    clock = Clock()
    w = watch(tmp_path, clock, telemetry, circuit_open_secs=600)
    service.start()
    server = None
    try:
        service.enqueue([ops_alert(SILENT_SOURCE, "x|arrival", 0.0, T0.timestamp(), "test")])
        deadline = time.monotonic() + 20
        while not any(s.name == "notify_circuit_open" and s.value == 1
                      for s in telemetry.samples()):
            assert time.monotonic() < deadline, "the circuit never opened"
            time.sleep(0.05)
        assert w.check() == []                           # open, not yet for 600 s
        clock.now += 601
        (alert,) = w.check()
        assert said([alert]) == [("CT-OPS-004", "CT-OPS-004|oncall", "start")]
        w.pending = []
        clock.now += 60
        assert w.check() == []
        # The receiver comes back: the trial request succeeds and the circuit closes.
        server = ThreadingHTTPServer(("127.0.0.1", port), SlackWebhook)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        while any(s.name == "notify_circuit_open" and s.value == 1 for s in telemetry.samples()):
            assert time.monotonic() < deadline + 20, "the circuit never closed"
            time.sleep(0.05)
        assert SlackWebhook.bodies
        assert said(w.check()) == [("CT-OPS-004", "CT-OPS-004|oncall", "end")]
    finally:
        service.close()
        if server is not None:
            server.shutdown()
            server.server_close()


# ── Routed like any alert ──────────────────────────────────────────────────────────────────

def _watched_file_pipeline(tmp_path: Path, watch: dict[str, Any]) -> tuple[Path, Pipeline]:
    """A process and store pipeline whose one source, audit-file, is an empty audit log."""
    log = tmp_path / "audit.log"
    log.write_text("")
    settings = Settings(data_dir=tmp_path / "data",  # type: ignore[arg-type]
                        sources={"audit-file": {"type": "file", "path": str(log),
                                                "format": "k8s-audit"}},
                        watch=watch)
    return log, Pipeline(settings, ("process", "store"))


def _read_and_start(pipeline: Pipeline, log: Path, records: list[bytes]) -> None:
    """`records` as the file source's lines 1, 2, ... processed; then the stages (and the
    watch thread) run."""
    producer = pipeline.bus.producer()
    now = datetime.now(timezone.utc)
    for n, data in enumerate(records):
        entry = RawEntry("k8s-audit", "audit-file", f"{log}:{n + 1}", now, data)
        producer.send(RAW, key=entry.key, value=entry.encode())
    producer.flush()
    pipeline.drain()
    pipeline.start()


def _stored_alerts(pipeline: Pipeline, rule_id: str) -> list[dict[str, Any]]:
    """The alerts of `rule_id` in the pipeline's store, once there are any (20 s at most)."""
    store = pipeline.context.store()
    deadline = datetime.now(timezone.utc) + timedelta(seconds=20)
    while not (found := store.search(f'rule.id:"{rule_id}"', "alerts", None, None, 10)):
        assert datetime.now(timezone.utc) < deadline, f"no {rule_id} was stored"
        threading.Event().wait(0.1)
    return found


def test_the_pipeline_publishes_its_own_alerts_to_the_store(tmp_path: Path) -> None:
    from tests.hunt_replay import exec_into

    log, pipeline = _watched_file_pipeline(tmp_path, {"interval_secs": 0.1,
                                                      "silence": {"quiet_secs": 1}})
    try:
        _read_and_start(pipeline, log, [orjson.dumps(exec_into(0, "alice@example.com", "web-0"))])
        found = _stored_alerts(pipeline, "CT-OPS-001")
        assert found[0]["alert"]["group_key"] == "CT-OPS-001|audit-file|arrival"
        assert pipeline.telemetry.silent() == {"audit-file": {"arrival": True, "event": False}}
    finally:
        pipeline.close()


def test_a_source_whose_records_do_not_parse_raises_ct_ops_002_through_the_pipeline(
        tmp_path: Path) -> None:
    from tests.hunt_replay import exec_into

    log, pipeline = _watched_file_pipeline(tmp_path, {"interval_secs": 0.1,
                                                      "dead_letters": {"min_records": 10}})
    try:
        # a third of them are not audit events at all
        _read_and_start(pipeline, log, [
            b"<html>502 Bad Gateway</html>" if n % 3 == 0 else orjson.dumps(
                exec_into(n, "alice@example.com", f"web-{n}")) for n in range(12)])
        found = _stored_alerts(pipeline, "CT-OPS-002")
        assert found[0]["alert"]["group_key"] == "CT-OPS-002|audit-file"
        assert "4 of 12 records" in found[0]["message"]
    finally:
        pipeline.close()


def test_the_schedulers_sealing_pass_reports_a_broken_chain_to_the_pipeline(
        tmp_path: Path) -> None:
    """`ctrail run`'s scheduler seals (job evidence:seal) and the self-watch of the same process
    raises CT-OPS-003 from what the pass found (through the process-wide PROBLEMS)."""
    from ctrail.runtime.scheduler import Scheduler
    from ctrail.runtime.self_watch import PROBLEMS
    from sinks.evidence.archive import EvidenceArchive
    from tests.hunt_replay import records

    settings = Settings(data_dir=tmp_path / "data",  # type: ignore[arg-type]
                        evidence={"seal_after_secs": 0})
    assert settings.evidence is not None
    archive = EvidenceArchive.open_shared(settings.evidence, settings.data_dir)
    try:
        archive.write(list(_events(records()[:10])))
    finally:
        archive.close()
    PROBLEMS.take()
    scheduler = Scheduler(settings)
    clock = Clock()
    w = SelfWatch(WatchConfig(), Telemetry(), Checkpoint(tmp_path / "watch.json"),
                  publish=lambda alerts: None, clock=clock)      # the default: PROBLEMS
    try:
        scheduler.run("evidence:seal")                    # seals; the chain is whole
        assert w.check() == []
        manifest = sorted((settings.data_dir / "evidence" / "manifests").glob("*.json"))[0]
        doc = json.loads(manifest.read_bytes())
        doc["sha256"] = "0" * 64
        manifest.write_text(json.dumps(doc))
        scheduler.run("evidence:seal")
        alerts = w.check()
        assert alerts and {a.rule.id for a in alerts} == {"CT-OPS-003"}
        assert any("CHAIN_BROKEN" in (a.message or "") for a in alerts)
    finally:
        scheduler.runs.close()
        PROBLEMS.take()
