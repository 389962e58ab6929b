"""`ctrail health`: exit 0 when the `ctrail run` or `ctrail worker` processes of this data
directory are alive (their heartbeats are fresh), 1 otherwise. A container health check."""

from __future__ import annotations

import argparse

from ctrail.cli.common import add_common, settings_of
from ctrail.runtime.health import STALE_AFTER_SECS, stale_roles


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("health", help="are this data directory's processes alive?")
    add_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    fresh, stale = stale_roles(settings_of(args).data_dir)
    if stale or not fresh:
        print(f"unhealthy: no heartbeat for {STALE_AFTER_SECS:.0f} s from "
              f"{', '.join(stale) or 'any process'}")
        return 1
    print(f"healthy: {', '.join(fresh)}")
    return 0
