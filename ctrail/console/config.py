"""ConsoleConfig: the `console:` section. The console is off unless the section is present."""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, PositiveFloat, PositiveInt

from ctrail.errors import ConfigError
from ctrail.secrets import SecretRef


class OidcConfig(BaseModel):
    """Log in through an OpenID Connect provider (Keycloak, Dex, Entra ID, Okta, Google...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    issuer: HttpUrl = Field(description="The provider's issuer URL (its discovery document is "
                            "at ISSUER/.well-known/openid-configuration).")
    client_id: str
    client_secret: SecretRef
    redirect_url: HttpUrl = Field(description="This console's callback, as registered at the "
                                  "provider: https://HOST/login/oidc/callback")
    user_claim: str = Field("preferred_username", description="The ID token claim holding the "
                            "console user name (e.g. email).")
    scopes: tuple[str, ...] = ("openid", "profile", "email")


class ConsoleConfig(BaseModel):
    """Where the web console listens, and its session and login limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8470, ge=0, le=65535)
    tls_cert_file: Path | None = Field(None, description="Serve HTTPS with this PEM chain.")
    tls_key_file: Path | None = Field(None, description="Its key (else in tls_cert_file).")
    secure_cookies: bool | None = Field(
        None, description="Mark cookies Secure (default: when serving TLS; set true behind a "
        "TLS-terminating proxy).")
    session_hours: PositiveFloat = Field(12.0, description="A session expires this long after "
                                         "login.")
    max_failed_logins: PositiveInt = Field(
        5, description="Failed logins per user name, and per client address, in the window; "
        "past it every login for that name or address is refused until the window moves on.")
    failed_login_window_secs: PositiveInt = 300
    live_poll_secs: PositiveFloat = Field(1.0, description="How often the live alert stream "
                                          "looks for new alerts.")
    oidc: OidcConfig | None = Field(None, description="Also log in through an OpenID Connect "
                                    "provider (users must still exist in `ctrail users`).")

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def cookies_secure(self) -> bool:
        return self.tls if self.secure_cookies is None else self.secure_cookies

    def check_tls(self) -> None:
        """ConfigError now, at startup, when the TLS files cannot be loaded."""
        if self.tls_cert_file is None:
            if self.tls_key_file is not None:
                raise ConfigError("console: tls_key_file needs tls_cert_file")
            return
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                self.tls_cert_file, self.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"console: cannot load the TLS files: {exc}") from None
