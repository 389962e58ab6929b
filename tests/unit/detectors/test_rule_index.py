"""The rule index narrows the rules an event meets without ever changing what matches."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from detector_support import audit_event, exec_audit, parse_line
from detectors.matcher import EventView
from detectors.rule_index import RuleIndex
from detectors.sigma_rules import PACKAGED_RULES, load_rules


def test_keys_prefer_the_resource_then_the_verb(sigmahq_rules: Path,
                                               write_rule: Callable[..., Path]) -> None:
    keys = {rule.title: rule.key for rule in load_rules([sigmahq_rules]).rules}
    assert keys["Kubernetes Secrets Modified or Deleted"] == (
        "kubernetes.audit.objectRef.resource", frozenset({"secrets"}))
    assert keys["Kubernetes Unauthorized or Unauthenticated Access"] == (
        "kubernetes.audit.responseStatus.code", frozenset({401.0, 403.0}))
    (same_field,) = load_rules([write_rule(
        "    a:\n        verb: delete\n    b:\n        verb: [get, list]\n    condition: a or b"
    )]).rules
    assert same_field.key == ("kubernetes.audit.verb", frozenset({"delete", "get", "list"}))


def test_rules_without_a_single_required_value_are_always_candidates(
        write_rule: Callable[..., Path], tmp_path: Path) -> None:
    write_rule("    a:\n        verb: delete\n    b:\n        objectRef.resource: secrets\n"
               "    condition: a or b")
    write_rule("    sel:\n        verb|contains: lete\n    condition: sel")
    write_rule("    sel:\n        verb: delete\n    condition:\n        - sel\n        - sel")
    loaded = load_rules([tmp_path])
    assert [rule.key for rule in loaded.rules] == [None, None, None]
    assert RuleIndex(loaded.rules).candidates(EventView(audit_event(exec_audit()))) == \
        list(loaded.rules)


def test_a_rule_keyed_on_a_list_field_is_a_candidate_once_and_in_load_order(
        write_rule: Callable[..., Path], tmp_path: Path) -> None:
    write_rule("    sel:\n        sourceIPs: ['203.0.113.7', '10.0.0.1']\n    condition: sel")
    write_rule("    sel:\n        verb|contains: eat\n    condition: sel")
    write_rule("    sel:\n        objectRef.resource: secrets\n    condition: sel")
    first, second, third = load_rules([tmp_path]).rules
    index = RuleIndex([first, second, third])
    assert index.candidates(EventView(audit_event(exec_audit()))) == [first, second]


def test_the_index_changes_no_outcome_on_any_real_trace(sigmahq_rules: Path,
                                                        falco_traces: Path) -> None:
    rules = load_rules([PACKAGED_RULES, sigmahq_rules]).rules
    index = RuleIndex(rules)
    for path in sorted(falco_traces.glob("*.json")):
        for line in path.read_bytes().splitlines():
            if not line.strip() or b'"kind":0' in line.replace(b" ", b""):
                continue
            for event in parse_line(line):
                view = EventView(event)
                assert [r for r in index.candidates(view) if r.matches(view)] == \
                    [r for r in rules if r.matches(view)], path.name


def test_an_or_of_selections_on_one_field_is_keyed_by_all_their_values(
        write_rule: Callable[..., Path]) -> None:
    (rule,) = load_rules([write_rule(
        "    a:\n        objectRef.resource: events\n        verb: delete\n"
        "    b:\n        objectRef.resource: [configmaps, secrets]\n        objectRef.name|contains: audit\n"
        "    condition: a or b")]).rules
    assert rule.key == ("kubernetes.audit.objectRef.resource",
                        frozenset({"events", "configmaps", "secrets"}))


def test_a_number_key_finds_the_values_its_test_accepts(write_rule: Callable[..., Path]) -> None:
    """responseStatus.code: 403 matches 403, 403.0 and "403" (detectors.values); the index must
    offer the rule for each, and not for a boolean or another number."""
    (rule,) = load_rules([write_rule(
        "    sel:\n        responseStatus.code: 403\n    condition: sel")]).rules
    assert rule.key == ("kubernetes.audit.responseStatus.code", frozenset({403.0}))
    index = RuleIndex([rule])
    for code, offered in ((403, True), (403.0, True), ("403", True), (" 403 ", True),
                          (404, False), ("forbidden", False), (True, False), (None, False)):
        audit = {**exec_audit(), "responseStatus": {"code": code}}
        view = EventView(audit_event(audit))
        assert (index.candidates(view) == [rule]) is offered, code
        assert rule.matches(view) is offered, code


def test_a_rule_off_while_its_list_is_empty_is_loaded_but_never_a_candidate() -> None:
    """CT-K8S-028 (a person outside detection.allowed_users) means nothing while the list is
    empty, so it costs nothing then; with the list configured it is offered and fires."""
    intruder = audit_event({**exec_audit(), "user": {"username": "mallory"}})
    view = EventView(intruder)
    off = {rule.id: rule for rule in load_rules([PACKAGED_RULES]).rules}["CT-K8S-028"]
    assert off.inert and off not in RuleIndex([off]).candidates(view)
    assert not off.matches(view)                     # what it would say anyway
    on = {rule.id: rule for rule in load_rules(
        [PACKAGED_RULES], {"allowed_users": ["alice"]}).rules}["CT-K8S-028"]
    assert not on.inert and RuleIndex([on]).candidates(view) == [on]
    assert on.matches(view)
