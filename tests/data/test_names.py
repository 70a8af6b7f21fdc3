"""Dataset names are unique per organization regardless of case (SQL folds identifiers).

Enforced three times: the service answers 409 naming the existing dataset, the database has
a unique index on ``(org_id, lower(name))``, and migration 0004 renames case duplicates that
existed before it (oldest keeps its name, later ones get `` (2)``, `` (3)`` …; ids stay).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError

from aiaas.auth import service as auth_service
from aiaas.data.models import Dataset
from aiaas.db import dispose_all, get_session_factory
from aiaas.db.base import new_id
from aiaas.db.migrate import upgrade
from tests.conftest import TEST_PG_URL, create_pg_database, drop_pg_database
from tests.data.conftest import data_files
from tests.helpers import assert_problem

CSV = b"id,amount\n1,2.5\n2,3.5\n"


def _sql(client: Any, headers: dict[str, str], query: str) -> Any:
    return client.post("/api/v1/sql", headers=headers, json={"query": query})


def test_a_name_differing_only_in_case_is_a_409_on_create(client, tenants, upload, settings):
    h = tenants.a.headers("developer")
    assert upload(h, CSV, name="Sales").status_code == 201
    files = data_files(settings)
    for name in ("sales", "SALES", "sAlEs"):
        problem = assert_problem(upload(h, CSV, name=name), 409, "conflict")
        assert problem["detail"] == (
            "a dataset named 'Sales' already exists (names are unique regardless of case)"
        )
    assert data_files(settings) == files  # nothing stored for the refused uploads
    listed = client.get("/api/v1/datasets", headers=h).json()["items"]
    assert [d["name"] for d in listed] == ["Sales"]
    r = _sql(client, h, "SELECT count(*) FROM sales")  # one view, unambiguous
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [[2]]


def test_a_rename_to_another_datasets_name_in_other_case_is_a_409(client, tenants, upload):
    h = tenants.a.headers("developer")
    upload(h, CSV, name="Sales")
    other = upload(h, CSV, name="costs").json()["id"]
    r = client.patch(f"/api/v1/datasets/{other}", headers=h, json={"name": "SALES"})
    problem = assert_problem(r, 409, "conflict")
    assert "'Sales' already exists" in problem["detail"]
    assert client.get(f"/api/v1/datasets/{other}", headers=h).json()["name"] == "costs"


def test_a_dataset_may_change_the_case_of_its_own_name(client, tenants, upload):
    h = tenants.a.headers("developer")
    ds = upload(h, CSV, name="Sales").json()["id"]
    r = client.patch(f"/api/v1/datasets/{ds}", headers=h, json={"name": "SALES"})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "SALES"


def test_an_import_under_a_name_in_other_case_is_a_409(client, tenants, upload):
    upload(tenants.a.headers("developer"), CSV, name="Sales")
    body = {"name": "sales", "url": "postgresql://u@db.example/x", "query": "SELECT 1"}
    r = client.post("/api/v1/datasets/import", headers=tenants.a.headers("admin"), json=body)
    problem = assert_problem(r, 409, "conflict")
    assert "'Sales' already exists" in problem["detail"]


def test_other_organizations_may_use_the_name_in_any_case(client, tenants, upload):
    assert upload(tenants.a.headers("developer"), CSV, name="Sales").status_code == 201
    assert upload(tenants.b.headers("developer"), CSV, name="sales").status_code == 201


def test_the_database_refuses_case_duplicates(settings, tenants):
    factory = get_session_factory(settings.resolved_database_url)
    with factory() as session:
        session.add(Dataset(org_id=tenants.a.org_id, name="Sales", latest_version=0))
        session.flush()
        session.add(Dataset(org_id=tenants.a.org_id, name="sALES", latest_version=0))
        with pytest.raises(IntegrityError):
            session.flush()
        session.rollback()
    with factory() as session, session.begin():  # the same name in another org is fine
        session.add(Dataset(org_id=tenants.a.org_id, name="Sales", latest_version=0))
        session.add(Dataset(org_id=tenants.b.org_id, name="SALES", latest_version=0))


@pytest.fixture
def database_at_0003(tmp_path):
    """A fresh database migrated to 0003 (before the case-insensitive index)."""
    if TEST_PG_URL:
        url = create_pg_database(TEST_PG_URL)
    else:
        url = f"sqlite:///{tmp_path / f'm{uuid.uuid4().hex[:6]}.db'}"
    upgrade(url, "0003")
    yield url
    if TEST_PG_URL:
        drop_pg_database(TEST_PG_URL, url)
    else:
        dispose_all()


def test_migration_0004_renames_existing_case_duplicates_and_keeps_ids(database_at_0003):
    url = database_at_0003
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = {  # key: (org, name, created_at offset in minutes)
        "first": ("a", "Sales", 10),
        "second": ("a", "sales", 20),
        "third": ("a", "SALES", 30),
        "taken": ("a", "sales (2)", 5),  # a name the renaming must not reuse
        "unrelated": ("a", "costs", 1),
        "other_org": ("b", "sales", 40),
    }
    ids: dict[str, str] = {}
    with get_session_factory(url)() as session, session.begin():
        orgs = {k: auth_service.create_org(session, f"org-{k}", k).id for k in ("a", "b")}
        for key, (org, name, minutes) in rows.items():
            ids[key] = new_id("ds")
            session.execute(  # Core: the table as it is at 0003 (no name_folded yet)
                insert(cast(Table, Dataset.__table__)).values(
                    id=ids[key],
                    org_id=orgs[org],
                    name=name,
                    latest_version=0,
                    created_at=t0 + timedelta(minutes=minutes),
                    updated_at=t0,
                )
            )
    upgrade(url)
    with get_session_factory(url)() as session:
        names = {ds.id: ds.name for ds in session.scalars(select(Dataset))}
    assert names == {
        ids["first"]: "Sales",  # the oldest keeps its name
        ids["second"]: "sales (3)",  # "sales (2)" was taken
        ids["third"]: "SALES (4)",
        ids["taken"]: "sales (2)",
        ids["unrelated"]: "costs",
        ids["other_org"]: "sales",  # another organization: untouched
    }
    with get_session_factory(url)() as session:
        session.add(Dataset(org_id=orgs["a"], name="SALES (3)", latest_version=0))
        with pytest.raises(IntegrityError):
            session.flush()
        session.rollback()
