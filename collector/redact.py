"""Redacting secret values out of Kubernetes audit events before anything is stored.

An audit event at Request or RequestResponse level carries the objects themselves: a Secret's
`data`, a TokenRequest's issued token, a TokenReview's reviewed token, a pod's password env vars.
Each such value is replaced by `hmac-sha256:<hex>` under a key only this deployment holds, so two
events that carry the same secret still compare equal (and a value can be matched when you hold
it), but the clear value is never stored, not even in `event.original`.

Covered, in `requestObject` and `responseObject` (and their lists, e.g. a SecretList):
- objects of kind Secret, or any body on the `secrets` resource (a merge or JSON patch): every
  string under `data` and `stringData`, the `value`s of JSON-patch operations, and the
  kubectl last-applied-configuration annotation (it repeats the whole Secret);
- fields whose name says they hold a credential, anywhere: `token`, `password`,
  `Authorization`, kubeconfig's `client-key-data`, `id-token`, `refresh-token`, ... (TokenRequest
  `status.token`, TokenReview `spec.token`, kubeconfig-like documents);
- env-style `{"name": "DB_PASSWORD", "value": ...}` pairs whose name says credential;
- bearer tokens and JWTs (service-account tokens) inside any other string.
ConfigMap data is left as it is: it is not a secret store by contract, and detection rules
(Falco's "configmap with private credentials") need to see it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets as random_secrets
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from ctrail.errors import ConfigError
from ctrail.secrets import SecretRef, resolve_secret

PREFIX: Final = "hmac-sha256:"
KEY_FILE: Final = "redaction.key"
SECRET_KINDS: Final = frozenset({"Secret", "SecretList"})
SECRET_FIELDS: Final = ("data", "stringData")
LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
CREDENTIAL_KEYS: Final = frozenset({
    "token", "password", "passwd", "authorization", "bearertoken", "bearer_token",
    "client-key-data", "client_key_data", "id-token", "refresh-token", "access-token",
    "id_token", "refresh_token", "access_token", "apikey", "api_key", "api-key",
    "secretaccesskey", "secret_access_key", "privatekey", "private_key"})
CREDENTIAL_NAME: Final = re.compile(r"(?i)passw|token|secret|api_?key|credential|private_?key")
BEARER: Final = re.compile(r"(?i)(\bbearer\s+)([A-Za-z0-9\-._~+/]+=*)")
JWT: Final = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+")
TAG: Final = "redacted"
# Lower-case words of which every redaction needs one: credential key names and env names
# (CREDENTIAL_KEYS, CREDENTIAL_NAME), Secret kinds and the secrets resource, bearer tokens, JWTs.
HINTS: Final = ("passw", "token", "secret", "authorization", "bearer", "key", "credential",
                "eyj")


def _may_hold_credentials(raw: str) -> bool:
    lowered = raw.lower()
    return any(hint in lowered for hint in HINTS)


class RedactionConfig(BaseModel):
    """How audit secrets are hashed (`redaction:` in the config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key: SecretRef | None = Field(
        None, description="HMAC key ({env: NAME} or {file: PATH}). Default: a random key "
        "generated once in <data_dir>/redaction.key (mode 0600). Give every collector of one "
        "deployment the same key, or their hashes of one value differ.")

    def build(self, data_dir: Path) -> "Redactor":
        if self.key is not None:
            return Redactor(resolve_secret(self.key).get_secret_value().encode())
        return Redactor(load_or_create_key(data_dir / KEY_FILE))


def load_or_create_key(path: Path) -> bytes:
    """The key in `path`, created (0600, exclusively, so two processes agree) if absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes().strip()
        if not key:
            raise ConfigError(f"the redaction key file {path} is empty") from None
        return key
    with os.fdopen(fd, "wb") as handle:
        handle.write(random_secrets.token_hex(32).encode())
        handle.flush()
        os.fsync(handle.fileno())
    return path.read_bytes().strip()


class Redactor:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def ephemeral(cls) -> "Redactor":
        """A random key for this process only: what a parser built without the pipeline's key
        uses, so it still never keeps a clear value (its hashes just match nothing stored)."""
        return cls(random_secrets.token_bytes(32))

    def digest(self, value: str) -> str:
        return PREFIX + hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()

    def audit(self, event: dict[str, Any], raw: str | None = None) -> dict[str, Any] | None:
        """A redacted copy of an audit Event, or None when it holds nothing to redact.
        `raw`, the event's text, lets most events skip the walk: one that mentions no
        credential word anywhere cannot hold a credential the walk would find."""
        if raw is not None and not _may_hold_credentials(raw):
            return None
        resource = (event.get("objectRef") or {}).get("resource") if isinstance(
            event.get("objectRef"), dict) else None
        out, changed = dict(event), False
        for field in ("requestObject", "responseObject"):
            if field in event:
                value, hit = self._object(event[field], resource == "secrets")
                out[field], changed = value, changed or hit
        return out if changed else None

    def _object(self, obj: Any, on_secrets: bool) -> tuple[Any, bool]:
        if isinstance(obj, list):              # a JSON patch, or items
            pairs = [self._patch_op(v) if on_secrets else self._object(v, False) for v in obj]
            return [v for v, _ in pairs], any(hit for _, hit in pairs)
        if not isinstance(obj, dict):
            return self._walk(obj)
        kind = obj.get("kind")
        if (isinstance(kind, str) and kind in SECRET_KINDS) or on_secrets:
            obj, hit = self._secret(obj)
            value, walked = self._walk(obj)
            return value, hit or walked
        return self._walk(obj)

    def _secret(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        out, hit = dict(obj), False
        for field in SECRET_FIELDS:
            if field in obj:
                out[field], found = self._leaves(obj[field])
                hit = hit or found
        if isinstance(obj.get("items"), list):             # SecretList
            items = [self._secret(i) if isinstance(i, dict) else (i, False) for i in obj["items"]]
            out["items"], hit = [i for i, _ in items], hit or any(h for _, h in items)
        metadata = obj.get("metadata")
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        if isinstance(annotations, dict) and isinstance(annotations.get(LAST_APPLIED), str):
            out["metadata"] = {**metadata, "annotations": {
                **annotations, LAST_APPLIED: self.digest(annotations[LAST_APPLIED])}}
            hit = True
        return out, hit

    def _patch_op(self, op: Any) -> tuple[Any, bool]:
        if isinstance(op, dict) and "value" in op:
            value, hit = self._leaves(op["value"])
            return {**op, "value": value}, hit
        return self._walk(op)

    def _leaves(self, value: Any) -> tuple[Any, bool]:
        """Every string below `value` hashed."""
        if isinstance(value, str):
            return self.digest(value), True
        if isinstance(value, dict):
            pairs = {k: self._leaves(v) for k, v in value.items()}
            return {k: v for k, (v, _) in pairs.items()}, any(h for _, h in pairs.values())
        if isinstance(value, list):
            pairs_l = [self._leaves(v) for v in value]
            return [v for v, _ in pairs_l], any(h for _, h in pairs_l)
        return value, False

    def _walk(self, value: Any) -> tuple[Any, bool]:
        """Credential-named fields, credential env pairs and embedded tokens, at any depth."""
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, list):
            pairs = [self._walk(v) for v in value]
            return [v for v, _ in pairs], any(h for _, h in pairs)
        if not isinstance(value, dict):
            return value, False
        out, hit = {}, False
        credential_pair = isinstance(value.get("name"), str) and isinstance(
            value.get("value"), str) and CREDENTIAL_NAME.search(value["name"]) is not None
        for key, item in value.items():
            if (key.lower() in CREDENTIAL_KEYS or (credential_pair and key == "value")) \
                    and isinstance(item, str) and item and not item.startswith(PREFIX):
                out[key], found = self.digest(item), True
            else:
                out[key], found = self._walk(item)
            hit = hit or found
        return out, hit

    def _scrub(self, text: str) -> tuple[str, bool]:
        # Cheap test first: most strings (names, images, paths) hold neither.
        if "eyJ" not in text and "earer" not in text and "EARER" not in text:
            return text, False
        scrubbed = BEARER.sub(lambda m: m.group(1) + self.digest(m.group(2)), text)
        scrubbed = JWT.sub(lambda m: self.digest(m.group(0)), scrubbed)
        return scrubbed, scrubbed != text
