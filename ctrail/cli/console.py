"""`ctrail console`: serve the web console (the `console:` section of the config; its
defaults when the section is absent) until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import sys

from ctrail.cli.common import add_common, settings_of
from ctrail.console.config import ConsoleConfig
from ctrail.console.users import ConsoleDb


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("console", help="serve the web console (alerts, search, "
                                 "timelines) to users made with `ctrail users add`")
    parser.add_argument("--host", help="address to listen on (overrides console.host)")
    parser.add_argument("--port", type=int, help="port (overrides console.port)")
    add_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ctrail.console.app import ConsoleServer  # FastAPI and uvicorn: only when serving

    settings = settings_of(args)
    config = settings.console or ConsoleConfig()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    config = config.model_copy(update=overrides)
    if not ConsoleDb(settings.data_dir).users():
        print("ctrail: warning: no console users yet: add one with "
              "`ctrail users add NAME --role admin`", file=sys.stderr)
    server = ConsoleServer(settings, config, args.config)
    print(f"ctrail: serving the console at {server.url}/ (Ctrl-C to stop)", file=sys.stderr,
          flush=True)
    server.serve()
    return 0
