"""Settings come from AIAAS_* variables and .env files; defaults are embedded."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from aiaas.settings import Settings


def test_defaults_are_embedded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings(_env_file=None)
    assert settings.data_dir == (tmp_path / "aiaas-data").resolve()
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'aiaas-data' / 'aiaas.db'}"
    assert settings.resolved_artifacts_url == str(tmp_path / "aiaas-data" / "artifacts")


def test_environment_and_nested_groups(tmp_path, monkeypatch):
    monkeypatch.setenv("AIAAS_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("AIAAS_DATABASE_URL", "postgresql+psycopg://u:p@db/aiaas")
    monkeypatch.setenv("AIAAS_LIMITS__MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("AIAAS_AUTH__ACCESS_TOKEN_TTL_S", "60")
    monkeypatch.setenv("AIAAS_LOG_FORMAT", "json")
    settings = Settings(_env_file=None)
    assert settings.data_dir == tmp_path / "d"
    assert settings.resolved_database_url.startswith("postgresql+psycopg://")
    assert settings.limits.max_body_bytes == 2048
    assert settings.auth.access_token_ttl_s == 60
    assert settings.log_format == "json"


def test_dotenv_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path(".env").write_text("AIAAS_PORT=9123\nAIAAS_ARTIFACTS_URL=s3://bucket/prefix\n")
    settings = Settings()
    assert settings.port == 9123
    assert settings.resolved_artifacts_url == "s3://bucket/prefix"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AIAAS_PORT", "not-a-port"),
        ("AIAAS_PORT", "70000"),
        ("AIAAS_LOG_FORMAT", "xml"),
        ("AIAAS_LIMITS__MAX_BODY_BYTES", "-1"),
    ],
)
def test_bad_values_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


def test_secret_key_generated_once_with_private_mode(tmp_path):
    settings = Settings(data_dir=tmp_path, _env_file=None)
    first = settings.secret_key()
    assert first == Settings(data_dir=tmp_path, _env_file=None).secret_key()
    assert len(first) >= 32
    assert (tmp_path / ".secret_key").stat().st_mode & 0o077 == 0


def test_short_secret_refused_in_prod(tmp_path):
    settings = Settings(data_dir=tmp_path, env="prod", auth={"secret_key": "short"}, _env_file=None)
    with pytest.raises(ValueError, match="at least 32"):
        settings.secret_key()
