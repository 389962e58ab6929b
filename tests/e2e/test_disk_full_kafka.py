"""`ctrail run` on Kafka with the intake spool (bus.intake_spool) on a small filesystem that
fills up (issue 14, the Kafka side of tests/e2e/test_disk_full.py).

Intake answers its senders once a record is fsynced in DATA_DIR/intake-spool, and a thread ships
the spool to the real Kafka. What must hold: while the data directory is full the webhook
answers 503 with Retry-After, /readyz names the tailed source that cannot append, and tailing
waits; intake takes records again by itself once space returns; the spool holds no torn record
after a kill -9; and every event answered 200 (or read from the tailed file) is stored exactly
once across fill, free and the restart. The store is SQLite outside the small filesystem (one
row per event id: ON CONFLICT (id) DO NOTHING), so only intake's files fill it."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections import Counter
from functools import partial
from pathlib import Path

import pytest

from ctrail.settings import load_settings
from tests.e2e.test_disk_full import (
    EVENT,
    assert_no_torn_record,
    batch_body,
    kill_9,
    post,
    post_until_refused,
    readyz,
    start,
    still_running_not_ready,
    taken_again,
)
from tests.e2e.test_run import free_port
from tests.services import kafka_bootstrap
from tests.small_filesystem import fill, small_filesystem
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def stored_names(config: Path, scratch: Path) -> Counter[str]:
    """How many stored events each audited object name has (each event names its own)."""
    store = load_settings(config).store.build(scratch)
    try:
        return Counter(doc["orchestrator"]["resource"]["name"]
                       for doc in store.search("*", "events", limit=1_000_000)
                       if "orchestrator" in doc)
    finally:
        store.close()


def test_the_kafka_intake_spool_loses_no_acknowledged_event_across_fill_free_and_restart(
        tmp_path: Path) -> None:
    audit_log, port, ops_port = tmp_path / "audit.log", free_port(), free_port()
    audit_log.write_bytes(b"")
    store = tmp_path / "store" / "store.sqlite3"
    config = tmp_path / "ctrail.yaml"
    config.write_text(f"""
bus:
  type: kafka
  bootstrap_servers: "{kafka_bootstrap()}"
  namespace: "t{uuid.uuid4().hex[:12]}."
  intake_spool: true
  intake_min_free_bytes: 0
store: {{type: sqlite, path: {store}}}
sources:
  apiserver-log: {{type: k8s_audit_file, path: {audit_log}, poll_interval_secs: 0.1}}
  apiserver-webhook: {{type: k8s_audit_webhook, port: {port}, token: {{env: DISK_TOKEN}}}}
ops: {{port: {ops_port}, token: {{env: DISK_TOKEN}}}}
""")
    tailed: list[str] = []
    acked: set[str] = set()
    number = 0

    def tail_lines(count: int) -> None:
        with open(audit_log, "a") as out:
            for _ in range(count):
                tailed.append(f"file-{len(tailed):05d}")
                out.write(EVENT.format(id=tailed[-1]) + "\n")

    def post_batches(count: int) -> None:
        """Post `count` batches, each until answered 200 (the intake of a run killed a moment
        ago may still answer, then close its port for the next run's)."""
        nonlocal number
        for _ in range(count):
            body, ids = batch_body(number)
            wait_for(partial(accepted, body), timeout=60)
            acked.update(ids)
            number += 1

    def accepted(body: bytes) -> bool:
        return post(port, body)[0] == 200

    def wait_all_stored(proc: subprocess.Popen[str]) -> None:
        try:
            wait_for(lambda: acked | set(tailed) <= set(stored_names(config, tmp_path)),
                     timeout=60)
        except AssertionError:
            missing = sorted((acked | set(tailed)) - set(stored_names(config, tmp_path)))
            proc.kill()
            _out, err = proc.communicate(timeout=30)
            raise AssertionError(f"{len(missing)} not stored, e.g. {missing[:3]}; "
                                 f"ctrail run said: {err[-4000:]}") from None

    with small_filesystem(tmp_path / "fs", 24 * 1024 * 1024) as fs:
        data_dir = fs / "data"
        proc = start(config, data_dir)
        try:
            wait_for(lambda: post(port, b'{"kind":"EventList","items":[]}')[0] == 200,
                     timeout=60)
            tail_lines(200)
            ballast = fill(fs, leave_bytes=1536 * 1024)
            number, refusals = post_until_refused(port, number, acked, within_secs=60)
            assert refusals and all(s == 503 and r for s, r in refusals), (
                f"{number} batches answered 200 on a full data directory; refusals: {refusals}")
            tail_lines(200)                       # appended while the disk is full
            still_running_not_ready(proc, ops_port)

            ballast.unlink()
            freed = time.monotonic()
            number = taken_again(port, number, acked, within_secs=30)
            wait_all_stored(proc)
            wait_for(lambda: readyz(ops_port) == (200, "ready\n"), timeout=30)
            print(f"acknowledged {len(acked)} webhook events and {len(tailed)} tailed lines; "
                  f"all stored {time.monotonic() - freed:.1f} s after space returned")
            post_batches(5)                       # some perhaps not shipped yet at the kill
        finally:
            kill_9(proc)
        assert_no_torn_record(data_dir / "intake-spool")
        proc = start(config, data_dir)            # after a kill -9: nothing is lost either
        try:
            tail_lines(10)
            post_batches(2)
            wait_all_stored(proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        names = stored_names(config, tmp_path)
        assert sorted((acked | set(tailed)) - set(names)) == []
        assert [name for name, count in names.items() if count > 1] == []      # exactly once
