"""The real deployment tools the deploy tests use, from the Go module proxy, cached outside the
repository under ~/.cache/containertrail (a clean clone on the same machine fetches them once):

- helm: `helm.sh/helm/v4/cmd/helm` built with `go install` (get.helm.sh is not reachable
  from every test machine; the module proxy is), in helm/<version>/helm.
- The Kubernetes OpenAPI v3 specs of every built-in API group (`api/openapi-spec/v3` of the
  `k8s.io/kubernetes` module), what kube-apiserver itself validates objects against.
- docker compose (`github.com/docker/compose/v5/cmd`), standalone, in
  docker-compose/<version>/docker-compose, for `docker compose config` where Docker has no
  compose plugin. Its module has exclude directives, which `go install pkg@version` refuses:
  it is built as the dependency of a one-line module of ours.

`scripts/test` runs `python -m tests.kubernetes_tools` first, so both are in place before the
tests; the fixtures build them too when run alone. Without `go` the tests that need them skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HELM_VERSION = "v4.3.2"
KUBERNETES_VERSION = "v1.37.2"
COMPOSE_VERSION = "v5.6.0"          # v5.7 needs Go 1.26.10; this machine has 1.26.8
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "containertrail"


def go_env() -> dict[str, str]:
    return {**os.environ, "GOMODCACHE": str(CACHE / "go" / "mod"),
            "GOCACHE": str(CACHE / "go" / "build"), "GOTOOLCHAIN": "local",
            "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}


def helm_binary(go: str) -> Path:
    """The cached helm, built first when missing (about 6 minutes on 2 cores)."""
    target = CACHE / "helm" / HELM_VERSION
    binary = target / "helm"
    if binary.is_file():
        return binary
    target.mkdir(parents=True, exist_ok=True)
    partial = target / f".build-{os.getpid()}"          # go install writes GOBIN/helm
    started = time.monotonic()
    try:
        done = subprocess.run(
            [go, "install", "-trimpath", f"helm.sh/helm/v4/cmd/helm@{HELM_VERSION}"],
            env={**go_env(), "GOBIN": str(partial)}, capture_output=True, text=True,
            timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"building helm {HELM_VERSION} failed:\n{done.stderr[-3000:]}")
        os.replace(partial / "helm", binary)              # whole, or not at all
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    print(f"built helm {HELM_VERSION} in {time.monotonic() - started:.0f} s: {binary}",
          file=sys.stderr)
    return binary


def openapi_specs(go: str) -> Path:
    """The directory of the Kubernetes OpenAPI v3 spec files, downloaded first when missing."""
    done = subprocess.run([go, "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
                          env=go_env(), capture_output=True, text=True, timeout=900,
                          cwd=CACHE if CACHE.is_dir() else None)
    if done.returncode != 0:
        raise RuntimeError(f"downloading k8s.io/kubernetes {KUBERNETES_VERSION} failed:\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return Path(json.loads(done.stdout)["Dir"]) / "api" / "openapi-spec" / "v3"


def compose_binary(go: str) -> Path:
    """The cached standalone docker compose, built first when missing (about 6 minutes)."""
    target = CACHE / "docker-compose" / COMPOSE_VERSION
    binary = target / "docker-compose"
    if binary.is_file():
        return binary
    module = target / "src"
    module.mkdir(parents=True, exist_ok=True)
    (module / "go.mod").write_text("module ctrailcompose\n\ngo 1.26\n")
    (module / "tools.go").write_text('package tools\n\nimport _ "github.com/docker/compose/v5/cmd"\n')
    partial = target / f".build-{os.getpid()}"
    started = time.monotonic()
    try:
        for step in ([go, "get", f"github.com/docker/compose/v5@{COMPOSE_VERSION}"],
                     [go, "build", "-trimpath", "-o", str(partial),
                      "github.com/docker/compose/v5/cmd"]):
            done = subprocess.run(step, cwd=module, env=go_env(), capture_output=True,
                                  text=True, timeout=1800)
            if done.returncode != 0:
                raise RuntimeError(f"building docker compose failed:\n{done.stderr[-3000:]}")
        os.replace(partial, binary)
    finally:
        partial.unlink(missing_ok=True)
    print(f"built docker compose {COMPOSE_VERSION} in {time.monotonic() - started:.0f} s: "
          f"{binary}", file=sys.stderr)
    return binary


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        pytest.skip("needs the Go toolchain (`go` on PATH) to build helm and fetch the "
                    "Kubernetes OpenAPI specs from the Go module proxy")
    return go


@pytest.fixture(scope="session")
def helm() -> Path:
    return helm_binary(_go())


@pytest.fixture(scope="session")
def kubernetes_openapi() -> Path:
    return openapi_specs(_go())


@pytest.fixture(scope="session")
def docker_compose() -> list[str]:
    """The command that runs compose: Docker's plugin when it has one, else ours."""
    docker = shutil.which("docker")
    if docker is not None and subprocess.run([docker, "compose", "version"],
                                             capture_output=True).returncode == 0:
        return [docker, "compose"]
    return [str(compose_binary(_go()))]


if __name__ == "__main__":
    go = shutil.which("go")
    if go is None:
        print("tests.kubernetes_tools: no Go here: the helm chart tests will be skipped",
              file=sys.stderr)
        sys.exit(0)
    CACHE.mkdir(parents=True, exist_ok=True)
    print(helm_binary(go))
    print(openapi_specs(go))
    print(compose_binary(go))
