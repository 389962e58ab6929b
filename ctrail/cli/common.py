"""What every command shares: the common flags, settings loading, and output."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import orjson
from rich.console import Console
from rich.table import Table

from ctrail.settings import Settings, load_settings


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="config file (default: config/containertrail.yaml when present)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data directory (overrides data_dir of the config)")
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="table for people, json for JSON Lines with ECS field names")


def settings_of(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, args.data_dir)


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
