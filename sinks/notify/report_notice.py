"""A rendered report on its way to receivers (email, Slack, Teams): what they say about it, and
which files they attach or link. Written to the outbox's `report_outbox` by the report run, in
the same durable transaction for every receiver, and delivered by the notify sender with the
receivers' pacing, retries and circuit breakers.

The notice names the files; their contents are read when sent (a CSV of 50 000 rows is not
copied into the outbox). A file gone by then is a rejected delivery, kept with the reason.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, ConfigDict

from sinks.notify.outbox import Outbox


class ReportNotice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    title: str
    time_from: datetime
    time_to: datetime
    generated: datetime
    summary: tuple[tuple[str, str], ...] = ()
    files: tuple[Path, ...] = ()          # as rendered: HTML first when rendered
    link: str | None = None               # where the HTML report is published

    @property
    def delivery_id(self) -> str:
        return f"report:{self.name}:{self.time_to.isoformat()}"

    @property
    def period(self) -> str:
        return f"{self.time_from:%Y-%m-%d %H:%M} to {self.time_to:%Y-%m-%d %H:%M} UTC"

    def html_file(self) -> Path | None:
        return next((path for path in self.files if path.suffix == ".html"), None)


def outbox_path(data_dir: Path) -> Path:
    return data_dir / "notify" / "outbox.sqlite3"


def enqueue_report(data_dir: Path, receivers: Sequence[str], notice: ReportNotice,
                   now: float | None = None) -> int:
    """Queue `notice` for each receiver; returns how many deliveries were new."""
    outbox = Outbox(outbox_path(data_dir))
    try:
        return outbox.enqueue_report(receivers, notice.delivery_id,
                                     notice.model_dump_json().encode(),
                                     time.time() if now is None else now)
    finally:
        outbox.close()
