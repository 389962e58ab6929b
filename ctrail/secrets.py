"""Secrets are references in the config, never values: `{env: NAME}` or `{file: /run/secrets/x}`.

They resolve to SecretStr, whose repr and str are `**********`, so a secret cannot reach a log
line or an error message by accident.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

from ctrail.errors import ConfigError


class EnvRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    env: str


class FileRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    file: Path


SecretRef = EnvRef | FileRef


def resolve_secret(ref: SecretRef) -> SecretStr:
    """The secret's value; ConfigError (naming the reference, not the value) when absent,
    empty or only white space. An empty token or key would otherwise match an empty
    credential (a listener without a header, a forward handshake anyone can compute): an
    unusable secret stops the start instead of turning authentication off."""
    if isinstance(ref, EnvRef):
        value = os.environ.get(ref.env)
        if value is None:
            raise ConfigError(f"the environment variable {ref.env} is not set")
        if not value.strip():
            raise ConfigError(f"the environment variable {ref.env} is empty or only white space")
        return SecretStr(value)
    try:
        value = ref.file.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read the secret file {ref.file}: {reason}") from None
    if not value:
        raise ConfigError(f"the secret file {ref.file} is empty or only white space")
    return SecretStr(value)
