"""Hostile input at the edge: every error is a 4xx problem body, never a 500."""

from __future__ import annotations

import json

import pytest

from tests.helpers import assert_problem

KEYS = "/api/v1/api-keys"


def test_unknown_route_is_a_problem(client):
    body = assert_problem(client.get("/no/such/route"), 404, "not_found")
    assert "request_id" in body


def test_wrong_method_is_405_problem(client, tenants):
    assert_problem(client.put("/api/v1/me", headers=tenants.a.headers()), 405)


def test_request_id_is_echoed_or_generated(client):
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id\twith junk"})
    assert generated.headers["x-request-id"] != "bad id\twith junk"
    assert len(generated.headers["x-request-id"]) == 16


def test_oversized_body_by_content_length_is_413(client, tenants, settings):
    limit = settings.limits.max_body_bytes
    body = b'{"name": "' + b"x" * (limit + 10) + b'"}'
    response = client.post(
        KEYS,
        headers={**tenants.a.headers("admin"), "Content-Type": "application/json"},
        content=body,
    )
    assert_problem(response, 413, "payload_too_large")


def test_oversized_chunked_body_is_413(client, tenants, settings):
    limit = settings.limits.max_body_bytes

    def chunks():
        chunk = b"x" * 65536
        for _ in range(limit // len(chunk) + 2):
            yield chunk

    response = client.post(
        KEYS,
        headers={**tenants.a.headers("admin"), "Content-Type": "application/json"},
        content=chunks(),
    )
    assert_problem(response, 413, "payload_too_large")


def test_oversized_form_on_login_is_413(client, settings):
    response = client.post(
        "/api/v1/auth/token",
        content=b"username=" + b"a" * (settings.limits.max_body_bytes + 1),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 413)


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'{"name": "x",}', "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b'{"name": ' + b"9" * 5000 + b"}", "application/json"),
        (b'{"name": NaN}', "application/json"),
        (b'{"name": 1e400}', "application/json"),
        (b"name=x", "text/plain"),
        (b"<xml/>", "application/xml"),
        (b"", "application/json"),
        (b"null", "application/json"),
        (b"[]", "application/json"),
        (b'"a string"', "application/json"),
        (b'{"name": "' + "é".encode() * 2000 + b'"}', "application/json"),
        (b'{"name": "a\\u0000b"}', "application/json"),
        (b" " * 1_000_000, "application/json"),
    ],
)
def test_malformed_bodies_are_4xx_problems(client, tenants, content, content_type):
    response = client.post(
        KEYS,
        headers={**tenants.a.headers("admin"), "Content-Type": content_type},
        content=content,
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert_problem(response, response.status_code)
    json.loads(response.text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def test_validation_errors_do_not_echo_input(client, tenants):
    secret = "s3cr3t-canary-value-" + "z" * 20
    response = client.post(
        "/api/v1/members",
        headers=tenants.a.headers("admin"),
        json={"email": "bad", "role": "viewer", "password": secret},
    )
    assert_problem(response, 422)
    assert secret not in response.text
    assert "input" not in json.dumps(response.json()["errors"])


def test_query_string_abuse_is_4xx(client, tenants):
    admin = tenants.a.headers("admin")
    for query in (
        "limit=abc",
        "limit=-1",
        "cursor=" + "a" * 600,
        "outcome=drop+table",
        "since=yesterday",
        "since=2020-01-01T00:00:00",
    ):
        response = client.get(f"/api/v1/audit-events?{query}", headers=admin)
        assert 400 <= response.status_code < 500, (query, response.status_code)
        assert_problem(response, response.status_code)


def test_metrics_count_requests_by_route_template(client, tenants):
    client.get("/api/v1/me", headers=tenants.a.headers())
    client.get(f"/api/v1/api-keys/{tenants.a.key_ids['viewer']}", headers=tenants.a.headers())
    text = client.get("/metrics").text
    assert 'aiaas_http_requests_total{method="GET",route="/api/v1/me",status="200"} 1.0' in text
    assert 'route="/api/v1/api-keys/{key_id}"' in text
    assert tenants.a.key_ids["viewer"] not in text  # ids never become labels
    assert "aiaas_http_request_duration_seconds_bucket" in text


def test_metrics_token_guards_metrics(settings, tenants):
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from aiaas.api.app import create_app

    guarded = settings.model_copy(update={"metrics_token": SecretStr("scrape-token-123")})
    with TestClient(create_app(guarded)) as client:
        assert_problem(client.get("/metrics"), 401)
        ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-token-123"})
        assert ok.status_code == 200


def test_readyz_reports_database(client):
    assert client.get("/readyz").json() == {"status": "ready", "database": "ok"}


def test_readyz_is_503_when_database_is_gone(tmp_path):
    from fastapi.testclient import TestClient

    from aiaas.api.app import create_app
    from aiaas.settings import Settings

    settings = Settings(
        data_dir=tmp_path,
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/none",
        _env_file=None,
    )
    with TestClient(create_app(settings)) as client:
        assert_problem(client.get("/readyz"), 503)


def test_openapi_lists_identity_routes(client):
    spec = client.get("/openapi.json").json()
    for path in (
        "/api/v1/me",
        "/api/v1/api-keys",
        "/api/v1/members",
        "/api/v1/audit-events",
        "/api/v1/auth/token",
    ):
        assert path in spec["paths"], path


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/api-keys/key_%00",
        "/api/v1/members/%00",
        "/api/v1/audit-events?action=%00",
        "/api/v1/audit-events?resource_id=a%00b",
    ],
)
def test_nul_in_url_is_400_not_a_database_error(client, tenants, url):
    assert_problem(client.get(url, headers=tenants.a.headers("admin")), 400, "bad_request")


def test_control_characters_in_login_are_plain_401(client):
    for username in ("a\x00@b.c", "a\n@b.c"):
        response = client.post(
            "/api/v1/auth/token", data={"username": username, "password": "whatever-pass"}
        )
        assert_problem(response, 401)
