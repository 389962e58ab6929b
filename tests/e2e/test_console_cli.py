"""`ctrail users` and `ctrail run` with a `console:` section, as a user runs them: the first
admin made from the shell, then the console served over TLS beside the pipeline."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from console_scenario import PASSWORD, incident, write_lines
from ctrail.cli.main import main
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("ctrail")


def ctrail(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], input=stdin, capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "console.crt", directory / "console.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_users_add_list_set_role_token_and_remove(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = ["--data-dir", str(tmp_path / "data")]

    def users(*args: str, stdin: str = "") -> tuple[int, str, str]:
        """`ctrail users ...` in this process (as the console script runs main)."""
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        status = main(["users", *args, *data])
        out, err = capsys.readouterr()
        return status, out, err

    def listed() -> list[dict]:  # type: ignore[type-arg]
        return [orjson.loads(x) for x in users("list", "--format", "json")[1].splitlines()]

    short = users("add", "root", "--password-stdin", stdin="short\n")
    assert short[0] == 2 and "at least 12 characters" in short[2]
    assert users("add", "root", "--role", "admin", "--password-stdin",
                 stdin=PASSWORD + "\n")[0] == 0
    again = users("add", "root", "--password-stdin", stdin=PASSWORD + "\n")
    assert again[0] == 2 and "exists already" in again[2]
    assert users("add", "pay", "--role", "responder", "--namespace", "payments",
                 "--password-stdin", stdin=PASSWORD + "\n")[0] == 0
    assert listed() == [
        {"name": "pay", "role": "responder", "namespaces": ["payments"], "clusters": []},
        {"name": "root", "role": "admin", "namespaces": [], "clusters": []}]
    assert users("set-role", "pay", "viewer")[0] == 0
    assert listed()[0]["role"] == "viewer" and listed()[0]["namespaces"] == ["payments"]
    assert users("set-role", "pay", "viewer", "--unscoped")[0] == 0
    assert listed()[0]["namespaces"] == []
    status, token, _err = users("token", "pay", "--label", "ci")
    assert status == 0 and token.startswith("ctrail_")
    assert users("remove", "ghost")[0] == 2
    assert users("remove", "pay")[0] == 0
    assert [u["name"] for u in listed()] == ["root"]
    stored = (tmp_path / "data" / "console.db").read_bytes()
    assert PASSWORD.encode() not in stored and token.strip().encode() not in stored
    assert b"$argon2id$" in stored
    spool = (tmp_path / "data" / "audit-spool.jsonl").read_text()
    assert spool.count('"action":"console-users"') == 6 and PASSWORD not in spool
    # As a user types it: the installed console script, the password on stdin.
    done = ctrail("users", "add", "ann", "--password-stdin", *data, stdin=PASSWORD + "\n")
    assert done.returncode == 0 and "Added ann (viewer)." in done.stderr


def test_run_serves_the_console_over_tls_when_configured(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    cert, key = self_signed(tmp_path)
    audit_log = write_lines(tmp_path / "audit.log", incident())
    config = tmp_path / "ctrail.yaml"
    config.write_text(f"""
sources:
  apiserver-log: {{type: k8s_audit_file, path: {audit_log}, poll_interval_secs: 0.1}}
console: {{port: {port}, tls_cert_file: {cert}, tls_key_file: {key}}}
""")
    assert ctrail("users", "add", "root", "--role", "admin", "--password-stdin", "--data-dir",
                  str(data_dir), stdin=PASSWORD + "\n").returncode == 0
    proc = subprocess.Popen([str(EXE), "run", "--config", str(config), "--data-dir",
                             str(data_dir)], cwd=REPO, env=os.environ.copy(),
                            stderr=subprocess.PIPE, text=True)
    trusted = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{port}"
    try:
        def alerts_stored() -> bool:
            try:
                with httpx.Client(base_url=url, verify=trusted, timeout=10) as client:
                    login = client.post("/api/login", json={"user": "root",
                                                             "password": PASSWORD})
                    return login.status_code == 200 and \
                        client.get("/api/alerts").json()["count"] == 3
            except httpx.TransportError:
                return False
        wait_for(alerts_stored, timeout=60)
        with httpx.Client(base_url=url, verify=trusted, timeout=10) as client:
            login = client.post("/api/login", json={"user": "root", "password": PASSWORD})
            assert "secure" in login.headers["set-cookie"].lower()   # Secure under TLS
        # Plain HTTP on the TLS port gets no answer.
        try:
            plain = httpx.get(f"http://127.0.0.1:{port}/login", timeout=5).status_code
        except httpx.TransportError:
            plain = None
        assert plain is None or plain >= 400
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_console_serves_until_sigterm_and_says_when_its_port_is_taken(tmp_path: Path) -> None:
    port = free_port()
    command = [str(EXE), "console", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    proc = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/login", timeout=5).status_code == 200
            except httpx.TransportError:
                return False
        wait_for(answers, timeout=60)
        assert httpx.get(f"http://127.0.0.1:{port}/api/alerts").status_code == 401
        taken = ctrail("console", "--port", str(port), "--data-dir", str(tmp_path / "data"))
        assert taken.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "no console users yet" in err and f"http://127.0.0.1:{port}/" in err
