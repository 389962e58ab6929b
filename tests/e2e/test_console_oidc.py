"""Single sign-on through OpenID Connect, against a local provider that checks each request
(oidc_provider.py): a console user logs in and gets their role and scope; a person the console
does not know is refused; a replayed or forged callback, a token for another login (nonce),
another client (audience), signed by another key or expired is refused; all audited."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Iterator

import httpx
import orjson
import pytest

from console_scenario import incident_console
from ctrail.audit.spool import SPOOL
from ctrail.console.app import ConsoleServer
from oidc_provider import Provider

SECRET = "oidc-client-secret-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[ConsoleServer, Provider, Path]]:
    root = tmp_path_factory.mktemp("oidc")
    port = free_port()
    provider = Provider("ctrail-console", SECRET, f"http://127.0.0.1:{port}/login/oidc/callback")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("T_OIDC_SECRET", SECRET)
        server = incident_console(root, port=port, oidc={
            "issuer": provider.base, "client_id": "ctrail-console",
            "client_secret": {"env": "T_OIDC_SECRET"},
            "redirect_url": provider.redirect_uri})
    yield server, provider, root / "data"
    server.stop()
    provider.close()


def sign_on(server: ConsoleServer) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=server.url, timeout=30, follow_redirects=True)
    return client, client.get("/login/oidc")


def test_a_console_user_signs_on_with_their_role_and_scope(
        sso: tuple[ConsoleServer, Provider, Path]) -> None:
    server, provider, data_dir = sso
    assert "/login/oidc" in httpx.get(server.url + "/login").text
    for user, role, namespaces in (("admin", "admin", []), ("pay", "responder", ["payments"])):
        provider.user, provider.tamper = user, None
        client, landed = sign_on(server)
        try:
            assert landed.status_code == 200 and landed.url.path == "/alerts"
            me = client.get("/api/me").json()["user"]
            assert (me["name"], me["role"], me["namespaces"]) == (user, role, namespaces)
            cookie = [h for h in landed.history if "set-cookie" in h.headers][0]
            assert "httponly" in cookie.headers["set-cookie"].lower()
        finally:
            client.close()
    assert provider.problems == []
    logins = [orjson.loads(line) for line in (data_dir / SPOOL).read_bytes().splitlines()]
    oidc = [orjson.loads(r["event"]["original"]) for r in logins
            if r["event"]["action"] == "console-login" and '"oidc"' in r["event"]["original"]]
    assert {r["console_user"] for r in oidc} == {"admin", "pay"}
    assert SECRET not in str(logins)


def test_a_person_the_console_does_not_know_is_refused(
        sso: tuple[ConsoleServer, Provider, Path]) -> None:
    server, provider, _data_dir = sso
    provider.user, provider.tamper = "stranger", None
    client, landed = sign_on(server)
    try:
        assert landed.status_code == 403 and "stranger is not a console user" in landed.text
        assert client.get("/api/me").status_code == 401
    finally:
        client.close()


@pytest.mark.parametrize("tamper, says", [("nonce", "nonce"), ("audience", "Audience"),
                                          ("signature", "Signature"), ("expired", "expired")])
def test_an_id_token_not_for_this_login_is_refused(
        sso: tuple[ConsoleServer, Provider, Path], tamper: str, says: str) -> None:
    server, provider, _data_dir = sso
    provider.user, provider.tamper = "admin", tamper
    client, landed = sign_on(server)
    try:
        assert landed.status_code == 401 and says.lower() in landed.text.lower()
        assert client.get("/api/me").status_code == 401
    finally:
        client.close()
        provider.tamper = None


def test_a_callback_works_once_and_a_forged_one_not_at_all(
        sso: tuple[ConsoleServer, Provider, Path]) -> None:
    server, provider, _data_dir = sso
    provider.user, provider.tamper = "admin", None
    client = httpx.Client(base_url=server.url, timeout=30)
    try:
        to_provider = client.get("/login/oidc")
        assert to_provider.status_code == 303
        back = httpx.get(to_provider.headers["location"]).headers["location"]
        assert client.get(back).status_code == 303                # the real one: a session
        replay = httpx.get(back)
        assert replay.status_code == 400 and "not valid" in replay.text
        forged = httpx.get(server.url + "/login/oidc/callback?code=x&state=made-up")
        assert forged.status_code == 400 and "set-cookie" not in forged.headers
    finally:
        client.close()
