"""Trust in the evidence key and in the open segment: an archive re-signed with another key, or
stripped of its key and signatures, fails against the pinned key; a record edited, removed or
inserted in the open segment before sealing is named (issue 14, "Ways in")."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from evidence_support import T0, make_event
from sinks.evidence import EvidenceConfig
from sinks.evidence.archive import EvidenceArchive
from sinks.evidence.chain import Chain, Signer
from sinks.evidence.keys import trusted_key
from sinks.evidence.open_segment import check_open
from sinks.evidence.verify import Result, key_fingerprint, manifest_hash, verify
from tests.signing_key import write_signing_key


def resign(root: Path, signer: Signer | None) -> None:
    """What an attacker who can write the archive does: rewrite every manifest's signature
    (or strip them), the head and public_key.pem, so the archive is consistent again."""
    chain = Chain.__new__(Chain)
    chain.root, chain.signer = root, signer
    if signer is None:
        (root / "public_key.pem").unlink()
    else:
        (root / "public_key.pem").write_bytes(signer.public_pem)
    from sinks.evidence.verify import GENESIS, canonical
    prev = GENESIS
    for path in sorted((root / "manifests").glob("*.json")):
        m = {k: v for k, v in json.loads(path.read_bytes()).items()
             if k not in ("signature", "key_id")}
        m["prev"] = prev
        if signer is not None:
            m["key_id"] = signer.key_id
        prev = manifest_hash(m)
        if signer is not None:
            m["signature"] = signer.sign(prev)
        path.write_bytes(canonical(m))
    chain.seq, chain.head = int(path.stem), prev
    chain._write_head()


@pytest.fixture
def sealed(open_archive) -> Path:  # type: ignore[no-untyped-def]
    archive = open_archive()
    archive.write([make_event(i, T0 + timedelta(minutes=30 * i)) for i in range(4)])
    archive.seal_all()
    archive.close()
    return archive.root


def config_of(key_file: Path, **extra: object) -> EvidenceConfig:
    return EvidenceConfig.model_validate({"signing_key": {"file": str(key_file)}, **extra})


def trusted_findings(config: EvidenceConfig, root: Path) -> set[str]:
    trusted = trusted_key(config, root, None)
    result = verify(root, trusted.key)
    return {f.kind for f in result.findings} | ({trusted.problem.kind} if trusted.problem else set())


def test_a_re_signed_archive_fails_against_the_configured_key(sealed, key_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    resign(sealed, Signer(config_of(write_signing_key(tmp_path / "evil.pem")).signing_key))  # type: ignore[arg-type]
    assert verify(sealed, trusted_key(EvidenceConfig(), sealed, None).key).ok   # self-consistent
    assert trusted_findings(config_of(key_file), sealed) == {"bad_signature"}


def test_an_archive_stripped_of_key_and_signatures_fails(sealed, key_file) -> None:  # type: ignore[no-untyped-def]
    resign(sealed, None)
    assert verify(sealed, None).ok           # nothing left to check without a configured key
    assert trusted_findings(config_of(key_file), sealed) == {"bad_signature"}


def test_a_pinned_public_key_is_trusted_over_the_one_beside_the_archive(sealed, key_file,  # type: ignore[no-untyped-def]
                                                                         tmp_path) -> None:
    pinned = tmp_path / "pinned.pem"
    pinned.write_bytes((sealed / "public_key.pem").read_bytes())
    config = EvidenceConfig.model_validate({"public_key": str(pinned)})
    assert trusted_findings(config, sealed) == set()
    resign(sealed, Signer(config_of(write_signing_key(tmp_path / "evil.pem")).signing_key))  # type: ignore[arg-type]
    assert trusted_findings(config, sealed) == {"bad_signature"}


def test_a_fingerprint_pin_refuses_a_replaced_key_file(sealed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sinks.evidence.verify import load_public_key
    genuine = key_fingerprint(load_public_key((sealed / "public_key.pem").read_bytes()))
    config = EvidenceConfig.model_validate({"public_key_sha256": genuine})
    assert trusted_findings(config, sealed) == set()
    resign(sealed, Signer(config_of(write_signing_key(tmp_path / "evil.pem")).signing_key))  # type: ignore[arg-type]
    trusted = trusted_key(config, sealed, None)
    assert trusted.problem is not None and trusted.problem.kind == "key_untrusted"
    assert genuine in str(trusted.problem)
    resign(sealed, None)
    assert trusted_findings(config, sealed) == {"key_missing"}


def open_file(archive: EvidenceArchive) -> Path:
    (path,) = (archive.root / "open").glob("*.jsonl")
    return path


def edit(path: Path, event_id: str, change: bytes = b"mallory") -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(line.replace(b"alice", change) if event_id.encode() in line
                              else line for line in lines))


def open_findings(root: Path, key) -> list[tuple[str, str | None]]:  # type: ignore[no-untyped-def]
    result = Result(findings=[])
    check_open(root, key, result)
    return [(f.kind, f.record) for f in result.findings]


def test_an_edit_of_the_open_segment_is_named_by_verify_and_sealed_as_such(open_archive) -> None:  # type: ignore[no-untyped-def]
    archive = open_archive()
    archive.write([make_event(i, T0) for i in range(3)])
    key = archive.signer.public_key
    assert open_findings(archive.root, key) == []
    edit(open_file(archive), "ev00001")
    assert open_findings(archive.root, key) == [("modified", "ev00001")]
    archive.seal_all()
    (manifest,) = archive.chain.manifests()
    assert [(c["kind"], c["record"]) for c in manifest["altered_before_seal"]] == [
        ("modified", "ev00001")]
    found = verify(archive.root, key).findings
    assert [(f.kind, f.seq, f.record) for f in found] == [("modified", 1, "ev00001")]
    assert "before it was sealed" in str(found[0])


def test_an_edit_with_a_recomputed_chain_is_named_after_a_restart(open_archive) -> None:  # type: ignore[no-untyped-def]
    archive = open_archive()
    archive.write([make_event(i, T0) for i in range(3)])
    archive.write([make_event(3, T0)])
    archive.close()
    path = open_file(archive)
    edit(path, "ev00002")
    # The attacker recomputes the chain over the edited file; the signed head cannot follow.
    from sinks.evidence.open_segment import _chain_of, whole_lines
    chain = path.with_suffix(".chain")
    heads = [line for line in chain.read_bytes().splitlines(keepends=True)
             if line.startswith(b"#head")]
    chain.write_bytes(b"".join(f"{e} {r} {c}\n".encode()
                               for e, r, c in _chain_of(whole_lines(path.read_bytes())))
                      + heads[-1])
    assert open_findings(archive.root, archive.signer.public_key) == [("chain_broken", None)]
    archive = open_archive()
    archive.seal_all()
    (manifest,) = archive.chain.manifests()
    assert {c["kind"] for c in manifest["altered_before_seal"]} == {"chain_broken"}
    assert not verify(archive.root, archive.signer.public_key).ok


def test_a_removed_chain_file_is_named(open_archive) -> None:  # type: ignore[no-untyped-def]
    archive = open_archive()
    archive.write([make_event(i, T0) for i in range(3)])
    archive.close()
    open_file(archive).with_suffix(".chain").unlink()
    assert open_findings(archive.root, None) == [("chain_missing", None)]
    archive = open_archive()
    archive.seal_all()
    (manifest,) = archive.chain.manifests()
    assert {c["kind"] for c in manifest["altered_before_seal"]} == {"chain_missing",
                                                                      "bad_signature"}


def test_an_open_segment_of_an_older_version_is_chained_without_alarm(open_archive) -> None:  # type: ignore[no-untyped-def]
    archive = open_archive()
    archive.write([make_event(i, T0) for i in range(3)])
    archive.close()
    open_file(archive).with_suffix(".chain").unlink()     # as the previous release left it
    (archive.root / "open" / ".chained").unlink()
    archive = open_archive()
    archive.write([make_event(3, T0)])
    archive.seal_all()
    (manifest,) = archive.chain.manifests()
    assert "altered_before_seal" not in manifest and manifest["records"] == 4


def test_a_record_removed_from_the_open_segment_is_named_missing(open_archive) -> None:  # type: ignore[no-untyped-def]
    archive = open_archive()
    archive.write([make_event(i, T0) for i in range(3)])
    archive.close()
    path = open_file(archive)
    path.write_bytes(b"".join(line for line in path.read_bytes().splitlines(keepends=True)
                              if b"ev00000" not in line))
    assert open_findings(archive.root, None) == [("missing", "ev00000")]
    archive = open_archive()
    archive.seal_all()
    (manifest,) = archive.chain.manifests()
    assert [(c["kind"], c["record"]) for c in manifest["altered_before_seal"]] == [
        ("missing", "ev00000")]
    assert manifest["records"] == 2


def test_a_crash_between_record_and_chain_cuts_the_unacknowledged_record(open_archive) -> None:  # type: ignore[no-untyped-def]
    archive = open_archive()
    archive.write([make_event(1, T0)])
    archive.close()
    with open(open_file(archive), "ab") as out:    # written, then killed before chaining it
        out.write(json.dumps({"@timestamp": "2026-01-05T10:00:00Z", "event": {"id": "ev9"}})
                  .encode() + b"\n")
    archive = open_archive()
    archive.write([make_event(2, T0)])
    archive.seal_all()
    (manifest,) = archive.chain.manifests()
    assert "altered_before_seal" not in manifest and manifest["records"] == 2
    assert verify(archive.root, archive.signer.public_key).ok


def test_a_signing_key_that_is_not_the_pinned_key_stops_the_start(tmp_path, key_file) -> None:  # type: ignore[no-untyped-def]
    from ctrail.errors import ConfigError
    other = tmp_path / "other.pub"
    other_key = Signer(config_of(write_signing_key(tmp_path / "x.pem")).signing_key)  # type: ignore[arg-type]
    other.write_bytes(other_key.public_pem)
    with pytest.raises(ConfigError, match="not the pinned evidence.public_key"):
        EvidenceArchive(config_of(key_file, public_key=str(other)), tmp_path / "evidence")
