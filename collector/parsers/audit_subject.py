"""What a Kubernetes audit event tells about its own subject, as ECS fields.

The object reference becomes `orchestrator.*`; a pod's name, uid and labels (from the request or
response object of a pod create, update or delete) become `kubernetes.pod.*` and
`kubernetes.labels`. Pure: the facts come from the event alone, so the parser sets them (one
validation of the whole event); the entity graph (learned across events) builds on top of this,
and the enricher adds the configured cluster name.
"""

from __future__ import annotations

from typing import Any


def _metadata(audit: dict[str, Any], key: str) -> dict[str, Any]:
    obj = audit.get(key)
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        return obj["metadata"]
    return {}


def pod_fields(audit: dict[str, Any]) -> dict[str, Any] | None:
    """kubernetes.pod and labels for an event whose object is a pod, else None."""
    ref = audit.get("objectRef") or {}
    if ref.get("resource") != "pods":
        return None
    response, request = _metadata(audit, "responseObject"), _metadata(audit, "requestObject")
    name = ref.get("name") or response.get("name") or request.get("name")
    uid = ref.get("uid") or response.get("uid")
    labels = response.get("labels") or request.get("labels")
    fields: dict[str, Any] = {"pod": {"name": name, "uid": uid}}
    if isinstance(labels, dict):
        fields["labels"] = {str(k): str(v) for k, v in labels.items()}
    return fields


def orchestrator_fields(audit: dict[str, Any]) -> dict[str, Any]:
    ref = audit.get("objectRef") or {}
    resource = ref.get("resource")
    if resource and ref.get("subresource"):
        resource = f"{resource}/{ref['subresource']}"
    name = (ref.get("name") or _metadata(audit, "requestObject").get("name")
            or _metadata(audit, "responseObject").get("name"))
    fields: dict[str, Any] = {"type": "kubernetes", "api_version": ref.get("apiVersion"),
                              "namespace": ref.get("namespace")}
    if resource:
        fields["resource"] = {"type": resource, "name": name}
    return fields
