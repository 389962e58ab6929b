"""ECS field paths used in code, as constants, so a typo is an import error."""

from typing import Final

TIMESTAMP: Final = "@timestamp"
EVENT_ID: Final = "event.id"
EVENT_KIND: Final = "event.kind"
EVENT_DATASET: Final = "event.dataset"
EVENT_ACTION: Final = "event.action"
USER_NAME: Final = "user.name"
SOURCE_IP: Final = "source.ip"
K8S_NAMESPACE: Final = "kubernetes.namespace"
K8S_POD_NAME: Final = "kubernetes.pod.name"
RULE_ID: Final = "rule.id"

DATASET_K8S_AUDIT: Final = "kubernetes.audit"
