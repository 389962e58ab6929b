"""Redacting secrets out of every record (audit events, Falco alerts, and the other formats)
before anything is stored.

Each secret is replaced by `hmac-sha256:<hex>` under a key only this deployment holds, so two
events that carry the same secret still compare equal (and a value can be matched when you hold
it), but the clear value is never stored, not even in `event.original`. Only the secret itself
is replaced: the key or flag that names it, the URL around a password, the PEM markers around
a private key stay, so detection rules and readers still see what kind of credential was there.

The policy (the code below follows it, and nothing else is redacted):

1. Credential names. A name (a JSON key, the `name` of an env-style `{"name", "value"}` pair, a
   query parameter, a `--flag`, a `NAME=` in a command line or configuration text) is split into
   words (`DB_PASSWORD`, `db-password`, `dbPassword` -> db, password). It names a credential when
   - a word contains `passw`, `secret`, `token`, `credential`, `bearer`, `cookie`, `passphrase`,
     `apikey`, `privatekey` or `authorization` (password, client_secret, access_token, ...), or
   - the last word is `pass`, `pat` or `auth` (DB_PASS, GH_PAT, a docker config's `auth`), or
   - there are two words or more and the last is `pwd` or `key` (DB_PWD, STRIPE_KEY, api-key,
     tls.key, AWS_SECRET_ACCESS_KEY), unless the word before `key` names a lookup key
     (topology, public, label, sort, partition, primary, foreign, cache, lookup, index,
     routing, shard, group, field), or the words are `key data` (kubeconfig client-key-data),
   - but never when the last word says the name refers to a credential rather than holding it:
     name, ref, path, file, dir, seconds, ttl, expiration, timestamp, type, kind, namespace,
     audience, selector, version, length, count, url, uri, endpoint, mode, policy, format
     (secretName, secretKeyRef, --token-file, tokenExpirationSeconds, token_url).
   The value a credential name holds (a string, or each string of a list) is hashed, everywhere
   the walk goes: in Secret, Pod, ConfigMap (its `data` too: credential-named keys are hashed
   in ConfigMaps like everywhere else; their other entries are only scanned as in 2) and any
   other object. A lone `key` (tolerations, secretKeyRef.key) or `pwd` (the working directory)
   is not a credential name. An `image` (a container's, a Docker event's) is a reference, not
   scanned: `token-service:1.4.2` would otherwise read as a credential name given a value.
2. Value patterns, in any string the walk reaches (the credential alone is hashed):
   `Bearer <token>`; `Authorization: Basic <b64>`; JWTs (`eyJ...`.`...`.`...`); the password of
   a URL (`postgres://user:PASS@host/db`); a PEM private key's body (markers kept); a credential
   name assigned a value in text: `NAME=value`, `NAME: value`, `"NAME": "value"`, `--name=value`,
   `--name value`, `name%3Dvalue` (command lines, env dumps, configuration files, query strings;
   a value ends at white space, `&`, `;`, `,` or a quote unless it is quoted); in a list of
   strings (container `args`/`command`, exec's `command=` parameters), the element after a
   credential `--flag` that stands alone.
3. Known secret-bearing places, hashed whole (every string below them):
   - in any object of kind Secret or SecretList, and in any body on the `secrets` resource
     (patches, lists whose items carry no kind, `kind: Table` rows[].object, partial objects):
     `data` and `stringData`, the values of JSON-patch operations, and the
     kubectl last-applied-configuration annotation (it repeats the whole Secret);
   - elsewhere that annotation is decoded, redacted by these rules, and re-encoded.
4. Where the walk goes: `requestObject` and `responseObject` of audit events (GKE's
   `protoPayload.request`/`response` become those), the query string of `requestURI`, and, for
   Falco alerts, `output` and the values of `output_fields` (proc.cmdline, proc.env, ...; Falco's
   own field names are not credential names). An audit event's `userAgent` and `annotations`
   are written by clients and API-server plugins (authorization.k8s.io/decision and /reason,
   pod-security.kubernetes.io/*, authentication.kubernetes.io/issued-credential-id, an id and not
   a credential): only the self-identifying patterns of 2 (Bearer, JWT, URL password) are looked
   for there, behind a substring test. Everything else (user, objectRef, responseStatus, times)
   holds names, not secrets. A record that does not parse (not JSON, cut, a parser bug) gets
   the patterns of 2 on its whole text before it is dead-lettered (`Redactor.redact_text`,
   ctrail.runtime.deadletter).
   Every other format (Docker events, container log lines, Distribution and Harbor
   notifications, and these as Fluent forward records) is redacted whole at intake: a JSON
   object walked as a body is (1 and 2: Docker label and attribute names are credential
   names too, an exec's command line and a URL are scanned), a line of text given 2
   (`Redactor.record`, `redact_text`; collector.parsers.common.RedactingParser.scrub).

The common case costs a few dictionary look-ups: an event without bodies and without a query
string that could name a credential (a Metadata-level event: ~99% of a real cluster's audit log)
is not walked at all (`Redactor.walks` counts the events that were). Nesting depth is bounded
once, by the parser's `load_object`; the walk relies on it.
Limits: a password holding white space, `&`, `;` or `,` in unquoted text is hashed only up to
that character; a credential under a name that says nothing (`-p`, `X=...`) is not recognised;
a container log line that the runtime split between a name and its value (two partial pieces)
is scanned piece by piece, so that value is not recognised.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets as random_secrets
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Final
from urllib.parse import quote, unquote_plus

from pydantic import BaseModel, ConfigDict, Field

from ctrail.errors import ConfigError
from ctrail.secrets import SecretRef, resolve_secret

PREFIX: Final = "hmac-sha256:"
KEY_FILE: Final = "redaction.key"
TAG: Final = "redacted"
SECRET_KINDS: Final = frozenset({"Secret", "SecretList"})
SECRET_FIELDS: Final = frozenset({"data", "stringData"})
BODIES: Final = ("requestObject", "responseObject")
LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"

# 1. Credential names.
WORDS: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
IN_WORD: Final = ("passw", "secret", "token", "credential", "bearer", "cookie", "passphrase",
                  "apikey", "privatekey", "authorization")
LAST_WORD: Final = frozenset({"pass", "pat", "auth"})
LAST_OF_TWO: Final = frozenset({"pwd", "key"})
LOOKUP_KEY: Final = frozenset({"topology", "public", "label", "sort", "partition", "primary",
                               "foreign", "cache", "lookup", "index", "routing", "shard",
                               "group", "field"})
REFERS: Final = frozenset({"name", "names", "ref", "refs", "path", "paths", "file", "files",
                           "dir", "seconds", "ttl", "expiration", "timestamp", "type", "kind",
                           "namespace", "audience", "audiences", "selector", "version",
                           "length", "count", "url", "uri", "endpoint", "mode", "policy",
                           "format"})

# 2. Value patterns. HINT is a cheap superset test: a string it does not match holds none of them.
HINT: Final = re.compile(r"(?i)pass|secret|token|credential|bearer|cookie|key|auth|pat|pwd|eyJ"
                         r"|://|%3a%2f%2f")
# HINT for raw bytes, asked of their lowercase copy: an alternation of literals matches ~5x
# faster than the same alternation under (?i) (80-byte container log lines: 0.8 vs 4.8 µs).
HINT_LOWERCASE_BYTES: Final = re.compile(HINT.pattern.removeprefix("(?i)").lower().encode())
# A value already hashed (`hmac-sha256:<hex>`) is left alone: redacting twice changes nothing.
BEARER: Final = re.compile(r"(?i)(\bbearer\s+)(?!hmac-sha256:)([A-Za-z0-9\-._~+/]+=*)")
BASIC: Final = re.compile(r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?basic\s+)(?!hmac-sha256:)"
                   r"([A-Za-z0-9+/]+=*)")
JWT: Final = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+")
URL_PASSWORD: Final = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s/?#@:\"']*:)([^\s/?#@\"']+)(@)")
PEM: Final = re.compile(r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----)(.*?)(-----END [A-Z0-9 ]*PRIVATE"
                        r" KEY-----)", re.DOTALL)
_VALUE: Final = r"""(?:"(?P<dq>[^"\n]*)"|'(?P<sq>[^'\n]*)'|(?P<bare>[^\s"'&;,<>{}\[\]]+))"""
# The value is matched in a look-ahead, so the scan goes on inside it (env=DB_PASS=x).
ASSIGN: Final = re.compile(r"(?<![\w.])(?P<name>[A-Za-z_][\w.-]*)"
                           r"(?P<sep>[\"']?[ \t]*(?:=|:(?!//))[ \t]*|%3[Dd])(?=" + _VALUE + ")")
FLAG: Final = re.compile(r"(?<![\w-])--?(?P<name>[A-Za-z][\w.-]*)(?P<sep>[ \t]+)(?!-)(?="
                         + _VALUE + ")")
LONE_FLAG: Final = re.compile(r"--?([A-Za-z][\w.-]*)")
NOT_A_SECRET: Final = frozenset({"", "true", "false", "null", "none", "bearer", "basic"})
# Fields of Kubernetes objects (and Docker events) whose string is an identifier, never a
# secret: not scanned.
NAMES_ONLY: Final = frozenset({"kind", "apiVersion", "name", "namespace", "uid",
                               "resourceVersion", "creationTimestamp", "type", "imagePullPolicy",
                               "fieldsType", "manager", "operation", "time", "image", "Image"})
# Only these are looked for in userAgent and audit annotations (see 4.).
SELF_EVIDENT: Final = re.compile(r"eyJ|earer|EARER|://")


def hinted(data: bytes) -> bool:
    """HINT on raw bytes: False means no pattern of the policy can match them."""
    return HINT_LOWERCASE_BYTES.search(data.lower()) is not None


@lru_cache(maxsize=8192)
def credential_name(name: str) -> bool:
    """Rule 1 of the module's policy."""
    words = [w.lower() for w in WORDS.findall(name)]
    if not words or words[-1] in REFERS:
        return False
    if any(hint in word for word in words for hint in IN_WORD):
        return True
    last = words[-1]
    if last in LAST_WORD:
        return True
    if len(words) >= 2 and last in LAST_OF_TWO and words[-2] not in LOOKUP_KEY:
        return True
    return len(words) >= 3 and words[-2:] == ["key", "data"]


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
        self.walks = 0
        """Events whose bodies were walked: the rest took the fast path."""

    @classmethod
    def ephemeral(cls) -> "Redactor":
        """A random key for this process only: what a parser built without the pipeline's key
        uses, so it still never keeps a clear value (its hashes just match nothing stored)."""
        return cls(random_secrets.token_bytes(32))

    def digest(self, value: str) -> str:
        return PREFIX + hmac.digest(self._key, value.encode(), hashlib.sha256).hex()

    # -- entry points ------------------------------------------------------------------------

    def audit(self, event: dict[str, Any], raw: str | None = None) -> dict[str, Any] | None:
        """A redacted copy of an audit Event, or None when it holds nothing to redact (the
        event is then used as it is). `raw` is accepted for compatibility and not needed: the
        places a secret can be are looked at directly (policy 4)."""
        changes: dict[str, Any] = {}
        uri = event.get("requestURI")
        if isinstance(uri, str) and "?" in uri:
            new_uri = self._uri(uri)
            if new_uri is not uri:
                changes["requestURI"] = new_uri
        agent = event.get("userAgent")
        if isinstance(agent, str) and SELF_EVIDENT.search(agent):
            new_agent = self._self_evident(agent)
            if new_agent is not agent:
                changes["userAgent"] = new_agent
        annotations = event.get("annotations")
        if isinstance(annotations, dict):
            new_annotations = _changed_values(annotations, lambda value: self._self_evident(
                value) if isinstance(value, str) and SELF_EVIDENT.search(value) else value)
            if new_annotations is not None:
                changes["annotations"] = new_annotations
        if "requestObject" in event or "responseObject" in event:
            self.walks += 1
            object_ref = event.get("objectRef")
            on_secrets = isinstance(object_ref, dict) and object_ref.get("resource") == "secrets"
            for field in BODIES:
                if field in event:
                    new = self._walk(event[field], on_secrets)
                    if new is not event[field]:
                        changes[field] = new
        return {**event, **changes} if changes else None

    def falco(self, alert: dict[str, Any]) -> dict[str, Any] | None:
        """A redacted copy of a Falco alert (its `output` line and `output_fields` values), or
        None when it holds nothing to redact."""
        changes: dict[str, Any] = {}
        output = alert.get("output")
        if isinstance(output, str):
            new_output = self._scrub(output)
            if new_output is not output:
                changes["output"] = new_output
        fields = alert.get("output_fields")
        if isinstance(fields, dict):
            new_fields = _changed_values(fields, lambda value: self._list(value, False)
                                         if isinstance(value, list) else self._scrub(value)
                                         if isinstance(value, str) else value)
            if new_fields is not None:
                changes["output_fields"] = new_fields
        return {**alert, **changes} if changes else None

    def record(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """A redacted copy of a JSON record of another format (a Docker event, a registry
        notification, a json-file log line), walked whole as an audit body is (policy 1 and
        2), or None when it holds nothing to redact."""
        new = self._walk(doc, False)
        return None if new is doc else new

    def redact_text(self, text: str) -> str:
        """Policy 2 on free text (a record that did not parse, before it is dead-lettered):
        Bearer and Basic credentials, JWTs, URL passwords, PEM private key bodies and values
        assigned to credential names (`password=`, `"token": "..."`, `--token x`) hashed;
        `text` itself when it holds none. Idempotent: a hash already there stays as it is, so
        a dead letter redacted here and replayed keeps the hash the deployment's key gives.
        Limits: what only a structure says is secret (a Secret's `data` under a key that names
        nothing) is not recognised in text form."""
        return self._scrub(text)

    # -- the walk: each returns its argument itself when nothing in it changed ---------------

    def _walk(self, value: Any, secret: bool) -> Any:
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, list):
            return self._list(value, secret)
        if not isinstance(value, dict):
            return value
        kind = value.get("kind")
        if isinstance(kind, str) and kind in SECRET_KINDS:
            secret = True
        name = value.get("name")
        pair = isinstance(name, str) and isinstance(value.get("value"), str) \
            and credential_name(name)
        out: dict[str, Any] | None = None
        for key, item in value.items():
            if secret and key in SECRET_FIELDS:
                new = self._leaves(item)
            elif pair and key == "value":
                new = self._credential(item)
            elif key == "annotations" and isinstance(item, dict) and LAST_APPLIED in item:
                new = self._annotations(item, secret)
            elif key in NAMES_ONLY and isinstance(item, str):
                continue
            elif isinstance(item, (str, list)) and isinstance(key, str) and credential_name(key):
                new = self._credential(item)
            else:
                new = self._walk(item, secret)
            if new is not item:
                if out is None:
                    out = dict(value)
                out[key] = new
        return value if out is None else out

    def _list(self, value: list[Any], secret: bool) -> list[Any]:
        out: list[Any] | None = None
        after_flag = False
        for i, item in enumerate(value):
            if isinstance(item, str):
                if after_flag and item and not item.startswith("-"):
                    new: Any = self._credential(item)
                else:
                    new = self._scrub(item)
                flag = LONE_FLAG.fullmatch(item) if item.startswith("-") else None
                after_flag = flag is not None and credential_name(flag.group(1))
            else:
                after_flag = False
                if secret and isinstance(item, dict) and "op" in item and "value" in item:
                    new = {**item, "value": self._leaves(item["value"])}   # JSON patch
                else:
                    new = self._walk(item, secret)
            if new is not item:
                if out is None:
                    out = list(value)
                out[i] = new
        return value if out is None else out

    def _annotations(self, annotations: dict[str, Any], secret: bool) -> dict[str, Any]:
        applied = annotations[LAST_APPLIED]
        if not isinstance(applied, str):
            return self._walk(annotations, secret)
        if secret:
            new_applied = self.digest(applied)
        else:
            try:
                decoded = json.loads(applied)
            except ValueError:
                decoded = None
            if isinstance(decoded, (dict, list)):
                redacted = self._walk(decoded, secret)
                new_applied = applied if redacted is decoded else json.dumps(
                    redacted, separators=(",", ":")) + "\n"
            else:
                new_applied = self._scrub(applied)
        rest = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
        new_rest = self._walk(rest, secret)
        if new_applied is applied and new_rest is rest:
            return annotations
        return {k: new_applied if k == LAST_APPLIED else new_rest[k] for k in annotations}

    def _leaves(self, value: Any) -> Any:
        """Every string below `value` hashed (policy 3)."""
        if isinstance(value, str):
            return value if value.startswith(PREFIX) else self.digest(value)
        if isinstance(value, dict):
            return {k: self._leaves(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._leaves(v) for v in value]
        return value

    def _credential(self, value: Any) -> Any:
        """The value of a credential name (policy 1): a string, or the strings of a list."""
        if isinstance(value, list):
            new = [self._credential(v) if isinstance(v, str) else self._walk(v, False)
                   for v in value]
            return value if all(a is b for a, b in zip(new, value)) else new
        if not isinstance(value, str) or value.lower() in NOT_A_SECRET \
                or value.startswith(PREFIX):
            return value
        if "-----BEGIN" in value:                 # keep the markers (CT-K8S-022 reads them)
            pem = PEM.sub(self._pem, value)
            if pem != value:
                return pem
        return self.digest(value)

    # -- strings -----------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """Policy 2 on one string."""
        if not HINT.search(text):
            return text
        new = text          # each pattern behind a substring test that it needs
        if "earer" in new or "EARER" in new:
            new = BEARER.sub(self._group2, new)
        if "asic" in new or "ASIC" in new:
            new = BASIC.sub(self._group2, new)
        if "eyJ" in new:
            new = JWT.sub(lambda m: self.digest(m.group(0)), new)
        if "://" in new:
            new = URL_PASSWORD.sub(self._url_password, new)
        if "-----BEGIN" in new:
            new = PEM.sub(self._pem, new)
        if "=" in new or ":" in new or "%3" in new:
            new = self._assignments(new, ASSIGN)
        if "-" in new and (" " in new or "\t" in new):
            new = self._assignments(new, FLAG)
        return text if new == text else new

    def _self_evident(self, text: str) -> str:
        new = BEARER.sub(self._group2, text)
        new = JWT.sub(lambda m: self.digest(m.group(0)), new)
        new = URL_PASSWORD.sub(self._url_password, new)
        return text if new == text else new

    def _group2(self, match: re.Match[str]) -> str:
        value = match.group(2)
        return match.group(0) if value.startswith(PREFIX) or value.lower() in NOT_A_SECRET \
            else match.group(1) + self.digest(value)

    def _url_password(self, match: re.Match[str]) -> str:
        value = match.group(2)
        if value.startswith(PREFIX.rstrip(":")):
            return match.group(0)
        return match.group(1) + self.digest(unquote_plus(value)) + match.group(3)

    def _pem(self, match: re.Match[str]) -> str:
        body = match.group(2).strip()
        if not body or body.startswith(PREFIX):
            return match.group(0)
        return f"{match.group(1)}\n{self.digest(body)}\n{match.group(3)}"

    def _assignments(self, text: str, pattern: re.Pattern[str]) -> str:
        """Each value a credential name is given in `text` (NAME=value, --name value) hashed."""
        pieces: list[str] = []
        last = 0
        for match in pattern.finditer(text):
            if not credential_name(match.group("name")):
                continue
            group = "dq" if match.group("dq") is not None else \
                "sq" if match.group("sq") is not None else "bare"
            value = match.group(group)
            start, end = match.span(group)
            if start < last or value.lower() in NOT_A_SECRET or value.startswith(PREFIX):
                continue
            pieces += [text[last:start], self.digest(value)]
            last = end
        if not pieces:
            return text
        pieces.append(text[last:])
        return "".join(pieces)

    def _uri(self, uri: str) -> str:
        """A request URI with credential query parameters hashed (policy 1, 2)."""
        path, _, query = uri.partition("?")
        if not HINT.search(query):
            return uri
        params = query.split("&")
        out = list(params)
        command: list[tuple[int, str]] = []
        for i, param in enumerate(params):
            name, eq, value = param.partition("=")
            if not eq:
                continue
            name, decoded = unquote_plus(name), unquote_plus(value)
            if name == "command":              # exec/attach: the argv, one parameter each
                command.append((i, decoded))
                continue
            new = self._credential(decoded) if credential_name(name) else self._scrub(decoded)
            if new is not decoded:
                out[i] = param[:len(param) - len(value)] + quote(new, safe=":")
        if command:
            argv = [value for _, value in command]
            new_argv = self._list(argv, False)
            for (i, old), new in zip(command, new_argv):
                if new is not old:
                    out[i] = params[i].partition("=")[0] + "=" + quote(new, safe=":")
        return uri if out == params else path + "?" + "&".join(out)


def _changed_values(mapping: dict[str, Any], redact: Callable[[Any], Any]
                    ) -> dict[str, Any] | None:
    """A copy of `mapping` with `redact` applied to each value, or None when no value changed
    (`redact` returns the value itself when it has nothing to hash)."""
    changed: dict[str, Any] | None = None
    for key, value in mapping.items():
        new = redact(value)
        if new is not value:
            changed = changed if changed is not None else dict(mapping)
            changed[key] = new
    return changed
