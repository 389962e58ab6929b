"""The catalog's graph-joined correlation rules (CT-COR-001, 005, 007, 008), each with a positive
and a negative scenario: raw records through the real parsers, the entity-graph enricher
(EnrichConfig().build()), the rule pack's detector and the correlation windows, as the
pipeline's enrich, detect and correlate stages run them."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, Iterable

import orjson

from collector.parsers.distribution import DistributionParser
from collector.parsers.docker_event import DockerEventParser
from collector.parsers.falco import FalcoParser
from correlation_support import T0, at
from ctrail.components import RawRecord
from ctrail.event import Alert, Event
from detector_support import NOW, audit_event, exec_audit
from detectors import SigmaDetectorConfig
from detectors.window_state import CorrelationEngine
from enrich import EnrichConfig

CID = "c0ffee" * 10 + "abcd"                     # a full 64-character container id
OTHER_CID = "beef00" * 10 + "abcd"
DIGEST = "sha256:" + "d1" * 32
TRUSTED = "registry.corp.example"
IMAGE = f"{TRUSTED}/team/api"


def record(doc: dict[str, Any]) -> RawRecord:
    return RawRecord(orjson.dumps(doc), "test:1", NOW)


def seconds(minutes: float) -> int:
    return int((T0 + timedelta(minutes=minutes)).timestamp())


def push(minutes: float, actor: str = "mallory", digest: str = DIGEST, tag: str = "1.4",
         host: str = TRUSTED) -> Event:
    """A manifest push, as Docker Distribution notifies it."""
    envelope = {"events": [{
        "id": str(uuid.uuid4()), "timestamp": at(minutes), "action": "push",
        "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                   "digest": digest, "size": 1, "length": 1, "repository": "team/api",
                   "url": f"https://{host}/v2/team/api/manifests/{digest}", "tag": tag},
        "request": {"id": "r", "addr": "203.0.113.9", "host": host, "method": "PUT",
                    "useragent": "docker/27.0"},
        "actor": {"name": actor}, "source": {"addr": "registry-0:5000"}}]}
    (event,) = DistributionParser().parse(record(envelope))
    return event


def pod_create(minutes: float, image: str = f"{IMAGE}:1.4", user: str = "alice@example.com",
               name: str = "api", owner: dict[str, Any] | None = None) -> Event:
    """A pod create through the API, with its spec (audit level Request or more)."""
    meta: dict[str, Any] = {"name": name, "namespace": "shop", "uid": str(uuid.uuid4())}
    if owner is not None:
        meta["ownerReferences"] = [{"controller": True, **owner}]
    pod = {"kind": "Pod", "apiVersion": "v1", "metadata": meta,
           "spec": {"containers": [{"name": "api", "image": image}]}}
    body = exec_audit(auditID=str(uuid.uuid4()), requestReceivedTimestamp=at(minutes),
                      stageTimestamp=at(minutes), verb="create", stage="ResponseComplete",
                      level="RequestResponse", requestURI="/api/v1/namespaces/shop/pods",
                      objectRef={"resource": "pods", "namespace": "shop", "name": name,
                                 "apiVersion": "v1"},
                      requestObject=pod, responseObject=pod,
                      responseStatus={"metadata": {}, "code": 201})
    body["user"] = {"username": user, "groups": ["system:authenticated"]}
    return audit_event(body)


def docker(minutes: float, action: str, container_id: str = CID, image: str = f"{IMAGE}:1.4",
           digests: Iterable[str] = (DIGEST,), pod: str = "api") -> Event:
    """A Docker container event as the docker_events source writes it (with inspect)."""
    attributes = {"image": image, "name": f"k8s_api_{pod}", "io.kubernetes.pod.name": pod,
                  "io.kubernetes.pod.namespace": "shop", "io.kubernetes.container.name": "api"}
    event = {"Type": "container", "Action": action, "scope": "local",
             "Actor": {"ID": container_id, "Attributes": attributes},
             "time": seconds(minutes), "timeNano": seconds(minutes) * 10**9}
    repo = image.rsplit(":", 1)[0]
    wrapper = {"event": event, "inspect": {"Id": container_id, "Config": {"Image": image}},
               "image": {"RepoDigests": [f"{repo}@{d}" for d in digests]}}
    (parsed,) = DockerEventParser().parse(record(wrapper))
    return parsed


def falco(minutes: float, container_id: str = CID, pod: str = "api",
          rule: str = "Terminal shell in container", tags: tuple[str, ...] = ("shell",)) -> Event:
    """A Falco alert about a process in a container (Falco prints the 12-character id)."""
    alert = {"hostname": "node-1", "priority": "Notice", "rule": rule, "source": "syscall",
             "output": f"{rule} (container_id={container_id[:12]})", "tags": list(tags),
             "time": at(minutes),
             "output_fields": {"container.id": container_id[:12], "k8s.ns.name": "shop",
                               "k8s.pod.name": pod, "proc.name": "sh", "user.name": "root"}}
    (event,) = FalcoParser().parse(record(alert))
    return event


class Scenario:
    """enrich -> detect (alerts, candidates) -> correlate, over one shared entity graph."""

    def __init__(self, **config: Any) -> None:
        self.enricher = EnrichConfig().build(clock=lambda: T0.timestamp())
        self.detector = SigmaDetectorConfig(**config).build()
        self.engine = CorrelationEngine(self.detector.correlations.rules, 60,
                                        clock=lambda: 0.0)
        self.enriched: list[Event] = []

    def feed(self, events: Iterable[Event]) -> list[Alert]:
        out: list[Alert] = []
        for event in events:
            event = self.enricher.enrich(event)
            self.enriched.append(event)
            alerts, candidates = self.detector.detect(event)
            out.extend(alerts)
            for candidate in candidates:
                out.extend(self.engine.observe(candidate))
        return out


def fired(events: Iterable[Event], rule_id: str, **config: Any) -> list[Alert]:
    return [a for a in Scenario(**config).feed(events) if a.rule.id == rule_id]


def test_the_graph_rules_load_and_their_base_rules_stay_silent() -> None:
    detector = SigmaDetectorConfig().build()
    assert detector.correlations.errors == () and detector.rules.errors == ()
    assert {"CT-COR-001", "CT-COR-008"} <= {r.id for r in detector.correlations.rules}
    assert {"CT-COR-005", "CT-COR-007"} <= {r.id for r in detector.rules.rules}
    assert {"CT-COR-BASE-NON-CI-PUSH", "CT-COR-BASE-POD-CREATE", "CT-COR-BASE-CONTAINER-START",
            "CT-COR-BASE-RUNTIME-ALERT", "CT-COR-BASE-CONTAINER-DIE"} <= detector.silent
    # The catalog rules the new ones restate keep alerting on their own.
    assert not {"CT-REG-001", "CT-RT-001"} & detector.silent


# ── CT-COR-001: non-CI push, then a pod running that digest within 30 min ─────────────────

def test_cor_001_push_by_a_person_then_a_pod_of_that_tag() -> None:
    scenario = Scenario(ci_actors=["ci-bot"])
    alerts = scenario.feed([push(0), pod_create(12)])
    (alert,) = [a for a in alerts if a.rule.id == "CT-COR-001"]
    assert alert.alert.severity == "high" and alert.alert.count == 2
    assert alert.alert.group_key == f"CT-COR-001|{DIGEST}"
    # The join went through the graph: the pod create carries the tag's digest.
    pod = scenario.enriched[-1]
    assert pod.container is not None and pod.container.image is not None
    assert pod.container.image.hash is not None and pod.container.image.hash.all == (DIGEST,)
    assert "CT-REG-001" in {a.rule.id for a in alerts}       # still alerts on its own
    # A digest-pinned pod joins the same way.
    assert len(fired([push(0), pod_create(5, image=f"{IMAGE}@{DIGEST}")], "CT-COR-001",
                     ci_actors=["ci-bot"])) == 1


def test_cor_001_not_for_ci_pushes_other_digests_late_pods_or_the_wrong_order() -> None:
    assert fired([push(0, actor="ci-bot"), pod_create(5)], "CT-COR-001",
                 ci_actors=["ci-bot"]) == []
    other = "sha256:" + "e2" * 32
    assert fired([push(0), pod_create(5, image=f"{IMAGE}@{other}")], "CT-COR-001") == []
    assert fired([push(0), pod_create(31)], "CT-COR-001") == []
    # A pod created before the push (its tag then pointed nowhere we know) is not a join:
    # the graph later resolves that tag to this digest, but the order is push then pod.
    assert fired([pod_create(0, image=f"{IMAGE}@{DIGEST}"), push(1)], "CT-COR-001") == []


# ── CT-COR-005: a container running a digest never pushed to a trusted registry ──────────

def test_cor_005_unknown_digest_fires_once_per_digest() -> None:
    scenario = Scenario(trusted_registries=[TRUSTED])
    alerts = [a for a in scenario.feed([docker(0, "start"), docker(1, "start", OTHER_CID),
                                        docker(2, "die")])
              if a.rule.id == "CT-COR-005"]
    # Two containers of the same digest: one alert id, one group key (store and suppression
    # keep one); the die event is not a start.
    assert len(alerts) == 2 and len({a.event.id for a in alerts}) == 1
    assert {a.alert.group_key for a in alerts} == {f"CT-COR-005|{DIGEST}"}
    assert alerts[0].alert.severity == "medium"
    # Pushed, but the image is named from a registry outside the list: still unknown.
    untrusted = "mirror.example.net/team/api"
    assert len(fired([push(0, host="mirror.example.net"),
                      docker(1, "start", image=f"{untrusted}:1.4")], "CT-COR-005",
                     trusted_registries=[TRUSTED])) == 1


def test_cor_005_not_for_a_digest_pushed_to_a_trusted_registry_nor_without_the_list() -> None:
    scenario = Scenario(trusted_registries=[TRUSTED])
    assert [a for a in scenario.feed([push(0), docker(1, "start")])
            if a.rule.id == "CT-COR-005"] == []
    started = scenario.enriched[-1]
    assert started.containertrail is not None and started.containertrail.image_pushed_by
    assert started.containertrail.image_pushed_by.name == "mallory"
    # No trusted registry configured: no provenance is trusted, and the rule stays silent.
    assert fired([docker(0, "start")], "CT-COR-005") == []
    # No digest known for the container: nothing to judge.
    assert fired([docker(0, "start", digests=())], "CT-COR-005",
                 trusted_registries=[TRUSTED]) == []


# ── CT-COR-007: a shell in a container of a pod a person created directly ─────────────────

def test_cor_007_shell_in_a_bare_pod_created_by_a_person() -> None:
    scenario = Scenario()
    alerts = scenario.feed([pod_create(0, name="debug"), falco(2, pod="debug")])
    (alert,) = [a for a in alerts if a.rule.id == "CT-COR-007"]
    assert alert.alert.severity == "high"
    shell = scenario.enriched[-1]
    assert shell.containertrail is not None and shell.containertrail.deployed_by is not None
    assert shell.containertrail.deployed_by.name == "alice@example.com"
    assert shell.containertrail.workload is None
    # Falco's other shell rules, by tag.
    assert len(fired([pod_create(0, name="debug"),
                      falco(1, pod="debug", rule="Run shell untrusted")], "CT-COR-007")) == 1


def test_cor_007_not_for_controller_pods_system_creators_unknown_pods_or_other_rules() -> None:
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-5d9c", "uid": "u"}
    assert fired([pod_create(0, user="system:serviceaccount:kube-system:replicaset-controller",
                             owner=owner), falco(1)], "CT-COR-007") == []
    # A person's pod, but owned by a controller (a Job they wrote a pod for, say): managed.
    assert fired([pod_create(0, owner=owner), falco(1)], "CT-COR-007") == []
    assert fired([pod_create(0, user="system:node:node-1"), falco(1)], "CT-COR-007") == []
    assert fired([falco(1)], "CT-COR-007") == []                       # pod never seen
    assert fired([pod_create(0), falco(1, rule="Write below etc", tags=("filesystem",))],
                 "CT-COR-007") == []


# ── CT-COR-008: a container that lived < 60 s and raised a runtime alert ────────────────────

def test_cor_008_start_alert_die_within_a_minute() -> None:
    scenario = Scenario()
    alerts = scenario.feed([docker(0, "start"), falco(0.3), docker(0.75, "die")])
    (alert,) = [a for a in alerts if a.rule.id == "CT-COR-008"]
    assert alert.alert.severity == "high" and alert.alert.count == 3
    assert alert.alert.group_key == f"CT-COR-008|{CID}"
    # Falco's short id became the full one at enrichment, which is what joins them.
    assert scenario.enriched[1].container is not None
    assert scenario.enriched[1].container.id == CID
    assert "CT-RT-001" in {a.rule.id for a in alerts}        # still alerts on its own


def test_cor_008_not_for_long_lives_quiet_lives_or_other_containers() -> None:
    assert fired([docker(0, "start"), falco(0.3), docker(1.5, "die")], "CT-COR-008") == []
    assert fired([docker(0, "start"), docker(0.5, "die")], "CT-COR-008") == []
    assert fired([docker(0, "start"), docker(0.1, "start", OTHER_CID),
                  falco(0.3, OTHER_CID), docker(0.5, "die")], "CT-COR-008") == []
    # An alert after the container died is not during its life.
    assert fired([docker(0, "start"), docker(0.2, "die"), falco(0.3)], "CT-COR-008") == []
