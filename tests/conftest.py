"""Shared fixtures: settings on a temporary data dir, a migrated database, the app, two tenants.

The database is SQLite by default: migrated once per session into a template file, copied
per test. With ``AIAAS_TEST_DATABASE_URL=postgresql+psycopg://…`` the same tests run on
PostgreSQL: one fresh database per test worker, emptied between tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aiaas.api.app import create_app
from aiaas.auth import service as auth_service
from aiaas.auth.passwords import Passwords
from aiaas.auth.permissions import Role
from aiaas.data import service as data_service
from aiaas.data.context import DataContext
from aiaas.data.models import Dataset
from aiaas.data.versions import VersionInfo, store_version
from aiaas.db import dispose_all, get_session_factory
from aiaas.db.base import Base
from aiaas.db.migrate import upgrade
from aiaas.settings import Settings
from aiaas.storage import get_store
from tests.helpers import shared_dataset

ROLES = ("owner", "admin", "developer", "viewer")
PASSWORD = "correct horse battery staple"
TEST_PG_URL = os.environ.get("AIAAS_TEST_DATABASE_URL", "")
PG_URL = os.environ.get(
    "AIAAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def postgres_admin_url() -> str | None:
    """A reachable PostgreSQL server URL for tests, or None (tests are then skipped)."""
    url = TEST_PG_URL or PG_URL
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return url
    except Exception:
        return None


def create_pg_database(admin_url: str) -> str:
    name = f"aiaas_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(admin_url: str, url: str) -> None:
    dispose_all()
    name = make_url(url).database
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite: path of a migrated template file. PostgreSQL: URL of a migrated database."""
    if TEST_PG_URL:
        url = create_pg_database(TEST_PG_URL)
        upgrade(url)
        yield url
        drop_pg_database(TEST_PG_URL, url)
        return
    path = tmp_path_factory.mktemp("template") / "aiaas.db"
    upgrade(f"sqlite:///{path}")
    dispose_all()
    yield str(path)


def _fast_settings(data_dir: Path, database_url: str | None = None) -> Settings:
    return Settings(
        env="test",
        data_dir=data_dir,
        database_url=database_url,
        auth={"argon2_time_cost": 1, "argon2_memory_kib": 64, "min_password_length": 12},
        _env_file=None,
    )


@pytest.fixture
def settings(tmp_path: Path, migrated_template: str) -> Iterator[Settings]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if TEST_PG_URL:
        engine = create_engine(migrated_template)
        with engine.begin() as conn:
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {tables} CASCADE"))
        engine.dispose()
        yield _fast_settings(data_dir, migrated_template)
        return
    shutil.copyfile(migrated_template, data_dir / "aiaas.db")
    yield _fast_settings(data_dir)
    dispose_all()


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@dataclass
class Tenant:
    org_id: str
    slug: str
    keys: dict[str, str] = field(default_factory=dict)
    key_ids: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # role -> user id
    emails: dict[str, str] = field(default_factory=dict)  # role -> email

    def headers(self, role: str = "owner") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@dataclass
class Tenants:
    a: Tenant
    b: Tenant


def make_tenant(settings: Settings, slug: str) -> Tenant:
    passwords = Passwords(1, 64, 1)
    factory = get_session_factory(settings.resolved_database_url)
    with factory() as session, session.begin():
        org = auth_service.create_org(session, slug, f"Org {slug}")
        tenant = Tenant(org_id=org.id, slug=org.slug)
        for role in ROLES:
            row, key = auth_service.issue_api_key(session, org, role=Role(role), name=f"{role} key")
            tenant.keys[role], tenant.key_ids[role] = key, row.id
            email = f"{role}@{slug}.example"
            user = auth_service.create_user(session, passwords, org, email, PASSWORD, min_length=12)
            auth_service.add_membership(session, org, user, Role(role))
            tenant.users[role], tenant.emails[role] = user.id, email
    return tenant


@pytest.fixture
def tenants(settings: Settings) -> Tenants:
    """Two organizations, each with an API key and a user (password PASSWORD) per role."""
    return Tenants(make_tenant(settings, "org-a"), make_tenant(settings, "org-b"))


def make_dataset(
    settings: Settings,
    tenant: Tenant,
    table: pa.Table | Sequence[dict[str, Any]],
    *,
    name: str = "data",
    description: str | None = None,
    role: str = "owner",
) -> Dataset:
    """A dataset of ``tenant`` whose version 1 holds ``table`` (a pyarrow Table or rows).

    No HTTP upload and no ingest process: the table is written to Parquet as it is (so its
    column types are pyarrow's, not the ingest's normalised ones) and the version is stored
    by the data service's own code path (profile, files in the store, then the row), as the
    API's ``role`` key of ``tenant``. The result reads back through the API like an upload.
    Returns the committed dataset, with its version loaded.
    """
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pylist(list(table))
    store = get_store(settings.resolved_artifacts_url)
    factory = get_session_factory(settings.resolved_database_url)
    with (
        tempfile.TemporaryDirectory(prefix="make-dataset-") as tmp,
        factory() as session,
        session.begin(),
    ):
        resolved = auth_service.resolve_api_key(session, tenant.keys[role])
        assert resolved is not None, f"{tenant.slug} has no usable {role} key"
        principal = resolved[0]
        dataset = data_service.new_dataset(session, principal, name, description)
        parquet = Path(tmp) / "data.parquet"
        pq.write_table(table, parquet)
        ctx = DataContext.build(settings, store, settings.secret_key())
        info = VersionInfo({"kind": "test_factory", "rows": table.num_rows})
        store_version(session, principal, ctx, dataset, parquet, info)
        session.refresh(dataset)
    return dataset


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """``../shared/datasets`` beside the project root (skips, or fails when CI=true)."""
    return shared_dataset()
