"""Issue 14: the shipped examples bound webhooks, forward and ops to 0.0.0.0 in the clear and
nothing said so. Every listener now warns at startup when it listens without TLS beyond
loopback, or without authentication; a TLS listener, or one on loopback with a credential, is
quiet. (The ops server's case is in tests/unit/ctrail/test_ops_floods.py.)"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import pytest

from collector.sources.falco_http import FalcoHttpConfig
from collector.sources.fluent_forward import FluentForwardConfig
from collector.sources.harbor_webhook import HarborWebhookConfig
from tests.unit.collector.test_http_listener import (
    Pki,
    _token as _token,  # noqa: F401 (autouse)
    k8s,
    pki as pki,  # noqa: F401
)


def warnings_of(caplog: pytest.LogCaptureFixture, build: Callable[[], Any]) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ctrail.runtime.http.config"):
        build().close()
    return [record.getMessage() for record in caplog.records
            if getattr(record, "section", "") == "sources.hook"]


def test_webhook_listeners_warn_about_plain_http_beyond_loopback_and_no_authentication(
        caplog: pytest.LogCaptureFixture, tmp_path: Path, pki: Pki) -> None:  # noqa: F811
    def built(config: Any) -> Callable[[], Any]:
        return lambda: config.build("hook", tmp_path, 1024)

    assert warnings_of(caplog, built(k8s())) == []                       # loopback, a token
    [clear] = warnings_of(caplog, built(k8s(host="0.0.0.0")))
    assert "without TLS beyond this host" in clear
    assert warnings_of(caplog, built(k8s(host="0.0.0.0", tls_cert_file=pki.server_cert,
                                         tls_key_file=pki.server_key))) == []
    [anyone] = warnings_of(caplog, built(HarborWebhookConfig(port=0,
                                                             allow_unauthenticated=True)))
    assert "without authentication" in anyone
    both = warnings_of(caplog, built(FalcoHttpConfig(port=0, host="::",
                                                     allow_unauthenticated=True)))
    assert len(both) == 2


def test_the_forward_input_warns_too(caplog: pytest.LogCaptureFixture, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTRAIL_TEST_FORWARD_KEY", "a-shared-key")
    keyed: dict[str, Any] = {"port": 0, "shared_key": {"env": "CTRAIL_TEST_FORWARD_KEY"}}
    assert warnings_of(caplog, lambda: FluentForwardConfig(**keyed).build(
        "hook", tmp_path, 1024)) == []
    [clear] = warnings_of(caplog, lambda: FluentForwardConfig(**keyed, host="0.0.0.0").build(
        "hook", tmp_path, 1024))
    assert "without TLS beyond this host" in clear
    [anyone] = warnings_of(caplog, lambda: FluentForwardConfig(
        port=0, allow_unauthenticated=True).build("hook", tmp_path, 1024))
    assert "without authentication" in anyone
