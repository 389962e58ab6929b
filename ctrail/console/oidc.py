"""Optional OpenID Connect login (authorization code flow with PKCE, OpenID Connect Core 1.0
§3.1 and RFC 7636). The identity provider says who the person is; the console's own users
table still says what they may do: the claim named by `user_claim` must be the name of a
console user (made with `ctrail users add`), whose role and scopes apply. A person the
provider knows but the console does not is refused, and audited.

The ID token is verified before anything of it is used: signature against the provider's JWKS
(RS256 or ES256), issuer, audience (our client id), expiry, and the nonce this login sent. The
state parameter is single-use and expires, so a callback cannot be replayed or forged.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

import httpx
import jwt

from ctrail.console.config import OidcConfig
from ctrail.secrets import resolve_secret

ALGORITHMS: Final = ["RS256", "ES256"]
PENDING_SECS: Final = 600              # a login must come back from the provider within this
TIMEOUT_SECS: Final = 10.0


class OidcError(Exception):
    """The login cannot go on; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class Pending:
    """What one login sent to the provider, kept until it comes back."""

    nonce: str
    verifier: str
    expires: float


class OidcClient:
    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._secret = resolve_secret(config.client_secret).get_secret_value()
        self._discovery: dict[str, Any] | None = None
        self._keys: jwt.PyJWKClient | None = None

    @property
    def issuer(self) -> str:
        return str(self.config.issuer).rstrip("/")

    def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            url = self.issuer + "/.well-known/openid-configuration"
            try:
                response = httpx.get(url, timeout=TIMEOUT_SECS)
                response.raise_for_status()
                found = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise OidcError(f"the identity provider's discovery document: {exc}") from None
            if str(found.get("issuer", "")).rstrip("/") != self.issuer:
                raise OidcError("the provider's discovery document names another issuer")
            self._discovery = found
            self._keys = jwt.PyJWKClient(found["jwks_uri"], timeout=int(TIMEOUT_SECS))
        return self._discovery

    def start(self) -> tuple[str, str, Pending]:
        """(the provider URL to send the browser to, the state, what to keep for the callback)."""
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()
                                             ).rstrip(b"=").decode()
        query = urlencode({"response_type": "code", "client_id": self.config.client_id,
                           "redirect_uri": str(self.config.redirect_url),
                           "scope": " ".join(self.config.scopes), "state": state,
                           "nonce": nonce, "code_challenge": challenge,
                           "code_challenge_method": "S256"})
        url = f"{self.discovery()['authorization_endpoint']}?{query}"
        return url, state, Pending(nonce, verifier, time.time() + PENDING_SECS)

    def finish(self, code: str, pending: Pending) -> str:
        """The console user name the provider vouches for; OidcError otherwise."""
        if pending.expires < time.time():
            raise OidcError("the login took too long: start again")
        try:
            response = httpx.post(
                self.discovery()["token_endpoint"], auth=(self.config.client_id, self._secret),
                data={"grant_type": "authorization_code", "code": code,
                      "redirect_uri": str(self.config.redirect_url),
                      "code_verifier": pending.verifier}, timeout=TIMEOUT_SECS)
            response.raise_for_status()
            id_token = response.json()["id_token"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise OidcError(f"the provider refused the code: {type(exc).__name__}") from None
        claims = self._verified(id_token)
        if not secrets.compare_digest(str(claims.get("nonce", "")), pending.nonce):
            raise OidcError("the ID token was not issued for this login (nonce)")
        name = claims.get(self.config.user_claim)
        if not isinstance(name, str) or not name:
            raise OidcError(f"the ID token has no {self.config.user_claim} claim")
        return name

    def _verified(self, id_token: str) -> dict[str, Any]:
        assert self._keys is not None              # set with the discovery document
        try:
            key = self._keys.get_signing_key_from_jwt(id_token)
            claims: dict[str, Any] = jwt.decode(
                id_token, key.key, algorithms=ALGORITHMS, audience=self.config.client_id,
                issuer=self.issuer, options={"require": ["exp", "iat", "iss", "aud", "sub"]})
            return claims
        except jwt.PyJWTError as exc:
            raise OidcError(f"the ID token is not valid: {exc}") from None
