"""Check-then-act under concurrency: real threads through HTTP, on SQLite and PostgreSQL.

Refresh tokens rotate exactly once however many requests present one at the same time, and
concurrent role changes or removals never leave an organization without an owner. No
concurrent case ends as a 500.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from aiaas.auth.models import RefreshToken
from aiaas.db import get_session_factory
from tests.auth.concurrency import run_concurrently
from tests.conftest import PASSWORD
from tests.helpers import assert_problem

TOKEN = "/api/v1/auth/token"
MEMBERS = "/api/v1/members"


def _login(client, email):
    response = client.post(TOKEN, data={"username": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()


def _refresh(client, refresh_token):
    return client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": refresh_token})


def _family(settings, user_id):
    with get_session_factory(settings.resolved_database_url)() as session:
        return list(session.scalars(select(RefreshToken).where(RefreshToken.user_id == user_id)))


def test_concurrent_refreshes_rotate_once_and_revoke_the_family(client, tenants, settings):
    email, user_id = tenants.a.emails["developer"], tenants.a.users["developer"]
    tokens = _login(client, email)
    bystander = _login(client, email)  # another session of the same user
    responses = run_concurrently(10, lambda _: _refresh(client, tokens["refresh_token"]))
    assert Counter(r.status_code for r in responses) == {200: 1, 401: 9}
    for response in responses:
        if response.status_code == 401:
            assert_problem(response, 401, "unauthorized")
    winner = next(r for r in responses if r.status_code == 200).json()
    # The reuse revoked the family, the token just issued to the winner included.
    assert_problem(_refresh(client, winner["refresh_token"]), 401)
    rows = _family(settings, user_id)
    family = {r.family_id for r in rows if r.token_hash != _hash(bystander["refresh_token"])}
    assert len(family) == 1
    in_family = [r for r in rows if r.family_id in family]
    assert len(in_family) == 2
    assert all(r.revoked_at is not None for r in in_family)
    # Other sessions live on.
    assert _refresh(client, bystander["refresh_token"]).status_code == 200


def test_reusing_a_rotated_refresh_token_revokes_its_family(client, tenants):
    email = tenants.a.emails["viewer"]
    first, bystander = _login(client, email), _login(client, email)
    second = _refresh(client, first["refresh_token"])
    assert second.status_code == 200
    assert_problem(_refresh(client, first["refresh_token"]), 401)  # reuse: stolen?
    assert_problem(_refresh(client, second.json()["refresh_token"]), 401)  # family revoked
    assert _refresh(client, bystander["refresh_token"]).status_code == 200


def _hash(token):
    from aiaas.auth.tokens import sha256_hex

    return sha256_hex(token)


def _owners(client, headers):
    items = client.get(f"{MEMBERS}?limit=500", headers=headers).json()["items"]
    return sorted(m["user_id"] for m in items if m["role"] == "owner")


def _many_owners(client, tenant, extra=4):
    headers = tenant.headers("owner")
    ids = [tenant.users[role] for role in ("owner", "admin", "developer", "viewer")]
    for user_id in ids[1:]:
        promoted = client.patch(f"{MEMBERS}/{user_id}", headers=headers, json={"role": "owner"})
        assert promoted.status_code == 200
    for i in range(extra):
        created = client.post(
            MEMBERS,
            headers=headers,
            json={
                "email": f"owner{i}@{tenant.slug}.example",
                "role": "owner",
                "password": PASSWORD,
            },
        )
        assert created.status_code == 201
        ids.append(created.json()["user_id"])
    assert _owners(client, headers) == sorted(ids)
    return ids


def test_concurrent_demotions_leave_one_owner(client, tenants):
    headers = tenants.a.headers("owner")
    owners = _many_owners(client, tenants.a)
    responses = run_concurrently(
        len(owners),
        lambda i: client.patch(f"{MEMBERS}/{owners[i]}", headers=headers, json={"role": "admin"}),
    )
    assert Counter(r.status_code for r in responses) == {200: len(owners) - 1, 409: 1}
    refused = next(r for r in responses if r.status_code == 409)
    assert_problem(refused, 409, "conflict")
    assert refused.json()["detail"] == "an organization keeps at least one owner"
    assert _owners(client, headers) == [owners[responses.index(refused)]]


def test_concurrent_removals_leave_one_owner(client, tenants):
    headers = tenants.a.headers("owner")
    owners = _many_owners(client, tenants.a)
    responses = run_concurrently(
        len(owners), lambda i: client.delete(f"{MEMBERS}/{owners[i]}", headers=headers)
    )
    assert Counter(r.status_code for r in responses) == {204: len(owners) - 1, 409: 1}
    refused = next(r for r in responses if r.status_code == 409)
    assert _owners(client, headers) == [owners[responses.index(refused)]]
    # The other organization was not touched.
    assert len(_owners(client, tenants.b.headers("owner"))) == 1
