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
    """The secret's value; ConfigError (naming the reference, not the value) when absent."""
    if isinstance(ref, EnvRef):
        value = os.environ.get(ref.env)
        if not value:
            raise ConfigError(f"the environment variable {ref.env} is not set")
        return SecretStr(value)
    try:
        return SecretStr(ref.file.read_text().strip())
    except OSError as exc:
        raise ConfigError(f"cannot read the secret file {ref.file}: {exc.strerror}") from None
