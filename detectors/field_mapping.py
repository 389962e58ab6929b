"""Sigma field names -> ContainerTrail event fields: one pySigma ProcessingPipeline.

SigmaHQ's Kubernetes audit rules (logsource product `kubernetes`, service `audit`) name the raw
audit.k8s.io Event fields: `verb`, `objectRef.resource`, `user.username`, `sourceIPs`,
`responseStatus.code`, `requestURI`, `annotations.authorization.k8s.io/decision`, ... Our events
keep that raw Event whole under `kubernetes.audit`, so the mapping is a prefix: `verb` becomes
`kubernetes.audit.verb`. pySigma's own ECS Kubernetes mapping knows only the older plain names
(`verb`, `resource`, ...), so it does not fit these rules.

The same pipeline serves the in-process matcher (detectors.sigma_rules) and, later, pySigma's
Elasticsearch backend, where `kubernetes.audit.*` is where the documents hold those fields. A
field already written as `kubernetes.audit.…` is left as it is, so applying the pipeline twice,
or a rule written against our names, is harmless.

Five SigmaHQ rules (at the commit in ../shared/data/real/sigmahq-kubernetes-audit/SOURCE.md) can
never match a raw audit event. Four name top-level fields an audit Event does not have:
`hostPath` ("Container With A hostPath Mount Created"), `capabilities` ("Privileged Container
Deployed") and `apiGroup` ("RBAC Permission Enumeration Attempt", "Potential Sidecar Injection
Into Running Deployment"; the audit field is `objectRef.apiGroup`). "Kubernetes Potential
Enumeration Activity" requires `responseStatus.code` to be the string `ALLOW`, where the API
server logs an HTTP status number. They load and run unchanged; mapping them into matching
would mean rewriting third-party rules, which belongs in our own pack.
"""

from __future__ import annotations

from typing import Final

from sigma.processing.conditions import ExcludeFieldCondition, LogsourceCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import AddFieldnamePrefixTransformation
from sigma.rule import SigmaLogSource

from ctrail.ecs import DATASET_K8S_AUDIT

AUDIT_PREFIX: Final = "kubernetes.audit."
PIPELINE_NAME: Final = "ContainerTrail field mapping"

# (product, service) of a Sigma logsource -> the event.dataset it describes. The category is
# left out on purpose: SigmaHQ writes some audit rules with `category: application` and some
# without, and both mean the same events.
LOGSOURCE_DATASETS: Final[dict[tuple[str | None, str | None], str]] = {
    ("kubernetes", "audit"): DATASET_K8S_AUDIT,
}


def containertrail_pipeline() -> ProcessingPipeline:
    """The processing pipeline mapping Sigma field names onto our event fields.

    A new object on each call: pySigma pipelines keep per-rule state while applying, so two
    users (the matcher, a backend) must not share one instance."""
    audit_prefix = ProcessingItem(
        identifier="ctrail_kubernetes_audit_prefix",
        transformation=AddFieldnamePrefixTransformation(AUDIT_PREFIX),
        rule_conditions=[LogsourceCondition(product="kubernetes", service="audit")],
        field_name_conditions=[ExcludeFieldCondition(fields=[r"kubernetes\.audit\."], mode="re")],
    )
    return ProcessingPipeline(name=PIPELINE_NAME, priority=20, items=[audit_prefix])


def dataset_of(logsource: SigmaLogSource) -> str | None:
    """The event.dataset whose events a rule with this logsource is about, or None."""
    return LOGSOURCE_DATASETS.get((logsource.product, logsource.service))
