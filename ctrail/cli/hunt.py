"""`ctrail hunt RULE.yml`: run a Sigma rule retroactively over the stored events (detectors.hunt
says how, per store). A correlation rule's file prints the alerts its correlations raise over
the stored events (detectors.hunt_correlation), and a first-seen or spike rule's the alerts it
raises after learning its history window (detectors.history_replay), the newest `--limit`."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

import orjson

from ctrail.audit.trail import period, record
from ctrail.bus.codec import encode
from ctrail.cli.alerts import COLUMNS as ALERT_COLUMNS
from ctrail.cli.common import add_common, print_docs, settings_of
from ctrail.cli.search import COLUMNS
from ctrail.errors import UsageError
from ctrail.query import parse_time
from ctrail.settings import Settings
from detectors.derived import DerivedContext
from detectors.history_replay import history_rule_names, hunt_history, load_history_rule
from detectors.hunt import has_correlation, hunt, load_hunt_rule
from detectors.hunt_correlation import hunt_correlations, hunt_detector, with_rule_file


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("hunt", help="run a Sigma rule over stored history")
    parser.add_argument("rule", type=Path, help="a Sigma rule file: one single-event rule, or "
                        "correlation rules (their base rules may be in the configured rules)")
    parser.add_argument("--from", dest="time_from", help="ISO 8601 time, or now-24h")
    parser.add_argument("--to", dest="time_to", help="ISO 8601 time, or now")
    parser.add_argument("--limit", type=int, default=100,
                        help="most matching events to print, the newest (default 100)")
    add_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    time_from = parse_time(args.time_from) if args.time_from else None
    time_to = parse_time(args.time_to) if args.time_to else None
    settings = settings_of(args)
    detection = settings.detection
    if args.rule.is_file() and history_rule_names(args.rule):
        return run_history(args, settings, time_from, time_to)
    if args.rule.is_file() and has_correlation(args.rule):
        return run_correlations(args, settings, time_from, time_to)
    variables = detection.variables()
    rule = load_hunt_rule(args.rule, variables)
    context = DerivedContext(frozenset(r.lower() for r in detection.trusted_registries))
    store = settings.store.build(settings.data_dir)
    try:
        docs = hunt(store, rule, args.rule, time_from, time_to, args.limit, variables, context)
    finally:
        store.close()
    record(settings, "hunt", {"rule": rule.id, "rule_file": str(args.rule.resolve()),
                              **period(time_from, time_to), "limit": args.limit,
                              "results": len(docs)})
    print_docs(docs, args.format, f"events matching {rule.id}", COLUMNS)
    return 0


def run_correlations(args: argparse.Namespace, settings: Settings, time_from: datetime | None,
                     time_to: datetime | None) -> int:
    detector = hunt_detector(args.rule, settings.detection)
    store = settings.store.build(settings.data_dir)
    try:
        alerts = hunt_correlations(store, detector, settings.detection.late_events_secs,
                                   time_from, time_to)[-args.limit:]
    finally:
        store.close()
    ids = [rule.id for rule in detector.correlations.rules]
    record(settings, "hunt", {"rule": ",".join(ids), "rule_file": str(args.rule.resolve()),
                              **period(time_from, time_to), "limit": args.limit,
                              "results": len(alerts)})
    docs = [orjson.loads(encode(alert)) for alert in alerts]
    print_docs(docs, args.format, f"alerts of {', '.join(ids)}", ALERT_COLUMNS)
    return 0


def run_history(args: argparse.Namespace, settings: Settings, time_from: datetime | None,
                time_to: datetime | None) -> int:
    detection = settings.detection
    detector = with_rule_file(detection, args.rule).build()
    rule = load_history_rule(args.rule, detector)
    store = settings.store.build(settings.data_dir)
    try:
        alerts = hunt_history(store, detector, rule, time_from, time_to, args.limit,
                              detection.late_events_secs,
                              frozenset(detection.production_namespaces))
    finally:
        store.close()
    record(settings, "hunt", {"rule": rule.id, "rule_file": str(args.rule.resolve()),
                              **period(time_from, time_to), "limit": args.limit,
                              "results": len(alerts)})
    docs = [orjson.loads(encode(alert)) for alert in alerts]
    print_docs(docs, args.format, f"alerts of {rule.id}", ALERT_COLUMNS)
    return 0
