"""kube-apiserver's own audit webhook client (tests/apiserver_webhook), built once and cached.

The binary is cached outside the repository, under a hash of its sources and the Go version:
~/.cache/containertrail/apiserver-webhook/<hash>/client, with the module and build caches
beside it (~/.cache/containertrail/go), so a clean clone on the same machine builds it at most
once. Without `go` on PATH the tests that need the client are skipped, saying why.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "apiserver_webhook"
POLICY = SOURCE / "policy.yaml"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "containertrail"


def client_path(go: str) -> Path:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update(name.encode() + b"\0" + (SOURCE / name).read_bytes() + b"\0")
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True)
    digest.update(version.stdout.encode())
    return CACHE / "apiserver-webhook" / digest.hexdigest()[:16] / "client"


def build(go: str) -> Path:
    """The cached client binary, built first if it is not there yet."""
    binary = client_path(go)
    if binary.is_file():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOMODCACHE": str(CACHE / "go" / "mod"),
           "GOCACHE": str(CACHE / "go" / "build"), "GOTOOLCHAIN": "local",
           "GOFLAGS": "-mod=readonly", "CGO_ENABLED": "0"}
    # Built beside its final name, then renamed: a concurrent or killed build leaves no half file.
    fd, partial = tempfile.mkstemp(prefix="client.", dir=binary.parent)
    os.close(fd)
    started = time.monotonic()
    try:
        done = subprocess.run([go, "build", "-trimpath", "-buildvcs=false", "-o", partial, "."],
                              cwd=SOURCE, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"building {SOURCE} failed:\n{done.stderr}")
        os.replace(partial, binary)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    print(f"built the kube-apiserver audit webhook client in {time.monotonic() - started:.0f} s: "
          f"{binary}")
    return binary


@pytest.fixture(scope="session")
def apiserver_client() -> Path:
    """The path of the built client; skips when Go is not installed."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("needs the Go toolchain (`go` on PATH) to build kube-apiserver's audit "
                    "webhook client from tests/apiserver_webhook")
    return build(go)
