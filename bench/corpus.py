"""A large, realistic Kubernetes audit stream: 99% benign cluster traffic, 1% attacks.

Benign (99%): the rows of the real benign Helm audit log (PerfSPEC dataset,
../shared/data/real/k8s-audit-benign-helm-dataset, a CSV flattened by Logstash with 15 columns),
each rebuilt into the audit.k8s.io/v1 `Event` that kube-apiserver writes at Metadata level:
kind, apiVersion, level, auditID, stage, requestURI, verb, user{username, groups}, sourceIPs,
userAgent, objectRef{resource, namespace, name, apiGroup, apiVersion, subresource} (resource
requests only; the namespace and the group/version come from the requestURI),
responseStatus{metadata, code, and status/reason/message on failures}, the two timestamps, and
the two authorization annotations every API server adds. The columns the CSV dropped (groups,
sourceIPs, userAgent, the RBAC reason) are filled in from the username the way a kubeadm
cluster (v1.26, flannel, three nodes) would have them. Rows keep their real order, so the
watch/lease/discovery rhythm of a real control plane is kept; a ResponseStarted/ResponseComplete
pair keeps one auditID.

Attacks (1%, one at a seeded position in every block of 100): the audit events of Falco's
k8saudit regression traces (../shared/data/real/falco-k8saudit-traces/trace_files, else the
bundled copy in samples/k8s-audit), unchanged but for a fresh auditID and fresh times.

Everything is deterministic (seeded): the same count gives the same bytes. Every line is a
distinct event. CTRAIL_SHARED_DATA points at another copy of the shared data.

    write_audit_log(path, count) -> bytes written   (an audit log file, one Event a line)
    Corpus().event(at, webhook=False) -> dict       (the next event, stamped `at`; webhook=True
                                                     leaves out kind/apiVersion, as the API
                                                     server's webhook backend sends items)
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import uuid
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import orjson

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CTRAIL_SHARED_DATA", REPO.parent / "shared" / "data" / "real"))
HELM_CSV = SHARED / "k8s-audit-benign-helm-dataset" / "audit-logs.csv"
TRACES = SHARED / "falco-k8saudit-traces" / "trace_files"
SAMPLES = REPO / "samples" / "k8s-audit"
START = datetime(2026, 11, 1, tzinfo=timezone.utc)
STEP = timedelta(milliseconds=1)            # write_audit_log: one event a millisecond
SEED = 20261101
ATTACK_EVERY = 100                          # one attack event in every block of this many

# The CSV's columns (the authors' logstash.conf).
(HOST, RECEIVED, USERNAME, VERB, RESOURCE, SUBRESOURCE, NAME, RESPONSE_NAME, REQUEST_URI,
 AUDIT_ID, STAGE, CODE) = range(12)
COLUMNS = 15

K8S_VERSION = "v1.26.1"
K8S_BUILD = "kubernetes/8f94681"
NODES = {"k8s-master-perfspec": "10.10.0.10", "k8s-node-1-perfspec": "10.10.0.11",
         "k8s-node-2-perfspec": "10.10.0.12"}
MASTER_IP = NODES["k8s-master-perfspec"]
ADMIN_IP = "10.10.0.1"                      # the workstation that ran helm
SYSTEM_NAMESPACE_SA_CLIENTS = {"kube-proxy", "coredns"}   # kube-system SAs that are not controllers
REASONS = {404: "NotFound", 403: "Forbidden", 409: "Conflict", 503: "ServiceUnavailable",
           401: "Unauthorized", 422: "Invalid", 500: "InternalError"}


def templates() -> list[dict]:  # type: ignore[type-arg]
    """The bundled real samples (samples/k8s-audit), one dict per audit Event."""
    return _events_in(sorted(SAMPLES.glob("*.json")))


def _events_in(paths: list[Path]) -> list[dict]:  # type: ignore[type-arg]
    events = []
    for path in paths:
        for line in path.read_bytes().splitlines():
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict) and doc.get("kind") == "Event":
                events.append(doc)
    return events


def attack_templates() -> list[dict]:  # type: ignore[type-arg]
    """The audit events of Falco's k8saudit regression traces (fal_01_003, `{"kind": 0}`, is
    not an Event and is left out)."""
    folder = TRACES if TRACES.is_dir() else SAMPLES
    events = _events_in(sorted(folder.glob("*.json")))
    if not events:
        raise FileNotFoundError(f"no audit events under {folder}")
    return events


def helm_rows() -> list[list[str]]:
    """The benign CSV's complete rows (its last row is cut short upstream and left out)."""
    if not HELM_CSV.is_file():
        raise FileNotFoundError(f"{HELM_CSV} not found (set CTRAIL_SHARED_DATA)")
    with open(HELM_CSV, newline="") as handle:
        return [row for row in csv.reader(handle) if len(row) == COLUMNS]


# ── a benign row rebuilt into the Event kube-apiserver wrote ─────────────────────────────────

def _pod_ip(name: str) -> str:
    """A stable flannel pod address (10.244.N.M) for a service account's workload."""
    h = zlib.crc32(name.encode())
    return f"10.244.{h % 3}.{2 + (h >> 8) % 250}"


def identity(username: str) -> tuple[list[str], list[str], str, str]:
    """(groups, sourceIPs, userAgent, RBAC reason) of a kubeadm cluster's caller."""
    go = f"{K8S_VERSION} (linux/amd64) {K8S_BUILD}"
    if username == "kubernetes-admin":                 # kubeadm's admin.conf: O=system:masters
        return ["system:masters", "system:authenticated"], [ADMIN_IP], "Helm/3.11.0", ""
    if username == "system:apiserver":                 # the loopback client
        return ["system:masters"], ["::1"], f"kube-apiserver/{go}", ""
    if username == "system:anonymous":                 # probes of /readyz, /livez, /version
        return (["system:unauthenticated"], [MASTER_IP], "kube-probe/1.26",
                'RBAC: allowed by ClusterRoleBinding "system:public-info-viewer" of ClusterRole '
                '"system:public-info-viewer" to Group "system:unauthenticated"')
    if username.startswith("system:node:"):
        node = username.removeprefix("system:node:")
        return (["system:nodes", "system:authenticated"], [NODES.get(node, MASTER_IP)],
                f"kubelet/{go}", "")
    if username in ("system:kube-controller-manager", "system:kube-scheduler"):
        binary = username.removeprefix("system:")
        return (["system:authenticated"], [MASTER_IP], f"{binary}/{go}/leader-election",
                f'RBAC: allowed by ClusterRoleBinding "{username}" of ClusterRole "{username}" '
                f'to User "{username}"')
    if username.startswith("system:serviceaccount:"):
        namespace, name = username.removeprefix("system:serviceaccount:").split(":", 1)
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                  "system:authenticated"]
        if namespace == "kube-system" and name not in SYSTEM_NAMESPACE_SA_CLIENTS:
            # kube-controller-manager's per-controller clients
            return (groups, [MASTER_IP], f"kube-controller-manager/{go}/{username}",
                    f'RBAC: allowed by ClusterRoleBinding "system:controller:{name}" of '
                    f'ClusterRole "system:controller:{name}" to ServiceAccount '
                    f'"{name}/{namespace}"')
        agent = ("kube-proxy/" + go if name == "kube-proxy"
                 else f"{name}/v0.0.0 (linux/amd64) kubernetes/$Format")
        return (groups, [_pod_ip(username)], agent,
                f'RBAC: allowed by ClusterRoleBinding "{name}" of ClusterRole "{name}" to '
                f'ServiceAccount "{name}/{namespace}"')
    return ["system:authenticated"], [ADMIN_IP], f"kubectl/{go}", ""


def object_ref(row: list[str]) -> dict[str, str] | None:
    """objectRef for a resource request (None for /readyz, discovery and other non-resource
    URLs), with the namespace, group and version recovered from the requestURI."""
    resource = row[RESOURCE]
    if not resource:
        return None
    parts = [p for p in urlsplit(row[REQUEST_URI]).path.split("/") if p]
    group, version, rest = "", "", parts
    if parts[:1] == ["api"] and len(parts) >= 2:
        version, rest = parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    namespace = ""
    if len(rest) >= 2 and rest[0] == "namespaces" and (len(rest) >= 3 or resource == "namespaces"):
        namespace = rest[1]
    ref = {"resource": resource}
    if namespace:
        ref["namespace"] = namespace
    if row[NAME]:
        ref["name"] = row[NAME]
    if group:
        ref["apiGroup"] = group
    if version:
        ref["apiVersion"] = version
    if row[SUBRESOURCE]:
        ref["subresource"] = row[SUBRESOURCE]
    return ref


def response_status(row: list[str], ref: dict[str, str] | None) -> dict[str, Any]:
    code = int(row[CODE])
    if code < 400:
        return {"metadata": {}, "code": code}
    resource = (ref or {}).get("resource", "")
    name = (ref or {}).get("name", "")
    reason = REASONS.get(code, "Unknown")
    if code == 404:
        message = f'{resource} "{name}" not found'
    elif code == 403:
        where = f' in the namespace "{ref["namespace"]}"' if ref and "namespace" in ref else ""
        scope = "" if where else " at the cluster scope"
        subject = f'{resource} "{name}"' if name else resource
        message = (f'{subject} is forbidden: User "{row[USERNAME]}" cannot '
                   f'{row[VERB]} resource "{resource}" in API group '
                   f'"{(ref or {}).get("apiGroup", "")}"{where}{scope}')
    elif code == 409 and row[VERB] == "create":
        reason, message = "AlreadyExists", f'{resource} "{name}" already exists'
    elif code == 409:
        message = (f'Operation cannot be fulfilled on {resource} "{name}": the object has been '
                   "modified; please apply your changes to the latest version and try again")
    else:
        message = "the server is currently unable to handle the request"
    status: dict[str, Any] = {"metadata": {}, "status": "Failure", "message": message,
                              "reason": reason}
    if name and code in (404, 409):
        status["details"] = {"name": name, "kind": resource}
    status["code"] = code
    return status


def stage_latency(row: list[str], rng: random.Random) -> timedelta:
    """How long after requestReceivedTimestamp the stage was logged: a few ms, and the whole
    watch for a watch's ResponseComplete (its timeoutSeconds)."""
    if row[VERB] == "watch" and row[STAGE] == "ResponseComplete":
        seconds = parse_qs(urlsplit(row[REQUEST_URI]).query).get("timeoutSeconds", ["300"])[0]
        return timedelta(seconds=int(seconds) if seconds.isdigit() else 300)
    return timedelta(microseconds=int(rng.lognormvariate(7.5, 0.8)))   # ~1.8 ms median


def benign_template(row: list[str]) -> dict[str, Any]:
    """The Event of a CSV row, without auditID and times (stamped per use)."""
    groups, ips, agent, reason = identity(row[USERNAME])
    ref = object_ref(row)
    code = int(row[CODE])
    decision = "forbid" if code == 403 else "allow"     # an authorizer's 403 is a forbid
    doc: dict[str, Any] = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
                           "auditID": "", "stage": row[STAGE], "requestURI": row[REQUEST_URI],
                           "verb": row[VERB],
                           "user": {"username": row[USERNAME], "groups": groups},
                           "sourceIPs": ips, "userAgent": agent}
    if ref is not None:
        doc["objectRef"] = ref
    doc["responseStatus"] = response_status(row, ref)
    doc["requestReceivedTimestamp"] = doc["stageTimestamp"] = ""
    doc["annotations"] = {"authorization.k8s.io/decision": decision,
                          "authorization.k8s.io/reason": "" if decision == "forbid" else reason}
    return doc


def _time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ── the stream ───────────────────────────────────────────────────────────────────────────────

class Corpus:
    """The event stream: call `event(at)` for each next event."""

    def __init__(self, seed: int = SEED, attack_every: int = ATTACK_EVERY) -> None:
        self.rng = random.Random(seed)
        rows = helm_rows()
        self.benign = [benign_template(row) for row in rows]
        self.original_ids = [row[AUDIT_ID] for row in rows]
        self.latency = [stage_latency(row, self.rng) for row in rows]
        self.attacks = attack_templates()
        self.attack_every = attack_every
        self.seed = seed
        self.index = 0             # events produced
        self.benign_index = 0      # benign rows used
        self.attack_at = 0         # the attack's position in the current block

    def event(self, at: datetime, webhook: bool = False) -> dict[str, Any]:
        """The next event, received at `at`; webhook=True drops kind and apiVersion."""
        i = self.index
        self.index += 1
        if i % self.attack_every == 0:
            self.attack_at = self.rng.randrange(self.attack_every)
        if i % self.attack_every == self.attack_at:
            doc = self._attack(at)
        else:
            doc = self._benign(at)
        if webhook:
            doc.pop("kind", None)
            doc.pop("apiVersion", None)
        return doc

    def _benign(self, at: datetime) -> dict[str, Any]:
        j = self.benign_index
        self.benign_index += 1
        row, cycle = j % len(self.benign), j // len(self.benign)
        doc = dict(self.benign[row])
        # Fresh per pass over the CSV, and one id for a request's two stages.
        digest = hashlib.blake2b(f"{self.seed}:{cycle}:{self.original_ids[row]}".encode(),
                                 digest_size=16).digest()
        doc["auditID"] = str(uuid.UUID(bytes=digest, version=4))
        doc["requestReceivedTimestamp"] = _time(at)
        doc["stageTimestamp"] = _time(at + self.latency[row])
        return doc

    def _attack(self, at: datetime) -> dict[str, Any]:
        doc = dict(self.rng.choice(self.attacks))
        doc["auditID"] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        doc["requestReceivedTimestamp"] = _time(at)
        doc["stageTimestamp"] = _time(at + timedelta(microseconds=self.rng.randrange(300, 40_000)))
        if "timestamp" in doc:                      # audit.k8s.io/v1beta1
            doc["timestamp"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(doc.get("metadata"), dict) and "creationTimestamp" in doc["metadata"]:
            doc["metadata"] = {**doc["metadata"],
                               "creationTimestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ")}
        return doc


def events(count: int, start: datetime = START, step: timedelta = STEP,
           seed: int = SEED) -> Iterator[dict[str, Any]]:
    """`count` events, the i-th received at start + i*step."""
    corpus = Corpus(seed)
    for i in range(count):
        yield corpus.event(start + i * step)


def write_audit_log(path: Path, count: int) -> int:
    """Write `count` audit events, one a line (as kube-apiserver's log backend does); returns
    the bytes written."""
    written = 0
    with open(path, "wb") as out:
        lines: list[bytes] = []
        for doc in events(count):
            lines.append(orjson.dumps(doc))
            if len(lines) == 4096:
                written += out.write(b"\n".join(lines) + b"\n")
                lines = []
        if lines:
            written += out.write(b"\n".join(lines) + b"\n")
    return written


def write_sample_log(path: Path, count: int) -> int:
    """The bundled attack samples (samples/k8s-audit) cycled, each line with an auditID of its
    own and a time one millisecond after the previous one: what tests that count requests and
    alerts per line rely on (write_audit_log is the realistic mix, with request pairs)."""
    shapes = templates()
    with open(path, "wb") as out:
        for i in range(count):
            doc = dict(shapes[i % len(shapes)])
            doc["auditID"] = str(uuid.UUID(int=i))
            doc["requestReceivedTimestamp"] = doc["stageTimestamp"] = _time(
                START + timedelta(milliseconds=i))
            out.write(orjson.dumps(doc) + b"\n")
    return path.stat().st_size
