"""A local OpenID Connect provider for the console's single sign-on tests. It speaks the
authorization code flow as OpenID Connect Core 1.0 (§3.1) and RFC 7636 (PKCE, S256) describe
it, and checks every request the console makes against that shape, recording what is wrong in
`problems`: the authorization request's parameters, the token request's client
authentication (client_secret_basic), grant type, code (single use), redirect URI and code
verifier. Its ID tokens are real RS256 JWTs, verifiable against its JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


class Provider:
    def __init__(self, client_id: str, client_secret: str, redirect_uri: str) -> None:
        self.client_id, self.client_secret, self.redirect_uri = (client_id, client_secret,
                                                                 redirect_uri)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.user = "admin"                    # who logs in at the provider
        self.tamper: str | None = None         # nonce | audience | signature | expired
        self.codes: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.base, "authorization_endpoint": self.base + "/authorize",
                "token_endpoint": self.base + "/token", "jwks_uri": self.base + "/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"]}

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str]]:
        for name, wanted in (("response_type", "code"), ("client_id", self.client_id),
                             ("redirect_uri", self.redirect_uri),
                             ("code_challenge_method", "S256")):
            if query.get(name) != wanted:
                self.problems.append(f"authorize: {name}={query.get(name)!r}")
        if "openid" not in query.get("scope", "").split():
            self.problems.append("authorize: scope without openid")
        for name in ("state", "nonce", "code_challenge"):
            if not query.get(name):
                self.problems.append(f"authorize: no {name}")
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"nonce": query.get("nonce"), "user": self.user,
                            "challenge": query.get("code_challenge"),
                            "redirect_uri": query.get("redirect_uri")}
        target = f"{query.get('redirect_uri')}?{urlencode({'code': code, 'state': query.get('state', '')})}"
        return 302, {"Location": target}

    def token(self, form: dict[str, str], authorization: str) -> tuple[int, dict[str, Any]]:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if authorization != f"Basic {expected}":
            self.problems.append("token: client_secret_basic missing or wrong")
            return 401, {"error": "invalid_client"}
        grant = self.codes.pop(form.get("code", ""), None)
        if form.get("grant_type") != "authorization_code" or grant is None:
            return 400, {"error": "invalid_grant"}
        if form.get("redirect_uri") != grant["redirect_uri"]:
            self.problems.append("token: redirect_uri differs from the authorization request")
            return 400, {"error": "invalid_grant"}
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()
                                             ).rstrip(b"=").decode()
        if challenge != grant["challenge"]:
            self.problems.append("token: code_verifier does not match the code_challenge")
            return 400, {"error": "invalid_grant"}
        now = int(time.time())
        claims = {"iss": self.base, "sub": f"sub-{grant['user']}", "aud": self.client_id,
                  "iat": now, "exp": now + 300, "nonce": grant["nonce"],
                  "preferred_username": grant["user"]}
        if self.tamper == "nonce":
            claims["nonce"] = "another login's nonce"
        if self.tamper == "audience":
            claims["aud"] = "another-client"
        if self.tamper == "expired":
            claims["iat"], claims["exp"] = now - 600, now - 300
        key = self.other_key if self.tamper == "signature" else self.key
        id_token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        return 200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                     "expires_in": 300, "id_token": id_token}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any] | None,
                      headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    self._send(200, provider.discovery())
                elif url.path == "/jwks":
                    self._send(200, provider.jwks())
                elif url.path == "/authorize":
                    status, headers = provider.authorize(query)
                    self._send(status, None, headers)
                else:
                    self._send(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                if self.headers.get("Content-Type", "").split(";")[0] != \
                        "application/x-www-form-urlencoded":
                    provider.problems.append("token: not a form post")
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if urlsplit(self.path).path != "/token":
                    self._send(404, {"error": "not_found"})
                    return
                status, body = provider.token(form, self.headers.get("Authorization", ""))
                self._send(status, body)

        return Handler
