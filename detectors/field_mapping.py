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

Other logsources (ContainerTrail's own, since Sigma has no taxonomy for them): `product: falco`
(Falco alerts), `product: docker` (Docker Engine events) and `product: container_registry`
(pushes, pulls and deletes; `service: distribution` or `service: harbor` narrows it to one
registry). Their rules name our event fields (ECS: `event.action`, `user.name`,
`registry.tag`, `container.security_context.privileged`), so they need no mapping.

Fields under `derived.` (detectors.derived) are computed from the event by the matcher; they are
never prefixed, and a search backend cannot evaluate them.

Configuration reaches rules as Sigma placeholders: `user.name|expand: '%ci_actors%'` is replaced
by the configured list (pySigma's ValueListPlaceholderTransformation) when the rules load.
"""

from __future__ import annotations

from typing import Final

from sigma.processing.conditions import ExcludeFieldCondition, LogsourceCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import (
    AddFieldnamePrefixTransformation,
    ValueListPlaceholderTransformation,
)
from sigma.rule import SigmaLogSource

from ctrail.ecs import DATASET_K8S_AUDIT
from detectors.derived import DERIVED_PREFIX

AUDIT_PREFIX: Final = "kubernetes.audit."
PIPELINE_NAME: Final = "ContainerTrail field mapping"

# (product, service) of a Sigma logsource -> the event.dataset it describes. The category is
# left out on purpose: SigmaHQ writes some audit rules with `category: application` and some
# without, and both mean the same events.
LOGSOURCE_DATASETS: Final[dict[tuple[str | None, str | None], str]] = {
    ("kubernetes", "audit"): DATASET_K8S_AUDIT,
    ("falco", None): "falco.alerts",
    ("docker", None): "docker.events",
    ("container_registry", "distribution"): "registry.distribution",
    ("container_registry", "harbor"): "registry.harbor",
}
# A logsource that covers several datasets: every registry's events, whatever its product.
LOGSOURCE_MANY: Final[dict[tuple[str | None, str | None], tuple[str, ...]]] = {
    ("container_registry", None): ("registry.distribution", "registry.harbor"),
}
# The configuration lists rules may name as %placeholders% (SigmaDetectorConfig fields).
PLACEHOLDERS: Final = ("trusted_registries", "ci_actors", "system_namespaces",
                       "production_namespaces", "allowed_users", "allowed_namespaces")
# Allow lists are off while empty: everyone is allowed, so an empty one becomes `*`, which any
# value matches (`not x in allowed` stays false: CT-K8S-028, CT-K8S-029).
ALLOW_LISTS: Final = frozenset({"allowed_users", "allowed_namespaces"})
# pySigma refuses an empty replacement list; an empty list becomes this one value, which no
# event field holds, so `x in []` stays false as it should.
NO_VALUE: Final = "\x00(none configured)"


def is_configured(pipeline: ProcessingPipeline, name: str) -> bool:
    """Whether the configuration list `name` (PLACEHOLDERS) has values of the user's in this
    pipeline, rather than its stand-in for an empty list."""
    return pipeline.vars.get(name) not in (["*"], [NO_VALUE], None)


def containertrail_pipeline(variables: dict[str, list[str]] | None = None) -> ProcessingPipeline:
    """The processing pipeline mapping Sigma field names onto our event fields, with the
    configuration lists `variables` (PLACEHOLDERS; each defaults to empty) for placeholders.

    A new object on each call: pySigma pipelines keep per-rule state while applying, so two
    users (the matcher, a backend) must not share one instance."""
    values = {name: list((variables or {}).get(name) or ())
              or ["*" if name in ALLOW_LISTS else NO_VALUE] for name in PLACEHOLDERS}
    placeholders = ProcessingItem(
        identifier="ctrail_configuration_placeholders",
        transformation=ValueListPlaceholderTransformation(include=list(PLACEHOLDERS)))
    audit_prefix = ProcessingItem(
        identifier="ctrail_kubernetes_audit_prefix",
        transformation=AddFieldnamePrefixTransformation(AUDIT_PREFIX),
        rule_conditions=[LogsourceCondition(product="kubernetes", service="audit")],
        field_name_conditions=[ExcludeFieldCondition(
            fields=[r"kubernetes\.audit\.", DERIVED_PREFIX.replace(".", r"\.")], mode="re")],
    )
    return ProcessingPipeline(name=PIPELINE_NAME, priority=20,
                              items=[placeholders, audit_prefix], vars=values)


def dataset_of(logsource: SigmaLogSource) -> str | None:
    """The event.dataset whose events a rule with this logsource is about, or None."""
    return LOGSOURCE_DATASETS.get((logsource.product, logsource.service))


def datasets_of(logsource: SigmaLogSource) -> tuple[str, ...]:
    """Every event.dataset a rule with this logsource is about; empty when none."""
    key = (logsource.product, logsource.service)
    one = LOGSOURCE_DATASETS.get(key)
    return (one,) if one is not None else LOGSOURCE_MANY.get(key, ())
