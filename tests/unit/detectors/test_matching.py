"""Sigma matching semantics, one behaviour each: values, modifiers, conditions, field look-up.

Every rule here is real Sigma YAML loaded through the loader, and every event comes from the
real audit parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from sigma.types import SigmaString

from detector_support import audit_event, exec_audit, parse_line
from detectors.matcher import EventView, field_predicate
from detectors.sigma_rules import CompiledRule, load_rules


def compile_rule(write_rule: Callable[..., Path], detection: str) -> CompiledRule:
    loaded = load_rules([write_rule(detection)])
    assert loaded.errors == ()
    (rule,) = loaded.rules
    return rule


def matches(write_rule: Callable[..., Path], detection: str, **changes: Any) -> bool:
    rule = compile_rule(write_rule, detection)
    return rule.matches(EventView(audit_event(exec_audit(**changes))))


def selection(*lines: str) -> str:
    return "    selection:\n" + "".join(f"        {line}\n" for line in lines) + \
        "    condition: selection"


@pytest.mark.parametrize(("value", "expected"), [("create", True), ("CREATE", True),
                                                 ("Create", True), ("delete", False)])
def test_a_plain_value_equals_the_whole_field_case_insensitively(
        write_rule: Callable[..., Path], value: str, expected: bool) -> None:
    assert matches(write_rule, selection(f"verb: {value}")) is expected
    assert matches(write_rule, selection(f"verb: {value}x")) is False


def test_a_value_list_is_any_of(write_rule: Callable[..., Path]) -> None:
    assert matches(write_rule, selection("verb: [delete, create]"))
    assert not matches(write_rule, selection("verb: [delete, patch]"))


def test_all_requires_every_value(write_rule: Callable[..., Path]) -> None:
    assert matches(write_rule, selection("requestURI|contains|all: [exec, 'stdin=true']"))
    assert not matches(write_rule, selection("requestURI|contains|all: [exec, 'container=']"))


@pytest.mark.parametrize(("line", "expected"), [
    ("userAgent|contains: KUBECTL/v1", True),
    ("userAgent|contains: kubelet", False),
    ("requestURI|startswith: /API/v1/namespaces/shop/", True),
    ("requestURI|startswith: /apis/", False),
    ("user.username|endswith: '@EXAMPLE.com'", True),
    ("user.username|endswith: '@corp.example'", False),
])
def test_contains_startswith_and_endswith(write_rule: Callable[..., Path], line: str,
                                          expected: bool) -> None:
    assert matches(write_rule, selection(line)) is expected


@pytest.mark.parametrize(("pattern", "expected"), [
    ("'web-?'", True), ("'web-??'", False), ("'W*0'", True), ("'x*'", False),
    ("'*/exec\\?command=sh*'", True), ("'*/exec\\?command=bash*'", False), ("'*'", True)])
def test_wildcards_match_the_whole_value_and_can_be_escaped(
        write_rule: Callable[..., Path], pattern: str, expected: bool) -> None:
    field = "requestURI" if "exec" in pattern else "objectRef.name"
    assert matches(write_rule, selection(f"{field}: {pattern}")) is expected


def test_a_lone_wildcard_needs_the_field_to_be_there(write_rule: Callable[..., Path]) -> None:
    assert not matches(write_rule, selection("hostPath: '*'"))


@pytest.mark.parametrize(("line", "expected"), [
    ("requestURI|re: 'command=(sh|bash)&'", True),     # searched anywhere in the value
    ("requestURI|re: '^/api/v1/namespaces/[a-z]+/pods/'", True),
    ("requestURI|re: '^exec'", False),                  # ^ anchors where the rule says so
    ("userAgent|re: 'KUBECTL'", False),                 # case-sensitive by default
    ("userAgent|re|i: 'KUBECTL'", True),
])
def test_regular_expressions(write_rule: Callable[..., Path], line: str, expected: bool) -> None:
    assert matches(write_rule, selection(line)) is expected


@pytest.mark.parametrize(("network", "ips", "expected"), [
    ("10.0.0.0/8", ["203.0.113.7", "10.0.0.1"], True),   # any element of a list field
    ("192.168.0.0/16", ["203.0.113.7", "10.0.0.1"], False),
    ("2001:db8::/32", ["2001:db8::5"], True),
    ("2001:db8::/32", ["10.0.0.1", "not-an-ip"], False),
])
def test_cidr(write_rule: Callable[..., Path], network: str, ips: list[str],
              expected: bool) -> None:
    assert matches(write_rule, selection(f"sourceIPs|cidr: '{network}'"), sourceIPs=ips) is expected


def test_exists(write_rule: Callable[..., Path]) -> None:
    assert matches(write_rule, selection("objectRef.subresource|exists: true"))
    assert not matches(write_rule, selection("requestObject|exists: true"))
    assert matches(write_rule, selection("requestObject|exists: false"))
    assert not matches(write_rule, selection("impersonatedUser|exists: true"),
                       impersonatedUser=None)


def test_null_means_absent_or_null(write_rule: Callable[..., Path]) -> None:
    assert matches(write_rule, selection("impersonatedUser: null"))
    assert matches(write_rule, selection("impersonatedUser: null"), impersonatedUser=None)
    assert not matches(write_rule, selection("verb: null"))


def test_numbers_match_numbers_and_their_text(write_rule: Callable[..., Path]) -> None:
    assert matches(write_rule, selection("responseStatus.code: 101"))
    assert matches(write_rule, selection("responseStatus.code: '101'"))
    assert not matches(write_rule, selection("responseStatus.code: [401, 403]"))
    assert matches(write_rule, selection("responseStatus.code: [401, 403]"),
                   responseStatus={"code": 403})


def test_numeric_comparisons(write_rule: Callable[..., Path]) -> None:
    assert matches(write_rule, selection("responseStatus.code|gte: 100",
                                         "responseStatus.code|lt: 200"))
    assert not matches(write_rule, selection("responseStatus.code|gt: 101"))


def test_booleans_inside_lists_of_objects(write_rule: Callable[..., Path],
                                          falco_traces: Path) -> None:
    rule = compile_rule(write_rule, selection(
        "requestObject.spec.containers.securityContext.privileged: true"))
    second = (falco_traces / "create_nginx_pod_privileged_2nd_container.json").read_bytes()
    plain = (falco_traces / "create_nginx_pod_unprivileged.json").read_bytes()
    assert rule.matches(EventView(parse_line(second.splitlines()[0])[0]))
    assert not rule.matches(EventView(parse_line(plain.splitlines()[0])[0]))


def test_cased_matches_case_sensitively(write_rule: Callable[..., Path]) -> None:
    assert matches(write_rule, selection("user.username|cased: alice@example.com"))
    assert not matches(write_rule, selection("user.username|cased: Alice@example.com"))


def test_neq_negates(write_rule: Callable[..., Path]) -> None:
    assert matches(write_rule, selection("verb|neq: get"))
    assert not matches(write_rule, selection("verb|neq: create"))


def test_a_key_that_holds_dots_is_found(write_rule: Callable[..., Path]) -> None:
    assert matches(write_rule, selection("annotations.authorization.k8s.io/decision: allow"))
    assert not matches(write_rule, selection("annotations.authorization.k8s.io/decision: forbid"))


def test_and_or_not(write_rule: Callable[..., Path]) -> None:
    detection = ("    selection:\n        verb: create\n"
                 "    filter:\n        user.username|startswith: 'system:'\n"
                 "    other:\n        verb: delete\n"
                 "    condition: (selection or other) and not filter")
    assert matches(write_rule, detection)
    assert not matches(write_rule, detection, user={"username": "system:node:n1"})
    assert not matches(write_rule, detection, verb="get")


@pytest.mark.parametrize(("condition", "expected"), [
    ("1 of sel_*", True), ("all of sel_*", False), ("1 of them", True), ("all of them", False),
    ("all of sel_* or filter_a", True), ("not 1 of sel_*", False)])
def test_selectors(write_rule: Callable[..., Path], condition: str, expected: bool) -> None:
    detection = ("    sel_verb:\n        verb: delete\n"
                 "    sel_subresource:\n        objectRef.subresource: exec\n"
                 "    filter_a:\n        objectRef.resource: pods\n"
                 f"    condition: {condition}")
    assert matches(write_rule, detection) is expected


def test_all_of_them_when_every_selection_matches(write_rule: Callable[..., Path]) -> None:
    detection = ("    sel_verb:\n        verb: create\n"
                 "    sel_subresource:\n        objectRef.subresource: [exec, attach]\n"
                 "    condition: all of them")
    assert matches(write_rule, detection)


def test_fields_outside_the_audit_dict_are_read_from_the_event_document() -> None:
    view = EventView(audit_event(exec_audit()))
    assert field_predicate("user.name", SigmaString("ALICE@*"))(view)
    assert field_predicate("kubernetes.namespace", SigmaString("shop"))(view)
    assert not field_predicate("kubernetes.namespace", SigmaString("payments"))(view)
    assert field_predicate("event.action", SigmaString("create"))(view)
