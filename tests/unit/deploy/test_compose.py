"""docker-compose.yml is what users run in production: every long-running service has a health
check and persistent data, the workers run unprivileged, and no secret is written in it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.kubernetes_tools import docker_compose  # noqa: F401  (a fixture)

REPO = Path(__file__).resolve().parents[3]
COMPOSE = REPO / "docker-compose.yml"
SECRETS = {"ELASTIC_PASSWORD": "e", "KIBANA_PASSWORD": "k", "CTRAIL_ES_PASSWORD": "c",
           "CTRAIL_AUDIT_WEBHOOK_TOKEN": "t", "CTRAIL_OPS_TOKEN": "o",
           "CTRAIL_SLACK_WEBHOOK_URL": "s"}
# Every role of a production deployment (forward runs only when outputs are configured).
ROLES = ("collect", "process", "correlate", "store", "notify", "evidence", "scheduler")


def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]  # type: ignore[no-any-return]


def test_long_running_services_have_health_checks_and_volumes() -> None:
    for name, service in services().items():
        if service.get("restart") == "no":              # the one-shot set-up job
            continue
        assert "healthcheck" in service or name.startswith("ctrail-"), name
    for name in ("kafka", "elasticsearch"):
        assert any(str(v).split(":")[0].endswith("-data") for v in services()[name]["volumes"])
    for role in ROLES:
        worker = services()[f"ctrail-{role}"]
        assert worker["command"][:2] == ["worker", role]
        assert worker["user"] == "10001:10001" and worker["read_only"] is True
        assert worker["healthcheck"]["test"][:2] == ["CMD", "ctrail"]
        # Its own named volume at the data directory, which the non-root user can write.
        assert f"{role}-data:/var/lib/ctrail/data" in worker["volumes"]


def test_every_role_has_a_service_and_the_config_it_needs() -> None:
    from ctrail.settings import load_settings

    commands = {tuple(s.get("command", ())[:2]) for s in services().values()}
    assert {("worker", role) for role in ROLES} <= commands
    production = load_settings(REPO / "config" / "production.yaml")
    # The workers that refuse to start without their section have it.
    assert production.notify is not None and production.notify.receivers
    assert production.reports and production.evidence is not None
    assert production.evidence.signing_key is not None


def test_secrets_come_only_from_the_environment() -> None:
    text = COMPOSE.read_text()
    for name in SECRETS:
        values = re.findall(rf"^\s*{name}:\s*(\S+)", text, re.MULTILINE)
        assert values, name
        for value in values:                          # ${NAME:?message}: required, from the env
            assert value.startswith("${") and ":?" in value, (name, value)


def test_docker_compose_config_validates_it(docker_compose: list[str]) -> None:
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(Path.home()), **SECRETS}
    done = subprocess.run([*docker_compose, "-f", str(COMPOSE), "config", "--quiet"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    missing = subprocess.run([*docker_compose, "-f", str(COMPOSE), "config", "--quiet"],
                             capture_output=True, text=True, env={**env, "KIBANA_PASSWORD": ""})
    assert missing.returncode != 0 and "KIBANA_PASSWORD" in missing.stderr
    rendered = subprocess.run([*docker_compose, "-f", str(COMPOSE), "config", "--format",
                               "json"], capture_output=True, text=True, env=env)
    services = json.loads(rendered.stdout)["services"]
    for role in ROLES:                       # the merged anchors: hardened and checked
        worker = services[f"ctrail-{role}"]
        assert worker["read_only"] is True and worker["cap_drop"] == ["ALL"], role
        assert worker["healthcheck"]["test"][:2] == ["CMD", "ctrail"], role


def test_the_image_gives_the_non_root_user_its_data_directory() -> None:
    # A named volume copies the mount point's owner from the image; without the directory in
    # the image, Docker creates it root's and a worker running as 10001 cannot write it.
    dockerfile = (REPO / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("FROM ", 1)[1]
    assert re.search(r"useradd [^\n]*--uid 10001[^\n]*ctrail", final_stage)
    assert "install -d -o ctrail -g ctrail -m 0700 /var/lib/ctrail/data" in final_stage
    assert final_stage.index("/var/lib/ctrail/data") < final_stage.index("USER ctrail")
    for role in ROLES:
        assert any(str(v).endswith(":/var/lib/ctrail/data")
                   for v in services()[f"ctrail-{role}"]["volumes"])


def test_every_listener_of_production_serves_tls_with_a_mounted_certificate() -> None:
    """Issue 14: the webhook and the ops server of every worker bound 0.0.0.0 over plain HTTP
    (the ops token crossed the network in the clear)."""
    from ctrail.settings import load_settings

    production = load_settings(REPO / "config" / "production.yaml")
    assert production.ops is not None and production.ops.tls_cert_file is not None
    webhooks = [s for s in production.sources.values() if hasattr(s, "tls_cert_file")]
    assert webhooks and all(s.tls_cert_file is not None for s in webhooks)
    for role in ROLES:
        targets = {secret["target"] for secret in services()[f"ctrail-{role}"]["secrets"]}
        assert {str(production.ops.tls_cert_file), str(production.ops.tls_key_file)} <= targets
