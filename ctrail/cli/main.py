"""`ctrail`: the one entry point. Errors print one line (no traceback) and exit non-zero."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from typing import Sequence

from ctrail import __version__
from ctrail.cli import (
    alerts,
    console,
    dlq,
    evidence,
    health,
    hunt,
    ingest,
    report,
    rules,
    run,
    search,
    timeline,
    users,
    worker,
)
from ctrail.cli.common import add_common, with_common_defaults
from ctrail.errors import ConfigError, CtrailError, QueryError, UsageError
from ctrail.logformat import configure_logging

USAGE_ERRORS = (ConfigError, UsageError, QueryError)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctrail", description="ContainerTrail: container-security audit pipeline.")
    parser.add_argument("--version", action="version", version=f"ctrail {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="log lines on stderr: text, or json (ECS JSON, one a line, for a "
                        "log shipper)")
    add_common(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, worker, ingest, search, hunt, alerts, dlq, health, timeline, rules):
        module.register(commands)
    evidence.register(commands)
    report.register(commands)
    console.register(commands)
    users.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Everything ctrail writes (store, logs, dead letters, evidence, reports, keys) holds audit
    # data: readable by its owner only (directories 0700, files 0600).
    os.umask(0o077)
    try:
        args = with_common_defaults(build_parser().parse_args(argv))
    except UsageError as exc:
        print(f"ctrail: error: {exc}", file=sys.stderr)
        return 2
    quiet = logging.INFO if args.command == "run" else logging.WARNING
    configure_logging(logging.DEBUG if args.verbose else quiet, args.log_format)
    try:
        return int(args.run(args))
    except USAGE_ERRORS as exc:
        print(f"ctrail: error: {exc}", file=sys.stderr)
        return 2
    except CtrailError as exc:
        print(f"ctrail: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:      # `ctrail search ... | head`: an OSError, so caught before those
        # The reader has what it wanted. Python flushes stdout again on exit, into the closed
        # pipe: what is left goes nowhere instead of into a second error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        # What was written is whole (every file is replaced atomically or cut back), and the
        # command can be run again once there is space: say so in one line, no traceback.
        print(f"ctrail: error: {exc.strerror}: {exc.filename or 'the data directory'}; free "
              "some space and run the command again", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
