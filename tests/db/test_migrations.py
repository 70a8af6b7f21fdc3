"""Migrations run up, down and up again on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from aiaas.db import dispose_all, get_engine
from aiaas.db.check import diff
from aiaas.db.migrate import current_revision, downgrade, head_revision, upgrade
from tests.conftest import create_pg_database, drop_pg_database, postgres_admin_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        dispose_all()
        return
    admin = postgres_admin_url()
    if admin is None:
        pytest.skip("PostgreSQL not reachable (set AIAAS_TEST_POSTGRES_URL); SQLite still ran")
    url = create_pg_database(admin)
    yield url
    drop_pg_database(admin, url)


def test_upgrade_downgrade_upgrade(database_url):
    upgrade(database_url)
    assert current_revision(database_url) == head_revision()
    tables = set(inspect(get_engine(database_url)).get_table_names())
    assert {"organizations", "users", "memberships", "api_keys", "audit_events"} <= tables
    downgrade(database_url, "base")
    assert current_revision(database_url) is None
    assert set(inspect(get_engine(database_url)).get_table_names()) <= {"alembic_version"}
    upgrade(database_url)
    upgrade(database_url)  # idempotent
    assert current_revision(database_url) == head_revision()


def test_migrations_match_models(database_url):
    assert diff(database_url) == []  # what `make migrate-check` runs, here on both backends
