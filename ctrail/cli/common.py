"""What every command shares: the common flags, settings loading, and output."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final, Iterable, Sequence

import orjson
from rich.console import Console
from rich.table import Table

from ctrail.errors import UsageError
from ctrail.settings import Settings, load_settings

# The options every command takes, before or after its name (`ctrail --data-dir X alerts` and
# `ctrail alerts --data-dir X`): registered on the top parser and on each command's with no
# default (argparse.SUPPRESS), so that neither erases what the other parsed; the defaults are
# filled in after parsing (with_common_defaults).
COMMON_DEFAULTS: Final[dict[str, Any]] = {"config": None, "data_dir": None, "format": "table"}
# The commands that print results, by their run function: the only ones --format json means
# something to (the others print a line of status, or nothing).
PRINTS_RESULTS: Final = frozenset({
    "ctrail.cli.search.run", "ctrail.cli.hunt.run", "ctrail.cli.alerts.run",
    "ctrail.cli.timeline.run", "ctrail.cli.dlq.run_list", "ctrail.cli.dlq_replay.run",
    "ctrail.cli.rules.run_list", "ctrail.cli.rules.run_test", "ctrail.cli.rules.run_lint",
    "ctrail.cli.users.run"})


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help="config file (default: config/containertrail.yaml when present)")
    parser.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                        help="data directory (overrides data_dir of the config)")
    parser.add_argument("--format", choices=("table", "json"), default=argparse.SUPPRESS,
                        help="table for people, json for JSON Lines with ECS field names")


def with_common_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in the common options nobody gave; refuse --format json for a command that prints
    no results (UsageError), rather than ignore it."""
    for name, default in COMMON_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    run = getattr(args, "run", None)
    where = f"{getattr(run, '__module__', '')}.{getattr(run, '__name__', '')}"
    if args.format == "json" and run is not None and where not in PRINTS_RESULTS:
        raise UsageError(f"--format json means nothing to `ctrail {args.command}`: it prints "
                         "no results (search, timeline, alerts, hunt, dlq and rules do)")
    return args


# Commands that read what was stored: against a data directory that does not exist they would
# answer "nothing", which is wrong (nothing was ever stored there), not empty.
READS_STORED: Final = frozenset({
    "ctrail.cli.search.run", "ctrail.cli.hunt.run", "ctrail.cli.alerts.run",
    "ctrail.cli.timeline.run", "ctrail.cli.dlq.run_list"})


def settings_of(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config, args.data_dir)
    run = getattr(args, "run", None)
    reads = f"{getattr(run, '__module__', '')}.{getattr(run, '__name__', '')}" in READS_STORED
    if reads and settings.store.type == "sqlite" and not settings.data_dir.is_dir():
        raise UsageError(f"the data directory {settings.data_dir} does not exist: nothing was "
                         "ever stored there (check --data-dir, or data_dir in the config)")
    return settings


def field(doc: dict[str, Any], path: str) -> Any:
    """A dotted ECS path of a document, or None."""
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


MAX_LIMIT: Final = 100_000
"""--limit's ceiling. JSON streams a page at a time; the ceiling keeps one command from walking
a whole store (narrow it with --from/--to), and bounds what the timeline holds of one instant."""
TABLE_MAX_ROWS: Final = 1_000
"""Rows of a table: rich builds it whole before printing (100 000 rows took 1.6 GB)."""


def fetch_limit(limit: int, output_format: str) -> int:
    """How many documents to fetch for `--limit`: a one-line error outside 1..MAX_LIMIT, and
    at most TABLE_MAX_ROWS for the table form (cut_note says so when rows were left out)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be between 1 and {MAX_LIMIT:,} (narrow the search with "
                         "--from and --to for more)".replace(",", " "))
    return limit if output_format == "json" else min(limit, TABLE_MAX_ROWS)


def cut_note(limit: int, output_format: str, printed: int) -> None:
    """On stderr, when the table form may have left out rows that --limit asked for."""
    if output_format != "json" and limit > TABLE_MAX_ROWS and printed >= TABLE_MAX_ROWS:
        print(f"ctrail: warning: a table shows at most the newest {TABLE_MAX_ROWS} rows; "
              "--format json prints up to --limit", file=sys.stderr)


def print_docs(docs: Iterable[dict[str, Any]], output_format: str, title: str,
               columns: Sequence[tuple[str, str]]) -> int:
    """Print documents as JSON Lines, each as it comes (a stream of 100 000 is never held),
    or as a table of `columns` (header, dotted path). Returns how many were printed."""
    if output_format == "json":
        out = sys.stdout.buffer
        printed = 0
        for doc in docs:
            out.write(orjson.dumps(doc) + b"\n")
            printed += 1
        out.flush()
        return printed
    docs = list(docs)
    if not docs:                     # one line, not the frame of an empty table
        print(f"{title}: none.")
        return 0
    table = Table(title=f"{title} ({len(docs)})", title_justify="left", expand=False)
    for header, _path in columns:
        table.add_column(header, overflow="fold")
    for doc in docs:
        table.add_row(*(_cell(field(doc, path)) for _header, path in columns))
    # Piped output keeps whole rows (one line each) for grep; a terminal folds to its width.
    width = None if sys.stdout.isatty() else 100_000
    Console(soft_wrap=False, width=width).print(table)
    return len(docs)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)
