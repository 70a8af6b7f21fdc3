"""Authentication: every failure is the same 401 problem, audited; roles give 403."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import select, update

from aiaas.api.state import app_state
from aiaas.auth.models import ApiKey, AuditEvent
from aiaas.auth.tokens import ALGORITHM, AUDIENCE, ISSUER
from aiaas.db import get_session_factory
from tests.conftest import PASSWORD
from tests.helpers import assert_problem

ME = "/api/v1/me"


def _body_without_request_id(response):
    body = response.json()
    body.pop("request_id", None)
    return body


def _audit_rows(settings, **where):
    with get_session_factory(settings.resolved_database_url)() as session:
        stmt = select(AuditEvent)
        for key, value in where.items():
            stmt = stmt.where(getattr(AuditEvent, key) == value)
        return list(session.scalars(stmt))


def login(client, email, password=PASSWORD, **extra):
    return client.post(
        "/api/v1/auth/token", data={"username": email, "password": password, **extra}
    )


def test_api_key_authenticates_with_org_and_role(client, tenants):
    body = client.get(ME, headers=tenants.a.headers("developer")).json()
    assert body["organization"]["slug"] == "org-a"
    assert body["role"] == "developer"
    assert body["actor_type"] == "api_key"
    assert body["api_key_name"] == "developer key"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer two tokens",
        "Bearer aiaas_unknownkeyvalue0000000000000000000000000",
        "Bearer not-a-jwt",
        "Bearer " + "x" * 5000,
    ],
)
def test_bad_credentials_are_401_problems(client, tenants, settings, header):
    headers = {} if header is None else {"Authorization": header}
    response = client.get(ME, headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["x-request-id"]
    # Anonymous 401s are counted and logged, not audited: a flood cannot grow the trail.
    assert _audit_rows(settings, outcome="denied", status_code=401) == []


def test_revoked_key_stops_working_at_once(client, tenants):
    admin = tenants.a.headers("admin")
    created = client.post("/api/v1/api-keys", headers=admin, json={"name": "temp"}).json()
    key_headers = {"Authorization": f"Bearer {created['key']}"}
    assert client.get(ME, headers=key_headers).status_code == 200  # now cached
    assert client.delete(f"/api/v1/api-keys/{created['id']}", headers=admin).status_code == 204
    assert_problem(client.get(ME, headers=key_headers), 401)
    listed = client.get(f"/api/v1/api-keys/{created['id']}", headers=admin).json()
    assert listed["revoked_at"] is not None


def test_expired_key_is_refused_even_when_cached(client, tenants, settings):
    headers = tenants.a.headers("viewer")
    assert client.get(ME, headers=headers).status_code == 200  # cached with its expiry
    past = datetime.now(UTC) - timedelta(seconds=1)
    with get_session_factory(settings.resolved_database_url)() as session, session.begin():
        session.execute(
            update(ApiKey).where(ApiKey.id == tenants.a.key_ids["viewer"]).values(expires_at=past)
        )
    app_state(client.app).api_key_cache.clear()
    assert_problem(client.get(ME, headers=headers), 401)


def test_key_expiring_while_cached_is_refused(client, tenants):
    from aiaas.auth.tokens import sha256_hex

    headers = tenants.a.headers("viewer")
    assert client.get(ME, headers=headers).status_code == 200
    cache = app_state(client.app).api_key_cache
    digest = sha256_hex(tenants.a.keys["viewer"])
    hit = cache.get(digest)
    assert hit is not None
    principal, _ = hit
    cache.put(digest, principal, datetime.now(UTC) - timedelta(seconds=1))
    assert_problem(client.get(ME, headers=headers), 401)


def _jwt(settings, **overrides):
    now = datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "usr_x",
        "org": "org_x",
        "ver": 0,
        "typ": "access",
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, settings.secret_key(), algorithm=ALGORITHM)


def test_jwt_failures_are_identical_401s(client, tenants, settings):
    user_id, org_id = tenants.a.users["owner"], tenants.a.org_id
    good = _jwt(settings, sub=user_id, org=org_id)
    assert client.get(ME, headers={"Authorization": f"Bearer {good}"}).status_code == 200

    unsigned = jwt.encode(
        {"sub": user_id, "org": org_id, "ver": 0, "typ": "access", "iss": ISSUER, "aud": AUDIENCE},
        "",  # alg "none" signs with nothing (PyJWT's types, with cryptography installed)
        algorithm="none",
    )
    bad_tokens = {
        "expired": _jwt(settings, sub=user_id, org=org_id, exp=datetime.now(UTC) - timedelta(1)),
        "not_yet_valid": _jwt(
            settings, sub=user_id, org=org_id, nbf=datetime.now(UTC) + timedelta(hours=1)
        ),
        "forged": jwt.encode(
            {
                "sub": user_id,
                "org": org_id,
                "ver": 0,
                "typ": "access",
                "iss": ISSUER,
                "aud": AUDIENCE,
                "exp": datetime.now(UTC) + timedelta(minutes=5),
                "iat": datetime.now(UTC),
            },
            "not-the-server-key-but-long-enough-for-hs256!!",
            algorithm="HS256",
        ),
        "alg_none": unsigned,
        "wrong_audience": _jwt(settings, sub=user_id, org=org_id, aud="someone-else"),
        "wrong_issuer": _jwt(settings, sub=user_id, org=org_id, iss="evil"),
        "missing_exp": _jwt(settings, sub=user_id, org=org_id, exp=None),
        "other_org_claim": _jwt(settings, sub=user_id, org=tenants.b.org_id),
        "stale_version": _jwt(settings, sub=user_id, org=org_id, ver=7),
        "refresh_type": _jwt(settings, sub=user_id, org=org_id, typ="refresh"),
    }
    bodies = []
    for name, token in bad_tokens.items():
        response = client.get(ME, headers={"Authorization": f"Bearer {token}"})
        assert_problem(response, 401)
        bodies.append((name, _body_without_request_id(response)))
    first = bodies[0][1]
    assert all(body == first for _, body in bodies), bodies


def test_wrong_role_is_403_and_audited(client, tenants):
    response = client.get("/api/v1/audit-events", headers=tenants.a.headers("viewer"))
    assert_problem(response, 403, "forbidden")
    events = client.get(
        "/api/v1/audit-events?outcome=denied", headers=tenants.a.headers("admin")
    ).json()["items"]
    assert any(
        e["action"] == "GET /api/v1/audit-events"
        and e["actor_id"] == tenants.a.key_ids["viewer"]
        and e["status_code"] == 403
        for e in events
    )


def test_password_login_refresh_and_rotation(client, tenants):
    tokens = login(client, tenants.a.emails["developer"]).json()
    assert tokens["token_type"] == "bearer"
    me = client.get(ME, headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    assert me["email"] == "developer@org-a.example"
    assert me["role"] == "developer"
    assert me["organization"]["slug"] == "org-a"

    refreshed = client.post(
        "/api/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert refreshed.status_code == 200
    reused = client.post(
        "/api/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert_problem(reused, 401)


def test_unknown_user_and_wrong_password_look_the_same(client, tenants):
    unknown = login(client, "nobody@nowhere.example", "whatever-password")
    wrong = login(client, tenants.a.emails["owner"], "wrong-password-123")
    assert_problem(unknown, 401)
    assert _body_without_request_id(unknown) == _body_without_request_id(wrong)


def test_brute_force_is_throttled(client, tenants):
    email = tenants.a.emails["viewer"]
    limit = app_state(client.app).settings.auth.login_max_failures
    for _ in range(limit):
        assert login(client, email, "wrong-password-123").status_code == 401
    blocked = login(client, email)  # even the right password is refused while blocked
    assert_problem(blocked, 429, "too_many_requests")
    assert int(blocked.headers["retry-after"]) > 0


def test_role_downgrade_ends_existing_sessions(client, tenants):
    tokens = login(client, tenants.a.emails["admin"]).json()
    jwt_headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert client.get("/api/v1/members", headers=jwt_headers).status_code == 200
    user_id = tenants.a.users["admin"]
    changed = client.patch(
        f"/api/v1/members/{user_id}", headers=tenants.a.headers("owner"), json={"role": "viewer"}
    )
    assert changed.status_code == 200
    assert_problem(client.get("/api/v1/members", headers=jwt_headers), 401)
    refreshed = client.post(
        "/api/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert_problem(refreshed, 401)
    fresh = login(client, tenants.a.emails["admin"]).json()
    fresh_headers = {"Authorization": f"Bearer {fresh['access_token']}"}
    assert_problem(client.get("/api/v1/members", headers=fresh_headers), 403)


def test_login_picks_organization_by_scope(client, tenants):
    # The same person in two organizations has two accounts; the scope picks one.
    email = tenants.a.emails["viewer"]
    created = client.post(
        "/api/v1/members",
        headers=tenants.b.headers("admin"),
        json={"email": email, "role": "developer", "password": PASSWORD},
    )
    assert created.status_code == 201
    tokens = login(client, email, scope="org:org-b").json()
    me = client.get(ME, headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    assert (me["organization"]["slug"], me["role"]) == ("org-b", "developer")
    assert me["actor_id"] == created.json()["user_id"]
    tokens = login(client, email).json()  # no scope: the oldest account
    me = client.get(ME, headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    assert (me["organization"]["slug"], me["role"]) == ("org-a", "viewer")
    assert_problem(login(client, email, scope="org:no-such-org"), 401)


def test_token_responses_are_not_cached(client, tenants):
    issued = login(client, tenants.a.emails["viewer"])
    refreshed = client.post(
        "/api/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": issued.json()["refresh_token"]},
    )
    for response in (issued, refreshed):
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"username": "x@y.z"},
        {"grant_type": "client_credentials", "username": "a@b.c", "password": "p"},
        {"grant_type": "refresh_token"},
        {"username": "a" * 400, "password": "p"},
    ],
)
def test_malformed_token_requests_are_4xx(client, data):
    response = client.post("/api/v1/auth/token", data=data)
    assert 400 <= response.status_code < 500
    assert_problem(response, response.status_code)


def test_fresh_install_has_no_default_credentials(client, settings):
    from aiaas.auth import service as auth_service

    with get_session_factory(settings.resolved_database_url)() as session, session.begin():
        created = auth_service.bootstrap_if_empty(session, app_state(client.app).passwords)
    assert created is not None
    assert len(created.password) >= 20
    for user, password in [
        ("admin", "admin"),
        ("admin@localhost", "admin"),
        ("admin@localhost", "password1234"),
        ("admin@localhost", "a"),
    ]:
        body = assert_problem(login(client, user, password), 401, "unauthorized")
        assert body["detail"] == "invalid credentials"
    body = assert_problem(login(client, "admin@localhost", ""), 400, "bad_request")
    assert body["detail"] == "username and password are required for grant_type=password"
    assert login(client, "admin@localhost", created.password).status_code == 200
    with get_session_factory(settings.resolved_database_url)() as session, session.begin():
        assert auth_service.bootstrap_if_empty(session, app_state(client.app).passwords) is None
