"""The entity graph around a timeline's subject, as a picture: the subject in the middle and
what the graph links it to around it (pod, containers, node, workload, image digest, who
deployed it, who pushed the image), each a link to its own timeline where it has one.

Geometry is computed here and the template only draws it, as the reports' charts are."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

WIDTH: Final = 720
HEIGHT: Final = 360
RADIUS: Final = 140
MAX_NEIGHBOURS: Final = 12


@dataclass(frozen=True, slots=True)
class Node:
    x: float
    y: float
    kind: str              # what it is: pod, container, user, image, node, workload
    label: str
    link_kind: str | None = None      # its timeline, where it has one
    link_value: str | None = None


@dataclass(frozen=True, slots=True)
class Picture:
    width: int
    height: int
    centre: Node
    around: list[Node]


def neighbours(subject: dict[str, Any]) -> list[tuple[str, str, str | None, str | None]]:
    """(kind, label, timeline kind, timeline value) of what the subject card links to."""
    found: list[tuple[str, str, str | None, str | None]] = []
    if subject.get("namespace") and subject.get("pod_name") and subject["type"] != "pod":
        key = f"{subject['namespace']}/{subject['pod_name']}"
        found.append(("pod", key, "pod", key))
    if subject.get("container_id") and subject["type"] != "container":
        found.append(("container", subject["container_id"][:12], "container",
                      subject["container_id"]))
    for container in subject.get("containers", [])[:4]:
        found.append(("container", container[:12], "container", container))
    if subject.get("node"):
        found.append(("node", subject["node"], None, None))
    if subject.get("workload_kind") and subject.get("workload_name"):
        found.append(("workload", f"{subject['workload_kind']}/{subject['workload_name']}",
                      None, None))
    if subject.get("digest"):
        found.append(("image", subject["digest"][:19] + "…", "image", subject["digest"]))
    elif subject.get("image_name"):
        reference = subject["image_name"] + (f":{subject['image_tag']}"
                                             if subject.get("image_tag") else "")
        found.append(("image", reference, "image", reference))
    for role in ("deployed_by", "pushed_by"):
        if subject.get(role):
            found.append((role.replace("_", " "), subject[role], "user", subject[role]))
    for digest in subject.get("images_pushed", [])[:3]:
        found.append(("pushed", digest[:19] + "…", "image", digest))
    for container in subject.get("containers_deployed", [])[:3]:
        found.append(("deployed", container[:12], "container", container))
    for push in (subject.get("digests") or {}).values():
        if push.get("pushed_by"):
            found.append(("pushed by", push["pushed_by"], "user", push["pushed_by"]))
    return found[:MAX_NEIGHBOURS]


def picture(subject: dict[str, Any]) -> Picture | None:
    """The picture of a subject card; None when the card links to nothing (or is withheld)."""
    around = neighbours(subject)
    if not around:
        return None
    cx, cy = WIDTH / 2, HEIGHT / 2
    centre = Node(cx, cy, subject["type"], str(subject["query"])[:40])
    nodes = []
    for i, (kind, label, link_kind, value) in enumerate(around):
        angle = 2 * math.pi * i / len(around) - math.pi / 2
        nodes.append(Node(round(cx + RADIUS * 1.9 * math.cos(angle), 1),
                          round(cy + RADIUS * math.sin(angle), 1), kind, str(label)[:40],
                          link_kind, value))
    return Picture(WIDTH, HEIGHT, centre, nodes)
