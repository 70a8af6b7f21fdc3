"""API keys act for their owner: never after the owner leaves, never above the owner's role.

A key minted by a member belongs to that member; a key minted by a key belongs to that key's
owner; a key without an owner belongs to the organization (a service key: the CLI's, or one
transferred explicitly). A principal sees and manages only the keys whose owner's role (a
service key's own role) is not above its own.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from aiaas.api.app import create_app
from aiaas.api.state import app_state
from tests.conftest import PASSWORD
from tests.helpers import assert_cross_tenant_404, assert_not_listed, assert_problem

ME = "/api/v1/me"
KEYS = "/api/v1/api-keys"
MEMBERS = "/api/v1/members"


def _bearer(token):
    return {"Authorization": f"Bearer {token}"}


def _session(client, email):
    """A JWT session of the member with this e-mail."""
    response = client.post("/api/v1/auth/token", data={"username": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return _bearer(response.json()["access_token"])


def _mint(client, headers, role="admin", name="k"):
    response = client.post(KEYS, headers=headers, json={"name": name, "role": role})
    assert response.status_code == 201, response.text
    return response.json()


def _listed(client, headers):
    response = client.get(f"{KEYS}?limit=500", headers=headers)
    assert response.status_code == 200, response.text
    return {k["id"]: k for k in response.json()["items"]}


def _transfer(client, headers, key_id, owner_user_id):
    return client.post(
        f"{KEYS}/{key_id}/transfer", headers=headers, json={"owner_user_id": owner_user_id}
    )


def test_keys_are_owned_by_the_member_behind_the_credential_and_listed_with_owner(client, tenants):
    a = tenants.a
    admin_session = _session(client, a.emails["admin"])
    by_member = _mint(client, admin_session, name="by member")
    assert (by_member["owner_user_id"], by_member["owner_email"]) == (
        a.users["admin"],
        a.emails["admin"],
    )
    by_key = _mint(client, _bearer(by_member["key"]), role="developer", name="by key")
    assert (by_key["owner_user_id"], by_key["owner_email"]) == (a.users["admin"], a.emails["admin"])
    by_service_key = _mint(client, a.headers("owner"), name="by service key")
    assert (by_service_key["owner_user_id"], by_service_key["owner_email"]) == (None, None)

    listed = _listed(client, a.headers("owner"))
    assert {k: (v["owner_user_id"], v["owner_email"]) for k, v in listed.items()} == {
        by_member["id"]: (a.users["admin"], a.emails["admin"]),
        by_key["id"]: (a.users["admin"], a.emails["admin"]),
        by_service_key["id"]: (None, None),
        **{a.key_ids[role]: (None, None) for role in ("owner", "admin", "developer", "viewer")},
    }
    one = client.get(f"{KEYS}/{by_key['id']}", headers=a.headers("owner")).json()
    assert (one["owner_user_id"], one["owner_email"]) == (a.users["admin"], a.emails["admin"])


def test_removed_members_keys_stop_working_at_once(client, tenants):
    a = tenants.a
    minted = _mint(client, _session(client, a.emails["admin"]), name="ci")
    child = _mint(client, _bearer(minted["key"]), role="viewer", name="child")
    key, child_key = _bearer(minted["key"]), _bearer(child["key"])
    assert client.get(MEMBERS, headers=key).status_code == 200  # cached now
    assert client.get(ME, headers=child_key).status_code == 200  # cached now

    removed = client.delete(f"{MEMBERS}/{a.users['admin']}", headers=a.headers("owner"))
    assert removed.status_code == 204

    assert_problem(client.get(MEMBERS, headers=key), 401)
    assert_problem(client.get(ME, headers=child_key), 401)
    assert_problem(client.post(KEYS, headers=key, json={"name": "more"}), 401)
    listed = _listed(client, a.headers("owner"))
    assert listed[minted["id"]]["revoked_at"] is not None
    assert listed[child["id"]]["revoked_at"] is not None
    assert (listed[minted["id"]]["effective_role"], listed[child["id"]]["effective_role"]) == (
        None,
        None,
    )
    assert listed[a.key_ids["admin"]]["revoked_at"] is None  # service keys are untouched


def test_demoted_members_keys_never_act_above_the_new_role(client, tenants):
    a = tenants.a
    minted = _mint(client, _session(client, a.emails["admin"]), name="ci")
    key = _bearer(minted["key"])
    assert client.get(MEMBERS, headers=key).status_code == 200  # cached as admin

    url = f"{MEMBERS}/{a.users['admin']}"
    assert client.patch(url, headers=a.headers("owner"), json={"role": "viewer"}).status_code == 200
    assert_problem(client.get(MEMBERS, headers=key), 403, "forbidden")
    assert_problem(client.post(KEYS, headers=key, json={"name": "x", "role": "viewer"}), 403)
    assert client.get(ME, headers=key).json()["role"] == "viewer"
    listed = _listed(client, a.headers("owner"))
    assert listed[minted["id"]]["role"] == "admin"  # the key keeps its role; it acts at min()
    assert listed[minted["id"]]["effective_role"] == "viewer"
    assert listed[a.key_ids["admin"]]["effective_role"] == "admin"  # a service key: its own

    assert client.patch(url, headers=a.headers("owner"), json={"role": "admin"}).status_code == 200
    assert client.get(ME, headers=key).json()["role"] == "admin"
    assert _listed(client, a.headers("owner"))[minted["id"]]["effective_role"] == "admin"


def test_other_replicas_compute_the_owners_role_from_the_database(client, tenants, settings):
    a = tenants.a
    minted = _mint(client, _session(client, a.emails["admin"]), name="ci")
    key = _bearer(minted["key"])
    with TestClient(create_app(settings)) as replica:
        assert replica.get(MEMBERS, headers=key).status_code == 200  # cached on the replica
        url = f"{MEMBERS}/{a.users['admin']}"
        demoted = client.patch(url, headers=a.headers("owner"), json={"role": "developer"})
        assert demoted.status_code == 200
        app_state(replica.app).api_key_cache.clear()  # the replica's cache TTL has passed
        assert_problem(replica.get(MEMBERS, headers=key), 403)
        assert replica.get(ME, headers=key).json()["role"] == "developer"

        assert client.delete(url, headers=a.headers("owner")).status_code == 204
        app_state(replica.app).api_key_cache.clear()
        assert_problem(replica.get(ME, headers=key), 401)


def test_transfer_to_a_member_caps_the_key_at_their_role_and_outlives_the_minter(client, tenants):
    a = tenants.a
    minted = _mint(client, _session(client, a.emails["admin"]), name="ci")
    key = _bearer(minted["key"])
    assert client.get(MEMBERS, headers=key).status_code == 200  # cached as admin

    moved = _transfer(client, a.headers("owner"), minted["id"], a.users["developer"])
    assert moved.status_code == 200, moved.text
    body = moved.json()
    assert (body["id"], body["role"], body["owner_user_id"], body["owner_email"]) == (
        minted["id"],
        "admin",
        a.users["developer"],
        a.emails["developer"],
    )
    assert "key" not in body
    assert_problem(client.get(MEMBERS, headers=key), 403)  # acts as a developer at once
    assert client.get(ME, headers=key).json()["role"] == "developer"

    owner = a.headers("owner")
    assert client.delete(f"{MEMBERS}/{a.users['admin']}", headers=owner).status_code == 204
    assert client.get(ME, headers=key).status_code == 200  # the minter's removal: no effect
    assert client.delete(f"{MEMBERS}/{a.users['developer']}", headers=owner).status_code == 204
    assert_problem(client.get(ME, headers=key), 401)  # the new owner's removal ends it


def test_transfer_to_the_organization_makes_a_service_key(client, tenants):
    a = tenants.a
    minted = _mint(client, _session(client, a.emails["admin"]), name="deploy")
    moved = _transfer(client, _session(client, a.emails["owner"]), minted["id"], None)
    assert moved.status_code == 200, moved.text
    assert (moved.json()["owner_user_id"], moved.json()["owner_email"]) == (None, None)
    removed = client.delete(f"{MEMBERS}/{a.users['admin']}", headers=a.headers("owner"))
    assert removed.status_code == 204
    assert client.get(MEMBERS, headers=_bearer(minted["key"])).status_code == 200
    assert client.get(ME, headers=_bearer(minted["key"])).json()["role"] == "admin"


def test_transfer_rules(client, tenants):
    a = tenants.a
    admin_session, service_admin = _session(client, a.emails["admin"]), a.headers("admin")
    own = _mint(client, admin_session, name="mine")
    # Nobody gives away their own keys (a departing member could keep the secret alive):
    # another member with a role at least the owner's takes them over.
    assert_problem(_transfer(client, admin_session, own["id"], a.users["viewer"]), 403)
    assert_problem(_transfer(client, _bearer(own["key"]), own["id"], a.users["viewer"]), 403)
    assert_problem(_transfer(client, service_admin, a.key_ids["admin"], a.users["viewer"]), 403)
    # Only an owner may turn a key into an organization-owned service key.
    assert_problem(_transfer(client, service_admin, own["id"], None), 403, "forbidden")
    # Nobody gives a key to a member whose role is above their own.
    assert_problem(_transfer(client, service_admin, own["id"], a.users["owner"]), 403)
    # The new owner must be a member of this organization.
    assert_problem(_transfer(client, service_admin, own["id"], "usr_" + "0" * 32), 404)
    assert_problem(_transfer(client, service_admin, own["id"], tenants.b.users["viewer"]), 404)
    # A key with a role above the caller's cannot be handed on, even when its owner's role
    # (since demoted) lets the caller see it.
    second_owner = a.users["developer"]
    promote = client.patch(
        f"{MEMBERS}/{second_owner}", headers=a.headers("owner"), json={"role": "owner"}
    )
    assert promote.status_code == 200
    owner_key = _mint(client, _session(client, a.emails["developer"]), role="owner", name="o")
    demote = client.patch(
        f"{MEMBERS}/{second_owner}", headers=a.headers("owner"), json={"role": "admin"}
    )
    assert demote.status_code == 200
    assert owner_key["id"] in _listed(client, service_admin)
    assert_problem(_transfer(client, service_admin, owner_key["id"], a.users["viewer"]), 403)
    # A revoked key stays revoked.
    assert client.delete(f"{KEYS}/{own['id']}", headers=service_admin).status_code == 204
    assert_problem(_transfer(client, service_admin, own["id"], a.users["viewer"]), 409)
    # Bodies are strict; the field is required (null means "the organization").
    url = f"{KEYS}/{a.key_ids['viewer']}/transfer"
    for bad in ({}, {"owner_user_id": "u", "role": "owner"}, {"owner_user_id": 5}):
        assert_problem(client.post(url, headers=service_admin, json=bad), 422)
    # Nothing above changed an owner; an allowed transfer does.
    listed = _listed(client, a.headers("owner"))
    assert listed[owner_key["id"]]["owner_user_id"] == second_owner
    assert listed[own["id"]]["owner_user_id"] == a.users["admin"]
    assert listed[a.key_ids["admin"]]["owner_user_id"] is None
    taken = _transfer(client, service_admin, a.key_ids["viewer"], a.users["admin"])
    assert taken.status_code == 200
    assert taken.json()["owner_user_id"] == a.users["admin"]


def test_admins_cannot_see_or_manage_keys_of_higher_roles(client, tenants):
    a = tenants.a
    owner_session = _session(client, a.emails["owner"])
    owners_key = _mint(client, owner_session, role="viewer", name="owner's own")
    service_owner_key = a.key_ids["owner"]
    for admin in (a.headers("admin"), _session(client, a.emails["admin"])):
        listed = _listed(client, admin)
        assert owners_key["id"] not in listed
        assert service_owner_key not in listed
        assert {a.key_ids["admin"], a.key_ids["developer"], a.key_ids["viewer"]} <= set(listed)
        for hidden in (owners_key["id"], service_owner_key):
            unknown = client.get(f"{KEYS}/key_{'0' * 32}", headers=admin)
            for response in (
                client.get(f"{KEYS}/{hidden}", headers=admin),
                client.delete(f"{KEYS}/{hidden}", headers=admin),
                _transfer(client, admin, hidden, a.users["admin"]),
            ):
                body = assert_problem(response, 404, "not_found")
                assert body["title"] == unknown.json()["title"]
                assert body["detail"] == f"api key {hidden!r} not found"
    # The owner's key still works and the owner still sees both.
    assert client.get(ME, headers=_bearer(owners_key["key"])).json()["role"] == "viewer"
    assert {owners_key["id"], service_owner_key} <= set(_listed(client, owner_session))
    assert client.delete(f"{KEYS}/{owners_key['id']}", headers=owner_session).status_code == 204


def test_key_owners_and_transfers_are_tenant_isolated(client, tenants):
    a, b = tenants.a, tenants.b
    minted = _mint(client, _session(client, a.emails["admin"]), name="a's ci")
    url = f"{KEYS}/{minted['id']}/transfer"
    for headers in (b.headers("owner"), _session(client, b.emails["owner"])):
        assert_cross_tenant_404(
            client, url, headers, methods=("POST",), json={"owner_user_id": b.users["viewer"]}
        )
        assert_cross_tenant_404(
            client, url, headers, methods=("POST",), json={"owner_user_id": None}
        )
        assert_not_listed(client, KEYS, headers, minted["id"])
        assert_not_listed(client, KEYS, headers, a.users["admin"])
        assert_not_listed(client, KEYS, headers, a.emails["admin"])
    # A's own transfer cannot name a member of B.
    assert_problem(_transfer(client, a.headers("owner"), minted["id"], b.users["viewer"]), 404)
    # Nothing changed on A's side.
    listed = _listed(client, a.headers("owner"))
    assert listed[minted["id"]]["owner_user_id"] == a.users["admin"]
    assert client.get(MEMBERS, headers=_bearer(minted["key"])).status_code == 200
