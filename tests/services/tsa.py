"""A real RFC 3161 Time Stamping Authority on loopback, for the evidence timestamp tests.

Each TSA has a throwaway CA and a TSA certificate (extendedKeyUsage critical, timeStamping) made
with `openssl` in a test directory; it answers every HTTP POST of an application/timestamp-query
by running `openssl ts -reply`, as RFC 3161 section 3.4 describes the HTTP transport. A request
of another shape is refused (405, 415 or 400) and counted, so a test can assert none were made.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TSA_SECTION = """
[tsa_ext]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[tsa]
default_tsa = tsa_config1

[tsa_config1]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.crt
certs = $dir/ca.crt
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.55555.1
other_policies = 1.3.6.1.4.1.55555.2
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def openssl(*args: object, data: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *map(str, args)], input=data, capture_output=True,
                          check=False, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.decode()}")
    return done.stdout


def make_ca(directory: Path, name: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", directory / "ca.key", "-out", directory / "ca.crt", "-days", "30",
            "-subj", f"/CN={name} CA")


@dataclass
class LoopbackTsa:
    """A TSA named `name` whose certificate `ca_dir`'s CA signs (its own CA unless given)."""

    directory: Path
    name: str = "Test TSA"
    ca_dir: Path | None = None
    refused: list[str] = field(default_factory=list)
    answered: int = 0
    stamp_other_data: bool = False          # answer with a token over some other hash

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.ca_dir is None:
            make_ca(self.directory, self.name)
            self.ca_dir = self.directory
        d = self.directory
        config = d / "tsa.cnf"
        config.write_text(TSA_SECTION.format(dir=d))
        (d / "serial").write_text("01\n")
        if self.ca_dir != d:
            (d / "ca.crt").write_bytes((self.ca_dir / "ca.crt").read_bytes())
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", d / "tsa.key", "-out", d / "tsa.csr", "-subj", f"/CN={self.name}")
        openssl("x509", "-req", "-in", d / "tsa.csr", "-CA", self.ca_dir / "ca.crt",
                "-CAkey", self.ca_dir / "ca.key", "-set_serial", str(abs(hash(d)) % 10**9),
                "-out", d / "tsa.crt", "-days", "30", "-extfile", config,
                "-extensions", "tsa_ext")
        self._server: ThreadingHTTPServer | None = None

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def cert_file(self) -> Path:
        return self.directory / "tsa.crt"

    def reply(self, query: bytes) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "q.tsq")
            if self.stamp_other_data:
                query = openssl("ts", "-query", "-data", "/dev/null", "-sha256", "-cert")
            path.write_bytes(query)
            return openssl("ts", "-reply", "-config", self.directory / "tsa.cnf",
                           "-queryfile", path)

    def start(self, port: int = 0) -> str:
        """Serve on loopback (on `port`, to come back where a stopped TSA was); the URL."""
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                kind = self.headers.get("Content-Type", "")
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if kind != "application/timestamp-query":
                    return self._refuse(415, f"content type {kind!r}")
                try:
                    openssl("ts", "-query", "-in", "/dev/stdin", "-text", data=body)
                    answer = tsa.reply(body)
                except RuntimeError as exc:
                    return self._refuse(400, str(exc))
                tsa.answered += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def do_GET(self) -> None:  # noqa: N802
                self._refuse(405, "GET")

            def _refuse(self, status: int, why: str) -> None:
                tsa.refused.append(why)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:   # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/tsa"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
