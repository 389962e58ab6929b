"""`ctrail run` killed (-9), its tailed files rotated while it is down, started again: every line
is stored, none twice, and ctrail.raw holds each line once (issue 14). A kube-apiserver audit log
rotated twice the way lumberjack does it (renamed to audit-<time>.log, the older one gzipped),
a kubelet container log rotated behind its /var/log/containers symlink, and Falco's file_output
(a `file` source) rotated by logrotate's copytruncate, the way Falco's packages rotate it."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

from ctrail.bus import RAW
from ctrail.bus.codec import RawEntry
from ctrail.bus.local import read_topic_files
from sinks.sqlite.records import connect_read_only
from tests.e2e.test_disk_full import EVENT, kill_9
from tests.e2e.test_run import REPO
from tests.waiting import wait_for

CID = "3d02975d4378f74f9a5005206e14745ce76947d970fad44ac6a5c5b80a3ccdf0"


def stored(data_dir: Path) -> tuple[set[str], set[str], set[str], int]:
    """(audit object names, container log messages, Falco outputs, their rows) in the store."""
    try:
        with connect_read_only(data_dir / "store.sqlite3") as db:
            rows = db.execute("SELECT dataset, json_extract(ct_doc(record), "
                              "'$.orchestrator.resource.name'), json_extract(ct_doc(record), "
                              "'$.message') FROM events").fetchall()
    except sqlite3.Error:
        return set(), set(), set(), 0
    audit = {name for dataset, name, _ in rows if dataset == "kubernetes.audit"}
    logs = {message for dataset, _, message in rows if dataset == "kubernetes.container_logs"}
    falco = {message for dataset, _, message in rows if dataset == "falco.alerts"}
    ours = [row for row in rows
            if row[0] in ("kubernetes.audit", "kubernetes.container_logs", "falco.alerts")]
    return audit, logs, falco, len(ours)


class Writer:
    def __init__(self, audit_log: Path, container_log: Path, falco_log: Path) -> None:
        self.audit_log, self.container_log, self.falco_log = audit_log, container_log, falco_log
        self.audit: list[str] = []
        self.logs: list[str] = []
        self.falco: list[str] = []

    def audit_lines(self, count: int) -> None:
        with open(self.audit_log, "a") as out:
            for _ in range(count):
                self.audit.append(f"rot-{len(self.audit):05d}")
                out.write(EVENT.format(id=self.audit[-1]) + "\n")
        time.sleep(0.02)                          # rotations have distinct modification times

    def log_lines(self, count: int) -> None:
        with open(self.container_log, "a") as out:
            for _ in range(count):
                self.logs.append(f"GET /item/{len(self.logs)} 200")
                out.write(f"2026-12-07T11:00:00.{len(self.logs):09d}Z stdout F "
                          f"{self.logs[-1]}\n")
        time.sleep(0.02)

    def falco_lines(self, count: int) -> None:
        with open(self.falco_log, "a") as out:
            for _ in range(count):
                self.falco.append(f"A shell was spawned in a container (n={len(self.falco)})")
                out.write(orjson.dumps({
                    "output": self.falco[-1], "priority": "Notice",
                    "rule": "Terminal shell in container", "source": "syscall",
                    "time": f"2026-12-07T11:00:00.{len(self.falco):09d}Z",
                    "output_fields": {"container.id": CID[:12], "proc.name": "bash"},
                }).decode() + "\n")
        time.sleep(0.02)

    def everything(self) -> tuple[set[str], set[str], set[str]]:
        return set(self.audit), set(self.logs), set(self.falco)


def wait_all_stored(write: Writer, data_dir: Path, proc: subprocess.Popen[str]) -> None:
    try:
        wait_for(lambda: stored(data_dir)[:3] == write.everything())
    except AssertionError:
        audit, logs, falco, _ = stored(data_dir)
        proc.kill()
        _out, err = proc.communicate(timeout=30)
        raise AssertionError(
            f"missing {sorted(set(write.audit) - audit)[:5]} of the audit log "
            f"({len(set(write.audit) - audit)}), {sorted(set(write.logs) - logs)[:5]} of the "
            f"container log ({len(set(write.logs) - logs)}), {len(set(write.falco) - falco)} "
            f"of Falco's; ctrail run said: {err[-3000:]}"
        ) from None


def start(config: Path, data_dir: Path) -> subprocess.Popen[str]:
    exe = Path(sys.executable).with_name("ctrail")
    return subprocess.Popen([str(exe), "run", "--config", str(config), "--data-dir",
                             str(data_dir)], cwd=REPO, stderr=subprocess.PIPE, text=True)


def test_files_rotated_while_ctrail_is_killed_lose_and_repeat_nothing(tmp_path: Path) -> None:
    logs_dir, pod_dir = tmp_path / "containers", tmp_path / "pods" / "shop_web_0a1b" / "nginx"
    logs_dir.mkdir()
    pod_dir.mkdir(parents=True)
    link = logs_dir / f"web-7d4b9c_shop_nginx-{CID}.log"
    link.symlink_to(pod_dir / "0.log")
    audit_log, data_dir = tmp_path / "audit" / "audit.log", tmp_path / "data"
    audit_log.parent.mkdir()
    falco_log = tmp_path / "falco" / "events.json"
    falco_log.parent.mkdir()
    write = Writer(audit_log, pod_dir / "0.log", falco_log)
    # A consumer group of the test's own that never commits: the log keeps ctrail.raw for the
    # check at the end (a log every group has read to its end is deleted at close).
    (data_dir / "bus" / RAW).mkdir(parents=True)
    (data_dir / "bus" / RAW / "test-inspection.offset").write_text("0")
    write.audit_lines(100)
    write.log_lines(50)
    write.falco_lines(30)
    config = tmp_path / "ctrail.yaml"
    config.write_text(f"""
sources:
  apiserver-log: {{type: k8s_audit_file, path: {audit_log}, poll_interval_secs: 0.1}}
  pods: {{type: container_logs, glob: "{logs_dir}/*.log", poll_interval_secs: 0.1}}
  falco-file: {{type: file, format: falco, path: {falco_log}, poll_interval_secs: 0.1}}
""")
    proc = start(config, data_dir)
    try:
        wait_all_stored(write, data_dir, proc)
    finally:
        kill_9(proc)

    # While it is down: the audit log rotated twice (the first rotation gzipped), the
    # container log once; each rotated file has lines that were never read.
    write.audit_lines(300)
    first = audit_log.with_name("audit-2026-12-07T11-00-00.000.log")
    os.rename(audit_log, first)
    write.audit_lines(50)
    os.rename(audit_log, audit_log.with_name("audit-2026-12-07T11-10-00.000.log"))
    with open(first, "rb") as src, gzip.open(f"{first}.gz", "wb") as out:
        shutil.copyfileobj(src, out)
    first.unlink()
    write.audit_lines(20)
    write.log_lines(40)
    os.rename(pod_dir / "0.log", pod_dir / "0.log.20261207-110000")
    write.log_lines(30)
    # logrotate's copytruncate: the lines written since the kill are copied away, the file
    # is emptied in place (same inode), and Falco goes on writing into it.
    write.falco_lines(25)
    shutil.copyfile(falco_log, falco_log.with_name("events.json.1"))
    os.truncate(falco_log, 0)
    write.falco_lines(15)

    proc = start(config, data_dir)
    try:
        wait_all_stored(write, data_dir, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert stored(data_dir)[3] == len(write.audit) + len(write.logs) + len(write.falco)
    entries = [RawEntry.decode(value) for value in read_topic_files(data_dir / "bus" / RAW)]
    raw = Counter(e.data for e in entries if e.source in ("apiserver-log", "pods", "falco-file"))
    assert len(raw) == 470 + 120 + 70 and set(raw.values()) == {1}
