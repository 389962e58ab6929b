"""A kube-apiserver audit Policy (audit.k8s.io/v1, `--audit-policy-file`) and what it records
of a request, decided as k8s.io/apiserver's policy evaluator decides it
(pkg/audit/policy/checker.go, v0.37):

- The rules are tried in order; the first that matches gives the level and the stages left
  out (its own omitStages and the policy's). No match: level None, nothing is recorded.
- A rule matches when each of its non-empty lists holds the request's value: users, userGroups
  (any of the user's groups), verbs. A rule with namespaces or resources matches resource
  requests only; namespaces hold "" for cluster-scoped objects; a group's resources may be
  `*`, `resource/subresource`, `*/subresource` or `resource/*`, a group `*` matches every group,
  and resourceNames narrow it to those object names. A rule with nonResourceURLs (and neither
  of those) matches non-resource requests whose path is listed, or starts with a listed
  prefix ending in `*`. A rule with none of them matches every request.
- kube-apiserver logs a request at RequestReceived and ResponseComplete, and a long-running
  one (watch, proxy; exec, attach, portforward, log, proxy subresources) at ResponseStarted
  too, less the omitted stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ctrail.errors import ConfigError

STAGES: Final = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
RESPONSE_STAGES: Final = frozenset({"ResponseStarted", "ResponseComplete"})
# kube-apiserver's BasicLongRunningRequestCheck: these are logged when the response starts too.
LONG_RUNNING_VERBS: Final = frozenset({"watch", "proxy"})
LONG_RUNNING_SUBRESOURCES: Final = frozenset({"attach", "exec", "proxy", "log", "portforward"})

StageName = Literal["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]


class Level(IntEnum):
    """Audit levels, in the order of what they record (each records what the one below does)."""

    NONE = 0
    METADATA = 1
    REQUEST = 2
    REQUEST_RESPONSE = 3

    @property
    def word(self) -> str:
        return ("None", "Metadata", "Request", "RequestResponse")[self]


LEVEL_WORDS: Final = {level.word: level for level in Level}


class PolicyPart(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class GroupResources(PolicyPart):
    group: str = ""
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = Field((), alias="resourceNames")


class PolicyRule(PolicyPart):
    level: Level
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = Field((), alias="userGroups")
    verbs: tuple[str, ...] = ()
    resources: tuple[GroupResources, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = Field((), alias="nonResourceURLs")
    omit_stages: tuple[StageName, ...] = Field((), alias="omitStages")
    omit_managed_fields: bool | None = Field(None, alias="omitManagedFields")

    @field_validator("level", mode="before")
    @classmethod
    def _level_word(cls, value: object) -> object:
        if isinstance(value, str):
            if value not in LEVEL_WORDS:
                raise ValueError(f"{value!r} is not one of {', '.join(LEVEL_WORDS)}")
            return LEVEL_WORDS[value]
        raise ValueError("a level is one of None, Metadata, Request, RequestResponse")


class AuditPolicy(PolicyPart):
    api_version: Literal["audit.k8s.io/v1"] = Field(alias="apiVersion")
    kind: Literal["Policy"]
    metadata: dict[str, object] = Field(default_factory=dict)
    rules: tuple[PolicyRule, ...]
    omit_stages: tuple[StageName, ...] = Field((), alias="omitStages")
    omit_managed_fields: bool = Field(False, alias="omitManagedFields")


@dataclass(frozen=True, slots=True)
class Request:
    """What the evaluator sees of a request: a resource request has a resource, a
    non-resource request (`/healthz`) a path only."""

    verb: str
    user: str
    groups: tuple[str, ...] = ()
    resource: str | None = None
    subresource: str | None = None
    api_group: str = ""
    namespace: str | None = None
    name: str | None = None
    path: str = ""

    @property
    def long_running(self) -> bool:
        return self.verb in LONG_RUNNING_VERBS or self.subresource in LONG_RUNNING_SUBRESOURCES


@dataclass(frozen=True, slots=True)
class Decision:
    """The level a request is logged at, and the stages of it that are logged."""

    level: Level
    stages: frozenset[str]

    @property
    def recorded(self) -> bool:
        return self.level > Level.NONE and bool(self.stages)

    @property
    def with_response(self) -> bool:
        return bool(self.stages & RESPONSE_STAGES)


def load_policy(path: Path) -> AuditPolicy:
    """The policy in `path`. Raises ConfigError naming the file and the failing keys."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read audit policy {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"audit policy {path} is not valid YAML: {first}") from None
    try:
        return AuditPolicy.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise ConfigError(f"{path} is not an audit.k8s.io/v1 Policy: {problems}") from None


def decide(policy: AuditPolicy, request: Request) -> Decision:
    """What `policy` records of `request`: the first matching rule's level and stages."""
    for rule in policy.rules:
        if rule_matches(rule, request):
            if rule.level is Level.NONE:
                break
            return Decision(rule.level, logged_stages(request, {*policy.omit_stages,
                                                                *rule.omit_stages}))
    return Decision(Level.NONE, frozenset())


def logged_stages(request: Request, omitted: set[str]) -> frozenset[str]:
    stages = {"RequestReceived", "ResponseComplete"}
    if request.long_running:
        stages.add("ResponseStarted")
    return frozenset(stages - omitted)


def rule_matches(rule: PolicyRule, request: Request) -> bool:
    if rule.users and request.user not in rule.users:
        return False
    if rule.user_groups and not set(rule.user_groups) & set(request.groups):
        return False
    if rule.verbs and request.verb not in rule.verbs:
        return False
    if rule.namespaces or rule.resources:
        return _matches_resource(rule, request)
    if rule.non_resource_urls:
        return request.resource is None and any(
            _path_matches(request.path, spec) for spec in rule.non_resource_urls)
    return True


def _matches_resource(rule: PolicyRule, request: Request) -> bool:
    if request.resource is None:
        return False
    if rule.namespaces and (request.namespace or "") not in rule.namespaces:
        return False
    if not rule.resources:
        return True
    return any(_group_matches(group, request) for group in rule.resources)


def _group_matches(group: GroupResources, request: Request) -> bool:
    if group.group not in (request.api_group, "*"):
        return False
    if not group.resources:
        return True
    if group.resource_names and request.name not in group.resource_names:
        return False
    sub = request.subresource or ""
    combined = f"{request.resource}/{sub}" if sub else request.resource
    return any(spec in (combined, "*")
               or (sub and spec.startswith("*/") and spec[2:] == sub)
               or (spec.endswith("/*") and spec[:-2] == request.resource)
               for spec in group.resources)


def _path_matches(path: str, spec: str) -> bool:
    return spec in ("*", path) or (spec.endswith("*") and path.startswith(spec.rstrip("*")))
