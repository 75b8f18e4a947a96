"""Settings: precedence, secret references, and clear errors for bad configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilothouse.errors import ConfigError
from pilothouse.settings import load_settings


def test_environment_overrides_the_file_and_flags_override_both(tmp_path: Path) -> None:
    config = tmp_path / "p.yaml"
    config.write_text("port: 8000\nhost: 0.0.0.0\nmax_body_bytes: 4096\n")
    settings = load_settings(config, {"host": "127.0.0.2"}, environ={"PILOTHOUSE_PORT": "9000"})
    assert (settings.host, settings.port, settings.max_body_bytes) == ("127.0.0.2", 9000, 4096)


def test_secret_references_resolve_and_stay_out_of_repr(tmp_path: Path) -> None:
    (tmp_path / "db-url").write_text("postgresql://u@h/db\n")
    config = tmp_path / "p.yaml"
    config.write_text('database_url: {"$file": "db-url"}\nadmin_key: {"$env": "MY_ADMIN_KEY"}\n')
    secret = "phk_ABCDEFGHIJKL_" + "s" * 40
    settings = load_settings(config, environ={"MY_ADMIN_KEY": secret})
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.admin_key is not None
    assert settings.admin_key.get_secret_value() == secret
    assert secret not in repr(settings)
    assert secret not in str(settings.model_dump())
    with pytest.raises(ConfigError, match="MY_ADMIN_KEY"):
        load_settings(config, environ={})


def test_an_unknown_setting_is_an_error_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "p.yaml"
    config.write_text("prot: 8000\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(config, environ={})


def test_a_bad_value_is_an_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="port"):
        load_settings(environ={"PILOTHOUSE_PORT": "seventy"})


def test_a_missing_secret_file_is_an_error_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "p.yaml"
    config.write_text('admin_key: {"$file": "nope"}\n')
    with pytest.raises(ConfigError, match="nope"):
        load_settings(config, environ={})


def test_postgres_urls_get_the_async_driver() -> None:
    settings = load_settings(environ={"PILOTHOUSE_DATABASE_URL": "postgresql://u@h:5432/db"})
    assert settings.resolved_database_url() == "postgresql+asyncpg://u@h:5432/db"
    default = load_settings(environ={})
    assert default.resolved_database_url().startswith("sqlite+aiosqlite:///")


def test_secret_references_resolve_inside_models(tmp_path: Path) -> None:
    config = tmp_path / "pilothouse.yaml"
    config.write_text(
        """
models:
  - alias: gpt-4o
    deployments:
      - provider: openai
        model: gpt-4o
        api_key: {"$env": "UPSTREAM_KEY"}
        headers: {"x-team": "infra"}
"""
    )
    loaded = load_settings(config, environ={"UPSTREAM_KEY": "sk-from-env"})
    key = loaded.models[0].deployments[0].api_key
    assert key is not None and key.get_secret_value() == "sk-from-env"
    assert loaded.models[0].deployments[0].headers == {"x-team": "infra"}
    with pytest.raises(ConfigError, match="UPSTREAM_KEY"):
        load_settings(config, environ={})


def test_structured_settings_come_from_json_environment_variables() -> None:
    models = '[{"alias": "m", "deployments": [{"provider": "demo", "model": "demo-1"}]}]'
    loaded = load_settings(
        environ={"PILOTHOUSE_MODELS": models, "PILOTHOUSE_GATEWAY": '{"breaker_failures": 5}'}
    )
    assert [m.alias for m in loaded.models] == ["m"]
    assert loaded.gateway.breaker_failures == 5
    with pytest.raises(ConfigError, match="PILOTHOUSE_MODELS is not valid JSON"):
        load_settings(environ={"PILOTHOUSE_MODELS": "[not json"})
