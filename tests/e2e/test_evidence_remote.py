"""Evidence off the host (issue 17, item 1): sealed segments, indexes and manifests copied to an
S3 bucket with Object Lock (moto in server mode on loopback, a real S3 API), with retention and
mirrored legal holds; a restart neither uploads twice nor forgets; a lost archive directory is
restored from the bucket and verifies; a changed remote object is named by `verify --remote`."""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest

from ctrail.errors import Unavailable
from ctrail.settings import load_settings
from sinks.evidence.remote import STATE_FILE, RemoteArchive
from tests.signing_key import write_signing_key

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "samples/k8s-audit").glob("*.json"))[:10]    # a few segments suffice
HOLD = '[{name: case-42, from: "2018-10-01T00:00:00Z", to: "2018-11-01T00:00:00Z"}]'


@pytest.fixture
def bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    monkeypatch.setenv("TEST_S3_KEY_ID", "AKIDEVIDENCE")
    monkeypatch.setenv("TEST_S3_SECRET", "evidence-secret")
    name = f"evidence-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id="AKIDEVIDENCE", aws_secret_access_key="evidence-secret")
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name, s3


def write_config(tmp_path: Path, endpoint: str, bucket: str, holds: str = HOLD) -> Path:
    key = tmp_path / "signing.pem"
    if not key.exists():
        write_signing_key(key)
    path = tmp_path / "ctrail.yaml"
    path.write_text(f"""evidence:
  signing_key: {{file: {key}}}
  seal_after_secs: 0
  legal_holds: {holds}
  remote:
    bucket: {bucket}
    endpoint_url: {endpoint}
    prefix: prod/evidence/
    lock_mode: GOVERNANCE
    retain_days: 2
    access_key_id: {{env: TEST_S3_KEY_ID}}
    secret_access_key: {{env: TEST_S3_SECRET}}
""")
    return path


def scheduled_pass(config: Path, data_dir: Path) -> None:
    """What `ctrail run`'s scheduler does every minute: seal what is due, then copy it."""
    from ctrail.runtime.scheduler import Scheduler
    scheduler = Scheduler(load_settings(config, data_dir))
    try:
        scheduler.run("evidence:seal")
    finally:
        scheduler.stop()


def remote_of(config: Path, data_dir: Path) -> RemoteArchive:
    settings = load_settings(config, data_dir)
    assert settings.evidence is not None and settings.evidence.remote is not None
    return RemoteArchive(settings.evidence.remote, settings.evidence.root(data_dir))


@pytest.fixture
def uploaded(ctrail, tmp_path, tmp_data_dir, moto_endpoint, bucket) -> Path:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path, moto_endpoint, bucket[0])
    result = ctrail("ingest", "--config", str(config), "--source", "k8s-audit", *map(str, SAMPLES))
    assert result.status == 0, result.err
    scheduled_pass(config, tmp_data_dir)
    return config


def versions(s3: Any, bucket: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in s3.list_object_versions(Bucket=bucket).get("Versions", []):
        found.setdefault(entry["Key"], []).append(entry)
    return found


def test_sealed_evidence_is_in_the_bucket_locked_and_held(uploaded, bucket, tmp_data_dir) -> None:  # type: ignore[no-untyped-def]
    name, s3 = bucket
    archive = tmp_data_dir / "evidence"
    local = sorted(str(p.relative_to(archive)) for p in archive.glob("*/*") if p.is_file()
                   and p.parent.name in ("segments", "manifests"))
    found = versions(s3, name)
    assert sorted(k.removeprefix("prod/evidence/") for k in found
                  if k.count("/") == 3) == local
    assert {"prod/evidence/head.json", "prod/evidence/public_key.pem"} <= set(found)
    assert all(len(v) == 1 for v in found.values())
    head = s3.head_object(Bucket=name, Key="prod/evidence/segments/00000001.jsonl.gz")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert head["ObjectLockRetainUntilDate"] > datetime.now(timezone.utc)
    assert head["ObjectLockLegalHoldStatus"] == "ON"           # case-42 covers October 2018
    assert head["Metadata"]["sha256"] == __import__("hashlib").sha256(
        (archive / "segments/00000001.jsonl.gz").read_bytes()).hexdigest()


def test_verify_remote_passes_and_a_restart_uploads_nothing_again(ctrail, uploaded, bucket,  # type: ignore[no-untyped-def]
                                                                  tmp_data_dir) -> None:
    result = ctrail("evidence", "verify", "--remote", "--config", str(uploaded))
    assert result.status == 0, result.out
    again = remote_of(uploaded, tmp_data_dir).sync(())
    assert again.uploaded == [] and again.recorded == []
    # The state file lost (or written before a crash): what is in the bucket is recognised.
    (tmp_data_dir / "evidence" / STATE_FILE).unlink()
    again = remote_of(uploaded, tmp_data_dir).sync(load_settings(uploaded).evidence.legal_holds)  # type: ignore[union-attr]
    assert again.uploaded == [] and len(again.recorded) > 4
    assert all(len(v) == 1 for v in versions(bucket[1], bucket[0]).values())


def test_a_lost_archive_directory_is_restored_and_verifies(ctrail, uploaded, tmp_data_dir) -> None:  # type: ignore[no-untyped-def]
    archive = tmp_data_dir / "evidence"
    before = {p.relative_to(archive): p.read_bytes() for p in archive.rglob("*")
              if p.is_file() and p.parent.name in ("segments", "manifests")}
    shutil.rmtree(archive)
    result = ctrail("evidence", "restore", "--config", str(uploaded))
    assert result.status == 0, result.out + result.err
    assert f"restored {len(before) + 2} files" in result.out
    assert "signatures checked with key" in result.out and result.out.rstrip().endswith(": OK")
    after = {p.relative_to(archive): p.read_bytes() for p in archive.rglob("*")
             if p.is_file() and p.parent.name in ("segments", "manifests")}
    assert after == before
    assert ctrail("evidence", "verify", "--remote", "--config", str(uploaded)).status == 0


def test_verify_remote_names_a_changed_remote_object(ctrail, uploaded, bucket) -> None:  # type: ignore[no-untyped-def]
    name, s3 = bucket
    key = "prod/evidence/segments/00000002.jsonl.gz"
    (version,) = versions(s3, name)[key]
    s3.put_object_legal_hold(Bucket=name, Key=key, VersionId=version["VersionId"],
                             LegalHold={"Status": "OFF"})
    s3.delete_object(Bucket=name, Key=key, VersionId=version["VersionId"],
                     BypassGovernanceRetention=True)           # GOVERNANCE lets this role in
    s3.put_object(Bucket=name, Key=key, Body=b"rewritten")
    manifest = "prod/evidence/manifests/00000001.json"
    s3.put_object(Bucket=name, Key=manifest, Body=b"{}")       # a second version on top
    result = ctrail("evidence", "verify", "--remote", "--config", str(uploaded))
    assert result.status == 1
    lines = result.out.splitlines()
    assert any(line.startswith("REMOTE_MODIFIED: segment 2: " + key) and "SHA-256 differs" in line
               for line in lines), result.out
    assert any(line.startswith("REMOTE_UNLOCKED: segment 2: " + key) for line in lines)
    assert any(line.startswith("REMOTE_HOLD: segment 2: " + key) for line in lines)
    assert any(line.startswith(f"REMOTE_MODIFIED: segment 1: {manifest}") and "2 versions" in line
               for line in lines)
    named = {line.split(": ")[2].split(" ")[0] for line in lines if line.startswith("REMOTE_")}
    assert named == {key, manifest}


def test_lifting_a_legal_hold_is_mirrored(ctrail, uploaded, bucket, tmp_path, moto_endpoint,  # type: ignore[no-untyped-def]
                                          tmp_data_dir) -> None:
    name, s3 = bucket
    lifted = write_config(tmp_path, moto_endpoint, name, holds="[]")
    result = remote_of(lifted, tmp_data_dir).sync(())
    assert result.uploaded == [] and result.holds_changed
    head = s3.head_object(Bucket=name, Key="prod/evidence/segments/00000001.jsonl.gz")
    assert head["ObjectLockLegalHoldStatus"] == "OFF"
    assert ctrail("evidence", "verify", "--remote", "--config", str(lifted)).status == 0
    # Checked against a config that still holds them, the lifted holds are named.
    held = write_config(tmp_path, moto_endpoint, name)
    result = ctrail("evidence", "verify", "--remote", "--config", str(held))
    assert result.status == 1 and "REMOTE_HOLD: segment 1: " in result.out
    assert "legal hold OFF, our legal holds say ON" in result.out


def test_an_unreachable_bucket_is_retried_after_a_backoff(uploaded, tmp_data_dir) -> None:  # type: ignore[no-untyped-def]
    (tmp_data_dir / "evidence" / STATE_FILE).unlink()
    remote = remote_of(uploaded, tmp_data_dir)
    remote.config = remote.config.model_copy(update={"endpoint_url": "http://127.0.0.1:9",
                                                     "max_attempts": 1})
    from sinks.evidence.remote import client
    remote.s3 = client(remote.config)
    with pytest.raises(Unavailable, match="evidence remote"):
        remote.sync(())
    assert remote.state["failures"] == 1
    assert remote.sync(()).skipped                    # waits out its backoff
    remote.state["retry_at"] = 0
    remote.s3 = client(remote_of(uploaded, tmp_data_dir).config)
    assert remote.sync(()).uploaded == [] and "failures" not in remote.state


def test_timestamp_tokens_travel_through_the_bucket(ctrail, tmp_path, tmp_data_dir, moto_endpoint,  # type: ignore[no-untyped-def]
                                                     bucket) -> None:
    from tests.services.tsa import LoopbackTsa
    tsa = LoopbackTsa(tmp_path / "tsa")
    config = write_config(tmp_path, moto_endpoint, bucket[0])
    config.write_text(config.read_text().replace("  remote:\n", f"""  timestamp:
    url: {tsa.start()}
    ca_file: {tsa.ca_file}
    tsa_cert: {tsa.cert_file}
  remote:
"""))
    try:
        assert ctrail("ingest", "--config", str(config), "--source", "k8s-audit",
                      *map(str, SAMPLES[:4])).status == 0
        scheduled_pass(config, tmp_data_dir)
    finally:
        tsa.stop()
    archive = tmp_data_dir / "evidence"
    tokens = sorted(p.name for p in (archive / "manifests").glob("*.tst"))
    assert tokens and len(tokens) == len(list((archive / "manifests").glob("*.json")))
    keys = set(versions(bucket[1], bucket[0]))
    assert {f"prod/evidence/manifests/{name}" for name in tokens} | {
        "prod/evidence/tsa_ca.pem", "prod/evidence/tsa_cert.pem"} <= keys
    shutil.rmtree(archive)
    result = ctrail("evidence", "restore", "--config", str(config))
    assert result.status == 0, result.out
    assert "timestamps checked against evidence.timestamp: OK" in result.out
    assert sorted(p.name for p in (archive / "manifests").glob("*.tst")) == tokens


def test_every_object_can_go_up_in_parts(ctrail, uploaded, bucket, tmp_path, moto_endpoint,  # type: ignore[no-untyped-def]
                                         tmp_data_dir, monkeypatch) -> None:
    """The multipart path end to end (one part each: S3 allows a small last part): locked,
    held and verified like a single PUT."""
    from sinks.evidence import multipart
    monkeypatch.setattr(multipart, "MULTIPART_ABOVE", 0)
    other = f"{bucket[0]}-parts"
    bucket[1].create_bucket(Bucket=other, ObjectLockEnabledForBucket=True)
    config = write_config(tmp_path, moto_endpoint, other)
    (tmp_data_dir / "evidence" / STATE_FILE).unlink()
    result = remote_of(config, tmp_data_dir).sync(load_settings(config).evidence.legal_holds)  # type: ignore[union-attr]
    assert len(result.uploaded) > 4
    head = bucket[1].head_object(Bucket=other, Key="prod/evidence/segments/00000001.jsonl.gz")
    assert (head["ObjectLockMode"], head["ObjectLockLegalHoldStatus"]) == ("GOVERNANCE", "ON")
    assert ctrail("evidence", "verify", "--remote", "--config", str(config)).status == 0


class CutAfter:
    """An S3 client whose connection drops after `parts` parts of an upload."""

    def __init__(self, s3: Any, parts: int) -> None:
        self.s3, self.parts, self.sent = s3, parts, 0

    def upload_part(self, **kwargs: Any) -> Any:
        if self.sent == self.parts:
            from botocore.exceptions import EndpointConnectionError
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1")
        self.sent += 1
        return self.s3.upload_part(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.s3, name)


def test_an_upload_cut_short_resumes_after_the_parts_the_bucket_holds(bucket, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import hashlib
    import os
    from datetime import timedelta

    from botocore.exceptions import EndpointConnectionError

    from sinks.evidence.multipart import Target, upload_in_parts
    name, s3 = bucket
    big = tmp_path / "big.jsonl.gz"
    big.write_bytes(os.urandom(11 * 1024 * 1024))            # three parts of 5 MiB (the last 1)
    sha256 = hashlib.sha256(big.read_bytes()).hexdigest()
    target = Target(name, "prod/big", sha256, "GOVERNANCE",
                    datetime.now(timezone.utc) + timedelta(days=1), False)
    saved: list[Any] = [None]
    part = 5 * 1024 * 1024
    with pytest.raises(EndpointConnectionError):
        upload_in_parts(CutAfter(s3, 1), target, big, None, lambda u: saved.append(u), part)
    assert saved[-1] is not None and saved[-1]["sha256"] == sha256
    resumed = CutAfter(s3, 99)
    version = upload_in_parts(resumed, target, big, saved[-1], lambda u: saved.append(u), part)
    assert resumed.sent == 2 and saved[-1] is None            # parts 2 and 3, not part 1 again
    body = s3.get_object(Bucket=name, Key="prod/big", VersionId=version)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == sha256
    head = s3.head_object(Bucket=name, Key="prod/big", VersionId=version)
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["Metadata"]["sha256"] == sha256
    assert len(versions(s3, name)["prod/big"]) == 1
