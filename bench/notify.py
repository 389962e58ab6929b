"""bench/notify: alerts per second from the ctrail.alerts topic into the notify outbox, and
from the outbox to a local webhook receiver.

Usage: .venv/bin/python bench/notify.py [--alerts N]

- enqueue: the notify stage (StageWorker: poll, decode, route, outbox INSERT in one fsynced
  transaction per batch, commit) over N alerts on the embedded bus;
- deliver, one request per alert: the sender loop posting each alert, signed, to a local HTTP
  receiver (pacing lifted, so the figure is our cost plus loopback HTTP);
- deliver, digests: the same backlog at the default webhook pace, where a backlog goes as
  digests of up to 100 alerts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctrail.bus import ALERTS  # noqa: E402
from ctrail.bus.codec import encode  # noqa: E402
from ctrail.event import Alert, AlertInfo, EventInfo, Kubernetes, KubernetesPod, Rule, User  # noqa: E402
from ctrail.runtime.stage import StageResult, StageWorker  # noqa: E402
from ctrail.runtime.telemetry import Telemetry  # noqa: E402
from ctrail.settings import Settings  # noqa: E402

T0 = datetime(2026, 5, 1, tzinfo=timezone.utc)


def alert(i: int) -> Alert:
    pod = f"web-{i % 50}"
    return Alert(timestamp=T0 + timedelta(milliseconds=i),
                 event=EventInfo(id=f"bench-{i:08d}", kind="alert", action="CT-K8S-004",
                                 dataset="containertrail.alerts", module="containertrail",
                                 original="{}", ingested=T0, severity=47),
                 rule=Rule(id="CT-K8S-004", name="Exec into a pod"),
                 alert=AlertInfo(severity="medium", group_key=f"CT-K8S-004|bob|shop/{pod}"),
                 user=User(name="bob"), kubernetes=Kubernetes(namespace="shop",
                                                               pod=KubernetesPod(name=pod)))


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def run(alerts: int, per_alert: bool, port: int) -> dict[str, float]:
    data_dir = Path(tempfile.mkdtemp(prefix="ctrail-bench-notify-"))
    pace = ({"rate_per_sec": 1e9, "burst": 1_000_000, "digest_min_alerts": 10**9}
            if per_alert else {})
    settings = Settings(data_dir=data_dir, notify={"receivers": {"siem": {
        "type": "webhook", "url": {"env": "BENCH_HOOK_URL"},
        "signing_secret": {"env": "BENCH_HOOK_SECRET"}, **pace}}})
    bus = settings.bus.build(data_dir)
    producer = bus.producer()
    for i in range(alerts):
        producer.send(ALERTS, key=f"g{i % 50}", value=encode(alert(i)))
    producer.flush()
    assert settings.notify is not None
    service = settings.notify.build(data_dir)

    def handle(items):  # type: ignore[no-untyped-def]
        service.enqueue(items)
        return StageResult()
    worker = StageWorker("notify", bus.consumer("notify", (ALERTS,)), bus.producer(), handle,
                         Telemetry(), settings.pipeline.batch_events)
    start = time.perf_counter()
    while worker.run_once(timeout_secs=0):
        pass
    enqueue_secs = time.perf_counter() - start
    start = time.perf_counter()
    while service.outbox.counts().get("pending"):
        wake = service.sender.tick()
        time.sleep(max(0.0, min(wake - time.time(), 0.05)))
    deliver_secs = time.perf_counter() - start
    sent = dict(service.sender.receivers["siem"].sent)
    service.close()
    bus.close()
    return {"alerts": alerts, "enqueue_per_sec": round(alerts / enqueue_secs),
            "deliver_per_sec": round(alerts / deliver_secs), "requests": sum(sent.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20_000)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    os.environ["BENCH_HOOK_URL"] = f"http://127.0.0.1:{port}/hook"
    os.environ["BENCH_HOOK_SECRET"] = "bench-secret"
    results = {"one_request_per_alert": run(args.alerts, True, port),
               "digests_at_default_pace": run(args.alerts, False, port)}
    server.shutdown()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
