"""Trusted timestamps (issue 17, item 2): every sealed manifest gets an RFC 3161 token from the
configured TSA (a real one on loopback: `openssl ts -reply` behind HTTP); `ctrail evidence
verify` and an exported bundle's standalone verifier check it, and name a token that does not
match its manifest or that another TSA signed. A TSA that is down delays tokens, not sealing."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Iterator

import pytest

from ctrail.errors import Unavailable
from ctrail.settings import load_settings
from sinks.evidence import EvidenceTimestampConfig
from sinks.evidence.archive import EvidenceArchive
from sinks.evidence.timestamp import Stamper
from sinks.evidence.verify import TsaTrust, manifest_hash, token_problem
from tests.services.tsa import LoopbackTsa
from tests.signing_key import write_signing_key

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "samples/k8s-audit").glob("*.json"))[:6]
RANGE = ("--from", "2018-10-01T00:00:00Z", "--to", "2018-11-01T00:00:00Z")


@pytest.fixture(scope="module")
def tsas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LoopbackTsa]]:
    """Ours; a stranger with its own CA; a sibling our CA also certified (refused when our
    TSA's certificate is pinned)."""
    root = tmp_path_factory.mktemp("tsa")
    ours = LoopbackTsa(root / "ours", "Our TSA")
    found = {"ours": ours, "stranger": LoopbackTsa(root / "stranger", "Stranger TSA"),
             "sibling": LoopbackTsa(root / "sibling", "Sibling TSA", ca_dir=ours.directory)}
    yield found
    for tsa in found.values():
        tsa.stop()


@pytest.fixture
def tsa_url(tsas: dict[str, LoopbackTsa]) -> Iterator[str]:
    url = tsas["ours"].start()
    yield url
    tsas["ours"].stop()


def write_config(tmp_path: Path, url: str, tsa: LoopbackTsa, pin: bool = True) -> Path:
    key = tmp_path / "signing.pem"
    write_signing_key(key)
    path = tmp_path / "ctrail.yaml"
    pinned = f"\n    tsa_cert: {tsa.cert_file}" if pin else ""
    path.write_text(f"""evidence:
  signing_key: {{file: {key}}}
  seal_after_secs: 0
  timestamp:
    url: {url}
    ca_file: {tsa.ca_file}{pinned}
""")
    return path


@pytest.fixture
def stamped(ctrail, tmp_path, tsa_url, tsas, tmp_data_dir) -> Path:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path, tsa_url, tsas["ours"])
    result = ctrail("ingest", "--config", str(config), "--source", "k8s-audit", *map(str, SAMPLES))
    assert result.status == 0, result.err
    return config


def manifests_dir(data_dir: Path) -> Path:
    return data_dir / "evidence" / "manifests"


def foreign_token(tsa: LoopbackTsa, manifest: Path, into: Path) -> None:
    """A genuine token of another TSA over the same manifest hash."""
    url = tsa.start()
    try:
        stamper = Stamper(EvidenceTimestampConfig(url=url, ca_file=tsa.ca_file),
                          into.parent.parent / "scratch")
        into.write_bytes(stamper.stamp(manifest_hash(json.loads(manifest.read_bytes()))))
        stamper.close()
    finally:
        tsa.stop()


def test_every_manifest_is_stamped_and_verifies(ctrail, stamped, tmp_data_dir, tsas) -> None:  # type: ignore[no-untyped-def]
    manifests = sorted(manifests_dir(tmp_data_dir).glob("*.json"))
    tokens = sorted(manifests_dir(tmp_data_dir).glob("*.tst"))
    assert len(manifests) >= 2 and [t.stem for t in tokens] == [m.stem for m in manifests]
    assert tsas["ours"].refused == [] and tsas["ours"].answered >= len(manifests)
    result = ctrail("evidence", "verify", "--store", "--config", str(stamped))
    assert result.status == 0, result.out
    assert "timestamps checked against evidence.timestamp: OK" in result.out


def test_a_token_of_another_manifest_is_named(ctrail, stamped, tmp_data_dir) -> None:  # type: ignore[no-untyped-def]
    first, second = sorted(manifests_dir(tmp_data_dir).glob("*.tst"))[:2]
    first_bytes = first.read_bytes()
    first.write_bytes(second.read_bytes())
    second.write_bytes(first_bytes)
    result = ctrail("evidence", "verify", "--store", "--config", str(stamped))
    assert result.status == 1
    named = [line for line in result.out.splitlines() if line.startswith("BAD_TIMESTAMP")]
    assert named == [f"BAD_TIMESTAMP: segment {int(p.stem)}: the token's message imprint is not "
                     "this manifest's hash" for p in (first, second)]


@pytest.mark.parametrize("other", ["stranger", "sibling"])
def test_a_token_signed_by_another_tsa_is_named(ctrail, stamped, tmp_data_dir, tsas,  # type: ignore[no-untyped-def]
                                                 other) -> None:
    token = sorted(manifests_dir(tmp_data_dir).glob("*.tst"))[0]
    foreign_token(tsas[other], token.with_suffix(".json"), token)
    result = ctrail("evidence", "verify", "--store", "--config", str(stamped))
    assert result.status == 1
    (named,) = [line for line in result.out.splitlines() if line.startswith("BAD_TIMESTAMP")]
    assert named.startswith(f"BAD_TIMESTAMP: segment {int(token.stem)}: not signed by the "
                            "configured TSA")


def test_the_bundle_verifier_checks_tokens(ctrail, stamped, tmp_data_dir, tmp_path, tsas) -> None:  # type: ignore[no-untyped-def]
    bundle = tmp_path / "evidence.tar"
    assert ctrail("evidence", "export", *RANGE, "--out", str(bundle),
                  "--config", str(stamped)).status == 0
    unpacked = tmp_path / "unpacked"
    with tarfile.open(bundle) as tar:
        tar.extractall(unpacked, filter="data")

    def standalone(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-I", str(unpacked / "verify.py"), str(unpacked),
                               *flags], capture_output=True, text=True, cwd=tmp_path)

    ours = tsas["ours"]
    pinned = ("--tsa-ca", str(ours.ca_file), "--tsa-cert", str(ours.cert_file))
    done = standalone(*pinned)
    assert done.returncode == 0 and "timestamps checked, signatures checked: OK" in done.stdout, done.stdout
    tokens = sorted((unpacked / "manifests").glob("*.tst"))
    assert len(tokens) == len(list((unpacked / "manifests").glob("*.json")))
    tokens[0].write_bytes(tokens[1].read_bytes())                   # not this manifest's
    foreign_token(tsas["stranger"], tokens[2].with_suffix(".json"), tokens[2])
    for flags in (pinned, ()):                 # the auditor's certificates, or the bundle's own
        done = standalone(*flags)
        assert done.returncode == 1
        named = sorted(line for line in done.stdout.splitlines() if "TIMESTAMP" in line)
        assert named[0] == (f"BAD_TIMESTAMP: segment {int(tokens[0].stem)}: the token's "
                            "message imprint is not this manifest's hash")
        assert named[1].startswith(f"BAD_TIMESTAMP: segment {int(tokens[2].stem)}: not signed "
                                   "by the configured TSA")
        assert len(named) == 2
    # A token removed from the bundle is named too, once the auditor says whom to trust.
    tokens[3].unlink()
    done = standalone(*pinned)
    assert f"TIMESTAMP_MISSING: segment {int(tokens[3].stem)}" in done.stdout


def test_a_tsa_that_is_down_delays_tokens_not_sealing(ctrail, tmp_path, tsas, tmp_data_dir) -> None:  # type: ignore[no-untyped-def]
    ours = tsas["ours"]
    port = int(ours.start().rsplit(":", 1)[1].split("/")[0])
    ours.stop()
    config = write_config(tmp_path, f"http://127.0.0.1:{port}/tsa", ours)
    result = ctrail("ingest", "--config", str(config), "--source", "k8s-audit", *map(str, SAMPLES))
    assert result.status == 0, result.err
    manifests = sorted(manifests_dir(tmp_data_dir).glob("*.json"))
    assert manifests and not list(manifests_dir(tmp_data_dir).glob("*.tst"))
    result = ctrail("evidence", "verify", "--store", "--config", str(config))
    assert result.status == 1 and result.out.count("TIMESTAMP_MISSING") == len(manifests)
    settings = load_settings(config, tmp_data_dir)
    assert settings.evidence is not None
    archive = EvidenceArchive.open_shared(settings.evidence, tmp_data_dir)
    try:
        assert archive.timestamps is not None
        archive.catch_up()                                 # the scheduler's pass: still down
        assert archive.timestamps.failures == 1 and archive.timestamps.retry_at > 0
        ours.start(port)
        archive.catch_up()                                 # within the backoff: waits
        assert not list(manifests_dir(tmp_data_dir).glob("*.tst"))
        archive.timestamps.retry_at = 0                    # the backoff has passed
        archive.catch_up()
    finally:
        archive.close()
        ours.stop()
    assert len(list(manifests_dir(tmp_data_dir).glob("*.tst"))) == len(manifests)
    assert ctrail("evidence", "verify", "--store", "--config", str(config)).status == 0


def test_a_reply_that_does_not_answer_the_request_is_refused(tsas, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ours = tsas["ours"]
    ours.stamp_other_data = True
    try:
        url = ours.start()
        stamper = Stamper(EvidenceTimestampConfig(url=url, ca_file=ours.ca_file), tmp_path)
        with pytest.raises(Unavailable, match="does not answer our request"):
            stamper.stamp("ab" * 32)
        stamper.close()
    finally:
        ours.stamp_other_data = False
        ours.stop()


def test_token_problem_needs_the_pinned_certificate(tsas, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sibling = tsas["sibling"]
    url = sibling.start()
    try:
        stamper = Stamper(EvidenceTimestampConfig(url=url, ca_file=sibling.ca_file), tmp_path)
        token = tmp_path / "t.tst"
        token.write_bytes(stamper.stamp("cd" * 32))
        stamper.close()
    finally:
        sibling.stop()
    ours = tsas["ours"]
    assert token_problem(token, "cd" * 32, TsaTrust(ours.ca_file, None)) is None   # same CA
    problem = token_problem(token, "cd" * 32, TsaTrust(ours.ca_file, ours.cert_file))
    assert problem is not None and problem.startswith("not signed by the configured TSA")


def test_a_pinned_tsa_certificate_must_come_from_the_ca(tsas) -> None:  # type: ignore[no-untyped-def]
    from sinks.evidence.verify import tsa_chain_problem
    ours, stranger, sibling = tsas["ours"], tsas["stranger"], tsas["sibling"]
    assert tsa_chain_problem(TsaTrust(ours.ca_file, ours.cert_file)) is None
    assert tsa_chain_problem(TsaTrust(ours.ca_file, sibling.cert_file)) is None
    problem = tsa_chain_problem(TsaTrust(ours.ca_file, stranger.cert_file))
    assert problem is not None and "not a timestamping certificate of ca.crt" in problem
    # A CA certificate is no TSA certificate (no timeStamping extended key usage).
    assert tsa_chain_problem(TsaTrust(ours.ca_file, ours.ca_file)) is not None


def test_a_tombstone_is_stamped_too(ctrail, stamped, tmp_data_dir) -> None:  # type: ignore[no-untyped-def]
    # The samples are from 2018: past every retention period, so expiry deletes them all.
    result = ctrail("evidence", "expire", "--config", str(stamped))
    assert result.status == 0 and "expired" in result.out, result.out + result.err
    last = max(manifests_dir(tmp_data_dir).glob("*.json"))
    assert json.loads(last.read_bytes())["type"] == "tombstone"
    assert last.with_suffix(".tst").exists()
    verified = ctrail("evidence", "verify", "--store", "--config", str(stamped))
    assert verified.status == 0, verified.out
