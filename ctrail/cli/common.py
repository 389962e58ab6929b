"""What every command shares: the common flags, settings loading, and output."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import orjson
from rich.console import Console
from rich.table import Table

from ctrail.errors import UsageError
from ctrail.settings import Settings, load_settings

DURATION = re.compile(r"^(\d+)([smhdw])$")
UNIT_SECS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="config file (default: config/containertrail.yaml when present)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data directory (overrides data_dir of the config)")
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="table for people, json for JSON Lines with ECS field names")


def settings_of(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, args.data_dir)


def parse_duration(text: str) -> timedelta:
    """'30m', '24h', '7d' → timedelta; UsageError otherwise."""
    match = DURATION.match(text.strip())
    if not match:
        raise UsageError(f"not a duration: {text!r} (use e.g. 30m, 24h, 7d)")
    return timedelta(seconds=int(match.group(1)) * UNIT_SECS[match.group(2)])


def parse_time_arg(text: str | None) -> datetime | None:
    """An ISO 8601 time (naive is UTC), 'now', or 'now-DURATION'."""
    if text is None:
        return None
    text = text.strip()
    now = datetime.now(timezone.utc)
    if text == "now":
        return now
    if text.startswith("now-"):
        return now - parse_duration(text[4:])
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"not a time: {text!r} (use ISO 8601, now or now-24h)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def field(doc: dict[str, Any], path: str) -> Any:
    """A dotted ECS path of a document, or None."""
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def print_docs(docs: Iterable[dict[str, Any]], output_format: str, title: str,
               columns: Sequence[tuple[str, str]]) -> int:
    """Print documents as JSON Lines or as a table of `columns` (header, dotted path)."""
    docs = list(docs)
    if output_format == "json":
        out = sys.stdout.buffer
        for doc in docs:
            out.write(orjson.dumps(doc) + b"\n")
        out.flush()
        return len(docs)
    table = Table(title=f"{title} ({len(docs)})", title_justify="left", expand=False)
    for header, _path in columns:
        table.add_column(header, overflow="fold")
    for doc in docs:
        table.add_row(*(_cell(field(doc, path)) for _header, path in columns))
    Console(soft_wrap=False).print(table)
    return len(docs)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)
