"""Issue 14: `ctrail run` with an empty or blank token file stops with one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize("source", [
    "type: k8s_audit_webhook\n    port: 0\n    token: {file: TOKEN}",
    "type: fluent_forward\n    port: 0\n    shared_key: {file: TOKEN}",
])
def test_run_refuses_a_blank_token_file_with_one_line(source: str, tmp_path: Path,
                                                      ctrail_subprocess) -> None:  # type: ignore[no-untyped-def]
    token = tmp_path / "token"
    token.write_text("  \n")
    config = tmp_path / "ctrail.yaml"
    config.write_text("sources:\n  in:\n    " + source.replace("TOKEN", str(token)) + "\n")
    done = ctrail_subprocess("run", "--config", str(config), "--data-dir", str(tmp_path / "d"),
                             timeout=60)
    assert done.status == 2, done.err
    lines = done.err.strip().splitlines()
    assert lines[-1] == f"ctrail: error: the secret file {token} is empty or only white space"
    assert "Traceback" not in done.err
