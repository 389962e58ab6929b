"""`ctrail rules list | validate PATH... | test RULE FILE | lint --audit-policy FILE`: the
detection rules, offline.

- list: the configured rules (detection.rule_paths): id, title, level, ATT&CK, source file.
- validate: load rule files with pySigma as the detector does (correlation rules included);
  print every broken rule with its file, line and reason; exit 1 when any is broken.
- test: run one rule (a configured rule id, or a rule file) over a file of raw records in any
  `--source` format, with the configured detection lists and exceptions, and print the alerts.
- lint --audit-policy FILE: name each Kubernetes audit rule (and each correlation needing one)
  that the kube-apiserver audit policy in FILE can never feed: the requests the rule is about
  are not logged, or not at the level that keeps the fields it reads (detectors.policy_coverage);
  exit 1 when there is any.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import orjson

from collector import PARSERS, build_parser
from ctrail.cli.common import add_common, print_docs, settings_of
from ctrail.components import RawRecord
from ctrail.errors import InvalidInput, UsageError
from ctrail.event import Alert, Event
from detectors.audit_policy import load_policy
from detectors.correlation import CorrelationRule, load_correlations
from detectors.history_rules import load_history_rules
from detectors.policy_coverage import audit_rules, unfed_correlations, unfed_rules
from detectors.sigma_rules import CompiledRule, LoadError, load_rules
from detectors.source_fields import never_matching
from detectors.window_state import CorrelationEngine

RULE_COLUMNS = (("id", "id"), ("title", "title"), ("level", "level"), ("ATT&CK", "attack"),
                ("file", "file"))
LINT_COLUMNS = (("rule", "rule.id"), ("why the policy never feeds it", "reason"),
                ("file", "file"))
ALERT_COLUMNS = (("time", "@timestamp"), ("rule", "rule.id"), ("severity", "alert.severity"),
                 ("user", "user.name"), ("namespace", "kubernetes.namespace"),
                 ("group", "alert.group_key"), ("event", "alert.event_ids"))


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("rules", help="list, validate and test detection rules")
    actions = parser.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the configured rules")
    add_common(listing)
    listing.set_defaults(run=run_list)
    validate = actions.add_parser("validate", help="load rule files; exit 1 if any is broken")
    validate.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                          help="rule files or folders")
    add_common(validate)
    validate.set_defaults(run=run_validate)
    test = actions.add_parser("test", help="run one rule over a file of events")
    test.add_argument("rule", metavar="RULE", help="a configured rule id, or a rule file")
    test.add_argument("file", metavar="FILE", help="raw records (JSON lines, one JSON "
                      "document, or text lines), or - for stdin")
    test.add_argument("--source", default="k8s-audit", choices=sorted(PARSERS),
                      help="the format of the file (default k8s-audit)")
    add_common(test)
    test.set_defaults(run=run_test)
    lint = actions.add_parser("lint", help="rules an audit policy can never feed; exit 1 if any")
    lint.add_argument("--audit-policy", type=Path, required=True, metavar="FILE",
                      help="kube-apiserver's audit policy (--audit-policy-file)")
    lint.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                      help="rule files or folders (default: the configured detection.rule_paths)")
    add_common(lint)
    lint.set_defaults(run=run_lint)


def run_list(args: argparse.Namespace) -> int:
    detection = settings_of(args).detection
    rules = load_rules(detection.rule_paths, detection.variables())
    correlations = load_correlations(detection.rule_paths, rules)
    print_docs([*(rule_doc(rule) for rule in rules.rules),
                *(correlation_doc(rule) for rule in correlations.rules)],
               args.format, "Rules", RULE_COLUMNS)
    report_errors([*rules.errors, *correlations.errors])
    return 0


def correlation_doc(rule: CorrelationRule) -> dict[str, Any]:
    threat = rule.threat
    attack = [*(threat.technique.id if threat and threat.technique else ()),
              *(threat.tactic.name if threat and threat.tactic else ())]
    return {"id": rule.id, "title": rule.title, "level": rule.severity.word, "attack": attack,
            "file": str(rule.path) if rule.path else None, "type": rule.type,
            "rules": list(rule.rules)}


def rule_doc(rule: CompiledRule) -> dict[str, Any]:
    threat = rule.threat
    attack = [*(threat.technique.id if threat and threat.technique else ()),
              *(threat.tactic.name if threat and threat.tactic else ())]
    return {"id": rule.id, "title": rule.title, "level": rule.severity.word, "attack": attack,
            "file": str(rule.path) if rule.path else None,
            "datasets": list(rule.datasets or (rule.dataset,))}


def run_validate(args: argparse.Namespace) -> int:
    variables = settings_of(args).detection.variables()
    rules = load_rules(args.paths, variables)
    errors = [*rules.errors, *load_correlations(args.paths, rules).errors,
              *load_history_rules(args.paths, rules).errors]
    report_errors(errors)
    # Loaded, but blind: a rule no event of its source can match is worth a warning.
    blind = [(rule, reasons) for rule in audit_rules(args.paths, variables)
             if (reasons := never_matching(rule))]
    for rule, reasons in blind:
        where = f"{rule.path}: " if rule.path else ""
        print(f"ctrail: warning: {where}rule {rule.id} can never match an audit event: "
              f"{'; '.join(reasons)}", file=sys.stderr)
    print(f"{len(rules.rules)} rules loaded, {len(errors)} broken, {len(blind)} never match")
    return 1 if errors else 0


def report_errors(errors: list[LoadError] | tuple[LoadError, ...]) -> None:
    for error in errors:
        print(f"{error}", file=sys.stderr)


def run_lint(args: argparse.Namespace) -> int:
    detection = settings_of(args).detection
    paths = args.paths or list(detection.rule_paths)
    policy = load_policy(args.audit_policy)
    rules = audit_rules(paths, detection.variables())
    findings = unfed_rules(rules, policy)
    findings += unfed_correlations(paths, findings)
    print_docs(({"rule": {"id": f.rule}, "reason": f.reason,
                 "file": str(f.path) if f.path else None} for f in findings),
               args.format, "Rules the policy never feeds", LINT_COLUMNS)
    print(f"{len(rules)} audit rules checked against {args.audit_policy}: {len(findings)} "
          "never fed", file=sys.stderr)
    return 1 if findings else 0


def run_test(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    rule_file = Path(args.rule)
    detection = settings.detection
    if rule_file.is_file():
        detection = detection.model_copy(update={"rule_paths": (rule_file,)})
    detector = detection.build()
    # Correlation rules too: their windows run here over the file's events, in event time.
    engine = CorrelationEngine(detector.correlations.rules, detection.late_events_secs)
    known = {rule.id for rule in detector.rules.rules} | \
        {rule.id for rule in detector.correlations.rules}
    if not rule_file.is_file() and args.rule not in known:
        raise UsageError(f"{args.rule} is neither a rule file nor a loaded rule id")
    wanted = known if rule_file.is_file() else {args.rule}
    alerts: list[Alert] = []
    events = rejected = 0
    parser = build_parser(args.source, settings.data_dir, settings.redaction)
    for record in records(args.file):
        try:
            parsed = parser.parse(record)
        except InvalidInput as exc:
            rejected += 1
            print(f"{record.origin}: not a {args.source} record: {exc}", file=sys.stderr)
            continue
        events += len(parsed)
        for event in parsed:
            if isinstance(event, Event):
                single, candidates = detector.detect(event)
                found = [*single, *(a for c in candidates for a in engine.observe(c))]
                alerts.extend(a for a in found if a.rule.id in wanted)
    # The file is all there is: every window still open closes now.
    alerts.extend(a for a in engine.advance(datetime.max.replace(tzinfo=timezone.utc))
                  if a.rule.id in wanted)
    print_docs((a.model_dump(by_alias=True, exclude_none=True, mode="json") for a in alerts),
               args.format, "Matches", ALERT_COLUMNS)
    print(f"{events} events, {len(alerts)} matches, {rejected} records not parsed",
          file=sys.stderr)
    return 0


def records(name: str) -> Iterator[RawRecord]:
    """The file as one record when it is one JSON document (a pretty-printed webhook body),
    else one record per non-empty line."""
    data = sys.stdin.buffer.read() if name == "-" else read_file(name)
    received = datetime.now(timezone.utc)
    try:
        orjson.loads(data)
        whole = b"\n" in data.strip()
    except orjson.JSONDecodeError:
        whole = False
    if whole:
        yield RawRecord(data, f"{name}:1", received)
        return
    for number, line in enumerate(data.splitlines(), 1):
        if line.strip():
            yield RawRecord(line, f"{name}:{number}", received)


def read_file(name: str) -> bytes:
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror}") from None
