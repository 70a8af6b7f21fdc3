"""Files and rows stay together: orphan sweep, and deleting files only after the commit."""

from __future__ import annotations

import os
import time

from aiaas.api.state import app_state
from aiaas.auth.permissions import Role
from aiaas.auth.principal import Principal
from aiaas.data import service, sweep
from aiaas.db import get_session_factory
from aiaas.storage import get_store


def _store(settings):
    return get_store(settings.resolved_artifacts_url)


def _age(store, org_id: str, key: str, seconds: float) -> None:
    path = store.local_path(org_id, key)
    assert path is not None
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_sweep_orphans_removes_only_old_files_without_a_row(client, tenants, upload, settings):
    h = tenants.a.headers("developer")
    created = upload(h, b"a,b\n1,2\n3,4\n", name="live")
    assert created.status_code == 201, created.text
    store = _store(settings)
    org_a, org_b = tenants.a.org_id, tenants.b.org_id
    live = list(store.list(org_a, "datasets"))
    assert live  # data.parquet and profile.json of version 1
    for key in live:
        _age(store, org_a, key, 7200)  # old, but a row refers to them: kept
    crashed = "datasets/ds_gone/dsv_crashed"  # stored, then the process died before commit
    for org in (org_a, org_b):
        store.put_bytes(org, f"{crashed}/data.parquet", b"PAR1")
        store.put_bytes(org, f"{crashed}/profile.json", b"{}")
        for name in ("data.parquet", "profile.json"):
            _age(store, org, f"{crashed}/{name}", 7200)
    in_flight = "datasets/ds_new/dsv_storing"  # being stored right now (another replica)
    store.put_bytes(org_a, f"{in_flight}/data.parquet", b"PAR1")

    with get_session_factory(settings.resolved_database_url)() as session:
        assert sweep.sweep_orphans(session, store) == 2  # one per organization
    assert list(store.list(org_a, "datasets")) == sorted([*live, f"{in_flight}/data.parquet"])
    assert list(store.list(org_b, "datasets")) == []
    r = client.get(f"/api/v1/datasets/{created.json()['id']}/versions/1/download", headers=h)
    assert r.status_code == 200


def test_deleting_a_dataset_keeps_its_files_until_the_commit(client, tenants, upload, settings):
    h = tenants.a.headers("developer")
    created = upload(h, b"a,b\n1,2\n", name="doomed")
    assert created.status_code == 201, created.text
    store = _store(settings)
    org = tenants.a.org_id
    files = list(store.list(org, "datasets"))
    assert files
    principal = Principal(org, tenants.a.slug, Role.admin, "system", "test")
    ctx = app_state(client.app).data
    factory = get_session_factory(settings.resolved_database_url)
    with factory() as session:
        service.delete_dataset(session, principal, ctx, created.json()["id"])
        session.rollback()  # the commit did not happen: rows and files both stay
    assert list(store.list(org, "datasets")) == files
    assert client.get(f"/api/v1/datasets/{created.json()['id']}", headers=h).status_code == 200
    with factory() as session:
        service.delete_dataset(session, principal, ctx, created.json()["id"])
        session.commit()
    assert list(store.list(org, "datasets")) == []
    assert client.get(f"/api/v1/datasets/{created.json()['id']}", headers=h).status_code == 404
