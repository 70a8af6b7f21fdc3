"""SQL import: validation refuses dangerous URLs before any connection; a real PostgreSQL
import works when 127.0.0.1:5432 is there (skipped with a reason otherwise)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text

from aiaas.data import sql_import
from tests.conftest import postgres_admin_url
from tests.helpers import assert_problem

BAD_URLS = [
    "sqlite:////etc/passwd",
    "sqlite:///:memory:",
    "duckdb:///tmp/x.db",
    "file:///etc/passwd",
    "mysql://root@127.0.0.1/db",
    "postgresql://u@127.0.0.1/db?host=/var/run/postgresql",
    "postgresql://u@127.0.0.1/db?sslkey=/etc/ssl/private/key.pem",
    "postgresql://u@127.0.0.1/db?passfile=/root/.pgpass",
    "postgresql://u@127.0.0.1/db?service=prod",
    "postgresql://u@/db",
    "postgresql://u@%2Fvar%2Frun%2Fpostgresql/db",
    "postgresql://u@169.254.169.254/db",
    "postgresql://u@10.0.0.5/db",
    "postgresql://u@localhost/db?options=-c%20x",
    "postgresql://u@127.0.0.2/db",
    "postgresql://u@127.0.0.1",
    "not a url",
]


@pytest.fixture
def no_connect(monkeypatch):
    calls = []

    def guard(*args, **kwargs):
        calls.append(args)
        raise AssertionError("create_engine must not be reached")

    monkeypatch.setattr(sql_import, "create_engine", guard)
    return calls


def test_bad_urls_refused_without_connecting(client, tenants, settings, no_connect):
    settings.data.import_allowed_hosts = ["127.0.0.1"]
    h = tenants.a.headers("admin")
    for url in BAD_URLS:
        r = client.post(
            "/api/v1/datasets/import",
            headers=h,
            json={"name": "imp", "url": url, "query": "SELECT 1"},
        )
        body = assert_problem(r, 422)
        assert "secret" not in body["detail"]
    assert no_connect == []
    assert client.get("/api/v1/datasets", headers=h).json()["items"] == []


def test_import_disabled_without_allow_list(client, tenants, no_connect):
    r = client.post(
        "/api/v1/datasets/import",
        headers=tenants.a.headers("owner"),
        json={"name": "imp", "url": "postgresql://u:pw@127.0.0.1/db", "query": "SELECT 1"},
    )
    assert "disabled" in assert_problem(r, 422)["detail"]


def test_allow_list_matching():
    assert sql_import._allowed("db.internal", ["10.1.2.3"], ["db.internal"])
    assert sql_import._allowed("x", ["10.1.2.3"], ["10.0.0.0/8"])
    assert not sql_import._allowed("x", ["10.1.2.3", "127.0.0.1"], ["10.0.0.0/8"])
    assert not sql_import._allowed("x", ["169.254.169.254"], ["10.0.0.0/8", "db"])


PG = postgres_admin_url()


@pytest.mark.skipif(PG is None, reason="no PostgreSQL on 127.0.0.1:5432 (AIAAS_TEST_POSTGRES_URL)")
def test_import_from_real_postgres(client, tenants, settings):
    assert PG is not None
    table = f"aiaas_import_{uuid.uuid4().hex[:10]}"
    engine = create_engine(PG)
    with engine.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE {table} (id int, name text, price numeric(10,2), "
                "created timestamptz, ok boolean)"
            )
        )
        conn.execute(
            text(
                f"INSERT INTO {table} VALUES (1, 'a', 1.50, '2024-01-02T03:04:05Z', true), "
                "(2, NULL, 2.25, NULL, false), (3, 'c', NULL, '2024-05-06T07:08:09Z', NULL)"
            )
        )
    try:
        settings.data.import_allowed_hosts = ["127.0.0.1"]
        url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        h = tenants.a.headers("admin")
        r = client.post(
            "/api/v1/datasets/import",
            headers=h,
            json={"name": "imported", "url": url, "query": f"SELECT * FROM {table} ORDER BY id"},
        )
        assert r.status_code == 201, r.text
        v = r.json()["version"]
        assert v["row_count"] == 3
        assert v["source"]["kind"] == "sql_import"
        types = {c["name"]: c["type"] for c in v["schema"]}
        assert types == {
            "id": "integer",
            "name": "string",
            "price": "float",
            "created": "datetime",
            "ok": "boolean",
        }
        r = client.post(
            "/api/v1/sql", headers=h, json={"query": "SELECT sum(price), count(name) FROM imported"}
        )
        assert r.json()["rows"] == [[3.75, 2]]
        # the session is read-only
        r = client.post(
            "/api/v1/datasets/import",
            headers=h,
            json={"name": "w", "url": url, "query": f"DELETE FROM {table} RETURNING id"},
        )
        assert_problem(r, 422)
        r = client.post(
            "/api/v1/datasets/import",
            headers=h,
            json={"name": "w", "url": url, "query": "SELECT * FROM no_such_table"},
        )
        assert_problem(r, 422)
        bad = engine.url.set(drivername="postgresql", password="wrong-password-canary", port=1)
        r = client.post(
            "/api/v1/datasets/import",
            headers=h,
            json={
                "name": "w",
                "url": bad.render_as_string(hide_password=False),
                "query": "SELECT 1",
            },
        )
        body = assert_problem(r, 422)
        assert "canary" not in r.text
        assert body["detail"] == "could not connect to the database"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
