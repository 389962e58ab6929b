"""Running the CLI as a user does: in process (fast) or as a real `ctrail` subprocess."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from ctrail.cli.main import main

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))       # the corpus generator is shared with bench/


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A real moto server (S3, CloudWatch Logs, ...) in server mode, one per test module."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class Run:
    status: int
    out: str
    err: str

    def json_lines(self) -> list[dict]:  # type: ignore[type-arg]
        return [orjson.loads(line) for line in self.out.splitlines() if line.strip()]


@pytest.fixture
def ctrail(capsys: pytest.CaptureFixture[str], tmp_data_dir: Path):  # type: ignore[no-untyped-def]
    """ctrail(*args): run the CLI in this process against a fresh data directory."""
    def run(*args: str) -> Run:
        status = main([*args, "--data-dir", str(tmp_data_dir)])
        captured = capsys.readouterr()
        return Run(status, captured.out, captured.err)
    return run


def _ctrail_subprocess(*args: str, timeout: float = 600) -> Run:
    exe = Path(sys.executable).with_name("ctrail")
    done = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def ctrail_subprocess():  # type: ignore[no-untyped-def]
    """ctrail_subprocess(*args): the installed console script, as a user runs it."""
    return _ctrail_subprocess
