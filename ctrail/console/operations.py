"""Reports and evidence in the console: rendered reports listed and opened, a report run now,
the evidence archive's last verification (read from our own audit trail) and a verification
run now. Both span every namespace, so only an unscoped user sees them, and only an admin runs
them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import orjson

from ctrail.audit.trail import record
from ctrail.components import Store
from ctrail.console.users import User
from ctrail.settings import Settings
from sinks.reports import TEMPLATES
from sinks.reports.run import resolve, run_report

LAST_VERIFY: Final = 'event.dataset:"containertrail.audit" AND event.action:"evidence-verify"'
VERIFY_TIMEOUT_SECS: Final = 600
# A rendered report is our own HTML with inline CSS and SVG, and no script: it is served with a
# policy of its own that lets its styles apply and nothing run.
REPORT_POLICY: Final = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                        "sandbox; frame-ancestors 'none'")


def reports(settings: Settings) -> list[dict[str, Any]]:
    """Every report name with the files rendered for it, newest first."""
    listing = []
    for name in sorted({*settings.reports, *TEMPLATES}):
        directory = resolve(settings, name).directory(settings.data_dir, name)
        files = sorted((p for p in directory.iterdir() if p.is_file()),
                       key=lambda p: p.stat().st_mtime, reverse=True) \
            if directory.is_dir() else []
        listing.append({"name": name, "files": [p.name for p in files]})
    return listing


def report_file(settings: Settings, name: str, file_name: str) -> Path | None:
    """A rendered file of a report, only if it is in that report's listing (no path from the
    request is ever joined blindly)."""
    for entry in reports(settings):
        if entry["name"] == name and file_name in entry["files"]:
            return resolve(settings, name).directory(settings.data_dir, name) / file_name
    return None


def run_now(settings: Settings, name: str, user: User) -> list[str]:
    written = run_report(settings, name)
    record(settings, "report-run", {"report": name, "files": [str(p) for p in written],
                                    "console": True}, user=user.name)
    return [p.name for p in written]


def last_verification(store: Store) -> dict[str, Any] | None:
    """The newest `ctrail evidence verify` record in our audit trail, with who ran it and when."""
    found = store.search(LAST_VERIFY, "events", None, None, 1)
    if not found:
        return None
    doc = found[0]
    details = orjson.loads(doc["event"]["original"])
    return {"time": doc.get("@timestamp"), "user": (doc.get("user") or {}).get("name"),
            **{k: details.get(k) for k in ("target", "ok", "findings", "segments", "records",
                                            "signatures_checked", "timestamps_checked")}}


def verify_now(config: Path | None, data_dir: Path, user: User,
               settings: Settings) -> dict[str, Any]:
    """`ctrail evidence verify --store` as the CLI runs it (its own audit record included), in a
    child process so a long verification does not hold a console thread's interpreter."""
    command = [sys.executable, "-m", "ctrail.cli.main", "evidence", "verify", "--store",
               "--data-dir", str(data_dir), *(["--config", str(config)] if config else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=VERIFY_TIMEOUT_SECS)
    record(settings, "evidence-verify-requested", {"status": done.returncode, "console": True},
           user=user.name)
    return {"status": done.returncode, "ok": done.returncode == 0,
            "output": (done.stdout + done.stderr).strip()[-20_000:]}
