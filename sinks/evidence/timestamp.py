"""RFC 3161 trusted timestamps of the evidence chain (`evidence.timestamp`).

When a manifest is appended, its hash (SHA-256, the one signatures cover) is sent to the
configured Time Stamping Authority as a TimeStampReq (HTTP POST, application/timestamp-query,
with a nonce and a request for the TSA's certificate). The reply is checked against the request
(status granted, same imprint and nonce) and against the configured TSA certificates, and its
token is kept beside the manifest as manifests/NNNNNNNN.tst (verify.py checks it, in the archive
and in every export). Requests and checks use the `openssl ts` command, the reference
implementation, which the bundle's standalone verifier also uses.

A TSA that is down does not stop sealing: the manifest waits for its token, and later passes
(each seal, and the scheduler's) retry after an exponential backoff.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import httpx

from ctrail.durable import write_atomic
from ctrail.errors import ConfigError, Unavailable
from sinks.evidence.verify import (
    TsaTrust,
    manifest_hash,
    manifest_name,
    run_openssl,
    token_name,
    token_problem,
)
from sinks.notify.policy import Backoff

if TYPE_CHECKING:
    from sinks.evidence import EvidenceTimestampConfig

log = logging.getLogger(__name__)
QUERY_TYPE: Final = "application/timestamp-query"
REPLY_TYPE: Final = "application/timestamp-reply"
TSA_FILES: Final = {"ca_file": "tsa_ca.pem", "tsa_cert": "tsa_cert.pem"}   # copies in the archive


class Stamper:
    """Gets a verified token for a hash from the configured TSA."""

    def __init__(self, config: "EvidenceTimestampConfig", root: Path) -> None:
        if shutil.which("openssl") is None:
            raise ConfigError("evidence.timestamp needs the `openssl` command (OpenSSL 1.1+)")
        self.config = config
        self.trust = TsaTrust(config.ca_file, config.tsa_cert)
        for field, copy in TSA_FILES.items():
            path = getattr(config, field)
            if path is None:
                continue
            try:
                pem = path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"evidence.timestamp.{field}: cannot read {path}: "
                                  f"{exc.strerror}") from None
            # Beside the archive, so an export carries them (the auditor may pin their own).
            if not (root / copy).exists() or (root / copy).read_bytes() != pem:
                write_atomic(root / copy, pem)
        self.http = httpx.Client(timeout=config.timeout_secs)

    def stamp(self, digest_hex: str) -> bytes:
        """The DER TimeStampToken over `digest_hex`; Unavailable when none can be had now."""
        with tempfile.TemporaryDirectory(prefix="ctrail-tsa-") as tmp:
            query, reply, token = Path(tmp, "q.tsq"), Path(tmp, "r.tsr"), Path(tmp, "t.tst")
            made = run_openssl("ts", "-query", "-digest", digest_hex, "-sha256", "-cert",
                            "-out", query)
            if made.returncode != 0:
                raise Unavailable(f"openssl ts -query failed: {made.stderr.strip()}")
            reply.write_bytes(self._post(query.read_bytes()))
            anchor = self.config.ca_file or self.config.tsa_cert
            checked = run_openssl("ts", "-verify", "-queryfile", query, "-in", reply,
                               "-CAfile", anchor, *(["-partial_chain"]
                                                    if self.config.ca_file is None else []))
            if checked.returncode != 0:
                raise Unavailable(f"the TSA's reply does not answer our request: "
                                  f"{checked.stderr.strip().splitlines()[-1:]}")
            run_openssl("ts", "-reply", "-in", reply, "-token_out", "-out", token)
            problem = token_problem(token, digest_hex, self.trust) if token.exists() else (
                "no token in the reply")
            if problem is not None:
                raise Unavailable(f"the TSA's token is refused: {problem}")
            return token.read_bytes()

    def _post(self, query: bytes) -> bytes:
        try:
            answer = self.http.post(self.config.url, content=query,
                                    headers={"Content-Type": QUERY_TYPE, "Accept": REPLY_TYPE})
        except httpx.HTTPError as exc:
            raise Unavailable(f"the TSA {self.config.url} is unreachable: {exc}") from None
        kind = answer.headers.get("content-type", "").split(";")[0].strip()
        if answer.status_code != 200 or kind != REPLY_TYPE:
            raise Unavailable(f"the TSA {self.config.url} answered {answer.status_code} "
                              f"({kind or 'no content type'})")
        return answer.content

    def close(self) -> None:
        self.http.close()


class Timestamps:
    """The manifests still waiting for a token, and getting them (with a backoff when the TSA
    fails, so a TSA that is down does not slow every seal)."""

    def __init__(self, config: "EvidenceTimestampConfig", root: Path,
                 backoff: Backoff | None = None) -> None:
        self.root = root
        self.stamper = Stamper(config, root)
        self.backoff = backoff or Backoff(5.0, 3600.0)
        self.failures, self.retry_at = 0, 0.0
        self.waiting = self._scan()

    def _scan(self) -> set[int]:
        return {int(p.stem) for p in (self.root / "manifests").glob("*.json")
                if not (self.root / token_name(int(p.stem))).exists()}

    def sealed(self, seq: int) -> None:
        self.waiting.add(seq)
        self.stamp_waiting()

    def stamp_waiting(self, rescan: bool = False) -> int:
        """Get the tokens still missing (`rescan`: also for manifests appended elsewhere, e.g.
        tombstones); returns how many were stamped."""
        if rescan:
            self.waiting |= self._scan()
        if not self.waiting or time.monotonic() < self.retry_at:
            return 0
        stamped = 0
        for seq in sorted(self.waiting):
            manifest = json.loads((self.root / manifest_name(seq)).read_bytes())
            try:
                token = self.stamper.stamp(manifest_hash(manifest))
            except Unavailable as exc:
                self.failures += 1
                self.retry_at = time.monotonic() + self.backoff.delay(self.failures)
                log.warning("A sealed manifest waits for its timestamp.",
                            extra={"seq": seq, "error": str(exc), "attempt": self.failures})
                return stamped
            write_atomic(self.root / token_name(seq), token)
            self.waiting.discard(seq)
            stamped += 1
        self.failures = 0
        return stamped

    def close(self) -> None:
        self.stamper.close()
