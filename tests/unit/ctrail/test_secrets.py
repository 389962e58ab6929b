"""Issue 14: an empty or whitespace-only secret must stop the start, never turn auth off."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from collector.sources.fluent_forward import FluentForwardConfig
from collector.sources.k8s_audit_webhook import K8sAuditWebhookConfig
from ctrail.errors import ConfigError
from ctrail.runtime.http.auth import token_matches
from ctrail.runtime.ops import OpsConfig
from ctrail.runtime.telemetry import Telemetry
from ctrail.secrets import EnvRef, FileRef, SecretRef, resolve_secret

UNUSABLE = ["", " ", "\n", " \t\r\n "]


def unusable_refs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[SecretRef]:
    refs: list[SecretRef] = []
    for i, value in enumerate(UNUSABLE):
        path = tmp_path / f"secret-{i}"
        path.write_text(value)
        refs.append(FileRef(file=path))
        monkeypatch.setenv(f"CTRAIL_TEST_BLANK_{i}", value)
        refs.append(EnvRef(env=f"CTRAIL_TEST_BLANK_{i}"))
    return refs


def test_an_empty_or_blank_secret_is_a_config_error(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for ref in unusable_refs(tmp_path, monkeypatch):
        with pytest.raises(ConfigError, match="empty or only white space"):
            resolve_secret(ref)


def test_a_usable_secret_is_still_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("  s3cret\n")
    monkeypatch.setenv("CTRAIL_TEST_TOKEN", "s3cret")
    assert resolve_secret(FileRef(file=tmp_path / "token")).get_secret_value() == "s3cret"
    assert resolve_secret(EnvRef(env="CTRAIL_TEST_TOKEN")).get_secret_value() == "s3cret"


BUILDERS: list[tuple[str, Callable[[SecretRef, Path], Any]]] = [
    ("webhook token", lambda ref, d: K8sAuditWebhookConfig(port=0, token=ref).build("hook", d, 1024)),
    ("webhook rotation token", lambda ref, d: K8sAuditWebhookConfig(
        port=0, token=EnvRef(env="CTRAIL_TEST_GOOD"), tokens=(ref,)).build("hook", d, 1024)),
    ("forward shared_key", lambda ref, d: FluentForwardConfig(
        port=0, shared_key=ref).build("fwd", d, 1024)),
    ("forward user", lambda ref, d: FluentForwardConfig(
        port=0, shared_key=EnvRef(env="CTRAIL_TEST_GOOD"), users={"u": ref}).build("fwd", d, 1024)),
    ("ops token", lambda ref, d: OpsConfig(port=0, token=ref).build(Telemetry(), lambda: True)),
]


@pytest.mark.parametrize("what, build", BUILDERS, ids=[b[0] for b in BUILDERS])
def test_no_listener_starts_with_an_unusable_secret(what: str, build: Callable[[SecretRef, Path], Any],
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTRAIL_TEST_GOOD", "good-token")
    for ref in unusable_refs(tmp_path, monkeypatch):
        started = None
        try:
            with pytest.raises(ConfigError, match="empty or only white space"):
                started = build(ref, tmp_path)
        finally:
            if started is not None:
                started.close()


def test_an_empty_credential_never_matches() -> None:
    assert not token_matches(b"", [b""])
    assert not token_matches(b"", [b"x", b""])
    assert token_matches(b"x", [b"", b"x"])
