"""What a responder needs from an alert, whatever the receiver: who, where, what to run next. Pure."""

from __future__ import annotations

import hashlib
import shlex
from datetime import timedelta
from urllib.parse import quote

from ctrail.event import Alert
from sinks.notify.routing import alert_severity, cluster_of, namespace_of


def who(alert: Alert) -> str | None:
    return alert.user.name if alert.user is not None and alert.user.name else None


def where(alert: Alert) -> dict[str, str]:
    """cluster, namespace, pod, container, container_id, image, digest: those that are known."""
    k8s, container = alert.kubernetes, alert.container
    image = container.image if container is not None else None
    fields = {
        "cluster": cluster_of(alert),
        "namespace": namespace_of(alert),
        "pod": k8s.pod.name if k8s is not None and k8s.pod is not None else None,
        "container": (container.name if container is not None and container.name else
                      (k8s.container.name if k8s is not None and k8s.container else None)),
        "container_id": container.id if container is not None else None,
        "image": (f"{image.name}:{image.tag[0]}" if image and image.name and image.tag
                  else (image.name if image else None)),
        "digest": image.hash.all[0] if image and image.hash and image.hash.all else None,
    }
    return {key: value for key, value in fields.items() if value}


def facts(alert: Alert) -> list[tuple[str, str]]:
    """Who, then where, labelled for a responder: ("Who", ...), ("Namespace", ...), ..."""
    return [("Who", who(alert) or "unknown"),
            *((key.replace("_", " ").capitalize(), value) for key, value in where(alert).items())]


def techniques(alert: Alert) -> tuple[str, ...]:
    """The alert's ATT&CK technique ids."""
    return alert.threat.technique.id if alert.threat and alert.threat.technique else ()


def headline(alert: Alert) -> str:
    """One line for a title or summary: "[HIGH] Rule name: user in namespace/pod"."""
    return (f"[{alert_severity(alert).word.upper()}] {alert.rule.name}: "
            f"{who(alert) or 'unknown user'} in {subject(alert)}")


def cut(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, an ellipsis marking a cut."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def subject(alert: Alert) -> str:
    """A short "where" for titles: namespace/pod, else the container, else the cluster."""
    place = where(alert)
    if "pod" in place:
        return f"{place.get('namespace', '-')}/{place['pod']}"
    return place.get("container") or place.get("container_id", "")[:12] or \
        place.get("namespace") or place.get("cluster") or "-"


def next_steps(alert: Alert) -> list[str]:
    """The `ctrail timeline` commands that reconstruct this alert's subjects."""
    place, user = where(alert), who(alert)
    steps = []
    if "namespace" in place and "pod" in place:
        steps.append(f"ctrail timeline --pod {shlex.quote(place['namespace'] + '/' + place['pod'])}")
    if "container_id" in place:
        steps.append(f"ctrail timeline --container {shlex.quote(place['container_id'])}")
    if user:
        steps.append(f"ctrail timeline --user {shlex.quote(user)}")
    return steps


def kibana_link(kibana_url: str | None, alert: Alert) -> str | None:
    """Discover around the alert's time, filtered to its group (KQL in a Rison-encoded state)."""
    if not kibana_url:
        return None
    start = (alert.timestamp - timedelta(hours=1)).isoformat()
    end = (alert.timestamp + timedelta(hours=1)).isoformat()
    kql = 'alert.group_key:"{}"'.format(alert.alert.group_key.replace("\\", "\\\\")
                                         .replace('"', '\\"'))
    rison = kql.replace("!", "!!").replace("'", "!'")
    state = (f"_g=(time:(from:'{start}',to:'{end}'))"
             f"&_a=(query:(language:kuery,query:'{rison}'))")
    return f"{kibana_url.rstrip('/')}/app/discover#/?{quote(state, safe='=&()/:,!')}"


def bounded_key(key: str, limit: int) -> str:
    """`key` when it fits in `limit` characters, else its head and a hash of the whole: the
    same group always gets the same key (PagerDuty dedup_key, Opsgenie alias)."""
    if len(key) <= limit:
        return key
    digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
    return f"{key[:limit - 33]}#{digest}"
