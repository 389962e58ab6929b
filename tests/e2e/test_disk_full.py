"""`ctrail run` with its data directory on a small filesystem that fills up (issue 14).

What must hold: no event answered 200 (or read from a tailed file) is lost across fill, free and
a kill -9 restart; while the disk is full the webhook answers 503 with Retry-After (the sender
retries), /readyz names the source that cannot append, and the process keeps running; it takes records again by itself once space returns;
the log is never left with a torn record in front of later ones. The filesystem is a real tmpfs
(tests/small_filesystem.py says why not RLIMIT_FSIZE)."""

from __future__ import annotations

import http.client
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson

from ctrail.bus.local import scan_valid_end
from sinks.sqlite.records import connect_read_only
from tests.e2e.test_run import REPO, free_port
from tests.small_filesystem import fill, small_filesystem
from tests.waiting import wait_for

EVENT = ('{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"{id}","verb":"get",'
         '"stage":"ResponseComplete","requestReceivedTimestamp":"2026-05-01T00:00:00Z",'
         '"requestURI":"/api/v1/namespaces/default/pods/{id}","objectRef":{{"resource":"pods",'
         '"namespace":"default","name":"{id}"}},"user":{{"username":"system:serviceaccount:ci:'
         'deployer","groups":["system:serviceaccounts"]}},"sourceIPs":["10.0.0.7"],'
         '"responseStatus":{{"code":200}}}}')
BATCH = 100


def batch_body(number: int) -> tuple[bytes, list[str]]:
    ids = [f"hook-{number:05d}-{i:03d}" for i in range(BATCH)]
    items = ",".join(EVENT.format(id=i) for i in ids)
    return f'{{"kind":"EventList","items":[{items}]}}'.encode(), ids


def post(port: int, body: bytes) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/", body=body, headers={"Authorization": "Bearer disk-token"})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After")
    except OSError:
        return 0, None                          # refused while the intake restarts
    finally:
        conn.close()


def post_until_refused(port: int, number: int, acked: set[str], within_secs: float
                       ) -> tuple[int, list[tuple[int, str | None]]]:
    """Post batches from `number` on until five are refused (or the time is up), adding the ids
    of each batch answered 200 to `acked`: (the next batch number, the refusals' status and
    Retry-After)."""
    refusals: list[tuple[int, str | None]] = []
    deadline = time.monotonic() + within_secs
    while len(refusals) < 5 and time.monotonic() < deadline:
        body, ids = batch_body(number)
        status, retry_after = post(port, body)
        if status == 200:
            acked.update(ids)
            number += 1
        else:
            refusals.append((status, retry_after))
            time.sleep(0.2)
    return number, refusals


def still_running_not_ready(proc: subprocess.Popen[str], ops_port: int) -> None:
    """While the disk is full: /readyz names the source that cannot append, and the process
    keeps running."""
    wait_for(lambda: "intake apiserver-log" in readyz(ops_port)[1], timeout=15)
    assert readyz(ops_port)[0] == 503
    assert proc.poll() is None, "ctrail run died on a full disk"


def taken_again(port: int, number: int, acked: set[str], within_secs: float) -> int:
    """Once space is back: post batch `number` until it is answered 200 (its ids go to
    `acked`); the next batch number."""
    freed = time.monotonic()
    body, ids = batch_body(number)
    while post(port, body)[0] != 200:
        assert time.monotonic() - freed < within_secs, "intake did not take records again"
        time.sleep(0.2)
    acked.update(ids)
    return number + 1


def assert_no_torn_record(log_root: Path) -> None:
    """Every segment of the log's topics ends with a whole record (after a kill -9)."""
    for segment in log_root.glob("*/*.log"):
        data = segment.read_bytes()
        assert scan_valid_end(data) == len(data), f"torn record in {segment}"


def readyz(port: int) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/readyz", headers={"Authorization": "Bearer disk-token"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def stored_audit_ids(data_dir: Path) -> set[str]:
    try:
        with connect_read_only(data_dir / "store.sqlite3") as db:
            return {row[0] for row in db.execute(
                "SELECT json_extract(ct_doc(record), '$.orchestrator.resource.name') "
                "FROM events")}
    except sqlite3.Error:
        return set()


def wait_stored(wanted: set[str], data_dir: Path, proc: subprocess.Popen[str],
                timeout: float = 120) -> None:
    try:
        wait_for(lambda: wanted <= stored_audit_ids(data_dir), timeout=timeout)
    except AssertionError:
        missing = sorted(wanted - stored_audit_ids(data_dir))
        proc.kill()
        _out, err = proc.communicate(timeout=30)
        raise AssertionError(f"{len(missing)} not stored, e.g. {missing[:3]}; "
                             f"ctrail run said: {err[-4000:]}") from None


def kill_9(proc: subprocess.Popen[str]) -> None:
    """kill -9 of ctrail run, waited for; its stderr is not read to its end, since the orphaned
    intake process keeps it open for a few seconds more (on a loaded machine, longer)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.stderr is not None
    proc.stderr.close()


def start(config: Path, data_dir: Path) -> subprocess.Popen[str]:
    exe = Path(sys.executable).with_name("ctrail")
    return subprocess.Popen([str(exe), "run", "--config", str(config), "--data-dir",
                             str(data_dir)], cwd=REPO, env={**os.environ,
                             "DISK_TOKEN": "disk-token"}, stderr=subprocess.PIPE, text=True)


def test_a_full_disk_loses_no_acknowledged_event_across_fill_free_and_restart(
        tmp_path: Path) -> None:
    audit_log, port, ops_port = tmp_path / "audit.log", free_port(), free_port()
    audit_log.write_bytes(b"")
    config = tmp_path / "ctrail.yaml"
    config.write_text(f"""
bus: {{type: local, intake_min_free_bytes: 0}}
sources:
  apiserver-log: {{type: k8s_audit_file, path: {audit_log}, poll_interval_secs: 0.1}}
  apiserver-webhook: {{type: k8s_audit_webhook, port: {port}, token: {{env: DISK_TOKEN}}}}
ops: {{port: {ops_port}, token: {{env: DISK_TOKEN}}}}
""")
    tailed: list[str] = []

    def tail_lines(count: int) -> None:
        with open(audit_log, "a") as out:
            for _ in range(count):
                tailed.append(f"file-{len(tailed):05d}")
                out.write(EVENT.format(id=tailed[-1]) + "\n")

    with small_filesystem(tmp_path / "fs", 24 * 1024 * 1024) as fs:
        data_dir = fs / "data"
        proc = start(config, data_dir)
        acked: set[str] = set()
        try:
            number = 0
            wait_for(lambda: post(port, b'{"kind":"EventList","items":[]}')[0] == 200)
            tail_lines(200)
            ballast = fill(fs, leave_bytes=3 * 1024 * 1024)
            number, refusals = post_until_refused(port, number, acked, within_secs=120)
            assert refusals and all(s == 503 and r for s, r in refusals), refusals
            tail_lines(200)                       # appended while the disk is full
            still_running_not_ready(proc, ops_port)

            ballast.unlink()
            freed = time.monotonic()
            taken_again(port, number, acked, within_secs=90)
            recovered = time.monotonic() - freed
            wanted = acked | set(tailed)
            wait_stored(wanted, data_dir, proc)
            drained = time.monotonic() - freed
            wait_for(lambda: readyz(ops_port) == (200, "ready\n"), timeout=60)
            print(f"acknowledged {len(acked)} webhook events and {len(tailed)} tailed lines; "
                  f"webhook answered 200 again {recovered:.1f} s after space returned, "
                  f"everything stored {drained:.1f} s after")
        finally:
            kill_9(proc)
        assert_no_torn_record(data_dir / "bus")
        proc = start(config, data_dir)          # after a kill -9: nothing is lost either
        try:
            tail_lines(10)
            wanted = acked | set(tailed)
            wait_for(lambda: wanted <= stored_audit_ids(data_dir), timeout=120)
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err[-3000:]
        assert orjson.dumps(sorted(wanted - stored_audit_ids(data_dir))) == b"[]"


def test_ingest_on_a_full_disk_is_one_line_and_a_rerun_after_freeing_stores_everything(
        tmp_path: Path) -> None:
    lines = tmp_path / "audit.log"
    lines.write_text("".join(EVENT.format(id=f"ingest-{i:05d}") + "\n" for i in range(5000)))
    config = tmp_path / "ctrail.yaml"
    config.write_text("bus: {type: local, intake_min_free_bytes: 0}\n")
    exe = Path(sys.executable).with_name("ctrail")
    with small_filesystem(tmp_path / "fs", 32 * 1024 * 1024) as fs:
        ingest = [str(exe), "ingest", "--source", "k8s-audit", str(lines), "--config",
                  str(config), "--data-dir", str(fs / "data")]
        ballast = fill(fs, leave_bytes=1024 * 1024)
        full = subprocess.run(ingest, capture_output=True, text=True, cwd=REPO, timeout=300)
        assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr[-2000:]
        assert full.stderr.strip().splitlines()[-1].startswith("ctrail: error: ")
        assert "space" in full.stderr or "full" in full.stderr
        ballast.unlink()
        again = subprocess.run(ingest, capture_output=True, text=True, cwd=REPO, timeout=300)
        assert again.returncode == 0, again.stderr[-2000:]
        assert stored_audit_ids(fs / "data") >= {f"ingest-{i:05d}" for i in range(5000)}
