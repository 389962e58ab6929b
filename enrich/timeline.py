"""Timeline planning: a subject (container, pod, image, user) resolved in the entity graph,
and the store query that finds its events (full and short container ids, the pod, the image
digest, the user). `ctrail timeline` parses its arguments, runs the query and prints.
"""

from __future__ import annotations

from typing import Any, Final

from enrich.attach import Identity, iso, resolve
from enrich.graph import SHORT_ID, EntityGraph, repository_of, split_image

MAX_IDS: Final = 200            # containers named in one query


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def either(*parts: str) -> str:
    return " OR ".join(f"({p})" for p in parts if p)


def ids_query(ids: set[str]) -> str:
    return " OR ".join(f"container.id:{quoted(i)}" for i in sorted(ids)[:MAX_IDS])


def pod_query(identity: Identity | None, namespace: str | None = None,
              name: str | None = None, audit_only: bool = False) -> str:
    namespace = namespace or (identity.namespace if identity else None)
    name = name or (identity.pod_name if identity else None)
    if not namespace or not name:
        return ""
    query = f"kubernetes.namespace:{quoted(namespace)} AND kubernetes.pod.name:{quoted(name)}"
    return query + (" AND event.dataset:kubernetes.audit" if audit_only else "")


def push_query(digest: str | None) -> str:
    return f"registry.digest:{quoted(digest)} AND event.action:push" if digest else ""


def with_ids(container_id: str) -> set[str]:
    return {container_id, container_id[:SHORT_ID]}


def for_container(graph: EntityGraph, container_id: str) -> tuple[dict[str, Any], str]:
    identity = resolve(graph, container_id=container_id)
    ids = with_ids(container_id) | (with_ids(identity.container_id)
                                    if identity and identity.container_id else set())
    subject = {"type": "container", "query": container_id,
               **(identity.as_dict() if identity else {"resolved": False})}
    return subject, either(ids_query(ids), pod_query(identity, audit_only=True),
                           push_query(identity.digest if identity else None))


def for_pod(graph: EntityGraph, namespace: str, name: str) -> tuple[dict[str, Any], str]:
    identity = resolve(graph, namespace=namespace, pod_name=name)
    key = f"{namespace}/{name}"
    containers = graph.containers_of(lambda c: c.pod == key, MAX_IDS)
    ids = {i for c in containers if c.id for i in with_ids(c.id)}
    subject = {"type": "pod", "query": key,
               **(identity.as_dict() if identity else {"resolved": False}),
               "containers": sorted(c.id for c in containers if c.id)}
    return subject, either(pod_query(identity, namespace, name), ids_query(ids),
                           push_query(identity.digest if identity else None))


def for_image(graph: EntityGraph, reference: str) -> tuple[dict[str, Any], str]:
    if reference.startswith("sha256:"):
        digests, repository, tag = {reference}, None, None
    else:
        name, tag, pinned = split_image(reference)
        repository = repository_of(name)
        record = graph.tables["tag"].get(f"{repository}:{tag or 'latest'}")
        digests = {pinned} if pinned else {d for _t, d in getattr(record, "history", ())}
    ran = [c for c in graph.containers_of(lambda c: True, 10**9)
           if c.id and (identity := resolve(graph, container_id=c.id)) is not None
           and identity.digest in digests][:MAX_IDS]
    pushes = {d: _push(graph, d) for d in sorted(digests)}
    subject: dict[str, Any] = {
        "type": "image", "query": reference, "repository": repository, "tag": tag,
        "digests": pushes, "containers": sorted(c.id for c in ran if c.id)}
    if repository and tag and (record := graph.tables["tag"].get(f"{repository}:{tag}")):
        subject["tag_history"] = [{"time": iso(t), "digest": d}
                                  for t, d in getattr(record, "history", ())]
    per_digest = [f"related.hash:{quoted(d)} OR registry.digest:{quoted(d)} OR "
                  f"container.image.hash.all:{quoted(d)}" for d in sorted(digests)]
    ids = {i for c in ran if c.id for i in with_ids(c.id)}
    return subject, either(*per_digest, ids_query(ids))


def _push(graph: EntityGraph, digest: str) -> dict[str, Any]:
    push = graph.push(digest)
    if push is None:
        return {}
    fields = {"pushed_by": push.user, "pushed_at": iso(push.time) if push.time else None,
              "pushed_from": push.ip, "repository": push.repository, "tag": push.tag,
              "last_pulled_by": push.pulled_by,
              "deleted": iso(push.deleted) if push.deleted else None}
    return {k: v for k, v in fields.items() if v is not None}


def for_user(graph: EntityGraph, user: str) -> tuple[dict[str, Any], str]:
    deployed = []
    for container in graph.containers_of(lambda c: True, 10**9):
        identity = resolve(graph, container_id=container.id) if container.id else None
        if identity is not None and identity.deployed_by == user:
            deployed.append(identity)
    workloads = sorted(k for k, w in graph.tables["workload"].items()
                       if any(u == user for _t, u in getattr(w, "changes", None) or ()))
    pushed = sorted(d for d, p in graph.tables["push"].items() if getattr(p, "user", None) == user)
    subject = {"type": "user", "query": user, "workloads_changed": workloads,
               "images_pushed": pushed,
               "containers_deployed": sorted(i.container_id for i in deployed if i.container_id)}
    ids = {x for i in deployed[:MAX_IDS] if i.container_id for x in with_ids(i.container_id)}
    return subject, either(f"user.name:{quoted(user)}", ids_query(ids))
