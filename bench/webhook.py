"""bench/webhook: `ctrail run` fed by a Kubernetes audit webhook sender at a sustained rate.

Usage: .venv/bin/python bench/webhook.py [--rate 6000] [--secs 60] [--connections 4]
           [--batch 400] [--drain-secs 300]

What runs:
- `ctrail run --config TMP/ctrail.yaml --data-dir TMP/data` (a subprocess of this one), with one
  `k8s_audit_webhook` source on a free loopback port, authenticated by a bearer token passed in
  the environment (as kube-apiserver's --audit-webhook-config-file kubeconfig would);
- a load generator (a separate process: this file with --generator) that POSTs EventList
  batches, {"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[...]}
  whose items carry no kind/apiVersion (as the API server's webhook backend sends them), over
  --connections concurrent keep-alive connections (httpx), paced open-loop to --rate events/s
  for --secs seconds: batch k is due at k*batch/rate; a connection that falls behind sends its
  next batch at once. Batches hold --batch events (400, the API server's maximum), fewer when
  the rate is under 10 batches/s (the API server's default throttle) so batches stay <= 100 ms
  apart. The items are bench/corpus.py's (99% benign Metadata events rebuilt from a real Helm
  cluster's audit log, 1% Falco attack traces), stamped with the time of sending;
- once a second, one of those items is replaced by an exec into a pod (verb create, pods/exec,
  ResponseStarted, code 101), which CT-K8S-004 (detectors/rules/ct-k8s-004-exec-into-pod.yml)
  alerts on; each targets a pod with a unique name, the marker.

What it measures:
- sent: events POSTed; acknowledged: events in batches answered HTTP 200 (the listener answers
  once they are durable); any other answer is counted by status and not retried;
- stored: audit events (event.dataset kubernetes.audit) in the store, read from this process
  through the store interface (load_settings(config, data_dir).store.build(data_dir)), polled
  every second until it holds every acknowledged event or --drain-secs pass;
- sustained N events/s = events stored / seconds from the first send to the poll that first saw
  every acknowledged event stored (1 s poll resolution);
- event-to-alert: for each exec, from the moment its batch's POST began to the moment its
  CT-K8S-004 alert (found by the marker, kubernetes.pod.name) was first returned by a search of
  the store's alerts, polled every --poll-ms (50 ms): what a user of `ctrail alerts` sees,
  including the HTTP acknowledgement, the pipeline and the store commit, plus up to one poll
  interval. p50 and p99 (nearest rank) over the alerts seen; execs whose alert never appeared
  within the drain time are reported as missing.
Times are CLOCK_MONOTONIC (time.monotonic), one clock for every process on Linux.

Bounded: the run's port is loopback only; every wait has a deadline; `ctrail run` is stopped
with SIGTERM (then SIGKILL after 60 s) and the generator killed, whatever happens; the
temporary directory is removed. Last lines:
    sustained N events/s, p99 event-to-alert M ms
    stored S of T sent
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

TOKEN_ENV = "CTRAIL_BENCH_WEBHOOK_TOKEN"
HOST = "127.0.0.1"
EXEC_RULE = "CT-K8S-004"
LIST_HEAD = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":['
STARTUP_SECS = 120.0            # for `ctrail run` to open its port
SEND_GRACE_SECS = 30.0          # after --secs, batches not yet sent are dropped (counted)
STOP_SECS = 60.0                # SIGTERM, then SIGKILL


# ── the load generator (its own process) ─────────────────────────────────────────────────────

def exec_event(marker: str, at: datetime) -> dict[str, Any]:
    """An exec into pod `marker` as kube-apiserver's webhook backend sends it (no kind or
    apiVersion on an item): `kubectl exec -it` by a human, at Metadata level."""
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"level": "Metadata", "auditID": str(uuid.uuid4()),
            "stage": "ResponseStarted",
            "requestURI": f"/api/v1/namespaces/shop/pods/{marker}/exec?command=sh&container=app"
                          "&stdin=true&stdout=true&tty=true",
            "verb": "create",
            "user": {"username": "oidc:alice@corp.example",
                     "groups": ["oidc:sre", "system:authenticated"]},
            "sourceIPs": ["10.10.0.1"],
            "userAgent": "kubectl/v1.26.1 (linux/amd64) kubernetes/8f94681",
            "objectRef": {"resource": "pods", "namespace": "shop", "name": marker,
                          "apiVersion": "v1", "subresource": "exec"},
            "responseStatus": {"metadata": {}, "code": 101},
            "requestReceivedTimestamp": stamp, "stageTimestamp": stamp,
            "annotations": {"authorization.k8s.io/decision": "allow",
                            "authorization.k8s.io/reason": 'RBAC: allowed by RoleBinding "sre-exec'
                            '/shop" of ClusterRole "edit" to Group "oidc:sre"'}}


def generate(port: int, rate: float, secs: float, batch: int, connections: int,
             prefix: str) -> dict[str, Any]:
    import httpx

    from corpus import Corpus

    token = os.environ[TOKEN_ENV]
    corpus = Corpus()
    total = math.ceil(rate * secs / batch)
    interval = batch / rate
    lock = threading.Lock()
    state = {"next": 0, "exec": 0}
    execs = int(secs)
    t0 = time.monotonic() + 0.5                       # every connection ready by then
    stop_at = t0 + secs + SEND_GRACE_SECS
    sends: list[tuple[float, float, str, int, list[str]]] = []   # start, end, status, n, markers

    def body() -> tuple[bytes, list[str]]:
        with lock:
            now = datetime.now(timezone.utc)
            items = [corpus.event(now + timedelta(microseconds=j), webhook=True)
                     for j in range(batch)]
            markers = []
            # the execs due by now, each replacing one item (the batch keeps its size)
            while state["exec"] < execs and t0 + state["exec"] <= time.monotonic() \
                    and len(markers) < batch:
                marker = f"{prefix}-{state['exec']:05d}"
                items[len(items) - 1 - len(markers)] = exec_event(marker, now)
                markers.append(marker)
                state["exec"] += 1
        return LIST_HEAD + b",".join(orjson.dumps(item) for item in items) + b"]}", markers

    def sender() -> None:
        with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=httpx.Timeout(90.0),
                          limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                          headers={"Authorization": f"Bearer {token}",
                                   "Content-Type": "application/json"}) as client:
            while True:
                with lock:
                    k = state["next"]
                    state["next"] += 1
                if k >= total:
                    return
                due = t0 + k * interval
                if due > time.monotonic():
                    time.sleep(due - time.monotonic())
                if time.monotonic() > stop_at:
                    return
                data, markers = body()
                start = time.monotonic()
                try:
                    status = str(client.post("/", content=data).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                end = time.monotonic()
                with lock:
                    sends.append((start, end, status, batch, markers))

    threads = [threading.Thread(target=sender, name=f"sender-{i}", daemon=True)
               for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, stop_at + 120 - time.monotonic()))
    with lock:
        done = list(sends)
    statuses: Counter[str] = Counter()
    for _, _, status, n, _ in done:
        statuses[status] += n
    latencies = sorted(end - start for start, end, _, _, _ in done)
    return {"t0": t0, "first_send": min((s[0] for s in done), default=t0),
            "last_end": max((s[1] for s in done), default=t0),
            "sent": sum(s[3] for s in done), "acked": statuses.get("200", 0),
            "statuses": dict(statuses), "batches": len(done), "unsent_batches": total - len(done),
            "batch": batch,
            "markers": {m: start for start, _, status, _, ms in done for m in ms},
            "acked_markers": [m for _, _, status, _, ms in done if status == "200" for m in ms],
            "post_p50_ms": 1000 * percentile(latencies, 50),
            "post_p99_ms": 1000 * percentile(latencies, 99)}


# ── the bench ────────────────────────────────────────────────────────────────────────────────

def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted values (nan when empty)."""
    if not values:
        return math.nan
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) == 0


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def stop(proc: subprocess.Popen[bytes] | None, signum: int = signal.SIGTERM) -> int | None:
    """Stop a child we started: `signum`, then SIGKILL after STOP_SECS."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signum)
        try:
            return proc.wait(timeout=STOP_SECS)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=STOP_SECS)


class Watch:
    """Polls the store of the running pipeline: stored events, and the exec alerts."""

    def __init__(self, config: Path, data_dir: Path, prefix: str) -> None:
        from ctrail.ecs import DATASET_K8S_AUDIT, EVENT_DATASET
        from ctrail.settings import load_settings
        self.store = load_settings(config, data_dir).store.build(data_dir)
        self.events_query = f'{EVENT_DATASET}:"{DATASET_K8S_AUDIT}"'
        self.alerts_query = f"rule.id:{EXEC_RULE} AND kubernetes.pod.name:{prefix}-*"
        self.seen: dict[str, float] = {}          # marker -> when its alert was first found
        self.stored = 0
        self.stored_at: list[tuple[float, int]] = []
        self.errors: Counter[str] = Counter()

    def poll_alerts(self) -> None:
        try:
            found = self.store.search(self.alerts_query, "alerts", limit=100_000)
        except Exception as exc:                  # noqa: BLE001 - a busy store: next poll
            self.errors[type(exc).__name__] += 1
            return
        now = time.monotonic()
        for doc in found:
            pod = ((doc.get("kubernetes") or {}).get("pod") or {}).get("name")
            if pod and pod not in self.seen:
                self.seen[pod] = now

    def poll_events(self) -> int:
        try:
            self.stored = self.store.count(self.events_query, "events")
            self.stored_at.append((time.monotonic(), self.stored))
        except Exception as exc:                  # noqa: BLE001
            self.errors[type(exc).__name__] += 1
        return self.stored

    def close(self) -> None:
        self.store.close()


def run_bench(args: argparse.Namespace, tmp: Path) -> None:
    token = secrets.token_hex(16)
    os.environ[TOKEN_ENV] = token                 # for load_settings here, and the children
    port = free_port()
    data_dir, config = tmp / "data", tmp / "ctrail.yaml"
    config.write_text(f"sources:\n  apiserver:\n    type: k8s_audit_webhook\n    host: {HOST}\n"
                      f"    port: {port}\n    token: {{env: {TOKEN_ENV}}}\n")
    batch = min(args.batch, max(1, math.ceil(args.rate / 10)))
    prefix = f"ctrail-bench-exec-{secrets.token_hex(4)}"
    run_log, gen_log = tmp / "run.stderr", tmp / "generator.stderr"
    run = gen = watch = None
    try:
        with open(run_log, "wb") as err:
            run = subprocess.Popen([str(Path(sys.executable).with_name("ctrail")), "run",
                                    "--config", str(config), "--data-dir", str(data_dir)],
                                   cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + STARTUP_SECS
        while not port_open(port):
            if run.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"ctrail run did not open {HOST}:{port} (exit {run.poll()}):\n"
                         f"{tail(run_log)}")
            time.sleep(0.2)
        watch = Watch(config, data_dir, prefix)
        print(f"ctrail run up in {STARTUP_SECS - (deadline - time.monotonic()):.1f} s; "
              f"sending {args.rate:.0f} events/s for {args.secs:.0f} s in batches of {batch} "
              f"over {args.connections} connections", flush=True)
        with open(gen_log, "wb") as err:
            gen = subprocess.Popen([sys.executable, __file__, "--generator", str(port),
                                    str(args.rate), str(args.secs), str(batch),
                                    str(args.connections), prefix],
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=err)
        gen_deadline = time.monotonic() + args.secs + SEND_GRACE_SECS + 180
        chunks: list[bytes] = []
        stdout = gen.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: chunks.append(stdout.read()), daemon=True)
        reader.start()
        next_count = 0.0
        while gen.poll() is None and time.monotonic() < gen_deadline:
            watch.poll_alerts()
            if time.monotonic() >= next_count:
                watch.poll_events()
                next_count = time.monotonic() + 1.0
            if run.poll() is not None:
                break
            time.sleep(args.poll_ms / 1000)
        if gen.poll() is None:
            stop(gen, signal.SIGKILL)
            sys.exit(f"the load generator did not finish (ctrail run exit {run.poll()}):\n"
                     f"{tail(gen_log)}\n{tail(run_log)}")
        reader.join(timeout=30)
        out = b"".join(chunks)
        if gen.returncode != 0 or not out.strip():
            sys.exit(f"the load generator failed (exit {gen.returncode}):\n{tail(gen_log)}")
        sent = json.loads(out.strip().splitlines()[-1])

        # Drain: until the store holds every acknowledged event and every acknowledged exec
        # has its alert, or --drain-secs pass.
        target = sent["acked"]
        markers = set(sent["acked_markers"])
        all_stored_at = None
        drain_deadline = time.monotonic() + args.drain_secs
        next_count = 0.0
        while time.monotonic() < drain_deadline and run.poll() is None:
            watch.poll_alerts()
            if time.monotonic() >= next_count:
                if watch.poll_events() >= target and all_stored_at is None:
                    all_stored_at = watch.stored_at[-1][0]
                next_count = time.monotonic() + 1.0
            if all_stored_at is not None and markers <= watch.seen.keys():
                break
            time.sleep(args.poll_ms / 1000)
        stored = watch.poll_events()
        dead = watch.store.count("*", "dead_letters")
    finally:
        code = stop(run)
        stop(gen, signal.SIGKILL)
        if watch is not None:
            watch.close()
    report(args, sent, watch, stored, dead, all_stored_at, code, run_log)


def report(args: argparse.Namespace, sent: dict[str, Any], watch: Watch, stored: int, dead: int,
           all_stored_at: float | None, code: int | None, run_log: Path) -> None:
    if all_stored_at is None:                      # not all stored: up to the last increase
        increases = [at for (at, n), (_, before) in zip(watch.stored_at[1:], watch.stored_at)
                     if n > before]
        all_stored_at = increases[-1] if increases else sent["last_end"]
    span = max(all_stored_at - sent["first_send"], 1e-9)
    send_span = max(sent["last_end"] - sent["first_send"], 1e-9)
    delays = sorted(1000 * (watch.seen[m] - t) for m, t in sent["markers"].items()
                    if m in watch.seen)
    missing = len(sent["markers"]) - len(delays)
    print(f"sent {sent['sent']} events in {sent['batches']} batches of {sent['batch']} over "
          f"{send_span:.1f} s ({sent['sent'] / send_span:.0f} events/s offered; target "
          f"{args.rate:.0f}); answers by status (events): {sent['statuses']}; "
          f"{sent['unsent_batches']} batches not sent")
    print(f"POST latency p50 {sent['post_p50_ms']:.0f} ms, p99 {sent['post_p99_ms']:.0f} ms; "
          f"acknowledged {sent['acked']} events")
    print(f"stored {stored} audit events, {dead} dead letters; last stored "
          f"{all_stored_at - sent['last_end']:.1f} s after the last answer; ctrail run exit "
          f"status {code}" + (f"; store poll errors {dict(watch.errors)}" if watch.errors else ""))
    print(f"exec alerts seen {len(delays)} of {len(sent['markers'])} (missing {missing}); "
          f"event-to-alert p50 {percentile(delays, 50):.0f} ms, max "
          f"{max(delays) if delays else math.nan:.0f} ms")
    if code not in (0, None):
        print(f"ctrail run stderr (tail):\n{tail(run_log, 1500)}")
    print(f"sustained {stored / span:.0f} events/s, p99 event-to-alert "
          f"{percentile(delays, 99):.0f} ms")
    print(f"stored {stored} of {sent['sent']} sent")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=6000, help="events/s to offer")
    parser.add_argument("--secs", type=float, default=60, help="seconds of sending")
    parser.add_argument("--batch", type=int, default=400, help="events per EventList (max)")
    parser.add_argument("--connections", type=int, default=4, help="concurrent keep-alive "
                        "connections")
    parser.add_argument("--drain-secs", type=float, default=300,
                        help="after sending, the longest wait for the store to hold everything")
    parser.add_argument("--poll-ms", type=float, default=50, help="alert poll interval")
    parser.add_argument("--generator", nargs=6, help=argparse.SUPPRESS,
                        metavar=("PORT", "RATE", "SECS", "BATCH", "CONNECTIONS", "PREFIX"))
    args = parser.parse_args()
    if args.generator:
        port, rate, secs, batch, connections, prefix = args.generator
        result = generate(int(port), float(rate), float(secs), int(batch), int(connections),
                          prefix)
        sys.stdout.write(json.dumps(result) + "\n")
        return
    if args.rate <= 0 or args.secs < 1 or args.connections < 1 or args.batch < 1:
        parser.error("--rate, --batch and --connections must be positive, --secs at least 1")
    tmp = Path(tempfile.mkdtemp(prefix="ctrail-bench-webhook-"))
    try:
        run_bench(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
