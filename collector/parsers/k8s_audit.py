"""Kubernetes audit events (audit.k8s.io/v1 and v1beta1) to ECS Events.

Accepts what kube-apiserver writes to --audit-log-path (one Event per line), what its webhook
backend posts (an EventList), and the two managed-cluster envelopes seen in the wild: AKS
diagnostic records (`properties.log`, the Event as an object or a JSON string) and GKE Cloud Audit
Log entries (`protoPayload`). The ECS mapping follows Elastic's Kubernetes audit integration:
`user.name` from `user.username`, `source.ip` from the first `sourceIPs`, and the raw Event kept
whole under `kubernetes.audit`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, ClassVar, Final

import orjson
import re2
from pydantic import ValidationError

from collector.parsers.audit_subject import orchestrator_fields, pod_fields
from collector.parsers.common import (
    MAX_DEPTH,
    RedactingParser,
    check_depth,
    decode_text,
    load_object,
    member_spans,
    parse_time,
)
from collector.redact import PREFIX, SELF_EVIDENT, TAG as REDACTED, Redactor, hinted
from ctrail.components import RawRecord
from ctrail.ecs import DATASET_K8S_AUDIT
from ctrail.errors import InvalidInput, Reason
from ctrail.event import Event, Rejection
from ctrail.identity import event_id
from ctrail.runtime.deadletter import redacted_bytes, rejection

# What a record holds when the redactor may change it (collector.redact's policy): bodies (also
# in AKS's string-encoded `properties.log` and GKE's protoPayload), self-evident credentials in
# a user agent or annotation, or a credential-like query parameter in a request URI.
BODY_HINTS: Final = (b"requestObject", b"responseObject", b"protoPayload", b'"properties"')
# SELF_EVIDENT is an alternation of plain words. Those words and the body hints are looked for
# in one RE2 pass (its automaton tries every word at once): 2.3 us on a 0.85 KB audit line,
# against 5.1 us looking each up with `in` and 8 us for Python's re, whose alternation tries
# the words one after the other at every position.
SELF_EVIDENT_WORDS: Final = tuple(word.encode() for word in SELF_EVIDENT.pattern.split("|"))
ANY_HINT: Final = re2.compile(b"|".join(re.escape(word)
                                        for word in (*BODY_HINTS, *SELF_EVIDENT_WORDS)))
URI_KEY: Final = b'"requestURI"'
URI_QUERY: Final = re.compile(rb'"requestURI"\s*:\s*"[^"?]*\?([^"]*)"')
COLLECT_STAGE: Final = "collect"       # the stage of item dead letters (ctrail.runtime.collect)
TIMESTAMP_FIELDS: Final = ("requestReceivedTimestamp", "stageTimestamp", "timestamp")
# An AKS record is stamped with its stage time, as Elastic's integration stamps it.
AKS_TIMESTAMP_FIELDS: Final = ("stageTimestamp", "requestReceivedTimestamp", "timestamp")
# AKS envelope keys -> kubernetes.audit.aks_metadata keys, as Elastic's integration names them.
AKS_METADATA: Final = (("category", "category"), ("operationName", "operation_name"),
                       ("resourceId", "resource_id"), ("serviceBuild", "service_build"),
                       ("time", "time"))
AKS_PROPERTIES: Final = (("containerID", "container_id"), ("pod", "pod"), ("stream", "stream"))
OBJECT_FIELDS: Final = ("user", "objectRef", "responseStatus", "annotations", "impersonatedUser")
PERMISSION_DENIED: Final = 7                   # google.rpc.Code
BARE_GROUPS: Final = frozenset({"apps", "batch", "policy", "autoscaling", "extensions"})
API_VERSION: Final = re.compile(r"v\d+(?:(?:alpha|beta)\d+)?")
# google.rpc.Code (status.code of a Cloud Audit Log entry) -> the HTTP status Google maps it to
# (google/rpc/code.proto): a denial is a 403, a create of an existing object a 409.
GRPC_TO_HTTP: Final = {0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429,
                       9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401}
def unwrap_envelope(doc: dict[str, Any]) -> dict[str, Any]:
    """The audit Event inside an AKS diagnostic record or a GKE Cloud Audit Log entry."""
    if "protoPayload" in doc:
        return from_gke(doc)
    properties = doc.get("properties")
    if isinstance(properties, dict) and "log" in properties:
        inner = properties["log"]
        if isinstance(inner, str):
            text = inner
            try:
                inner = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(Reason.INVALID_JSON, f"properties.log: {exc}") from None
            check_depth(inner, text, MAX_DEPTH - 2)        # below the record and `properties`
        if not isinstance(inner, dict):
            raise InvalidInput(Reason.SCHEMA_MISMATCH, "properties.log is not an object")
        return {**inner, "aks_metadata": aks_metadata(doc, properties)}
    return doc


def aks_metadata(doc: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """What an AKS diagnostic record says beside the Event (its category, the cluster's
    resource id, the API server pod), kept as Elastic keeps it: kubernetes.audit.aks_metadata."""
    kept = {name: doc[key] for key, name in AKS_METADATA if doc.get(key) is not None}
    kept.update((name, properties[key]) for key, name in AKS_PROPERTIES
                if properties.get(key) is not None)
    return kept


def from_gke(doc: dict[str, Any]) -> dict[str, Any]:
    """GKE's Cloud Audit Log entry, re-expressed in audit.k8s.io Event fields."""
    payload = doc["protoPayload"]
    if not isinstance(payload, dict):
        raise InvalidInput(Reason.SCHEMA_MISMATCH, "protoPayload is not an object")
    method = str(payload.get("methodName", ""))          # io.k8s.core.v1.pods.create
    granted = authorizations(doc, payload)
    resource_name = str(payload.get("resourceName") or next(
        (a["resource"] for a in granted if isinstance(a.get("resource"), str)), ""))
    parts = resource_name.split("/")
    object_ref: dict[str, Any] = {}
    if not resource_name:                                 # no resource named: the method's
        object_ref, rest = ref_from_method(method), []
    elif len(parts) >= 4 and parts[2] == "namespaces":   # core/v1/namespaces/NS/pods/NAME[/sub]
        object_ref = {"apiGroup": "" if parts[0] == "core" else parts[0], "apiVersion": parts[1],
                      "namespace": parts[3], "resource": parts[4] if len(parts) > 4 else "namespaces"}
        rest = parts[5:]
    else:                                                 # cluster-scoped, or a plain path
        object_ref = {"resource": parts[2] if len(parts) > 2 else parts[0]}
        rest = parts[3:]
    if rest:
        object_ref["name"] = rest[0]
    if len(rest) > 1:
        object_ref["subresource"] = rest[1]
    metadata = payload.get("requestMetadata") or {}
    status = payload.get("status") or {}
    code = status.get("code") or 0
    # A permission the authorizer did not grant is a denial (gRPC PERMISSION_DENIED), whether
    # or not the entry carries a status.
    if not code and any(a.get("granted") is False for a in granted):
        code = PERMISSION_DENIED
    http = GRPC_TO_HTTP.get(code, 500) if isinstance(code, int) else 500
    # A response that is a Kubernetes Status of Failure says the request failed, with its code
    # when it gives one (a failure of unknown kind otherwise: 500), whatever the entry's status.
    response = payload.get("response")
    if http < 400 and isinstance(response, dict) and response.get("status") == "Failure":
        http = response["code"] if isinstance(response.get("code"), int) else 500
    # callerIp as Cloud Logging writes it; callerIP as Panther's normalised entries spell it.
    caller_ip = metadata.get("callerIp") or metadata.get("callerIP")
    # The request's id, as Elastic reads it: the operation's id, else the entry's insertId.
    audit_id = (doc.get("operation") or {}).get("id") or doc.get("insertId")
    # The bodies, as an Event at Request/RequestResponse level carries them: detection rules
    # read them, and the redactor hashes the secrets in them (event.original is then the
    # redacted Event, not the entry).
    bodies = {field: payload[key] for key, field in (("request", "requestObject"),
                                                     ("response", "responseObject"))
              if payload.get(key) is not None}
    return {
        **bodies,
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete",
        **({"auditID": str(audit_id)} if audit_id else {}),
        "verb": method.rsplit(".", 1)[-1],
        "user": {"username": (payload.get("authenticationInfo") or {}).get("principalEmail")},
        "sourceIPs": [caller_ip] if isinstance(caller_ip, str) and caller_ip else [],
        "userAgent": metadata.get("callerSuppliedUserAgent"),
        "objectRef": object_ref,
        "responseStatus": {"code": http},
        "annotations": doc.get("labels") or {},
        "requestReceivedTimestamp": doc.get("timestamp"),
        "stageTimestamp": doc.get("timestamp"),
        # The monitored resource (cluster_name, location, project_id), kept as Elastic keeps it:
        # orchestrator.cluster.name is read from it (collector.parsers.audit_subject).
        **({"resource": doc["resource"]} if isinstance(doc.get("resource"), dict) else {}),
    }


def authorizations(doc: dict[str, Any], payload: dict[str, Any]) -> list[dict[str, Any]]:
    """protoPayload.authorizationInfo (also read beside it, where Panther's minimal entries put
    it): the permissions checked, each with `granted` and the resource it names."""
    found = payload.get("authorizationInfo") or doc.get("authorizationInfo") or []
    return [a for a in found if isinstance(a, dict)] if isinstance(found, list) else []


def ref_from_method(method: str) -> dict[str, Any]:
    """objectRef from a Kubernetes method name alone (io.k8s.core.v1.pods.exec.create: the
    resource follows the version, a subresource may follow the resource, the verb is last)."""
    parts = method.split(".")
    at = next((i for i, p in enumerate(parts) if API_VERSION.fullmatch(p)), None)
    if at is None or at + 2 >= len(parts):
        return {"resource": parts[-2]} if len(parts) > 1 else {}
    group = ".".join(reversed(parts[2:at]))              # authorization.rbac -> rbac.authorization
    if group == "core":
        group = ""
    elif group not in BARE_GROUPS:                       # the built-in groups under k8s.io
        group += ".k8s.io"
    ref: dict[str, Any] = {"resource": parts[at + 1], "apiVersion": parts[at], "apiGroup": group}
    if at + 3 < len(parts):
        ref["subresource"] = parts[at + 2]
    return ref


class K8sAuditParser(RedactingParser):
    """audit.k8s.io Events (lines, EventLists, AKS and GKE envelopes) -> Events."""

    dataset: ClassVar[str] = DATASET_K8S_AUDIT

    def scrub(self, data: bytes) -> bytes:
        """The record with every secret hashed, for intake to append (nothing unredacted is
        ever written); the record itself, untouched and unparsed, when it cannot hold one (a
        Metadata-level event: most of a real cluster's log). A record that is not JSON (the parse
        step dead-letters it) is redacted as text."""
        stripped = data.strip()
        if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
            return redacted_bytes(data, self.redactor.redact_text)
        if not may_hold_secret(data):
            return data
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return redacted_bytes(data, self.redactor.redact_text)
        if not isinstance(doc, dict) or not self._redact_document(doc):
            return data
        return orjson.dumps(doc)

    def _redact_document(self, doc: dict[str, Any]) -> bool:
        """Redact `doc` in place, wherever it keeps audit Events; True when anything changed."""
        if doc.get("kind") == "EventList" and isinstance(doc.get("items"), list):
            changed = False
            for i, item in enumerate(doc["items"]):
                if isinstance(item, dict):
                    redacted = self.redactor.audit(item)
                    if redacted is not None:
                        doc["items"][i], changed = redacted, True
            return changed
        if isinstance(doc.get("protoPayload"), dict):
            return self._redact_gke(doc)
        properties = doc.get("properties")
        if isinstance(properties, dict) and "log" in properties:
            inner = properties["log"]
            as_text = isinstance(inner, str)
            try:
                inner = orjson.loads(inner) if as_text else inner
            except orjson.JSONDecodeError:
                return False
            redacted = self.redactor.audit(inner) if isinstance(inner, dict) else None
            if redacted is None:
                return False
            properties["log"] = orjson.dumps(redacted).decode() if as_text else redacted
            return True
        redacted = self.redactor.audit(doc)
        if redacted is None:
            return False
        doc.clear()
        doc.update(redacted)
        return True

    def _redact_gke(self, doc: dict[str, Any]) -> bool:
        """GKE: the entry's fields redacted as the audit Event from_gke makes of them."""
        try:
            audit = from_gke(doc)
        except InvalidInput:
            return False
        redacted = self.redactor.audit(audit)
        if redacted is None:
            return False
        payload, metadata = doc["protoPayload"], doc["protoPayload"].get("requestMetadata")
        for key, field in (("request", "requestObject"), ("response", "responseObject")):
            if field in redacted:
                payload[key] = redacted[field]
        if isinstance(metadata, dict) and redacted.get("userAgent") is not None:
            metadata["callerSuppliedUserAgent"] = redacted["userAgent"]
        if doc.get("labels"):
            doc["labels"] = redacted.get("annotations")
        return True

    def parse(self, record: RawRecord) -> list[Event | Rejection]:
        """One Event per audit Event. An EventList gives an Event per good item and a dead
        letter per bad one (that item alone: its own bytes, origin `<origin> items[i]`), so one
        bad item does not take its batch of up to 400 to the DLQ. Raises InvalidInput when the
        record as a whole is bad (not JSON, not an audit Event, items not an array)."""
        text = decode_text(record.data)
        # Bounded nesting (it must fit the bus and the store): an EventList's items are checked
        # one by one, each on its own bytes.
        doc = load_object(record.data, "audit record", depth_checked=False)
        redactor = None if record.scrubbed else self.redactor
        if doc.get("kind") == "EventList":
            return self._parse_list(doc, text, record, redactor)
        check_depth(doc, record.data)
        return [to_event(unwrap_envelope(doc), text, record.data, record.received, redactor)]

    def _parse_list(self, doc: dict[str, Any], text: str, record: RawRecord,
                    redactor: Redactor | None) -> list[Event | Rejection]:
        items = doc.get("items")
        if not isinstance(items, list):
            raise InvalidInput(Reason.SCHEMA_MISMATCH, "EventList without an items array")
        spans = member_spans(text, "items") or []
        if len(spans) != len(items):
            raise InvalidInput(Reason.SCHEMA_MISMATCH, "EventList items could not be delimited")
        out: list[Event | Rejection] = []
        for i, (item, (start, end)) in enumerate(zip(items, spans)):
            original = text[start:end]              # the item's own bytes: its id and evidence
            try:
                if not isinstance(item, dict):
                    raise InvalidInput(Reason.SCHEMA_MISMATCH, "the item is not an object")
                check_depth(item, original, MAX_DEPTH - 2)    # below the list and its items
                out.append(to_event(with_list_type(item, doc), original, original.encode(),
                                    record.received, redactor))
            except InvalidInput as exc:
                out.append(rejection(stage=COLLECT_STAGE, reason=exc.reason, detail=exc.detail,
                                     origin=f"{record.origin} items[{i}]", raw=original.encode(),
                                     dataset=DATASET_K8S_AUDIT))
        return out


def may_hold_secret(data: bytes) -> bool:
    """A cheap superset test on the raw bytes: False means the redactor would change nothing."""
    if ANY_HINT.search(data) is not None:
        return True
    at = data.find(URI_KEY)             # one per Event; an EventList has one per item
    while at >= 0:
        query = URI_QUERY.match(data, at)
        if query is not None and hinted(query.group(1)):
            return True
        at = data.find(URI_KEY, at + len(URI_KEY))
    return False


def with_list_type(item: dict[str, Any], event_list: dict[str, Any]) -> dict[str, Any]:
    """The item with the `kind` ("Event") and `apiVersion` it inherits from its EventList.

    kube-apiserver's webhook backend leaves each item's TypeMeta empty: only the list names its
    kind and version. The parsed dict (kubernetes.audit) gets them back, so an Event has the same
    `kubernetes.audit.kind`/`apiVersion` (as Elastic's integration indexes them) whether it came
    from the log file or the webhook, and rules and searches on them see both alike; the item's
    bytes stay untouched in `event.original`, and its id still hashes them. An item that names a
    kind of its own keeps it (check_shape refuses any but Event)."""
    inherited: dict[str, Any] = {}
    if item.get("kind") is None:
        inherited["kind"] = "Event"
    if item.get("apiVersion") is None and isinstance(event_list.get("apiVersion"), str):
        inherited["apiVersion"] = event_list["apiVersion"]
    # kind and apiVersion first, as in a logged Event; an explicit null is replaced too.
    return {**inherited, **item, **inherited} if inherited else item


def to_event(audit: dict[str, Any], original: str, raw: bytes, received: datetime,
             redactor: Redactor | None = None) -> Event:
    """One audit Event (a dict as decoded) to our Event. Raises InvalidInput.

    When the redactor replaced a secret, `event.original` is the redacted Event re-serialised,
    tagged `redacted`: evidence "byte for byte" cannot hold a secret the store must never hold.
    `event.id` hashes `raw`, the bytes as intake appended them (already scrubbed of secrets
    there, so they are the same at every replay)."""
    check_shape(audit)
    redacted = redactor.audit(audit, original) if redactor is not None else None
    if redacted is not None:
        audit, original = redacted, orjson.dumps(redacted).decode()
    fields = AKS_TIMESTAMP_FIELDS if "aks_metadata" in audit else TIMESTAMP_FIELDS
    timestamp = next((parse_time(audit[f], f) for f in fields if audit.get(f)), None)
    user = audit.get("user") or {}
    object_ref = audit.get("objectRef") or {}
    source_ips = [ip for ip in audit.get("sourceIPs") or () if isinstance(ip, str)]
    code = (audit.get("responseStatus") or {}).get("code")
    impersonated = audit.get("impersonatedUser") or {}
    # related.user: names and uids, as Elastic's integration lists them.
    names = [n for n in (user.get("username"), user.get("uid"), impersonated.get("username"),
                         impersonated.get("uid")) if isinstance(n, str) and n]
    doc: dict[str, Any] = {
        "@timestamp": timestamp or received,
        "event": {
            "id": event_id(DATASET_K8S_AUDIT, raw),
            "kind": "event",
            "category": ("web",) if object_ref.get("resource") is None else ("configuration",),
            "type": ("access",) if audit.get("verb") in ("get", "list", "watch") else ("change",),
            "action": str(audit.get("verb") or "unknown"),
            "outcome": outcome(code),
            "dataset": DATASET_K8S_AUDIT,
            "module": "kubernetes",
            "original": original,
            "ingested": received,
            "created": parse_time(audit["stageTimestamp"], "stageTimestamp")
            if audit.get("stageTimestamp") else None,
        },
        "user": {"name": user.get("username"), "id": user.get("uid")} if user else None,
        # The first address is the client's own (X-Forwarded-For first, then the remote
        # address); client.ip keeps every address of the chain, as Elastic's integration does.
        "source": {"ip": source_ips[0]} if source_ips else None,
        "client": {"ip": tuple(source_ips)} if source_ips else None,
        "user_agent": {"original": audit["userAgent"]} if audit.get("userAgent") else None,
        "orchestrator": orchestrator_fields(audit),
        "kubernetes": {"namespace": object_ref.get("namespace"), "audit": audit,
                       **(pod_fields(audit) or {})},
        "related": {"user": tuple(names), "ip": tuple(source_ips)},
        "tags": (() if timestamp else ("timestamp_from_ingest",))
        # Redacted here, or already at intake (Parser.scrub): the hashes are in the original.
        + ((REDACTED,) if redacted is not None or PREFIX in original else ()),
    }
    try:
        return Event.model_validate(doc)
    except ValidationError as exc:          # e.g. objectRef.namespace that is not a string
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise InvalidInput(Reason.SCHEMA_MISMATCH, f"{where}: {first['msg']}") from None


def check_shape(audit: dict[str, Any]) -> None:
    kind = audit.get("kind")
    if kind != "Event":
        raise InvalidInput(Reason.SCHEMA_MISMATCH, f"kind is {kind!r}, expected 'Event'")
    for field in OBJECT_FIELDS:
        if field in audit and not isinstance(audit[field], dict | None):
            raise InvalidInput(Reason.SCHEMA_MISMATCH, f"{field} is not an object")
    if not isinstance(audit.get("sourceIPs") or [], list):
        raise InvalidInput(Reason.SCHEMA_MISMATCH, "sourceIPs is not a list")
    for field in ("verb", "auditID", "stage", "requestURI", "userAgent"):
        if field in audit and not isinstance(audit[field], str | None):
            raise InvalidInput(Reason.SCHEMA_MISMATCH, f"{field} is not a string")


def outcome(code: Any) -> str:
    if not isinstance(code, int):
        return "unknown"
    return "success" if code < 400 else "failure"
