"""The HTTP edge decides body rules by the matched route, never by the request's own claims.

Security issue 8, item 1 (unauthenticated memory and disk exhaustion) and item 14 (security
headers, anonymous audit rows, a private data dir).
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from aiaas.api.app import PUBLIC_ROUTES, create_app
from aiaas.api.route_table import route_policies
from aiaas.api.state import app_state
from aiaas.auth.models import AuditEvent
from aiaas.db import get_session_factory
from tests.conftest import PASSWORD
from tests.helpers import assert_problem

UPLOAD_TYPES = ("multipart/form-data; boundary=xyz", "application/octet-stream")


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _routes(app):
    """(method, concrete path, policy) of every API route."""
    found = []
    policies = route_policies(
        app,
        public=PUBLIC_ROUTES,
        max_body=app_state(app).settings.limits.max_body_bytes,
        max_upload=app_state(app).settings.limits.max_upload_bytes,
    )
    for matcher, policy in policies:
        path = getattr(matcher, "path_format", getattr(matcher, "path", ""))
        for method in sorted(getattr(matcher, "methods", None) or ()):
            if method != "HEAD":
                found.append((method, _concrete(path), policy))
    return found


def _audit_count(settings) -> int:
    with get_session_factory(settings.resolved_database_url)() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent)) or 0


def test_only_the_upload_routes_get_the_upload_limit(app, settings):
    big = {
        (method, path)
        for method, path, policy in _routes(app)
        if policy.max_body == settings.limits.max_upload_bytes
    }
    assert big == {
        ("POST", "/api/v1/datasets"),
        ("POST", "/api/v1/datasets/1/versions"),
        ("POST", "/api/v1/models/1/versions"),  # an ONNX file (AIAAS_REGISTRY__MAX_ONNX_BYTES)
    }


@pytest.mark.parametrize("content_type", UPLOAD_TYPES)
@pytest.mark.parametrize("authenticated", [False, True])
def test_every_other_route_gets_the_json_limit_whatever_the_type(
    client, app, settings, tenants, content_type, authenticated
):
    limit = settings.limits.max_body_bytes
    body = b"x" * (limit + 1)
    headers = {"Content-Type": content_type}
    if authenticated:
        headers.update(tenants.a.headers("owner"))
    checked = 0
    for method, path, policy in _routes(app):
        if policy.max_body == settings.limits.max_upload_bytes:
            continue
        response = client.request(method, path, content=body, headers=headers)
        if path == "/v2" or path.startswith("/v2/"):  # the Open Inference Protocol's error body
            assert response.status_code == 413, (path, response.text)
            detail = response.json()["error"]
        else:
            detail = assert_problem(response, 413, "payload_too_large")["detail"]
        assert detail.endswith(f"{min(limit, policy.max_body)} bytes") or policy.public
        checked += 1
    assert checked >= 25


def test_public_body_routes_get_the_small_public_limit(client, settings):
    limit = settings.limits.max_public_body_bytes
    response = client.post(
        "/api/v1/auth/token",
        content=b"username=" + b"a" * limit,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    body = assert_problem(response, 413, "payload_too_large")
    assert body["detail"] == f"request body exceeds the limit of {limit} bytes"


def _counting(chunks: int, size: int = 65536):
    sent = {"n": 0}

    def gen():
        for _ in range(chunks):
            sent["n"] += 1
            yield b"x" * size

    return gen, sent


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/api/v1/auth/token", "multipart/form-data; boundary=xyz"),  # was spooled to disk
        ("/api/v1/auth/token", "application/json"),
        ("/api/v1/api-keys", "multipart/form-data; boundary=xyz"),
        ("/api/v1/api-keys", "application/octet-stream"),
        ("/api/v1/api-keys", "text/plain"),
        ("/api/v1/sql", "application/x-www-form-urlencoded"),
        ("/api/v1/datasets", "application/json"),
        ("/api/v1/datasets", "application/octet-stream"),
    ],
)
def test_a_route_refuses_a_type_it_does_not_take_before_reading(
    client, tenants, path, content_type
):
    gen, sent = _counting(64)
    response = client.post(
        path,
        content=gen(),
        headers={**tenants.a.headers("owner"), "Content-Type": content_type},
    )
    body = assert_problem(response, 415, "unsupported_media_type")
    assert content_type.split(";")[0] in body["detail"]
    assert sent["n"] <= 1  # the generator is pulled at most once before the answer


def test_json_routes_take_json_and_its_variants_only(client, tenants):
    headers = tenants.a.headers("admin")
    body = b'{"name": "k", "role": "viewer"}'
    for content_type in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        response = client.post(
            "/api/v1/api-keys", content=body, headers=headers | {"Content-Type": content_type}
        )
        assert response.status_code == 201, (content_type, response.text)
    untyped = client.post("/api/v1/api-keys", content=body, headers=headers)
    assert_problem(untyped, 415, "unsupported_media_type")
    assert untyped.json()["detail"].endswith("not a body without Content-Type")


@pytest.mark.parametrize("path", ["/api/v1/api-keys", "/api/v1/sql", "/api/v1/datasets"])
@pytest.mark.parametrize(
    "authorization", [None, "Bearer aiaas_" + "x" * 43, "Bearer not.a.jwt", "Basic abc"]
)
def test_credentials_are_checked_before_a_body_is_read(client, settings, path, authorization):
    content_type = (
        "multipart/form-data; boundary=xyz" if path.endswith("datasets") else "application/json"
    )
    headers = {"Content-Type": content_type}
    if authorization:
        headers["Authorization"] = authorization
    gen, sent = _counting(32)
    before = _audit_count(settings)
    response = client.post(path, content=gen(), headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert sent["n"] <= 1
    # An anonymous 401 is counted and logged, not written to the audit table.
    assert _audit_count(settings) == before


def test_anonymous_401_on_reads_writes_no_audit_row(client, settings):
    before = _audit_count(settings)
    for _ in range(5):
        assert client.get("/api/v1/me").status_code == 401
        assert client.get("/api/v1/me", headers={"Authorization": "Bearer junk"}).status_code == 401
    assert _audit_count(settings) == before


def test_security_headers_on_every_response(client, tenants):
    for response in (
        client.get("/api/v1/me", headers=tenants.a.headers()),
        client.get("/api/v1/me"),
        client.get("/healthz"),
        client.get("/no/such/route"),
        client.post("/api/v1/api-keys", content=b"x", headers={"Content-Type": "text/plain"}),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["content-security-policy"]
    api = client.get("/api/v1/me", headers=tenants.a.headers())
    assert api.headers["cache-control"] == "no-store"
    # The interactive docs load Swagger UI from its CDN: no CSP of ours there.
    assert "content-security-policy" not in client.get("/docs").headers


def test_data_dir_is_private(tmp_path, settings):
    data_dir = tmp_path / "open"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    create_app(settings.model_copy(update={"data_dir": data_dir}))
    assert data_dir.stat().st_mode & 0o777 == 0o700
    fresh = tmp_path / "fresh"
    create_app(settings.model_copy(update={"data_dir": fresh}))
    assert fresh.stat().st_mode & 0o777 == 0o700


def test_nul_in_url_names_the_problem(client):
    body = assert_problem(client.get("/api/v1/me?x=%00"), 400, "bad_request")
    assert body["detail"] == "NUL in URL"


def test_a_body_route_resolves_the_credential_once(client, tenants, monkeypatch):
    from aiaas.auth import service as auth_service

    login = client.post(
        "/api/v1/auth/token",
        data={"username": tenants.a.emails["admin"], "password": PASSWORD},
    )
    token = login.json()["access_token"]
    calls = []
    real = auth_service.resolve_access_token

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(auth_service, "resolve_access_token", counting)
    response = client.post(
        "/api/v1/api-keys",
        json={"name": "once", "role": "viewer"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    assert len(calls) == 1  # the middleware's pre-authentication is reused by the route
