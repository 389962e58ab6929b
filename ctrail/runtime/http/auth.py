"""Who may post: the credential in an Authorization header, and a client certificate's names."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any, Sequence


def presented_credential(header: str | None) -> bytes:
    """The secret in an Authorization header: a Bearer token, a Basic password (Falco can only
    put credentials in its URL), or the bare value (Harbor sends its auth header as typed)."""
    scheme, _, rest = (header or "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip().encode()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(rest.strip(), validate=True).partition(b":")[2]
        except (binascii.Error, ValueError):
            return b""
    return (header or "").strip().encode()


def token_matches(presented: bytes, tokens: Sequence[bytes]) -> bool:
    # Every token is compared, so the time taken does not say which one was close. An empty
    # credential never matches (resolve_secret refuses empty tokens; this is the second lock).
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(presented, token)
    return matched and bool(presented.strip())


def certificate_names(cert: dict[str, Any] | None) -> set[str]:
    if not cert:
        return set()
    names = {value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"}
    names.update(value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS")
    return names
