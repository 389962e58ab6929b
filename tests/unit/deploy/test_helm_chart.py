"""The Helm chart (deploy/kubernetes/containertrail), rendered by the real helm: `helm lint`
is clean, every manifest validates against Kubernetes' own OpenAPI schemas (unknown fields
refused, as kubectl's strict validation does), every container is bounded, non-root and
read-only with probes of /healthz and /readyz, the configuration it writes is one our settings
loader accepts, and no secret is in the values or the configuration."""

from __future__ import annotations

import json
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jsonschema import Draft202012Validator

from ctrail.settings import load_settings
from tests.kubernetes_tools import helm, kubernetes_openapi  # noqa: F401  (fixtures)

CHART = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes" / "containertrail"
EMBEDDED: tuple[str, ...] = ()
# Every option on: all roles, a node agent, Prometheus Operator, SASL Kafka, ES with a CA,
# mutual TLS for the webhook, Falco's alerts.
DISTRIBUTED = (
    "--set", "mode=distributed", "--set", "kafka.bootstrapServers=kafka-0.kafka:9092",
    "--set", "kafka.security.protocol=SASL_SSL", "--set", "kafka.security.saslMechanism=PLAIN",
    "--set", "kafka.security.username=ctrail",
    "--set", "kafka.security.passwordSecret.name=kafka-credentials",
    "--set", "elasticsearch.hosts={https://es-http.elastic:9200}",
    "--set", "elasticsearch.passwordSecret.name=es-credentials",
    "--set", "elasticsearch.caSecret.name=es-ca",
    "--set", "workers.notify.enabled=true", "--set", "workers.evidence.enabled=true",
    "--set", "workers.scheduler.enabled=true", "--set", "workers.forward.enabled=true",
    "--set", "nodeAgent.enabled=true", "--set", "serviceMonitor.enabled=true",
    "--set", "webhook.tls.clientCA.secretName=apiserver-client-ca", "--set", "falco.enabled=true",
    "--set-json", 'config={"notify": {"receivers": {"chat": {"type": "slack", "webhook_url": '
                  '{"env": "CTRAIL_SLACK_WEBHOOK_URL"}}}}, "reports": {"weekly": {"template": '
                  '"weekly", "schedule": "0 6 * * 1"}}, "evidence": {}, "outputs": {"siem": '
                  '{"type": "fluentd", "host": "fluentd.logging", "port": 24224}}, '
                  '"enrich": {"kubernetes_api": {"in_cluster": true}}}',
    "--set-json", 'extraEnv=[{"name": "CTRAIL_SLACK_WEBHOOK_URL", "valueFrom": {"secretKeyRef":'
                  ' {"name": "ctrail-notify", "key": "slack"}}}]',
)
ROLES = ("collect", "process", "correlate", "store", "notify", "evidence", "scheduler",
         "forward")
NODE_AGENT_CAPABILITIES = {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}


def render(helm: Path, *values: str) -> list[dict[str, Any]]:
    done = subprocess.run([str(helm), "template", "ct", str(CHART), "--namespace", "audit",
                           *values], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def manifests(request: pytest.FixtureRequest, helm: Path) -> list[dict[str, Any]]:
    return render(helm, *(EMBEDDED if request.param == "embedded" else DISTRIBUTED))


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


@pytest.mark.parametrize("values", [EMBEDDED, DISTRIBUTED], ids=["embedded", "distributed"])
def test_helm_lint_is_clean(helm: Path, values: tuple[str, ...]) -> None:
    done = subprocess.run([str(helm), "lint", "--strict", str(CHART), *values],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout


@lru_cache(maxsize=1)
def openapi_index(specs: Path) -> tuple[dict[str, Any], dict[tuple[str, str, str], str]]:
    """Every component schema of the built-in groups, strict (no unknown field), and the
    schema name of each group, version and kind."""
    schemas: dict[str, Any] = {}
    for path in sorted(specs.glob("*.json")):
        schemas.update(json.loads(path.read_text()).get("components", {}).get("schemas", {}))
    kinds = {(gvk["group"], gvk["version"], gvk["kind"]): name for name, schema in schemas.items()
             for gvk in schema.get("x-kubernetes-group-version-kind", ())}
    for schema in schemas.values():
        if "properties" in schema:
            schema.setdefault("additionalProperties", False)
    return {"components": {"schemas": schemas}}, kinds


def test_every_manifest_validates_against_the_kubernetes_openapi_schemas(
        manifests: list[dict[str, Any]], kubernetes_openapi: Path) -> None:
    root, kinds = openapi_index(kubernetes_openapi)
    checked = 0
    for doc in manifests:
        group, _, version = doc["apiVersion"].rpartition("/")
        if group == "monitoring.coreos.com":
            continue                       # a CRD (Prometheus Operator): checked below
        name = kinds[(group, version, doc["kind"])]
        validator = Draft202012Validator({**root, "$ref": f"#/components/schemas/{name}"})
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator.iter_errors(doc)]
        assert errors == [], (doc["kind"], doc["metadata"]["name"], errors[:5])
        checked += 1
    assert checked >= 7


def test_every_container_is_bounded_non_root_read_only_and_probed(
        manifests: list[dict[str, Any]]) -> None:
    specs = list(pod_specs(manifests))
    assert specs
    for name, spec in specs:
        for container in spec["containers"]:
            context = container["securityContext"]
            assert container["resources"]["requests"]["memory"], name
            assert "memory" in container["resources"]["limits"], name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            probes = {kind: container[kind]["exec"]["command"]
                      for kind in ("livenessProbe", "readinessProbe")}
            assert probes["livenessProbe"][:4] == ["ctrail", "health", "--endpoint", "healthz"]
            assert probes["readinessProbe"][:4] == ["ctrail", "health", "--endpoint", "readyz"]
            # The ops server serves https (issue 14): every pod mounts the certificate.
            assert "/etc/ctrail-tls" in {m["mountPath"] for m in container["volumeMounts"]}, name
            if name.endswith("-node-agent"):
                # kubelet's log files are root's: root, with one read capability, nothing else.
                assert context["capabilities"] == NODE_AGENT_CAPABILITIES
                mounts = {m["name"]: m for m in container["volumeMounts"]}
                assert mounts["varlog"]["readOnly"] is True
                continue
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["runAsNonRoot"] is True, name
            assert spec["securityContext"]["runAsUser"] == 10001, name


def test_the_configuration_written_is_accepted_and_holds_no_secret(
        manifests: list[dict[str, Any]], tmp_path: Path) -> None:
    (config_map,) = [d for d in manifests if d["kind"] == "ConfigMap"]
    for key, text in config_map["data"].items():
        path = tmp_path / key
        path.write_text(text)
        settings = load_settings(path)            # raises ConfigError if not accepted
        assert settings.ops is not None and settings.ops.token is not None
        assert settings.ops.tls_cert_file == Path("/etc/ctrail-tls/tls.crt")
        for line in text.splitlines():
            if any(word in line for word in ("token", "password", "webhook_url", "key:")):
                value = line.split(":", 1)[1].strip()
                assert value == "" or value.startswith("env"), line
        if key == "containertrail.yaml":
            webhook = settings.sources["apiserver-webhook"]
            assert webhook.tls_cert_file == Path("/etc/ctrail-tls/tls.crt")


def test_distributed_mode_runs_a_worker_per_role_on_kafka_and_elasticsearch(
        helm: Path, tmp_path: Path) -> None:
    docs = render(helm, *DISTRIBUTED)
    workloads = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in docs
                 if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")}
    assert set(workloads) == {*ROLES, "node-agent"}
    for role in ROLES:
        container = workloads[role]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][:2] == ["worker", role]
    stateful = {role for role, d in workloads.items() if d["kind"] == "StatefulSet"}
    assert stateful == {"correlate", "notify", "evidence", "scheduler"}
    assert workloads["scheduler"]["spec"]["replicas"] == 1
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (tmp_path / "c.yaml").write_text(config_map["data"]["containertrail.yaml"])
    settings = load_settings(tmp_path / "c.yaml")
    assert settings.bus.type == "kafka" and settings.store.type == "elasticsearch"
    assert settings.bus.security is not None and settings.bus.security.protocol == "SASL_SSL"
    # The webhook Service reaches the collect workers; the graph's RBAC is read-only.
    (webhook,) = [d for d in docs if d["kind"] == "Service"
                  and d["metadata"]["name"] == "ct-containertrail-webhook"]
    assert webhook["spec"]["selector"]["app.kubernetes.io/component"] == "collect"
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    assert {v for rule in role["rules"] for v in rule["verbs"]} == {"list", "watch"}
    # Falco's http_output reaches the collect workers on the webhook Service, with its token.
    assert {p["name"]: p["port"] for p in webhook["spec"]["ports"]} == {"webhook": 443,
                                                                       "falco": 8481}
    falco = settings.sources["falco"]
    assert falco.type == "falco_http" and falco.port == 8481 and falco.token is not None
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["authorization"]["credentials"] == {
        "name": "ct-containertrail-auth", "key": "ops-token"}
    assert monitor["spec"]["endpoints"][0]["scheme"] == "https"
    assert monitor["spec"]["endpoints"][0]["tlsConfig"] == {
        "ca": {"secret": {"name": "ct-containertrail-webhook-tls", "key": "ca.crt"}},
        "serverName": "ct-containertrail-webhook.audit.svc"}


def test_no_secret_in_values_and_generated_ones_are_random(helm: Path) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["auth"] == {"existingSecret": ""}
    assert values["webhook"]["tls"]["existingSecret"] == ""
    first, second = (next(d for d in render(helm) if d["kind"] == "Secret"
                          and d["metadata"]["name"].endswith("-auth")) for _ in range(2))
    assert first["data"]["ops-token"] != second["data"]["ops-token"]
    assert len(first["data"]["audit-webhook-token"]) == 64          # 48 random characters
    # Named Secrets instead: none is created, the pods read the named one.
    docs = render(helm, "--set", "auth.existingSecret=mine",
                  "--set", "webhook.tls.existingSecret=mine-tls")
    assert [d for d in docs if d["kind"] == "Secret"] == []
    (_, spec), = pod_specs(docs)
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in spec["containers"][0]["env"]}
    assert env["CTRAIL_OPS_TOKEN"] == {"name": "mine", "key": "ops-token"}
    tls = next(v for v in spec["volumes"] if v["name"] == "webhook-tls")
    assert tls["secret"]["secretName"] == "mine-tls"


def test_the_generated_webhook_certificate_names_the_service_and_chains_to_its_ca(
        helm: Path) -> None:
    import base64

    secret = next(d for d in render(helm) if d["kind"] == "Secret"
                  and d["metadata"]["name"].endswith("-webhook-tls"))
    assert secret["type"] == "kubernetes.io/tls"
    cert, ca = (x509.load_pem_x509_certificate(base64.b64decode(secret["data"][k]))
                for k in ("tls.crt", "ca.crt"))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "ct-containertrail-webhook.audit.svc" in names.get_values_for_type(x509.DNSName)
    assert cert.issuer == ca.subject
    public = ca.public_key()
    assert isinstance(public, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey))
    if isinstance(public, rsa.RSAPublicKey):
        assert cert.signature_hash_algorithm is not None
        public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                      cert.signature_hash_algorithm)


def test_mutual_tls_for_the_webhook_mounts_the_client_ca_and_configures_it(
        helm: Path, tmp_path: Path) -> None:
    docs = render(helm, "--set", "webhook.tls.clientCA.secretName=apiserver-client-ca",
                  "--set", "webhook.tls.clientNames={kube-apiserver}")
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (tmp_path / "c.yaml").write_text(config_map["data"]["containertrail.yaml"])
    webhook = load_settings(tmp_path / "c.yaml").sources["apiserver-webhook"]
    assert webhook.client_ca_file == Path("/etc/ctrail-client-ca/ca.crt")
    assert webhook.client_names == ("kube-apiserver",)
    (_, spec), = pod_specs(docs)
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["webhook-client-ca"] == "/etc/ctrail-client-ca"
    volume = next(v for v in spec["volumes"] if v["name"] == "webhook-client-ca")
    assert volume["secret"]["secretName"] == "apiserver-client-ca"


@pytest.mark.parametrize(("values", "message"), [
    (("--set", "mode=cluster"), "mode"),
    (("--set", "webhook.port=80"), "/webhook/port"),
    (("--set", "nope=1"), "nope"),
    (("--set", "mode=distributed"), "mode distributed needs kafka.bootstrapServers"),
    (("--set", "nodeAgent.enabled=true"), "nodeAgent needs mode distributed"),
    (("--set", "mode=distributed", "--set", "kafka.bootstrapServers=k:9092",
      "--set", "elasticsearch.hosts={http://es:9200}", "--set", "workers.scheduler.enabled=true"),
     "workers.scheduler.enabled needs config.reports"),
])
def test_bad_values_are_refused_with_the_key_named(
        helm: Path, values: tuple[str, ...], message: str) -> None:
    done = subprocess.run([str(helm), "template", "ct", str(CHART), *values],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and message in done.stderr, done.stderr
