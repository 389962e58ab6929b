"""`ctrail rules lint --audit-policy`: the level kube-apiserver's policy evaluator gives a request
(first match, as k8s.io/apiserver's checker.go), and the pack's rules real policies never feed:
the Kubernetes documentation's example, the GCE/GKE control plane's policy, a Metadata-only
policy from a real cluster, and the policy we recommend."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ctrail.cli.main import main
from ctrail.errors import ConfigError
from detectors.audit_policy import AuditPolicy, Level, Request, decide, load_policy
from detectors.policy_coverage import audit_rules, unfed_correlations, unfed_rules
from detectors.sigma_rules import PACKAGED_RULES

REPO = Path(__file__).resolve().parents[3]
POLICIES = REPO / "tests" / "data" / "audit-policies"
DOCS_EXAMPLE = POLICIES / "kubernetes-docs-example.yaml"
GKE = POLICIES / "gce-gke.yaml"
RECOMMENDED = REPO / "deploy" / "kubernetes" / "audit-policy.yaml"
# Rules that read the request body (level Request): what a Metadata-only policy starves.
BODY_RULES = {"CT-K8S-001", "CT-K8S-002", "CT-K8S-003", "CT-K8S-006", "CT-K8S-007", "CT-K8S-025",
              "CT-K8S-012", "CT-K8S-013", "CT-K8S-014", "CT-K8S-022", "CT-K8S-023", "CT-K8S-026"}


def policy(text: str, tmp_path: Path) -> AuditPolicy:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return load_policy(path)


def unfed(policy: AuditPolicy) -> dict[str, str]:
    findings = unfed_rules(audit_rules([PACKAGED_RULES], {}), policy)
    findings += unfed_correlations([PACKAGED_RULES], findings)
    return {f.rule: f.reason for f in findings}


@pytest.mark.parametrize(("request_", "level", "stages"), [
    (Request("create", "alice", resource="pods", namespace="default"),
     Level.REQUEST_RESPONSE, {"ResponseComplete"}),
    (Request("get", "alice", resource="pods", subresource="log", namespace="default"),
     Level.METADATA, {"ResponseStarted", "ResponseComplete"}),
    (Request("update", "kcm", resource="configmaps", namespace="kube-system",
             name="controller-leader"), Level.NONE, set()),
    (Request("watch", "system:kube-proxy", resource="endpoints"), Level.NONE, set()),
    (Request("get", "alice", groups=("system:authenticated",), path="/apis/apps"),
     Level.NONE, set()),
    (Request("get", "system:anonymous", groups=("system:unauthenticated",), path="/version"),
     Level.METADATA, {"ResponseComplete"}),
    (Request("patch", "alice", resource="configmaps", namespace="kube-system", name="x"),
     Level.REQUEST, {"ResponseComplete"}),
    (Request("patch", "alice", resource="configmaps", namespace="prod", name="x"),
     Level.METADATA, {"ResponseComplete"}),
    (Request("get", "alice", resource="secrets", namespace="prod"),
     Level.METADATA, {"ResponseComplete"}),
    (Request("create", "alice", resource="pods", subresource="exec", namespace="prod"),
     Level.REQUEST, {"ResponseStarted", "ResponseComplete"}),     # core group: Request
    (Request("create", "alice", resource="deployments", api_group="apps", namespace="prod"),
     Level.METADATA, {"ResponseComplete"}),
], ids=lambda v: v if isinstance(v, str) else None)
def test_the_docs_example_decides_as_kube_apiserver_does(
        request_: Request, level: Level, stages: set[str]) -> None:
    decision = decide(load_policy(DOCS_EXAMPLE), request_)
    assert (decision.level, set(decision.stages)) == (level, stages)


def test_wildcard_groups_and_resources_match_as_the_evaluator_does(tmp_path: Path) -> None:
    rules = policy("""
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - {level: RequestResponse, resources: [{group: "*", resources: ["*/status"]}]}
  - {level: Request, resources: [{group: apps, resources: ["deployments/*"]}]}
  - {level: Metadata, namespaces: [""]}
  - {level: None, resources: [{group: "", resources: ["*"], resourceNames: [kept]}]}
  - {level: Request, resources: [{group: ""}], omitStages: [ResponseComplete]}
""", tmp_path)
    assert decide(rules, Request("update", "u", resource="pods", subresource="status",
                                 namespace="a")).level == Level.REQUEST_RESPONSE
    assert decide(rules, Request("update", "u", resource="deployments", subresource="scale",
                                 api_group="apps", namespace="a")).level == Level.REQUEST
    # "deployments/*" matches the resource itself too (checker.go compares the resource only).
    assert decide(rules, Request("update", "u", resource="deployments", api_group="apps",
                                 namespace="a")).level == Level.REQUEST
    assert decide(rules, Request("get", "u", resource="nodes")).level == Level.METADATA
    assert decide(rules, Request("get", "u", resource="pods", namespace="a",
                                 name="kept")).level == Level.NONE
    omitted = decide(rules, Request("get", "u", resource="pods", namespace="a", name="b"))
    assert omitted.level == Level.REQUEST and omitted.stages == {"RequestReceived"}
    assert not decide(rules, Request("get", "u", path="/metrics")).recorded


def test_the_docs_example_never_feeds_the_rbac_rules(tmp_path: Path) -> None:
    # It logs its own core group at Request, pods at RequestResponse, the rest at Metadata:
    # bindings and roles (rbac.authorization.k8s.io) lose the body CT-K8S-006/007/025/026 read.
    found = unfed(load_policy(DOCS_EXAMPLE))
    assert set(found) == {"CT-K8S-006", "CT-K8S-007", "CT-K8S-025", "CT-K8S-026"}
    assert "requestObject.roleRef.name" in found["CT-K8S-006"]
    assert "at Metadata at most (e.g. create clusterrolebindings" in found["CT-K8S-006"]


def test_gke_policy_never_feeds_the_configmap_credential_rule() -> None:
    # GKE logs ConfigMaps (like Secrets) at Metadata only: CT-K8S-022 reads their data.
    found = unfed(load_policy(GKE))
    assert set(found) == {"CT-K8S-022"}
    assert found["CT-K8S-022"].startswith("it reads derived.k8s.configmap_entries (needs "
                                          "level Request)")


def test_a_metadata_only_policy_starves_every_rule_that_reads_the_body(real_data: Path) -> None:
    helm_cluster = real_data / "k8s-audit-benign-helm-dataset" / "audit-policy.yaml"
    assert set(unfed(load_policy(helm_cluster))) == BODY_RULES


def test_the_recommended_policy_feeds_every_rule_and_keeps_secrets_at_metadata() -> None:
    recommended = load_policy(RECOMMENDED)
    assert unfed(recommended) == {}
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
        for resource, sub in (("secrets", None), ("serviceaccounts", "token")):
            decision = decide(recommended, Request(verb, "alice", resource=resource,
                                                   subresource=sub, namespace="prod"))
            assert decision.level == Level.METADATA, (verb, resource)


def test_a_policy_without_response_stages_starves_the_status_rules(tmp_path: Path) -> None:
    found = unfed(policy("""
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [ResponseStarted, ResponseComplete, Panic]
rules: [{level: RequestResponse}]
""", tmp_path))
    # The forbidden-burst base reads responseStatus.code 403; its correlation goes with it.
    assert "responseStatus.code (needs a response stage)" in found["CT-COR-BASE-FORBIDDEN"]
    assert found["CT-COR-003"] == "it needs CT-COR-BASE-FORBIDDEN, which the policy never feeds"
    assert "CT-K8S-001" not in found          # a missing status is not a refusal


def test_an_empty_policy_feeds_nothing(tmp_path: Path) -> None:
    found = unfed(policy("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n", tmp_path))
    assert {rule.id for rule in audit_rules([PACKAGED_RULES], {})} <= set(found)
    assert found["CT-K8S-004"] == ("the policy records none of the requests it is about "
                                   "(level None)")
    assert "CT-COR-002" in found and "CT-COR-005" not in found    # 005 reads runtime events


def test_cli_names_each_rule_exits_1_and_says_what_it_checked(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["rules", "lint", "--audit-policy", str(GKE), "--format", "json"])
    out, err = capsys.readouterr()
    (doc,) = map(orjson.loads, out.splitlines())
    assert code == 1 and doc["rule"]["id"] == "CT-K8S-022"
    assert doc["file"].endswith("ct-k8s-022-credential-in-configmap.yml")
    assert err.strip() == (f"{len(audit_rules([PACKAGED_RULES], {}))} audit rules checked "
                           f"against {GKE}: 1 never fed")
    assert main(["rules", "lint", "--audit-policy", str(RECOMMENDED)]) == 0


def test_a_file_that_is_no_policy_is_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"is not an audit.k8s.io/v1 Policy: rules.0.level"):
        policy("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Verbose}]\n",
               tmp_path)
    with pytest.raises(ConfigError, match="kind"):
        policy("apiVersion: audit.k8s.io/v1\nkind: Config\nrules: []\n", tmp_path)
    assert main(["rules", "lint", "--audit-policy", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read audit policy" in capsys.readouterr().err
