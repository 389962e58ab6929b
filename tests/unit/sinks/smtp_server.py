"""A real SMTP server on loopback (aiosmtpd) that requires STARTTLS and AUTH, with a throwaway
CA and server certificate made for the test, and faults injected by time (a 4xx at DATA, as a
relay that is briefly unhappy answers)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Callable

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def throwaway_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): a CA and a certificate for 127.0.0.1/localhost."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ctrail test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Mail:
    at: float
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: str | None


@dataclass
class SmtpServer:
    directory: Path
    user: str = "ctrail"
    password: str = "smtp-Pa55word-for-tests"
    clock: Callable[[], float] = time.time
    fault: Callable[[float], str | None] | None = None     # an SMTP reply, e.g. "451 ..."
    implicit_tls: bool = False          # TLS from the first byte (port 465 style), no STARTTLS
    mails: list[Mail] = field(default_factory=list)
    refused: int = 0
    failed_logins: int = 0

    def __post_init__(self) -> None:
        self.ca, cert, key = throwaway_certificates(self.directory)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.lock = threading.Lock()
        self.port = free_port()
        self.restart()

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        good = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == self.user
                and auth_data.password.decode() == self.password)
        if not good:
            with self.lock:
                self.failed_logins += 1
        # handled=False: aiosmtpd answers the failure itself (535).
        return AuthResult(success=good, handled=False,
                          auth_data=auth_data.login.decode() if good else None)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        fault = self.fault(self.clock()) if self.fault else None
        with self.lock:
            if fault is not None:
                self.refused += 1
                return fault
            message = message_from_bytes(envelope.content, policy=policy.default)
            assert isinstance(message, EmailMessage)
            tls = server.transport.get_extra_info("ssl_object") is not None   # either way
            self.mails.append(Mail(self.clock(), envelope.mail_from, list(envelope.rcpt_tos),
                                   message, tls, session.auth_data))
        return "250 2.0.0 Message accepted for delivery"

    def stop(self) -> None:
        self.controller.stop()

    def restart(self) -> None:
        """Listen (again) on the same port: a stopped controller cannot start again."""
        tls: dict[str, Any] = ({"ssl_context": self.context} if self.implicit_tls else
                               {"tls_context": self.context, "require_starttls": True})
        # aiosmtpd offers AUTH "after TLS" only after STARTTLS; on an implicit-TLS port the
        # whole connection is TLS already, so it must not wait for a STARTTLS that never comes.
        self.controller = Controller(
            self, hostname="127.0.0.1", port=self.port, auth_required=True,
            auth_require_tls=not self.implicit_tls, authenticator=self._authenticate, **tls)
        self.controller.start()


def parts(message: EmailMessage) -> dict[str, Any]:
    """text, html, and attachments {filename: bytes} of a received mail."""
    text = message.get_body(("plain",))
    page = message.get_body(("html",))
    return {"text": text.get_content() if text else None,
            "html": page.get_content() if page else None,
            "attachments": {a.get_filename(): a.get_payload(decode=True)
                            for a in message.iter_attachments()}}
