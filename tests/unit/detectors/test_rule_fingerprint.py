"""The rule-set fingerprint behind the `rules-change` audit record: one digest per loaded rule
(under the id alerts use, UUID or name), filters included, rules that do not load left out,
and a change of what a rule says told apart from a change of how it is written."""

from __future__ import annotations

from pathlib import Path

from detectors import load_rules
from detectors.rule_fingerprint import changes, fingerprint

UUID_RULE = """title: Secret Deleted
id: 5E7A6C1B-9D2F-4A3B-8C4D-0E1F2A3B4C5D
logsource: {product: kubernetes, service: audit}
detection:
    selection: {verb: delete, objectRef.resource: secrets}
    condition: selection
level: medium
"""
NAMED_RULE = """title: Pod Exec
id: 0b7e1c55-0000-4000-8000-000000000001
name: LOCAL-001
logsource: {product: kubernetes, service: audit}
detection:
    selection: {objectRef.subresource: exec}
    condition: selection
level: high
"""
FILTER = """title: Not in CI
id: 0b7e1c55-0000-4000-8000-000000000002
name: LOCAL-FILTER-CI
logsource: {product: kubernetes, service: audit}
filter:
    rules: [LOCAL-001]
    selection: {user.username: ci}
    condition: not selection
"""
BROKEN = """title: Broken
id: 0b7e1c55-0000-4000-8000-000000000003
name: LOCAL-BROKEN
logsource: {product: kubernetes, service: audit}
detection:
    condition: selection
"""


def fingerprint_of(directory: Path) -> dict[str, str]:
    rules = load_rules([directory])
    return fingerprint([directory], {rule.id for rule in rules.rules})


def test_each_loaded_rule_and_filter_has_a_digest_under_its_alert_id(tmp_path: Path) -> None:
    for name, text in {"uuid": UUID_RULE, "named": NAMED_RULE, "filter": FILTER,
                       "broken": BROKEN}.items():
        (tmp_path / f"{name}.yml").write_text(text)
    rules = load_rules([tmp_path])
    assert {rule.id for rule in rules.rules} == {"5e7a6c1b-9d2f-4a3b-8c4d-0e1f2a3b4c5d",
                                                 "LOCAL-001"}
    assert set(fingerprint_of(tmp_path)) == {"5e7a6c1b-9d2f-4a3b-8c4d-0e1f2a3b4c5d",
                                             "LOCAL-001", "LOCAL-FILTER-CI"}


def test_only_a_change_of_what_a_rule_says_is_a_modification(tmp_path: Path) -> None:
    rule = tmp_path / "named.yml"
    rule.write_text(NAMED_RULE)
    before = fingerprint_of(tmp_path)
    rule.write_text("# reviewed\n" + NAMED_RULE.replace("{objectRef.subresource: exec}",
                                                        "\n        objectRef.subresource: exec"))
    assert not changes(before, fingerprint_of(tmp_path))
    rule.write_text(NAMED_RULE.replace("level: high", "level: critical"))
    (tmp_path / "uuid.yml").write_text(UUID_RULE)
    changed = changes(before, fingerprint_of(tmp_path))
    assert (changed.added, changed.removed, changed.modified) \
        == (("5e7a6c1b-9d2f-4a3b-8c4d-0e1f2a3b4c5d",), (), ("LOCAL-001",))
    rule.unlink()
    assert changes(before, fingerprint_of(tmp_path)).removed == ("LOCAL-001",)


COLLECTION = """action: global
title: Workload Changes
logsource: {product: kubernetes, service: audit}
detection:
    shared: {verb: VERB}
    condition: shared and selection
level: medium
---
id: 0b7e1c55-0000-4000-8000-000000000011
name: LOCAL-DEPLOYMENTS
detection:
    selection: {objectRef.resource: deployments}
---
id: 0b7e1c55-0000-4000-8000-000000000012
name: LOCAL-DAEMONSETS
detection:
    selection: {objectRef.resource: daemonsets}
"""


def test_a_change_to_a_collections_global_document_changes_the_rules_it_merges_into(
        tmp_path: Path) -> None:
    (tmp_path / "collection.yml").write_text(COLLECTION.replace("VERB", "create"))
    before = fingerprint_of(tmp_path)
    assert set(before) == {"LOCAL-DEPLOYMENTS", "LOCAL-DAEMONSETS"}
    (tmp_path / "collection.yml").write_text(COLLECTION.replace("VERB", "delete"))
    assert changes(before, fingerprint_of(tmp_path)).modified == ("LOCAL-DAEMONSETS",
                                                                  "LOCAL-DEPLOYMENTS")
