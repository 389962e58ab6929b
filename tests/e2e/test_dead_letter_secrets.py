"""Issue 14: records that cannot be parsed are dead-lettered without the secrets they carry."""

from __future__ import annotations

from pathlib import Path

from collector.redact import PREFIX

PLANTED = {
    "bearer": "PLANTEDdlqBearerZ1",
    "url password": "PLANTEDdlqUrlZ2",
    "password=": "PLANTEDdlqAssignZ3",
    "--token": "PLANTEDdlqFlagZ4",
    "json password": "PLANTEDdlqJsonZ5",
}
NOT_JSON = (f'curl -H "Authorization: Bearer {PLANTED["bearer"]}" '
            f'postgres://app:{PLANTED["url password"]}@db/app password={PLANTED["password="]} '
            f'--token {PLANTED["--token"]}\n')
CUT = ('{"kind":"Event","apiVersion":"audit.k8s.io/v1","requestObject":{"kind":"Pod",'
       f'"password":"{PLANTED["json password"]}","note":"' + "x" * 400 + '"}}\n')


def test_dead_letters_keep_no_secret(ctrail, tmp_path: Path, tmp_data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "small.yaml"
    config.write_text("pipeline: {max_record_bytes: 300}\n")
    log = tmp_path / "audit.log"
    log.write_text(NOT_JSON + CUT)
    ingested = ctrail("ingest", "--source", "k8s-audit", str(log), "--config", str(config))
    assert ingested.out.strip() == "0 accepted, 2 dead-lettered", ingested.err

    listed = ctrail("dlq", "list", "--format", "json", "--config", str(config))
    dead = {d["reason"]: d for d in listed.json_lines()}
    assert set(dead) == {"invalid_json", "record_too_large"}
    assert "password=" + PREFIX in dead["invalid_json"]["original"]
    assert '"password":"' + PREFIX in dead["record_too_large"]["original"]
    for what, value in PLANTED.items():
        assert value not in listed.out, f"{what} listed"
        assert value not in ingested.out + ingested.err, f"{what} printed"
    # Every file of the data directory, the raw log that intake wrote before parsing included
    # (intake scrubs: Parser.scrub).
    for path in tmp_data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for what, value in PLANTED.items():
                assert value.encode() not in data, f"{what} in {path}"
