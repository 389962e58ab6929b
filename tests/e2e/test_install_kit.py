"""The install kit as a cluster uses it: kube-apiserver's own audit webhook client, configured
with the shipped webhook kubeconfig (deploy/kubernetes/webhook-kubeconfig.yaml, its three
values filled in as the chart's notes say) and deciding levels with the shipped audit policy
(deploy/kubernetes/audit-policy.yaml), sends to `ctrail run`: every event is stored once, pods
are logged with their body, secrets at Metadata only, and the exec rule fires."""

from __future__ import annotations

import secrets
from pathlib import Path

import yaml

from tests.e2e.apiserver_client import apiserver_client  # noqa: F401 (a fixture)
from tests.e2e.test_apiserver_webhook import (  # noqa: F401 (pki, setup: fixtures)
    TOKEN,
    TOKEN_ENV,
    Pki,
    Setup,
    ctrail,
    pki,
    setup,
    tls_listener,
)

KIT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def filled_kubeconfig(path: Path, server: str, ca_data: str, token: str) -> Path:
    """The shipped template with the server, CA and token a user copies from the chart."""
    config = yaml.safe_load((KIT / "webhook-kubeconfig.yaml").read_text())
    (cluster,) = config["clusters"]
    (user,) = config["users"]
    assert cluster["cluster"]["certificate-authority-data"] == "REPLACE-WITH-BASE64-CA"
    assert user["user"]["token"] == "REPLACE-WITH-AUDIT-WEBHOOK-TOKEN"
    cluster["cluster"].update({"server": server, "certificate-authority-data": ca_data})
    user["user"]["token"] = token
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_shipped_kubeconfig_and_policy_feed_ctrail_through_the_upstream_client(
        setup: Setup, pki: Pki) -> None:
    value = "kit-secret-" + secrets.token_hex(16)
    run = setup.start(tls_listener(setup.tmp / "ctrail.json", setup.port, pki,
                                   token={"env": TOKEN_ENV}))
    config = filled_kubeconfig(setup.tmp / "webhook-kubeconfig.yaml",
                               f"https://localhost:{setup.port}/", pki.data("ca.crt"), TOKEN)
    # The last --policy wins (Go's flag package): the shipped policy decides every level.
    client = setup.send(config, 600, "--secret-value", value,
                        "--policy", str(KIT / "audit-policy.yaml"))
    summary = setup.finish(client)
    assert summary["events"] == summary["delivered"] == 600
    setup.assert_each_sent_event_stored_once(600)
    levels: dict[tuple[str, str, str], set[str]] = {}
    for event in ctrail(setup.data_dir, "search", "event.dataset:kubernetes.audit",
                        "--limit", "1000"):
        audit = event["kubernetes"]["audit"]
        ref = audit["objectRef"]
        key = (ref["resource"], ref.get("subresource", ""), audit["verb"])
        levels.setdefault(key, set()).add(audit["level"])
    assert levels[("pods", "", "create")] == {"Request"}       # the body CT-K8S-001.. read
    assert levels[("pods", "", "get")] == {"Metadata"}
    assert levels[("pods", "exec", "create")] == {"Metadata"}
    assert levels[("secrets", "", "create")] == {"Metadata"}   # never the secret's data
    alerts = ctrail(setup.data_dir, "alerts", "--rule", "CT-K8S-004", "--since", "1h")
    assert len(alerts) == 100                                  # one per exec request
    assert run.stop() == 0
    files = [p for p in setup.data_dir.rglob("*") if p.is_file()]
    assert [str(p) for p in files if value.encode() in p.read_bytes()] == []
