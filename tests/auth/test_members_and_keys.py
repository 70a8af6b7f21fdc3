"""Members and API keys: lifecycle, role rules, tenant isolation, secrets never shown twice."""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD
from tests.helpers import assert_cross_tenant_404, assert_not_listed, assert_problem


def test_create_member_then_login(client, tenants):
    response = client.post(
        "/api/v1/members",
        headers=tenants.a.headers("admin"),
        json={"email": "New.Person@Example.com", "role": "developer", "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    assert response.json()["email"] == "new.person@example.com"
    assert "password" not in response.text
    token = client.post(
        "/api/v1/auth/token",
        data={"username": "new.person@example.com", "password": PASSWORD},
    )
    assert token.status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"email": "not-an-email", "role": "viewer", "password": PASSWORD}, 422),
        ({"email": "a@b.c", "role": "superuser", "password": PASSWORD}, 422),
        ({"email": "a@b.c", "role": "viewer", "password": "short"}, 422),
        ({"email": "a@b.c", "role": "viewer", "password": "aaaaaaaaaaaaaaaa"}, 422),
        ({"email": "a@b.c", "role": "viewer", "password": PASSWORD, "org_id": "x"}, 422),
        ({"email": "a@b.c", "role": "viewer"}, 422),
        ({"email": "viewer@org-a.example", "role": "viewer", "password": PASSWORD}, 409),
    ],
)
def test_bad_member_bodies(client, tenants, body, status):
    response = client.post("/api/v1/members", headers=tenants.a.headers("admin"), json=body)
    problem = assert_problem(response, status)
    assert PASSWORD not in response.text
    assert "short" not in str(problem.get("errors", ""))


def test_admin_cannot_grant_or_touch_owner(client, tenants):
    admin = tenants.a.headers("admin")
    viewer_id, owner_id = tenants.a.users["viewer"], tenants.a.users["owner"]
    assert_problem(
        client.patch(f"/api/v1/members/{viewer_id}", headers=admin, json={"role": "owner"}), 403
    )
    assert_problem(
        client.patch(f"/api/v1/members/{owner_id}", headers=admin, json={"role": "viewer"}), 403
    )
    assert_problem(client.delete(f"/api/v1/members/{owner_id}", headers=admin), 403)
    assert_problem(
        client.post("/api/v1/api-keys", headers=admin, json={"name": "escalate", "role": "owner"}),
        403,
    )


def test_last_owner_stays(client, tenants):
    owner = tenants.a.headers("owner")
    owner_id = tenants.a.users["owner"]
    assert_problem(
        client.patch(f"/api/v1/members/{owner_id}", headers=owner, json={"role": "admin"}), 409
    )
    assert_problem(client.delete(f"/api/v1/members/{owner_id}", headers=owner), 409)
    # With a second owner, the first may step down.
    admin_id = tenants.a.users["admin"]
    assert (
        client.patch(
            f"/api/v1/members/{admin_id}", headers=owner, json={"role": "owner"}
        ).status_code
        == 200
    )
    assert (
        client.patch(
            f"/api/v1/members/{owner_id}", headers=owner, json={"role": "admin"}
        ).status_code
        == 200
    )


def test_removed_member_cannot_log_in_to_the_org(client, tenants):
    dev_id = tenants.a.users["developer"]
    assert (
        client.delete(f"/api/v1/members/{dev_id}", headers=tenants.a.headers("admin")).status_code
        == 204
    )
    response = client.post(
        "/api/v1/auth/token",
        data={"username": tenants.a.emails["developer"], "password": PASSWORD},
    )
    assert_problem(response, 401)


def test_members_and_keys_are_tenant_isolated(client, tenants):
    b_admin = tenants.b.headers("admin")
    a_member = tenants.a.users["viewer"]
    a_key = tenants.a.key_ids["viewer"]
    assert_cross_tenant_404(
        client,
        f"/api/v1/members/{a_member}",
        b_admin,
        methods=("PATCH", "DELETE"),
        json={"role": "admin"},
    )
    assert_cross_tenant_404(client, f"/api/v1/api-keys/{a_key}", b_admin, methods=("GET", "DELETE"))
    assert_not_listed(client, "/api/v1/members", b_admin, a_member)
    assert_not_listed(client, "/api/v1/members", b_admin, "org-a.example")
    assert_not_listed(client, "/api/v1/api-keys", b_admin, a_key)
    # Nothing changed on A's side.
    assert client.get(ME, headers=tenants.a.headers("viewer")).status_code == 200
    roles = {
        m["user_id"]: m["role"]
        for m in client.get("/api/v1/members", headers=tenants.a.headers("admin")).json()["items"]
    }
    assert roles[a_member] == "viewer"


ME = "/api/v1/me"


def test_audit_events_are_tenant_isolated(client, tenants):
    client.post("/api/v1/api-keys", headers=tenants.a.headers("admin"), json={"name": "canary-a"})
    b_events = client.get("/api/v1/audit-events", headers=tenants.b.headers("admin"))
    assert b_events.status_code == 200
    assert "canary-a" not in b_events.text
    assert tenants.a.org_id not in b_events.text
    a_events = client.get("/api/v1/audit-events", headers=tenants.a.headers("admin")).json()
    assert any(e["details"] and e["details"].get("name") == "canary-a" for e in a_events["items"])


def test_audit_has_no_update_or_delete_routes(client, tenants):
    admin = tenants.a.headers("admin")
    for method in ("PUT", "PATCH", "DELETE"):
        assert client.request(method, "/api/v1/audit-events", headers=admin).status_code == 405


def test_key_secret_shown_once_and_stored_hashed(client, tenants, settings):
    admin = tenants.a.headers("admin")
    created = client.post("/api/v1/api-keys", headers=admin, json={"name": "once"}).json()
    secret = created["key"]
    assert secret.startswith(created["prefix"])
    shown = [
        client.get("/api/v1/api-keys", headers=admin).text,
        client.get(f"/api/v1/api-keys/{created['id']}", headers=admin).text,
        client.get("/api/v1/audit-events", headers=admin).text,
    ]
    assert all(secret not in text for text in shown)
    # No column of any table holds the key or a password in clear text.
    from sqlalchemy import select

    from aiaas.db import get_engine
    from aiaas.db.base import Base

    with get_engine(settings.resolved_database_url).connect() as conn:
        dump = repr([list(conn.execute(select(t))) for t in Base.metadata.sorted_tables])
    assert created["id"] in dump  # the dump does see the rows
    assert secret not in dump
    assert PASSWORD not in dump
    if settings.database_url is None:  # SQLite: nor do the raw files
        raw = b"".join(p.read_bytes() for p in settings.data_dir.glob("aiaas.db*"))
        assert secret.encode() not in raw
        assert PASSWORD.encode() not in raw


def test_secrets_never_reach_the_logs(client, tenants, capsys, caplog):
    admin = tenants.a.headers("admin")
    created = client.post("/api/v1/api-keys", headers=admin, json={"name": "logged?"}).json()
    client.get(ME, headers={"Authorization": f"Bearer {created['key']}"})
    client.post(
        "/api/v1/auth/token", data={"username": tenants.a.emails["owner"], "password": PASSWORD}
    )
    client.post("/api/v1/members", headers=admin, json={"email": "x@y.z", "password": PASSWORD})
    out = capsys.readouterr()
    logs = out.out + out.err + caplog.text
    assert created["key"] not in logs
    assert tenants.a.keys["admin"] not in logs
    assert PASSWORD not in logs


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 201},
        {"name": "k", "role": "root"},
        {"name": "k", "expires_at": "2000-01-01T00:00:00Z"},
        {"name": "k", "expires_at": "2999-01-01T00:00:00"},
        {"name": "k", "expires_at": "not a date"},
        {"name": "k", "org_id": "org_other"},
        {"name": "k", "key_hash": "00"},
    ],
)
def test_bad_api_key_bodies(client, tenants, body):
    response = client.post("/api/v1/api-keys", headers=tenants.a.headers("admin"), json=body)
    assert_problem(response, 422)


def test_unicode_key_names_round_trip(client, tenants):
    name = "clé 🔑 ключ 鍵"
    created = client.post(
        "/api/v1/api-keys", headers=tenants.a.headers("admin"), json={"name": name}
    )
    assert created.status_code == 201
    assert created.json()["name"] == name


def test_list_pagination_and_forged_cursor(client, tenants):
    for i in range(5):
        client.post("/api/v1/api-keys", headers=tenants.a.headers("admin"), json={"name": f"p{i}"})
    admin = tenants.a.headers("owner")  # an owner sees every key (admins not the owner's)
    seen, cursor = [], None
    while True:
        url = "/api/v1/api-keys?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=admin).json()
        seen += [k["id"] for k in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 9  # 4 role keys + 5 new
    body, sig = cursor_from(client, admin).split(".")
    assert_problem(client.get(f"/api/v1/api-keys?cursor={body}.AAAA", headers=admin), 400)
    assert_problem(client.get("/api/v1/api-keys?cursor=garbage", headers=admin), 400)
    assert_problem(client.get("/api/v1/api-keys?limit=0", headers=admin), 422)
    assert_problem(client.get("/api/v1/api-keys?limit=100000", headers=admin), 422)


def cursor_from(client, headers):
    return client.get("/api/v1/api-keys?limit=1", headers=headers).json()["next_cursor"]
