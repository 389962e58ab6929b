"""Every integration test runs as one deployment with one redaction key.

Intake hashes secrets under the deployment's HMAC key before a record reaches ctrail.raw. Event
ids leave those hashes out (ctrail.identity), but the stored values are the hashes: the tests
compare what processes with different data dirs stored (embedded mode beside distributed mode,
the ingesting CLI beside the workers), so they get the one key a deployment must give all of
its collectors (RedactionConfig.key), through the environment every ctrail process inherits.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Iterator

import pytest

KEY_VARIABLE = "CTRAIL_REDACTION__KEY"


@pytest.fixture(scope="session")
def deployment_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("redaction") / "redaction.key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    return key


@pytest.fixture(scope="module", autouse=True)
def deployment_redaction_key(deployment_key_file: Path) -> Iterator[None]:
    """Set for each integration module (before its module-scoped fixtures, which ingest), and
    taken away after it: the tests of other folders run with a data directory's own key."""
    before = os.environ.get(KEY_VARIABLE)
    os.environ[KEY_VARIABLE] = f'{{"file": "{deployment_key_file}"}}'
    yield
    if before is None:
        os.environ.pop(KEY_VARIABLE, None)
    else:
        os.environ[KEY_VARIABLE] = before
