"""Loading rule files: SigmaHQ's rules unmodified, our pack, broken files reported and skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import yaml
from sigma.collection import SigmaCollection
from sigma.conditions import ConditionFieldEqualsValueExpression
from sigma.rule import SigmaRule

from ctrail.errors import ConfigError
from detectors.field_mapping import containertrail_pipeline
from detectors.sigma_rules import PACKAGED_RULES, load_rules

GOOD = "    selection:\n        verb: create\n    condition: selection"


def test_the_16_sigmahq_kubernetes_audit_rules_load_unmodified(sigmahq_rules: Path) -> None:
    loaded = load_rules([sigmahq_rules])
    assert loaded.errors == ()
    files = sorted(sigmahq_rules.glob("*.yml"))
    assert len(files) == len(loaded.rules) == 16
    uuids = {yaml.safe_load(path.read_text())["id"] for path in files}
    assert {rule.id for rule in loaded.rules} == uuids          # third-party rules keep UUIDs
    assert {rule.dataset for rule in loaded.rules} == {"kubernetes.audit"}


def test_our_pack_names_rules_by_their_sigma_name_and_skips_the_tests_folder() -> None:
    loaded = load_rules([PACKAGED_RULES])
    assert loaded.errors == ()
    ids = [rule.id for rule in loaded.rules]
    assert {f"CT-K8S-{n:03d}" for n in range(1, 24)} | {"CT-RT-001", "CT-RT-002", "CT-REG-001",
                                                        "CT-REG-002", "CT-REG-003"} <= set(ids)
    assert len(ids) == len(set(ids))
    (rule,) = [rule for rule in loaded.rules if rule.id == "CT-K8S-004"]
    assert rule.path == PACKAGED_RULES / "ct-k8s-004-exec-into-pod.yml"
    assert rule.threat is not None and rule.threat.technique is not None
    assert rule.threat.technique.id == ("T1609",)


def test_a_broken_rule_is_reported_with_its_file_and_the_others_still_load(
        write_rule: Callable[..., Path], tmp_path: Path) -> None:
    write_rule(GOOD, name="a-good.yml")
    write_rule(GOOD.replace("verb: create", "verb|nosuchmodifier: create"),
               name="b-bad-modifier.yml")
    write_rule("    selection:\n        verb: create\n    condition: selection and nothing",
               name="c-bad-condition.yml")
    (tmp_path / "d-bad-yaml.yml").write_text("title: x\ndetection:\n  selection: [a\n  b: c\n")
    write_rule(GOOD, name="e-good.yml")
    loaded = load_rules([tmp_path])
    assert [rule.path.name for rule in loaded.rules if rule.path] == ["a-good.yml", "e-good.yml"]
    reasons = {error.path.name: (error.reason, error.line) for error in loaded.errors}
    assert set(reasons) == {"b-bad-modifier.yml", "c-bad-condition.yml", "d-bad-yaml.yml"}
    assert "nosuchmodifier" in reasons["b-bad-modifier.yml"][0]
    assert "nothing" in reasons["c-bad-condition.yml"][0]
    assert reasons["d-bad-yaml.yml"][0].startswith("is not valid YAML")
    assert reasons["d-bad-yaml.yml"][1] == 4
    (yaml_error,) = [error for error in loaded.errors if error.line is not None]
    assert str(yaml_error).startswith(f"{tmp_path}/d-bad-yaml.yml:4: is not valid YAML")


@pytest.mark.parametrize(("text", "reason"), [
    ("title: t\nid: 00000000-0000-4000-8000-000000000001\nlogsource: {product: kubernetes, "
     "service: audit}\ndetection:\n  keywords: [kubectl]\n  condition: keywords\n",
     "keyword (field-less) detections are not supported"),
    ("title: t\nid: 00000000-0000-4000-8000-000000000001\nlogsource: {product: windows, "
     "service: security}\ndetection:\n  sel: {EventID: 4688}\n  condition: sel\n",
     "logsource product=windows service=security is not one ContainerTrail collects"),
    ("title: t\nlogsource: {product: kubernetes, service: audit}\n"
     "detection:\n  sel: {verb: get}\n  condition: sel\n", "has neither an id nor a name"),
    ("title: t\nid: not-a-uuid\nlogsource: {product: kubernetes, service: audit}\n"
     "detection:\n  sel: {verb: get}\n  condition: sel\n", "identifier must be an UUID"),
    ("title: t\nname: X-1\nlogsource: {product: kubernetes, service: audit}\n"
     "detection:\n  sel: {verb: get}\n  condition: sel\nseverity_in_production: urgent\n",
     "severity_in_production 'urgent' is not a Sigma level"),
    ("title: t\nname: X-1\nlogsource: {product: kubernetes, service: audit}\n"
     "detection:\n  sel: {verb: get}\n  condition: sel\ndedup_field: user.name\n"
     "dedup_window: soon\n", "dedup_window 'soon' is not a timespan"),
    ("title: t\nname: X-1\nlogsource: {product: kubernetes, service: audit}\n"
     "detection:\n  sel: {verb: get}\n  condition: sel\ndedup_window: 5m\n",
     "dedup_window needs dedup_field"),
    ("title: t\nname: X-1\nlogsource: {product: kubernetes, service: audit}\n"
     "detection:\n  sel: {verb: get}\n  condition: sel\ndedup_field: [user.name, 3]\n",
     "dedup_field must be a field name or a list of them"),
    ("- just\n- a list\n", "document 1 is not a mapping"),
])
def test_rules_the_matcher_cannot_run_are_reported(tmp_path: Path, text: str, reason: str) -> None:
    (tmp_path / "rule.yml").write_text(text)
    loaded = load_rules([tmp_path / "rule.yml"])
    assert loaded.rules == ()
    assert [error.path for error in loaded.errors] == [tmp_path / "rule.yml"]
    assert reason in loaded.errors[0].reason


def test_a_second_rule_with_the_same_id_is_reported(write_rule: Callable[..., Path],
                                                    tmp_path: Path) -> None:
    first = write_rule(GOOD, name="first.yml")
    (tmp_path / "second.yml").write_text(first.read_text())
    loaded = load_rules([tmp_path])
    assert [rule.path for rule in loaded.rules] == [first]
    assert loaded.errors[0].reason == f"rule id TEST-001 is already used by {first}"


def test_a_missing_rule_path_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rule path .*nowhere does not exist"):
        load_rules([tmp_path / "nowhere"])


def test_the_pipeline_prefixes_audit_fields_only_for_the_audit_logsource() -> None:
    collection = SigmaCollection.from_yaml(
        "title: a\nlogsource: {product: kubernetes, service: audit}\n"
        "detection:\n  sel: {verb: get, objectRef.resource: pods, kubernetes.audit.stage: x}\n"
        "  condition: sel\n---\n"
        "title: b\nlogsource: {product: windows, service: security}\n"
        "detection:\n  sel: {verb: get}\n  condition: sel\n")
    pipeline = containertrail_pipeline()
    fields = []
    for rule in collection.rules:
        assert isinstance(rule, SigmaRule)
        pipeline.apply(rule)
        tree = rule.detection.parsed_condition[0].parsed
        fields.append([leaf.field for leaf in getattr(tree, "args", [tree])
                       if isinstance(leaf, ConditionFieldEqualsValueExpression)])
    assert fields == [["kubernetes.audit.verb", "kubernetes.audit.objectRef.resource",
                       "kubernetes.audit.stage"], ["verb"]]
