"""Audit completeness: exactly one event per state-changing or denied request."""

from __future__ import annotations

from sqlalchemy import func, select

from aiaas.auth.models import AuditEvent
from aiaas.db import get_session_factory
from tests.conftest import PASSWORD


def _count(settings):
    with get_session_factory(settings.resolved_database_url)() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent))


def _last(settings):
    with get_session_factory(settings.resolved_database_url)() as session:
        return session.scalars(
            select(AuditEvent).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
        ).first()


def test_one_event_per_action(client, tenants, settings):
    admin, owner = tenants.a.headers("admin"), tenants.a.headers("owner")
    viewer_id = tenants.a.users["viewer"]
    actions = [
        (
            lambda: client.post("/api/v1/api-keys", headers=admin, json={"name": "k"}),
            "POST /api/v1/api-keys",
            "success",
            "api_key",
        ),
        (
            lambda: client.delete(f"/api/v1/api-keys/{tenants.a.key_ids['viewer']}", headers=admin),
            "DELETE /api/v1/api-keys/{key_id}",
            "success",
            "api_key",
        ),
        (
            lambda: client.post(
                "/api/v1/members",
                headers=admin,
                json={"email": "n@a.io", "role": "viewer", "password": PASSWORD},
            ),
            "POST /api/v1/members",
            "success",
            "member",
        ),
        (
            lambda: client.patch(
                f"/api/v1/members/{viewer_id}", headers=owner, json={"role": "developer"}
            ),
            "PATCH /api/v1/members/{user_id}",
            "success",
            "member",
        ),
        (
            lambda: client.delete(f"/api/v1/members/{viewer_id}", headers=owner),
            "DELETE /api/v1/members/{user_id}",
            "success",
            "member",
        ),
        (
            lambda: client.post(
                "/api/v1/auth/token",
                data={"username": tenants.a.emails["owner"], "password": "nope-nope"},
            ),
            "POST /api/v1/auth/token",
            "denied",
            "session",
        ),
        (
            lambda: client.post(
                "/api/v1/auth/token",
                data={"username": tenants.a.emails["owner"], "password": PASSWORD},
            ),
            "POST /api/v1/auth/token",
            "success",
            "session",
        ),
        (
            lambda: client.get("/api/v1/audit-events", headers=tenants.a.headers("developer")),
            "GET /api/v1/audit-events",
            "denied",
            None,
        ),
        (
            lambda: client.delete(f"/api/v1/api-keys/{tenants.b.key_ids['viewer']}", headers=admin),
            "DELETE /api/v1/api-keys/{key_id}",
            "failure",
            None,
        ),
    ]
    for call, action, outcome, resource_type in actions:
        before = _count(settings)
        response = call()
        assert _count(settings) == before + 1, (action, response.status_code)
        event = _last(settings)
        assert (event.action, event.outcome) == (action, outcome), response.text
        assert event.request_id == response.headers["x-request-id"]
        assert event.client_ip
        if resource_type:
            assert event.resource_type == resource_type
        if outcome != "denied" or "token" not in action:
            assert event.org_id == tenants.a.org_id
    # Reads by an allowed role leave no event.
    before = _count(settings)
    client.get("/api/v1/me", headers=admin)
    assert _count(settings) == before
