"""The admin CLI acts on the configured database; bad arguments exit 2 with one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from aiaas.cli.main import app

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("AIAAS_AUTH__ARGON2_MEMORY_KIB", "64")
    monkeypatch.setenv("AIAAS_AUTH__ARGON2_TIME_COST", "1")
    return str(tmp_path / "data")


def invoke(*args, data_dir, input=None):
    return runner.invoke(app, [*args, "--data-dir", data_dir], input=input)


def test_org_user_and_key(data_dir):
    assert invoke("db", "upgrade", data_dir=data_dir).exit_code == 0
    created = invoke("admin", "create-org", "acme", data_dir=data_dir)
    assert created.exit_code == 0
    assert created.stdout.strip().startswith("org_")
    user = invoke(
        "admin",
        "create-user",
        "Ann@Acme.io",
        "--org",
        "acme",
        "--role",
        "admin",
        "--password-stdin",
        data_dir=data_dir,
        input="a long enough password\n",
    )
    assert user.exit_code == 0, user.output
    assert user.stdout.strip() == ""  # the password came from stdin: nothing printed
    generated = invoke(
        "admin",
        "create-user",
        "bob@acme.io",
        "--org",
        "acme",
        "--role",
        "viewer",
        data_dir=data_dir,
    )
    assert generated.exit_code == 0
    assert len(generated.stdout.strip()) >= 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("admin", "create-org", "Bad Slug!"), "slug"),
        (("admin", "create-user", "x@y.z", "--org", "nope", "--role", "admin"), "not found"),
        (("admin", "create-api-key", "--org", "acme", "--role", "root"), "unknown role"),
        (("admin", "create-user", "not-an-email", "--org", "acme", "--role", "viewer"), "email"),
        (("admin", "create-org", "acme"), "already exists"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(data_dir, args, message):
    assert invoke("admin", "create-org", "acme", data_dir=data_dir).exit_code == 0
    result = invoke(*args, data_dir=data_dir)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_create_api_key_prints_only_the_key(tmp_path):
    env_dir = str(tmp_path / "d")
    base = [sys.executable, "-m", "aiaas.cli.main"]
    subprocess.run(
        [*base, "admin", "create-org", "acme", "--data-dir", env_dir],
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        [
            *base,
            "admin",
            "create-api-key",
            "--org",
            "acme",
            "--role",
            "developer",
            "--name",
            "ci",
            "--data-dir",
            env_dir,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert done.stdout.count("\n") == 1
    key = done.stdout.strip()
    assert key.startswith("aiaas_")
    assert len(key) > 40
    assert key not in done.stderr
    assert "created API key" in done.stderr


def test_one_email_in_two_organizations_is_two_accounts(data_dir):
    for slug in ("acme", "umbrella"):
        assert invoke("admin", "create-org", slug, data_dir=data_dir).exit_code == 0
    for slug in ("acme", "umbrella"):
        made = invoke(
            "admin",
            "create-user",
            "ann@acme.io",
            "--org",
            slug,
            "--role",
            "viewer",
            data_dir=data_dir,
        )
        assert made.exit_code == 0, made.output
        assert f"in {slug}" in made.stderr
    again = invoke(
        "admin",
        "create-user",
        "Ann@Acme.io",
        "--org",
        "acme",
        "--role",
        "admin",
        data_dir=data_dir,
    )
    assert again.exit_code == 2
    assert "already exists in this organization" in again.stderr


def test_cli_api_keys_belong_to_the_organization(data_dir):
    from sqlalchemy import select

    from aiaas.auth.models import ApiKey
    from aiaas.db import get_session_factory
    from aiaas.settings import Settings

    assert invoke("admin", "create-org", "acme", data_dir=data_dir).exit_code == 0
    made = invoke("admin", "create-api-key", "--org", "acme", "--role", "admin", data_dir=data_dir)
    assert made.exit_code == 0, made.output
    assert "organization-owned" in made.stderr
    url = Settings(data_dir=data_dir, _env_file=None).resolved_database_url
    with get_session_factory(url)() as session:
        row = session.scalar(select(ApiKey))
    assert row is not None
    assert (row.role, row.owner_user_id, row.created_by) == ("admin", None, None)
