"""Derived fields, configuration placeholders, non-audit logsources and list fields of the event
model: the matcher features the ContainerTrail pack relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import orjson
import pytest

from collector.parsers.distribution import DistributionParser
from collector.parsers.docker_event import DockerEventParser
from ctrail.components import RawRecord
from ctrail.event import Event
from detector_support import NOW, audit_event, exec_audit
from detectors.derived import (
    PREVIOUS_DIGEST,
    DerivedContext,
    TagHistory,
    image_registry,
    root_containers,
)
from detectors.matcher import EventView
from detectors.sigma_rules import load_rules

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
PLACEHOLDER_RULE = ("    selection:\n        verb: create\n"
                    "    filter:\n        user.username|expand: '%ci_actors%'\n"
                    "    condition: selection and not filter")


def pod_event(spec: dict[str, Any], resource: str = "pods") -> Any:
    body = {"spec": spec} if resource == "pods" else {"spec": {"template": {"spec": spec}}}
    return audit_event(exec_audit(objectRef={"resource": resource, "namespace": "shop"},
                                  requestObject=body))


@pytest.mark.parametrize(("actors", "expected"), [
    ([], True), (["alice@example.com"], False), (["ALICE@*"], False), (["bob", "carol"], True)])
def test_a_placeholder_is_the_configured_list(write_rule: Callable[..., Path],
                                              actors: list[str], expected: bool) -> None:
    loaded = load_rules([write_rule(PLACEHOLDER_RULE)], {"ci_actors": actors})
    assert loaded.errors == ()
    assert loaded.rules[0].matches(EventView(audit_event(exec_audit()))) is expected


def test_an_unknown_placeholder_is_a_load_error(write_rule: Callable[..., Path]) -> None:
    loaded = load_rules([write_rule(PLACEHOLDER_RULE.replace("ci_actors", "admins"))])
    assert loaded.rules == () and "placeholder %admins%" in loaded.errors[0].reason


def test_derived_fields_look_into_every_pod_spec(write_rule: Callable[..., Path]) -> None:
    (rule,) = load_rules([write_rule(
        "    sel:\n        derived.k8s.containers.securityContext.privileged: true\n"
        "    condition: sel")]).rules
    privileged = {"initContainers": [{"name": "i", "securityContext": {"privileged": True}}],
                  "containers": [{"name": "c"}]}
    assert rule.matches(EventView(pod_event(privileged)))
    assert rule.matches(EventView(pod_event(privileged, "deployments")))
    assert not rule.matches(EventView(pod_event({"containers": [{"name": "c"}]})))


def test_an_unknown_derived_field_is_a_load_error(write_rule: Callable[..., Path]) -> None:
    loaded = load_rules([write_rule("    sel:\n        derived.k8s.nope: x\n    condition: sel")])
    assert loaded.rules == () and "derived.k8s.nope is not a derived field" in \
        loaded.errors[0].reason


@pytest.mark.parametrize(("spec", "expected"), [
    ({"containers": [{"name": "a"}]}, ["a"]),
    ({"securityContext": {"runAsNonRoot": True}, "containers": [{"name": "a"}]}, []),
    ({"securityContext": {"runAsUser": 1000}, "containers": [{"name": "a"}]}, []),
    ({"securityContext": {"runAsNonRoot": True},
      "containers": [{"name": "a", "securityContext": {"runAsUser": 0}}]}, ["a"]),
    ({"securityContext": {"runAsUser": 0},
      "containers": [{"name": "a", "securityContext": {"runAsNonRoot": True}}]}, ["a"]),
    ({"containers": [{"name": "a", "securityContext": {"runAsNonRoot": False,
                                                       "runAsUser": 5}}]}, []),
])
def test_who_may_run_as_root(spec: dict[str, Any], expected: list[str]) -> None:
    event = pod_event(spec)
    assert root_containers(event, event.kubernetes.audit if event.kubernetes else None,
                           DerivedContext()) == expected


@pytest.mark.parametrize(("image", "registry"), [
    ("nginx", "docker.io"), ("library/nginx:1", "docker.io"), ("quay.io/a/b:1", "quay.io"),
    ("localhost/x", "localhost"),
    ("Registry.Corp.Example:5000/x@sha256:ab", "registry.corp.example:5000")])
def test_image_registry(image: str, registry: str) -> None:
    assert image_registry(image) == registry


def registry_push(tag: str, digest: str) -> Event:
    envelope = {"events": [{"id": f"{tag}-{digest}", "action": "push",
                            "timestamp": "2026-11-20T10:00:00Z",
                            "target": {"mediaType": MANIFEST, "digest": digest,
                                       "repository": "shop/web", "tag": tag},
                            "request": {"host": "registry.corp.example"}}]}
    (event,) = DistributionParser().parse(RawRecord(orjson.dumps(envelope), "t", NOW))
    return event


def test_tag_history_reports_a_changed_digest_and_is_bounded() -> None:
    history = TagHistory(max_tags=1)
    assert history.observe(registry_push("v1", "sha256:1")) == {}
    assert history.observe(registry_push("v1", "sha256:1")) == {}
    assert history.observe(registry_push("v1", "sha256:2")) == {PREVIOUS_DIGEST: ["sha256:1"]}
    assert history.observe(registry_push("v2", "sha256:3")) == {}
    assert history.observe(registry_push("v1", "sha256:9")) == {}     # v1 was forgotten


def test_tuple_fields_of_the_event_model_are_searched(tmp_path: Path) -> None:
    (tmp_path / "d.yml").write_text(
        "title: t\nname: D-1\nlogsource: {product: docker}\n"
        "detection:\n  sel: {container.image.tag: '3.20'}\n  condition: sel\n")
    (rule,) = load_rules([tmp_path]).rules
    start = {"Type": "container", "Action": "start", "time": 1,
             "Actor": {"ID": "c1", "Attributes": {"image": "alpine:3.20"}}}
    (event,) = DockerEventParser().parse(RawRecord(orjson.dumps(start), "t", NOW))
    assert event.container and event.container.image and event.container.image.tag == ("3.20",)
    assert rule.matches(EventView(event))


def test_a_registry_logsource_covers_both_registries(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(
        "title: t\nname: R-1\nlogsource: {product: container_registry}\n"
        "detection:\n  sel: {event.action: delete}\n  condition: sel\n")
    (tmp_path / "h.yml").write_text(
        "title: h\nname: H-1\nlogsource: {product: container_registry, service: harbor}\n"
        "detection:\n  sel: {event.action: delete}\n  condition: sel\n")
    rules = load_rules([tmp_path])
    assert {k: [r.id for r in v] for k, v in rules.by_dataset.items()} == {
        "registry.harbor": ["H-1", "R-1"], "registry.distribution": ["R-1"]}
