"""Render one report now: resolve its config, read the store, build, write the files."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Final

from ctrail.errors import UsageError
from ctrail.settings import Settings
from enrich.today import explain, load_graph
from sinks.notify.report_notice import ReportNotice, enqueue_report
from sinks.reports import TEMPLATES, ReportConfig, activity, compliance, weekly
from sinks.reports.model import Report
from sinks.reports.render import render
from sinks.reports.source import Source, Truncation

BUILDERS: Final[dict[str, Callable[[Source, Settings, ReportConfig], Report]]] = {
    "weekly": lambda source, _settings, _config: weekly.build(source),
    "user-activity": lambda source, _settings, _config: activity.build(source),
    "compliance": lambda source, settings, config: compliance.build(source, settings,
                                                                   config.gap_hours),
}


def resolve(settings: Settings, name: str) -> ReportConfig:
    """A configured report by name, or a shipped template by its own name."""
    if name in settings.reports:
        return settings.reports[name]
    if name in TEMPLATES:
        return ReportConfig(template=name)   # type: ignore[arg-type]
    known = sorted({*settings.reports, *TEMPLATES})
    raise UsageError(f"no report named {name!r} (known: {', '.join(known)})")


def run_report(settings: Settings, name: str, time_from: datetime | None = None,
               time_to: datetime | None = None, out_dir: Path | None = None,
               deliver: bool = False) -> list[Path]:
    """Render report `name` over [time_from, time_to) (default: its period up to now); with
    `deliver`, queue it for the receivers in its `deliver_to` (the scheduled runs do)."""
    config = resolve(settings, name)
    time_to = time_to or datetime.now(timezone.utc)
    time_from = time_from or time_to - timedelta(days=config.period_days)
    if time_from >= time_to:
        raise UsageError("--from must be before --to")
    store = settings.store.build(settings.data_dir)
    try:
        graph = load_graph(settings)
        source = Source(store, time_from, time_to, config.max_rows,
                        explain=lambda doc: explain(graph, doc))
        report = BUILDERS[config.template](source, settings, config)
    finally:
        store.close()
    report.name = name
    report.notes += [truncation_note(cut, config.max_rows)
                     for cut in dict.fromkeys(source.truncated)]
    written = render(report, out_dir or config.directory(settings.data_dir, name),
                     config.formats)
    if deliver and config.deliver_to:
        enqueue_report(settings.data_dir, config.deliver_to, notice(report, written,
                                                                    config.link_url))
    return written


def notice(report: Report, written: list[Path], link_url: str | None) -> ReportNotice:
    """What receivers are told about a rendered report."""
    target = next((p for p in written if p.suffix == ".html"), written[0] if written else None)
    link = f"{link_url.rstrip('/')}/{target.name}" if link_url and target else None
    return ReportNotice(name=report.name, title=report.title, time_from=report.time_from,
                        time_to=report.time_to, generated=report.generated,
                        summary=tuple((str(label), str(value)) for label, value in report.summary),
                        files=tuple(p.resolve() for p in written), link=link)


def truncation_note(cut: Truncation, max_rows: int) -> str:
    """Which part of the period a table or chart covers when its query was cut at max_rows."""
    return (f"{cut.matched} {cut.kind} match `{cut.query}`, more than max_rows ({max_rows}): "
            f"what is listed or charted from them covers only those after "
            f"{cut.after.isoformat()}.")
