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
    # The audit Event's own version (audit.k8s.io/v1), as Elastic's integration writes it; the
    # object's is in kubernetes.audit.objectRef.apiVersion.
    fields: dict[str, Any] = {"type": "kubernetes", "api_version": audit.get("apiVersion"),
                              "namespace": ref.get("namespace")}
    if resource:
        fields["resource"] = {"type": resource, "name": name}
    if cluster := cluster_name(audit):
        fields["cluster"] = {"name": cluster, "id": gke_project(audit)}
    return fields


def gke_project(audit: dict[str, Any]) -> str | None:
    """The project of a GKE cluster (resource.labels.project_id), Elastic's orchestrator.cluster.id."""
    resource = audit.get("resource")
    labels = resource.get("labels") if isinstance(resource, dict) else None
    project = labels.get("project_id") if isinstance(labels, dict) else None
    return project if isinstance(project, str) and project else None


def cluster_name(audit: dict[str, Any]) -> str | None:
    """The cluster a managed cluster's envelope names (collector.parsers.k8s_audit keeps it):
    GKE's `resource.labels.cluster_name`, AKS's cluster in `aks_metadata.resource_id`
    (.../providers/Microsoft.ContainerService/managedClusters/NAME, as Azure writes it)."""
    resource = audit.get("resource")
    labels = resource.get("labels") if isinstance(resource, dict) else None
    name = labels.get("cluster_name") if isinstance(labels, dict) else None
    if isinstance(name, str) and name:
        return name
    aks = audit.get("aks_metadata")
    resource_id = aks.get("resource_id") if isinstance(aks, dict) else None
    if isinstance(resource_id, str):
        parts = resource_id.strip("/").split("/")
        lowered = [part.lower() for part in parts]
        if "managedclusters" in lowered:
            at = lowered.index("managedclusters") + 1
            if at < len(parts) and parts[at]:
                return parts[at]
    return None
