"""A small multi-tenant incident for the console tests, in Kubernetes' audit-log format: execs
into pods (CT-K8S-004 alerts) and pod creations in the namespaces `payments`, `shop` and
`payments-archive` (a name a wildcard `payments*` would also match), and a cluster-scoped
ClusterRoleBinding (no namespace at all). The `shop` events carry scripts in the user name, the
pod name and a label, which the console must show as text.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

from ctrail.cli.main import main
from ctrail.console.app import ConsoleServer
from ctrail.console.auth import hash_password
from ctrail.console.config import ConsoleConfig
from ctrail.console.users import ConsoleDb, Role, User
from ctrail.settings import load_settings

PASSWORD: Final = "correct horse battery staple"
SCRIPT_USER: Final = "<script>window.__xss='user'</script>"
SCRIPT_POD: Final = "<img src=x onerror=\"window.__xss='pod'\">"
SCRIPT_LABEL: Final = "<script>window.__xss='label'</script>"
NAMESPACES: Final = ("payments", "shop", "payments-archive")


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit(at: datetime, verb: str, user: str, ref: dict[str, Any], code: int = 201,
          response: dict[str, Any] | None = None, audit_id: str = "") -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
        "auditID": audit_id or f"{verb}-{ref.get('namespace')}-{ref.get('name')}-{at.timestamp()}",
        "stage": "ResponseComplete", "requestURI": f"/api/v1/{ref['resource']}", "verb": verb,
        "user": {"username": user, "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.0.9"], "userAgent": "kubectl/v1.30.1", "objectRef": ref,
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": ts(at), "stageTimestamp": ts(at)}
    if response is not None:
        event["responseObject"] = response
    return event


def exec_into(at: datetime, user: str, namespace: str, pod: str, tag: str = "") -> dict[str, Any]:
    return audit(at, "create", user, {"resource": "pods", "subresource": "exec",
                                      "namespace": namespace, "name": pod, "apiVersion": "v1"},
                 code=101, audit_id=f"exec-{namespace}-{tag or at.timestamp()}")


def pod_create(at: datetime, user: str, namespace: str, pod: str,
               labels: dict[str, str]) -> dict[str, Any]:
    body = {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": pod, "namespace": namespace, "uid": f"uid-{namespace}-{pod}",
                         "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}}
    return audit(at, "create", user, {"resource": "pods", "namespace": namespace, "name": pod,
                                      "apiVersion": "v1"}, response=body)


def incident(start: datetime | None = None) -> list[dict[str, Any]]:
    t0 = start or datetime.now(timezone.utc) - timedelta(minutes=30)
    return [
        pod_create(t0, "alice", "payments", "checkout-1", {"app": "checkout"}),
        exec_into(t0 + timedelta(seconds=10), "alice", "payments", "checkout-1"),
        pod_create(t0 + timedelta(seconds=20), SCRIPT_USER, "shop", SCRIPT_POD,
                   {"evil": SCRIPT_LABEL}),
        exec_into(t0 + timedelta(seconds=30), SCRIPT_USER, "shop", SCRIPT_POD),
        pod_create(t0 + timedelta(seconds=40), "bob", "payments-archive", "ledger-0",
                   {"app": "ledger"}),
        exec_into(t0 + timedelta(seconds=50), "bob", "payments-archive", "ledger-0"),
        audit(t0 + timedelta(seconds=60), "create", "alice",
              {"resource": "clusterrolebindings", "name": "alice-admin",
               "apiGroup": "rbac.authorization.k8s.io", "apiVersion": "v1"},
              response={"kind": "ClusterRoleBinding", "metadata": {"name": "alice-admin"},
                        "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
                        "subjects": [{"kind": "User", "name": "alice"}]}),
    ]


def write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def ingest(data_dir: Path, path: Path, config: Path | None = None) -> None:
    args = ["ingest", "--source", "k8s-audit", str(path), "--data-dir", str(data_dir)]
    assert main([*args, *(["--config", str(config)] if config else [])]) == 0


def add_users(data_dir: Path) -> dict[str, User]:
    """admin (everything), responder `pay` limited to payments, viewer `view`."""
    users = {"admin": User("admin", Role.ADMIN),
             "pay": User("pay", Role.RESPONDER, ("payments",)),
             "view": User("view", Role.VIEWER)}
    db = ConsoleDb(data_dir)
    try:
        hashed = hash_password(PASSWORD)
        for user in users.values():
            db.add_user(user, hashed)
    finally:
        db.close()
    return users


def serve(data_dir: Path, config: Path | None = None, **console: Any) -> ConsoleServer:
    """A real console (uvicorn on a free loopback port) over the data directory's store."""
    settings = load_settings(config, data_dir)
    server = ConsoleServer(settings, ConsoleConfig(**{"port": 0, **console}))
    server.start()
    return server


def incident_console(root: Path, config: Path | None = None, **console: Any) -> ConsoleServer:
    """A console over root/data holding the incident (ingested from root/audit.log), with the
    three users of add_users."""
    ingest(root / "data", write_lines(root / "audit.log", incident()), config)
    add_users(root / "data")
    return serve(root / "data", config, **console)


def elasticsearch_store(path: Path, url: str, prefix: str) -> Path:
    """A config file at `path` whose store is Elasticsearch at `url`, in a namespace of its own
    (`prefix` and a random part), refreshed on write so what is stored is searched at once."""
    path.write_text(orjson.dumps({"store": {
        "type": "elasticsearch", "hosts": [url], "refresh_on_write": True,
        "namespace": f"{prefix}{uuid.uuid4().hex[:12]}"}}).decode())
    return path


def login(url: str, user: str, password: str = PASSWORD) -> httpx.Client:
    """A client holding `user`'s session cookie, with the session's CSRF token at .csrf."""
    client = httpx.Client(base_url=url, timeout=30)
    response = client.post("/api/login", json={"user": user, "password": password})
    assert response.status_code == 200, response.text
    client.csrf = response.json()["csrf"]  # type: ignore[attr-defined]
    return client
