"""Issue 14: secrets in Docker events, container log lines and registry notifications are hashed at
intake (RedactingParser.scrub) as in audit events; records that hold none stay byte for byte.

tests/e2e/test_planted_secrets.py found these stored in clear by a real `ctrail run`: a Docker
exec's `--password=`, a container label named like a credential, a URL password or `?token=`
in a log line, a Distribution target URL or a Harbor replication endpoint.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from collector.parsers.common import RedactingParser
from collector.parsers.cri_log import ContainerLogParser
from collector.parsers.distribution import DistributionParser
from collector.parsers.docker_event import DockerEventParser
from collector.parsers.harbor import HarborParser
from collector.redact import HINT, Redactor, hinted
from ctrail.components import RawRecord

SECRET = "s3cr3t-Planted-value-91"
CID = "7c1e9a3b5d2f4c6e8a0b1d3f5e7a9c2b4d6f8e0a1c3e5a7b9d1f3e5a7c9b1d3f"
LOG_PATH = f"/var/log/containers/checkout-5d8f_shop_app-{CID}.log"
DOCKER_EXEC = orjson.dumps({
    "Type": "container", "Action": f"exec_create: mysql -uroot --password={SECRET} orders",
    "Actor": {"ID": CID, "Attributes": {"image": "registry.example.com/shop/checkout:1.4.2",
                                        "name": "checkout"}},
    "time": 1795171380, "timeNano": 1795171380000000001})
DOCKER_LABEL = orjson.dumps({
    "event": {"Type": "container", "Action": "start", "Actor": {"ID": CID, "Attributes": {
        "image": "registry.example.com/shop/checkout:1.4.2", "name": "checkout",
        "com.example.db-password": SECRET}}, "time": 1795171381},
    "inspect": {"Config": {"Labels": {"API_TOKEN": SECRET, "team": "payments"}}}})
DOCKER_TEXT = (f"2026-11-20T10:43:02.000000000Z container exec_start: sh -c export GITHUB_TOKEN="
               f"{SECRET} {CID} (image=registry.example.com/shop/checkout:1.4.2, name=checkout)"
               ).encode()
CRI_URL = (f"2026-11-20T10:43:03.000000001Z stdout F connecting to postgres://app:{SECRET}"
           "@db.shop.svc:5432/orders").encode()
JSON_FILE = orjson.dumps({"log": f'curl -H "Authorization: Bearer {SECRET}" https://api\n',
                          "stream": "stderr", "time": "2026-11-20T10:43:04.000000001Z"})
# A reassembled record: two json-file pieces of one line, the secret in the second.
PIECES = (orjson.dumps({"log": "login ok for app ", "stream": "stdout",
                        "time": "2026-11-20T10:43:05.000000001Z"}) + b"\n"
          + orjson.dumps({"log": f"password={SECRET}\n", "stream": "stdout",
                          "time": "2026-11-20T10:43:05.000000002Z"}))
DISTRIBUTION = orjson.dumps({"events": [{
    "id": "e-1", "timestamp": "2026-11-20T10:43:06Z", "action": "push",
    "target": {"repository": "shop/checkout", "digest": "sha256:" + "ab" * 32,
               "url": f"https://ci:{SECRET}@registry.example.com/v2/shop/checkout/manifests/x"},
    "request": {"addr": "203.0.113.7:4711", "host": "registry.example.com", "method": "PUT"},
    "actor": {"name": "alice"}}]})
HARBOR = orjson.dumps({
    "type": "REPLICATION", "occur_at": 1795171380, "operator": "MANUAL",
    "event_data": {"replication": {"job_status": "Success", "dest_resource": {
        "registry_type": "harbor", "namespace": "shop",
        "endpoint": f"https://hub.example.com/v2/?access_token={SECRET}"}}}})

CASES = {
    "docker exec --password=": (DockerEventParser, DOCKER_EXEC, "--password=hmac-sha256:"),
    "docker labels": (DockerEventParser, DOCKER_LABEL, '"com.example.db-password":"hmac-sha256:'),
    "docker text exec": (DockerEventParser, DOCKER_TEXT, "GITHUB_TOKEN=hmac-sha256:"),
    "cri url password": (ContainerLogParser, CRI_URL, "postgres://app:hmac-sha256:"),
    "json-file bearer": (ContainerLogParser, JSON_FILE, "Bearer hmac-sha256:"),
    "json-file pieces": (ContainerLogParser, PIECES, "password=hmac-sha256:"),
    "distribution url": (DistributionParser, DISTRIBUTION, "https://ci:hmac-sha256:"),
    "harbor endpoint": (HarborParser, HARBOR, "access_token=hmac-sha256:"),
}


def record(data: bytes) -> RawRecord:
    return RawRecord(data, f"{LOG_PATH}:1", datetime(2026, 11, 20, tzinfo=timezone.utc))


@pytest.mark.parametrize("case", CASES)
def test_a_secret_is_hashed_at_intake_and_the_record_still_parses(case: str) -> None:
    parser_type, raw, kept = CASES[case]
    redactor = Redactor(b"k" * 32)
    parser: RedactingParser = parser_type(redactor)
    scrubbed = parser.scrub(raw)
    assert SECRET.encode() not in scrubbed
    assert redactor.digest(SECRET).encode() in scrubbed
    assert scrubbed.count(b"\n") == raw.count(b"\n")         # one line each, as read
    events = parser.parse(record(scrubbed))              # type: ignore[attr-defined]
    stored = "\n".join(e.model_dump_json(by_alias=True) for e in events)
    assert events and SECRET not in stored
    assert kept in stored
    assert parser.scrub(scrubbed) == scrubbed            # hashing twice changes nothing


# Pieces of one long line cut where the runtime's 16 KiB buffer ended: the secret, and in the
# CRI case the word naming it, are whole in no piece.
CUT = len("password=s3cr3t-Plan")
CRI_CUT = (b"2026-11-20T10:43:07.000000001Z stdout P db login " + b"x" * 40 + b" pass\n"
           b"2026-11-20T10:43:07.000000002Z stdout P word=s3cr3t-Plan\n"
           b"2026-11-20T10:43:07.000000003Z stdout F ted-value-91 ok")
JSON_FILE_CUT = b"\n".join(orjson.dumps({"log": part, "stream": "stderr",
                                         "time": f"2026-11-20T10:43:08.00000000{i}Z"})
                           for i, part in enumerate(["retry with " + f"password={SECRET}"[:CUT],
                                                     f"password={SECRET}"[CUT:] + " done\n"]))


@pytest.mark.parametrize("raw", [CRI_CUT, JSON_FILE_CUT], ids=["cri", "json-file"])
def test_a_secret_cut_between_the_pieces_of_a_long_line_is_hashed(raw: bytes) -> None:
    redactor = Redactor(b"k" * 32)
    parser = ContainerLogParser(redactor)
    scrubbed = parser.scrub(raw)
    assert b"s3cr3t" not in scrubbed and b"ted-value-91" not in scrubbed
    assert scrubbed.count(b"\n") == raw.count(b"\n")     # the same pieces, each with its time
    (event,) = parser.parse(record(scrubbed))
    assert event.message is not None and "s3cr3t" not in event.message
    assert f"password={redactor.digest(SECRET)}" in event.message
    assert event.message.startswith(("db login", "retry with"))
    assert event.message.endswith(("ok", "done"))
    assert parser.scrub(scrubbed) == scrubbed


def test_what_names_a_secret_and_the_rest_of_the_record_stay() -> None:
    parser = DockerEventParser(Redactor(b"k" * 32))
    (event,) = parser.parse(record(parser.scrub(DOCKER_LABEL)))
    assert event.container is not None and event.container.labels == {
        "API_TOKEN": Redactor(b"k" * 32).digest(SECRET), "team": "payments"}
    assert event.container.image is not None
    assert event.container.image.name == "registry.example.com/shop/checkout"
    (log,) = ContainerLogParser(Redactor(b"k" * 32)).parse(record(
        ContainerLogParser(Redactor(b"k" * 32)).scrub(PIECES)))
    assert log.message is not None and log.message.startswith("login ok for app password=hmac")


SAMPLES = [("docker-events/*.jsonl", DockerEventParser, False),
           ("docker-events/*.txt", DockerEventParser, False),
           ("fluentbit-k8s-container-logs/**/*.log", ContainerLogParser, False),
           ("distribution-notifications/*.json", DistributionParser, True),
           ("registry-webhooks-other/**/*.json", DistributionParser, True),
           ("harbor-webhooks/*.json", HarborParser, True)]


@pytest.mark.parametrize(("pattern", "parser_type", "whole"), SAMPLES)
def test_real_records_without_secrets_are_kept_byte_for_byte(
        real_data: Path, pattern: str, parser_type: type[RedactingParser], whole: bool) -> None:
    parser = parser_type(Redactor(b"k" * 32))
    records = [line for path in sorted(real_data.glob(pattern)) if path.is_file()
               for line in ([path.read_bytes()] if whole else path.read_bytes().splitlines())
               if line.strip()]
    assert records
    assert [r for r in records if parser.scrub(r) is not r] == []


def test_the_byte_hint_answers_as_the_policy_hint_does(real_data: Path) -> None:
    by_definition = re.compile(HINT.pattern.encode())
    samples = [line for path in sorted(real_data.glob("fluentbit-k8s-container-logs/**/*.log"))
               for line in path.read_bytes().splitlines()]
    samples += [b"DB_PASSWORD=x", b"Authorization: BEARER x", b"eyJhbGciOi", b"x EYJ y",
                b"GH_PAT", b"POSTGRES://A:B@C", b"%3A%2F%2F", b"nothing to see", b"ke y"]
    assert [hinted(s) for s in samples] == [bool(by_definition.search(s)) for s in samples]
    assert sum(hinted(s) for s in samples) == 7


def test_an_image_named_like_a_credential_keeps_its_tag() -> None:
    redactor = Redactor(b"k" * 32)
    image = "registry.example.com/shop/token-service:1.4.2"
    docker = DockerEventParser(redactor)
    raw = DOCKER_EXEC.replace(b"registry.example.com/shop/checkout:1.4.2", image.encode())
    (event,) = docker.parse(record(docker.scrub(raw)))
    assert event.container is not None and event.container.image is not None
    assert (event.container.image.name, event.container.image.tag) == (
        "registry.example.com/shop/token-service", ("1.4.2",))
    pod = {"kind": "Pod", "spec": {"containers": [{"name": "app", "image": "secret-manager:1.0",
                                                    "env": [{"name": "API_TOKEN", "value": "x"}]}]}}
    redacted = redactor.audit({"requestObject": pod})
    assert redacted is not None
    container = redacted["requestObject"]["spec"]["containers"][0]
    assert container["image"] == "secret-manager:1.0"
    assert container["env"][0]["value"] == redactor.digest("x")
