"""Settings: strict, secrets only by reference and never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctrail.errors import ConfigError
from ctrail.secrets import EnvRef, FileRef, resolve_secret
from ctrail.settings import load_settings


def test_unknown_keys_are_rejected_with_their_path(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("pipeline:\n  batch_event: 10\n")
    with pytest.raises(ConfigError, match="pipeline.batch_event: Extra inputs are not permitted"):
        load_settings(config)


def test_a_secret_written_inline_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("sources:\n  hook:\n    type: k8s_audit_webhook\n    token: hunter2\n")
    with pytest.raises(ConfigError, match="sources.hook"):
        load_settings(config)


def test_secrets_resolve_from_env_and_file_and_never_print(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTRAIL_TEST_TOKEN", "tok-from-env")
    (tmp_path / "token").write_text("tok-from-file\n")
    from_env = resolve_secret(EnvRef(env="CTRAIL_TEST_TOKEN"))
    from_file = resolve_secret(FileRef(file=tmp_path / "token"))
    assert from_env.get_secret_value() == "tok-from-env"
    assert from_file.get_secret_value() == "tok-from-file"
    assert "tok-from" not in f"{from_env} {from_file!r}"


def test_no_example_config_holds_a_secret_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTRAIL_AUDIT_WEBHOOK_TOKEN", "tok-value-123")
    repo = Path(__file__).resolve().parents[3]
    for path in (repo / "config").glob("*.yaml"):
        settings = load_settings(path)
        assert "tok-value-123" not in str(settings)
        assert "tok-value-123" not in path.read_text()


def test_a_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.yaml")


def test_invalid_yaml_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("store: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(config)


def test_the_production_config_is_valid_and_distributed() -> None:
    settings = load_settings(Path(__file__).resolve().parents[3] / "config" / "production.yaml")
    assert (settings.bus.type, settings.store.type) == ("kafka", "elasticsearch")
    assert "apiserver-webhook" in settings.sources


def test_a_plain_string_token_says_how_secrets_are_written(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("sources:\n  hook:\n    type: k8s_audit_webhook\n    token: hunter2\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    message = str(raised.value)
    assert "sources.hook.k8s_audit_webhook.token: a secret is never written in the config: " \
        "use {env: NAME}" in message and "{file: /run/secrets/NAME}" in message
    assert "hunter2" not in message and "EnvRef" not in message


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("CTRAIL_PIPELINE__MAX_RECORD_BYTES", "lots", "valid integer"),
    ("CTRAIL_BUS__TYPE", "carrier-pigeon", "'local', 'kafka'"),
])
def test_an_error_in_an_environment_variable_names_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str,
        says: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("pipeline:\n  batch_events: 10\n")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    message = str(raised.value)
    assert message.startswith(f"invalid environment: environment variable {variable}: ")
    assert says in message and str(config) not in message
