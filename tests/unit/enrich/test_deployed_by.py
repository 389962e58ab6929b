"""Who deployed it (issue 12): a pod the ReplicaSet controller created was deployed by whoever
last created or changed its Deployment before the pod appeared (a CI service account, Argo CD,
a person), found through the owner chain; the controller is kept as `deployed_via`."""

from __future__ import annotations

from enrich.attach import resolve
from enrich.graph import EntityGraph, Fact

T0 = 1_700_000_000
ARGO = "system:serviceaccount:argocd:argocd-application-controller"
DEPLOYMENT_CONTROLLER = "system:serviceaccount:kube-system:deployment-controller"
RS_CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"


def graph_of(*facts: Fact) -> EntityGraph:
    graph = EntityGraph(clock=lambda: T0)
    for fact in facts:
        graph.apply(fact)
    return graph


def deployment(changes: list[tuple[int, str]]) -> list[Fact]:
    return [Fact("workload", "Deployment/shop/api", T0, {"changes": changes}),
            Fact("workload", "ReplicaSet/shop/api-1", T0 + 5,
                 {"owner": ("Deployment", "api"), "changes": [(T0 + 5, DEPLOYMENT_CONTROLLER)]}),
            Fact("pod", "shop/api-1-x", T0 + 10,
                 {"owner": ("ReplicaSet", "api-1"), "creator": RS_CONTROLLER})]


def test_argo_cd_deployed_it_through_the_replicaset_controller() -> None:
    identity = resolve(graph_of(*deployment([(T0, ARGO)])), namespace="shop", pod_name="api-1-x")
    assert identity is not None
    assert (identity.deployed_by, identity.deployed_via, identity.deployed_at) == (
        ARGO, RS_CONTROLLER, T0)
    trail = identity.as_dict()
    assert (trail["deployed_by"], trail["deployed_via"]) == (ARGO, RS_CONTROLLER)


def test_the_last_principal_before_the_pod_appeared_is_named() -> None:
    changes = [(T0 - 60, "alice@example.com"), (T0, "system:serviceaccount:ci:deployer"),
               (T0 + 3600, "bob@example.com")]         # bob changed it after the pod appeared
    identity = resolve(graph_of(*deployment(changes)), namespace="shop", pod_name="api-1-x")
    assert identity is not None and identity.deployed_by == "system:serviceaccount:ci:deployer"


def test_with_no_principal_known_no_controller_is_named_as_the_deployer() -> None:
    identity = resolve(graph_of(*deployment([])), namespace="shop", pod_name="api-1-x")
    assert identity is not None
    assert (identity.deployed_by, identity.deployed_via) == (None, RS_CONTROLLER)
    mirror = resolve(graph_of(Fact("pod", "kube-system/etcd-node-1", T0,
                                   {"creator": "system:node:node-1"})),
                     namespace="kube-system", pod_name="etcd-node-1")
    assert mirror is not None and (mirror.deployed_by, mirror.deployed_via) == (
        None, "system:node:node-1")


def test_a_bare_pod_was_deployed_by_its_creator() -> None:
    identity = resolve(graph_of(Fact("pod", "shop/debug", T0, {"creator": "alice@example.com"})),
                       namespace="shop", pod_name="debug")
    assert identity is not None and (identity.deployed_by, identity.deployed_via) == (
        "alice@example.com", None)
