"""Accounts belong to one organization: nothing one organization does reserves, reveals or
grants an e-mail address in another.
"""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy import event

from aiaas.db import get_engine
from tests.conftest import PASSWORD
from tests.helpers import assert_cross_tenant_404, assert_not_listed, assert_problem

ME = "/api/v1/me"
MEMBERS = "/api/v1/members"
OTHER_PASSWORD = "another long passphrase 42"


def _login(client, email, password=PASSWORD, scope=None):
    data = {"username": email, "password": password}
    if scope:
        data["scope"] = scope
    return client.post("/api/v1/auth/token", data=data)


def _me(client, tokens):
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    return client.get(ME, headers=headers).json()


def _add(client, headers, email, password=PASSWORD, role="viewer"):
    return client.post(
        MEMBERS, headers=headers, json={"email": email, "role": role, "password": password}
    )


@contextmanager
def _statements(settings):
    """The SQL statements the app sends to the database while the block runs."""
    engine = get_engine(settings.resolved_database_url)
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_an_address_used_in_another_organization_can_be_added(client, tenants):
    taken = tenants.a.emails["viewer"]
    created = _add(client, tenants.b.headers("admin"), taken, role="developer")
    assert created.status_code == 201, created.text
    assert (created.json()["email"], created.json()["role"]) == (taken, "developer")
    assert created.json()["user_id"] != tenants.a.users["viewer"]
    # 409 only for an address already in the caller's own organization.
    assert_problem(_add(client, tenants.b.headers("admin"), taken), 409, "conflict")
    assert_problem(_add(client, tenants.a.headers("admin"), taken.upper()), 409, "conflict")


def test_a_pre_created_account_gives_no_access_to_another_organization(client, tenants):
    a, b = tenants.a, tenants.b
    victim = "victim@shared.example"
    pre = _add(client, a.headers("admin"), victim, password=PASSWORD, role="admin")
    assert pre.status_code == 201
    real = _add(client, b.headers("admin"), victim, password=OTHER_PASSWORD, role="developer")
    assert real.status_code == 201

    # A's account and password open nothing in B.
    assert_problem(_login(client, victim, PASSWORD, scope=f"org:{b.slug}"), 401)
    in_b = _login(client, victim, OTHER_PASSWORD, scope=f"org:{b.slug}")
    assert in_b.status_code == 200
    assert in_b.json()["organization"] == b.slug
    me = _me(client, in_b.json())
    assert (me["organization"]["slug"], me["role"], me["actor_id"]) == (
        b.slug,
        "developer",
        real.json()["user_id"],
    )
    in_a = _login(client, victim, PASSWORD, scope=f"org:{a.slug}")
    assert _me(client, in_a.json())["organization"]["slug"] == a.slug
    # Without a scope exactly one account is checked: the oldest with that address (A's).
    unscoped = _login(client, victim, PASSWORD)
    assert unscoped.status_code == 200
    assert unscoped.json()["organization"] == a.slug
    assert_problem(_login(client, victim, OTHER_PASSWORD), 401)

    # Each organization sees and manages its own account only.
    assert_not_listed(client, MEMBERS, a.headers("admin"), real.json()["user_id"])
    assert_not_listed(client, MEMBERS, b.headers("admin"), pre.json()["user_id"])
    assert_cross_tenant_404(
        client,
        f"{MEMBERS}/{real.json()['user_id']}",
        a.headers("owner"),
        methods=("PATCH", "DELETE"),
        json={"role": "viewer"},
    )
    # A removing its account changes nothing in B.
    removed = client.delete(f"{MEMBERS}/{pre.json()['user_id']}", headers=a.headers("owner"))
    assert removed.status_code == 204
    assert_problem(_login(client, victim, PASSWORD, scope=f"org:{a.slug}"), 401)
    assert _login(client, victim, OTHER_PASSWORD, scope=f"org:{b.slug}").status_code == 200
    assert _login(client, victim, OTHER_PASSWORD).json()["organization"] == b.slug


def test_adding_a_member_does_not_depend_on_other_organizations(client, tenants, settings):
    headers = tenants.b.headers("admin")
    assert client.get(ME, headers=headers).status_code == 200  # the key is cached now
    taken, fresh = tenants.a.emails["developer"], "nobody-has-this@fresh.example"
    with _statements(settings) as for_taken:
        first = _add(client, headers, taken)
    with _statements(settings) as for_fresh:
        second = _add(client, headers, fresh)
    assert (first.status_code, second.status_code) == (201, 201), (first.text, second.text)
    assert set(first.json()) == set(second.json())
    assert for_taken == for_fresh  # the same queries, whatever org A holds


def test_login_cost_does_not_depend_on_how_many_organizations_use_the_address(
    client, tenants, settings
):
    shared, single = tenants.a.emails["viewer"], tenants.a.emails["developer"]
    assert _add(client, tenants.b.headers("admin"), shared).status_code == 201
    with _statements(settings) as for_shared:
        one = _login(client, shared, "wrong password 1234")
    with _statements(settings) as for_single:
        other = _login(client, single, "wrong password 1234")
    assert (one.status_code, other.status_code) == (401, 401)
    assert for_shared == for_single
    with _statements(settings) as scoped_missing:
        missing = _login(client, single, "wrong password 1234", scope=f"org:{tenants.b.slug}")
    with _statements(settings) as scoped_present:
        present = _login(client, shared, "wrong password 1234", scope=f"org:{tenants.b.slug}")
    assert (missing.status_code, present.status_code) == (401, 401)
    assert scoped_missing == scoped_present


def test_odd_scopes_are_plain_401s(client, tenants):
    email = tenants.a.emails["viewer"]
    for scope in ("org:no-such-org", "org:", "org:Bad Slug", "org:a\x00b", "org:" + "x" * 150):
        assert_problem(_login(client, email, scope=scope), 401)
    assert _login(client, email, scope="openid org:org-a").status_code == 200
